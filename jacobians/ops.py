"""The op library: every op's forward and its Jacobian rule, side by side, in one table.

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
Labels: upper case for leading (batch/broadcast) axes, lower case for core axes.
"""

from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from .errors import as_float_array, as_int_array, fail
from .factored import Factored
from .limits import check_bytes

__all__ = ["Op", "OPS", "get"]

LEAD = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class J(NamedTuple):
    """A rule's answer: ``out`` and ``inp`` labels and the operands."""

    out: str
    inp: str
    operands: tuple = ()


def rule(out: str, inp: str, *operands: tuple[str, np.ndarray]) -> J:
    return J(out, inp, operands)


@dataclass(eq=False)
class Op:
    """One op: its forward, which returns the value and one rule per array argument."""

    name: str
    forward: Callable
    arrays: tuple[str, ...]                 # array arguments, in signature order
    data: tuple[str, ...] = ()              # arrays that carry the batch axis when batch=True
    core: dict = field(default_factory=dict)  # rank of each array without leading axes
    nondiff: tuple[str, ...] = ()           # array arguments that get no Jacobian (labels)
    signature: inspect.Signature = None

    @property
    def diff_arrays(self) -> tuple[str, ...]:
        return tuple(a for a in self.arrays if a not in self.nondiff)

    def bind(self, args, kwargs) -> tuple[dict, dict]:
        """Split a call into validated arrays and static parameters."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            fail(self.name, f"{e}; signature is {self.name}{self.signature}", TypeError)
        bound.apply_defaults()
        arrays, params, weak = {}, {}, []
        for name, value in bound.arguments.items():
            if name in self.arrays:
                if value is None:
                    arrays[name] = None
                elif name in self.nondiff:  # labels: integers or target probabilities
                    arrays[name] = np.asarray(value)
                    if not (np.issubdtype(arrays[name].dtype, np.integer)
                            or np.issubdtype(arrays[name].dtype, np.floating)):
                        as_int_array(self.name, name, value)
                else:
                    arrays[name] = as_float_array(self.name, name, value)
                    if isinstance(value, numbers.Real) and not isinstance(value, np.generic):
                        weak.append(name)
            else:
                params[name] = value
        if weak:  # a Python number takes the arrays' dtype, as in numpy (float32 stays float32)
            floats = [a for n, a in arrays.items() if a is not None and n not in weak and n not in self.nondiff]
            if floats:
                dtype = np.result_type(*floats)
                for name in weak:
                    arrays[name] = arrays[name].astype(dtype)
        return arrays, params

    def evaluate(self, arrays: dict, params: dict):
        """Value and a tuple of lazy Factored builders (None for absent/nondiff arrays)."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            value, rules = self.forward(**arrays, **params)
        value = np.asarray(value)
        if not np.isfinite(value).all():
            shapes = ", ".join(f"{k} {np.shape(v)}" for k, v in arrays.items() if v is not None)
            fail(self.name, f"the value is not finite (overflow or a value outside the domain) for {shapes}")
        builders = []
        for name, r in zip(self.arrays, rules):
            if r is None or arrays.get(name) is None or name in self.nondiff:
                builders.append(None)
                continue
            builders.append(_builder(r, value.shape, np.shape(arrays[name]), value.dtype, self.name, name, arrays))
        return value, tuple(builders)

    def factored(self, *args, **kwargs) -> tuple[np.ndarray, tuple[Factored, ...]]:
        """The value and the factored Jacobians (subscripts, operands, deltas)."""
        arrays, params = self.bind(args, kwargs)
        value, builders = self.evaluate(arrays, params)
        return value, tuple(b() for b in builders if b is not None)

    def __call__(self, *args, batch: bool = True, **kwargs) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        arrays, params = self.bind(args, kwargs)
        if batch:
            self._check_batch(arrays)
        value, builders = self.evaluate(arrays, params)
        jacs = []
        for name, b in zip(self.arrays, builders):
            if b is not None:
                jacs.append(b().dense(collapse_batch=batch, what=f"{self.name}: the Jacobian w.r.t. {name}"))
        return value, tuple(jacs)

    def _check_batch(self, arrays: dict) -> None:
        sizes = {}
        for name in self.data:
            a = arrays.get(name)
            if a is None:
                continue
            need = self.core.get(name, 0) + 1
            if a.ndim < need:
                fail(self.name, f"argument {name} needs a leading batch axis with batch=True: expected "
                                f"at least {need} dimensions, got shape {a.shape} (pass batch=False for one sample)")
            sizes[name] = a.shape[0]
        if len(set(sizes.values())) > 1:
            txt = ", ".join(f"{k} has {v}" for k, v in sizes.items())
            fail(self.name, f"batch sizes differ along axis 0: {txt}")

    def __repr__(self) -> str:
        return f"<op {self.name}{self.signature}>"


def _builder(r, out_shape, in_shape, dtype, op, name, arrays):
    inputs = {id(a) for a in arrays.values() if a is not None}

    def build(check: bool = True) -> Factored:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            j = r()
        # a finite value can have an infinite slope; the op's own inputs were checked already
        if not all(id(a) in inputs or np.isfinite(a).all() for _, a in j.operands):
            fail(op, f"the Jacobian w.r.t. {name} is not finite (a derivative overflows) for {name} {tuple(in_shape)}")
        return Factored(j.out, j.inp, tuple(out_shape), tuple(in_shape), tuple(j.operands), dtype, check)
    return build


OPS: dict[str, Op] = {}


def defop(arrays: str, data: str = "", core: dict | None = None, nondiff: str = ""):
    """Register ``forward`` as an op: it returns ``(value, (rule per array argument))``."""
    def register(forward: Callable) -> Op:
        op = Op(forward.__name__.strip("_"), forward, tuple(arrays.split()), tuple(data.split()),
                core or {}, tuple(nondiff.split()), inspect.signature(forward))
        op.__doc__ = forward.__doc__
        OPS[op.name] = op
        return op
    return register


def get(name: str) -> Op:
    try:
        return OPS[name]
    except KeyError:
        raise NotImplementedError(f"no op named {name!r}; the ops are: {', '.join(sorted(OPS))}") from None


# ---------------------------------------------------------------- helpers

def lead(n: int) -> str:
    return LEAD[:n]


def _fresh(taken: str):
    return iter(c for c in "abcdefghijklmnopqrstuvwxyz" if c not in taken)


def _aligned(shape: tuple, out_shape: tuple, out: str, fresh) -> str:
    """Labels of an argument broadcast to ``out``: shared where sizes agree, fresh where broadcast."""
    off = len(out_shape) - len(shape)
    return "".join(out[off + k] if n == out_shape[off + k] else next(fresh) for k, n in enumerate(shape))


def _broadcast(op: str, *named) -> tuple:
    try:
        return np.broadcast_shapes(*[np.shape(a) for _, a in named])
    except ValueError:
        txt = ", ".join(f"{n} {np.shape(a)}" for n, a in named)
        fail(op, f"shapes do not broadcast: {txt}")


def _need(op: str, name: str, arr: np.ndarray, ndim_min: int, what: str, nonempty: bool = False) -> None:
    if arr.ndim < ndim_min:
        fail(op, f"argument {name} must have at least {ndim_min} dimensions ({what}); got shape {arr.shape}")
    if nonempty and arr.shape[-1] == 0:
        fail(op, f"argument {name} must have at least one entry along its last axis ({what}); got shape {arr.shape}")


def _real(op: str, name: str, value) -> float:
    """A static parameter that must be a finite real number."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        fail(op, f"argument {name} must be a real number; got {value!r}", TypeError)
    if not math.isfinite(value):
        fail(op, f"argument {name} must be finite; got {value!r}")
    return float(value)


def _guard(op: str, name: str, shape: tuple, dtype) -> None:
    """Refuse a dense factor of a Jacobian before allocating it (the dense result is at least as large)."""
    check_bytes(math.prod(shape) * np.dtype(dtype).itemsize, f"{op}: a factor of the Jacobian w.r.t. {name}", shape)


def _axes(op: str, axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
            fail(op, f"axis must be an integer or a tuple of integers; got {axis!r}", TypeError)
        if not -ndim <= a < ndim:
            fail(op, f"axis {a} is out of range for an array of {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        fail(op, f"repeated axis in {axis}")
    return tuple(sorted(out))


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for any x


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _logsumexp(x):
    m = x.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[..., 0]


# ---------------------------------------------------------------- linear algebra

@defop("x W b", data="x", core={"x": 1})
def linear(x, W, b=None):
    """Affine map over the last axis: ``x W^T + b``; x (..., D), W (H, D), b (H,) -> (..., H)."""
    if W.ndim != 2 or x.ndim < 1 or x.shape[-1] != W.shape[1]:
        fail("linear", f"expected x (..., D) and W (H, D) with the same D; got x {x.shape}, W {W.shape}")
    if b is not None and b.shape != (W.shape[0],):
        fail("linear", f"argument b: expected shape ({W.shape[0]},) to match W {W.shape}; got {b.shape}")
    L = lead(x.ndim - 1)
    z = x @ W.T if b is None else x @ W.T + b
    return z, (
        lambda: rule(L + "h", L + "d", ("hd", W)),
        lambda: rule(L + "h", "hd", (L + "d", x)),
        lambda: rule(L + "h", "h"),
    )


@defop("X Y", data="X", core={"X": 2})
def matmul(X, Y):
    """Matrix product with numpy's broadcasting of leading axes: (..., n, m) @ (..., m, p) -> (..., n, p).

    A 1-D factor is a vector, as in numpy (``W @ x`` is Clark's ``z = Wx``).
    """
    if X.ndim == 0 or Y.ndim == 0:
        fail("matmul", f"arguments must have at least 1 dimension; got X {X.shape}, Y {Y.shape}")
    xm, ym = X.shape[-1], Y.shape[-2] if Y.ndim > 1 else Y.shape[0]
    if xm != ym:
        fail("matmul", f"contracted sizes differ: X {X.shape} has {xm} columns, Y {Y.shape} has {ym} rows")
    try:
        out_lead = np.broadcast_shapes(X.shape[:-2], Y.shape[:-2])
    except ValueError:
        fail("matmul", f"leading (batch) axes do not broadcast: X {X.shape}, Y {Y.shape}")
    L = lead(len(out_lead))
    fresh = _fresh("nmp")
    xs = _aligned(X.shape[:-2], out_lead, L, fresh) + ("nm" if X.ndim > 1 else "m")
    ys = _aligned(Y.shape[:-2], out_lead, L, fresh) + ("mp" if Y.ndim > 1 else "m")
    out = L + ("n" if X.ndim > 1 else "") + ("p" if Y.ndim > 1 else "")
    return X @ Y, (
        lambda: rule(out, xs, (ys, Y)),
        lambda: rule(out, ys, (xs, X)),
    )


@defop("a b")
def dot(a, b):
    """Inner product over the last axis: (..., n) . (..., n) -> (...)."""
    if a.ndim < 1 or b.ndim < 1 or a.shape[-1] != b.shape[-1]:
        fail("dot", f"expected a (..., n) and b (..., n) with the same n; got a {a.shape}, b {b.shape}")
    out_lead = _broadcast("dot", ("a", a), ("b", b))[:-1]  # last axes are equal
    L = lead(len(out_lead))
    fresh = _fresh("i")
    as_ = _aligned(a.shape[:-1], out_lead, L, fresh) + "i"
    bs = _aligned(b.shape[:-1], out_lead, L, fresh) + "i"
    return np.einsum("...i,...i->...", a, b), (
        lambda: rule(L, as_, (bs, b)),
        lambda: rule(L, bs, (as_, a)),
    )


def _elementwise_binary(op: str, a, b):
    out_shape = _broadcast(op, ("a", a), ("b", b))
    out = lead(len(out_shape))
    fresh = _fresh("")
    return out_shape, out, _aligned(a.shape, out_shape, out, fresh), _aligned(b.shape, out_shape, out, fresh)


@defop("a b")
def add(a, b):
    """``a + b`` with numpy broadcasting (a bias row added to every sample: Yeh section 6)."""
    _, out, as_, bs = _elementwise_binary("add", a, b)
    return a + b, (lambda: rule(out, as_), lambda: rule(out, bs))


@defop("a b")
def subtract(a, b):
    """``a - b`` with numpy broadcasting."""
    _, out, as_, bs = _elementwise_binary("subtract", a, b)
    minus = np.array(-1.0, dtype=np.result_type(a, b))
    return a - b, (lambda: rule(out, as_), lambda: rule(out, bs, ("", minus)))


@defop("a b")
def multiply(a, b):
    """``a * b`` (Hadamard) with numpy broadcasting (a row vector times a matrix: Yeh section 7)."""
    _, out, as_, bs = _elementwise_binary("multiply", a, b)
    return a * b, (lambda: rule(out, as_, (bs, b)), lambda: rule(out, bs, (as_, a)))


@defop("a b")
def divide(a, b):
    """``a / b`` with numpy broadcasting; b must have no zeros."""
    if (b == 0).any():
        fail("divide", f"argument b contains zeros (shape {b.shape})")
    _, out, as_, bs = _elementwise_binary("divide", a, b)
    y = a / b
    return y, (lambda: rule(out, as_, (bs, 1.0 / b)), lambda: rule(out, bs, (out, -y / b)))


@defop("x", data="x")
def negative(x):
    """``-x``."""
    L = lead(x.ndim)
    return -x, (lambda: rule(L, L, ("", np.array(-1.0, dtype=x.dtype))),)


def _reduce(op, x, axis, keepdims):
    axes = _axes(op, axis, x.ndim)
    L = lead(x.ndim)
    fresh = _fresh("")
    out = "".join((next(fresh) if keepdims else "") if k in axes else L[k] for k in range(x.ndim))
    return axes, out, L


@defop("x", data="x")
def sum(x, axis=None, keepdims=False):
    """Sum over ``axis`` (numpy's meaning, the batch axis counts; None: all)."""
    axes, out, L = _reduce("sum", x, axis, keepdims)
    return x.sum(axis=axes, keepdims=keepdims), (lambda: rule(out, L),)


@defop("x", data="x")
def mean(x, axis=None, keepdims=False):
    """Mean over ``axis`` (numpy's meaning, the batch axis counts; None: all)."""
    axes, out, L = _reduce("mean", x, axis, keepdims)
    n = math.prod(x.shape[k] for k in axes)
    if n == 0:
        fail("mean", f"mean over an empty axis of shape {x.shape}")
    scale = np.array(1.0 / n, dtype=x.dtype)
    return x.mean(axis=axes, keepdims=keepdims), (lambda: rule(out, L, ("", scale)),)


@defop("x", data="x")
def reshape(x, shape):
    """numpy's reshape (the full shape, batch axis included); the leading axes both shapes share stay tied."""
    try:
        y = x.reshape(shape)
    except (ValueError, TypeError) as e:
        fail("reshape", f"cannot reshape x of shape {x.shape} to {shape}: {e}")
    k = 0
    # a zero-size axis stops the tie: behind it, the sizes of the rest need not agree
    while k < min(x.ndim, y.ndim) and x.shape[k] == y.shape[k] != 0 and k < len(LEAD) // 2:
        k += 1
    if x.shape[k:] == y.shape[k:]:  # nothing moves
        L = lead(x.ndim)
        return y, (lambda: rule(L, L),)
    L, rest_out, rest_in = lead(k), "abcdefghijklm"[: y.ndim - k], "nopqrstuvwxyz"[: x.ndim - k]

    def block():
        _guard("reshape", "x", y.shape[k:] + x.shape[k:], x.dtype)
        return np.eye(math.prod(x.shape[k:]), dtype=x.dtype).reshape(y.shape[k:] + x.shape[k:])
    return y, (lambda: rule(L + rest_out, L + rest_in, (rest_out + rest_in, block())),)


@defop("x", data="x")
def transpose(x, axes=None):
    """numpy's transpose: a permutation of axes, all deltas."""
    if axes is None:
        perm = tuple(reversed(range(x.ndim)))
    else:
        axes = (axes,) if isinstance(axes, (int, np.integer)) else tuple(axes)
        _axes("transpose", axes, x.ndim)  # integers in range, no repeats
        perm = tuple(a % x.ndim for a in axes)
    if sorted(perm) != list(range(x.ndim)):
        fail("transpose", f"axes {axes} is not a permutation of the {x.ndim} axes of x {x.shape}")
    L = lead(x.ndim)
    return x.transpose(perm), (lambda: rule("".join(L[p] for p in perm), L),)


# ---------------------------------------------------------------- elementwise
# one row per op: name, forward f(x, **kw), derivative f'(x, y, **kw), domain check

def _elementwise(name: str, doc: str, f, df, domain=None, params: str = ""):
    def forward(x, **kw):
        kw = {k: _real(name, k, v) for k, v in kw.items()}
        if domain is not None:
            ok, what = domain
            bad = ~ok(x, **kw)
            if bad.any():
                fail(name, f"argument x must be {what}; got {x.flat[np.flatnonzero(bad)[0]]} "
                           f"at flat index {np.flatnonzero(bad)[0]} (shape {x.shape})")
        y = f(x, **kw)
        L = lead(x.ndim)
        return y, (lambda: rule(L, L, (L, np.asarray(df(x, y, **kw), dtype=y.dtype))),)

    args = [inspect.Parameter("x", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for p in params.split():
        pname, default = p.split("=") if "=" in p else (p, inspect.Parameter.empty)
        args.append(inspect.Parameter(pname, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                      default=default if default is inspect.Parameter.empty else float(default)))
    forward.__name__ = name
    forward.__doc__ = doc
    op = Op(name, forward, ("x",), ("x",), {}, (), inspect.Signature(args))
    op.__doc__ = doc
    OPS[name] = op
    return op


exp = _elementwise("exp", "e**x elementwise.", lambda x: np.exp(x), lambda x, y: y)
log = _elementwise("log", "Natural log elementwise; x > 0.", lambda x: np.log(x), lambda x, y: 1.0 / x,
                   domain=(lambda x: x > 0, "positive"))
sigmoid = _elementwise("sigmoid", "1 / (1 + e**-x) elementwise.", _sigmoid, lambda x, y: y * (1 - y))
tanh = _elementwise("tanh", "tanh elementwise.", np.tanh, lambda x, y: 1 - y * y)
relu = _elementwise("relu", "max(x, 0) elementwise; its derivative at 0 is taken as 0.",
                    lambda x: np.maximum(x, 0), lambda x, y: (x > 0).astype(x.dtype))
leaky_relu = _elementwise("leaky_relu", "x if x > 0 else alpha x, elementwise (derivative at 0: alpha).",
                          lambda x, alpha: np.where(x > 0, x, alpha * x),
                          lambda x, y, alpha: np.where(x > 0, 1.0, alpha), params="alpha=0.01")
softplus = _elementwise("softplus", "log(1 + e**x) elementwise, stable for large |x|.",
                        lambda x: np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))),
                        lambda x, y: _sigmoid(x))
square = _elementwise("square", "x**2 elementwise.", np.square, lambda x, y: 2 * x)
sqrt = _elementwise("sqrt", "Square root elementwise; x > 0 (the derivative is infinite at 0).",
                    np.sqrt, lambda x, y: 0.5 / y, domain=(lambda x: x > 0, "positive"))
power = _elementwise("power", "x**p elementwise for a constant p; x > 0 unless p is a non-negative integer.",
                     lambda x, p: np.power(x, p), lambda x, y, p: p * np.power(x, p - 1),
                     domain=(lambda x, p: (x > 0) | (float(p) == int(p) and p >= 0),
                             "positive for a non-integer or negative exponent"),
                     params="p")


# ---------------------------------------------------------------- normalizations and probabilities

@defop("x", data="x", core={"x": 1})
def softmax(x):
    """Softmax over the last axis (stable): J[..., i, j] = q_i (delta_ij - q_j)."""
    _need("softmax", "x", x, 1, "the class axis", nonempty=True)
    q = _softmax(x)
    L = lead(x.ndim - 1)

    def dx():
        _guard("softmax", "x", x.shape + x.shape[-1:], q.dtype)
        return rule(L + "i", L + "j", (L + "ij", np.einsum("...i,ij->...ij", q, np.eye(q.shape[-1], dtype=q.dtype))
                                       - q[..., :, None] * q[..., None, :]))
    return q, (dx,)


@defop("x", data="x", core={"x": 1})
def log_softmax(x):
    """log softmax over the last axis (stable): J[..., i, j] = delta_ij - q_j."""
    _need("log_softmax", "x", x, 1, "the class axis", nonempty=True)
    y = x - _logsumexp(x)[..., None]
    L = lead(x.ndim - 1)
    n = x.shape[-1]

    def dx():
        _guard("log_softmax", "x", x.shape + (n,), y.dtype)
        return rule(L + "i", L + "j", (L + "ij", np.eye(n, dtype=y.dtype) - np.exp(y)[..., None, :]))
    return y, (dx,)


@defop("x", data="x", core={"x": 1})
def logsumexp(x):
    """log sum exp over the last axis (stable): (..., n) -> (...); J = softmax(x)."""
    _need("logsumexp", "x", x, 1, "the reduced axis", nonempty=True)
    L = lead(x.ndim - 1)
    return _logsumexp(x), (lambda: rule(L, L + "j", (L + "j", _softmax(x))),)


@defop("x gamma beta", data="x", core={"x": 1})
def layer_norm(x, gamma=None, beta=None, eps=1e-5):
    """Normalize over the last axis, then ``gamma * xhat + beta``; gamma, beta (D,) optional."""
    _need("layer_norm", "x", x, 1, "the normalized axis", nonempty=True)
    eps = _real("layer_norm", "eps", eps)
    n = x.shape[-1]
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p is not None and p.shape != (n,):
            fail("layer_norm", f"argument {name}: expected shape ({n},) to match x {x.shape}; got {p.shape}")
    sigma = np.sqrt(x.var(axis=-1, keepdims=True) + eps)
    xhat = (x - x.mean(axis=-1, keepdims=True)) / sigma
    g = np.ones(n, dtype=x.dtype) if gamma is None else gamma
    y = g * xhat + (0 if beta is None else beta)
    L = lead(x.ndim - 1)

    def dx():  # d xhat_i / d x_j = (delta_ij - 1/n - xhat_i xhat_j / n) / sigma, times gamma_i
        _guard("layer_norm", "x", x.shape + (n,), x.dtype)
        block = np.eye(n, dtype=x.dtype) - 1.0 / n - xhat[..., :, None] * xhat[..., None, :] / n
        return rule(L + "i", L + "j", (L + "ij", g[:, None] * block / sigma[..., None]))
    return y, (dx, lambda: rule(L + "i", "i", (L + "i", xhat)), lambda: rule(L + "i", "i"))


@defop("x gamma beta", data="x", core={"x": 1})
def batch_norm(x, gamma=None, beta=None, eps=1e-5):
    """Training-mode batch norm: statistics over axis 0, so samples interact: J is (B, *F, B, *F).

    ``J[b, f, c, f'] = delta_ff' gamma_f (delta_bc - 1/B - xhat_bf xhat_cf / B) / sigma_f``.
    """
    _need("batch_norm", "x", x, 1, "the batch axis")
    if x.shape[0] == 0:
        fail("batch_norm", f"argument x needs at least one sample along axis 0 (the batch statistics); "
                           f"got shape {x.shape}")
    eps = _real("batch_norm", "eps", eps)
    B, F = x.shape[0], x.shape[1:]
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p is not None and p.shape != F:
            fail("batch_norm", f"argument {name}: expected shape {F} to match x {x.shape}; got {p.shape}")
    sigma = np.sqrt(x.var(axis=0) + eps)
    xhat = (x - x.mean(axis=0)) / sigma
    g = np.ones(F, dtype=x.dtype) if gamma is None else gamma
    y = g * xhat + (0 if beta is None else beta)
    f = lead(len(F))

    def dx():
        _guard("batch_norm", "x", (B, B) + F, x.dtype)
        k = np.eye(B, dtype=x.dtype).reshape((B, B) + (1,) * len(F)) - 1.0 / B - xhat[:, None] * xhat[None, :] / B
        return rule("b" + f, "c" + f, ("bc" + f, k * (g / sigma)))
    return y, (dx, lambda: rule("b" + f, f, ("b" + f, xhat)), lambda: rule("b" + f, f))


# ---------------------------------------------------------------- losses (per sample: reduce the last axis)

def _same_shape(op, a_name, a, b_name, b):
    if a.shape != b.shape:
        fail(op, f"arguments {a_name} and {b_name} must have the same shape; got {a.shape} and {b.shape}")


@defop("yhat y", data="yhat y", core={"yhat": 1, "y": 1})
def mse(yhat, y):
    """Squared error per sample: ``0.5 ||y - yhat||^2`` over the last axis: (..., D) -> (...)."""
    _need("mse", "yhat", yhat, 1, "the feature axis")
    _same_shape("mse", "yhat", yhat, "y", y)
    r = yhat - y
    L = lead(yhat.ndim - 1)
    return 0.5 * np.einsum("...i,...i->...", r, r), (
        lambda: rule(L, L + "i", (L + "i", r)),
        lambda: rule(L, L + "i", (L + "i", -r)),
    )


@defop("phat p", data="phat p", core={"phat": 1, "p": 1})
def cross_entropy(phat, p):
    """Cross entropy per sample ``-sum p log phat`` over the last axis; phat > 0."""
    _need("cross_entropy", "phat", phat, 1, "the class axis")
    _same_shape("cross_entropy", "phat", phat, "p", p)
    if (phat <= 0).any():
        fail("cross_entropy", f"argument phat must be positive (predicted probabilities); got min {phat.min()}")
    L = lead(phat.ndim - 1)
    logp = np.log(phat)
    return -np.einsum("...i,...i->...", p, logp), (
        lambda: rule(L, L + "i", (L + "i", -p / phat)),
        lambda: rule(L, L + "i", (L + "i", -logp)),
    )


@defop("logits target", data="logits", core={"logits": 1}, nondiff="target")
def softmax_cross_entropy(logits, target):
    """Cross entropy of softmax(logits) against ``target`` over the last axis: (..., C) -> (...).

    ``target`` is integer class labels (...) or target probabilities / one-hot (..., C); it is
    not differentiated.  J w.r.t. the logits is ``softmax(logits) * sum(target) - target``
    (``yhat - y`` for one-hot targets, Clark identity 7).
    """
    _need("softmax_cross_entropy", "logits", logits, 1, "the class axis", nonempty=True)
    C = logits.shape[-1]
    if np.issubdtype(target.dtype, np.integer):
        if target.shape != logits.shape[:-1]:
            fail("softmax_cross_entropy", f"integer labels must have shape {logits.shape[:-1]} "
                                          f"(logits {logits.shape} without the class axis); got {target.shape}")
        if target.size and (target.min() < 0 or target.max() >= C):
            fail("softmax_cross_entropy", f"labels must lie in [0, {C}); got min {target.min()}, max {target.max()}")
        y = np.eye(C, dtype=logits.dtype)[target]
    else:
        y = as_float_array("softmax_cross_entropy", "target", target)
        _same_shape("softmax_cross_entropy", "logits", logits, "target", y)
    L = lead(logits.ndim - 1)
    logq = logits - _logsumexp(logits)[..., None]
    loss = -np.einsum("...i,...i->...", y, logq)
    return loss, (
        lambda: rule(L, L + "i", (L + "i", np.exp(logq) * y.sum(axis=-1, keepdims=True) - y)),
        None,
    )


@defop("x", data="x", core={"x": 1})
def norm(x):
    """Euclidean norm over the last axis: (..., n) -> (...); J = x / ||x||, undefined at 0."""
    _need("norm", "x", x, 1, "the reduced axis")
    n = np.sqrt(np.einsum("...i,...i->...", x, x))
    if (n == 0).any():
        fail("norm", "the Jacobian of the norm is undefined at x = 0 (a zero row in x)")
    L = lead(x.ndim - 1)
    return n, (lambda: rule(L, L + "i", (L + "i", x / n[..., None])),)
