"""Linear algebra with numpy's names and meaning, batched over leading axes like numpy.linalg.

Affine maps and products (linear, matmul, dot, outer, kron), traces and diagonals, and the
matrix functions inv, det, slogdet, solve, cholesky and norm.  Their Jacobians are einsums of
the closed forms, never multiplied out where a delta will do:

* ``d inv(A) = -inv(A) dA inv(A)``: two operands ``-inv(A)[i,k]`` and ``inv(A)[l,j]``;
* ``d det(A) = det(A) inv(A)^T``, computed as the cofactor matrix from an SVD so that it stays
  exact for a singular ``A`` (``d det = adj(A)^T``);
* ``solve`` by implicit differentiation: ``A x = b`` gives ``dx = inv(A) (db - dA x)``;
* ``norm``: a gradient-shaped operand over x's axes (deltas on the kept axes), computed after
  scaling by the largest entry so that 1e-200 and 1e200 vectors neither underflow nor overflow.

A singular or non-positive-definite input is a ``ValueError`` naming the op, never NaN.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..errors import fail
from ..labels import fresh, lead
from ._registry import _aligned, _axes, _broadcast, _guard, _need, defop, rule


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


@defop("a b", formula="dz[..,i,j]/da[..,i'] = delta_ii' b[..,j], dz/db = a[..,i] delta_jj' (deltas on the leading axes)")
def outer(a, b):
    """Outer product over the last axis, leading axes broadcast: (..., n), (..., m) -> (..., n, m).

    On 1-D arguments this is ``np.outer`` and ``np.linalg.outer``; unlike ``np.outer`` it does not
    flatten N-D arguments, it batches over their leading axes.
    """
    if a.ndim < 1 or b.ndim < 1:
        fail("outer", f"arguments must have at least 1 dimension; got a {a.shape}, b {b.shape}")
    try:
        out_lead = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    except ValueError:
        fail("outer", f"leading (batch) axes do not broadcast: a {a.shape}, b {b.shape}")
    L = lead(len(out_lead))
    new = fresh("ij")
    as_ = _aligned(a.shape[:-1], out_lead, L, new) + "i"
    bs = _aligned(b.shape[:-1], out_lead, L, new) + "j"
    return a[..., :, None] * b[..., None, :], (
        lambda: rule(L + "ij", as_, (bs, b)),
        lambda: rule(L + "ij", bs, (as_, a)),
    )


@defop("a b", formula="dz/da = T[o,i,j] b[j] per axis (T: the 0/1 map o = i*nb + j; a delta where b has size 1), "
                      "dz/db = T[o,i,j] a[i] per axis",
       numpy=("kron",))
def kron(a, b):
    """numpy's Kronecker product; an axis where one factor has size 1 is a delta (``kron(x (B,n), v (m,))``
    is per-sample in x), elsewhere axis ``o = i * nb + j`` is a small 0/1 operand ``(na nb, na, nb)``."""
    value = np.kron(a, b)
    nd = max(a.ndim, b.ndim)
    pa, pb = (1,) * (nd - a.ndim) + a.shape, (1,) * (nd - b.ndim) + b.shape
    O = lead(nd)
    new = fresh()
    la, lb, maps = [], [], []        # per axis: a's label, b's label, the 0/1 map if the axis combines
    for k in range(nd):
        if pb[k] == 1:
            la.append(O[k]), lb.append(next(new))
        elif pa[k] == 1:
            la.append(next(new)), lb.append(O[k])
        else:
            i, j = next(new), next(new)
            la.append(i), lb.append(j)
            maps.append((O[k] + i + j, np.eye(pa[k] * pb[k], dtype=value.dtype).reshape(pa[k] * pb[k], pa[k], pb[k])))
    sa, sb = "".join(la[nd - a.ndim:]), "".join(lb[nd - b.ndim:])
    return value, (
        lambda: rule(O, sa, (sb, b), *maps),
        lambda: rule(O, sb, (sa, a), *maps),
    )


def _two_axes(op, a, axis1, axis2):
    for name, v in (("axis1", axis1), ("axis2", axis2)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            fail(op, f"{name} must be an integer; got {v!r}", TypeError)
    if a.ndim < 2:
        fail(op, f"argument a must have at least 2 dimensions; got shape {a.shape}")
    for name, v in (("axis1", axis1), ("axis2", axis2)):
        if not -a.ndim <= v < a.ndim:
            fail(op, f"{name}={v} is out of range for a of shape {a.shape}")
    a1, a2 = axis1 % a.ndim, axis2 % a.ndim
    if a1 == a2:
        fail(op, f"axis1 and axis2 must differ; got {axis1} and {axis2} for a of shape {a.shape}")
    return a1, a2


def _offset(op, offset):
    if isinstance(offset, (bool, np.bool_)) or not isinstance(offset, (int, np.integer)):
        fail(op, f"offset must be an integer; got {offset!r}", TypeError)
    return int(offset)


@defop("a", formula="dt/da = delta on the other axes, E[i,j] = [j == i + offset] on axis1, axis2",
       numpy=("trace",))
def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    """numpy's trace: the sum of the (offset) diagonal of the axes axis1, axis2 (default the first two);
    for a batch of matrices (B, n, n) pass ``axis1=-2, axis2=-1``.  ``out=`` is refused."""
    if out is not None:
        fail("trace", "out= is not supported: the op returns a new array", TypeError)
    offset = _offset("trace", offset)
    a1, a2 = _two_axes("trace", a, axis1, axis2)
    if dtype is not None:
        a = a.astype(_float_dtype("trace", dtype))
    X = lead(a.ndim)
    rest = "".join(l for k, l in enumerate(X) if k not in (a1, a2))
    E = np.eye(a.shape[a1], a.shape[a2], k=offset, dtype=a.dtype)
    return np.trace(a, offset, a1, a2), (lambda: rule(rest, X, (X[a1] + X[a2], E)),)


@defop("a", formula="dd/da = delta on the other axes, eye(k, n1, r) and eye(k, n2, c) onto axis1, axis2",
       numpy=("diagonal",))
def diagonal(a, offset=0, axis1=0, axis2=1):
    """numpy's diagonal: the (offset) diagonal of axes axis1, axis2, appended as the last axis."""
    offset = _offset("diagonal", offset)
    a1, a2 = _two_axes("diagonal", a, axis1, axis2)
    value = np.diagonal(a, offset, a1, a2).copy()
    k, r, c = value.shape[-1], max(0, -offset), max(0, offset)
    X = lead(a.ndim)
    d, i, j = "abc"
    rest = "".join(l for m, l in enumerate(X) if m not in (a1, a2))

    def rule_a():
        inp, ops = list(X), []
        for ax, n, shift, own in ((a1, a.shape[a1], r, i), (a2, a.shape[a2], c, j)):
            if shift == 0 and n == k and d not in inp:   # this axis runs along the diagonal: a delta
                inp[ax] = d
            else:
                inp[ax] = own
                ops.append((d + own, np.eye(k, n, k=shift, dtype=a.dtype)))
        return rule(rest + d, "".join(inp), *ops)
    return value, (rule_a,)


def _float_dtype(op, dtype):
    dt = np.dtype(dtype)
    if not np.issubdtype(dt, np.floating):
        fail(op, f"dtype must be a floating-point dtype; got {dtype!r}", TypeError)
    return dt


def _square(op, name, a):
    if a.ndim < 2 or a.shape[-1] != a.shape[-2] or a.shape[-1] == 0:
        fail(op, f"argument {name} must be a stack of square matrices (..., n, n) with n >= 1; got shape {a.shape}")


def _nonsingular(op, name, a):
    """Refuse a matrix that is singular to working precision (the smallest singular value under n eps times the largest)."""
    s = np.linalg.svd(a, compute_uv=False)
    tol = s[..., :1] * a.shape[-1] * np.finfo(a.dtype).eps
    bad = (s[..., -1:] <= tol)[..., 0]
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0]) if bad.ndim else ()
        where = f" at batch index {at}" if at else ""
        fail(op, f"argument {name} is singular to working precision{where} (singular values "
                 f"{s[at][-1]:.3g} .. {s[at][0]:.3g}); shape {a.shape}")


def _cofactor(a):
    """adj(a)^T = det(a) inv(a)^T from an SVD: exact for a singular a (where det(a) inv(a)^T is 0 * inf)."""
    U, s, Vh = np.linalg.svd(a)
    n = s.shape[-1]
    ones = np.ones(s.shape[:-1] + (1,), dtype=s.dtype)
    before = np.concatenate([ones, np.cumprod(s[..., :-1], axis=-1)], axis=-1)          # prod_{j<i} s_j
    after = np.concatenate([np.cumprod(s[..., :0:-1], axis=-1)[..., ::-1], ones], axis=-1)  # prod_{j>i} s_j
    p = before * after if n > 1 else ones
    sign = np.sign(np.linalg.det(U) * np.linalg.det(Vh))
    return (sign[..., None, None] * (U * p[..., None, :]) @ Vh).astype(a.dtype)


@defop("a", data="a", core={"a": 2}, formula="dY[ij]/da[kl] = -inv(a)[i,k] inv(a)[l,j] (delta on the leading axes)",
       numpy=("linalg.inv",))
def inv(a):
    """Inverse of each matrix (..., n, n); a singular matrix is a ValueError."""
    _square("inv", "a", a)
    _nonsingular("inv", "a", a)
    Y = np.linalg.inv(a)
    L = lead(a.ndim - 2)
    return Y, (lambda: rule(L + "ij", L + "kl", (L + "ik", -Y), (L + "lj", Y)),)


@defop("a", data="a", core={"a": 2}, formula="dd/da[ij] = det(a) inv(a)[j,i] = adj(a)[j,i] (the cofactor matrix; "
                                             "delta on the leading axes)",
       numpy=("linalg.det",))
def det(a):
    """Determinant of each matrix (..., n, n) -> (...); its Jacobian (the cofactor matrix) exists for singular a too."""
    _square("det", "a", a)
    L = lead(a.ndim - 2)
    return np.linalg.det(a), (lambda: rule(L, L + "ij", (L + "ij", _cofactor(a))),)


@defop("a", data="a", core={"a": 2}, formula="dl/da[ij] = inv(a)[j,i] (delta on the leading axes)")
def slogdet(a):
    """log|det a| of each matrix (..., n, n) -> (...): numpy's ``slogdet(a).logabsdet``.

    Only the log-magnitude is returned: the sign is piecewise constant (no derivative), read it from
    ``np.linalg.slogdet(a).sign``.  A singular matrix (log|det| = -inf) is a ValueError.
    """
    _square("slogdet", "a", a)
    sign, logabs = np.linalg.slogdet(a)
    if (sign == 0).any():
        fail("slogdet", f"argument a is singular (det = 0, log|det| = -inf); shape {a.shape}")
    L = lead(a.ndim - 2)

    def da():
        _nonsingular("slogdet", "a", a)
        return rule(L, L + "ij", (L + "ji", np.linalg.inv(a)))
    return logabs, (da,)


@defop("a b", formula="dx/da[pq] = -inv(a)[i,p] x[q,..], dx/db[m,..] = inv(a)[i,m] (delta on k; implicit "
                      "differentiation of a x = b)",
       numpy=("linalg.solve",))
def solve(a, b):
    """x with ``a @ x = b``; numpy 2's rule: b (n,) is one vector (x (..., n)), otherwise b is a stack of
    matrices (..., n, k) whose leading axes broadcast with a's.  A singular a is a ValueError."""
    _square("solve", "a", a)
    n = a.shape[-1]
    vector = b.ndim == 1
    if (vector and b.shape[0] != n) or (not vector and (b.ndim < 2 or b.shape[-2] != n)):
        fail("solve", f"argument b must be ({n},) or (..., {n}, k) to match a {a.shape}; got {b.shape}")
    if vector:
        out_lead = a.shape[:-2]
    else:
        try:
            out_lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            fail("solve", f"leading (batch) axes do not broadcast: a {a.shape}, b {b.shape}")
    _nonsingular("solve", "a", a)
    x = np.linalg.solve(a, b)
    L = lead(len(out_lead))
    new = fresh("ikpqm")
    aL = _aligned(a.shape[:-2], out_lead, L, new)
    Ainv = lambda: np.linalg.inv(a)
    if vector:
        return x, (lambda: rule(L + "i", aL + "pq", (aL + "ip", -Ainv()), (L + "q", x)),
                   lambda: rule(L + "i", "m", (aL + "im", Ainv())))
    bL = _aligned(b.shape[:-2], out_lead, L, new)
    return x, (lambda: rule(L + "ik", aL + "pq", (aL + "ip", -Ainv()), (L + "qk", x)),
               lambda: rule(L + "ik", bL + "mk", (aL + "im", Ainv())))


@defop("a", data="a", core={"a": 2},
       formula="dL[ij]/da[rs] = sym_rs sum_a L[i,a] w[a,j] M[a,r] M[j,s], M = inv(L), w = tril with diagonal 1/2")
def cholesky(a, upper=False):
    """Cholesky factor of the symmetric part ``(a + a^T) / 2`` of each matrix (..., n, n): lower L with
    ``L L^T = a`` (``upper=True``: ``L^T``).

    As JAX does, the input is symmetrized first, so the Jacobian is w.r.t. the full matrix: it gives
    ``dL = L Phi(L^-1 dA L^-T)`` (Phi: the lower triangle, diagonal halved) for every symmetric ``dA``,
    and splits evenly between ``a[i,j]`` and ``a[j,i]``.  For a symmetric ``a`` the value is numpy's;
    numpy reads only the lower triangle of a non-symmetric one, so the op has no numpy name.
    A matrix that is not positive definite is a ValueError.
    """
    _square("cholesky", "a", a)
    if not isinstance(upper, (bool, np.bool_)):
        fail("cholesky", f"upper must be True or False; got {upper!r}", TypeError)
    sym = (a + np.swapaxes(a, -1, -2)) / 2
    try:
        Lc = np.linalg.cholesky(sym)
    except np.linalg.LinAlgError:
        fail("cholesky", f"argument a is not positive definite (its symmetric part has no Cholesky factor); "
                         f"shape {a.shape}")
    n = a.shape[-1]
    L = lead(a.ndim - 2)

    def da():
        _guard("cholesky", "a", a.shape[:-2] + (n,) * 4, a.dtype)
        M = np.linalg.inv(Lc)
        w = np.tril(np.ones((n, n), dtype=a.dtype), -1) + np.eye(n, dtype=a.dtype) / 2
        G = np.einsum("...ia,aj,...ar,...js->...ijrs", Lc, w, M, M, optimize=True)
        return rule(L + ("ji" if upper else "ij"), L + "rs", (L + "ijrs", (G + np.swapaxes(G, -1, -2)) / 2))
    return (np.swapaxes(Lc, -1, -2).copy() if upper else Lc), (da,)


# ---------------------------------------------------------------- norm (numpy.linalg.norm's meaning)

def _ord_name(ord):
    return repr(ord) if isinstance(ord, str) else str(ord)


def _scaled_pnorm(a, axes, p):
    """(sum |a|^p)^(1/p) over ``axes`` (keepdims), scaled by the largest |a| (the smallest for p < 0)."""
    m = (a.max if p > 0 else a.min)(axis=axes, keepdims=True)
    safe = np.where(m == 0, 1, m)
    with np.errstate(divide="ignore", over="ignore"):
        r = a / safe
        s = (r * r).sum(axis=axes, keepdims=True) if p == 2 else (r ** p).sum(axis=axes, keepdims=True)
        return m * (np.sqrt(s) if p == 2 else s ** (1 / p))


def _first(mask_of, values, axis):
    """A 0/1 mask of the first position along ``axis`` where ``values`` is extreme (numpy's argmax choice)."""
    idx = (np.argmax if mask_of == "max" else np.argmin)(values, axis=axis)
    return np.expand_dims(idx, axis) == np.arange(values.shape[axis]).reshape(
        [-1 if k == axis % values.ndim else 1 for k in range(values.ndim)])


@defop("x", data="x",
       formula="dn/dx = g[x's axes] (delta on the kept axes): x/n (2, fro), sign(x)(|x|/n)^(p-1), sign(x) at the "
               "arg-extreme (inf, 1), U V^T (nuc), u1 v1^T (2 of a matrix)",
       numpy=("linalg.norm",))
def norm(x, ord=None, axis=None, keepdims=False):
    """numpy.linalg.norm: by default the 2-norm of all of x (Frobenius for a matrix); an int ``axis`` gives
    vector norms (ord None/2, 1, inf, -inf, any other real p != 0); a 2-tuple gives matrix norms
    (None/'fro', 'nuc', 1, -1, 2, -2, inf, -inf).  ord=0 (a count) is refused.

    The Jacobian is undefined where the norm is 0 (a ValueError); ties of the max/min norms pick the
    first extreme entry (row, column, singular value), as numpy's argmax does.  The 2- and p-norms are
    computed scaled by the largest entry, so 1e-200 and 1e200 vectors neither underflow nor overflow.
    """
    nd = x.ndim
    if axis is None:
        if ord is None:
            axes, kind = tuple(range(nd)), "vector"
        elif nd in (1, 2):
            axes, kind = tuple(range(nd)), ("vector", "matrix")[nd - 1]
        else:
            fail("norm", f"ord={_ord_name(ord)} needs axis= for x of {nd} dimensions (shape {x.shape})")
    else:
        axes = _axes("norm", axis, nd)
        if len(axes) > 2:
            fail("norm", f"axis must be an int or a 2-tuple (vector or matrix norm); got {axis!r}")
        kind = ("vector", "matrix")[len(axes) - 1]
        if isinstance(axis, (tuple, list)) and len(axis) == 2:
            axes = tuple(a % nd for a in axis)            # the matrix's row and column axes, in the order given
    if any(x.shape[k] == 0 for k in axes):
        fail("norm", f"x has no entries along the reduced axes {axes} (shape {x.shape}): the norm is 0 there, "
                     f"its Jacobian undefined")
    if isinstance(ord, (bool, np.bool_)) or not (ord is None or isinstance(ord, (numbers.Real, str))):
        fail("norm", f"ord must be None, a number, 'fro' or 'nuc'; got {ord!r}", TypeError)
    if kind == "vector":
        p = 2.0 if ord is None else ord
        if isinstance(p, str) or p == 0 or np.isnan(p):
            fail("norm", f"ord={_ord_name(ord)} is not a differentiable vector norm (supported: None, 2, 1, inf, "
                         f"-inf, any other real p != 0)")
        n, grad = _vector_norm(x, axes, float(p))
    else:
        if ord not in (None, "fro", "nuc", 1, -1, 2, -2, np.inf, -np.inf):
            fail("norm", f"ord={_ord_name(ord)} is not a matrix norm (supported: None, 'fro', 'nuc', 1, -1, 2, -2, "
                         f"inf, -inf)")
        n, grad = _matrix_norm(x, axes, ord)
    X = lead(nd)
    new = fresh()
    out = "".join((next(new) if keepdims else "") if k in axes else X[k] for k in range(nd))

    def dx():
        if (n == 0).any():
            at = tuple(int(i) for i in np.argwhere(n == 0)[0])
            fail("norm", f"the Jacobian is undefined where the norm is 0 (x is zero along axis "
                         f"{axis if axis is not None else 'None'} at index {at}; x {x.shape})")
        return rule(out, X, (X, grad()))
    return (n if keepdims else n.reshape([s for k, s in enumerate(n.shape) if k not in axes])), (dx,)


def _vector_norm(x, axes, p):
    a = np.abs(x)
    if p == np.inf or p == -np.inf:
        n = (a.max if p > 0 else a.min)(axis=axes, keepdims=True)     # axes is one axis here
        return n, lambda: np.sign(x) * _first("max" if p > 0 else "min", a, axes[0])
    n = _scaled_pnorm(a, axes, p)

    def grad():
        if p == 2:
            return x / n
        if p < 1 and (a == 0).any():
            fail("norm", f"the Jacobian of the {p:g}-norm is undefined where an entry of x is 0 (x {x.shape})")
        return np.sign(x) if p == 1 else np.sign(x) * (a / n) ** (p - 1)
    return n, grad


def _matrix_norm(x, axes, ord):
    r, c = axes
    if ord in (None, "fro"):
        return _vector_norm(x, tuple(sorted(axes)), 2.0)
    if ord in (1, -1, np.inf, -np.inf):
        along, keep = (r, c) if ord in (1, -1) else (c, r)   # 1: column sums (over rows); inf: row sums
        a = np.abs(x)
        sums = a.sum(axis=along, keepdims=True)
        ext = "max" if ord > 0 else "min"
        n = (sums.max if ord > 0 else sums.min)(axis=keep, keepdims=True)
        return n, lambda: np.sign(x) * _first(ext, sums, keep)
    xm = np.moveaxis(x, (r, c), (-2, -1))
    if ord == "nuc":
        U, s, Vh = np.linalg.svd(xm, full_matrices=False)
        n = s.sum(axis=-1)
        return _keep(n, x.ndim, axes), lambda: np.moveaxis(U @ Vh, (-2, -1), (r, c))
    U, s, Vh = np.linalg.svd(xm, full_matrices=False)
    k = 0 if ord == 2 else -1
    n = s[..., k]
    return _keep(n, x.ndim, axes), lambda: np.moveaxis(U[..., :, k, None] * Vh[..., k, None, :], (-2, -1), (r, c))


def _keep(n, ndim, axes):
    """A value over the kept axes, with the two reduced axes put back as size 1 (keepdims layout)."""
    for a in sorted(axes):
        n = np.expand_dims(n, a)
    return n
