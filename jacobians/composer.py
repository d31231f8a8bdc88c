"""The composer: Jacobians of whole functions as einsum networks of the ops' factored forms.

A traced function is a graph.  Between branch points (an input, the output,
a value used twice, an op with two traced arguments) the graph is a chain, and
the chain's Jacobian is **one einsum network**: each link is an op's factored
Jacobian, a delta merges the labels it joins, and the per-sample batch is a
label shared by every link.  ``order`` picks the network's contraction path
(:mod:`jacobians.network`).

Where the graph branches, paths are summed by accumulation over the segments
(no path is enumerated): ``reverse`` pulls ``d out / d v`` back from the output,
``forward`` pushes ``d v / d x`` from each input, ``optimal`` takes whichever
plan has fewer FLOPs, with the optimal path inside every network.  A block
accumulated along two paths keeps the deltas both paths share (the per-sample
batch) and expands only the others.

Everything is planned from shapes first: FLOPs, the largest intermediate and
the result size are known before an array is allocated, so a Jacobian that
would not fit raises :class:`~jacobians.limits.JacobianTooLarge`.
Plans are cached per shape signature; a repeated call replays the recorded
graph on the new inputs (the Python function is not called again), so the
function must not change its constants between calls.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import opt_einsum as oe

from .errors import as_float_array
from .graph import Graph, trace
from .limits import check_bytes, format_bytes, memory_limit
from .network import Cost, Network, aligned, resolve_order

__all__ = ["jacobian", "JacobianFunction", "Plan"]


# ---------------------------------------------------------------- plan pieces

@dataclass
class Block:
    """An accumulated Jacobian ``d top / d bottom`` whose axes carry labels.

    A label shared by a top and a bottom axis is a delta kept symbolic.  The
    array (in ``slot``) holds the distinct labels ``data``; ``slot is None``
    means no array: the identity (every axis tied).
    """

    top: tuple[str, ...]
    bottom: tuple[str, ...]
    data: str = ""
    slot: int | None = None


@dataclass
class NetStep:
    """Contract one network; its operands come from slots, op links, or ones."""

    network: Network
    path: tuple
    sources: list            # ("slot", i) | ("link", node, k, j) | ("ones", n)
    slot: int
    cost: Cost
    label: str               # e.g. "dy/dx" (for reports)
    chunk: tuple | None = None  # (label, n): contracted in n slices of that output label


@dataclass
class ExpandStep:
    """Relabel a block onto a finer tie pattern (deltas as eye), optionally adding into a slot."""

    eq: str
    sources: list            # ("slot", i) | ("eye", n) | ("ones", n)
    shape: tuple[int, ...]
    slot: int
    add_to: int | None = None

    @property
    def cost(self) -> Cost:
        n = math.prod(self.shape)
        return Cost(n * (2 if self.add_to is not None else 1), n, ())

    @functools.cached_property
    def diagonal(self) -> tuple[str, str, str | None]:
        """``(sub, labels, data)``: ``einsum(sub->labels)`` of the output is the writable view its
        deltas leave; ``data`` labels the block written there (None: the identity)."""
        terms, out = readable(self.eq).split("->")
        terms = terms.split(",")
        kinds = [src[0] for src in self.sources]
        merge = {t[1]: t[0] for t, kind in zip(terms, kinds) if kind == "eye"}
        sub = "".join(merge.get(l, l) for l in out)
        return sub, "".join(dict.fromkeys(sub)), terms[kinds.index("slot")] if "slot" in kinds else None


@dataclass
class Plan:
    """How one call computes its Jacobians: steps, their costs, the result shapes.

    ``print(plan)`` shows every network with its path and FLOPs; for CS182's residual block
    w.r.t. x (batched) and W1::

        plan: order='optimal' (forward accumulation), 3 steps, 1.21e+06 FLOPs, largest array 2.9 MiB, ...
          dadd_0/dx: ab,cb,bd->cad  path [(0, 2), (0, 1)]  7.8e+05 FLOPs
          add deltas: ab,c->cab
          dadd_0/dW1: ab,cb,cd->cabd  path [(0, 1), (0, 1)]  4.03e+05 FLOPs

    (``add deltas`` is the skip connection's identity, added onto the diagonal.)
    """

    order: Any
    strategy: str
    steps: list = field(default_factory=list)
    results: dict = field(default_factory=dict)     # wrt name -> (slot | None, shape)
    links: dict = field(default_factory=dict)       # (node, k) -> structure signature
    itemsize: int = 8
    bookkeeping: tuple | None = field(default=None, repr=False)  # set by execute, once

    @property
    def flops(self) -> int:
        return sum(s.cost.flops for s in self.steps)

    @property
    def largest_intermediate(self) -> int:
        """Elements of the largest array any step creates."""
        return max([s.cost.largest_intermediate for s in self.steps] + [0])

    @property
    def result_elements(self) -> int:
        return sum(math.prod(shape) for _, shape in self.results.values())

    @property
    def networks(self) -> list[NetStep]:
        return [s for s in self.steps if isinstance(s, NetStep)]

    def __str__(self) -> str:
        lines = [f"plan: order={self.order!r} ({self.strategy}), {len(self.steps)} steps, "
                 f"{self.flops:.3g} FLOPs, largest array {format_bytes(self.largest_intermediate * self.itemsize)}, "
                 f"results {format_bytes(self.result_elements * self.itemsize)}"]
        for s in self.steps:
            if isinstance(s, NetStep):
                sliced = f", in {s.chunk[1]} slices" if s.chunk else ""
                lines.append(f"  {s.label}: {readable(s.network.eq)}  path {list(s.path)}  {s.cost.flops:.3g} FLOPs{sliced}")
            else:
                lines.append(f"  {'add' if s.add_to is not None else 'expand'} deltas: {readable(s.eq)}")
        return "\n".join(lines)


def readable(eq: str) -> str:
    """An equation with its labels renamed a, b, c, ... in order of appearance."""
    names: dict[str, str] = {}
    return "".join(c if c in ",->" else names.setdefault(c, oe.get_symbol(len(names))) for c in eq)


# ---------------------------------------------------------------- planning

@dataclass
class _Segment:
    start: int                       # node index at the input end
    end: int                         # node index at the output end
    links: list[tuple[int, int]]     # (consumer node, argument position), input end first


def _segments(graph: Graph, sources: set[int]) -> list[_Segment]:
    """Maximal chains of the subgraph between ``sources`` and the output."""
    out = graph.output
    rel = graph.between(sources)
    consumers: dict[int, list[tuple[int, int]]] = {i: [] for i in rel}
    indeg = {i: 0 for i in rel}
    for c in sorted(rel):
        for k, p in graph.nodes[c].parents():
            if p in rel:
                consumers[p].append((c, k))
                indeg[c] += 1
    branch = lambda v: v in sources or v == out or indeg[v] != 1 or len(consumers[v]) != 1
    segs = []
    for v in sorted(rel):
        if not branch(v):
            continue
        for c, k in consumers[v]:
            links = [(c, k)]
            while not branch(c):
                c, k = consumers[c][0]
                links.append((c, k))
            segs.append(_Segment(v, c, links))
    return segs


class _Planner:
    """Builds the steps of one plan; every global label's size is recorded when it is made."""

    def __init__(self, graph: Graph, order, itemsize: int) -> None:
        self.graph = graph
        self.path_of = resolve_order(order)
        self.sizes: dict[str, int] = {}
        self.steps: list = []
        self.factors: dict = {}
        self.itemsize = itemsize
        self._n = 0

    def fresh(self, size: int) -> str:
        self._n += 1
        label = oe.get_symbol(self._n + 1000)  # clear of the ASCII letters the ops use
        self.sizes[label] = size
        return label

    def factor(self, c: int, k: int):
        if (c, k) not in self.factors:
            self.factors[(c, k)] = self.graph.nodes[c].builders[k]()
        return self.factors[(c, k)]

    def identity(self, node: int) -> Block:
        labels = tuple(self.fresh(n) for n in np.shape(self.graph.nodes[node].value))
        return Block(labels, labels)

    def relabel(self, f, known: tuple[str, ...], side: str) -> tuple[tuple[str, ...], list[str]]:
        """Map a factored form's local labels onto global ones, given one side's labels.

        A local label on both sides (a delta) takes the known side's global label: the merge.
        """
        m = dict(zip(f.out, known)) if side == "out" else dict(zip(f.inp, known))
        local = f.sizes
        other = f.inp if side == "out" else f.out
        for l in list(other) + [l for sub, _ in f.operands for l in sub]:
            if l not in m:
                m[l] = self.fresh(local[l])
        return tuple(m[l] for l in other), ["".join(m[l] for l in sub) for sub, _ in f.operands]

    def segment(self, block: Block, seg: _Segment, mode: str, label: str) -> Block:
        """One network: ``block`` times the factored links of ``seg`` (terms listed output end first)."""
        # pieces: one per link, output end first: (operands [(term, source)], out labels, in labels)
        pieces, walked = [], []
        slot = [(block.data, ("slot", block.slot))] if block.slot is not None else []
        if mode == "reverse":  # block = d out / d seg.end: walk down to seg.start
            known = block.bottom
            pieces.append((slot, block.top, block.bottom))
            for c, k in reversed(seg.links):
                walked += known
                above = known
                known, terms = self.relabel(self.factor(c, k), known, "out")
                pieces.append(([(t, ("link", c, k, j)) for j, t in enumerate(terms)], above, known))
            top, bottom = block.top, known
        else:                  # block = d seg.start / d x: walk up to seg.end
            known = block.top
            pieces.append((slot, block.top, block.bottom))
            for c, k in seg.links:
                walked += known
                below = known
                known, terms = self.relabel(self.factor(c, k), known, "in")
                pieces.insert(0, ([(t, ("link", c, k, j)) for j, t in enumerate(terms)], known, below))
            top, bottom = known, block.bottom
        terms = [t for p, _, _ in pieces for t, _ in p]
        sources = [s for p, _, _ in pieces for _, s in p]
        links, at = [], 0
        for p, above, below in pieces:
            links.append((tuple(range(at, at + len(p))), tuple(above), tuple(below)))
            at += len(p)
        output = "".join(dict.fromkeys(top + bottom))
        if not terms and set(top) == set(bottom):
            return Block(top, bottom)  # deltas only (a skip connection, a transpose): still the identity
        # labels no operand carries are factors of ones (a broadcast, or a sum through relabel-only links)
        seen = set("".join(terms))
        extra = [l for l in dict.fromkeys(output + "".join(walked)) if l not in seen]
        n_chain = len(terms)
        terms += extra
        sources += [("ones", self.sizes[l]) for l in extra]
        if len(terms) == 1 and sources[0][0] == "slot" and sorted(terms[0]) == sorted(output):
            return Block(top, bottom, terms[0], sources[0][1])  # a pure relabel: no arithmetic, no copy
        net = Network(tuple(terms), tuple(tuple(self.sizes[l] for l in t) for t in terms), output, n_chain,
                      tuple(links))
        path = self.path_of(net)  # never empty here: a label no operand carries got a ones-factor
        cost = net.cost(path)
        # an intermediate larger than the result (or than memory allows) is made in slices of
        # one output label instead: the same FLOPs, a bounded peak
        out_elems = math.prod(self.sizes[l] for l in output)
        target = min(max(out_elems // 2, 1 << 18), memory_limit() // max(self.itemsize, 1))
        chunk = net.chunking(path, target) if cost.largest_intermediate > max(out_elems, target) else None
        if chunk is not None:
            cost = Cost(cost.flops, max(out_elems, -(-cost.largest_intermediate // chunk[1])), cost.path)
        check_bytes(cost.largest_intermediate * self.itemsize,
                    f"an intermediate of {label} ({readable(net.eq)})",
                    hint="use a smaller batch, fewer outputs or inputs, or another order")
        step = NetStep(net, path, sources, len(self.steps), cost, label, chunk)
        self.steps.append(step)
        return Block(top, bottom, output, step.slot)

    def expand(self, block: Block, target: tuple[str, ...], add_to: Block | None = None,
               force: bool = False) -> Block:
        """Relabel ``block`` (axes top + bottom) onto ``target``: deltas it has and target lacks become eyes.

        With ``add_to`` the result is added to that block (same labels, in its order).
        """
        axes = block.top + block.bottom
        first: dict[str, str] = {}
        terms, sources = [], []
        for l, t in zip(axes, target):
            if l not in first:
                first[l] = t
            elif first[l] != t:
                terms.append(first[l] + t)
                sources.append(("eye", self.sizes[l]))
        if block.slot is not None:
            terms.insert(0, "".join(first[l] for l in block.data))
            sources.insert(0, ("slot", block.slot))
        n = len(block.top)
        if add_to is None and block.slot is not None and len(terms) == 1 and not force:  # same tie pattern: relabel only
            return Block(tuple(target[:n]), tuple(target[n:]), terms[0], block.slot)
        out = add_to.data if add_to is not None else "".join(dict.fromkeys(target))
        for l in out:
            if not any(l in t for t in terms):
                terms.append(l)
                sources.append(("ones", self.sizes[l]))
        shape = tuple(self.sizes[l] for l in out)
        check_bytes(math.prod(shape) * self.itemsize, "a Jacobian block", shape)
        step = ExpandStep(",".join(terms) + "->" + out, sources, shape, len(self.steps),
                          None if add_to is None else add_to.slot)
        self.steps.append(step)
        return Block(tuple(target[:n]), tuple(target[n:]), out, step.slot)

    def add(self, a: Block, b: Block) -> Block:
        """``a + b`` for blocks of the same Jacobian: keep the deltas both have, expand the rest."""
        groups: dict[tuple[str, str], str] = {}
        target = []
        for la, lb in zip(a.top + a.bottom, b.top + b.bottom):
            if (la, lb) not in groups:
                groups[(la, lb)] = self.fresh(self.sizes[la])
            target.append(groups[(la, lb)])
        ea = self.expand(a, tuple(target))
        return self.expand(b, tuple(target), add_to=ea)


def _accumulate(graph: Graph, wrt: list[str], order, mode: str, itemsize: int) -> tuple[dict, _Planner]:
    """Blocks ``d out / d wrt`` by ``mode``: "reverse" (one sweep from the output), "forward" (one per input)."""
    planner = _Planner(graph, order, itemsize)
    out = graph.output
    results: dict[str, Block | None] = {}

    def add(blocks: dict, key: int, block: Block) -> None:
        blocks[key] = planner.add(blocks[key], block) if key in blocks else block

    def name(i: int) -> str:
        return graph.nodes[i].name

    if out in graph.inputs.values():  # the function returns one of its inputs
        for n in wrt:
            results[n] = planner.identity(out) if graph.inputs[n] == out else None
        return results, planner
    if mode == "reverse":
        sources = {graph.inputs[n]: n for n in wrt}
        segs = _segments(graph, set(sources))
        blocks = {out: planner.identity(out)} if segs else {}
        for seg in sorted(segs, key=lambda s: (-s.start, -s.end)):
            if seg.end in blocks:
                add(blocks, seg.start, planner.segment(blocks[seg.end], seg, "reverse",
                                                       f"d{name(out)}/d{name(seg.start)}"))
        for i, n in sources.items():
            results[n] = blocks.get(i)
    else:
        for n in wrt:
            i = graph.inputs[n]
            segs = _segments(graph, {i})
            blocks = {i: planner.identity(i)} if segs else {}
            for seg in sorted(segs, key=lambda s: (s.end, s.start)):
                if seg.start in blocks:
                    add(blocks, seg.end, planner.segment(blocks[seg.start], seg, "forward",
                                                         f"d{name(seg.end)}/d{n}"))
            results[n] = blocks.get(out)
    return results, planner


def _finish(planner: _Planner, blocks: dict, graph: Graph, batched: str | None) -> dict:
    """Expand each block to its explicit layout: ``(*out, *in)``, per-sample where the batch delta survives."""
    out_shape = np.shape(graph.nodes[graph.output].value) if graph.output is not None else np.shape(graph.constant_output)
    results = {}
    for name, block in blocks.items():
        in_shape = np.shape(graph.nodes[graph.inputs[name]].value)
        if block is None:  # the output does not depend on this argument: zeros, no delta, full layout
            results[name] = (None, tuple(out_shape) + tuple(in_shape))
            continue
        collapse = name == batched and block.top[:1] == block.bottom[:1] and len(block.top) > 0
        target = [planner.fresh(planner.sizes[l]) for l in block.top + block.bottom]
        if collapse:
            target[len(block.top)] = target[0]
        final = planner.expand(block, tuple(target))
        if final.data != "".join(dict.fromkeys(target)):  # the layout the user gets: (*out, *in)
            final = planner.expand(final, tuple(target), force=True)
        results[name] = (final.slot, tuple(planner.sizes[l] for l in final.data))
    return results


def make_plan(graph: Graph, wrt: list[str], order="optimal", batched: str | None = None) -> Plan:
    """Plan the Jacobians of ``graph`` w.r.t. ``wrt`` from shapes (and the ops' factored forms)."""
    itemsize = max([np.asarray(graph.nodes[graph.inputs[n]].value).dtype.itemsize for n in wrt] + [4])
    if not isinstance(order, str) and graph.output is not None:
        # the networks do not depend on the path: count them first (a fold, itemsize 0: no byte
        # checks), so that a branching function hears why before the path meets a network it misfits
        probe = _accumulate(graph, wrt, "reverse", "reverse", 0)[1]
        _one_network(sum(isinstance(s, NetStep) for s in probe.steps))
    candidates = []
    modes = {"forward": ["forward"], "reverse": ["reverse"], "bracket": ["reverse"]}.get(
        order, ["reverse", "forward"]) if isinstance(order, str) else ["reverse"]
    for mode in modes:
        if graph.output is None:
            blocks, planner = {n: None for n in wrt}, _Planner(graph, order, itemsize)
        else:
            blocks, planner = _accumulate(graph, wrt, order, mode, itemsize)
        results = _finish(planner, blocks, graph, batched)
        plan = Plan(order, f"{mode} accumulation" if len(planner.steps) > 1 or len(wrt) > 1 else "one network",
                    planner.steps, results, {k: _signature(f) for k, f in planner.factors.items()}, itemsize)
        candidates.append(plan)
    plan = min(candidates, key=lambda p: p.flops)  # ties: reverse, listed first
    if not isinstance(order, str):
        _one_network(len(plan.networks))
    check_bytes(plan.result_elements * itemsize, "the explicit Jacobians",
                tuple(shape for _, shape in plan.results.values()))
    return plan


def _one_network(n: int) -> None:
    if n != 1:
        why = "needs no contraction (only deltas)" if n == 0 else \
            f"needs {n} (branches in the function or several wrt)"
        raise ValueError(f"jacobian: an explicit contraction path applies to a single network; this Jacobian "
                         f"{why}; use order='forward', 'reverse' or 'optimal'")


def _write_diagonal(target: np.ndarray, step: ExpandStep, data, add: bool) -> None:
    """``target[diagonal] (+)= data``: the expansion of ``step.eq`` without multiplying by eyes."""
    sub, labels, data_labels = step.diagonal
    view = np.einsum(f"{sub}->{labels}", target)  # a writable view
    src = 1 if data is None else aligned(data, data_labels, list(labels))
    if add:
        view += src
    else:
        view[...] = src


def _signature(f) -> tuple:
    return (f.out, f.inp, tuple((sub, np.shape(a)) for sub, a in f.operands))


def _bookkeeping(plan: Plan) -> tuple[dict, set, list, set]:
    """Per plan, once: each slot's last reader, the result slots, what to free after each step,
    and the slots that may alias an input or an op's operand (single-operand networks pass
    their operand through; every other step makes a new array)."""
    if plan.bookkeeping is None:
        last_use: dict[int, int] = {}
        borrowed: set[int] = set()
        views: list[tuple[int, int]] = []     # (slot, the slot it may be a view of)
        for i, step in enumerate(plan.steps):
            for src in step.sources:
                if src[0] == "slot":
                    last_use[src[1]] = i
            if getattr(step, "add_to", None) is not None:
                last_use[step.add_to] = i
            if isinstance(step, NetStep) and len(step.sources) == 1:
                src = step.sources[0]
                if src[0] == "link" or (src[0] == "slot" and src[1] in borrowed):
                    borrowed.add(step.slot)
                elif src[0] == "slot":
                    views.append((step.slot, src[1]))
        keep = {slot for slot, _ in plan.results.values()}
        for slot, base in reversed(views):   # a view keeps its base alive (and unwritten) as long as it lives
            last_use[base] = max(last_use.get(base, -1), last_use.get(slot, -1))
            if slot in keep:
                keep.add(base)
        free = [[s for s, last in last_use.items() if last == i and s not in keep] for i in range(len(plan.steps))]
        plan.bookkeeping = (last_use, keep, free, borrowed)
    return plan.bookkeeping


def execute(plan: Plan, graph: Graph) -> dict[str, np.ndarray]:
    """Run a plan on the graph's current values."""
    dtype = np.result_type(*[graph.nodes[graph.inputs[n]].value for n in plan.results], np.float32)
    factors = {}
    for (c, k), sig in plan.links.items():
        f = graph.nodes[c].builders[k](check=False)  # validated when planned; the signature must match
        if _signature(f) != sig:
            raise RuntimeError(f"jacobian: the structure of {graph.nodes[c].name}'s Jacobian changed between "
                               f"calls with the same shapes ({sig} vs {_signature(f)})")
        factors[(c, k)] = f
    last_use, keep, free, borrowed = _bookkeeping(plan)
    slots: dict[int, np.ndarray] = {}

    def resolve(src):
        kind = src[0]
        if kind == "slot":
            return slots[src[1]]
        if kind == "link":
            return np.asarray(factors[(src[1], src[2])].operands[src[3]][1])
        return np.ones(src[1], dtype=dtype)  # a ones-factor (expansions write their eyes as diagonals)

    def own(slot: int, i: int) -> np.ndarray:
        """The slot's array, safe to write at step ``i``: copied if anything else still reads it
        (a later step, a result, an input or an op's operand)."""
        a = slots[slot]
        return a.copy() if last_use.get(slot, -1) > i or slot in keep or slot in borrowed else a

    for i, step in enumerate(plan.steps):
        if isinstance(step, NetStep):
            slots[step.slot] = step.network.contract([resolve(src) for src in step.sources], step.path,
                                                     step.chunk)
        else:  # write the block onto the diagonal its deltas leave (or add it there)
            data = next((slots[src[1]] for src in step.sources if src[0] == "slot"), None)
            if step.add_to is not None:
                target = own(step.add_to, i)
            else:
                eyes = any(src[0] == "eye" for src in step.sources)
                target = (np.zeros if eyes else np.empty)(step.shape, dtype=dtype)
            _write_diagonal(target, step, data, add=step.add_to is not None)
            slots[step.slot] = target
        for slot in free[i]:
            slots.pop(slot, None)
    results, handed = {}, set()
    for name, (slot, shape) in plan.results.items():
        if slot is None:
            results[name] = np.zeros(shape, dtype=dtype)
            continue
        r = np.asarray(slots[slot], dtype=dtype)
        # never a view of an input or an operand, never one array for two results
        results[name] = r.copy() if slot in borrowed or slot in handed else r
        handed.add(slot)
    return results


# ---------------------------------------------------------------- the public function

class JacobianFunction:
    """``jacobian(f, wrt, batched=..., order=...)``: call it like ``f`` to get explicit Jacobians."""

    def __init__(self, f: Callable, wrt, batched, order) -> None:
        self.f = f
        self.signature = inspect.signature(f)
        params = list(self.signature.parameters)
        self.single = isinstance(wrt, (str, int))
        wrt_list = [wrt] if self.single else list(wrt)
        if not wrt_list:
            raise ValueError("jacobian: wrt names no argument")
        self.wrt = [self._name(w, params, "wrt") for w in wrt_list]
        self.batched = None if batched is None else self._name(batched, params, "batched")
        resolve_order(order)  # fail early on unknown names
        self.order = order
        self._cache: OrderedDict = OrderedDict()

    def _name(self, w, params, what) -> str:
        if isinstance(w, int) and not isinstance(w, bool):
            if not -len(params) <= w < len(params):
                raise ValueError(f"jacobian: {what}={w} is out of range for {self.f.__name__}{self.signature}")
            return params[w]
        if w not in params:
            raise ValueError(f"jacobian: {what}={w!r} is not an argument of {self.f.__name__}{self.signature}")
        return w

    def __call__(self, *args, **kwargs):
        graph, plan = self.plan_and_graph(args, kwargs)
        results = execute(plan, graph)
        return results[self.wrt[0]] if self.single else results

    def plan(self, *args, **kwargs) -> Plan:
        """The contraction plan for these argument shapes (traces and plans, contracts nothing)."""
        return self.plan_and_graph(args, kwargs)[1]

    def plan_and_graph(self, args, kwargs) -> tuple[Graph, Plan]:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arrays = {k: v for k, v in bound.arguments.items() if isinstance(v, (np.ndarray, np.generic))}
        for name in self.wrt:
            arrays[name] = as_float_array("jacobian", name, bound.arguments[name])
            bound.arguments[name] = arrays[name]
        if self.batched is not None:
            b = np.asarray(bound.arguments[self.batched])
            if b.ndim == 0:
                raise ValueError(f"jacobian: batched={self.batched!r} needs a leading batch axis; got a scalar")
        static = tuple((k, _static_key(v)) for k, v in bound.arguments.items() if k not in arrays)
        key = (tuple((k, v.shape, v.dtype.str) for k, v in arrays.items()), static)
        cacheable = all(v is not _UNHASHABLE for _, v in static)
        hit = self._cache.get(key) if cacheable else None
        if hit is not None:
            graph, plan = hit
            graph.replay(arrays)
            self._cache.move_to_end(key)
            return graph, plan
        graph = trace(self.f, bound, list(arrays))
        plan = make_plan(graph, self.wrt, self.order, self.batched)
        if cacheable:
            self._cache[key] = (graph, plan)
            if len(self._cache) > 32:
                self._cache.popitem(last=False)
        return graph, plan


_UNHASHABLE = object()


def _static_key(v):
    # an unhashable argument (a list) has no key: its id is reused once it is freed, and a cached
    # graph would replay the old value; such calls are traced every time
    try:
        hash(v)
        return v
    except TypeError:
        return _UNHASHABLE


def jacobian(f: Callable, wrt=0, *, batched=None, order="optimal") -> JacobianFunction:
    """Jacobians of ``f`` (a function of :data:`jacobians.fn` ops) as explicit tensors.

    ``wrt`` names the arguments (names or positions; one name gives an array,
    a tuple gives a dict).  ``batched`` names the argument whose axis 0 is the
    batch: its Jacobians are per-sample ``(B, *out, *in)`` where samples are
    independent, and the full ``(B, *out, B, *in)`` where they interact.
    ``order`` is ``"optimal"`` (default), ``"forward"``, ``"reverse"`` or an
    explicit opt_einsum path for a single chain; all give the same tensor.

    >>> import numpy as np, jacobians as jac
    >>> def net(x, W):
    ...     return jac.fn.tanh(jac.fn.linear(x, W))
    >>> x, W = np.ones((4, 3)), np.full((2, 3), 0.1)
    >>> jac.jacobian(net, wrt="x", batched="x")(x, W).shape
    (4, 2, 3)
    """
    return JacobianFunction(f, wrt, batched, order)
