"""Cross-country vertex elimination on a traced graph (Griewank & Walther ch. 9-10).

The graph between the differentiated inputs and the output is reduced to its
branch points (vertices) and the chains between them (edges, the planner's
segments).  An edge's label is its Jacobian: a *raw* chain of the ops' factored
Jacobians (not yet contracted), or a block (an array made by an earlier step).
Parallel edges are kept as a list of terms of one edge.

Eliminating an intermediate vertex ``v`` multiplies each of its in-edges with
each of its out-edges -- one einsum network per pair, costed from shapes with
:class:`~jacobians.network.Network`, deltas kept symbolic -- and adds the result
to the edge between their far ends.  One side is first *consolidated* (its
edges contracted and summed into one block each), so that a chain used by
several products is contracted once; the other side's chains enter the
products' networks raw.  Named orders fix the side (forward: in, reverse: out);
every other order tries both sides and keeps the cheaper.  A vertex with one raw
chain on each side is eliminated for free: the two chains become one longer chain.

Forward and reverse accumulation are the topological and reverse-topological
orders; they make the planner's forward and reverse networks (the same FLOPs;
forward for one differentiated input, since the planner sweeps each input on its
own subgraph), and their sums of blocks are never dearer.  Other orders:

* ``"markowitz"``: repeatedly the vertex of least size-weighted Markowitz degree
  ``|v| * sum |preds| * sum |succs|`` (free chain merges first);
* ``"optimal"`` on a branching graph: the cheapest of the planner's forward and
  reverse plans, the forward, reverse and Markowitz elimination orders, and a search
  bounded by the cheapest of those: dynamic programming over the sets of eliminated
  vertices (keeping the cheapest state per set) while the graph has at most
  :data:`EXACT_MAX` intermediate vertices, otherwise a beam search of width
  :data:`BEAM_WIDTH`, on at most half of ``search_time`` seconds (:data:`SEARCH_TIME` by
  default; past it the best partial order is completed in Markowitz order); then, until
  ``search_time``, an anytime local search on complete orders (:func:`_local_search`):
  seeded with the heuristics' and that search's orders, it tries Markowitz orders with
  random tie-breaking and moves a vertex of the best order elsewhere, costing every order
  exactly (replayed from the longest unchanged prefix), until ``n (n - 1)`` rounds bring
  nothing (skipped where the DP finished: it was exhaustive).  It is never more expensive
  than both pure modes: their plans are candidates too.

Orders are stated by node names (``"tanh_0"``, ``"add_1"``), not positions, so a
chosen order can be saved and replayed with ``order=Elimination(names)``.
:func:`multiplications` counts a plan's scalar multiplications the way Graphax
counts them (see there for how that differs from FLOPs).
"""

from __future__ import annotations

import functools
import math
import random
import time
from dataclasses import dataclass

import numpy as np
import opt_einsum as oe

from .limits import JacobianTooLarge
from .network import Network
from .plan import Link, NetStep, Plan, Slot, WindowStep
from .planner import Block, _Planner, _segments

__all__ = ["Elimination", "GRAPH_ORDERS", "SEARCH_TIME", "EXACT_MAX", "eliminate", "multiplications",
           "intermediate_vertices"]

SEARCH_TIME = 0.5   # seconds the "optimal" search may take by default
EXACT_MAX = 8       # intermediate vertices up to which the search is a DP over eliminated sets
BEAM_WIDTH = 4
LABELS_FOR_SEARCH = 1_000_000  # of the ~1.1e6 one-character einsum labels; the rest finish the plan


@dataclass(frozen=True)
class Elimination:
    """An explicit elimination order: intermediate vertices by node name, eliminated first to last.

    ``jac.jacobian(f, order=Elimination(("tanh_0", "add_0")))`` replays it; a vertex of
    the graph that the order omits is eliminated after the named ones, in Markowitz order.
    ``plan.elimination`` of any elimination plan is a tuple of names to build one from.
    """

    vertices: tuple[str, ...]
    is_elimination = True  # what jacobians.network.resolve_order recognizes

    def __post_init__(self) -> None:
        if isinstance(self.vertices, str) or not all(isinstance(v, str) for v in self.vertices):
            raise TypeError(f"Elimination: vertices must be a sequence of node names; got {self.vertices!r}")
        object.__setattr__(self, "vertices", tuple(self.vertices))


GRAPH_ORDERS = ("forward", "reverse", "markowitz", "optimal")


def _chain(term) -> list:
    return list(term) if isinstance(term, tuple) else [term]


class _State:
    """The graph during elimination: edges ``(u, w) -> [term, ...]`` (a term: a Block, or a raw chain
    as a tuple of (node, arg) links, output end first), and the steps made so far (in ``planner``)."""

    def __init__(self, planner: _Planner, sources: set[int], outs: set[int], edges: dict) -> None:
        # one label namespace for every clone of this state: labels stay unique across search
        # branches, so the label sizes are one shared, append-only dict (a clone copies no labels)
        counter = self.counter = [1000]   # 1000: clear of the ops' ASCII letters
        sizes = planner.sizes

        def fresh(size: int) -> str:
            counter[0] += 1
            label = oe.get_symbol(counter[0])
            sizes[label] = size
            return label
        planner.fresh = fresh
        self.planner = planner
        self.sources = sources
        self.outs = outs
        self.edges = edges
        self.preds: dict[int, set] = {}
        self.succs: dict[int, set] = {}
        for u, w in edges:
            self.succs.setdefault(u, set()).add(w)
            self.preds.setdefault(w, set()).add(u)
        self.flops = 0
        self.eliminated: list[int] = []

    def clone(self) -> "_State":
        p = self.planner
        q = _Planner.__new__(_Planner)
        q.__dict__.update(p.__dict__)
        q.steps, q.used = list(p.steps), dict(p.used)
        s = _State.__new__(_State)
        s.__dict__.update(self.__dict__)
        s.planner = q
        s.edges = {k: list(v) for k, v in self.edges.items()}
        s.preds = {k: set(v) for k, v in self.preds.items()}
        s.succs = {k: set(v) for k, v in self.succs.items()}
        s.eliminated = list(self.eliminated)
        return s

    def exhausted(self, deadline: float) -> bool:
        """Past the deadline, or the label namespace nearly spent (a search stops; what it found stands)."""
        return time.perf_counter() > deadline or self.counter[0] > LABELS_FOR_SEARCH

    def remaining(self) -> list[int]:
        """The vertices still to eliminate: intermediates, and outputs that still feed others (an
        output is eliminated keeping its in-edges: its own Jacobian stays)."""
        return sorted(v for v in self.preds if v not in self.sources and self.preds[v]
                      and (v not in self.outs or self.succs.get(v)))

    # ---------------------------------------------------------------- products

    def product(self, chain: list, label: str) -> Block:
        """One network: the factors of ``chain`` (Blocks and (node, arg) links, output end first)."""
        pl = self.planner
        parent: dict[str, str] = {}

        def find(l):
            while parent.get(l, l) != l:
                l = parent[l]
            return l
        pieces = []  # (terms, sources, top, bottom)
        for item in chain:
            if isinstance(item, Block):
                m = {l: pl.fresh(pl.sizes[l]) for l in dict.fromkeys(item.top + item.bottom + tuple(item.data))}
                terms = ["".join(m[l] for l in item.data)] if item.slot is not None else []
                sources = [Slot(item.slot)] if item.slot is not None else []
                pieces.append((terms, sources, tuple(m[l] for l in item.top), tuple(m[l] for l in item.bottom)))
            else:
                c, k = item
                f = pl.factor(c, k)
                local = f.sizes
                m = {}
                for l in list(f.out) + list(f.inp) + [l for sub, _ in f.operands for l in sub]:
                    if l not in m:
                        m[l] = pl.fresh(local[l])
                pieces.append((["".join(m[l] for l in sub) for sub, _ in f.operands],
                               [Link(c, k, j) for j in range(len(f.operands))],
                               tuple(m[l] for l in f.out), tuple(m[l] for l in f.inp)))
        for above, below in zip(pieces, pieces[1:]):
            for a, b in zip(above[3], below[2]):
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[rb] = ra
        rep: dict[str, str] = {}

        def sub(labels) -> str:
            out = []
            for l in labels:
                r = rep.get(l)
                if r is None:
                    r = rep[l] = find(l)
                out.append(r)
            return "".join(out)
        top, bottom = tuple(sub(pieces[0][2])), tuple(sub(pieces[-1][3]))
        terms, sources, links, walked, at = [], [], [], [], 0
        for t, s, a, b in pieces:
            terms += [sub(x) for x in t]
            sources += s
            links.append((tuple(range(at, at + len(t))), tuple(sub(a)), tuple(sub(b))))
            walked += list(sub(a)) + list(sub(b))
            at += len(t)
        output = "".join(dict.fromkeys(top + bottom))
        if not terms and set(top) == set(bottom):
            return Block(top, bottom)
        n_chain, done = pl._trivial(terms, sources, walked, output, label)
        if done is not None:
            return Block(top, bottom, *done)
        # the network in canonical labels (a, b, c, ... by appearance): equal networks made by
        # different orders or search branches share one cached path and cost
        canon: dict[str, str] = {}
        for l in "".join(terms) + output:
            if l not in canon:
                canon[l] = oe.get_symbol(len(canon))
        c = lambda labels: "".join(canon[l] for l in labels)
        net = Network(tuple(c(t) for t in terms), tuple(tuple(pl.sizes[l] for l in t) for t in terms), c(output),
                      n_chain, tuple((p, tuple(c(a)), tuple(c(b))) for p, a, b in links))
        path = _path(pl.path_of, net)
        cost, chunk = pl._sliced_cost(net, path, label)
        step = NetStep(net, path, tuple(sources), len(pl.steps), cost, label, chunk)
        pl.steps.append(step)
        self.flops += cost.flops
        return Block(top, bottom, output, step.slot)

    def _add_step(self, a: Block, b: Block) -> Block:
        if a.slot is None and b.slot is not None:
            a, b = b, a  # the block with an array first: the identity is added onto it (no eye written)
        n = len(self.planner.steps)
        r = self.planner.add(a, b)
        self.flops += sum(s.cost.flops for s in self.planner.steps[n:])
        return r

    def _name(self, i: int) -> str:
        return self.planner.graph.nodes[i].name

    def consolidate(self, u: int, w: int) -> Block:
        """Edge ``u -> w`` as one block: raw chains contracted, terms summed."""
        terms = self.edges[(u, w)]
        if len(terms) == 1 and isinstance(terms[0], Block):
            return terms[0]
        label = f"d{self._name(w)}/d{self._name(u)}"
        total = None
        for t in terms:
            b = t if isinstance(t, Block) else self.product(_chain(t), label)
            total = b if total is None else self._add_step(total, b)
        self.edges[(u, w)] = [total]
        return total

    def _insert(self, u: int, w: int, term) -> None:
        """Add ``term`` to edge ``u -> w``; blocks are summed as they arrive (one block per edge)."""
        terms = self.edges.setdefault((u, w), [])
        self.succs.setdefault(u, set()).add(w)
        self.preds.setdefault(w, set()).add(u)
        if isinstance(term, Block):
            for j, t in enumerate(terms):
                if isinstance(t, Block):
                    terms[j] = self._add_step(t, term)
                    return
        terms.append(term)

    # ---------------------------------------------------------------- elimination

    def eliminate(self, v: int, side: str | None = None) -> None:
        """Eliminate ``v``: ``side`` "in" or "out" is consolidated; None tries both and keeps the cheaper."""
        ins = sorted(self.preds[v])
        outs = sorted(self.succs[v])
        in_terms = [t for u in ins for t in self.edges[(u, v)]]
        out_terms = [t for w in outs for t in self.edges[(v, w)]]
        if len(in_terms) == 1 and len(out_terms) == 1 and isinstance(in_terms[0], tuple) \
                and isinstance(out_terms[0], tuple) and v not in self.outs:
            self._detach(v, ins, outs)
            self._insert(ins[0], outs[0], out_terms[0] + in_terms[0])   # a free chain merge
            self.eliminated.append(v)
            return
        if side is None:
            tried = []
            for s in ("in", "out"):
                trial = self.clone()
                try:
                    trial.eliminate(v, s)
                except JacobianTooLarge as e:
                    error = e
                    continue
                tried.append(trial)
            if not tried:
                raise error
            self.__dict__.update(min(tried, key=lambda t: t.flops).__dict__)
            return
        if side == "in":
            left = {u: [self.consolidate(u, v)] for u in ins}
            right = {w: self._terms_for_product(v, w) for w in outs}
        else:
            right = {w: [self.consolidate(v, w)] for w in outs}
            left = {u: self._terms_for_product(u, v) for u in ins}
        self._detach(v, ins, outs)
        for u in ins:
            for w in outs:
                label = f"d{self._name(w)}/d{self._name(u)}"
                for to in right[w]:
                    for ti in left[u]:
                        self._insert(u, w, self.product(_chain(to) + _chain(ti), label))
        self.eliminated.append(v)

    def _terms_for_product(self, u: int, w: int) -> list:
        terms = self.edges[(u, w)]
        if len(terms) > 1 and any(isinstance(t, Block) for t in terms):
            return [self.consolidate(u, w)]
        return list(terms)

    def _detach(self, v: int, ins, outs) -> None:
        if v not in self.outs:   # an output keeps its in-edges: they are its Jacobian
            for u in ins:
                del self.edges[(u, v)]
                self.succs[u].discard(v)
            self.preds[v] = set()
        for w in outs:
            del self.edges[(v, w)]
            self.preds[w].discard(v)
        self.succs[v] = set()

    def finish(self) -> dict[tuple[int, int], Block]:
        """After every intermediate vertex: ``d out / d source`` per output and source, one block each."""
        return {(o, u): self.consolidate(u, o) for o in sorted(self.outs) for u in sorted(self.sources)
                if (u, o) in self.edges}

    def markowitz(self, v: int) -> tuple:
        """(free merge?, size-weighted Markowitz degree, name) -- the smaller, the sooner."""
        size = lambda i: int(np.size(self.planner.graph.nodes[i].value))
        in_terms = sum(len(self.edges[(u, v)]) for u in self.preds[v])
        out_terms = sum(len(self.edges[(v, w)]) for w in self.succs[v])
        free = in_terms == 1 and out_terms == 1
        degree = size(v) * sum(size(u) for u in self.preds[v]) * sum(size(w) for w in self.succs[v])
        return (not free, degree, self._name(v))


@functools.lru_cache(maxsize=8192)
def _path(path_of, net: Network) -> tuple:
    return path_of(net)


# ---------------------------------------------------------------- orders

def _outputs(graph) -> set[int]:
    """The traced output nodes that are not inputs (an input returned as it is needs no elimination)."""
    return {o for o in graph.outputs if o is not None} - set(graph.inputs.values())


def _initial(graph, wrt: list[str], order_path, itemsize: int, factors: dict) -> _State | None:
    sources = {graph.inputs[n] for n in wrt}
    outs = _outputs(graph)
    segs = _segments(graph, sources, outs) if outs else []
    if not segs:
        return None
    planner = _Planner(graph, order_path, itemsize, factors)
    edges: dict = {}
    for s in segs:
        edges.setdefault((s.start, s.end), []).append(tuple(reversed(s.links)))
    return _State(planner, sources, outs, edges)


def intermediate_vertices(graph, wrt: list[str]) -> list[str]:
    """The names of the vertices an elimination order orders, in topological order: branch points
    that are neither a differentiated input nor an output, and outputs that feed other outputs."""
    sources = {graph.inputs[n] for n in wrt}
    outs = _outputs(graph)
    segs = _segments(graph, sources, outs) if outs else []
    vs = {s.start for s in segs} | {s.end for s in segs}
    feeding = {s.start for s in segs} & outs
    return [graph.nodes[v].name for v in sorted((vs - sources - outs) | feeding)]


def _run(state: _State, order: list[int], side: str | None) -> _State:
    for v in order:
        state.eliminate(v, side)
    return state


def _markowitz_rest(state: _State, side: str | None = None) -> _State:
    while True:
        rest = state.remaining()
        if not rest:
            return state
        state.eliminate(min(rest, key=state.markowitz), side)


def _tried(state: _State, v: int) -> _State | None:
    """A clone with ``v`` eliminated; None where that needs an array over the memory limit."""
    s = state.clone()
    try:
        s.eliminate(v)
    except JacobianTooLarge:
        return None
    return s


def _search(start: _State, deadline: float, best_flops: float) -> _State | None:
    """DP over eliminated sets (small graphs) or a beam search, within ``deadline``; None if nothing
    complete beat ``best_flops``."""
    n = len(start.remaining())
    best = None
    if n <= EXACT_MAX:
        layer = {frozenset(): start}
        for _ in range(n):
            nxt: dict = {}
            for done, st in layer.items():
                for v in st.remaining():
                    if st.exhausted(deadline):
                        return best
                    key = done | {v}
                    if key in nxt and nxt[key].flops <= st.flops:
                        continue
                    s = _tried(st, v)
                    if s is None:
                        continue
                    if s.flops >= best_flops:
                        continue  # bound: already dearer than a complete order
                    if key not in nxt or s.flops < nxt[key].flops:
                        nxt[key] = s
            layer = nxt
            if not layer:
                return best
        for s in layer.values():
            done = s.clone()
            done.finish()
            if done.flops < best_flops:
                best, best_flops = s, done.flops
        return best
    beam = [start]
    while beam and beam[0].remaining():
        children = []
        for st in beam:
            for v in st.remaining():
                if st.exhausted(deadline):
                    break
                s = _tried(st, v)
                if s is not None and s.flops < best_flops:
                    children.append(s)
        if start.exhausted(deadline):  # anytime: complete the best partial orders by Markowitz
            for st in sorted(children, key=lambda s: s.flops)[:1]:
                done = _markowitz_rest(st.clone())
                total = done.clone()
                total.finish()
                if total.flops < best_flops:
                    best, best_flops = done, total.flops
            return best
        beam = sorted(children, key=lambda s: s.flops)[:BEAM_WIDTH]
    for st in beam:
        total = st.clone()
        total.finish()
        if total.flops < best_flops:
            best, best_flops = st, total.flops
    return best


CHECKPOINT_EVERY = 6   # the local search keeps the state after every 6th vertex of the best order


def _markowitz_noisy(state: _State, rng: random.Random, noise: float) -> _State:
    """Markowitz order with random tie-breaking: each degree times a random factor in [1, 1 + noise]."""
    while True:
        rest = state.remaining()
        if not rest:
            return state

        def key(v):
            free, degree, name = state.markowitz(v)
            return free, degree * (1.0 + noise * rng.random()), name
        state.eliminate(min(rest, key=key))


def _local_search(start: _State, seeds: list[list[int]], deadline: float, best_flops: float,
                  seed: int = 0) -> _State | None:
    """Anytime improvement of complete elimination orders within ``deadline``; None if nothing beat
    ``best_flops``.

    The cheapest seed (each replayed with the cheaper side at every vertex) is the incumbent, kept
    with its states after every :data:`CHECKPOINT_EVERY`-th vertex, so that a changed order is
    replayed from the last checkpoint before its first change, and abandoned as soon as its prefix
    costs as much as the incumbent.  Each round moves one vertex of the incumbent to another
    position (most rounds) or draws a Markowitz order with random tie-breaking; a cheaper
    complete order becomes the incumbent.  It stops at the deadline or after ``n (n - 1)`` rounds
    (n vertices) without an improvement."""
    rng = random.Random(seed)
    bound = [math.inf]

    def total(st: _State) -> float:
        t = st.clone()
        try:
            t.finish()
        except JacobianTooLarge:
            return math.inf
        return t.flops

    def replay(order: list[int], frm: int, base: _State) -> tuple[_State | None, list]:
        st, marks = base.clone(), []
        try:
            for i in range(frm, len(order)):
                if i % CHECKPOINT_EVERY == 0:
                    marks.append(st.clone())
                st.eliminate(order[i])
                if st.flops >= bound[0] or st.exhausted(deadline):
                    return None, []
        except JacobianTooLarge:
            return None, []
        return st, marks

    cur = cur_order = None
    checkpoints: list[_State] = []
    for order in seeds:
        st, marks = replay(order, 0, start)
        cost = total(st) if st is not None else math.inf
        if cost < bound[0]:
            cur, cur_order, checkpoints, bound[0] = st, list(order), marks, cost
    if cur is None:
        return None
    n = len(cur_order)
    idle = 0   # rounds since the last improvement: stop after n (n - 1), as many as there are moves
    while n > 1 and idle < n * (n - 1) and not start.exhausted(deadline):
        idle += 1
        if rng.random() < 0.2:
            try:
                st = _markowitz_noisy(start.clone(), rng, rng.choice((0.1, 0.3, 1.0)))
            except JacobianTooLarge:
                continue
            if st.flops >= bound[0]:
                continue
            order, marks = list(st.eliminated), None
        else:
            i, j = rng.sample(range(n), 2)
            order = list(cur_order)
            order.insert(j, order.pop(i))
            k = min(min(i, j) // CHECKPOINT_EVERY, len(checkpoints) - 1)
            st, marks = replay(order, k * CHECKPOINT_EVERY, checkpoints[k])
            if st is None:
                continue
            marks = checkpoints[:k] + marks
        cost = total(st)
        if cost < bound[0]:
            if marks is None:
                bound[0] = math.inf   # the checkpoints of an order drawn whole: replay it once
                _, marks = replay(order, 0, start)
            if marks:
                cur, cur_order, checkpoints, idle = st, order, marks, 0
            bound[0] = total(cur)
    return cur if bound[0] < best_flops else None


def eliminate(graph, wrt: list[str], order, path_order, itemsize: int, factors: dict,
              search_time: float | None = None) -> list[tuple[int, _Planner, dict, tuple[str, ...], str]]:
    """Candidate plans by vertex elimination: ``(flops, planner, blocks, order as names, how)``;
    ``blocks`` maps ``(output node, wrt name)`` to a Block, or None where that output does not
    depend on that argument (every traced output of the graph, several or one).

    ``order``: "forward", "reverse", "markowitz", "optimal" (several candidates: forward,
    reverse, Markowitz, searched) or an :class:`Elimination`.  ``path_order`` picks each
    network's contraction path (:func:`jacobians.network.resolve_order`).
    """
    start = _initial(graph, wrt, path_order, itemsize, factors)
    if start is None:
        return []
    topo = start.remaining()
    by_name = {graph.nodes[v].name: v for v in topo}
    runs: list[tuple[_State, str]] = []
    if isinstance(order, Elimination):
        unknown = [n for n in order.vertices if n not in by_name]
        if unknown:
            raise ValueError(f"jacobian: elimination order names {unknown[0]!r}, which is not an intermediate "
                             f"vertex of this graph; valid names are {', '.join(map(repr, by_name)) or 'none'}")
        runs.append((_markowitz_rest(_run(start.clone(), [by_name[n] for n in order.vertices], None)), "given"))
    elif order == "forward":
        runs.append((_run(start.clone(), topo, "in"), "forward"))
    elif order == "reverse":
        runs.append((_run(start.clone(), topo[::-1], "out"), "reverse"))
    elif order == "markowitz":
        runs.append((_markowitz_rest(start.clone()), "markowitz"))
    elif order == "optimal":
        budget = SEARCH_TIME if search_time is None else search_time
        began = time.perf_counter()
        best = math.inf
        for how, make in (("forward", lambda: _run(start.clone(), topo, "in")),
                          ("reverse", lambda: _run(start.clone(), topo[::-1], "out")),
                          ("markowitz", lambda: _markowitz_rest(start.clone()))):
            try:   # an order whose arrays would not fit is no candidate
                st = make()
                t = st.clone()
                t.finish()
            except JacobianTooLarge:
                continue
            runs.append((st, how))
            best = min(best, t.flops)
        found = _search(start.clone(), began + budget / 2, best) if topo else None
        seeds = [list(st.eliminated) for st, _ in runs]
        if found is not None:
            t = found.clone()
            t.finish()
            best = min(best, t.flops)
            seeds.insert(0, list(found.eliminated))
        # the DP, finished within its half of the budget, was exhaustive: nothing left to improve
        exact = len(topo) <= EXACT_MAX and time.perf_counter() < began + budget / 2
        improved = _local_search(start, seeds, began + budget, best) if len(topo) > 1 and not exact else None
        if improved is not None:
            found = improved
        if found is not None:
            runs.append((found, "searched"))
    else:
        raise ValueError(f"unknown elimination order {order!r}; valid options are "
                         f"{', '.join(map(repr, GRAPH_ORDERS))} or Elimination((node names...))")
    results = []
    for st, how in runs:
        found = st.finish()
        blocks = {}
        for o in dict.fromkeys(o for o in graph.outputs if o is not None):
            for n in wrt:
                i = graph.inputs[n]
                blocks[(o, n)] = (st.planner.identity(o) if i == o else None) if o not in st.outs \
                    else found.get((o, i))
        names = tuple(graph.nodes[v].name for v in st.eliminated)
        results.append((st.flops, st.planner, blocks, names, how))
    return results


def multiplications(plan: Plan, per: int = 1) -> int:
    """Scalar multiplications of ``plan``'s networks, Graphax's convention, divided by ``per``
    (the batch size, for a per-sample count).

    Every pairwise contraction of a network costs the product of the sizes of all its labels:
    one multiplication per term of the sum, whether or not a label is summed (FLOPs count a
    multiply-add as 2 and a product without a summed label as 1).  Additions -- the sums of
    contractions, adding parallel edges, writing deltas out -- count 0, as in Graphax.  Deltas
    are never multiplied: an elementwise Jacobian enters as a vector, like Graphax's sparse
    diagonal edges; a per-sample batch label is one factor of ``per`` in every product.
    """
    total = 0
    for step in plan.steps:
        if isinstance(step, WindowStep):   # the network per kernel offset (and its offset-free part once)
            times = math.prod(len(w[4]) for w in step.windows)
            total += _products(step.pre, step.pre_path) + times * _products(step.sub, step.path)
        elif isinstance(step, NetStep):
            total += _products(step.network, step.path)
    return total // per if per > 1 else total


def _products(net: Network, path) -> int:
    """Scalar multiplications of contracting ``net`` along ``path`` (Graphax's convention)."""
    total = 0
    sizes = net.sizes
    terms = list(net.terms)
    for pair in path:
        picked = [terms[i] for i in pair]
        for i in sorted(pair, reverse=True):
            del terms[i]
        keep = set(net.output).union(*terms)
        if len(picked) > 1:
            total += math.prod(sizes[l] for l in set().union(*picked))
        terms.append("".join(dict.fromkeys(l for t in picked for l in t if l in keep)))
    return total
