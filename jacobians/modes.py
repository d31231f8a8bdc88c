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
from .limits import check_bytes

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
    """d output / d ``wrt`` by JVPs (``mode="jvp"``) or VJPs (``mode="vjp"``)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid options are {', '.join(map(repr, MODES))}")
    x, y = graph.inputs[wrt], graph.output
    if y is None:  # f returned a constant: no node to sweep through, the Jacobian is zero
        xs, ys = np.shape(graph.nodes[x].value), np.shape(graph.constant_output)
        lead = xs[:1] if per_sample and ys[:1] == xs[:1] else ()
        J = np.zeros(ys + xs[len(lead):], dtype=np.result_type(graph.nodes[x].value, np.float32))
        return Sweep(J, 0, 0, 0, 1)
    xs, ys = np.shape(graph.nodes[x].value), np.shape(graph.nodes[y].value)
    dtype = np.result_type(graph.nodes[x].value, np.float32)
    rel = graph.between({x})
    lead = (xs[0],) if per_sample else ()
    x_axes, y_axes = (xs[1:], ys[1:]) if per_sample else (xs, ys)
    n, m = math.prod(x_axes), math.prod(y_axes)
    vectors = n if mode == "jvp" else m
    widest = max([math.prod(np.shape(graph.nodes[i].value)) for i in rel] + [1])
    chunk = max(1, min(vectors, chunk_bytes // max(1, widest * dtype.itemsize)))
    check_bytes(widest * chunk * dtype.itemsize, f"a {mode} block of {chunk} vectors")
    J = np.zeros(lead + (m, n), dtype=dtype)
    factors = {}
    order = sorted(rel)
    total, largest = 0, 0
    for start in range(0, vectors, chunk):
        k = min(chunk, vectors - start)
        basis = np.eye(vectors, dtype=dtype)[:, start:start + k]
        if mode == "jvp":
            seed = np.broadcast_to(basis.reshape(x_axes + (k,)), lead + x_axes + (k,))
            vals = {x: seed}
            for i in order:
                for kk, p in graph.nodes[i].parents():
                    if p in vals and i != x:
                        v, eq, shapes = _factor(graph, factors, i, kk).product(vals[p], "in")
                        vals[i] = vals[i] + v if i in vals else v
                        total += _flops(eq, shapes)
                        largest = max(largest, v.size)
            out = vals.get(y)
            cols = out.reshape(lead + (m, k)) if out is not None else 0
            J[..., start:start + k] = cols
        else:
            seed = np.broadcast_to(basis.reshape(y_axes + (k,)), lead + y_axes + (k,))
            vals = {y: seed}
            for i in reversed(order):
                if i not in vals or i == x:
                    continue
                for kk, p in graph.nodes[i].parents():
                    if p in rel:
                        v, eq, shapes = _factor(graph, factors, i, kk).product(vals[i], "out")
                        vals[p] = vals[p] + v if p in vals else v
                        total += _flops(eq, shapes)
                        largest = max(largest, v.size)
            back = vals.get(x)
            if back is not None:
                rows = back.reshape(lead + (n, k))
                J[..., start:start + k, :] = np.swapaxes(rows, -1, -2)
    return Sweep(J.reshape(lead + y_axes + x_axes), total, largest, vectors, chunk)


def _factor(graph: Graph, cache: dict, node: int, k: int):
    if (node, k) not in cache:
        cache[(node, k)] = graph.nodes[node].builders[k]()
    return cache[(node, k)]
