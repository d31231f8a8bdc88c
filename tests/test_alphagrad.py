"""The AlphaGrad suite (issue 13): the ten task programs and the benchmark command.

* Each task's per-sample Jacobians (every output, every differentiated input) equal central
  differences of the same program (no JAX needed), in every order: forward, reverse, Markowitz
  and the searched one -- most tasks return several outputs, so this exercises vertex
  elimination with several outputs.
* With JAX installed, they equal ``jax.jacrev`` of the same program run on ``jax.numpy``
  (float64), per sample and, for two tasks, batched.
* ``python -m benchmarks.alphagrad --quick`` writes the table with every published count.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jacobians as jac  # noqa: E402
from benchmarks import alphagrad  # noqa: E402
from benchmarks.alphagrad_tasks import TASKS, black_scholes  # noqa: E402
from jacobians.testing import numerical_jacobian  # noqa: E402

ORDERS = ("forward", "reverse", "markowitz", "optimal")


def _numeric(task, args: dict) -> dict:
    """``{(output k, name): central differences}`` of the task's program at ``args``."""
    out = {}
    for n in task.wrt:
        def of(v, n=n):
            r = task.fn(**{**args, n: v})
            return r if isinstance(r, tuple) else (r,)
        for k in range(len(of(args[n]))):
            out[(k, n)] = numerical_jacobian(lambda v, k=k: np.asarray(of(v)[k], dtype=np.float64), args[n])
    return out


@pytest.mark.parametrize("name", list(TASKS))
def test_every_order_matches_central_differences(name):
    task = TASKS[name]
    args = task.sample_args()
    numeric = _numeric(task, args)
    for order in ORDERS:
        J = alphagrad.toolkit_blocks(task, jac.jacobian(task.fn, wrt=task.wrt, order=order, search_time=0.1)(**args))
        assert set(J) == set(numeric)
        for key, ref in numeric.items():
            scale = max(1.0, float(np.abs(ref).max()))
            np.testing.assert_allclose(J[key], ref, rtol=1e-5, atol=1e-6 * scale,
                                       err_msg=f"{name} {order}: d out{key[0]} / d {key[1]}")


def test_the_greeks_program_is_the_gradient_of_the_price():
    """BlackScholes_Jacobian is written out by hand: its five outputs are the price's gradient."""
    task = TASKS["BlackScholes_Jacobian"]
    args = {n: np.float64(v) for n, v in zip(task.wrt, (1.3, 0.9, 0.05, 0.4, 0.7))}
    greeks = task.fn(**args)
    for n, g in zip(task.wrt, greeks):
        num = numerical_jacobian(lambda v, n=n: np.asarray(black_scholes(**{**args, n: v})), args[n])
        np.testing.assert_allclose(g, num, rtol=1e-7, err_msg=f"d price / d {n}")


@pytest.mark.parametrize("name", list(TASKS))
def test_per_sample_jacobians_match_jax(name):
    pytest.importorskip("jax")
    task = TASKS[name]
    args = task.sample_args()
    mine = alphagrad.toolkit_blocks(task, jac.jacobian(task.fn, wrt=task.wrt, search_time=0.1)(**args))
    ok, worst, n = alphagrad.agreement(mine, alphagrad.jax_reference(task, args))
    assert ok and n > 0, (name, worst, n)


@pytest.mark.parametrize("name", ["RoeFlux_3d", "Perceptron"])
def test_batched_jacobians_match_jax_vmap(name):
    pytest.importorskip("jax")
    res = alphagrad.runtime(TASKS[name], batch=5, repeats=1, search_time=0.1, use_jax=True, log=lambda m: None)
    assert set(res["rows"]) == {"toolkit", "jax-jacfwd", "jax-jacrev"}
    for impl, row in res["rows"].items():
        assert row["ok"] and row["compared"] > 0, (impl, row)


def test_graph_sizes_count_inputs_ops_and_outputs():
    """RoeFlux_1d: 6 scalar inputs, 3 outputs; every traced op on a path to an output is a vertex."""
    task = TASKS["RoeFlux_1d"]
    n_in, n_ops, n_out = alphagrad.graph_size(task, task.sample_args())
    assert (n_in, n_out) == (6, 3) and n_ops > 50


def test_quick_command_writes_the_table(tmp_path):
    code = alphagrad.main(["--quick", "--tasks", "HumanHeartDipole", "Perceptron", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "results-alphagrad.json").read_text())
    assert [t["name"] for t in data["tasks"]] == ["HumanHeartDipole", "Perceptron"]
    for t in data["tasks"]:
        assert t["published"]["alphagrad"] == TASKS[t["name"]].published[4]
        c = t["counts"]
        assert c["optimal"]["flops"] <= min(c["forward"]["flops"], c["reverse"]["flops"])
        assert set(t["goals"]) >= {"forward", "reverse", "searched"}
        assert t["runtime"]["rows"]["toolkit"]["ok"]
    md = (tmp_path / "results-alphagrad.md").read_text()
    assert "| HumanHeartDipole | 8,86,8 / 8,86,8 |" in md and "Searched at or below AlphaGrad" in md


def test_a_sum_of_zero_d_blocks_keeps_both_terms():
    """Scalar programs (most AlphaGrad tasks): d(x1 x2 + x1)/dx1 = x2 + 1 in reverse, where a 0-d
    block is expanded and added (its einsum term is the empty string: it was read as no data)."""
    def g(x1, x2):
        return x1 * x2 + x1, x1 - x2
    for order in ORDERS:
        (J, K) = jac.jacobian(g, wrt=("x1", "x2"), order=order)(np.float64(0.3), np.float64(0.7))
        assert (float(J["x1"]), float(J["x2"]), float(K["x1"]), float(K["x2"])) == \
            pytest.approx((1.7, 0.3, 1.0, -1.0)), order


@pytest.mark.parametrize("name", ["RoeFlux_3d", "Encoder", "f"])
def test_a_task_with_slices_is_planned_once(name, monkeypatch):
    """x[..., 1:3] has a slice parameter (unhashable before Python 3.12): its trace must still have a
    signature, or every call re-plans (and re-searches) -- the batch-512 runtime of these three tasks
    was the search, not the contraction."""
    from jacobians import transforms
    made = []
    make = transforms.make_plan
    monkeypatch.setattr(transforms, "make_plan", lambda *a, **k: made.append(1) or make(*a, **k))
    task = TASKS[name]
    jf = jac.jacobian(task.fn, wrt=task.wrt, batched=tuple(n for n in task.batched if n in task.wrt),
                      search_time=0.05)
    first = alphagrad.toolkit_blocks(task, jf(**task.sample_args(3)))
    again = alphagrad.toolkit_blocks(task, jf(**task.sample_args(3)))
    assert len(made) == 1 and len(jf._cache) == 1
    for key, a in first.items():
        np.testing.assert_array_equal(a, again[key])


def test_slices_key_plans_by_their_bounds():
    """Equal slices share a plan; other bounds (same shapes) make another: the bounds are structure."""
    lo = [1]

    def f(x):
        return np.sin(x[..., lo[0]:lo[0] + 2]) * 2.0
    x = np.linspace(0.1, 0.9, 8).reshape(2, 4)
    jf = jac.jacobian(f, batched="x")
    J1, J2 = jf(x), jf(x[:, ::-1].copy())
    assert len(jf._cache) == 1 and J1.shape == J2.shape == (2, 2, 4)
    np.testing.assert_allclose(J2[:, 0, 1], 2.0 * np.cos(x[:, ::-1][:, 1]))
    lo[0] = 0
    J3 = jf(x)
    assert len(jf._cache) == 2
    np.testing.assert_allclose(J3[:, 0, 0], 2.0 * np.cos(x[:, 0]))
    assert not J3[:, 0, 1:].any() and not J3[:, 1, [0, 2, 3]].any()


def test_zeros_of_an_independent_output_come_back_per_sample():
    """An output that does not depend on a batched x but does, per sample, on a batched y: its zeros
    w.r.t. x are (B, *O, *I) like its Jacobian w.r.t. y, not (B, *O, B, *I); where no batched wrt
    argument reaches the output per sample, the full layout stays."""
    def f(x, y, W):
        return np.sin(y) * 2.0, np.tanh(x @ W), W.sum() * 1.0
    B = 3
    x, y, W = np.full((B, 4), 0.3), np.linspace(0.1, 0.6, B * 2).reshape(B, 2), np.full((4, 5), 0.1)
    for order in ORDERS:
        (J0, J1, J2) = jac.jacobian(f, wrt=("x", "y", "W"), batched=("x", "y"), order=order)(x, y, W)
        assert J0["x"].shape == (B, 2, 4) and not J0["x"].any(), order
        assert J0["y"].shape == (B, 2, 2) and J0["W"].shape == (B, 2, 4, 5)
        assert J1["y"].shape == (B, 5, 2) and not J1["y"].any()
        np.testing.assert_allclose(J0["y"][:, [0, 1], [0, 1]], 2.0 * np.cos(y))
        assert J2["x"].shape == (B, 4) and J2["y"].shape == (B, 2)   # () output: (*out, B, *in)
        assert J2["W"].shape == (4, 5)


def test_elementwise_networks_take_the_product_path_and_agree():
    """Scalar programs at a batch make networks like ``a,a,->a`` (every operand on the output's
    labels or a scalar): they run as plain products, with the same values as the pairwise path."""
    from jacobians.execute import execute
    from jacobians.plan import NetStep
    task = TASKS["RoeFlux_1d"]
    args = task.sample_args(7)
    jf = jac.jacobian(task.fn, wrt=task.wrt, batched=task.wrt, order="reverse")
    graph, plan = jf.plan_and_graph((), args)
    nets = [s.network for s in plan.steps if isinstance(s, NetStep)]
    assert nets and all(n._elementwise for n in nets)
    fast = execute(plan, graph)
    for n in nets:
        n.__dict__["_elementwise"] = False
    try:
        slow = execute(plan, graph)
    finally:
        for n in nets:
            n.__dict__.pop("_elementwise")
    assert fast.keys() == slow.keys()
    for k in fast:
        np.testing.assert_allclose(fast[k], slow[k], rtol=1e-14, atol=0)
    from jacobians.network import Network
    assert not Network(("ab", "b"), ((2, 3), (3,)), "ab")._elementwise    # broadcasting: the general path
    assert not Network(("ba", "ab"), ((3, 2), (2, 3)), "ab")._elementwise  # a transpose: the general path
    assert Network(("ab", "", "ab"), ((2, 3), (), (2, 3)), "ab")._elementwise
