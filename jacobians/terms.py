"""Terms: one einsum network over several groups of labels, with symbolic deltas.

A :class:`Term` generalizes :class:`~jacobians.factored.Factored` from two label groups (out, in)
to any number: a Jacobian is ``(out, in)``, a Hessian ``(out, in1, in2)``, an op's second
derivative ``(out, arg_k, arg_l)``.  It stands for

    T[g_0..., g_1..., ...] = einsum(operands -> labels)  *  deltas

where a label written in two groups is a delta between those axes (never stored), a label in a
group that no operand carries is a factor of ones, and the labels of the operands that no group
carries are summed.  An elementwise op's second derivative is ``f''`` on three tied labels::

    d2 tanh(x) / dx dx = Term(("A", "A", "A"), [("A", -2 y (1 - y**2))])

Terms compose by :func:`link` (a group of one term identified with the leading group of
another: the chain rule, with deltas merging labels), stay lazy (a list of operands) while
contracting them would make something larger than the operands, and become arrays only in
:func:`compact`, :func:`contract_groups` (against dense vectors) and :func:`accumulate` (into
the user's explicit tensor, deltas written as strided diagonals, never as eyes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import opt_einsum as oe

from .factored import Factored
from .labels import core, fresh
from .limits import check_bytes
from .network import Network

__all__ = ["Term", "from_factored", "identity", "link", "compact", "canonical", "contract_groups", "accumulate"]


@dataclass(frozen=True)
class Term:
    """Groups of labels (distinct within a group), operands ``(subscript, array)``, label sizes."""

    groups: tuple[str, ...]
    operands: tuple[tuple[str, np.ndarray], ...]
    sizes: dict

    def shape(self, g: int) -> tuple[int, ...]:
        return tuple(self.sizes[l] for l in self.groups[g])

    @property
    def dtype(self) -> np.dtype:
        return np.result_type(*[a for _, a in self.operands]) if self.operands else np.dtype(np.float64)

    def labels(self) -> set[str]:
        return set("".join(self.groups)) | set("".join(s for s, _ in self.operands))


def from_factored(f: Factored) -> Term:
    return Term((f.out, f.inp), tuple((s, np.asarray(a)) for s, a in f.operands), f.sizes)


def identity(shape: tuple[int, ...], labels: str) -> Term:
    """d x / d x: every axis a delta."""
    return Term((labels, labels), (), dict(zip(labels, shape)))


def link(outer: Term, g: int, inner: Term) -> Term:
    """``outer`` with its group ``g`` contracted against ``inner``'s group 0 (the chain rule).

    ``inner.groups[0]`` is identified, label by label, with ``outer.groups[g]``; the result's
    groups are ``outer``'s with group ``g`` replaced by ``inner.groups[1:]``.  A delta on either
    side merges labels; a label of group ``g`` left in no group and no operand is a sum of ones
    (a factor of its size)."""
    A, A2 = outer.groups[g], inner.groups[0]
    if tuple(outer.sizes[l] for l in A) != tuple(inner.sizes[l] for l in A2):
        raise AssertionError(f"link: shapes {outer.shape(g)} and {inner.shape(0)} differ")
    m = dict(zip(A2, A))
    new = fresh(outer.labels() | set(outer.sizes) | inner.labels())
    for l in sorted(inner.labels()):
        if l not in m:
            m[l] = next(new)
    rename = lambda s: "".join(m[l] for l in s)
    groups = outer.groups[:g] + tuple(rename(s) for s in inner.groups[1:]) + outer.groups[g + 1:]
    operands = outer.operands + tuple((rename(s), a) for s, a in inner.operands)
    sizes = {**outer.sizes, **{m[l]: n for l, n in inner.sizes.items() if l in m}}
    live, carried = set("".join(groups)), set("".join(s for s, _ in operands))
    scale = math.prod(sizes[l] for l in A if l not in live and l not in carried)
    if scale != 1:
        operands += (("", np.array(scale, dtype=np.result_type(*[a for _, a in operands]) if operands else None)),)
    return Term(groups, operands, sizes)


def _live(term: Term) -> str:
    """The group labels some operand carries, in group order (what a compacted operand is over)."""
    carried = set("".join(s for s, _ in term.operands))
    return "".join(l for l in dict.fromkeys("".join(term.groups)) if l in carried)


def compact(term: Term, force: bool = False) -> Term:
    """The operands contracted into one array over the live labels when that array is smaller than
    the largest operand (or, past three operands, no larger than all of them; or ``force``).

    Otherwise the term stays lazy, with the operands other than the largest folded into one
    where that is no larger than the largest (``f''[n] s[n] t[n]`` becomes one vector beside
    ``X[n,d]``): a later reduction then contracts the large operand once, in one GEMM."""
    ops = term.operands
    if not ops:
        return term
    out = _live(term)
    if len(ops) == 1 and ops[0][0] == out:
        return term
    sizes = [np.size(a) for _, a in ops]
    size = math.prod(term.sizes[l] for l in out)
    if force or size < max(sizes) or (len(ops) > 3 and size <= sum(sizes)):
        return Term(term.groups, ((out, _contract(term, ops, out)),), term.sizes)
    if len(ops) >= 3:
        k = int(np.argmax(sizes))
        rest = ops[:k] + ops[k + 1:]
        keep = set("".join(term.groups)) | set(ops[k][0])
        folded = "".join(l for l in dict.fromkeys("".join(s for s, _ in rest)) if l in keep)
        if math.prod(term.sizes[l] for l in folded) <= sizes[k]:
            return Term(term.groups, (ops[k], (folded, _contract(term, rest, folded))), term.sizes)
    return term


def _contract(term: Term, ops, out: str) -> np.ndarray:
    dtype = term.dtype
    check_bytes(math.prod(term.sizes[l] for l in out) * dtype.itemsize, "hessian: an intermediate term",
                tuple(term.sizes[l] for l in out))
    arr = _einsum([s for s, _ in ops], [a for _, a in ops], out)
    return np.asarray(arr, dtype=dtype)


def canonical(term: Term) -> Term:
    """The term as one array over all its group labels (ones written out), relabeled in order of
    first appearance: two terms with one delta pattern then have equal groups and add as arrays."""
    order = "".join(dict.fromkeys("".join(term.groups)))
    names = dict(zip(order, core(len(order))))
    shape = tuple(term.sizes[l] for l in order)
    dtype = term.dtype
    check_bytes(math.prod(shape) * dtype.itemsize, "hessian: an intermediate term", shape)
    ops = list(term.operands)
    missing = "".join(l for l in order if not any(l in s for s, _ in ops))
    if missing:
        ops.append((missing, np.ones([term.sizes[l] for l in missing], dtype=dtype)))
    arr = np.asarray(_einsum([s for s, _ in ops], [a for _, a in ops], order), dtype=dtype)
    rename = lambda s: "".join(names[l] for l in s)
    return Term(tuple(rename(g) for g in term.groups), ((rename(order), arr),),
                {names[l]: n for l, n in term.sizes.items() if l in names})


def contract_groups(term: Term, given: dict[int, np.ndarray], keep: int) -> np.ndarray:
    """The term contracted with dense arrays on the groups in ``given`` (each of that group's
    shape): an array over group ``keep`` (e.g. an HVP: adjoint on the output group, tangent on
    one argument's group)."""
    subs = [s for s, _ in term.operands] + [term.groups[g] for g in given]
    arrays = [a for _, a in term.operands] + list(given.values())
    out = term.groups[keep]
    missing = "".join(l for l in out if not any(l in s for s in subs))
    if missing:
        subs.append(missing)
        arrays.append(np.ones([term.sizes[l] for l in missing]))
    return np.asarray(_einsum(subs, arrays, out))


def accumulate(target: np.ndarray, term: Term, axes: list[str], assign: bool = False) -> None:
    """``target += term`` (``assign``: ``target[...] = term``, for a term with no delta, which covers
    every entry) where ``axes`` gives, per axis of ``target``, the label it holds.

    A label on several axes of ``target`` (a delta) is written on their diagonal through a
    strided view; a label ``axes`` leaves out must be one tied to another that it names (the
    per-sample batch, kept once).  The operands are contracted straight to the unique labels."""
    unique = list(dict.fromkeys(axes))
    for l in "".join(term.groups):
        if l not in unique:
            raise AssertionError(f"accumulate: label {l!r} has no axis in the target")
    strides = [sum(target.strides[k] for k, l2 in enumerate(axes) if l2 == l) for l in unique]
    shape = [term.sizes[l] for l in unique]
    view = np.ndarray(shape, target.dtype, target, 0, strides) if target.flags.c_contiguous else \
        np.lib.stride_tricks.as_strided(target, shape, strides, writeable=True)
    ops = term.operands
    if not ops:
        if assign:
            view[...] = 1
        else:
            view += 1
        return
    carried = "".join(l for l in unique if any(l in s for s, _ in ops))
    arr = np.asarray(_einsum([s for s, _ in ops], [a for _, a in ops], carried))
    arr = arr.reshape([term.sizes[l] if l in carried else 1 for l in unique])
    if assign:
        view[...] = arr
    else:
        view += arr


def _einsum(subs: list[str], arrays: list, out: str) -> np.ndarray:
    """``einsum(subs -> out)`` as a network in the composer's optimal order: pairwise (batched) GEMMs,
    a per-sample batch label kept in ``matmul``, not in einsum's C loop."""
    arrays = [np.asarray(a) for a in arrays]
    if any(a.ndim == 0 for a in arrays) and any(a.ndim for a in arrays):  # scalars: into the smallest array
        scale = math.prod(a for a in arrays if a.ndim == 0)
        pairs = [(s, a) for s, a in zip(subs, arrays) if a.ndim]
        k = min(range(len(pairs)), key=lambda j: pairs[j][1].size)
        pairs[k] = (pairs[k][0], pairs[k][1] * scale)
        subs, arrays = [s for s, _ in pairs], [a for _, a in pairs]
    if len(arrays) <= 1 or any(a.ndim == 0 for a in arrays):
        return np.asarray(oe.contract(",".join(subs) + "->" + out, *arrays))
    net = Network(tuple(subs), tuple(a.shape for a in arrays), out)
    return net.contract(arrays, net.path("optimal"))
