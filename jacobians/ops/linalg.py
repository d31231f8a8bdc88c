"""Linear algebra: affine maps, matrix and inner products, the Euclidean norm."""

from __future__ import annotations

import numpy as np

from ..errors import fail
from ..labels import fresh, lead
from ._registry import _aligned, _broadcast, _need, defop, rule


@defop("x W b", data="x", core={"x": 1},
       formula="dz/dx = W (delta on batch), dz/dW = delta_hH x, dz/db = delta_hH")
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


@defop("X Y", data="X", core={"X": 2},
       formula="dZ[n,p]/dX[n',m] = delta_nn' Y[m,p], dZ[n,p]/dY[m,p'] = X[n,m] delta_pp' (deltas on broadcast axes)",
       numpy=("matmul",))
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
    new = fresh("nmp")
    xs = _aligned(X.shape[:-2], out_lead, L, new) + ("nm" if X.ndim > 1 else "m")
    ys = _aligned(Y.shape[:-2], out_lead, L, new) + ("mp" if Y.ndim > 1 else "m")
    out = L + ("n" if X.ndim > 1 else "") + ("p" if Y.ndim > 1 else "")
    return X @ Y, (
        lambda: rule(out, xs, (ys, Y)),
        lambda: rule(out, ys, (xs, X)),
    )


@defop("a b", formula="dz/da = b, dz/db = a (deltas on the leading axes)", numpy=("vecdot",))
def dot(a, b):
    """Inner product over the last axis: (..., n) . (..., n) -> (...)."""
    if a.ndim < 1 or b.ndim < 1 or a.shape[-1] != b.shape[-1]:
        fail("dot", f"expected a (..., n) and b (..., n) with the same n; got a {a.shape}, b {b.shape}")
    out_lead = _broadcast("dot", ("a", a), ("b", b))[:-1]  # last axes are equal
    L = lead(len(out_lead))
    new = fresh("i")
    as_ = _aligned(a.shape[:-1], out_lead, L, new) + "i"
    bs = _aligned(b.shape[:-1], out_lead, L, new) + "i"
    return np.einsum("...i,...i->...", a, b), (
        lambda: rule(L, as_, (bs, b)),
        lambda: rule(L, bs, (as_, a)),
    )


@defop("x", data="x", core={"x": 1}, formula="dz/dx = x / ||x|| (delta on the leading axes)")
def norm(x):
    """Euclidean norm over the last axis: (..., n) -> (...); J = x / ||x||, undefined at 0."""
    _need("norm", "x", x, 1, "the reduced axis")
    n = np.sqrt(np.einsum("...i,...i->...", x, x))
    if (n == 0).any():
        fail("norm", "the Jacobian of the norm is undefined at x = 0 (a zero row in x)")
    L = lead(x.ndim - 1)
    return n, (lambda: rule(L, L + "i", (L + "i", x / n[..., None])),)
