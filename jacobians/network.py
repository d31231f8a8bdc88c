"""One einsum network: its contraction orders, their costs from shapes, and BLAS execution.

Operands are listed from the output end of the chain to the input end, so the
two classic modes are folds of that list:

* ``reverse`` contracts from the output end (what VJPs do: rows first);
* ``forward`` contracts from the input end (what JVPs do: columns first);
* ``optimal`` is the cheapest of both folds, a matrix-chain DP over the
  network's links (exact over bracketings, polynomial in depth: 100 tanh
  layers plan in a fraction of a second) and, for networks of at most
  ``DP_MAX_TERMS`` operands, opt_einsum's ``'dp'`` search (exponential once a
  per-sample batch index joins every operand; its ``'optimal'`` is not
  reliable when an index is shared by three or more operands, opt_einsum
  issue 167);
* an explicit opt_einsum path (a list of position pairs) is used as given.

Costs follow opt_einsum: a multiply-add counts 2 FLOPs, a product without a
summed index counts 1 per element.  Execution is pairwise: a contraction that
keeps an index on both sides (``bij,bjk->bik``) runs as one batched
``matmul``, a product without a summed index as a broadcast multiply, both on the
arrays' backend (:mod:`jacobians.backends`; numpy unless ``xp`` says otherwise).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import opt_einsum as oe

from .backends import numpy as _numpy

__all__ = ["Network", "Cost", "ORDERS", "resolve_order", "contract_pair"]


@dataclass(frozen=True)
class Cost:
    """What a contraction path costs, from shapes alone."""

    flops: int
    largest_intermediate: int      # elements
    path: tuple[tuple[int, ...], ...]
    moved: int = 0                 # elements read and written by gathers and scatter-adds (memory traffic, not FLOPs)


@dataclass(frozen=True)
class Network:
    """Operands ``terms[k]`` of ``shapes[k]`` (output end first) contracted to ``output``."""

    terms: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    output: str
    n_chain: int | None = None   # operands past this are ones-factors (labels no operand carries)
    links: tuple = ()            # per chain link, output end first: (operand positions, out labels, in labels)

    @property
    def eq(self) -> str:
        return ",".join(self.terms) + "->" + self.output

    @functools.cached_property
    def _elementwise(self) -> bool:
        """Every operand (two or more) is on the output's labels, in its order, or a scalar."""
        return len(self.terms) > 1 and all(t in (self.output, "") for t in self.terms) \
            and any(t == self.output for t in self.terms)

    @property
    def sizes(self) -> dict[str, int]:
        return {l: n for t, s in zip(self.terms, self.shapes) for l, n in zip(t, s)}

    def path(self, order) -> tuple[tuple[int, ...], ...]:
        return resolve_order(order)(self)

    def cost(self, order) -> Cost:
        return _cost(self, self.path(order))

    def intermediates(self, path) -> list[str]:
        """The labels of every array ``path`` creates, in order (the last is the output, unpermuted)."""
        terms, made = list(self.terms), []
        for step in path:
            picked = [terms[i] for i in step]
            for i in sorted(step, reverse=True):
                del terms[i]
            keep = set(self.output).union(*terms)
            made.append("".join(dict.fromkeys(l for t in picked for l in t if l in keep)))
            terms.append(made[-1])
        return made

    def chunking(self, path, target: int) -> tuple[str, int] | None:
        """``(label, chunks)``: slice along one output label so that no intermediate of ``path``
        exceeds ``target`` elements (as far as slicing one label can); None if nothing exceeds it."""
        sizes = self.sizes
        size = lambda labels: math.prod(sizes[l] for l in labels)
        big = [t for t in self.intermediates(path) if size(t) > target]
        if not big:
            return None
        candidates = [l for l in self.output if sizes[l] > 1]
        if not candidates:
            return None
        label = max(candidates, key=lambda l: (sum(l in t for t in big), sizes[l]))
        return label, min(sizes[label], -(-max(map(size, big)) // target))

    def contract(self, arrays: Sequence, path, chunk: tuple[str, int] | None = None, xp=_numpy):
        """Contract ``arrays`` along ``path`` with :func:`contract_pair`, in ``chunk = (label, n)``
        slices of one output label when given (samples, rows: any label the output keeps).

        ``xp`` is the arrays' backend (:mod:`jacobians.backends`; numpy arrays by default)."""
        if chunk is None:
            if self._elementwise:   # a,a,->a: one product per operand, none of contract_pair's bookkeeping
                out = xp.multiply(arrays[0], arrays[1])
                for a in arrays[2:]:
                    out = xp.multiply(out, a)
                return out
            return self._contract(arrays, path, xp)
        label, n = chunk
        if xp is _numpy:
            arrays = [np.asarray(a) for a in arrays]
        total = self.sizes[label]
        width = -(-total // n)
        out = None
        axis = self.output.index(label)
        for start in range(0, total, width):
            part = slice(start, min(start + width, total))
            sliced = [a[tuple(part if l == label else slice(None) for l in t)] if label in t else a
                      for a, t in zip(arrays, self.terms)]
            block = self._contract(sliced, path, xp)
            if out is None:   # the first block gives the dtype and the device
                out = xp.empty([self.sizes[l] for l in self.output], _dtype(block), xp.device_of(block))
            out = xp.set_at(out, (slice(None),) * axis + (part,), block)
        return out

    def _contract(self, arrays: Sequence, path, xp=_numpy):
        ops = [(np.asarray(a) if xp is _numpy else a, t) for a, t in zip(arrays, self.terms)]
        if not ops:
            return xp.ones([self.sizes[l] for l in self.output], np.float64)
        for step in path:
            picked = [ops[i] for i in step]
            for i in sorted(step, reverse=True):
                del ops[i]
            keep = set(self.output).union(*(t for _, t in ops))
            a, ta = picked[0]
            for b, tb in picked[1:]:
                a, ta = contract_pair(a, ta, b, tb, keep, self.output, xp)
            ops.append((a, ta))
        (a, ta), = ops
        a, ta = _sum_out(a, ta, set(self.output), xp)
        return xp.transpose(a, [ta.index(l) for l in self.output]) if ta != self.output else a


# ---------------------------------------------------------------- orders

def _fold(positions: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """The opt_einsum path that folds operands in the given order into one running product."""
    live = list(range(len(positions)))
    path = []
    if len(positions) == 1:
        return ((0,),)
    first, rest = positions[0], positions[1:]
    acc = first
    for p in rest:
        i, j = live.index(acc), live.index(p)
        path.append(tuple(sorted((i, j))))
        live = [q for q in live if q not in (acc, p)] + [-len(path)]
        acc = -len(path)
    return tuple(path)


def reverse(net: Network):
    """Fold from the output end (rows first, as VJPs do)."""
    return _fold(list(range(len(net.terms))))


def forward(net: Network):
    """Fold from the input end (columns first, as JVPs do)."""
    n = len(net.terms) if net.n_chain is None else net.n_chain
    return _fold(list(range(n))[::-1] + list(range(n, len(net.terms))))


def optimal(net: Network):
    """The cheapest in FLOPs of: both folds, the chain DP over the network's links
    (:func:`chain`), and opt_einsum's ``'dp'`` while the network has at most
    :data:`DP_MAX_TERMS` operands (beyond that its search grows exponentially: a per-sample
    batch label joins every operand).  Never worse than either fold."""
    if len(net.terms) <= 2:
        return reverse(net)
    # on a tie the reverse fold wins: its running product keeps the output's labels first and
    # the label to sum next last, so every GEMM reads and writes contiguous memory
    candidates = [reverse(net)]
    if len(net.terms) <= DP_MAX_TERMS:
        candidates.append(tuple(tuple(p) for p in _dp_path(net.eq, net.shapes)))
    candidates.append(forward(net))
    best_chain = _chain_path(net)
    if best_chain is not None:
        candidates.append(best_chain)
    elif len(net.terms) > DP_MAX_TERMS:
        candidates.append(tuple(tuple(p) for p in _greedy_path(net.eq, net.shapes)))
    return min(candidates, key=lambda path: _cost(net, path).flops)


DP_MAX_TERMS = 12      # opt_einsum 'dp' on a 12-operand chain with a batch label: ~5 ms; 22: ~0.2 s
CHAIN_MAX_WORK = 5e7   # array elements the chain DP may touch (n**3 / 6 splits x crossing labels)


@functools.lru_cache(maxsize=4096)
def _dp_path(eq: str, shapes: tuple) -> list:
    path, _ = oe.contract_path(eq, *shapes, shapes=True, optimize="dp")
    return path


@functools.lru_cache(maxsize=1024)
def _greedy_path(eq: str, shapes: tuple) -> list:
    path, _ = oe.contract_path(eq, *shapes, shapes=True, optimize="greedy")
    return path


def chain(net: Network):
    """The chain DP alone (see :func:`_chain_path`); the cheaper fold where it does not apply."""
    path = _chain_path(net)
    return path if path is not None else min((reverse(net), forward(net)), key=lambda p: _cost(net, p).flops)


def _chain_path(net: Network):
    """The FLOP-optimal bracketing of the chain of links, as an opt_einsum path; None if it does not apply.

    A matrix-chain DP over intervals of links (output end first): each link's own operands are
    contracted first (exactly, over subsets), then adjacent interval products merge at the exact
    opt_einsum cost of that pairwise contraction -- the product of the sizes of both operands'
    labels, doubled when a label is summed away.  An interval product keeps the labels it carries
    that the output or an operand outside the interval still needs.  Operands outside every link
    (ones-factors) are contracted last.  A network without links is taken as a chain of its
    operands in order.  Vectorized over split points: O(n**3 * c / 6) array work for n links
    and c labels crossing a split (a chain has a few), O(n) Python steps.
    """
    groups = [tuple(p) for p, *_ in net.links if p] if net.links else [(k,) for k in range(len(net.terms))]
    n = len(groups)
    if n < 2:
        return None
    sizes = net.sizes
    if any(s == 0 for s in sizes.values()):
        return None  # nothing to multiply: every order costs 0
    used = {p for g in groups for p in g}
    rest = [p for p in range(len(net.terms)) if p not in used]
    external = set(net.output).union(*(net.terms[p] for p in rest))
    occurs = [set().union(*(net.terms[p] for p in g)) for g in groups]
    where: dict[str, list[int]] = {}
    for k, labels in enumerate(occurs):
        for l in labels:
            where.setdefault(l, []).append(k)
    # labels crossing split s (between links s and s+1): (last link <= s, first link > s, size)
    crossing: list[list[tuple[int, int, int]]] = [[] for _ in range(n - 1)]
    for l, ks in where.items():
        for a, b in zip(ks, ks[1:]):
            for s in range(a, b):
                crossing[s].append((a, b, sizes[l]))
    c = max(map(len, crossing))
    if n ** 3 / 6 * max(c, 1) > CHAIN_MAX_WORK:
        return None
    Cp = np.full((c, n - 1), -1, dtype=np.int64)
    Cq = np.full((c, n - 1), n, dtype=np.int64)
    Cs = np.ones((c, n - 1))
    for s, row in enumerate(crossing):
        for t, (a, b, size) in enumerate(row):
            Cp[t, s], Cq[t, s], Cs[t, s] = a, b, size

    # K[i, j]: the size and count of the labels the product of links i..j keeps (for i <= j)
    idx = np.arange(n)
    Ksize, Kcnt = np.ones((n, n)), np.zeros((n, n), dtype=np.int64)
    for l, ks in where.items():
        size, f, g = float(sizes[l]), ks[0], ks[-1]
        occ = np.array(ks + [n])
        nxt = occ[np.searchsorted(occ, idx)]          # the first link >= i that carries l
        if l in external:
            rows = slice(0, g + 1)
        else:  # kept where [i, j] meets l's links without holding all of them: i in (f, g] or j in [f, g)
            rows = slice(f + 1, g + 1)
            Ksize[:f + 1, f:g] *= size
            Kcnt[:f + 1, f:g] += 1
        kept = nxt[rows, None] <= idx[None, :]
        Ksize[rows] *= np.where(kept, size, 1.0)
        Kcnt[rows] += kept

    # a link's own operands first, exactly over subsets; its product is a leaf of the chain
    leaf_trees, leaf_cost = [], np.zeros(n)
    Tsize, Tcnt = Ksize.copy(), Kcnt.copy()  # the labels an interval's array carries
    for k, g in enumerate(groups):
        if len(g) == 1:  # a lone operand enters its first contraction with all its labels
            leaf_trees.append(g[0])
            raw = set(net.terms[g[0]])
            Tsize[k, k] = float(math.prod(sizes[l] for l in raw))
            Tcnt[k, k] = len(raw)
            continue
        needed = external.union(*(occurs[q] for q in range(n) if q != k))
        cost, tree = _subset_dp([net.terms[p] for p in g], needed, sizes)
        leaf_trees.append(_map_tree(tree, g))
        leaf_cost[k] = cost

    best = np.zeros((n, n))
    best[idx, idx] = leaf_cost
    split = np.zeros((n, n), dtype=np.int64)
    for m in range(2, n + 1):
        # rows: i (j = i + m - 1); columns: the split s = i + t, [i, s] times [s + 1, j]; all strided views
        r, i = n - m + 1, np.arange(n - m + 1)
        left = lambda a: _band(a, 0, (n + 1, 1), (r, m - 1))        # a[i, i + t]
        right = lambda a: _band(a, n + m - 1, (n + 1, n), (r, m - 1))  # a[i + t + 1, i + m - 1]
        window = lambda a: _band(a, 0, (1, 1), (r, m - 1))               # a[i + t]: at split i + t
        shared_size, shared_count = np.ones((r, m - 1)), np.zeros((r, m - 1), dtype=np.int64)
        for q in range(c):  # the q-th label crossing the split: carried by both halves?
            shared = (window(Cp[q]) >= i[:, None]) & (window(Cq[q]) <= i[:, None] + m - 1)
            shared_size *= np.where(shared, window(Cs[q]), 1.0)
            shared_count += shared
        summed = left(Tcnt) + right(Tcnt) - shared_count > np.diagonal(Kcnt, m - 1)[:, None]
        cost = left(best) + right(best) + left(Tsize) / shared_size * right(Tsize) * (1 + summed)
        pick = cost.argmin(1)
        best[i, i + m - 1] = cost[i, pick]
        split[i, i + m - 1] = i + pick

    stack, done = [(0, n - 1, False)], []
    while stack:  # the tree, without recursion: chains may be deeper than Python's recursion limit
        a, b, merge = stack.pop()
        if a == b:
            done.append(leaf_trees[a])
        elif merge:
            right_, left_ = done.pop(), done.pop()
            done.append((left_, right_))
        else:
            s = int(split[a, b])
            stack += [(a, b, True), (s + 1, b, False), (a, s, False)]
    root = done[0]
    for p in rest:
        root = (root, p)
    return _tree_to_path(root, len(net.terms))


def _band(a: np.ndarray, offset: int, steps: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """A strided view of the C-contiguous ``a``: element [r, c] is ``a.flat[offset + r*steps[0] + c*steps[1]]``
    (numpy checks it stays inside ``a``)."""
    k = a.itemsize
    return np.ndarray(shape, a.dtype, buffer=a, offset=offset * k, strides=(steps[0] * k, steps[1] * k))


def _subset_dp(terms: list[str], needed: set, sizes: dict) -> tuple[int, object]:
    """(FLOPs, pair tree over local positions) contracting ``terms`` down to the labels ``needed``
    keeps: exact over subsets with opt_einsum's cost; a plain fold beyond 8 operands."""
    n = len(terms)
    if n > 8:
        tree = 0
        for p in range(1, n):
            tree = (tree, p)
        return 0, tree
    full = (1 << n) - 1
    labels_of = {}
    for mask in range(1, full + 1):
        inside = set().union(*(terms[p] for p in range(n) if mask >> p & 1))
        outside = set().union(*(terms[p] for p in range(n) if not mask >> p & 1))
        labels_of[mask] = inside if mask & (mask - 1) == 0 else inside & (needed | outside)
    best: dict[int, tuple[int, object]] = {1 << p: (0, p) for p in range(n)}
    for mask in sorted(range(1, full + 1), key=lambda m: bin(m).count("1")):
        if mask in best:
            continue
        options = []
        sub = (mask - 1) & mask
        while sub:
            other = mask ^ sub
            if sub < other:
                union = labels_of[sub] | labels_of[other]
                flops = math.prod(sizes[l] for l in union) * (2 if union - labels_of[mask] else 1)
                options.append((best[sub][0] + best[other][0] + flops, (best[sub][1], best[other][1])))
            sub = (sub - 1) & mask
        best[mask] = min(options, key=lambda o: o[0])
    return best[full]


def _map_tree(tree, positions):
    if isinstance(tree, int):
        return positions[tree]
    return _map_tree(tree[0], positions), _map_tree(tree[1], positions)


def bracket(net: Network):
    """Jacobian chain bracketing (Naumann): dynamic programming over the links with dense
    products, tangent sweeps and adjoint sweeps of sub-chains, costed as if every link were a
    dense matrix (products) or a matrix-free operator (sweeps); the winner runs as a path."""
    return bracket_plan(net)[0]


def bracket_plan(net: Network) -> tuple[tuple, int, str]:
    """(path, model FLOPs, the bracketing written out) for a network with link groups."""
    links = [l for l in net.links if l[0]]  # links with operands; relabel-only links cost nothing
    if len(links) < 2:
        return optimal(net), 0, "one link"
    sizes = net.sizes
    m = lambda labels: math.prod(sizes.get(l, 1) for l in labels)
    L = len(links)
    # links[0] is at the output end; index them from the input end: chain[k] maps dims[k] -> dims[k+1]
    chain = links[::-1]
    dims = [m(chain[0][2])] + [m(c[1]) for c in chain]
    vec = [_vector_cost(net, c) for c in chain]
    best: dict[tuple[int, int], tuple[int, tuple]] = {}
    for span in range(1, L + 1):
        for i in range(0, L - span + 1):
            j = i + span - 1
            sweep = sum(vec[i:j + 1])
            options = [(dims[i] * sweep, ("tangent", i, j)), (dims[j + 1] * sweep, ("adjoint", i, j))]
            if span == 1:
                options.append((0, ("link", i, i)))
            for s in range(i, j):
                c = best[(i, s)][0] + best[(s + 1, j)][0] + 2 * dims[j + 1] * dims[s + 1] * dims[i]
                options.append((c, ("split", i, j, s)))
            best[(i, j)] = min(options, key=lambda o: o[0])

    def tree(i, j):
        kind = best[(i, j)][1]
        if kind[0] == "split":
            return (tree(i, kind[3]), tree(kind[3] + 1, j))
        groups = [list(chain[k][0]) for k in range(i, j + 1)]
        if kind[0] == "adjoint":
            groups = groups[::-1]
        node = _fold_tree(groups[0])
        for g in groups[1:]:
            node = (node, _fold_tree(g))
        return node

    def text(i, j):
        kind = best[(i, j)][1]
        if kind[0] == "split":
            return f"({text(kind[3] + 1, j)})({text(i, kind[3])})"
        names = " ".join(f"J{k + 1}" for k in range(j, i - 1, -1))
        return {"link": names, "tangent": f"tangent[{names}]", "adjoint": f"adjoint[{names}]"}[kind[0]]

    root = tree(0, L - 1)
    used = {p for c in chain for p in c[0]}
    for p in range(len(net.terms)):  # the rest (ones-factors) last
        if p not in used:
            root = (root, p)
    return _tree_to_path(root, len(net.terms)), best[(0, L - 1)][0], text(0, L - 1)


def _fold_tree(positions):
    node = positions[0]
    for p in positions[1:]:
        node = (node, p)
    return node


def _tree_to_path(root, n: int) -> tuple:
    """A nested pair tree over operand positions to an opt_einsum (linear) path."""
    ssa, ids = [], {}
    stack = [(root, False)]
    while stack:  # post-order without recursion: a fold's tree is as deep as the chain is long
        node, merge = stack.pop()
        if isinstance(node, int):
            continue
        if merge:
            ssa.append(tuple(x if isinstance(x, int) else ids[id(x)] for x in node))
            ids[id(node)] = n + len(ssa) - 1
        else:
            stack += [(node, True), (node[1], False), (node[0], False)]
    if not ssa:
        return ((0,),)
    return tuple(tuple(p) for p in oe.paths.ssa_to_linear(ssa))


def _vector_cost(net: Network, link) -> int:
    """FLOPs of applying one link to one vector (its matrix-free JVP or VJP)."""
    positions, out, inp = link
    terms = tuple(net.terms[p] for p in positions) + ("".join(inp),)
    shapes = tuple(net.shapes[p] for p in positions) + (tuple(net.sizes.get(l, 1) for l in inp),)
    output = "".join(dict.fromkeys(out))
    if not set(output) <= set("".join(terms)):
        return math.prod(net.sizes.get(l, 1) for l in out)
    return Network(terms, shapes, output).cost("optimal").flops


ORDERS: dict[str, Callable[[Network], tuple]] = {
    "forward": forward, "reverse": reverse, "optimal": optimal, "bracket": bracket,
    "markowitz": optimal}  # on a branching graph, a vertex-elimination order (jacobians.elimination)


def resolve_order(order) -> Callable[[Network], tuple]:
    """A named order, or an explicit opt_einsum path (a list of position tuples).

    An elimination order (:class:`jacobians.elimination.Elimination`) orders a graph's
    vertices; its networks take the optimal path."""
    if getattr(order, "is_elimination", False):
        return optimal
    if isinstance(order, str):
        try:
            return ORDERS[order]
        except KeyError:
            raise ValueError(f"unknown order {order!r}; valid options are {', '.join(map(repr, ORDERS))} "
                             f"or an explicit contraction path such as [(0, 1), (0, 1)]") from None
    try:
        path = tuple(tuple(int(i) for i in step) for step in order)
    except TypeError:
        raise ValueError(f"order must be one of {', '.join(map(repr, ORDERS))} or a list of position "
                         f"tuples; got {order!r}") from None

    def explicit(net: Network):
        _check_path(net, path)
        return path
    return explicit


def _check_path(net: Network, path) -> None:
    live = len(net.terms)
    for step in path:
        if len(set(step)) != len(step) or any(not 0 <= i < live for i in step) or not step:
            raise ValueError(f"explicit path {list(path)} is not valid for a network of {len(net.terms)} "
                             f"operands ({net.eq}): step {step} refers to positions outside 0..{live - 1}")
        live -= len(step) - 1
    if live != 1:
        raise ValueError(f"explicit path {list(path)} leaves {live} operands of {net.eq} uncontracted")


@functools.lru_cache(maxsize=4096)
def _cost_cached(eq: str, shapes: tuple, path: tuple) -> Cost:
    if len(shapes) == 1:
        return Cost(math.prod(shapes[0]), math.prod(shapes[0]), path)
    _, info = oe.contract_path(eq, *shapes, shapes=True, optimize=[tuple(p) for p in path])
    return Cost(int(info.opt_cost), int(info.largest_intermediate), path)


def _cost(net: Network, path) -> Cost:
    if not net.terms:
        return Cost(0, math.prod(net.sizes.get(l, 1) for l in net.output), ())
    return _cost_cached(net.eq, net.shapes, tuple(tuple(p) for p in path))


# ---------------------------------------------------------------- execution

def _dtype(a) -> np.dtype:
    """A backend array's dtype as numpy's (``torch.float64`` -> ``float64``)."""
    return np.dtype(str(a.dtype).rpartition(".")[2])


def _sum_out(a, ta: str, keep: set, xp=_numpy) -> tuple:
    drop = tuple(i for i, l in enumerate(ta) if l not in keep)
    if drop:
        a = xp.sum(a, drop)
        ta = "".join(l for l in ta if l in keep)
    return a, ta


def contract_pair(a, ta: str, b, tb: str, keep: set, final: str = "", xp=_numpy) -> tuple:
    """``einsum(ta, tb -> kept labels)`` as one (batched) GEMM or one broadcast product (on backend ``xp``).

    A broadcast product lays its result out in the order of ``final`` (the network's output),
    the labels still to be summed last, so that the next GEMM reads them contiguously and
    the last step needs no transpose.
    """
    a, ta = _sum_out(a, ta, keep | set(tb), xp)
    b, tb = _sum_out(b, tb, keep | set(ta), xp)
    batch = [l for l in ta if l in tb and l in keep]
    inner = [l for l in ta if l in tb and l not in keep]
    left = [l for l in ta if l not in tb]
    right = [l for l in tb if l not in ta]
    sa = dict(zip(ta, a.shape))
    sb = dict(zip(tb, b.shape))
    if not inner:
        rank = {l: (0, final.index(l)) if l in final else (1, k) for k, l in enumerate(left + right + batch)}
        out = sorted(left + right + batch, key=rank.__getitem__)
        return xp.multiply(aligned(a, ta, out, xp), aligned(b, tb, out, xp)), "".join(out)
    nb = math.prod(sa[l] for l in batch)
    nl = math.prod(sa[l] for l in left)
    nk = math.prod(sa[l] for l in inner)
    nr = math.prod(sb[l] for l in right)
    first = lambda labels: min([final.index(l) for l in labels if l in final] + [len(final)])
    skinny = nb == 1 and set(batch + left + right) != set(final) and max(nl, nr) >= 4 * min(nl, nr)
    if (nl >= 4 * nr) if skinny else first(right) < first(left):
        # rows from the operand holding the earlier output labels (no transpose afterwards),
        # except for a skinny intermediate: narrow side as rows (BLAS runs it faster that way)
        return contract_pair(b, tb, a, ta, keep, final, xp)
    A = xp.reshape(_arrange(a, ta, batch + left + inner, xp), (nb, nl, nk))
    B = xp.reshape(_arrange(b, tb, batch + inner + right, xp), (nb, nk, nr))
    out = batch + left + right
    C = xp.matmul(A[0], B[0]) if nb == 1 else xp.matmul(A, B)
    return xp.reshape(C, [sa.get(l) or sb[l] for l in out]), "".join(out)


def aligned(a, ta: str, out: list[str], xp=_numpy):
    """A view of ``a`` with its axes in ``out`` order and size-1 axes where it lacks a label."""
    v = _arrange(a, ta, [l for l in out if l in ta], xp)
    return xp.reshape(v, [a.shape[ta.index(l)] if l in ta else 1 for l in out])


def _arrange(a, ta: str, order: list[str], xp=_numpy):
    perm = [ta.index(l) for l in order]
    return a if perm == list(range(a.ndim)) else xp.transpose(a, perm)
