"""Cross-country vertex elimination (jacobians.elimination): orders, costs, agreement.

* On random DAGs (the composer's property programs) the ``markowitz`` and ``optimal``
  Jacobians equal forward's, reverse's and central differences, and ``optimal`` is
  never more expensive in FLOPs than either pure mode.
* The elimination machinery run in topological order (in-side consolidated) and in
  reverse topological order (out-side consolidated) makes the planner's forward and
  reverse networks (the same FLOPs); its sums of blocks are never dearer.
* Hand-worked FLOP and multiplication counts on small graphs; orders replayed by name.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import jacobians as jac
from jacobians.elimination import Elimination, eliminate, multiplications
from jacobians.graph import trace
from jacobians.plan import NetStep
from jacobians.planner import _finish, compute_itemsize, make_plan
from jacobians.testing import expand_batch, numerical_jacobian
from test_composer_properties import SETTINGS, arguments, programs

fn = jac.fn
ORDERS = ("forward", "reverse", "markowitz", "optimal")


@SETTINGS
@given(programs(dag=True))
def test_markowitz_and_optimal_agree_with_both_modes_and_central_differences_on_random_dags(case):
    p, wrt, batched, seed = case
    f = p.function()
    args = arguments(p, seed)
    out = np.asarray(f(**args))
    fns = {o: jac.jacobian(f, wrt=wrt, batched=batched, order=o) for o in ORDERS}
    results = {o: jf(**args) for o, jf in fns.items()}
    flops = {o: jf.plan(**args).flops for o, jf in fns.items()}
    assert flops["optimal"] <= min(flops["forward"], flops["reverse"]), (flops, p)
    assert flops["optimal"] <= flops["markowitz"], (flops, p)
    for name in wrt:
        J = results["forward"][name]
        scale = max(1.0, float(np.abs(J).max(initial=0.0)))
        for o in ORDERS:
            np.testing.assert_allclose(results[o][name], J, rtol=1e-10, atol=1e-10 * scale,
                                       err_msg=f"d/d{name}: {o} vs forward\n{p}")
        per_sample = name == batched and not p.mixes
        full = expand_batch(J, out.ndim) if per_sample else J

        def of(v, name=name):
            return np.asarray(f(**{**args, name: v}), dtype=np.float64)
        np.testing.assert_allclose(full, numerical_jacobian(of, args[name]), rtol=1e-5, atol=1e-7 * scale,
                                   err_msg=f"d/d{name} vs central differences\n{p}")


def _costs(steps) -> tuple[int, int]:
    """(FLOPs of the networks, FLOPs of every step: networks and writing deltas out)."""
    return sum(s.cost.flops for s in steps if isinstance(s, NetStep)), sum(s.cost.flops for s in steps)


def _same_as_planner(graph, wrt, mode, batched) -> None:
    """The elimination machinery in ``mode``'s vertex order, networks folded the same way: the same
    networks as the planner's sweep; sums of blocks may come in another order, never a dearer one
    (an identity is added onto a block, not the block onto a written-out eye)."""
    today = _costs(make_plan(graph, wrt, mode, batched).steps)
    found = eliminate(graph, wrt, mode, mode, compute_itemsize(graph), {})
    if not found:  # the output depends on no wrt: nothing to eliminate (the planner makes zeros)
        return
    (_, planner, blocks, _, _), = found
    _finish(planner, blocks, () if batched is None else (batched,))
    mine = _costs(planner.steps)
    assert mine[0] == today[0] and mine[1] <= today[1], (mode, wrt, mine, today)


@SETTINGS
@given(programs(dag=True))
def test_topological_orders_reproduce_the_planners_forward_and_reverse_flops(case):
    p, wrt, batched, seed = case
    args = arguments(p, seed)
    graph = trace(p.function(), dict(args), list(args))
    if graph.output is None or graph.output in graph.inputs.values():
        return  # a constant or an input returned: no graph to eliminate on
    # reverse: one sweep for every wrt; forward: one input (the planner sweeps each input on its own
    # subgraph, elimination sweeps the joint graph, which has more branch points)
    _same_as_planner(graph, list(wrt), "reverse", batched)
    _same_as_planner(graph, [wrt[0]], "forward", batched)


def gated(x):
    h = np.tanh(x)
    return fn.sum(h * fn.sigmoid(h))


def test_markowitz_beats_both_modes_on_a_gate_by_hand():
    """tanh_0 feeds multiply_0 twice (directly and through sigmoid); n = 3.

    forward 18: tanh' alone (3), tanh' sigma' h (two products, 6), tanh' s (3), add (6);
    reverse 21: the sum's ones (3), then the same 6 + 3 + 6, then times tanh' (3);
    markowitz 15: multiply_0 first -- d mul / d h along both edges (3 + 3) and their add
    (6); the sum's Jacobian is a relabel (0); then tanh_0: times tanh' (3).
    """
    x = np.linspace(-1.0, 1.0, 3)
    plans = {o: jac.jacobian(gated, order=o).plan(x) for o in ORDERS}
    assert {o: p.flops for o, p in plans.items()} == {"forward": 18, "reverse": 21, "markowitz": 15,
                                                     "optimal": 15}
    assert plans["markowitz"].elimination == ("multiply_0", "tanh_0")
    assert "elimination order: multiply_0 -> tanh_0" in str(plans["markowitz"])
    # Graphax's convention: the three elementwise products, 3 multiplications each; copies and adds: 0
    assert multiplications(plans["markowitz"]) == 6
    J = jac.jacobian(gated, order="markowitz")(x)
    np.testing.assert_allclose(J, numerical_jacobian(gated, x), rtol=1e-7)


def test_an_order_is_replayed_by_node_names():
    x = np.linspace(-1.0, 1.0, 3)
    for names in [("tanh_0", "multiply_0"), ("multiply_0", "tanh_0"), ("tanh_0",)]:
        jf = jac.jacobian(gated, order=Elimination(names))
        plan = jf.plan(x)
        assert plan.elimination[:len(names)] == names
        assert set(plan.elimination) == {"tanh_0", "multiply_0"}   # the rest in Markowitz order
        np.testing.assert_allclose(jf(x), jac.jacobian(gated, order="forward")(x), rtol=1e-12)
        again = jac.jacobian(gated, order=Elimination(plan.elimination)).plan(x)
        assert again.flops == plan.flops and again.elimination == plan.elimination


def test_bad_elimination_orders_say_what_is_valid():
    x = np.linspace(-1.0, 1.0, 3)
    with pytest.raises(ValueError, match=r"'tanh_9'.*valid names are 'tanh_0', 'multiply_0'"):
        jac.jacobian(gated, order=Elimination(("tanh_9",))).plan(x)
    with pytest.raises(TypeError, match="sequence of node names"):
        Elimination("tanh_0")
    with pytest.raises(ValueError, match="'markowitz'"):
        jac.jacobian(gated, order="markowitzz")


def dense(x, W1, W2):
    return np.tanh(x @ W1.T) @ W2.T


def test_multiplications_per_sample_in_graphaxs_convention():
    """x (B=5, 3) -> W1 (4, 3) -> tanh -> W2 (2, 4): per sample, reverse multiplies W2 by tanh'
    (2 * 4) then by W1 (2 * 4 * 3): 32; forward tanh' by W1 (4 * 3) then W2 by that (2 * 4 * 3): 36.
    FLOPs count the summed products twice: 5 * (8 + 48) = 280 and 5 * (12 + 48) = 300."""
    r = np.random.default_rng(0)
    x, W1, W2 = r.normal(size=(5, 3)), r.normal(size=(4, 3)), r.normal(size=(2, 4))
    rev = jac.jacobian(dense, wrt="x", batched="x", order="reverse").plan(x, W1, W2)
    fwd = jac.jacobian(dense, wrt="x", batched="x", order="forward").plan(x, W1, W2)
    assert (rev.flops, multiplications(rev), multiplications(rev, per=5)) == (280, 160, 32)
    assert (fwd.flops, multiplications(fwd), multiplications(fwd, per=5)) == (300, 180, 36)


def wide_middle(x, A, B, C, D):
    h = np.tanh(x @ A.T)
    w = np.tanh(h @ B.T) * fn.sigmoid(h @ C.T) + h
    return np.tanh(w @ D.T)


def test_a_search_with_no_time_still_gives_a_plan_no_dearer_than_both_modes():
    r = np.random.default_rng(1)
    args = dict(x=r.normal(size=(2,)), A=r.normal(size=(50, 2)), B=r.normal(size=(50, 50)) / 7,
                C=r.normal(size=(50, 50)) / 7, D=r.normal(size=(2, 50)) / 7)
    graph = trace(wide_middle, dict(args), list(args))
    wrt = ["x", "B"]
    pure = min(make_plan(graph, wrt, o).flops for o in ("forward", "reverse"))
    for budget in (0.0, None):
        assert make_plan(graph, wrt, "optimal", search_time=budget).flops <= pure
    J = jac.jacobian(wide_middle, wrt=("x", "B"), order="markowitz")(**args)
    K = jac.jacobian(wide_middle, wrt=("x", "B"), order="reverse")(**args)
    for n in J:
        np.testing.assert_allclose(J[n], K[n], rtol=1e-10, atol=1e-12)


def gated_stack(x, W):
    h = x
    for k in range(W.shape[0]):
        h = h + np.tanh(h @ fn.sum(W * np.eye(W.shape[0])[k][:, None, None], axis=0).T) * fn.sigmoid(h)
    return fn.sum(h, axis=-1)


def test_a_graph_past_the_exact_search_takes_the_beam_and_agrees():
    """5 gated residual blocks: 10 intermediate vertices, more than EXACT_MAX (a beam search)."""
    from jacobians.elimination import EXACT_MAX, intermediate_vertices
    r = np.random.default_rng(2)
    x, W = r.normal(size=(2, 3)), r.normal(size=(5, 3, 3)) / 3
    graph = trace(gated_stack, dict(x=x, W=W), ["x"])
    assert len(intermediate_vertices(graph, ["x"])) > EXACT_MAX
    pure = min(make_plan(graph, ["x"], o, "x").flops for o in ("forward", "reverse"))
    for budget in (0.0, 0.2):
        assert make_plan(graph, ["x"], "optimal", "x", search_time=budget).flops <= pure
    J = {o: jac.jacobian(gated_stack, wrt="x", batched="x", order=o)(x, W) for o in ORDERS}
    for o in ORDERS:
        np.testing.assert_allclose(J[o], J["forward"], rtol=1e-10, atol=1e-12)


def test_search_time_is_passed_to_the_search_and_checked():
    import jacobians as jac
    fn = jac.fn

    def gate(x, W):
        h = fn.tanh(fn.linear(x, W))
        return fn.sum(h * fn.sigmoid(h))
    x, W = np.linspace(-1, 1, 12).reshape(3, 4), np.linspace(-0.5, 0.5, 20).reshape(5, 4)
    J = jac.jacobian(gate, wrt="x", search_time=2.0)(x, W)
    np.testing.assert_allclose(J, jac.jacobian(gate, wrt="x", order="reverse")(x, W), rtol=1e-12, atol=1e-14)
    for bad in (0, -1.0, "1s", True):
        with pytest.raises(ValueError, match="search_time must be a positive number"):
            jac.jacobian(gate, wrt="x", search_time=bad)


def two_outputs(x, W):
    h = np.tanh(x @ W.T)
    a = h * fn.sigmoid(h)
    return a, np.sin(a) + h        # the first output feeds the second


def test_several_outputs_are_eliminated_together_and_agree_with_both_modes():
    """An output that feeds another output keeps its own Jacobian when it is eliminated."""
    from jacobians.elimination import intermediate_vertices
    r = np.random.default_rng(3)
    x, W = r.normal(size=(3,)), r.normal(size=(4, 3))
    graph = trace(two_outputs, dict(x=x, W=W), ["x", "W"])
    assert "multiply_0" in intermediate_vertices(graph, ["x", "W"])   # the first output, ordered too
    J = {o: jac.jacobian(two_outputs, wrt=("x", "W"), order=o)(x, W) for o in ORDERS}
    plan = jac.jacobian(two_outputs, wrt=("x", "W"), order="markowitz").plan(x, W)
    assert plan.strategy.startswith("vertex elimination") and "multiply_0" in plan.elimination
    for k in range(2):
        for n, v in (("x", x), ("W", W)):
            num = numerical_jacobian(lambda t: two_outputs(**{"x": x, "W": W, n: t})[k], v)
            for o in ORDERS:
                np.testing.assert_allclose(J[o][k][n], num, rtol=1e-6, atol=1e-8, err_msg=f"{o}: d out{k} / d {n}")


def test_compare_adds_elimination_rows_where_the_graph_branches_and_explain_shows_the_order():
    x = np.linspace(-1.0, 1.0, 3)
    report = jac.compare(gated, x, wrt="x", repeats=1, min_time=0)
    rows = {r.order: r for r in report.rows}
    assert rows["markowitz"].flops == 15 and rows["optimal-elimination"].flops == 15   # worked by hand above
    assert rows["markowitz"].how == "eliminate multiply_0 -> tanh_0"
    assert rows["optimal-elimination"].how.endswith("eliminate multiply_0 -> tanh_0")
    for r in rows.values():
        assert r.max_abs_diff < 1e-12 and r.largest_elements > 0
    assert "optimal-elimination" in str(report)
    only = jac.compare(gated, x, wrt="x", orders=("reverse", "markowitz"), repeats=1, min_time=0)
    assert [r.order for r in only.rows] == ["reverse", "markowitz"]
    chain = jac.compare(lambda x: np.tanh(np.sin(x)), x, wrt="x", orders=("optimal", "markowitz"), repeats=1,
                        min_time=0)
    assert [r.order for r in chain.rows] == ["optimal"] and any("no elimination rows" in n for n in chain.notes)
    text = str(jac.explain(gated, x, wrt="x", order="markowitz"))
    assert "elimination order, first to last (2 vertices): multiply_0 -> tanh_0" in text


def test_the_local_search_improves_a_bad_seed_and_its_order_replays():
    """Seeded with forward's topological order only, the anytime local search finds a cheaper complete
    order (it also draws Markowitz orders with random tie-breaking); its order, replayed by name,
    costs what the search said and gives forward's Jacobian."""
    import time
    from jacobians import elimination as el
    r = np.random.default_rng(2)
    x, W = r.normal(size=(2, 3)), r.normal(size=(5, 3, 3)) / 3
    graph, _ = jac.jacobian(gated_stack, wrt="x", order="reverse").plan_and_graph((x, W), {})
    start = el._initial(graph, ["x"], "optimal", 8, {})
    topo = start.remaining()
    seed = el._run(start.clone(), topo, None)
    seed_cost = seed.clone()
    seed_cost.finish()
    found = el._local_search(start, [topo], time.perf_counter() + 1.0, seed_cost.flops)
    assert found is not None and sorted(found.eliminated) == sorted(topo)
    cost = found.clone()
    cost.finish()
    assert cost.flops < seed_cost.flops
    names = tuple(graph.nodes[v].name for v in found.eliminated)
    (flops, _, _, replayed, _), = eliminate(graph, ["x"], Elimination(names), "optimal", 8, {})
    assert flops == cost.flops and replayed == names
    J = jac.jacobian(gated_stack, wrt="x", order=Elimination(names))(x, W)
    np.testing.assert_allclose(J, jac.jacobian(gated_stack, wrt="x", order="forward")(x, W), rtol=1e-10, atol=1e-12)

