"""Second-order rules: for ``y = op(a_1, ..., a_n)``, the second derivatives ``d2y / da_k da_l`` as
:class:`~jacobians.terms.Term` s over the groups ``(y, a_k, a_l)``, one table keyed by op name.

Contracted with two tangent stacks ``T_k``, ``S_l`` they give ``sum_{k,l} d2y/da_k da_l [T_k, S_l]``,
the term the second-order chain rule adds at each node (Faa di Bruno).

* elementwise rows (filled from ``op.row.d2`` for every row): ``f''`` on three tied labels; binary
  rows give ``f_aa``, ``f_ab`` (both orders) and ``f_bb`` on the output's labels, with a fresh
  label per slot where an argument is broadcast;
* linear ops (sum, mean, reshape, transpose, trace, diagonal; add, subtract, negative through
  their rows) and piecewise-linear ones (where, maximum, minimum, abs, clip, amax, amin): none;
* index-map and relabeling ops (getitem, take, embedding, pad, flip, roll, tile, repeat,
  broadcast_to, expand_dims, squeeze, swapaxes, moveaxis, avg_pool2d) are linear: none; max_pool2d
  is piecewise linear (none, as maximum); the propagation applies their first-order maps to the
  tangent stacks (:class:`Mapped`);
* convolutions are bilinear in (x, W): cross terms only, the op's x-Jacobian with W taken out
  (its window maps kept as maps, on the x group: a :class:`Mapped` term);
* multilinear ops (linear, matmul, dot, outer, kron, einsum): only cross terms, and they are the
  op's own Jacobian w.r.t. ``a_k`` with the operand ``a_l`` taken out, its labels becoming the
  ``a_l`` group (``d2 (x W^T) / dx dW`` is pure deltas);
* closed forms: softmax, log_softmax, logsumexp, mse, cross_entropy, softmax_cross_entropy; inv, det,
  slogdet, solve, cholesky, norm (every ord the op takes; the non-smooth ones piecewise linear);
  layer_norm and batch_norm (training-mode statistics).  Each derivation is in its docstring.

Every op in :data:`jacobians.ops.OPS` has a rule (``tests/test_hessian.py`` asserts it).

An op without a rule raises ``NotImplementedError`` naming it (:func:`rule_for`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from . import ops as _ops
from .labels import fresh, lead
from .terms import Term

__all__ = ["Site", "Mapped", "SECOND", "second_order", "rule_for", "has_rule"]


class Site(NamedTuple):
    """One op application: the op, its array arguments by name (None: absent), its parameters,
    its value and its lazy first-order builders (one per array argument)."""

    op: _ops.Op
    arrays: dict
    params: dict
    value: np.ndarray
    builders: tuple


class Mapped(NamedTuple):
    """A :class:`Term` times index maps (:class:`~jacobians.indexmaps.IndexMap`) that read the labels of
    its group ``group`` (an op's first-order form with maps, or a convolution's cross term).  The maps
    are never densified: linking a tangent stack into ``group`` gathers it
    (:func:`jacobians.hessians.link_any`); a cotangent leaving through ``group`` is scattered
    (:func:`jacobians.products.contract_any`)."""

    term: Term
    maps: tuple
    group: int


Rule = Callable[[Site], dict]
SECOND: dict[str, Rule] = {}


def second_order(site: Site) -> dict[tuple[int, int], list[Term]]:
    """``{(k, l): [Term over (y, a_k, a_l)]}`` for every pair with a nonzero second derivative."""
    return rule_for(site.op.name)(site)


def rule_for(name: str) -> Rule:
    try:
        return SECOND[name]
    except KeyError:
        raise NotImplementedError(
            f"{name}: no second-order rule (hessian and hvp need one for every op between the inputs and "
            f"the output); ops with one: {', '.join(sorted(SECOND))}") from None


def has_rule(name: str) -> bool:
    return name in SECOND


def _sizes(*pairs) -> dict:
    sizes = {}
    for labels, shape in pairs:
        sizes.update(zip(labels, shape))
    return sizes


def _term(groups, operands, sizes) -> Term:
    return Term(tuple(groups), tuple((s, np.asarray(a)) for s, a in operands), sizes)


# ---------------------------------------------------------------- elementwise rows

def _on(out: str, d, out_shape: tuple, dtype) -> tuple:
    """A second partial that broadcasts to the output, as operands on the output's labels."""
    if not isinstance(d, np.ndarray):
        return () if d == 1 else (("", np.array(d, dtype=dtype)),)
    off = len(out_shape) - d.ndim
    keep = [k for k, n in enumerate(d.shape) if n == out_shape[off + k]]
    if len(keep) < d.ndim:
        d = d.reshape([d.shape[k] for k in keep])
    return (("".join(out[off + k] for k in keep), d.astype(dtype, copy=False)),)


def _zero(d) -> bool:
    return not isinstance(d, np.ndarray) and d == 0


def _unary(site: Site) -> dict:
    row, x, y = site.op.row, site.arrays["x"], site.value
    d2 = row.d2(x, y, **{p: site.params[p] for p, _, _ in row.params}) if callable(row.d2) else row.d2
    if _zero(d2):
        return {}
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        d2 = np.asarray(d2, dtype=y.dtype) if callable(row.d2) else d2
    L = lead(x.ndim)
    return {(0, 0): [_term((L, L, L), _on(L, d2, y.shape, y.dtype), dict(zip(L, x.shape)))]}


def _binary(site: Site) -> dict:
    row, y = site.op.row, site.value
    a, b = site.arrays["a"], site.arrays["b"]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        parts = row.d2(a, b, y) if callable(row.d2) else row.d2
    out = lead(y.ndim)
    new = fresh(out)

    def labels(arg):  # one slot's labels: the output's where aligned, fresh where broadcast
        off = y.ndim - arg.ndim
        return "".join(out[off + k] if n == y.shape[off + k] else next(new) for k, n in enumerate(arg.shape))

    args = (a, b)
    rules = {}
    for (k, l), d in zip(((0, 0), (0, 1), (1, 1)), parts):
        if _zero(d):
            continue
        for kk, ll in {(k, l), (l, k)}:
            lk, lm = labels(args[kk]), labels(args[ll])
            sizes = _sizes((out, y.shape), (lk, args[kk].shape), (lm, args[ll].shape))
            rules[kk, ll] = [_term((out, lk, lm), _on(out, d, y.shape, y.dtype), sizes)]
    return rules


# ---------------------------------------------------------------- multilinear ops

def _multilinear(*names: str, positional: bool = False) -> Rule:
    """Cross terms of an op linear in each of ``names``: its Jacobian w.r.t. ``a_k`` with the
    operand that is ``a_l`` taken out (``positional``: operand order is argument order, less k)."""
    def rule(site: Site) -> dict:
        op, rules = site.op, {}
        present = [k for k, n in enumerate(op.arrays) if (n in names or positional) and site.arrays.get(n) is not None]
        for k in present:
            f = None
            for l in present:
                if l == k:
                    continue
                f = f or site.builders[k]()
                idx = (present.index(l) - (l > k)) if positional else \
                    next((j for j, (_, arr) in enumerate(f.operands) if arr is site.arrays[op.arrays[l]]), None)
                arg = site.arrays[op.arrays[l]]
                sub = None if idx is None else _as_argument(f.operands[idx], arg, f)
                if sub is None:
                    raise NotImplementedError(f"{op.name}: no second-order rule for this call (the Jacobian "
                                              f"w.r.t. {op.arrays[k]} does not hold {op.arrays[l]} as it is)")
                rest = f.operands[:idx] + f.operands[idx + 1:]
                sizes = {**f.sizes, **dict(zip(sub, arg.shape))}
                rules[k, l] = [_term((f.out, f.inp, sub), rest, sizes)]
        return rules
    return rule


def _as_argument(operand, arg: np.ndarray, f) -> str | None:
    """The labels of ``arg`` in a Jacobian's operand that holds it: the operand's own labels, with a
    fresh label for each size-1 axis squeezed out of it (an einsum broadcast); None if it is not ``arg``."""
    sub, arr = operand
    if arr is arg:
        return sub
    ones = [k for k, n in enumerate(arg.shape) if n == 1]
    if (arr.shape != tuple(n for n in arg.shape if n != 1) or len(sub) != arg.ndim - len(ones)
            or not np.shares_memory(arr, arg)):
        return None
    new, it = fresh(f.out + f.inp + "".join(s for s, _ in f.operands)), iter(sub)
    return "".join(next(new) if n == 1 else next(it) for n in arg.shape)


def _conv(site: Site) -> dict:
    """y[b,o,p] = sum_{c,i} W[o,c,i] x[b,c,map(p,i)] (+ b[o]): bilinear in (x, W), so the cross term
    d2y / dx dW is the x-Jacobian with the operand W taken out (its labels o, c, i become the W group)
    and its window maps kept (on the x group); dW dx is the same term with the groups swapped."""
    f = site.builders[0]()
    W = site.arrays["W"]
    (sub, arr), = f.terms
    if arr is not W:
        raise NotImplementedError(f"{site.op.name}: no second-order rule for this call (the Jacobian w.r.t. x "
                                  f"does not hold W as it is)")
    sizes = f.sizes
    return {(0, 1): [Mapped(Term((f.out, f.inp, sub), (), sizes), f.maps, 1)],
            (1, 0): [Mapped(Term((f.out, sub, f.inp), (), sizes), f.maps, 2)]}


# ---------------------------------------------------------------- closed forms

def _softmax_of(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _lse_terms(out: str, L: str, q: np.ndarray, scale=None, sign: float = 1.0) -> list[Term]:
    """``sign * scale * (diag(q) - q q^T)`` over the last axis (logsumexp's Hessian), output labels ``out``
    (labels of ``out`` that are not ``L`` are axes it does not vary along)."""
    j, k = L + "j", L + "k"
    n = q.shape[-1]
    sizes = {**dict(zip(L, q.shape)), "i": n, "j": n, "k": n}
    qs = sign * (q if scale is None else q * scale[..., None])
    return [_term((out, j, j), [(j, qs)], sizes), _term((out, j, k), [(j, -qs), (k, q)], sizes)]


def _logsumexp(site: Site) -> dict:
    x = site.arrays["x"]
    L = lead(x.ndim - 1)
    return {(0, 0): _lse_terms(L, L, _softmax_of(x))}


def _log_softmax(site: Site) -> dict:
    """y_i = x_i - logsumexp(x): minus logsumexp's Hessian, the same for every i."""
    x = site.arrays["x"]
    L = lead(x.ndim - 1)
    return {(0, 0): _lse_terms(L + "i", L, _softmax_of(x), sign=-1.0)}


def _softmax(site: Site) -> dict:
    """d2 q_i / dx_j dx_k = q_i (d_ij - q_j)(d_ik - q_k) - q_i q_j (d_jk - q_k): five delta patterns."""
    q = site.value
    L = lead(q.ndim - 1)
    i, j, k = L + "i", L + "j", L + "k"
    sizes = {**dict(zip(L, q.shape)), "i": q.shape[-1], "j": q.shape[-1], "k": q.shape[-1]}
    return {(0, 0): [_term((i, i, i), [(i, q)], sizes),
                     _term((i, i, k), [(i, q), (k, -q)], sizes),
                     _term((i, j, i), [(i, q), (j, -q)], sizes),
                     _term((i, j, j), [(i, q), (j, -q)], sizes),
                     _term((i, j, k), [(i, 2.0 * q), (j, q), (k, q)], sizes)]}


def _mse(site: Site) -> dict:
    yhat = site.arrays["yhat"]
    L = lead(yhat.ndim - 1)
    sizes = {**dict(zip(L, yhat.shape)), "i": yhat.shape[-1]}
    minus = [("", np.array(-1.0, dtype=yhat.dtype))]
    return {(k, l): [_term((L, L + "i", L + "i"), [] if k == l else minus, sizes)] for k in (0, 1) for l in (0, 1)}


def _cross_entropy(site: Site) -> dict:
    phat, p = site.arrays["phat"], site.arrays["p"]
    L = lead(phat.ndim - 1)
    sizes = {**dict(zip(L, phat.shape)), "i": phat.shape[-1]}
    g = (L, L + "i", L + "i")
    cross = [_term(g, [(L + "i", -1.0 / phat)], sizes)]
    return {(0, 0): [_term(g, [(L + "i", p / (phat * phat))], sizes)], (0, 1): cross, (1, 0): cross}


def _softmax_cross_entropy(site: Site) -> dict:
    """sum(target) * logsumexp's Hessian (the target is not differentiated)."""
    x, t = site.arrays["logits"], site.arrays["target"]
    s = np.ones(x.shape[:-1], dtype=x.dtype) if np.issubdtype(t.dtype, np.integer) else t.sum(axis=-1)
    L = lead(x.ndim - 1)
    return {(0, 0): _lse_terms(L, L, _softmax_of(x), scale=s)}


# ---------------------------------------------------------------- linear algebra

def _inv(site: Site) -> dict:
    """Y = inv(A), dY = -Y dA Y:  d2Y[ij] / dA[kl] dA[mn] = Y[i,k] Y[l,m] Y[n,j] + Y[i,m] Y[n,k] Y[l,j]."""
    f = site.builders[0]()
    Y = f.terms[1][1]
    L, (i, j), (k, l) = f.out[:-2], f.out[-2:], f.inp[-2:]
    m, n = _new(f, 2)
    sizes = {**f.sizes, m: Y.shape[-1], n: Y.shape[-1]}
    g = (f.out, f.inp, L + m + n)
    return {(0, 0): [_term(g, [(L + i + k, Y), (L + l + m, Y), (L + n + j, Y)], sizes),
                     _term(g, [(L + i + m, Y), (L + n + k, Y), (L + l + j, Y)], sizes)]}


def _new(f, count: int, *more) -> list[str]:
    new = fresh("".join(g.out + g.inp + "".join(s for s, _ in g.terms) for g in (f,) + more))
    return [next(new) for _ in range(count)]


def _inverse(op: str, a: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.inv(a)
    except np.linalg.LinAlgError:
        raise ValueError(f"{op}: the second derivative needs inv(a), and a {a.shape} is singular") from None


def _det(site: Site) -> dict:
    """dd = d tr(Y dA), Y = inv(A):  d2d / dA[ij] dA[kl] = d (Y[j,i] Y[l,k] - Y[j,k] Y[l,i])."""
    f = site.builders[0]()
    a, d = site.arrays["a"], site.value
    Y = _inverse("det", a)
    L, (i, j) = f.out, f.inp[-2:]
    k, l = _new(f, 2)
    sizes = {**f.sizes, k: a.shape[-1], l: a.shape[-1]}
    g = (L, f.inp, L + k + l)
    return {(0, 0): [_term(g, [(L, d), (L + j + i, Y), (L + l + k, Y)], sizes),
                     _term(g, [(L, -d), (L + j + k, Y), (L + l + i, Y)], sizes)]}


def _slogdet(site: Site) -> dict:
    """dl = tr(Y dA):  d2l / dA[ij] dA[kl] = -Y[j,k] Y[l,i]."""
    f = site.builders[0]()
    Y = f.terms[0][1]
    L, (i, j) = f.out, f.inp[-2:]
    k, l = _new(f, 2)
    sizes = {**f.sizes, k: Y.shape[-1], l: Y.shape[-1]}
    return {(0, 0): [_term((L, f.inp, L + k + l), [(L + j + k, -Y), (L + l + i, Y)], sizes)]}


def _solve(site: Site) -> dict:
    """x = Y b, dx = Y (db - dA x):  d2x[i] / dA[pq] dA[rs] = Y[i,p] Y[q,r] x[s] + Y[i,r] Y[s,p] x[q],
    d2x[i] / dA[pq] db[m] = -Y[i,p] Y[q,m]  (a column index k of b and x rides along as a delta)."""
    fa, fb = site.builders[0](), site.builders[1]()
    (ya, mY), (xs, x) = fa.terms
    Y = -mY
    aL, (i, p), (q,) = ya[:-2], ya[-2:], fa.inp[-1:]
    m = fb.inp[-2] if site.arrays["b"].ndim > 1 else fb.inp[-1]
    r, s = _new(fa, 2, fb)
    n = Y.shape[-1]
    sizes = {**fa.sizes, **fb.sizes, r: n, s: n}
    xr = lambda l: xs.replace(q, l)   # x's labels with its row label l
    g = (fa.out, fa.inp, aL + r + s)
    cross = [(ya, -Y), (aL + q + m, Y)]
    return {(0, 0): [_term(g, [(ya, Y), (aL + q + r, Y), (xr(s), x)], sizes),
                     _term(g, [(aL + i + r, Y), (aL + s + p, Y), (xs, x)], sizes)],
            (0, 1): [_term((fa.out, fa.inp, fb.inp), cross, sizes)],
            (1, 0): [_term((fa.out, fb.inp, fa.inp), cross, sizes)]}


def _cholesky(site: Site) -> dict:
    """L L^T = S = (A + A^T)/2, M = inv(L), X(E) = M E M^T, Phi(X)[ab] = w[a,b] X[a,b] (w: the lower
    triangle, diagonal 1/2).  dL = L Phi(X(dS)), and differentiating once more (dM = -M dL M, M dL2 = Phi(X2)):
    d2L[dS1, dS2] = L Phi(X2) Phi(X1) - L Phi(Phi(X2) X1 + X1 Phi(X2)^T), i.e. with E1 = e_r e_s^T, E2 = e_t e_u^T
    d2L[ij] = L[i,a] w[a,b] M[a,t] M[b,u] w[b,j] M[b,r] M[j,s] - L[i,a] w[a,j] w[a,c] M[a,t] M[c,u] M[c,r] M[j,s]
              - L[i,a] w[a,j] M[a,r] M[c,s] w[j,c] M[j,t] M[c,u],
    averaged over the swaps r <-> s and t <-> u (the input is symmetrized)."""
    A = site.arrays["a"]
    Lc = site.value if not site.params.get("upper") else np.swapaxes(site.value, -1, -2)
    n = A.shape[-1]
    M = np.linalg.inv(Lc)
    w = np.tril(np.ones((n, n), dtype=A.dtype), -1) + np.eye(n, dtype=A.dtype) / 2
    B = lead(A.ndim - 2)
    i, j, r, s, t, u, a, b, c = "ijrstuabc"
    sizes = {**dict(zip(B, A.shape)), **{l: n for l in "ijrstuabc"}}
    out = B + (j + i if site.params.get("upper") else i + j)
    q = ("", np.array(0.25, dtype=A.dtype))
    bodies = [[(B + i + a, Lc), (a + b, w), (B + a + t, M), (B + b + u, M), (b + j, w), (B + b + r, M), (B + j + s, M)],
              [(B + i + a, -Lc), (a + j, w), (a + c, w), (B + a + t, M), (B + c + u, M), (B + c + r, M), (B + j + s, M)],
              [(B + i + a, -Lc), (a + j, w), (B + a + r, M), (B + c + s, M), (j + c, w), (B + j + t, M), (B + c + u, M)]]
    terms = [_term((out, B + g1, B + g2), body + [q], sizes)
             for body in bodies for g1 in (r + s, s + r) for g2 in (t + u, u + t)]
    return {(0, 0): terms}


# ---------------------------------------------------------------- normalizations

def _standardized(xh: np.ndarray, c: np.ndarray, g: np.ndarray, o: str, j: str, k: str, rest: str,
                  sizes: dict, dtype) -> list[Term]:
    """g_o d2 xhat_o / dx_j dx_k over one normalized axis of n entries (labels o, j, k; ``rest`` the
    axes carried along as deltas; ``c = 1 / (n sigma^2)`` on ``rest``'s stats axes, broadcast):
    c [3 xh_o xh_j xh_k / n + (xh_o + xh_j + xh_k) / n - d_oj xh_k - d_ok xh_j - d_jk xh_o]."""
    n = sizes[o]
    gc = np.broadcast_to(g * c, xh.shape)
    O, J, K = rest(o), rest(j), rest(k)
    return [_term((O, J, K), [(O, 3.0 / n * gc * xh), (J, xh), (K, xh)], sizes),
            _term((O, J, K), [(O, gc * xh / n)], sizes),
            _term((O, J, K), [(O, gc / n), (J, xh)], sizes),
            _term((O, J, K), [(O, gc / n), (K, xh)], sizes),
            _term((O, O, K), [(O, -gc), (K, xh)], sizes),
            _term((O, J, O), [(O, -gc), (J, xh)], sizes),
            _term((O, J, J), [(O, -gc * xh)], sizes)]


def _layer_norm(site: Site) -> dict:
    """xhat = (x - mean) / sigma over the last axis (n), sigma = sqrt(var + eps), d sigma / dx_k = xhat_k / n:
    d2 xhat_i / dx_j dx_k = [3 xh_i xh_j xh_k / n + (xh_i + xh_j + xh_k) / n - d_ij xh_k - d_ik xh_j - d_jk xh_i]
    / (n sigma^2), times gamma_i;  d2y_i / dx_j dgamma_m = d_im (d_ij - 1/n - xh_i xh_j / n) / sigma."""
    x, gamma = site.arrays["x"], site.arrays["gamma"]
    n = x.shape[-1]
    var = x.var(axis=-1, keepdims=True) + site.params["eps"]
    sigma = np.sqrt(var)
    xh = (x - x.mean(axis=-1, keepdims=True)) / sigma
    g = np.ones(n, dtype=x.dtype) if gamma is None else gamma
    L = lead(x.ndim - 1)
    sizes = {**dict(zip(L, x.shape)), "i": n, "j": n, "k": n}
    rules = {(0, 0): _standardized(xh, 1.0 / (n * var), g, "i", "j", "k", lambda l: L + l, sizes, x.dtype)}
    if gamma is not None:
        s = 1.0 / sigma
        g1 = (L + "i", L + "j", "i")
        cross = [_term((L + "i", L + "i", "i"), [(L, s[..., 0])], sizes),
                 _term(g1, [(L, -s[..., 0] / n)], sizes),
                 _term(g1, [(L + "i", -xh * s / n), (L + "j", xh)], sizes)]
        rules[0, 1] = cross
        rules[1, 0] = [Term((t.groups[0], t.groups[2], t.groups[1]), t.operands, t.sizes) for t in cross]
    return rules


def _batch_norm(site: Site) -> dict:
    """layer_norm's closed form over the batch axis (training-mode statistics), one feature at a time:
    d2 xhat[b,f] / dx[c,f'] dx[d,f''] = d_ff' d_ff'' [3 xh_b xh_c xh_d / B + (xh_b + xh_c + xh_d) / B
    - d_bc xh_d - d_bd xh_c - d_cd xh_b] / (B sigma_f^2), times gamma_f;
    d2y[b,f] / dx[c,f'] dgamma[f''] = d_ff' d_ff'' (d_bc - 1/B - xh_b xh_c / B) / sigma_f."""
    x, gamma = site.arrays["x"], site.arrays["gamma"]
    B, F = x.shape[0], x.shape[1:]
    var = x.var(axis=0) + site.params["eps"]
    sigma = np.sqrt(var)
    xh = (x - x.mean(axis=0)) / sigma
    g = np.ones(F, dtype=x.dtype) if gamma is None else gamma
    f = lead(len(F))
    sizes = {**dict(zip(f, F)), "b": B, "c": B, "d": B}
    rules = {(0, 0): _standardized(xh, 1.0 / (B * var), g, "b", "c", "d", lambda l: l + f, sizes, x.dtype)}
    if gamma is not None:
        s = 1.0 / sigma
        g1 = ("b" + f, "c" + f, f)
        cross = [_term(("b" + f, "b" + f, f), [(f, s)], sizes),
                 _term(g1, [(f, -s / B)], sizes),
                 _term(g1, [("b" + f, -xh * s / B), ("c" + f, xh)], sizes)]
        rules[0, 1] = cross
        rules[1, 0] = [Term((t.groups[0], t.groups[2], t.groups[1]), t.operands, t.sizes) for t in cross]
    return rules


# ---------------------------------------------------------------- norm

def _norm(site: Site) -> dict:
    """numpy.linalg.norm's second derivatives, by the kind of norm (the first-order op's reading of ord/axis):

    * vector p-norms (2, Frobenius, any real p other than 1, +-inf): with g = dn/dx = sign(x) (|x|/n)^(p-1),
      d2n / dx_i dx_j = (p - 1) / n [(|x_i| / n)^(p-2) d_ij - g_i g_j]; for 1 < p < 2 it is infinite at a
      zero entry (where the first derivative is continuous but not differentiable);
    * ord 1, +-inf (vector) and 1, -1, +-inf (matrix): piecewise linear, zero away from ties and zero
      entries (where they are not differentiable);
    * 'nuc' (sum of singular values, x = U diag(s) V^T thin, c_jk = 1 / (s_j + s_k)):
      d2 / dx[ab] dx[cd] = sum_jk c_jk (U_aj V_bk U_cj V_dk - U_aj V_bk U_ck V_dj)
      + sum_k (Q_ac V_bk V_dk + U_ak U_ck R_bd) / s_k, Q = I - U U^T, R = I - V V^T (rectangular x);
    * 2, -2 (the largest, smallest singular value s_k; e_j = 1 / (s_k^2 - s_j^2), e_k = 0):
      d2 / dx[ab] dx[cd] = sum_j e_j [s_k (U_aj V_bk U_cj V_dk + U_ak V_bj U_ck V_dj)
      + s_j (U_aj V_bk U_ck V_dj + U_ak V_bj U_cj V_dk)] + (Q_ac V_bk V_dk + U_ak U_ck R_bd) / s_k,
      defined where s_k is a simple singular value (and nonzero).
    """
    x = site.arrays["x"]
    ord, axis = site.params.get("ord"), site.params.get("axis")
    f = site.builders[0]()
    X, out = f.inp, f.out
    nd = x.ndim
    if axis is None:
        axes = tuple(range(nd))
        kind = "vector" if ord is None or nd == 1 else "matrix"
    else:
        axes = tuple(sorted(a % nd for a in (axis if isinstance(axis, (tuple, list)) else (axis,))))
        kind = "vector" if len(axes) == 1 else "matrix"
        if kind == "matrix":
            axes = tuple(a % nd for a in axis)
    if kind == "matrix" and ord in (None, "fro"):
        kind, ord, axes = "vector", 2, tuple(sorted(axes))
    new = fresh(X + out)
    X2 = "".join(next(new) if k in axes else X[k] for k in range(nd))
    sizes = {**f.sizes, **dict(zip(X2, x.shape))}
    if kind == "vector":
        p = 2.0 if ord is None else float(ord)
        if p in (1.0, np.inf, -np.inf):
            return {}
        n = site.value if site.params.get("keepdims") else np.expand_dims(site.value, axes)
        g = f.terms[0][1]
        with np.errstate(divide="ignore"):
            diag = (p - 1) / n * (np.abs(x) / n) ** (p - 2)
        return {(0, 0): [_term((out, X, X), [(X, diag)], sizes),
                         _term((out, X, X2), [(X, -(p - 1) / n * g), (X2, g)], sizes)]}
    if ord in (1, -1, np.inf, -np.inf):
        return {}
    r, c = axes
    xm = np.moveaxis(x, (r, c), (-2, -1))
    U, s, Vh = np.linalg.svd(xm, full_matrices=False)
    V = np.swapaxes(Vh, -1, -2)
    rest = "".join(X[k] for k in range(nd) if k not in (r, c))
    a, b, cc, d = X[r], X[c], X2[r], X2[c]
    j, k = next(new), next(new)
    m, q = x.shape[r], x.shape[c]
    sizes.update({j: s.shape[-1], k: s.shape[-1]})
    Uj = lambda row, lab: (rest + row + lab, U)
    Vj = lambda col, lab: (rest + col + lab, V)
    terms = []
    if ord == "nuc":
        cjk = 1.0 / (s[..., :, None] + s[..., None, :])
        terms += [_term((out, X, X2), [(rest + j + k, cjk), Uj(a, j), Vj(b, k), Uj(cc, j), Vj(d, k)], sizes),
                  _term((out, X, X2), [(rest + j + k, -cjk), Uj(a, j), Vj(b, k), Uj(cc, k), Vj(d, j)], sizes)]
        inv_s = (rest + k, 1.0 / s)
        ends = [(Vj(b, k), Vj(d, k)), (Uj(a, k), Uj(cc, k))]
    else:
        kk = 0 if ord == 2 else -1
        sk = s[..., kk]
        u, v = U[..., :, kk], V[..., :, kk]
        with np.errstate(divide="ignore"):
            e = 1.0 / (sk[..., None] ** 2 - s ** 2)
        e[..., kk] = 0.0
        ej, sej = (rest + j, e * sk[..., None]), (rest + j, e * s)
        ua, ub = lambda l: (rest + l, u), lambda l: (rest + l, v)
        terms += [_term((out, X, X2), [ej, Uj(a, j), ub(b), Uj(cc, j), ub(d)], sizes),
                  _term((out, X, X2), [ej, ua(a), Vj(b, j), ua(cc), Vj(d, j)], sizes),
                  _term((out, X, X2), [sej, Uj(a, j), ub(b), ua(cc), Vj(d, j)], sizes),
                  _term((out, X, X2), [sej, ua(a), Vj(b, j), Uj(cc, j), ub(d)], sizes)]
        inv_s = (rest, 1.0 / sk)
        ends = [(ub(b), ub(d)), (ua(a), ua(cc))]
    if m != q:   # the complement of U (m > q) or of V (m < q): Q = I - U U^T, R = I - V V^T
        big, W, (e1, e2) = (m, U, (a, cc)) if m > q else (q, V, (b, d))
        P = np.eye(big, dtype=x.dtype) - W @ np.swapaxes(W, -1, -2)
        terms.append(_term((out, X, X2), [(rest + e1 + e2, P), inv_s, *ends[0 if m > q else 1]], sizes))
    return {(0, 0): terms}


# ---------------------------------------------------------------- the table

for _op in _ops.OPS.values():
    if _op.row is not None:
        SECOND[_op.name] = _unary if _op.row.arity == 1 else _binary

for _name in ("sum", "mean", "reshape", "transpose", "trace", "diagonal",
              # index maps and relabelings: linear (embedding is linear in E, ids are not differentiated)
              "getitem", "take", "embedding", "pad", "flip", "roll", "tile", "repeat", "broadcast_to",
              "expand_dims", "squeeze", "swapaxes", "moveaxis", "avg_pool2d",
              # piecewise linear: the second derivative is zero away from kinks and ties
              "where", "maximum", "minimum", "abs", "clip", "amax", "amin", "max_pool2d"):
    SECOND[_name] = lambda site: {}

SECOND["linear"] = _multilinear("x", "W")
SECOND["matmul"] = _multilinear("X", "Y")
SECOND["dot"] = _multilinear("a", "b")
SECOND["outer"] = _multilinear("a", "b")
SECOND["kron"] = _multilinear("a", "b")
SECOND["einsum"] = _multilinear(positional=True)
SECOND["conv1d"] = _conv
SECOND["conv2d"] = _conv
SECOND["logsumexp"] = _logsumexp
SECOND["log_softmax"] = _log_softmax
SECOND["softmax"] = _softmax
SECOND["mse"] = _mse
SECOND["cross_entropy"] = _cross_entropy
SECOND["softmax_cross_entropy"] = _softmax_cross_entropy
SECOND["inv"] = _inv
SECOND["det"] = _det
SECOND["slogdet"] = _slogdet
SECOND["solve"] = _solve
SECOND["cholesky"] = _cholesky
SECOND["norm"] = _norm
SECOND["layer_norm"] = _layer_norm
SECOND["batch_norm"] = _batch_norm
