"""The planner: a traced graph becomes a :class:`~jacobians.plan.Plan`, from shapes alone.

Between branch points (an input, the output, a value used twice, an op with
two traced arguments) the graph is a chain, and the chain's Jacobian is **one
einsum network**: each link is an op's factored Jacobian, a delta merges the
labels it joins, and the per-sample batch is a label shared by every link.
``order`` picks the network's contraction path (:mod:`jacobians.network`).

Where the graph branches, paths are summed by accumulation over the segments
(no path is enumerated): ``reverse`` pulls ``d out / d v`` back from the output,
``forward`` pushes ``d v / d x`` from each input, ``optimal`` takes whichever
plan has fewer FLOPs, with the optimal path inside every network.  A block
accumulated along two paths keeps the deltas both paths share (the per-sample
batch) and expands only the others.

FLOPs, the largest intermediate and the result size are known before an array
is allocated, sized in the dtype the computation runs in, so a Jacobian that
would not fit raises :class:`~jacobians.limits.JacobianTooLarge`.  The plan
reads only the structure of the ops' factored forms (labels, operand shapes),
which is a function of the ops, their parameters, shapes and dtypes: the same
plan serves every trace with the same structural signature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import opt_einsum as oe

from .graph import Graph
from .limits import JacobianTooLarge, check_bytes, memory_limit
from .factored import IndexMapsPending
from .indexmaps import map_cost
from .network import Cost, Network, resolve_order
from .plan import (Eye, ExpandStep, Link, MapLink, MapStep, NetStep, Ones, Plan, Result, Slot, WindowStep, ZeroStep,
                   readable)

__all__ = ["make_plan", "structure", "OpenChain", "open_reverse"]


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
class _Segment:
    start: int                       # node index at the input end
    end: int                         # node index at the output end
    links: list[tuple[int, int]]     # (consumer node, argument position), input end first


def structure(f) -> tuple:
    """What a plan relies on in a factored form: its labels and its operands' subscripts and shapes."""
    return (f.out, f.inp, tuple((sub, np.shape(a)) for sub, a in f.terms),
            tuple((m.out, m.inp, m.index.shape, m.in_shape, m.window) for m in f.maps))


def _segments(graph: Graph, sources: set[int], outs: set[int]) -> list[_Segment]:
    """Maximal chains of the subgraph between ``sources`` and the output nodes ``outs`` (each one ends a chain)."""
    rel = graph.between(sources, outs)
    consumers: dict[int, list[tuple[int, int]]] = {i: [] for i in rel}
    indeg = {i: 0 for i in rel}
    for c in sorted(rel):
        for k, p in graph.nodes[c].parents():
            if p in rel:
                consumers[p].append((c, k))
                indeg[c] += 1
    branch = lambda v: v in sources or v in outs or indeg[v] != 1 or len(consumers[v]) != 1
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
    """Builds the steps of one plan; every global label's size is recorded when it is made.

    ``factors`` is shared by every candidate plan of one graph (one factor cache).
    """

    def __init__(self, graph: Graph, order, itemsize: int, factors: dict) -> None:
        self.graph = graph
        self.path_of = resolve_order(order)
        self.sizes: dict[str, int] = {}
        self.steps: list = []
        self.factors = factors
        self.used: dict[tuple[int, int], None] = {}   # the links this plan reads, in order
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
        self.used[(c, k)] = None
        return self.factors[(c, k)]

    def identity(self, node: int) -> Block:
        labels = tuple(self.fresh(n) for n in np.shape(self.graph.nodes[node].value))
        return Block(labels, labels)

    def relabel(self, f, known: tuple[str, ...], side: str):
        """Map a factored form's local labels onto global ones, given one side's labels.

        A local label on both sides (a delta) takes the known side's global label: the merge.
        Returns the other side's labels, the terms' subscripts and each map's ``(out, inp)``.
        """
        m = dict(zip(f.out, known)) if side == "out" else dict(zip(f.inp, known))
        local = f.sizes
        other = f.inp if side == "out" else f.out
        for l in list(other) + [l for sub, _ in f.terms for l in sub] + [l for mp in f.maps for l in mp.labels]:
            if l not in m:
                m[l] = self.fresh(local[l])
        ren = lambda s: "".join(m[l] for l in s)
        return (tuple(m[l] for l in other), [ren(sub) for sub, _ in f.terms],
                [(ren(mp.out), ren(mp.inp)) for mp in f.maps])

    def segment(self, block: Block, seg: _Segment, mode: str, label: str) -> Block:
        """``block`` times the factored links of ``seg``: one network per run of links between index maps.

        A link whose Jacobian holds index maps splits the chain.  Reverse: the network so far
        and the link's own terms are contracted (keeping the map's output labels), then each
        map is a scatter-add onto the argument's axes.  Forward: the network so far is
        contracted into a block, each map gathers from it, and the link's terms open the next
        network.  A map whose input axes are still tied to the block's (a delta: the identity
        at the start of a sweep) enters the next network as its 0/1 form, no larger than the block.
        """
        reverse = mode == "reverse"
        links = list(reversed(seg.links)) if reverse else list(seg.links)
        # pieces: one per link, output end first: (operands [(term, source)], out labels, in labels)
        pieces = [(self._held(block), block.top, block.bottom)]
        walked: list[str] = []
        top, bottom = block.top, block.bottom
        for c, k in links:
            f = self.factor(c, k)
            known = bottom if reverse else top
            new, terms, maps = self.relabel(f, known, "out" if reverse else "in")
            ops = [(t, Link(c, k, j)) for j, t in enumerate(terms)]
            if reverse:
                walked += known
                pieces.append((ops, known, new))
                if maps:
                    block = self._scatter(pieces, walked, top, new, maps, (c, k), label)
                    pieces, walked = [(self._held(block), top, new)], []
                bottom = new
            else:
                if maps:
                    held = self._gather(self._close(pieces, walked, top, bottom, label), maps, (c, k), label)
                    pieces, walked = [(held, tuple(dict.fromkeys(l for t, _ in held for l in t)), bottom)], []
                read = set("".join(i for _, i in maps))   # consumed by the gathers: not a sum over ones
                walked += [l for l in known if l not in read]
                pieces.insert(0, (ops, new, known))
                top = new
        return self._close(pieces, walked, top, bottom, label)

    @staticmethod
    def _held(block: Block) -> list:
        return [(block.data, Slot(block.slot))] if block.slot is not None else []

    def _scatter(self, pieces, walked, top, bottom, maps, link, label) -> Block:
        """Reverse: contract ``pieces`` keeping the maps' output labels, then scatter-add each map."""
        read = set("".join(i for _, i in maps))
        need = "".join(dict.fromkeys([*top, *(l for l in bottom if l not in read), *"".join(o for o, _ in maps)]))
        if any(p for p, _, _ in pieces):   # any operand, a 0-d one (avg-pool's 1/divisor) too
            fused = self._windows(pieces, walked, top, bottom, maps, link, label, need)
            if fused is not None:
                return fused
            labels, array = self._network(pieces, walked, need, label)
        else:
            array, labels = None, ""   # the identity and a link of maps alone: scatter ones
        for j, (out, inp) in enumerate(maps):
            later = set(top) | set(bottom) | set("".join(o for o, _ in maps[j + 1:]))
            keep = "".join(l for l in out if l in later)
            result = keep + "".join(l for l in labels if l not in out) + inp
            src = Slot(array) if array is not None else Ones(())
            array = self._map_step(link, j, out, inp, src, labels, "scatter", keep, result, label)
            labels = result
        return Block(tuple(top), tuple(bottom), labels, array)

    def _windows(self, pieces, walked, top, bottom, maps, link, label, need: str) -> Block | None:
        """Reverse through sliding windows only (a convolution's input or a pooling window): a
        :class:`~jacobians.plan.WindowStep`, one contraction per kernel offset added into a strided
        view of the result, instead of the im2col-sized block and its scatters.  None when the
        maps are not all plain windows (no label kept), or the network is trivial."""
        found = [self.factors[link].maps[j] for j in range(len(maps))]
        if any(m.window is None for m in found) or any(len(out) != 2 or len(inp) != 1 for out, inp in maps):
            return None
        later = set(top) | set(bottom)
        if any(l in later for out, _ in maps for l in out):
            return None   # a label the scatters keep: not a plain window
        terms = [t for p, _, _ in pieces for t, _ in p]
        sources = [s for p, _, _ in pieces for _, s in p]
        extra = [l for l in dict.fromkeys(need + "".join(walked)) if l not in set("".join(terms))]
        terms += extra
        sources += [Ones((self.sizes[l],)) for l in extra]
        if len(terms) == 1 or any(self.sizes[l] == 0 for t in terms for l in t):
            return None
        offsets = "".join(out[1] for out, _ in maps)
        if math.prod(self.sizes[i] for i in offsets) < 2:
            return None
        rest = "".join(l for l in need if not any(l in out for out, _ in maps))
        result = rest + "".join(inp for _, inp in maps)
        net = Network(tuple(terms), tuple(tuple(self.sizes[l] for l in t) for t in terms), need)
        fixed = tuple(k for k, t in enumerate(terms) if not any(i in t for i in offsets))
        varying = tuple(k for k in range(len(terms)) if k not in fixed)
        if not fixed:
            return None
        sub_out = rest + "".join(out[0] for out, _ in maps)
        var_terms = ["".join(l for l in terms[k] if l not in offsets) for k in varying]
        carried = set("".join(terms[k] for k in fixed))
        later = set(sub_out).union(*var_terms)
        pre_out = "".join(l for l in sub_out if l in carried) + \
            "".join(l for l in dict.fromkeys("".join(terms[k] for k in fixed)) if l in later and l not in sub_out)
        pre = Network(tuple(terms[k] for k in fixed), tuple(net.shapes[k] for k in fixed), pre_out)
        pre_path = resolve_order("optimal")(pre) if len(fixed) > 1 else ()
        pre_cost = pre.cost(pre_path) if len(fixed) > 1 else Cost(0, math.prod(self.sizes[l] for l in pre_out), ())
        sub_terms = (pre_out, *var_terms)
        sub = Network(sub_terms, tuple(tuple(self.sizes[l] for l in t) for t in sub_terms), sub_out)
        path = resolve_order("optimal")(sub)
        cost = sub.cost(path)
        windows = []
        for j, ((p, i), h) in enumerate(maps):
            stride, dilation, padding = found[j].window
            n_out, kernel, n = self.sizes[p], self.sizes[i], self.sizes[h]
            spans = []
            for k in range(kernel):
                first = k * dilation - padding
                lo = -(first // stride) if first < 0 else 0
                hi = min(n_out, (n - 1 - first) // stride + 1) if n - 1 >= first else 0
                spans.append((lo, max(hi, lo), lo * stride + first, stride))
            windows.append((MapLink(*link, j), p, i, h, tuple(spans)))
        times = math.prod(self.sizes[i] for i in offsets)
        shape = tuple(self.sizes[l] for l in result)
        n_result, n_part = math.prod(shape), math.prod(self.sizes[l] for l in sub.output)
        largest = max(n_result, cost.largest_intermediate, pre_cost.largest_intermediate)
        check_bytes(largest * self.itemsize, f"an intermediate of {label}", shape)
        step = WindowStep(net, pre, pre_path, fixed, varying, sub, path, tuple(sources), tuple(windows), result,
                          shape, len(self.steps),
                          Cost(pre_cost.flops + cost.flops * times, largest, path, n_part * times + n_result), label)
        self.steps.append(step)
        return Block(tuple(top), tuple(bottom), result, step.slot)

    def _gather(self, block: Block, maps, link, label) -> list:
        """Forward: gather each map from ``block``'s array; maps tied to the block by a delta as 0/1 terms."""
        array, labels = block.slot, block.data
        held = []
        for j, (out, inp) in enumerate(maps):
            if array is None or any(l in block.bottom or l not in labels for l in inp):
                slot = self._map_step(link, j, out, inp, Ones(()), "", "scatter", out, out + inp, label)
                held.append((out + inp, Slot(slot)))
                continue
            shared = "".join(l for l in out if l in labels)
            result = shared + "".join(l for l in labels if l not in inp and l not in shared) + \
                "".join(l for l in out if l not in labels)
            array = self._map_step(link, j, out, inp, Slot(array), labels, "gather", "", result, label)
            labels = result
        if array is not None:
            held.insert(0, (labels, Slot(array)))
        return held

    def _map_step(self, link, j, out, inp, src, labels, direction, keep, result, label) -> int:
        shape = tuple(self.sizes[l] for l in result)
        m = self.factors[link].maps[j].relabel(dict(zip(self.factors[link].maps[j].labels, out + inp)))
        moved = map_cost(m, labels, self.sizes, direction, keep)
        n = math.prod(shape)
        check_bytes(n * self.itemsize, f"an index-map step of {label}", shape)
        step = MapStep(MapLink(*link, j), out, inp, src, labels, direction, keep, result, shape,
                       len(self.steps), Cost(0, n, (), moved), label)
        self.steps.append(step)
        return step.slot

    def _close(self, pieces, walked, top, bottom, label) -> Block:
        """The network of ``pieces`` as a block ``d top / d bottom``."""
        terms = [t for p, _, _ in pieces for t, _ in p]
        if not terms and set(top) == set(bottom):
            return Block(top, bottom)  # deltas only (a skip connection, a transpose): still the identity
        output = "".join(dict.fromkeys(top + bottom))
        data, slot = self._network(pieces, walked, output, label)
        return Block(top, bottom, data, slot)

    def _network(self, pieces, walked, output: str, label: str) -> tuple[str, int]:
        """One einsum network of ``pieces`` to ``output``: (the result's labels, its slot)."""
        terms = [t for p, _, _ in pieces for t, _ in p]
        sources = [s for p, _, _ in pieces for _, s in p]
        links, at = [], 0
        for p, above, below in pieces:
            links.append((tuple(range(at, at + len(p))), tuple(above), tuple(below)))
            at += len(p)
        n_chain, done = self._trivial(terms, sources, walked, output, label)
        if done is not None:
            return done
        net = Network(tuple(terms), tuple(tuple(self.sizes[l] for l in t) for t in terms), output,
                      n_chain, tuple(links))
        path = self.path_of(net)  # never empty here: a label no operand carries got a ones-factor
        cost, chunk = self._sliced_cost(net, path, label)
        step = NetStep(net, path, tuple(sources), len(self.steps), cost, label, chunk)
        self.steps.append(step)
        return output, step.slot

    def _trivial(self, terms: list, sources: list, walked, output: str, label: str) -> tuple[int, tuple | None]:
        """Complete a network's operands in place: a factor of ones for each label no operand carries
        (a broadcast, or a sum through relabel-only links).  Returns the number of chain operands
        (before the ones) and ``(labels, slot)`` when no contraction is needed: a pure relabel of one
        slot (no arithmetic, no copy), or a zero-size axis anywhere (a batch of 0, a layer of width 0:
        the block is zeros or empty); else None."""
        seen = set("".join(terms))
        extra = [l for l in dict.fromkeys(output + "".join(walked)) if l not in seen]
        n_chain = len(terms)
        terms += extra
        sources += [Ones((self.sizes[l],)) for l in extra]
        if len(terms) == 1 and isinstance(sources[0], Slot) and sorted(terms[0]) == sorted(output):
            return n_chain, (terms[0], sources[0].index)
        if any(self.sizes[l] == 0 for t in terms for l in t):
            shape = tuple(self.sizes[l] for l in output)
            check_bytes(math.prod(shape) * self.itemsize, f"a block of {label}", shape)
            step = ZeroStep(shape, len(self.steps), label)
            self.steps.append(step)
            return n_chain, (output, step.slot)
        return n_chain, None

    def _sliced_cost(self, net: Network, path, label: str) -> tuple[Cost, tuple | None]:
        """The network's cost on ``path``, checked against the memory limit; an intermediate larger
        than the result (or than memory allows) is made in slices of one output label instead (the
        same FLOPs, a bounded peak): ``(cost, (label, slices) or None)``."""
        cost = net.cost(path)
        out_elems = math.prod(net.sizes[l] for l in net.output)
        target = min(max(out_elems // 2, 1 << 18), memory_limit() // max(self.itemsize, 1))
        chunk = net.chunking(path, target) if cost.largest_intermediate > max(out_elems, target) else None
        if chunk is not None:
            cost = Cost(cost.flops, max(out_elems, -(-cost.largest_intermediate // chunk[1])), cost.path)
        if cost.largest_intermediate * self.itemsize > memory_limit():  # the message only when it is raised
            check_bytes(cost.largest_intermediate * self.itemsize, f"an intermediate of {label} ({readable(net.eq)})",
                        hint="use a smaller batch, fewer outputs or inputs, or another order")
        return cost, chunk

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
                sources.append(Eye(self.sizes[l]))
        if block.slot is not None:
            terms.insert(0, "".join(first[l] for l in block.data))
            sources.insert(0, Slot(block.slot))
        n = len(block.top)
        if add_to is None and block.slot is not None and len(terms) == 1 and not force:  # same tie pattern: relabel only
            return Block(tuple(target[:n]), tuple(target[n:]), terms[0], block.slot)
        out = add_to.data if add_to is not None else "".join(dict.fromkeys(target))
        for l in out:
            if not any(l in t for t in terms):
                terms.append(l)
                sources.append(Ones((self.sizes[l],)))
        shape = tuple(self.sizes[l] for l in out)
        check_bytes(math.prod(shape) * self.itemsize, "a Jacobian block", shape)
        step = ExpandStep(",".join(terms) + "->" + out, tuple(sources), shape, len(self.steps),
                          None if add_to is None else add_to.slot)
        self.steps.append(step)
        return Block(tuple(target[:n]), tuple(target[n:]), out, step.slot)

    def open_segment(self, block: Block, seg: _Segment, label: str) -> "OpenChain":
        """``block`` times the links of ``seg`` (reverse) as an open network: its terms, not contracted.

        A link holding index maps closes the segment (its block is the one term): maps are
        contracted by gathers and scatters, never as einsum terms."""
        links = list(reversed(seg.links))
        if any(self.factor(c, k).maps for c, k in links):
            block = self.segment(block, seg, "reverse", label)
            held = self._held(block)
            return OpenChain(tuple(t for t, _ in held), tuple(s for _, s in held), block.top, block.bottom, ())
        pieces, walked, bottom = self._held(block), [], block.bottom
        for c, k in links:
            new, terms, _ = self.relabel(self.factor(c, k), bottom, "out")
            pieces += [(t, Link(c, k, j)) for j, t in enumerate(terms)]
            walked += bottom
            bottom = new
        return OpenChain(tuple(t for t, _ in pieces), tuple(s for _, s in pieces), block.top, bottom,
                         tuple(walked))

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


def _accumulate(planner: _Planner, wrt: list[str], mode: str) -> dict:
    """Blocks ``d out / d wrt`` per output node and wrt name, keyed ``(node, name)`` (None: no dependence).

    "reverse": one sweep per output node, from it down to every wrt; "forward": one sweep per
    wrt up to every output node at once, so the blocks ``d v / d x`` of the values the outputs
    share are planned once and read by each.
    """
    graph = planner.graph
    outs = list(dict.fromkeys(o for o in graph.outputs if o is not None))
    results: dict[tuple[int, str], Block | None] = {}

    def add(blocks: dict, key: int, block: Block) -> None:
        blocks[key] = planner.add(blocks[key], block) if key in blocks else block

    def name(i: int) -> str:
        return graph.nodes[i].name

    inputs = set(graph.inputs.values())
    for out in outs:
        if out in inputs:  # the function returns one of its inputs
            for n in wrt:
                results[(out, n)] = planner.identity(out) if graph.inputs[n] == out else None
    swept = [o for o in outs if o not in inputs]
    if mode == "reverse":
        sources = {graph.inputs[n]: n for n in wrt}
        for out in swept:
            segs = _segments(graph, set(sources), {out})
            blocks = {out: planner.identity(out)} if segs else {}
            for seg in sorted(segs, key=lambda s: (-s.start, -s.end)):
                if seg.end in blocks:
                    add(blocks, seg.start, planner.segment(blocks[seg.end], seg, "reverse",
                                                           f"d{name(out)}/d{name(seg.start)}"))
            for i, n in sources.items():
                results[(out, n)] = blocks.get(i)
    else:
        for n in wrt:
            i = graph.inputs[n]
            segs = _segments(graph, {i}, set(swept))
            blocks = {i: planner.identity(i)} if segs else {}
            for seg in sorted(segs, key=lambda s: (s.end, s.start)):
                if seg.start in blocks:
                    add(blocks, seg.end, planner.segment(blocks[seg.start], seg, "forward",
                                                         f"d{name(seg.end)}/d{n}"))
            for out in swept:
                results[(out, n)] = blocks.get(out)
    return results


def _finish(planner: _Planner, blocks: dict, batched: tuple[str, ...]) -> dict:
    """Expand each block ``(node, name)`` to its explicit layout ``(*out, *in)``; per-sample (the
    batch axis once) where ``name`` is batched and the batch delta survives."""
    graph = planner.graph
    results = {}
    collapses = lambda name, block: name in batched and len(block.top) > 0 and block.top[:1] == block.bottom[:1]
    per_sample = {out for (out, name), block in blocks.items() if block is not None and collapses(name, block)}
    for (out, name), block in blocks.items():
        in_shape = np.shape(graph.nodes[graph.inputs[name]].value)
        if block is None:  # the output does not depend on this argument: zeros, no delta
            out_shape = tuple(np.shape(graph.nodes[out].value))
            # per-sample like the output's other batched Jacobians where one is; else the full layout
            keep = 1 if name in batched and out in per_sample else 0
            results[(out, name)] = (None, out_shape + tuple(in_shape[keep:]))
            continue
        collapse = collapses(name, block)
        target = [planner.fresh(planner.sizes[l]) for l in block.top + block.bottom]
        if collapse:
            target[len(block.top)] = target[0]
        final = planner.expand(block, tuple(target))
        layout = "".join(dict.fromkeys(target))  # the layout the user gets: (*out, *in)
        if final.data != layout and not _scatter_into(planner, final, layout):
            final = planner.expand(final, tuple(target), force=True)
        elif final.data != layout:
            final = Block(final.top, final.bottom, layout, final.slot)
        results[(out, name)] = (final.slot, tuple(planner.sizes[l] for l in final.data))
    return results


def _scatter_into(planner: _Planner, block: Block, layout: str) -> bool:
    """Let the scatter that made ``block`` write it in ``layout`` (a permutation of ``block.data``)
    instead of a transposed copy afterwards (a (B, C, V, d) embedding Jacobian is the size of the
    result: a second copy doubles the peak).  Only where that scatter's array is read by nothing else."""
    k = next((k for k, s in enumerate(planner.steps) if s.slot == block.slot), None)
    step = planner.steps[k] if k is not None else None
    if not isinstance(step, MapStep) or step.direction != "scatter" or \
            any(block.slot in _slots_read(s) for s in planner.steps[k + 1:]):
        return False
    ren = dict(zip(block.data, step.result))
    result = "".join(ren[l] for l in layout)
    planner.steps[k] = replace(step, result=result, shape=tuple(planner.sizes[l] for l in result))
    return True


def _slots_read(step) -> set[int]:
    """The slots a step reads: its Slot sources and the block it adds into (a ZeroStep reads none)."""
    return {s.index for s in getattr(step, "sources", ()) if isinstance(s, Slot)} | (
        {step.add_to} if getattr(step, "add_to", None) is not None else set())


def _by_leaf(graph: Graph, wrt: list[str], results: dict) -> dict:
    """Results per output leaf: keyed ``name`` when f returns one array, else ``(leaf, name)``;
    a constant leaf gives zeros of shape ``(*out, *in)``."""
    by_leaf = {}
    for k, out in enumerate(graph.outputs):
        for n in wrt:
            if out is None:
                shape = np.shape(graph.leaves[k]) + np.shape(graph.nodes[graph.inputs[n]].value)
                r = (None, tuple(shape))
            else:
                r = results[(out, n)]
            by_leaf[(k, n) if graph.several else n] = r
    return by_leaf


def compute_itemsize(graph: Graph) -> int:
    """Bytes per element of the dtype the computation runs in: the widest float of every value and
    constant of the trace (a float32 input meeting a float64 weight computes in float64)."""
    sizes = [4]
    for node in graph.nodes:
        dt = getattr(node.value, "dtype", None)
        if dt is not None and dt.kind == "f":
            sizes.append(dt.itemsize)
        for a in node.args:
            if isinstance(a, tuple):
                dt = getattr(a[1], "dtype", None)
                if dt is not None and dt.kind == "f":
                    sizes.append(dt.itemsize)
    return max(sizes)


def make_plan(graph: Graph, wrt: list[str], order="optimal", batched: str | tuple | None = None,
              factors: dict | None = None, search_time: float | None = None) -> Plan:
    """Plan the Jacobians of ``graph`` w.r.t. ``wrt`` from shapes (and the ops' factored forms).

    ``batched`` names the arguments (one or several) whose axis 0 is the per-sample batch.
    The plan's results are keyed by wrt name when the function returns one array, and by
    ``(leaf, name)`` (leaf: the position of an output array in the function's flattened result,
    :attr:`Graph.leaves`) when it returns several; all of them are planned together.

    ``factors`` (optional, filled in) caches the factored forms built while planning, so that
    the first execution on the same graph need not build them again.  ``"markowitz"``, an
    :class:`~jacobians.elimination.Elimination` and, on a branching graph, ``"optimal"`` plan
    by vertex elimination (:mod:`jacobians.elimination`; ``search_time`` bounds its search).
    """
    itemsize = compute_itemsize(graph)
    dtype = np.result_type(*[graph.nodes[graph.inputs[n]].value for n in wrt], np.float32)
    factors = {} if factors is None else factors
    batched = () if batched is None else (batched,) if isinstance(batched, str) else tuple(batched)
    elim = getattr(order, "is_elimination", False)
    if not isinstance(order, str) and not elim and any(o is not None for o in graph.outputs):
        # the networks do not depend on the path: count them first (a fold, itemsize 0: no byte
        # checks), so that a branching function hears why before the path meets a network it misfits
        probe = _Planner(graph, "reverse", 0, factors)
        _accumulate(probe, wrt, "reverse")
        _one_network(sum(isinstance(s, NetStep) for s in probe.steps))
    candidates = []
    modes = {"forward": ["forward"], "reverse": ["reverse"], "bracket": ["reverse"], "markowitz": []}.get(
        order, ["reverse", "forward"]) if isinstance(order, str) else [] if elim else ["reverse"]
    too_large = []  # a candidate over the memory limit drops out; the error is raised when all do
    for mode in modes:
        planner = _Planner(graph, order, itemsize, factors)
        try:
            results = _by_leaf(graph, wrt, _finish(planner, _accumulate(planner, wrt, mode), batched))
        except JacobianTooLarge as err:
            if len(modes) == 1:
                raise
            too_large.append(err)
            continue
        strategy = f"{mode} accumulation" if len(planner.steps) > 1 or len(results) > 1 else "one network"
        candidates.append((_rank(planner), planner, results, strategy, ()))
    if elim or order in ("markowitz", "optimal"):
        candidates += _eliminations(graph, wrt, order, itemsize, factors, batched, search_time,
                                    fallback=not candidates and not too_large)
    if not candidates:
        raise too_large[0]
    _, planner, results, strategy, names = min(candidates, key=lambda c: c[0])  # ties: listed first
    if not isinstance(order, str) and not elim:
        _one_network(sum(isinstance(s, NetStep) for s in planner.steps))
    check_bytes(sum(math.prod(shape) for _, shape in results.values()) * itemsize, "the explicit Jacobians",
                tuple(shape for _, shape in results.values()))
    links = tuple((key, structure(factors[key])) for key in planner.used)
    return _bookkeeping(Plan(order, strategy, tuple(planner.steps), results, links, itemsize, dtype.str,
                             len(planner.steps), names))


def _rank(planner: _Planner) -> tuple[bool, int]:
    """How candidate plans compare: a plan that writes an index map's 0/1 form (forward from an
    embedding table: the one-hot) loses to one that does not; then FLOPs plus the elements moved
    by map steps (memory traffic)."""
    dense = any(isinstance(s, MapStep) and isinstance(s.array, Ones) for s in planner.steps)
    return dense, sum(s.cost.flops + s.cost.moved for s in planner.steps)


def _eliminations(graph: Graph, wrt, order, itemsize, factors, batched, search_time, fallback: bool) -> list:
    """Candidates by vertex elimination (jacobians.elimination); with ``fallback`` (no other candidate)
    a reverse accumulation where elimination does not apply (nothing branches, nothing depends on wrt)."""
    from .elimination import eliminate, intermediate_vertices  # the elimination layer sits on the planner
    out = []
    inputs = set(graph.inputs.values())
    applies = any(o is not None and o not in inputs for o in graph.outputs)   # something traced to eliminate
    if applies and (order != "optimal" or intermediate_vertices(graph, wrt)):
        try:
            found = eliminate(graph, wrt, order, "optimal", itemsize, factors, search_time)
        except IndexMapsPending:   # elimination does not contract through index maps yet: accumulate
            found = []
        for flops, planner, blocks, names, how in found:
            results = _by_leaf(graph, wrt, _finish(planner, blocks, batched))
            strategy = f"vertex elimination, {how} order"
            out.append((_rank(planner), planner, results, strategy, names))
    if not out and fallback:
        planner = _Planner(graph, "optimal", itemsize, factors)
        results = _by_leaf(graph, wrt, _finish(planner, _accumulate(planner, wrt, "reverse"), batched))
        out.append((_rank(planner), planner, results, "reverse accumulation", ()))
    return out


def _one_network(n: int) -> None:
    if n != 1:
        why = "needs no contraction (only deltas)" if n == 0 else \
            f"needs {n} (branches in the function or several wrt)"
        raise ValueError(f"jacobian: an explicit contraction path applies to a single network; this Jacobian "
                         f"{why}; use order='forward', 'reverse' or 'optimal'")


def _bookkeeping(plan: Plan) -> Plan:
    """Once per plan: what to free after each step, which added-into block must be copied first,
    which result must be copied to be the caller's own, and where each operand is fetched from.

    A single-operand network passes its operand through (a view, or an op's operand itself);
    every other step makes a new array.  A slot that may be an input or an op's operand is
    "borrowed": never written, and copied when it is a result."""
    last_use: dict[int, int] = {}
    borrowed: set[int] = set()
    views: dict[int, int] = {}     # slot -> the slot it may be a view of
    for i, step in enumerate(plan.steps):
        for slot in _slots_read(step):
            last_use[slot] = i
        if isinstance(step, NetStep) and len(step.sources) == 1:
            src = step.sources[0]
            if isinstance(src, Link) or (isinstance(src, Slot) and src.index in borrowed):
                borrowed.add(step.slot)
            elif isinstance(src, Slot):
                views[step.slot] = src.index
    keep = {r[0] for r in plan.results.values() if r[0] is not None}
    for slot, base in reversed(list(views.items())):  # a view keeps its base alive (and unwritten) while it lives
        last_use[base] = max(last_use.get(base, -1), last_use.get(slot, -1))
        if slot in keep:
            keep.add(base)
    link_pos = {key: p for p, (key, _) in enumerate(plan.links)}
    steps = []
    for i, step in enumerate(plan.steps):
        free = tuple(s for s, last in last_use.items() if last == i and s not in keep)
        if isinstance(step, (NetStep, WindowStep)):
            fetch = tuple((0, s.index) if isinstance(s, Slot) else
                          (1, link_pos[(s.node, s.arg)], s.operand) if isinstance(s, Link) else
                          (2, s.shape) for s in step.sources)
            step = replace(step, free=free, fetch=fetch)
        elif isinstance(step, ExpandStep):
            copy = step.add_to is not None and (last_use.get(step.add_to, -1) > i or step.add_to in keep
                                                or step.add_to in borrowed)
            step = replace(step, free=free, copy_target=copy)
        else:
            step = replace(step, free=free)
        steps.append(step)

    def root(slot: int) -> int:
        while slot in views:
            slot = views[slot]
        return slot
    results, handed = {}, set()
    for name, (slot, shape) in plan.results.items():
        if slot is None:
            results[name] = Result(None, shape)
            continue
        # never a view of an input or an operand, never one array (or views of one) for two results
        results[name] = Result(slot, shape, slot in borrowed or root(slot) in handed)
        handed.add(root(slot))
    return replace(plan, steps=tuple(steps), results=results)


@dataclass(frozen=True)
class OpenChain:
    """The network of one path's ``d out / d x``, left uncontracted (for contractions of J with J).

    ``terms[k]`` is fed by ``sources[k]``: a :class:`~jacobians.plan.Slot` (a block the open plan
    accumulates) or a :class:`~jacobians.plan.Link` (an op's operand).  ``top`` labels the output's
    axes, ``bottom`` x's; a label in both is a delta.  ``walked`` are labels summed along the chain
    (one that no term carries is a sum over ones).  The explicit ``d out / d x`` of this path is
    ``einsum(terms -> distinct(top + bottom))`` with the deltas written on the diagonal."""

    terms: tuple
    sources: tuple
    top: tuple
    bottom: tuple
    walked: tuple = ()


def open_reverse(graph: Graph, wrt: list[str], factors: dict, itemsize: int) -> tuple[Plan, dict, dict]:
    """Reverse accumulation from the single output towards each ``wrt`` input, one segment short.

    The plan computes the blocks ``d out / d v`` at the branch points ``v``; the last segment into
    each wrt input is returned open (:class:`OpenChain`, one per path into it), so a caller can
    contract two Jacobians against each other (the NTK ``J(x1) J(x2)^T``) without forming either:
    a linear layer's ``dz/dW`` stays ``G (x) h``.  Returns the plan (its results keyed by the slots
    the chains read), the chains per wrt name, and every label's size.  ``factors`` is filled with
    the factored forms of the links the chains read."""
    planner = _Planner(graph, "optimal", itemsize, factors)
    out = graph.output
    sources = {graph.inputs[n]: n for n in wrt}
    chains: dict[str, list[OpenChain]] = {n: [] for n in wrt}
    if out is not None and out not in sources:
        segs = _segments(graph, set(sources), {out})
        blocks = {out: planner.identity(out)} if segs else {}
        for seg in sorted(segs, key=lambda s: (-s.start, -s.end)):
            if seg.end not in blocks:
                continue
            label = f"d{graph.nodes[out].name}/d{graph.nodes[seg.start].name}"
            if seg.start in sources:
                chains[sources[seg.start]].append(planner.open_segment(blocks[seg.end], seg, label))
                continue
            block = planner.segment(blocks[seg.end], seg, "reverse", label)
            blocks[seg.start] = planner.add(blocks[seg.start], block) if seg.start in blocks else block
    read = {}
    for chain in (c for cs in chains.values() for c in cs):
        for term, src in zip(chain.terms, chain.sources):
            if isinstance(src, Slot):
                read[src.index] = (src.index, tuple(planner.sizes[l] for l in term))
    dtype = np.result_type(*[graph.nodes[graph.inputs[n]].value for n in wrt], np.float32)
    links = tuple((key, structure(factors[key])) for key in planner.used)
    plan = _bookkeeping(Plan("reverse", "open reverse accumulation", tuple(planner.steps), read, links, itemsize,
                             dtype.str, len(planner.steps)))
    return plan, chains, dict(planner.sizes)
