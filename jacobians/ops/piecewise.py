"""Piecewise ops: selections by a constant condition, max/min, abs, clip (numpy's names and meanings).

Their Jacobians are masks: an elementwise operand over the output's (or, for a
reduction, the input's) labels, never an (out x in) 0/1 tensor.

Conventions where the derivative is not defined (stated here, tested in tests/test_piecewise.py):

* ``maximum(a, b)`` / ``minimum(a, b)`` at a tie ``a == b``: 0.5 to each side (JAX's choice; it
  is also what a central difference gives, and ``maximum(x, x)`` has derivative 1);
* ``clip(x, lo, hi)`` at ``x == lo`` or ``x == hi``: 0.5 (``minimum(maximum(x, lo), hi)`` with
  the tie rule above); 1 strictly inside, 0 outside;
* ``abs`` at 0: 0;
* ``amax`` / ``amin`` with several maximal (minimal) elements: all the slope goes to the first
  one in C order over the reduced axes, the element ``np.argmax`` picks;
* ``where(condition, x, y)``: the condition is a constant (no Jacobian): a boolean array, or
  numbers meaning ``!= 0``, broadcast with x and y like ``np.where``.
"""

from __future__ import annotations

import numpy as np

from ..errors import fail
from ..labels import fresh, lead
from ._registry import Op, _aligned, _axes, _broadcast, defop, rule


def _select(op: str, a, b, prefer):
    """Value and rules of ``where(take_a, a, b)`` with 0.5 to each side where ``a == b`` ties."""
    out_shape = _broadcast(op, ("a", a), ("b", b))
    out = lead(len(out_shape))
    new = fresh()
    as_, bs = _aligned(a.shape, out_shape, out, new), _aligned(b.shape, out_shape, out, new)
    dtype = np.result_type(a, b)
    take_a, tie = prefer(a, b), a == b
    ga = np.broadcast_to(np.where(tie, 0.5, take_a).astype(dtype), out_shape)
    value = np.where(take_a, a, b).astype(dtype, copy=False)
    return value, (lambda: rule(out, as_, (out, ga)), lambda: rule(out, bs, (out, 1 - ga)))


@defop("a b", formula="dz/da = delta [a > b] (1/2 at a tie), dz/db = delta [b > a] (1/2 at a tie)",
       numpy=("maximum", "fmax"))
def maximum(a, b):
    """Elementwise maximum with numpy broadcasting; at a tie each side gets slope 1/2."""
    return _select("maximum", a, b, np.greater)


@defop("a b", formula="dz/da = delta [a < b] (1/2 at a tie), dz/db = delta [b < a] (1/2 at a tie)",
       numpy=("minimum", "fmin"))
def minimum(a, b):
    """Elementwise minimum with numpy broadcasting; at a tie each side gets slope 1/2."""
    return _select("minimum", a, b, np.less)


@defop("condition x y", nondiff="condition",
       formula="dz/dx = delta [condition], dz/dy = delta [not condition] (condition broadcast)")
def where(condition, x, y):
    """``np.where(condition, x, y)``: x where the constant condition holds (is nonzero), else y (broadcast)."""
    out_shape = _broadcast("where", ("condition", condition), ("x", x), ("y", y))
    out = lead(len(out_shape))
    new = fresh()
    xs, ys = _aligned(x.shape, out_shape, out, new), _aligned(y.shape, out_shape, out, new)
    dtype = np.result_type(x, y)
    cond = np.broadcast_to(condition != 0, out_shape)
    return np.where(cond, x, y).astype(dtype, copy=False), (
        None,
        lambda: rule(out, xs, (out, cond.astype(dtype))),
        lambda: rule(out, ys, (out, (~cond).astype(dtype))),
    )


class _ConditionOp(Op):
    """The registry takes integer and float constants for arguments without a Jacobian; a boolean
    condition is passed to it as its uint8 view (same bytes, numpy's truth values)."""

    def bind(self, args, kwargs):
        args = tuple(_as_uint8(a) if k == 0 else a for k, a in enumerate(args))
        if "condition" in kwargs:
            kwargs = {**kwargs, "condition": _as_uint8(kwargs["condition"])}
        return super().bind(args, kwargs)


def _as_uint8(c):
    if isinstance(c, (bool, np.bool_)) or (isinstance(c, np.ndarray) and c.dtype == np.bool_):
        return np.asarray(c).view(np.uint8)
    return c


where.__class__ = _ConditionOp


@defop("x", data="x", formula="dy/dx = delta sign(x) (0 at 0)", numpy=("absolute", "fabs"))
def abs(x):
    """``|x|`` elementwise; its derivative at 0 is taken as 0."""
    L = lead(x.ndim)
    return np.abs(x), (lambda: rule(L, L, (L, np.sign(x))),)


@defop("x lo hi", data="x", nondiff="lo hi",
       formula="dy/dx = delta [lo < x < hi] (1/2 at x == lo or x == hi)")
def clip(x, lo=None, hi=None):
    """``np.clip(x, lo, hi)`` with constant bounds (arrays broadcast to x, or None for no bound).

    Slope 1 strictly inside, 0 outside, 1/2 on a bound (``minimum(maximum(x, lo), hi)``)."""
    if lo is None and hi is None:
        fail("clip", "give at least one of lo and hi (both are None)")
    shape = _broadcast("clip", ("x", x), *[(n, v) for n, v in (("lo", lo), ("hi", hi)) if v is not None])
    if shape != x.shape:
        fail("clip", f"bounds must broadcast to x {x.shape}; got lo {np.shape(lo)}, hi {np.shape(hi)}")
    g = np.ones(x.shape, dtype=x.dtype)
    y = x
    for bound, outside in ((lo, np.less), (hi, np.greater)):
        if bound is not None:
            g = np.where(outside(x, bound), 0.0, np.where(x == bound, 0.5 * g, g)).astype(x.dtype)
            y = np.maximum(y, bound) if outside is np.less else np.minimum(y, bound)
    L = lead(x.ndim)
    return np.asarray(y, dtype=x.dtype), (lambda: rule(L, L, (L, g)),)


def _extreme(op, x, axis, keepdims, pick):
    """Value and the mask rule of max/min over ``axis``: slope 1 at the first extreme element."""
    axes = _axes(op, axis, x.ndim)
    if any(x.shape[k] == 0 for k in axes):
        fail(op, f"{op} over an empty axis of x {x.shape} (axis={axis})")
    kept = [k for k in range(x.ndim) if k not in axes]
    moved = np.transpose(x, kept + list(axes))             # reduced axes last, flattened in C order
    flat = moved.reshape(moved.shape[:len(kept)] + (-1,))
    first = pick(flat, axis=-1)
    mask = np.zeros(flat.shape, dtype=x.dtype)
    np.put_along_axis(mask, first[..., None], 1.0, axis=-1)
    mask = np.transpose(mask.reshape(moved.shape), np.argsort(kept + list(axes)))
    value = np.take_along_axis(flat, first[..., None], axis=-1)[..., 0]
    if keepdims:
        value = value.reshape([1 if k in axes else n for k, n in enumerate(x.shape)])
    L = lead(x.ndim)
    new = fresh()
    out = "".join((next(new) if keepdims else "") if k in axes else L[k] for k in range(x.ndim))
    return value, (lambda: rule(out, L, (L, mask)),)


@defop("x", data="x", formula="dy/dx = delta on the kept axes, a one at the first maximal element (argmax)")
def amax(x, axis=None, keepdims=False):
    """Maximum over ``axis`` (numpy's meaning; None: all); slope 1 at the first maximal element."""
    return _extreme("amax", x, axis, keepdims, np.argmax)


@defop("x", data="x", formula="dy/dx = delta on the kept axes, a one at the first minimal element (argmin)")
def amin(x, axis=None, keepdims=False):
    """Minimum over ``axis`` (numpy's meaning; None: all); slope 1 at the first minimal element."""
    return _extreme("amin", x, axis, keepdims, np.argmin)
