"""The op library: every op's forward and its Jacobian rule, side by side, in one registry.

Calling an op gives its value and one explicit Jacobian per array argument::

    z, (dz_dx, dz_dW, dz_db) = linear(x, W, b)      # (B,H)  (B,H,D) (B,H,H,D) (B,H,H)

The shape rule (numerator layout, written once here and in the README): an
output of shape ``O`` and an argument of shape ``I`` give ``J`` of shape
``O + I`` with ``J[o..., i...] = d out[o...] / d arg[i...]``.  With
``batch=True`` (the default) axis 0 of the data arguments is the batch:

* samples independent (the output's axis 0 is tied to the argument's axis 0
  by a delta): per-sample ``(B, *O, *I)``, where O and I exclude the batch;
* shared parameter ``(*P)``: ``(B, *O, *P)``;
* samples interact (``batch_norm``): the full ``(B, *O, B, *I)``;
* an output without batch axis (a mean over everything): ``(*O, B, *I)``.

With ``batch=False`` nothing is special: ``(*O, *I)``.  Axis arguments
(``axis=`` of ``sum``/``mean``) follow numpy, counting the batch axis.

A rule returns ``J(out, inp, *operands)``: einsum labels for the output axes,
for the argument axes, and ``(subscript, array)`` operands; a label written in
both ``out`` and ``inp`` is a symbolic delta (see :mod:`jacobians.factored`).
Labels come from :mod:`jacobians.labels`: ``lead(n)`` for leading (batch/broadcast)
axes (``A B ...``), ``core(n)``/``fresh(taken)`` for core axes (``a b ...``); neither runs out.

One module per family; every op is registered through :func:`~jacobians.ops._registry.register`
(``defop`` is its decorator form) and carries ``family``, ``formula`` (its Jacobian in one
line) and ``numpy`` (the numpy functions that have exactly its meaning):

* ``linalg``: linear, matmul, dot, outer, kron, trace, diagonal, inv, det, slogdet, solve, cholesky, norm
* ``contractions``: einsum (numpy's subscripts; the Jacobian w.r.t. each operand is an einsum with deltas)
* ``elementwise`` (one row each: f, f', f''; see :mod:`jacobians.ops.elementwise`):
  add, subtract, multiply, divide, arctan2, logaddexp, hypot (numpy broadcasting); negative, sign,
  square, sqrt, cbrt, reciprocal, power, exp, expm1, exp2, log, log1p, log2, log10, sin, cos, tan,
  arcsin, arccos, arctan, sinh, cosh, tanh, arcsinh, arccosh, arctanh, erf, erfc, sigmoid,
  log_sigmoid, softplus, silu (also swish), gelu, relu, leaky_relu
* ``reductions``: sum, mean
* ``shape``: reshape, transpose
* ``normalization``: softmax, log_softmax, logsumexp, layer_norm, batch_norm
* ``losses``: mse, cross_entropy, softmax_cross_entropy
"""


from ._registry import OPS, Op, get
from .linalg import (cholesky, det, diagonal, dot, inv, kron, linear, matmul, norm, outer, slogdet, solve,
                     trace)
from .contractions import einsum
from .elementwise import (add, arccos, arccosh, arcsin, arcsinh, arctan, arctan2, arctanh, cbrt, cos, cosh,
                          divide, erf, erfc, exp, exp2, expm1, gelu, hypot, leaky_relu, log, log1p, log2, log10,
                          log_sigmoid, logaddexp, multiply, negative, power, reciprocal, relu, sigmoid, sign,
                          silu, sin, sinh, softplus, sqrt, square, subtract, swish, tan, tanh)
from .reductions import mean, sum
from .shape import reshape, transpose
from .normalization import batch_norm, layer_norm, log_softmax, logsumexp, softmax
from .losses import cross_entropy, mse, softmax_cross_entropy

__all__ = ["Op", "OPS", "get"]  # the ops themselves are attributes: jac.ops.linear, jac.ops.sum (not star-exported)
