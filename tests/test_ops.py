"""The op library, table-driven: every op in ``jacobians.ops.OPS`` has specs below.

A spec names the op, its arguments (shape and how to draw the values), static
parameters, and the Jacobian shapes the shape rule of DESIGN.md section 1
promises, written out by hand:

* ``batched``: with ``batch=True`` -- per-sample ``(B, *O, *I)`` when samples are
  independent, ``(B, *O, *P)`` for a shared parameter, ``(B, *O, B, *I)`` when
  samples interact, ``(*O, B, *I)`` for an output without batch axis;
* ``unbatched``: with ``batch=False`` -- always ``(*O, *I)``.

``None`` in either column means the call is not made in that mode.  Every spec
is checked against central differences with :func:`jacobians.testing.check_jacobian`.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

import numpy as np
import pytest

import jacobians as jac
from jacobians.factored import Factored
from jacobians.ops import OPS
from jacobians.testing import check_jacobian, expand_batch


# ---------------------------------------------------------------- the table

class Arg(NamedTuple):
    shape: tuple
    kind: str = "normal"      # normal | pos | away (from 0) | prob (rows sum to 1) | onehot | labels
    classes: int = 0          # for labels


def N(*shape):
    return Arg(shape)


def Pos(*shape):
    return Arg(shape, "pos")


def Away(*shape):
    return Arg(shape, "away")


def Unit(*shape):        # inside (-1, 1), away from the ends (arcsin, arctanh, tan)
    return Arg(shape, "unit")


def Above1(*shape):      # greater than 1 (arccosh)
    return Arg(shape, "above1")


def Prob(*shape):
    return Arg(shape, "prob")


def OneHot(*shape):
    return Arg(shape, "onehot")


def Spd(*shape):
    return Arg(shape, "spd")


def Labels(classes, *shape):
    return Arg(shape, "labels", classes)


class Spec(NamedTuple):
    op: str
    args: tuple
    params: dict
    batched: tuple | None
    unbatched: tuple | None

    @property
    def id(self) -> str:
        args = ",".join("None" if a is None else repr(a) if isinstance(a, str) else "x".join(map(str, a.shape)) or "()"
                        for a in self.args)
        params = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.op}({args}{';' + params if params else ''})"


def S(op, args, batched, unbatched, **params) -> Spec:
    return Spec(op, tuple(args), params, batched, unbatched)


SPECS: list[Spec] = [
    # linear: x (B, D), W (H, D), b (H,) -> (B, H, D), (B, H, H, D), (B, H, H)  (the notes' example)
    S("linear", [N(3, 4), N(5, 4), N(5)], [(3, 5, 4), (3, 5, 5, 4), (3, 5, 5)],
      [(3, 5, 3, 4), (3, 5, 5, 4), (3, 5, 5)]),
    S("linear", [N(1, 2), N(3, 2)], [(1, 3, 2), (1, 3, 3, 2)], [(1, 3, 1, 2), (1, 3, 3, 2)]),
    S("linear", [N(2, 3, 4), N(2, 4), N(2)], [(2, 3, 2, 3, 4), (2, 3, 2, 2, 4), (2, 3, 2, 2)],
      [(2, 3, 2, 2, 3, 4), (2, 3, 2, 2, 4), (2, 3, 2, 2)]),
    S("linear", [N(4), N(3, 4), N(3)], None, [(3, 4), (3, 3, 4), (3, 3)]),       # Clark's z = Wx + b

    # matmul: (n, m) @ (m, p) -> (n, p, n, m), (n, p, m, p) (the notes' example)
    S("matmul", [N(2, 3), N(3, 4)], None, [(2, 4, 2, 3), (2, 4, 3, 4)]),
    S("matmul", [N(3, 2, 4), N(4, 5)], [(3, 2, 5, 2, 4), (3, 2, 5, 4, 5)],
      [(3, 2, 5, 3, 2, 4), (3, 2, 5, 4, 5)]),
    S("matmul", [N(2, 3, 4), N(2, 4, 2)], [(2, 3, 2, 3, 4), (2, 3, 2, 4, 2)],
      [(2, 3, 2, 2, 3, 4), (2, 3, 2, 2, 4, 2)]),
    S("matmul", [N(1, 2, 3), N(1, 3, 2)], [(1, 2, 2, 2, 3), (1, 2, 2, 3, 2)],
      [(1, 2, 2, 1, 2, 3), (1, 2, 2, 1, 3, 2)]),
    S("matmul", [N(2, 3, 4), N(4)], [(2, 3, 3, 4), (2, 3, 4)], [(2, 3, 2, 3, 4), (2, 3, 4)]),
    S("matmul", [N(3, 4), N(4)], None, [(3, 3, 4), (3, 4)]),                    # matrix @ vector
    S("matmul", [N(4), N(4, 3)], None, [(3, 4), (3, 4, 3)]),                    # vector @ matrix
    S("matmul", [N(4), N(4)], None, [(4,), (4,)]),                              # vector @ vector
    # broadcast leading axes: (2,1,3,4) @ (3,4,2) -> (2,3,3,2); X is tied on axis 0, Y is shared
    S("matmul", [N(2, 1, 3, 4), N(3, 4, 2)], [(2, 3, 3, 2, 1, 3, 4), (2, 3, 3, 2, 3, 4, 2)],
      [(2, 3, 3, 2, 2, 1, 3, 4), (2, 3, 3, 2, 3, 4, 2)]),

    # dot over the last axis
    S("dot", [N(3, 4), N(3, 4)], [(3, 4), (3, 4)], [(3, 3, 4), (3, 3, 4)]),
    S("dot", [N(3, 4), N(4)], [(3, 4), (3, 4)], [(3, 3, 4), (3, 4)]),
    S("dot", [N(4), N(4)], [(4,), (4,)], [(4,), (4,)]),
    S("dot", [N(2, 1, 3), N(2, 3)], [(2, 2, 1, 3), (2, 2, 2, 3)], [(2, 2, 2, 1, 3), (2, 2, 2, 3)]),


    # sum / mean: the batch axis counts as axis 0, as in numpy
    *[s for op in ("sum", "mean") for s in [
        S(op, [N(3, 4)], [(3, 4)], [(3, 4)], axis=None),                  # everything: (*O, B, *I), O = ()
        S(op, [N(3, 4)], [(3, 4)], [(3, 3, 4)], axis=1),                  # per sample
        S(op, [N(3, 4)], [(4, 3, 4)], [(4, 3, 4)], axis=0),               # over the batch: (*O, B, *I)
        S(op, [N(2, 3, 4)], [(2, 3, 3, 4)], [(2, 3, 2, 3, 4)], axis=-1),
        S(op, [N(2, 3, 4)], [(2, 1, 1, 3, 4)], [(2, 1, 1, 2, 3, 4)], axis=(1, 2), keepdims=True),
        S(op, [N(1, 3)], [(1, 1, 1, 3)], [(1, 1, 1, 3)], axis=None, keepdims=True),
        S(op, [N(2, 3)], [(2, 3)], [(2, 3)]),                              # default axis=None
    ]],

    # reshape: keeps the batch axis (per sample) or does not (full)
    S("reshape", [N(3, 2, 2)], [(3, 4, 2, 2)], [(3, 4, 3, 2, 2)], shape=(3, 4)),
    S("reshape", [N(2, 6)], [(2, 2, 3, 6)], [(2, 2, 3, 2, 6)], shape=(2, 2, 3)),
    S("reshape", [N(3, 4)], [(3, 4, 4)], [(3, 4, 3, 4)], shape=(3, -1)),            # nothing moves
    S("reshape", [N(3, 4)], [(12, 3, 4)], [(12, 3, 4)], shape=(12,)),               # flattens the batch
    S("reshape", [N(2, 3)], [(3, 2, 2, 3)], [(3, 2, 2, 3)], shape=(3, 2)),

    # transpose: per sample while axis 0 stays in place
    S("transpose", [N(3, 4)], [(4, 3, 3, 4)], [(4, 3, 3, 4)]),
    S("transpose", [N(2, 3, 4)], [(2, 4, 3, 3, 4)], [(2, 4, 3, 2, 3, 4)], axes=(0, 2, 1)),
    S("transpose", [N(2, 3, 4)], [(2, 4, 3, 3, 4)], [(2, 4, 3, 2, 3, 4)], axes=(0, -1, -2)),
    S("transpose", [N(2, 3, 4)], [(3, 2, 4, 2, 3, 4)], [(3, 2, 4, 2, 3, 4)], axes=(1, 0, 2)),

    # softmax family over the last axis
    *[s for op in ("softmax", "log_softmax") for s in [
        S(op, [N(3, 4)], [(3, 4, 4)], [(3, 4, 3, 4)]),
        S(op, [N(2, 3, 5)], [(2, 3, 5, 3, 5)], [(2, 3, 5, 2, 3, 5)]),
        S(op, [N(1, 3)], [(1, 3, 3)], [(1, 3, 1, 3)]),
        S(op, [N(4)], None, [(4, 4)]),
    ]],
    *[s for op, kw in (("logsumexp", {}), ("norm", {"axis": -1})) for s in [
        S(op, [N(3, 4)], [(3, 4)], [(3, 3, 4)], **kw),
        S(op, [N(2, 3, 4)], [(2, 3, 3, 4)], [(2, 3, 2, 3, 4)], **kw),
        S(op, [N(1, 2)], [(1, 2)], [(1, 1, 2)], **kw),
        S(op, [N(4)], None, [(4,)], **kw),
    ]],

    # layer norm: x per sample, gamma and beta shared
    S("layer_norm", [N(3, 4), N(4), N(4)], [(3, 4, 4), (3, 4, 4), (3, 4, 4)],
      [(3, 4, 3, 4), (3, 4, 4), (3, 4, 4)]),
    S("layer_norm", [N(3, 4)], [(3, 4, 4)], [(3, 4, 3, 4)]),
    S("layer_norm", [N(2, 3, 4), N(4)], [(2, 3, 4, 3, 4), (2, 3, 4, 4)], [(2, 3, 4, 2, 3, 4), (2, 3, 4, 4)]),
    S("layer_norm", [N(2, 5), None, N(5)], [(2, 5, 5), (2, 5, 5)], [(2, 5, 2, 5), (2, 5, 5)], eps=1e-3),
    # batch norm: samples interact, so even batch=True gives (B, *F, B, *F)
    S("batch_norm", [N(4, 3), N(3), N(3)], [(4, 3, 4, 3), (4, 3, 3), (4, 3, 3)],
      [(4, 3, 4, 3), (4, 3, 3), (4, 3, 3)]),
    S("batch_norm", [N(4, 3)], [(4, 3, 4, 3)], [(4, 3, 4, 3)]),
    S("batch_norm", [N(3, 2, 2), N(2, 2)], [(3, 2, 2, 3, 2, 2), (3, 2, 2, 2, 2)],
      [(3, 2, 2, 3, 2, 2), (3, 2, 2, 2, 2)]),
    S("batch_norm", [N(5, 2), None, N(2)], [(5, 2, 5, 2), (5, 2, 2)], [(5, 2, 5, 2), (5, 2, 2)]),

    # losses: reduce the last axis per sample
    S("mse", [N(3, 4), N(3, 4)], [(3, 4), (3, 4)], [(3, 3, 4), (3, 3, 4)]),
    S("mse", [N(2, 3, 4), N(2, 3, 4)], [(2, 3, 3, 4), (2, 3, 3, 4)], [(2, 3, 2, 3, 4), (2, 3, 2, 3, 4)]),
    S("mse", [N(1, 5), N(1, 5)], [(1, 5), (1, 5)], [(1, 1, 5), (1, 1, 5)]),
    S("mse", [N(4), N(4)], None, [(4,), (4,)]),
    S("cross_entropy", [Prob(3, 4), Prob(3, 4)], [(3, 4), (3, 4)], [(3, 3, 4), (3, 3, 4)]),
    S("cross_entropy", [Prob(2, 2, 3), OneHot(2, 2, 3)], [(2, 2, 2, 3), (2, 2, 2, 3)],
      [(2, 2, 2, 2, 3), (2, 2, 2, 2, 3)]),
    S("cross_entropy", [Prob(4), Prob(4)], None, [(4,), (4,)]),
    # softmax_cross_entropy: the target gets no Jacobian
    S("softmax_cross_entropy", [N(3, 4), Labels(4, 3)], [(3, 4)], [(3, 3, 4)]),
    S("softmax_cross_entropy", [N(3, 4), OneHot(3, 4)], [(3, 4)], [(3, 3, 4)]),
    S("softmax_cross_entropy", [N(3, 4), Prob(3, 4)], [(3, 4)], [(3, 3, 4)]),
    S("softmax_cross_entropy", [N(2, 3, 5), Labels(5, 2, 3)], [(2, 3, 3, 5)], [(2, 3, 2, 3, 5)]),
    S("softmax_cross_entropy", [N(1, 2), Labels(2, 1)], [(1, 2)], [(1, 1, 2)]),
    S("softmax_cross_entropy", [N(4), Labels(4)], None, [(4,)]),
]

# binary elementwise ops with numpy broadcasting (Yeh sections 6 and 7): one row per shape case
for _op in ("add", "subtract", "multiply", "divide", "arctan2", "logaddexp", "hypot"):
    _b = Away if _op == "divide" else N       # keep divisors away from zero
    SPECS += [
        S(_op, [N(3, 4), _b(3, 4)], [(3, 4, 4), (3, 4, 4)], [(3, 4, 3, 4), (3, 4, 3, 4)]),
        S(_op, [N(3, 4), _b(4)], [(3, 4, 4), (3, 4, 4)], [(3, 4, 3, 4), (3, 4, 4)]),          # bias row
        S(_op, [N(1, 4), _b(3, 4)], [(3, 4, 1, 4), (3, 4, 4)], [(3, 4, 1, 4), (3, 4, 3, 4)]),  # (1,D) row
        S(_op, [N(2, 3, 2), _b(2, 3, 2)], [(2, 3, 2, 3, 2), (2, 3, 2, 3, 2)],
          [(2, 3, 2, 2, 3, 2), (2, 3, 2, 2, 3, 2)]),
        S(_op, [N(2, 1, 3), _b(4, 1)], [(2, 4, 3, 1, 3), (2, 4, 3, 4, 1)],
          [(2, 4, 3, 2, 1, 3), (2, 4, 3, 4, 1)]),
        S(_op, [N(1, 3), _b(1, 3)], [(1, 3, 3), (1, 3, 3)], [(1, 3, 1, 3), (1, 3, 1, 3)]),       # batch of 1
        S(_op, [N(3, 2), _b()], [(3, 2, 2), (3, 2)], [(3, 2, 3, 2), (3, 2)]),                    # scalar b
    ]

# unary elementwise ops: (op, input kind, params); one row per shape case
ELEMENTWISE = [
    ("exp", N, {}), ("log", Pos, {}), ("sigmoid", N, {}), ("tanh", N, {}),
    ("relu", Away, {}), ("leaky_relu", Away, {}), ("leaky_relu", Away, {"alpha": 0.2}),
    ("softplus", N, {}), ("square", N, {}), ("sqrt", Pos, {}),
    ("power", Pos, {"p": 2}), ("power", Pos, {"p": 3}), ("power", Pos, {"p": 0.5}), ("power", Pos, {"p": -1.5}),
    ("power", N, {"p": 3}),                   # a non-negative integer power allows any sign
    ("power", N, {"p": 0}), ("power", Pos, {"p": 1}),
    ("negative", N, {}), ("sign", Away, {}), ("cbrt", Away, {}), ("reciprocal", Away, {}),
    ("expm1", N, {}), ("exp2", N, {}), ("log1p", Pos, {}), ("log2", Pos, {}), ("log10", Pos, {}),
    ("sin", N, {}), ("cos", N, {}), ("tan", Unit, {}), ("arcsin", Unit, {}), ("arccos", Unit, {}),
    ("arctan", N, {}), ("sinh", N, {}), ("cosh", N, {}), ("arcsinh", N, {}), ("arccosh", Above1, {}),
    ("arctanh", Unit, {}), ("erf", N, {}), ("erfc", N, {}), ("log_sigmoid", N, {}), ("silu", N, {}),
    ("swish", N, {}), ("gelu", N, {}), ("gelu", N, {"approximate": "tanh"}),
]
for _op, _kind, _params in ELEMENTWISE:
    SPECS += [
        S(_op, [_kind(3, 4)], [(3, 4, 4)], [(3, 4, 3, 4)], **_params),     # sigmoid (B, H) -> (B, H, H)
        S(_op, [_kind(1, 5)], [(1, 5, 5)], [(1, 5, 1, 5)], **_params),
        S(_op, [_kind(2, 3, 2)], [(2, 3, 2, 3, 2)], [(2, 3, 2, 2, 3, 2)], **_params),
        S(_op, [_kind(4)], [(4,)], [(4, 4)], **_params),                   # a batch of scalars
        S(_op, [_kind()], None, [()], **_params),
    ]

# einsum (subscripts first) and linear algebra; with batch=True an einsum operand is per-sample when its first
# label is the output's first label, a linalg op's leading axes are the batch
SPECS += [
    S("einsum", ["ij,jk->ik", N(2, 3), N(3, 4)], [(2, 4, 3), (2, 4, 3, 4)], [(2, 4, 2, 3), (2, 4, 3, 4)]),
    S("einsum", ["bqd,bkd->bqk", N(2, 3, 4), N(2, 5, 4)], [(2, 3, 5, 3, 4), (2, 3, 5, 5, 4)],
      [(2, 3, 5, 2, 3, 4), (2, 3, 5, 2, 5, 4)]),
    S("einsum", ["ii->i", N(3, 3)], [(3, 3)], [(3, 3, 3)]),                         # diagonal
    S("einsum", ["ii", N(3, 3)], [(3, 3)], [(3, 3)]),                               # trace (implicit output)
    S("einsum", ["ij->ji", N(2, 3)], [(3, 2, 2, 3)], [(3, 2, 2, 3)]),               # transpose: not per-sample
    S("einsum", ["ij", N(2, 3)], [(2, 3, 3)], [(2, 3, 2, 3)]),                      # implicit identity
    S("einsum", ["...ij,...jk", N(2, 2, 3), N(3, 4)], [(2, 2, 4, 2, 3), (2, 2, 4, 3, 4)],
      [(2, 2, 4, 2, 2, 3), (2, 2, 4, 3, 4)]),
    S("einsum", ["i,i", N(1), N(3)], [(1,), (3,)], [(1,), (3,)]),                   # size-1 broadcast
    S("einsum", ["i,ij,j", N(3), N(3, 4), N(4)], [(3,), (3, 4), (4,)], [(3,), (3, 4), (4,)]),   # bilinear form
    S("einsum", ["bi,bj->bij", N(2, 3), N(2, 4)], [(2, 3, 4, 3), (2, 3, 4, 4)], [(2, 3, 4, 2, 3), (2, 3, 4, 2, 4)]),

    S("outer", [N(3), N(4)], None, [(3, 4, 3), (3, 4, 4)]),
    S("outer", [N(2, 3), N(2, 4)], [(2, 3, 4, 3), (2, 3, 4, 4)], [(2, 3, 4, 2, 3), (2, 3, 4, 2, 4)]),
    S("outer", [N(2, 3), N(4)], [(2, 3, 4, 3), (2, 3, 4, 4)], [(2, 3, 4, 2, 3), (2, 3, 4, 4)]),
    S("kron", [N(2, 2), N(3, 2)], [(6, 4, 2, 2), (6, 4, 3, 2)], [(6, 4, 2, 2), (6, 4, 3, 2)]),
    S("kron", [N(3, 2), N(4)], [(3, 8, 2), (3, 8, 4)], [(3, 8, 3, 2), (3, 8, 4)]),   # b has size 1 on axis 0
    S("kron", [N(2), N(2, 3)], [(2, 6, 2), (2, 6, 3)], [(2, 6, 2), (2, 6, 2, 3)]),
    S("trace", [N(3, 3)], [(3, 3)], [(3, 3)]),
    S("trace", [N(2, 3, 3)], [(2, 3, 3)], [(2, 2, 3, 3)], axis1=1, axis2=2),
    S("trace", [N(2, 3, 4)], [(3, 2, 3, 4)], [(3, 2, 3, 4)], offset=-1, axis1=2, axis2=0),
    S("diagonal", [N(3, 3)], [(3, 3)], [(3, 3, 3)]),
    S("diagonal", [N(3, 4)], [(3, 4)], [(3, 3, 4)], offset=1),
    S("diagonal", [N(2, 4, 3)], [(2, 3, 4, 3)], [(2, 3, 2, 4, 3)], offset=-1, axis1=1, axis2=2),
    *[s for op in ("inv",) for s in [
        S(op, [N(3, 3)], None, [(3, 3, 3, 3)]),
        S(op, [N(2, 3, 3)], [(2, 3, 3, 3, 3)], [(2, 3, 3, 2, 3, 3)]),
    ]],
    *[s for op in ("det", "slogdet") for s in [
        S(op, [N(3, 3)], None, [(3, 3)]),
        S(op, [N(2, 3, 3)], [(2, 3, 3)], [(2, 2, 3, 3)]),
        S(op, [N(1, 2, 2)], [(1, 2, 2)], [(1, 1, 2, 2)]),
    ]],
    S("solve", [N(3, 3), N(3)], None, [(3, 3, 3), (3, 3)]),
    S("solve", [N(2, 3, 3), N(2, 3, 2)], [(2, 3, 2, 3, 3), (2, 3, 2, 3, 2)], [(2, 3, 2, 2, 3, 3), (2, 3, 2, 2, 3, 2)]),
    S("solve", [N(2, 3, 3), N(3)], [(2, 3, 3, 3), (2, 3, 3)], [(2, 3, 2, 3, 3), (2, 3, 3)]),
    S("solve", [N(3, 3), N(2, 3, 2)], [(2, 3, 2, 3, 3), (2, 3, 2, 3, 2)], [(2, 3, 2, 3, 3), (2, 3, 2, 2, 3, 2)]),
    S("cholesky", [Spd(3, 3)], None, [(3, 3, 3, 3)]),
    S("cholesky", [Spd(2, 3, 3)], [(2, 3, 3, 3, 3)], [(2, 3, 3, 2, 3, 3)]),
    S("cholesky", [Spd(2, 2, 2)], [(2, 2, 2, 2, 2)], [(2, 2, 2, 2, 2, 2)], upper=True),
    # norm with numpy.linalg.norm's meaning (the per-row norm is axis=-1, above)
    S("norm", [N(3, 4)], [(3, 4)], [(3, 4)]),                                        # Frobenius of everything
    S("norm", [N(4)], None, [(4,)]),
    S("norm", [N(3, 4)], [(1, 4, 3, 4)], [(1, 4, 3, 4)], axis=0, keepdims=True),
    *[S("norm", [N(3, 4)], [(3, 4)], [(3, 3, 4)], axis=1, ord=o) for o in (1, 3, np.inf, -np.inf, 0.5, -1.5)],
    *[S("norm", [N(2, 3, 4)], [(2, 3, 4)], [(2, 2, 3, 4)], axis=(1, 2), ord=o)
      for o in ("fro", "nuc", 1, -1, 2, -2, np.inf, -np.inf)],
    S("norm", [N(2, 3, 4)], [(2, 3, 4)], [(2, 2, 3, 4)], axis=(2, 1), ord=1),        # rows and columns swapped
]


def make_args(spec: Spec, dtype=np.float64) -> list:
    rng = np.random.default_rng(zlib.crc32(spec.id.encode()))
    out = []
    for a in spec.args:
        if a is None or isinstance(a, str):   # an absent argument; einsum's subscripts
            out.append(a)
            continue
        if a.kind == "normal":
            v = rng.normal(size=a.shape)
        elif a.kind == "pos":
            v = rng.uniform(0.5, 2.0, size=a.shape)
        elif a.kind == "away":   # no kinks nearby (relu at 0), no zero divisors
            v = rng.choice([-1.0, 1.0], size=a.shape) * rng.uniform(0.2, 1.5, size=a.shape)
        elif a.kind == "unit":
            v = rng.uniform(-0.8, 0.8, size=a.shape)
        elif a.kind == "above1":
            v = rng.uniform(1.2, 3.0, size=a.shape)
        elif a.kind == "prob":
            e = rng.uniform(0.2, 1.0, size=a.shape)
            v = e / e.sum(axis=-1, keepdims=True)
        elif a.kind == "spd":    # symmetric positive definite (..., n, n)
            m = rng.normal(size=a.shape)
            v = m @ np.swapaxes(m, -1, -2) + a.shape[-1] * np.eye(a.shape[-1])
        elif a.kind == "onehot":
            v = np.eye(a.shape[-1])[rng.integers(0, a.shape[-1], size=a.shape[:-1])]
        elif a.kind == "labels":
            out.append(rng.integers(0, a.classes, size=a.shape))
            continue
        else:
            raise AssertionError(a.kind)
        out.append(np.asarray(v, dtype=dtype))
    return out


def call(spec: Spec, args, batch: bool):
    return OPS[spec.op](*args, batch=batch, **spec.params)


CASES = [pytest.param(s, True, id=s.id + "-batch") for s in SPECS if s.batched is not None] \
    + [pytest.param(s, False, id=s.id + "-nobatch") for s in SPECS if s.unbatched is not None]


# ---------------------------------------------------------------- the table's own checks

def test_every_op_has_specs_in_both_modes():
    assert {s.op for s in SPECS} == set(OPS), "an op without a spec (or a spec for an unknown op)"
    for name in OPS:
        assert any(s.op == name and s.batched is not None for s in SPECS), f"{name}: no batch=True spec"
        assert any(s.op == name and s.unbatched is not None for s in SPECS), f"{name}: no batch=False spec"


def test_every_op_is_a_module_attribute():
    for name, op in OPS.items():
        assert getattr(jac.ops, name) is op
        assert jac.ops.get(name) is op
        assert op.name == name


# ---------------------------------------------------------------- the sweep

@pytest.mark.parametrize("spec, batch", CASES)
def test_jacobian_shapes_and_values(spec: Spec, batch: bool):
    args = make_args(spec)
    expected = spec.batched if batch else spec.unbatched
    value, jacs = call(spec, args, batch)
    assert [J.shape for J in jacs] == list(expected), f"{spec.id}: output {value.shape}"
    assert all(J.dtype == np.float64 for J in jacs)
    results = check_jacobian(spec.op, *args, batch=batch, **spec.params)
    assert len(results) == len(expected)
    for r, shape in zip(results, expected):
        assert r.shape == shape
        assert r.mode == "full"              # small sizes: the whole tensor against central differences
        assert r.max_rel_error < 1e-6


@pytest.mark.parametrize("spec", [pytest.param(s, id=s.id) for s in SPECS])
def test_factored_matches_dense(spec: Spec):
    """``op.factored`` gives Factored forms whose dense tensors are the op's Jacobians."""
    args = make_args(spec)
    value, facs = getattr(jac.ops, spec.op).factored(*args, **spec.params)
    ref_value, full = call(spec, args, batch=False)
    np.testing.assert_array_equal(value, ref_value)
    assert len(facs) == len(full)
    for f, J in zip(facs, full):
        assert isinstance(f, Factored)
        assert f.out_shape == value.shape
        assert f.dense_shape() == J.shape
        np.testing.assert_allclose(f.dense(), J, rtol=1e-12, atol=1e-14)
    if spec.batched is None:
        return
    _, per = call(spec, args, batch=True)
    for f, J, Jb in zip(facs, full, per):
        dense_b = f.dense(collapse_batch=True)
        np.testing.assert_allclose(dense_b, Jb, rtol=1e-12, atol=1e-14)
        if not f.per_sample:
            assert Jb.shape == J.shape
            continue
        # per-sample: the diagonal blocks of the full tensor, zeros elsewhere
        B, k = value.shape[0], value.ndim
        for b in range(B):
            for c in range(B):
                block = J[(b,) + (slice(None),) * (k - 1) + (c,)]
                np.testing.assert_array_equal(block, Jb[b] if b == c else np.zeros_like(block))
        np.testing.assert_array_equal(expand_batch(Jb, k), J)


# ---------------------------------------------------------------- the notes' examples, by value

def test_linear_example_shapes_and_values():
    rng = np.random.default_rng(1)
    B, D, H = 4, 3, 2
    x, W, b = rng.normal(size=(B, D)), rng.normal(size=(H, D)), rng.normal(size=H)
    z, (dx, dW, db) = jac.ops.linear(x, W, b)
    np.testing.assert_allclose(z, x @ W.T + b)
    assert (dx.shape, dW.shape, db.shape) == ((B, H, D), (B, H, H, D), (B, H, H))
    np.testing.assert_array_equal(dx, np.broadcast_to(W, (B, H, D)))
    # Schaeffer: dz/dW = einsum("ij,bk->bijk", eye(out), x)
    np.testing.assert_array_equal(dW, np.einsum("ij,bk->bijk", np.eye(H), x))
    np.testing.assert_array_equal(db, np.broadcast_to(np.eye(H), (B, H, H)))


def test_sigmoid_example():
    h = np.array([[-2.0, 0.0, 3.0], [0.5, -0.5, 1.0]])
    a, (da,) = jac.ops.sigmoid(h)
    s = 1 / (1 + np.exp(-h))
    np.testing.assert_allclose(a, s)
    assert da.shape == (2, 3, 3)
    np.testing.assert_allclose(da, np.einsum("bi,ij->bij", s * (1 - s), np.eye(3)))
    assert da[0, 1, 1] == pytest.approx(0.25)


def test_matmul_example():
    rng = np.random.default_rng(2)
    n, m, p = 2, 3, 4
    X, Y = rng.normal(size=(n, m)), rng.normal(size=(m, p))
    C, (dX, dY) = jac.ops.matmul(X, Y, batch=False)
    np.testing.assert_allclose(C, X @ Y)
    assert dX.shape == (n, p, n, m) and dY.shape == (n, p, m, p)
    # dC[i,j]/dX[a,k] = delta_ia Y[k,j];  dC[i,j]/dY[k,l] = X[i,k] delta_jl  (Yeh, matrix-matrix)
    np.testing.assert_array_equal(dX, np.einsum("ia,kj->ijak", np.eye(n), Y))
    np.testing.assert_array_equal(dY, np.einsum("ik,jl->ijkl", X, np.eye(p)))


def test_broadcast_bias_and_row_product_values():
    """Yeh 6 and 7: a bias row feeds every sample; a (1, D) row scales every row of X."""
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(3, 4)), rng.normal(size=(1, 4))
    _, (_, dy) = jac.ops.add(X, y[0])
    np.testing.assert_array_equal(dy, np.broadcast_to(np.eye(4), (3, 4, 4)))
    _, (dy, dX) = jac.ops.multiply(y, X)
    assert dy.shape == (3, 4, 1, 4) and dX.shape == (3, 4, 4)
    np.testing.assert_array_equal(dy[:, :, 0, :], np.einsum("bi,ij->bij", X, np.eye(4)))
    np.testing.assert_array_equal(dX, np.einsum("i,ij->ij", y[0], np.eye(4))[None].repeat(3, 0))
    # the gradient of sum(y * X) w.r.t. y is the column sums of X (Yeh 7)
    np.testing.assert_allclose(dy.sum(axis=(0, 1)), X.sum(axis=0, keepdims=True))


def test_softmax_cross_entropy_is_yhat_minus_y():
    """Clark identity 7: d CE(softmax(theta), y) / d theta = yhat - y, for labels and one-hot alike."""
    rng = np.random.default_rng(4)
    logits, labels = rng.normal(size=(3, 5)), np.array([0, 4, 2])
    onehot = np.eye(5)[labels]
    q = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    loss_l, (d_l,) = jac.ops.softmax_cross_entropy(logits, labels)
    loss_o, (d_o,) = jac.ops.softmax_cross_entropy(logits, onehot)
    np.testing.assert_allclose(loss_l, -np.log(q[np.arange(3), labels]))
    np.testing.assert_allclose(loss_o, loss_l)
    np.testing.assert_allclose(d_l, q - onehot)
    np.testing.assert_allclose(d_o, q - onehot)


def test_mean_over_everything_is_unbatched():
    x = np.arange(6.0).reshape(3, 2)
    m, (dm,) = jac.ops.mean(x)
    assert m.shape == () and m == pytest.approx(2.5)
    np.testing.assert_array_equal(dm, np.full((3, 2), 1 / 6))


def test_batch_norm_couples_samples():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 2))
    _, (dx,) = jac.ops.batch_norm(x)
    assert dx.shape == (4, 2, 4, 2)
    assert np.abs(dx[0, :, 1, :]).max() > 1e-3           # sample 1 moves sample 0's output
    np.testing.assert_array_equal(dx[:, 0, :, 1], 0)      # features stay independent
    np.testing.assert_allclose(dx.sum(axis=2), 0, atol=1e-12)  # a shift of all samples changes nothing


@pytest.mark.parametrize("p", [2, 3, 0.5, -1.5])
def test_power_values(p):
    x = np.array([[0.5, 1.0, 2.0]])
    y, (dy,) = jac.ops.power(x, p=p)
    np.testing.assert_allclose(y, x ** p)
    np.testing.assert_allclose(np.diagonal(dy[0]), p * x[0] ** (p - 1))


def test_leaky_relu_alpha():
    x = np.array([[-1.0, 2.0, -0.5]])
    y, (dy,) = jac.ops.leaky_relu(x, alpha=0.3)
    np.testing.assert_allclose(y, [[-0.3, 2.0, -0.15]])
    np.testing.assert_allclose(dy[0], np.diag([0.3, 1.0, 0.3]))
    _, (dy,) = jac.ops.leaky_relu(x)
    np.testing.assert_allclose(dy[0], np.diag([0.01, 1.0, 0.01]))


# ---------------------------------------------------------------- float32

@pytest.mark.parametrize("spec", [pytest.param(s, id=s.id) for s in
                                  {s.op: s for s in reversed(SPECS) if s.batched is not None}.values()])
def test_float32_keeps_dtype(spec: Spec):
    """float32 inputs give float32 values and Jacobians that agree with float64 loosely."""
    args64 = make_args(spec)
    args32 = [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a
              for a in args64]
    v32, j32 = call(spec, args32, batch=True)
    v64, j64 = call(spec, args64, batch=True)
    assert v32.dtype == np.float32
    np.testing.assert_allclose(v32, v64, rtol=1e-4, atol=1e-4)
    assert len(j32) == len(j64) > 0
    for a, b in zip(j32, j64):
        assert a.dtype == np.float32, spec.id
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
