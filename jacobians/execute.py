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

import numpy as np

from .backends import numpy as _numpy
from .graph import Graph
from .indexmaps import apply_map
from .plan import ExpandStep, MapStep, NetStep, Plan, Slot
from .planner import structure

__all__ = ["execute"]


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
                raise RuntimeError(f"jacobian: the structure of {nodes[c].name}'s Jacobian w.r.t. "
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
        elif type(step) is MapStep:
            f = operands[link_pos[step.source[:2]]]
            m = f.maps[step.source.map]
            m = m.relabel(dict(zip(m.labels, step.out + step.inp)))
            array = slots[step.array.index] if type(step.array) is Slot else xp.ones((), dtype, device)
            result, labels = apply_map(m, array, step.labels, step.direction, step.keep, xp)
            if labels != step.result:   # the planner worked out the same labels from shapes
                raise RuntimeError(f"jacobian: a map step of {step.label} gave labels {labels!r}, planned {step.result!r}")
            slots[step.slot] = result
        elif type(step) is ExpandStep:
            if step.add_to is not None:
                target = slots[step.add_to]
                if step.copy_target:
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
