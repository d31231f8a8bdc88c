"""Matrix-free sweeps over one traced graph: J v, u^T J and H v, never forming J or H.

* :func:`jvp`: one forward sweep; each link applies its op's :meth:`Factored.product` to the
  tangent (a delta costs nothing), tangents summed where paths meet.
* :func:`vjp`: one reverse sweep with the cotangent, summed where a value fans out.
* :func:`hvp`: forward-over-reverse: a tangent sweep, then a reverse sweep carrying each node's
  adjoint and the adjoint's tangent; at each op the tangent of ``J^T u`` gains the second-order
  rule (:mod:`jacobians.second`) contracted with the adjoint and the argument tangents.

Only the nodes on a path from a ``wrt`` input to the output are visited.  Index maps are gathers on
the way in and scatter-adds on the way out (:meth:`Factored.product`), never dense 0/1 tensors; a
second-order term with maps (a convolution's cross term) is contracted by :func:`contract_any`.
"""

from __future__ import annotations

import numpy as np

from .factored import Factored
from .graph import Graph
from .indexmaps import gather
from .second import Mapped, Site, rule_for, second_order
from .terms import Term, contract_groups

__all__ = ["jvp", "vjp", "hvp", "site", "active", "contract_any"]


def site(graph: Graph, i: int) -> Site:
    """Node ``i`` as an op application (its argument values, parameters, value and builders)."""
    node = graph.nodes[i]
    arrays = {name: graph.nodes[a].value if isinstance(a, int) else (None if a is None else a[1])
              for name, a in zip(node.op.arrays, node.args)}
    return Site(node.op, arrays, node.params, node.value, node.builders)


def active(graph: Graph, wrt: list[str]) -> list[int]:
    """The nodes on a path from one of ``wrt`` to the output, in topological order."""
    if graph.output is None:
        return []
    return sorted(graph.between({graph.inputs[w] for w in wrt}))


def _links(graph: Graph, i: int, have) -> list[tuple[int, int]]:
    """(argument position, parent node) for the differentiable parents of node i found in ``have``."""
    node = graph.nodes[i]
    return [(k, a) for k, a in node.parents() if a in have and node.builders[k] is not None]


def _apply(f, v, side):
    return f.product(v[..., None], side)[0][..., 0]


def contract_any(term: Term | Mapped, given: dict[int, np.ndarray], keep: int) -> np.ndarray:
    """:func:`~jacobians.terms.contract_groups` for a term that may hold index maps: a given array on
    the mapped group is gathered through the maps first; when the mapped group is the one kept, the
    other given arrays become operands of a :class:`Factored` whose cotangent product scatters
    (``given`` must then hold group 0)."""
    if not isinstance(term, Mapped):
        return contract_groups(term, given, keep)
    T, maps, g = term
    if g in given:
        arr, labels = np.asarray(given[g]), T.groups[g]
        for m in maps:
            arr, labels = gather(m, arr, labels)
        rest = {h: v for h, v in given.items() if h != g}
        return contract_groups(Term(T.groups, T.operands + ((labels, arr),), T.sizes), rest, keep)
    if g != keep or 0 not in given:
        raise AssertionError(f"contract_any: maps on group {g}, keep {keep}, given {sorted(given)}")
    ops = T.operands + tuple((T.groups[h], np.asarray(v)) for h, v in given.items() if h != 0)
    f = Factored(T.groups[0], T.groups[g], T.shape(0), T.shape(g), ops, maps=maps)
    return _apply(f, np.asarray(given[0]), "out")


def output_value(graph: Graph) -> np.ndarray:
    return graph.constant_output if graph.output is None else graph.nodes[graph.output].value


def _tangent_sweep(graph: Graph, tangents: dict[str, np.ndarray], order: list[int]) -> dict[int, np.ndarray]:
    """Every active node's tangent, pushed forward from the ``wrt`` inputs' tangents (by name)."""
    t = {graph.inputs[w]: v for w, v in tangents.items()}
    for i in order:
        if i in t:
            continue
        node, acc = graph.nodes[i], None
        for k, a in _links(graph, i, t):
            d = _apply(node.builders[k](), t[a], "in")
            acc = d if acc is None else acc + d
        if acc is not None:
            t[i] = acc
    return t


def jvp(graph: Graph, tangents: dict[str, np.ndarray]) -> np.ndarray:
    """J v for the tangents of the ``wrt`` inputs (by name): the output's tangent."""
    t = _tangent_sweep(graph, tangents, active(graph, list(tangents)))
    y = output_value(graph)
    return t.get(graph.output, np.zeros(np.shape(y), dtype=np.result_type(y, np.float32)))


def vjp(graph: Graph, wrt: list[str], cotangent: np.ndarray) -> dict[str, np.ndarray]:
    """u^T J for each of ``wrt``: one reverse sweep from the output's cotangent."""
    order = active(graph, wrt)
    u = {graph.output: cotangent} if order else {}
    keep = set(order)
    for i in reversed(order):
        node = graph.nodes[i]
        if node.op is None or i not in u:
            continue
        for k, a in node.parents():
            if a in keep and node.builders[k] is not None:
                d = _apply(node.builders[k](), u[i], "out")
                u[a] = d if a not in u else u[a] + d
    return {w: _or_zeros(u.get(graph.inputs[w]), graph.nodes[graph.inputs[w]].value, cotangent) for w in wrt}


def _or_zeros(v, like, ref):
    return np.zeros(like.shape, dtype=np.result_type(like, ref)) if v is None else v


def hvp(graph: Graph, tangents: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """H v of a scalar output for the tangents of the ``wrt`` inputs: per input ``sum_q H_pq v_q``."""
    wrt = list(tangents)
    order = active(graph, wrt)
    t = _tangent_sweep(graph, tangents, order)
    y = output_value(graph)
    ybar = {graph.output: np.ones((), dtype=y.dtype)} if order else {}
    ydot: dict = {}
    keep = set(order)

    def add(store, a, d):
        store[a] = d if a not in store else store[a] + d

    for i in reversed(order):                         # adjoints and their tangents
        node = graph.nodes[i]
        if node.op is None or i not in ybar:
            continue
        links = [(k, a) for k, a in node.parents() if a in keep and node.builders[k] is not None]
        if links:
            rule_for(node.op.name)   # an op without a second-order rule is named first
        forms = {k: node.builders[k]() for k, _ in links}
        for k, a in links:
            add(ybar, a, _apply(forms[k], ybar[i], "out"))
            if i in ydot:
                add(ydot, a, _apply(forms[k], ydot[i], "out"))
        tangent_args = {k: a for k, a in links if a in t}
        if tangent_args:
            for (k, l), terms in second_order(site(graph, i)).items():
                if k in dict(links) and l in tangent_args:
                    a = dict(links)[k]
                    for term in terms:
                        add(ydot, a, contract_any(term, {0: ybar[i], 2: t[tangent_args[l]]}, keep=1))
    return {w: _or_zeros(ydot.get(graph.inputs[w]), graph.nodes[graph.inputs[w]].value, y) for w in wrt}
