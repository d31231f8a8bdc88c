"""Second-order rules: for ``y = op(a_1, ..., a_n)``, the second derivatives ``d2y / da_k da_l`` as
:class:`~jacobians.terms.Term` s over the groups ``(y, a_k, a_l)``, one table keyed by op name.

Contracted with two tangent stacks ``T_k``, ``S_l`` they give ``sum_{k,l} d2y/da_k da_l [T_k, S_l]``,
the term the second-order chain rule adds at each node (Faa di Bruno).

* elementwise rows (filled from ``op.row.d2`` for every row): ``f''`` on three tied labels; binary
  rows give ``f_aa``, ``f_ab`` (both orders) and ``f_bb`` on the output's labels, with a fresh
  label per slot where an argument is broadcast;
* linear ops (sum, mean, reshape, transpose, trace, diagonal; add, subtract, negative through
  their rows) and piecewise-linear ones (where, maximum, minimum, abs, clip, amax, amin): none;
* index-map ops (indexing, convolution, pooling) have no rule yet: the second-order propagation
  does not contract through index maps;
* multilinear ops (linear, matmul, dot, outer, kron, einsum): only cross terms, and they are the
  op's own Jacobian w.r.t. ``a_k`` with the operand ``a_l`` taken out, its labels becoming the
  ``a_l`` group (``d2 (x W^T) / dx dW`` is pure deltas);
* closed forms: softmax, log_softmax, logsumexp, mse, cross_entropy, softmax_cross_entropy.

An op without a rule raises ``NotImplementedError`` naming it (:func:`rule_for`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from . import ops as _ops
from .labels import fresh, lead
from .terms import Term

__all__ = ["Site", "SECOND", "second_order", "rule_for", "has_rule"]


class Site(NamedTuple):
    """One op application: the op, its array arguments by name (None: absent), its parameters,
    its value and its lazy first-order builders (one per array argument)."""

    op: _ops.Op
    arrays: dict
    params: dict
    value: np.ndarray
    builders: tuple


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


# ---------------------------------------------------------------- the table

for _op in _ops.OPS.values():
    if _op.row is not None:
        SECOND[_op.name] = _unary if _op.row.arity == 1 else _binary

for _name in ("sum", "mean", "reshape", "transpose", "trace", "diagonal",
              # piecewise linear: the second derivative is zero away from kinks and ties
              "where", "maximum", "minimum", "abs", "clip", "amax", "amin"):
    SECOND[_name] = lambda site: {}

SECOND["linear"] = _multilinear("x", "W")
SECOND["matmul"] = _multilinear("X", "Y")
SECOND["dot"] = _multilinear("a", "b")
SECOND["outer"] = _multilinear("a", "b")
SECOND["kron"] = _multilinear("a", "b")
SECOND["einsum"] = _multilinear(positional=True)
SECOND["logsumexp"] = _logsumexp
SECOND["log_softmax"] = _log_softmax
SECOND["softmax"] = _softmax
SECOND["mse"] = _mse
SECOND["cross_entropy"] = _cross_entropy
SECOND["softmax_cross_entropy"] = _softmax_cross_entropy
