"""Run a :class:`~jacobians.plan.Plan` on one call's graph: per-call buffers, no lock.

Everything the run needs besides the call's own values (where each operand comes
from, what to free after which step, which block to copy before writing it) was
fixed when the plan was made; a run is one pass over the steps.  Every buffer
lives in the run's own slot list, so concurrent calls of one plan share nothing
mutable.  The results never share memory with an input, an op's operand or each
other.

The steps run on an array backend (:mod:`jacobians.backends`, numpy by default): the
ops' factors are numpy arrays computed on the host, moved to the backend's device once
per call (each operand when a step first reads it); every contraction, gather,
scatter-add, diagonal write and result buffer is the backend's.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .backends import numpy as _numpy
from .graph import Graph
from .indexmaps import apply_map
from .network import contract_pair
from .plan import ExpandStep, MapStep, NetStep, Plan, Slot, WindowStep
from .planner import structure

__all__ = ["execute", "StructureChanged"]


class StructureChanged(RuntimeError):
    """A link's factored Jacobian has another structure than the plan was made for (a cached
    plan keyed by shapes met a parameter whose values change the structure): plan afresh."""


def execute(plan: Plan, graph: Graph, factors: dict | None = None, xp=_numpy, device=None) -> dict:
    """The plan's Jacobians on ``graph``'s values (a trace with the plan's structural signature).

    ``factors`` may hold factored forms already built for this graph (by the planner).
    ``xp`` is the backend module the steps run on and ``device`` its device (None: its default);
    the results are its arrays.
    """
    nodes = graph.nodes
    operands = []
    for key, expected in plan.links:
        f = factors.get(key) if factors else None
        if f is None:
            c, k = key
            f = nodes[c].builders[k](check=False)   # validated when the plan was made
            if structure(f) != expected:  # a plan relies on structure alone; a rule that breaks that is a bug
                raise StructureChanged(f"jacobian: the structure of {nodes[c].name}'s Jacobian w.r.t. "
                                   f"{nodes[c].op.arrays[k]} differs from the plan's ({expected} vs {structure(f)})")
        operands.append(f)
    link_pos = {key: p for p, (key, _) in enumerate(plan.links)}
    dtype = np.dtype(plan.dtype)
    moved: dict = {}   # (link, operand) -> the factor on the backend (each moved once per call)

    def operand(p: int, j: int):
        if xp is _numpy:
            return operands[p].terms[j][1]
        a = moved.get((p, j))
        if a is None:
            a = moved[p, j] = xp.asarray(operands[p].terms[j][1], device=device)
        return a

    slots: list = [None] * plan.n_slots
    for step in plan.steps:
        if type(step) is NetStep:
            arrays = [slots[s[1]] if s[0] == 0 else operand(s[1], s[2]) if s[0] == 1 else
                      xp.ones(s[1], dtype, device) for s in step.fetch]
            slots[step.slot] = step.network.contract(arrays, step.path, step.chunk, xp)
        elif type(step) is WindowStep:
            arrays = [slots[s[1]] if s[0] == 0 else operand(s[1], s[2]) if s[0] == 1 else
                      xp.ones(s[1], dtype, device) for s in step.fetch]
            slots[step.slot] = _windows(step, arrays, dtype, xp, device)
        elif type(step) is MapStep:
            f = operands[link_pos[step.source[:2]]]
            m = f.maps[step.source.map]
            m = m.relabel(dict(zip(m.labels, step.out + step.inp)))
            array = slots[step.array.index] if type(step.array) is Slot else xp.ones((), dtype, device)
            result, labels = apply_map(m, array, step.labels, step.direction, step.keep, xp,
                                       order=step.result if step.direction == "scatter" else None)
            if labels != step.result:   # the planner worked out the same labels from shapes
                raise RuntimeError(f"jacobian: a map step of {step.label} gave labels {labels!r}, planned {step.result!r}")
            slots[step.slot] = result
        elif type(step) is ExpandStep:
            if step.add_to is not None:
                target = slots[step.add_to]
                if xp is _numpy and (not isinstance(target, np.ndarray) or not target.flags.writeable):
                    target = np.array(target)   # a 0-d contraction comes back as a numpy scalar: read-only
                elif step.copy_target:
                    target = xp.copy(target)
            else:
                target = (xp.zeros if step.has_eye else xp.empty)(step.shape, dtype, device)
            src = None
            if step.has_data:
                src = slots[step.sources[0].index]
                if step.data_perm != tuple(range(len(step.data_perm))):
                    src = xp.transpose(src, step.data_perm)
                src = xp.reshape(src, step.data_shape)
            slots[step.slot] = xp.write_diagonal(target, step.view, src, step.add_to is not None)
        else:  # ZeroStep
            slots[step.slot] = xp.zeros(step.shape, dtype, device)
        for s in step.free:
            slots[s] = None
    results = {}
    for name, (slot, shape, copy) in plan.results.items():
        if slot is None:
            results[name] = xp.zeros(shape, dtype, device)
            continue
        r = slots[slot]
        if _dtype(r) != dtype:
            r = xp.astype(r, dtype)
        elif copy:
            r = xp.copy(r)
        results[name] = r
    return results


def _dtype(a) -> np.dtype:
    return a.dtype if type(a) is np.ndarray else np.dtype(str(a.dtype).rpartition(".")[2])


def _windows(step: WindowStep, arrays: list, dtype, xp=_numpy, device=None):
    """A transposed convolution by shifted contractions: for each combination of kernel offsets,
    the network with those offsets fixed, added into the result's strided window.

    Strided in-place adds are numpy's: on another backend the step's operands come to the
    host and its result goes back (one round trip per step)."""
    if xp is not _numpy:
        out = _windows(step, [xp.to_numpy(a) for a in arrays], dtype)
        return xp.asarray(out, device=device)
    terms = step.network.terms
    offsets = [w[2] for w in step.windows]
    fixed = [arrays[k] for k in step.fixed]
    held = np.ascontiguousarray(step.pre.contract(fixed, step.pre_path))   # pre_path is () for one operand
    arrays = [arrays[k] for k in step.varying]
    terms = [terms[k] for k in step.varying]
    spans = [w[4] for w in step.windows]
    n_rest = len(step.result) - len(step.windows)
    out = np.zeros(step.shape, dtype=np.result_type(dtype, *arrays))
    for combo in itertools.product(*(range(len(s)) for s in spans)):
        src, dst = [slice(None)] * n_rest, [slice(None)] * n_rest
        for (lo, hi, start, stride) in (s[k] for s, k in zip(spans, combo)):
            src.append(slice(lo, hi))
            dst.append(slice(start, start + (hi - lo - 1) * stride + 1, stride) if hi > lo else slice(0, 0))
        if any(d.start == d.stop == 0 for d in dst[n_rest:]):
            continue  # this offset reads nothing (all padding)
        at = dict(zip(offsets, combo))
        sliced = [a[tuple(at[l] if l in at else slice(None) for l in t)] if any(l in at for l in t) else a
                  for a, t in zip(arrays, terms)]
        if len(sliced) == 1:  # the usual case (held gradient x one kernel slice): one GEMM, no copies
            part = _gemm(held, step.sub.terms[0], sliced[0], step.sub.terms[1], step.sub.output)
        else:
            part = step.sub.contract([held] + sliced, step.path)
        out[tuple(dst)] += part[tuple(src)]
    return out


def _gemm(a: np.ndarray, ta: str, b: np.ndarray, tb: str, out: str) -> np.ndarray:
    """``einsum(ta, tb -> out)`` for ``a`` laid out with its summed labels last (contiguous): one
    tensordot, its result viewed in ``out`` order (labels only one side sums are summed first)."""
    only_a = [k for k, l in enumerate(ta) if l not in tb and l not in out]
    only_b = [k for k, l in enumerate(tb) if l not in ta and l not in out]
    if only_a:
        a, ta = a.sum(axis=tuple(only_a)), "".join(l for l in ta if l in tb or l in out)
    if only_b:
        b, tb = b.sum(axis=tuple(only_b)), "".join(l for l in tb if l in ta or l in out)
    summed = [l for l in ta if l in tb and l not in out]
    if any(l in tb and l in out for l in ta):   # a label both keep: a batched GEMM or a product
        c, labels = contract_pair(a, ta, b, tb, set(out), out)
        return c.transpose([labels.index(l) for l in out])
    kept_a = [l for l in ta if l not in summed]
    kept_b = [l for l in tb if l not in summed]
    size = dict(zip(ta, a.shape)) | dict(zip(tb, b.shape))
    nl, nk, nr = (math.prod(size[l] for l in g) for g in (kept_a, summed, kept_b))
    A = a.transpose([ta.index(l) for l in kept_a + summed]).reshape(nl, nk)
    B = b.transpose([tb.index(l) for l in summed + kept_b]).reshape(nk, nr)
    if nl >= 4 * nr:   # skinny: the narrow side as rows (OpenBLAS runs (3x6)@(6xN) ~4x faster than (Nx6)@(6x3))
        c, labels = (B.T @ A.T).reshape([size[l] for l in kept_b + kept_a]), kept_b + kept_a
    else:
        c, labels = (A @ B).reshape([size[l] for l in kept_a + kept_b]), kept_a + kept_b
    return c.transpose([labels.index(l) for l in out])
