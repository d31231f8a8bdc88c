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

Index maps (slices, gathers, pads, convolution windows, pooling argmaxes) stay maps: an op's form
with maps is a :class:`~jacobians.second.Mapped` term, and linking a tangent stack into it
(:func:`link_any`) contracts the stack's term to one array and *gathers* it through the maps
(:func:`jacobians.indexmaps.gather`), O(result) reads; a delta of the stack on an axis a map reads
is the one thing written out (as an identity over that axis), never the map's 0/1 tensor.

The Hessian of ``x^T A x`` is two terms, ``A[i,j]`` and ``A[j,i]``: O(n^2), as the result.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from .factored import Factored
from .graph import Graph
from .indexmaps import gather
from .labels import fresh, lead
from .limits import JacobianTooLarge, check_bytes
from .products import active, output_value, site
from .second import Mapped, rule_for, second_order
from .terms import Term, accumulate, canonical, compact, from_factored, identity, link

__all__ = ["hessian", "form", "link_any", "link_pair"]


def form(f: Factored) -> Term | Mapped:
    """An op's first-order form as a term over ``(out, in)``; with maps, a :class:`Mapped` on group 1."""
    if not f.maps:
        return from_factored(f)
    return Mapped(Term((f.out, f.inp), tuple((s, np.asarray(a)) for s, a in f.terms), f.sizes), f.maps, 1)


def link_any(outer: Term | Mapped, g: int, inner: Term) -> Term:
    """:func:`~jacobians.terms.link` for a term that may hold index maps (on group ``g`` only)."""
    if not isinstance(outer, Mapped):
        return link(outer, g, inner)
    if outer.group != g:
        raise AssertionError(f"link_any: the maps read group {outer.group}, not group {g}")
    T, maps = outer.term, outer.maps
    A, A2 = T.groups[g], inner.groups[0]
    if tuple(T.sizes[l] for l in A) != tuple(inner.sizes[l] for l in A2):
        raise AssertionError(f"link_any: shapes {T.shape(g)} and {inner.shape(0)} differ")
    m = dict(zip(A2, A))
    new = fresh(T.labels() | set(T.sizes) | inner.labels() | set("".join(mp.labels for mp in maps)))
    for l in sorted(inner.labels()):
        if l not in m:
            m[l] = next(new)
    rename = lambda s: "".join(m[l] for l in s)
    groups_in = [rename(s) for s in inner.groups[1:]]
    ops = [(rename(s), a) for s, a in inner.operands]
    sizes = {**T.sizes, **{m[l]: n for l, n in inner.sizes.items() if l in m}}
    dtype = inner.dtype
    read = "".join(mp.inp for mp in maps)
    for l in read:     # a delta between a read axis and the stack's own axes: written out (an identity)
        if any(l in s for s in groups_in):
            l2 = next(new)
            sizes[l2] = sizes[l]
            groups_in = [s.replace(l, l2) for s in groups_in]
            ops.append((l + l2, np.eye(sizes[l], dtype=dtype)))
    carried = set("".join(s for s, _ in ops))
    others = set("".join(T.groups[:g] + T.groups[g + 1:])) | set("".join(s for s, _ in T.operands))
    keep = "".join(l for l in dict.fromkeys("".join(groups_in) + A)
                   if l in read or (l in carried and (l not in A or l in others)))
    missing = "".join(l for l in read if l not in carried)
    if missing:
        ops.append((missing, np.ones([sizes[l] for l in missing], dtype=dtype)))
    arr = compact(Term((keep,), tuple(ops), sizes), force=True).operands
    arr, labels = (arr[0][1], arr[0][0]) if arr else (np.ones((), dtype=dtype), "")
    for mp in maps:
        arr, labels = gather(mp, np.asarray(arr), labels)
    groups = T.groups[:g] + tuple(groups_in) + T.groups[g + 1:]
    operands = T.operands + ((labels, arr),)
    live, have = set("".join(groups)), set("".join(s for s, _ in operands))
    scale = math.prod(sizes[l] for l in A if l not in live and l not in have and l not in read)
    if scale != 1:
        operands += (("", np.array(scale, dtype=dtype)),)
    return Term(groups, operands, sizes)


def link_pair(d: Term | Mapped, s: Term, r: Term) -> Term:
    """A second derivative over ``(y, a_k, a_l)`` with ``s`` linked into group 1 and ``r`` into group 2
    (the mapped group first: a Mapped term links its maps before anything else)."""
    if isinstance(d, Mapped) and d.group == 2:
        return link(link_any(d, 2, r), 1, s)
    return link(link_any(d, 1, s), 2, r)


MERGE_AT = 3   # a list of more terms than this is written as one array per delta pattern


def _merge(terms: list[Term]) -> list[Term]:
    """Terms of one delta pattern added into one array once the list grows past ``MERGE_AT``
    (paths that meet: skip connections would otherwise double the terms at every block).
    A pattern whose array would pass the memory limit stays a list of lazy terms."""
    if len(terms) <= MERGE_AT:
        return terms
    try:
        flat = [canonical(t if t.operands else Term(t.groups, (("", np.ones((), dtype=t.dtype)),), t.sizes))
                for t in terms]   # a term of deltas and ones only (of 0-d values too) gets one operand
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
        forms = {k: form(node.builders[k]()) for k, _ in links}
        Jy, Hy = defaultdict(list), defaultdict(list)
        for k, a in links:
            for p, terms in J[a].items() if i != graph.output else ():   # the output's J is not needed
                Jy[p] += [compact(link_any(forms[k], 1, t)) for t in terms]
            for pq, terms in H[a].items():
                Hy[pq] += [compact(link_any(forms[k], 1, t)) for t in terms]
        parent = dict(links)
        for (k, l), d2 in second_order(site(graph, i)).items():
            if k not in parent or l not in parent:
                continue
            for p, tk in J[parent[k]].items():
                for q, tl in J[parent[l]].items():
                    Hy[p, q] += [compact(link_pair(d, s, r)) for d in d2 for s in tk for r in tl]
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
