"""Explicit Hessians of one traced graph: forward propagation of factored first and second derivatives.

For every node ``v`` on a path from the inputs to the output, in topological order, two lists
of :class:`~jacobians.terms.Term` s: ``J_v[p]`` over ``(v, x_p)`` and ``H_v[p, q]`` over
``(v, x_p, x_q)``.  At ``y = op(a_1, ..., a_n)`` (Faa di Bruno)::

    J_y[p]    = sum_k  J_op,k . J_ak[p]
    H_y[p, q] = sum_k  J_op,k . H_ak[p, q]  +  sum_{k,l}  d2y/da_k da_l [J_ak[p], J_al[q]]

each product a :func:`~jacobians.terms.link` of factored forms: deltas merge labels (an input's
own Jacobian is all deltas; a per-sample batch stays one label, never ``(B, .., B, ..)``), and a
term is contracted to one array only while that array is no larger than its operands, so
``H_y`` of a per-sample loss stays the network ``f''[n] X[n,i] X[n,j]`` until a reduction makes it
small (the Hessian of a mean loss is then one GEMM).  The output's terms are written into the
explicit tensor (sized against the memory limit first), deltas as strided diagonals.

The Hessian of ``x^T A x`` is two terms, ``A[i,j]`` and ``A[j,i]``: O(n^2), as the result.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from .graph import Graph
from .labels import lead
from .limits import JacobianTooLarge, check_bytes
from .products import active, output_value, site
from .second import rule_for, second_order
from .terms import Term, accumulate, canonical, compact, from_factored, identity, link

__all__ = ["hessian"]


MERGE_AT = 3   # a list of more terms than this is written as one array per delta pattern


def _merge(terms: list[Term]) -> list[Term]:
    """Terms of one delta pattern added into one array once the list grows past ``MERGE_AT``
    (paths that meet: skip connections would otherwise double the terms at every block).
    A pattern whose array would pass the memory limit stays a list of lazy terms."""
    if len(terms) <= MERGE_AT:
        return terms
    try:
        flat = [canonical(t) for t in terms]
    except JacobianTooLarge:
        return terms
    out: dict = {}
    for t in flat:
        if t.groups in out:
            s, a = out[t.groups].operands[0]
            out[t.groups] = Term(t.groups, ((s, a + t.operands[0][1]),), t.sizes)
        else:
            out[t.groups] = t
    return list(out.values())


def hessian(graph: Graph, wrt: list[str], batched: str | None) -> dict[tuple[str, str], np.ndarray]:
    """Every block ``d2 out / d wrt_p d wrt_q``: shape ``out + in_p + in_q``; per-sample (the batch
    kept once) for the ``batched`` argument where the output's axis 0 is tied to it in every term."""
    J: dict[int, dict] = {}
    H: dict[int, dict] = {}
    for p in wrt:
        i = graph.inputs[p]
        x = graph.nodes[i].value
        J[i], H[i] = {p: [identity(x.shape, lead(x.ndim))]}, {}
    for i in active(graph, wrt):
        node = graph.nodes[i]
        if node.op is None:
            continue
        links = [(k, a) for k, a in node.parents() if a in J and node.builders[k] is not None]
        if not links:
            continue
        rule_for(node.op.name)   # an op without a second-order rule is named before its forms are read
        forms = {k: from_factored(node.builders[k]()) for k, _ in links}
        Jy, Hy = defaultdict(list), defaultdict(list)
        for k, a in links:
            for p, terms in J[a].items() if i != graph.output else ():   # the output's J is not needed
                Jy[p] += [compact(link(forms[k], 1, t)) for t in terms]
            for pq, terms in H[a].items():
                Hy[pq] += [compact(link(forms[k], 1, t)) for t in terms]
        parent = dict(links)
        for (k, l), d2 in second_order(site(graph, i)).items():
            if k not in parent or l not in parent:
                continue
            for p, tk in J[parent[k]].items():
                for q, tl in J[parent[l]].items():
                    Hy[p, q] += [compact(link(link(d, 1, s), 2, r)) for d in d2 for s in tk for r in tl]
        J[i] = {p: _merge(t) for p, t in Jy.items()}
        H[i] = {pq: _merge(t) for pq, t in Hy.items()}
    y = output_value(graph)
    blocks = H.get(graph.output, {}) if graph.output is not None else {}
    dtype = np.result_type(y, np.float32)
    results = {}
    for p in wrt:
        for q in wrt:
            results[p, q] = _dense(blocks.get((p, q), []), y.shape, graph, (p, q), batched, dtype)
    return results


def _dense(terms: list[Term], out_shape: tuple, graph: Graph, pq: tuple[str, str], batched, dtype) -> np.ndarray:
    shapes = [graph.nodes[graph.inputs[w]].value.shape for w in pq]
    collapse = [w == batched and len(out_shape) > 0 and len(s) > 0 and s[0] == out_shape[0]
                and all(t.groups[g + 1][:1] == t.groups[0][:1] for t in terms)
                for g, (w, s) in enumerate(zip(pq, shapes))]
    shape = tuple(out_shape) + sum((s[1:] if c else s for s, c in zip(shapes, collapse)), ())
    what = f"hessian: the Hessian w.r.t. ({pq[0]}, {pq[1]})"
    check_bytes(math.prod(shape) * np.dtype(dtype).itemsize, what, shape)
    axes = [list(t.groups[0]) + [l for g, c in zip(t.groups[1:], collapse) for l in (g[1:] if c else g)]
            for t in terms]
    first = bool(terms) and len(set(axes[0])) == len(shape)     # no delta: the first term covers every entry
    target = (np.empty if first else np.zeros)(shape, dtype=dtype)
    for k, (t, a) in enumerate(zip(terms, axes)):
        accumulate(target, t, a, assign=first and k == 0)
    return target
