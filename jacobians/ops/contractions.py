"""Contractions: einsum as an op, with numpy's subscripts; its Jacobian per operand is itself an einsum.

(The family has its own name: ``jacobians.ops.einsum`` is the op.)

For ``out = einsum(S_1,...,S_n -> O, X_1, ..., X_n)`` the Jacobian w.r.t. ``X_k`` is the form

    J[O, S_k] = einsum(X_m over S_m for m != k  ->  O + S_k)   with a delta wherever a label is in O and S_k

written as a :class:`~jacobians.factored.Factored` without multiplying anything out:

* labels of ``O`` that ``X_k`` carries are deltas (the same label on both sides);
* the other operands are the form's operands (labels they share with nobody else are summed inside);
* a label of ``X_k`` in no other operand and not in ``O`` is a factor of ones (``out`` does not vary
  with it: ``d sum(x) / dx = 1``);
* a label repeated within ``X_k`` (a diagonal or trace, ``"ii->i"``) keeps its first occurrence and gives
  every other occurrence a fresh input label tied to the first by an ``eye`` operand (n x n);
* an axis of size 1 that numpy broadcasts against a larger one is its own size-1 label (a factor of ones
  in the input; squeezed out of the other operands).

A chain of einsums therefore contracts as one network.  The user's labels are renamed through
:mod:`jacobians.labels` (``...`` dimensions onto ``lead``, letters onto ``core``), so nothing collides
with the composer's labels.

Batching (``batch=True``): an operand whose first subscript label is also the output's first label
carries the batch (its Jacobian is per-sample, ``(B, *O, *I)``); every other operand is shared
(``(B, *O, *P)`` when the output has the batch). ``"bqd,bkd->bqk"`` has both operands per-sample;
``"bi,ij->bj"`` has a per-sample ``x`` and a shared ``W``.
"""

from __future__ import annotations

import inspect
import string

import numpy as np

from ..errors import fail
from ..labels import core, fresh, lead
from ._registry import register, rule

__all__ = ["einsum", "MAX_OPERANDS"]

MAX_OPERANDS = 16  # array arguments operand0 .. operand15 (the registry binds named array arguments)
_NAMES = tuple(f"operand{k}" for k in range(MAX_OPERANDS))
_LETTERS = set(string.ascii_letters)


def _parse(subscripts: str, shapes: list[tuple]) -> tuple[list[str], str]:
    """numpy's subscripts (already accepted by np.einsum) as internal labels: one term per operand, the output."""
    s = subscripts.replace(" ", "")
    lhs, arrow, rhs = s.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        fail("einsum", f"subscripts {subscripts!r} name {len(terms)} operands; got {len(shapes)}")
    for t in terms + [rhs]:
        bad = set(t.replace("...", "")) - _LETTERS
        if bad or t.count("...") > 1:
            fail("einsum", f"subscripts {subscripts!r}: labels are letters, with at most one '...' per term")
    ell = []
    for t, shape in zip(terms, shapes):
        plain = len(t.replace("...", ""))
        ell.append(len(shape) - plain if "..." in t else 0)
    E = max(ell, default=0)
    names = {c: l for c, l in zip(sorted(set(lhs) & _LETTERS), core(len(set(lhs) & _LETTERS)))}
    L = lead(E)

    def internal(t: str, n_ell: int) -> str:
        head, dots, tail = t.partition("...")
        return "".join(names[c] for c in head) + (L[E - n_ell:] if dots else "") + "".join(names[c] for c in tail)

    terms_i = [internal(t, n) for t, n in zip(terms, ell)]
    if arrow:
        out = internal(rhs, E)
    else:  # implicit output: the broadcast dimensions, then the labels seen once, sorted by character
        counts = {c: lhs.count(c) for c in set(lhs) & _LETTERS}
        out = L + "".join(names[c] for c in sorted(c for c, n in counts.items() if n == 1))
    return terms_i, out


def _clean(sub: str, arr: np.ndarray, size: dict) -> tuple[str, np.ndarray]:
    """An operand as a form's operand: broadcast size-1 axes squeezed, repeated labels read on the diagonal."""
    keep = [k for k, l in enumerate(sub) if not (arr.shape[k] == 1 and size[l] > 1)]
    if len(keep) < len(sub):
        arr = arr.reshape([arr.shape[k] for k in keep])
        sub = "".join(sub[k] for k in keep)
    unique = "".join(dict.fromkeys(sub))
    if unique != sub:
        local = {l: c for l, c in zip(unique, string.ascii_letters)}
        arr = np.einsum("".join(map(local.get, sub)) + "->" + "".join(map(local.get, unique)), arr)
    return unique, arr


def _forward(subscripts, out=None, dtype=None, order="K", casting="safe", optimize=False, **operands):
    if not isinstance(subscripts, str):
        fail("einsum", f"subscripts must be a string such as 'ij,jk->ik' (the interleaved form "
                       f"einsum(op0, sublist0, ...) is not supported); got {type(subscripts).__name__}", TypeError)
    if out is not None:
        fail("einsum", "out= is not supported: the op returns a new array", TypeError)
    ops = [operands[n] for n in _NAMES]
    n = next((k for k, a in enumerate(ops) if a is None), len(ops))
    if any(a is not None for a in ops[n:]):
        fail("einsum", f"operands must be consecutive; {_NAMES[n]} is None", TypeError)
    ops = ops[:n]
    if dtype is not None:
        if not np.issubdtype(np.dtype(dtype), np.floating):
            fail("einsum", f"dtype must be a floating-point dtype; got {dtype!r}", TypeError)
        ops = [a.astype(dtype) for a in ops]
    shapes = [a.shape for a in ops]
    try:
        value = np.einsum(subscripts, *ops, optimize=optimize)
    except (ValueError, TypeError) as e:
        txt = ", ".join(str(s) for s in shapes)
        fail("einsum", f"numpy refuses subscripts {subscripts!r} for operands of shapes {txt}: {e}")
    terms, out_labels = _parse(subscripts, shapes)
    size: dict[str, int] = {}
    for t, shape in zip(terms, shapes):
        for l, m in zip(t, shape):
            size[l] = max(size.get(l, 1), m)
    cleaned: dict[int, tuple] = {}

    def other(m):
        if m not in cleaned:
            cleaned[m] = _clean(terms[m], ops[m], size)
        return cleaned[m]

    def jac(k):
        def build():
            new = fresh("".join(terms) + out_labels)
            inp, eyes = "", []
            for l, m in zip(terms[k], shapes[k]):
                if m == 1 and size[l] > 1:       # broadcast: constant along l
                    inp += next(new)
                elif l in inp:                   # a repeated label: a diagonal
                    twin = next(new)
                    inp += twin
                    eyes.append((l + twin, np.eye(m, dtype=value.dtype)))
                else:
                    inp += l
            return rule(out_labels, inp, *[other(m) for m in range(len(ops)) if m != k], *eyes)
        return build
    return value, tuple(jac(k) for k in range(len(ops)))


_PARAMS = [inspect.Parameter("subscripts", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
_PARAMS += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for n in _NAMES]
_PARAMS += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d)
            for n, d in (("out", None), ("dtype", None), ("order", "K"), ("casting", "safe"), ("optimize", False))]
_forward.__doc__ = """numpy's einsum: ``einsum("bqd,bkd->bqk", Q, K)``; explicit or implicit output, ``...``,
repeated labels (diagonals, traces), size-1 broadcasting; up to 16 operands.

``optimize``, ``order`` and ``casting`` are accepted (the value is computed by np.einsum);
``out=`` and the interleaved form are refused.  The Jacobian w.r.t. each operand is an einsum of
the other operands with deltas (see :mod:`jacobians.ops.contractions`)."""

einsum = register("einsum", _forward, arrays=" ".join(_NAMES), signature=inspect.Signature(_PARAMS),
                  family="contractions", numpy=("einsum",),
                  formula="d out[O] / d X_k[S_k] = einsum(other operands -> O + S_k), deltas on labels in O "
                          "and S_k, ones on labels only in S_k, eye on labels repeated in S_k")
