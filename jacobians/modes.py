"""Matrix-free modes: a Jacobian built column by column (JVPs) or row by row (VJPs).

This is CS182's Algorithm 1 and what ``jacfwd`` / ``jacrev`` do: push the n
input basis vectors forward through every op's JVP, or pull the m output basis
vectors back through every op's VJP.  Both products come from the ops'
factored forms (:meth:`jacobians.factored.Factored.product`), so a delta still
costs nothing; what the sweeps cannot do is reorder the chain.  Basis vectors
travel in chunks sized to a memory budget; FLOPs are counted per contraction
(opt_einsum's convention: a multiply-add is 2) and do not depend on the chunking.
With ``per_sample`` the basis runs over one sample's axes and every sample is
pushed at once (``vmap(jacfwd)``); that is only valid where samples are independent.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import opt_einsum as oe

from .graph import Graph
from .limits import check_bytes, memory_limit

__all__ = ["Sweep", "sweep_jacobian", "MODES"]

MODES = ("jvp", "vjp")


@dataclass
class Sweep:
    jacobian: np.ndarray
    flops: int
    largest_intermediate: int   # elements of the largest tangent/cotangent block
    vectors: int                # how many basis vectors were pushed
    chunk: int


@functools.lru_cache(maxsize=4096)
def _flops(eq: str, shapes: tuple) -> int:
    if len(shapes) == 1:
        return math.prod(shapes[0])
    # the path Factored.product runs: oe.contract's default
    return int(oe.contract_path(eq, *shapes, shapes=True)[1].opt_cost)


def sweep_jacobian(graph: Graph, wrt: str, mode: str, per_sample: bool = False,
                   chunk_bytes: int = 64 << 20) -> Sweep:
    """d output / d ``wrt`` by JVPs (``mode="jvp"``) or VJPs (``mode="vjp"``).

    Memory is sized from shapes before anything is allocated: the result ``J``, then per basis
    vector the chunk's basis columns and the tangent (cotangent) blocks alive at the sweep's
    widest step, each block freed after its last use.  Chunks hold as many vectors as fit in
    ``chunk_bytes`` and in the memory limit left beside ``J`` and the ops' factors;
    :class:`~jacobians.limits.JacobianTooLarge` is raised before the first allocation when
    ``J`` does not fit, or before ``J`` is allocated when not even one vector fits beside it.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid options are {', '.join(map(repr, MODES))}")
    x, y = graph.inputs[wrt], graph.output
    if y is None:  # f returned a constant: no node to sweep through, the Jacobian is zero
        xs, ys = np.shape(graph.nodes[x].value), np.shape(graph.constant_output)
        lead = xs[:1] if per_sample and ys[:1] == xs[:1] else ()
        dtype = np.result_type(graph.nodes[x].value, np.float32)
        shape = ys + xs[len(lead):]
        check_bytes(math.prod(shape) * dtype.itemsize, "the Jacobian", shape)
        return Sweep(np.zeros(shape, dtype=dtype), 0, 0, 0, 1)
    xs, ys = np.shape(graph.nodes[x].value), np.shape(graph.nodes[y].value)
    dtype = np.result_type(graph.nodes[x].value, np.float32)
    itemsize = dtype.itemsize
    rel = graph.between({x})
    lead = (xs[0],) if per_sample else ()
    x_axes, y_axes = (xs[1:], ys[1:]) if per_sample else (xs, ys)
    n, m = math.prod(x_axes), math.prod(y_axes)
    vectors = n if mode == "jvp" else m
    J_bytes = math.prod(lead + (m, n)) * itemsize
    check_bytes(J_bytes, "the Jacobian", lead + y_axes + x_axes)
    order = sorted(rel)
    edges = [(i, kk, p) for i in order if i != x for kk, p in graph.nodes[i].parents() if p in rel]
    factors = {(i, kk): graph.nodes[i].builders[kk]() for i, kk, _ in edges}
    factor_bytes = sum(a.nbytes for f in factors.values() for _, a in f.terms
                       if isinstance(a, np.ndarray) and a.base is None) + \
        sum(m.index.nbytes for f in factors.values() for m in f.maps)
    width = {i: math.prod(np.shape(graph.nodes[i].value)) for i in rel}
    per_vector = vectors + _widest_step(mode, order, edges, width, x, y)   # elements per basis vector
    room = memory_limit() - J_bytes - factor_bytes
    chunk = min(vectors, chunk_bytes // (per_vector * itemsize), max(room, 0) // (per_vector * itemsize))
    if chunk < 1:
        check_bytes(J_bytes + factor_bytes + per_vector * itemsize,
                    f"the Jacobian {lead + y_axes + x_axes} and a {mode} block of one vector",
                    hint="use a smaller batch or fewer outputs, or raise the limit with jacobians.set_memory_limit")
        chunk = 1  # only chunk_bytes is too small: one vector at a time
    J = np.zeros(lead + (m, n), dtype=dtype)
    last_use = {}
    for i, _, p in edges:
        last_use[p] = i
    total, largest = 0, 0
    for start in range(0, vectors, chunk):
        k = min(chunk, vectors - start)
        basis = np.zeros((vectors, k), dtype=dtype)       # the chunk's columns of the identity, no more
        basis[start + np.arange(k), np.arange(k)] = 1
        if mode == "jvp":
            vals = {x: np.broadcast_to(basis.reshape(x_axes + (k,)), lead + x_axes + (k,))}
            for i in order:
                if i == x:
                    continue
                for kk, p in graph.nodes[i].parents():
                    if p in vals:
                        v, eq, shapes = factors[(i, kk)].product(vals[p], "in")
                        vals[i] = vals[i] + v if i in vals else v
                        total += _flops(eq, shapes)
                        largest = max(largest, v.size)
                for _, p in graph.nodes[i].parents():
                    if last_use.get(p) == i and p != y:
                        vals.pop(p, None)
            out = vals.get(y)
            J[..., start:start + k] = out.reshape(lead + (m, k)) if out is not None else 0
        else:
            vals = {y: np.broadcast_to(basis.reshape(y_axes + (k,)), lead + y_axes + (k,))}
            for i in reversed(order):
                if i not in vals or i == x:
                    continue
                for kk, p in graph.nodes[i].parents():
                    if p in rel:
                        v, eq, shapes = factors[(i, kk)].product(vals[i], "out")
                        vals[p] = vals[p] + v if p in vals else v
                        total += _flops(eq, shapes)
                        largest = max(largest, v.size)
                del vals[i]  # pushed to every parent: no longer needed
            back = vals.get(x)
            if back is not None:
                J[..., start:start + k, :] = np.swapaxes(back.reshape(lead + (n, k)), -1, -2)
        del vals, basis
    return Sweep(J.reshape(lead + y_axes + x_axes), total, largest, vectors, chunk)


def _widest_step(mode: str, order: list[int], edges: list, width: dict, x: int, y: int) -> int:
    """Elements per basis vector alive at the sweep's widest moment, blocks freed after their last
    use: the blocks held, plus at a product its result and one temporary of the same width
    (opt_einsum's pairwise steps), plus the new sum where a block accumulates several products,
    plus a copy of the final block when it is reshaped into ``J``."""
    parents: dict[int, list[int]] = {}
    for i, _, p in edges:
        parents.setdefault(i, []).append(p)
    held: dict[int, int] = {}   # node -> width of its block (the seed is a view of the basis: 0)
    peak = 0
    if mode == "jvp":
        last_use = {p: i for i, _, p in edges}
        held[x] = 0
        for i in order:
            if i == x:
                continue
            for p in parents.get(i, []):
                if p in held:
                    peak = max(peak, sum(held.values()) + 2 * width[i] + (width[i] if i in held else 0))
                    held[i] = width[i]
            for p in parents.get(i, []):
                if last_use.get(p) == i and p != y:
                    held.pop(p, None)
        end = width[y]
    else:
        held[y] = 0
        for i in reversed(order):
            if i not in held or i == x:
                continue
            for p in parents.get(i, []):
                peak = max(peak, sum(held.values()) + 2 * width[p] + (width[p] if p in held else 0))
                held[p] = width[p]
            del held[i]
        end = width[x]
    return max(peak, sum(held.values()) + end, 1)
