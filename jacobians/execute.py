"""Run a :class:`~jacobians.plan.Plan` on one call's graph: per-call buffers, no lock.

Everything the run needs besides the call's own values (where each operand comes
from, what to free after which step, which block to copy before writing it) was
fixed when the plan was made; a run is one pass over the steps.  Every buffer
lives in the run's own slot list, so concurrent calls of one plan share nothing
mutable.  The results never share memory with an input, an op's operand or each
other.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .graph import Graph
from .indexmaps import apply_map
from .plan import ExpandStep, MapStep, NetStep, Plan, Slot
from .planner import structure

__all__ = ["execute"]


def execute(plan: Plan, graph: Graph, factors: dict | None = None) -> dict[str, np.ndarray]:
    """The plan's Jacobians on ``graph``'s values (a trace with the plan's structural signature).

    ``factors`` may hold factored forms already built for this graph (by the planner).
    """
    nodes = graph.nodes
    operands = []
    for key, expected in plan.links:
        f = factors.get(key) if factors else None
        if f is None:
            c, k = key
            f = nodes[c].builders[k](check=False)   # validated when the plan was made
            if structure(f) != expected:  # a plan relies on structure alone; a rule that breaks that is a bug
                raise RuntimeError(f"jacobian: the structure of {nodes[c].name}'s Jacobian w.r.t. "
                                   f"{nodes[c].op.arrays[k]} differs from the plan's ({expected} vs {structure(f)})")
        operands.append(f)
    link_pos = {key: p for p, (key, _) in enumerate(plan.links)}
    dtype = np.dtype(plan.dtype)
    slots: list = [None] * plan.n_slots
    for step in plan.steps:
        if type(step) is NetStep:
            arrays = [slots[s[1]] if s[0] == 0 else operands[s[1]].terms[s[2]][1] if s[0] == 1 else
                      np.ones(s[1], dtype=dtype) for s in step.fetch]
            slots[step.slot] = step.network.contract(arrays, step.path, step.chunk)
        elif type(step) is MapStep:
            f = operands[link_pos[step.source[:2]]]
            m = f.maps[step.source.map]
            m = m.relabel(dict(zip(m.labels, step.out + step.inp)))
            array = slots[step.array.index] if type(step.array) is Slot else np.ones((), dtype=dtype)
            result, labels = apply_map(m, array, step.labels, step.direction, step.keep)
            if labels != step.result:   # the planner worked out the same labels from shapes
                raise RuntimeError(f"jacobian: a map step of {step.label} gave labels {labels!r}, planned {step.result!r}")
            slots[step.slot] = result
        elif type(step) is ExpandStep:
            if step.add_to is not None:
                target = slots[step.add_to]
                if step.copy_target or not isinstance(target, np.ndarray) or not target.flags.writeable:
                    target = np.array(target)   # a 0-d contraction comes back as a numpy scalar: read-only
            else:
                target = (np.zeros if step.has_eye else np.empty)(step.shape, dtype=dtype)
            _write_diagonal(target, step, slots[step.sources[0].index] if step.has_data else None)
            slots[step.slot] = target
        else:  # ZeroStep
            slots[step.slot] = np.zeros(step.shape, dtype=dtype)
        for s in step.free:
            slots[s] = None
    results = {}
    for name, (slot, shape, copy) in plan.results.items():
        if slot is None:
            results[name] = np.zeros(shape, dtype=dtype)
            continue
        r = slots[slot]
        if r.dtype != dtype:
            r = r.astype(dtype)
        elif copy:
            r = r.copy()
        results[name] = r
    return results


def _write_diagonal(target: np.ndarray, step: ExpandStep, data) -> None:
    """``target[diagonal] (+)= data``: the expansion of ``step.eq`` without multiplying by eyes.

    The diagonal is a strided view: an axis of the view spans every target axis its label
    ties (the sum of their strides), so no einsum letters are needed at any rank."""
    strides = target.strides
    shape = tuple(target.shape[g[0]] for g in step.view)
    strides = tuple(sum(strides[a] for a in g) for g in step.view)
    if target.flags.c_contiguous:   # a fresh block (the usual case): a view straight onto its buffer
        view = np.ndarray(shape, target.dtype, target, 0, strides)
    else:
        view = as_strided(target, shape, strides, writeable=True)
    if data is None:
        src = 1
    else:
        src = np.asarray(data)
        if step.data_perm != tuple(range(src.ndim)):
            src = src.transpose(step.data_perm)
        src = src.reshape(step.data_shape)
    if step.add_to is not None:
        view += src
    else:
        view[...] = src
