"""Red-team regressions (issue 8): each case once gave a silent wrong answer, held memory or crashed.

One section per topic, headed by a comment; every test here failed before its fix.
"""

from __future__ import annotations

import gc
import sys
import threading
import tracemalloc

import numpy as np
import pytest

import jacobians as jac
from jacobians.limits import JacobianTooLarge, limited_memory
from jacobians.testing import numerical_jacobian

fn = jac.fn


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def mlp2(x, W1, W2):
    return fn.linear(fn.tanh(fn.linear(x, W1)), W2)


# ---------------------------------------------------------------- threads: concurrent calls of one function


def test_concurrent_calls_give_exactly_the_serial_results():
    jf = jac.jacobian(mlp2, wrt=("x", "W1"), batched="x")
    r = rng(1)
    W1, W2 = r.normal(size=(16, 8)), r.normal(size=(4, 16))
    xs = [r.normal(size=(6, 8)) for _ in range(8)]
    serial = [jf(x, W1, W2) for x in xs]
    failures, errors = [], []

    def worker(t: int) -> None:
        try:
            for rep in range(100):
                i = (t + rep) % len(xs)
                J = jf(xs[i], W1, W2)
                for k in J:
                    if not np.array_equal(J[k], serial[i][k]):
                        failures.append((t, rep, k))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[0]
    assert not failures, f"{len(failures)} of 400 concurrent results differ from the serial ones: {failures[:5]}"


# ---------------------------------------------------------------- stale plans: every call sees what a fresh trace sees


class Config:                                    # hashable by identity, like most objects
    def __init__(self, alpha: float, scale: float) -> None:
        self.alpha, self.scale = alpha, scale


def test_an_attribute_of_an_argument_object_changed_between_calls():
    def f(x, cfg):
        return fn.leaky_relu(x, cfg.alpha) * cfg.scale
    jf = jac.jacobian(f, wrt="x")
    x = np.array([-1.0, 2.0, -3.0])
    cfg = Config(alpha=0.1, scale=1.0)
    np.testing.assert_allclose(jf(x, cfg), np.diag([0.1, 1.0, 0.1]))
    cfg.alpha, cfg.scale = 0.5, 3.0
    np.testing.assert_allclose(jf(x, cfg), np.diag([1.5, 3.0, 1.5]))


def test_a_captured_weight_rebound_or_mutated_in_place_is_seen():
    W = rng(2).normal(size=(3, 4))

    def f(x):
        return fn.linear(x, W)
    jf = jac.jacobian(f, wrt="x")
    x = np.ones(4)
    np.testing.assert_array_equal(jf(x), W)
    W = 2 * W                                    # rebound in the enclosing scope
    np.testing.assert_array_equal(jf(x), W)
    W *= 2                                       # mutated in place
    np.testing.assert_array_equal(jf(x), W)


SCALE = 1.0


def _scaled_tanh(x):
    return fn.tanh(x) * SCALE


def test_a_global_changed_between_calls_is_seen():
    global SCALE
    jf = jac.jacobian(_scaled_tanh, wrt="x")
    x = np.zeros(3)
    try:
        np.testing.assert_array_equal(jf(x), np.eye(3))
        SCALE = 5.0
        np.testing.assert_array_equal(jf(x), 5.0 * np.eye(3))
    finally:
        SCALE = 1.0


def test_a_branch_on_a_static_argument_gets_its_own_plan():
    def f(x, kind):
        return fn.tanh(x) if kind == "tanh" else fn.sigmoid(x)
    jf = jac.jacobian(f, wrt="x")
    x = np.zeros(2)
    np.testing.assert_allclose(jf(x, "tanh"), np.eye(2))
    np.testing.assert_allclose(jf(x, "sigmoid"), 0.25 * np.eye(2))
    np.testing.assert_allclose(jf(x, "tanh"), np.eye(2))


# ---------------------------------------------------------------- memory: plans hold shapes, never arrays


def test_the_plan_cache_releases_inputs_and_intermediates():
    jf = jac.jacobian(mlp2, wrt="x", batched="x")
    r = np.random.default_rng(3)
    W1, W2 = r.normal(size=(20, 4000)), r.normal(size=(5, 20))
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for B in (16, 32, 48):                   # three shapes: three cached plans
            x = r.normal(size=(B, 4000))         # 0.5, 1.0, 1.5 MiB
            J = jf(x, W1, W2)                    # 2.4, 4.9, 7.3 MiB
            del x, J
        gc.collect()
        left = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(jf._cache) == 3
    assert left < 256 << 10, f"{left} bytes still allocated after del x, J"


def test_a_plan_holds_no_arrays():
    jf = jac.jacobian(mlp2, wrt=("x", "W1"), batched="x")
    r = rng(4)
    plan = jf.plan(r.normal(size=(3, 4)), r.normal(size=(5, 4)), r.normal(size=(2, 5)))
    seen, stack = set(), [plan]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        assert not isinstance(obj, np.ndarray), f"the plan holds an array {obj.shape}"
        if isinstance(obj, dict):
            stack += list(obj.keys()) + list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack += list(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            stack += list(vars(obj).values())


# ---------------------------------------------------------------- zero-size arrays


@pytest.mark.parametrize("B, D, H, O", [(0, 3, 4, 2), (2, 0, 4, 2), (2, 3, 0, 2), (2, 3, 4, 0)])
@pytest.mark.parametrize("order", ["optimal", "forward", "reverse"])
def test_zero_size_arrays_through_a_two_layer_network(B, D, H, O, order):
    r = rng(5)
    x, W1, W2 = r.normal(size=(B, D)), r.normal(size=(H, D)), r.normal(size=(O, H))
    J = jac.jacobian(mlp2, wrt=("x", "W1", "W2"), batched="x", order=order)(x, W1, W2)
    assert J["x"].shape == (B, O, D)
    assert J["W1"].shape == (B, O, H, D)
    assert J["W2"].shape == (B, O, O, H)
    for k in J:
        assert not J[k].any()
    J = jac.jacobian(mlp2, wrt=("x", "W1"), order=order)(x, W1, W2)     # no batch: (B,O,B,D)
    assert J["x"].shape == (B, O, B, D) and J["W1"].shape == (B, O, H, D)


def test_a_zero_width_layer_gives_a_zero_jacobian_of_the_right_shape():
    r = rng(6)
    x, W1, W2 = r.normal(size=(2, 3)), r.normal(size=(0, 3)), r.normal(size=(4, 0))
    plan = jac.jacobian(mlp2, wrt="x", batched="x").plan(x, W1, W2)
    assert "zeros" in str(plan)
    np.testing.assert_array_equal(jac.jacobian(mlp2, wrt="x", batched="x")(x, W1, W2), np.zeros((2, 4, 3)))


# ---------------------------------------------------------------- bad arguments to jacobian(...)


def _first_line(e) -> str:
    text = str(e.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("wrt, match", [(None, "wrt must name an argument.*got None"),
                                        (0.0, "wrt must name an argument.*got 0.0"),
                                        ("rest", r"\*rest; the argument to differentiate must be a named parameter"),
                                        ("options", r"\*\*options; the argument"),
                                        (("x", 1.5), "wrt must be an argument name or position; got 1.5")])
def test_bad_wrt_is_a_one_line_error(wrt, match):
    def f(x, *rest, **options):
        return fn.tanh(x)
    with pytest.raises((TypeError, ValueError), match=match) as e:
        jac.jacobian(f, wrt=wrt)
    _first_line(e)


def test_a_function_of_star_args_names_the_problem():
    def f(*args):
        return fn.tanh(args[0])
    with pytest.raises(ValueError, match=r"wrt='args' is f\(\*args\)'s \*args") as e:
        jac.jacobian(f, wrt=0)
    _first_line(e)
    with pytest.raises(ValueError, match="batched='args'"):
        jac.jacobian(lambda x, *args: fn.tanh(x), wrt="x", batched="args")


def test_star_args_may_carry_constants():
    def f(x, *weights):
        for W in weights:
            x = fn.tanh(fn.linear(x, W))
        return x
    r = rng(7)
    x, W1, W2 = r.normal(size=3), r.normal(size=(4, 3)), r.normal(size=(2, 4))
    J = jac.jacobian(f, wrt="x")(x, W1, W2)
    np.testing.assert_allclose(J, numerical_jacobian(lambda x: np.tanh(W2 @ np.tanh(W1 @ x)), x), rtol=1e-6)


# ---------------------------------------------------------------- numpy scalars are constants


def test_a_numpy_scalar_hyperparameter_is_a_constant():
    def f(x, alpha):
        if alpha > 0:                            # a branch on a constant is fine
            return fn.leaky_relu(x, float(alpha))
        return fn.relu(x)
    x = np.array([-1.0, 2.0])
    jf = jac.jacobian(f, wrt="x")
    np.testing.assert_allclose(jf(x, np.float64(0.1)), np.diag([0.1, 1.0]))
    np.testing.assert_allclose(jf(x, np.float32(0.5)), np.diag([0.5, 1.0]))
    np.testing.assert_allclose(jf(x, np.float64(0.0)), np.diag([0.0, 1.0]))


# ---------------------------------------------------------------- mixed dtypes: sized in the dtype that runs


def test_mixed_dtypes_are_sized_in_the_dtype_the_computation_runs_in():
    x = np.ones(300, dtype=np.float32)
    W = np.full((300, 300), 1e-3)                # float64: the computation runs in float64
    f = lambda x, W: fn.tanh(W @ x)              # noqa: E731
    assert jac.jacobian(f, wrt="x").plan(x, W).itemsize == 8
    result = 300 * 300                            # d/dx: (300, 300), made in float64, handed back in float32
    with limited_memory(result * 6):              # enough at 4 bytes an element, not at 8
        with pytest.raises(JacobianTooLarge, match="703.1 KiB"):
            jac.jacobian(f, wrt="x")(x, W)
    with limited_memory(result * 8):
        J = jac.jacobian(f, wrt="x")(x, W)
    assert J.dtype == np.float32 and J.shape == (300, 300)


def test_a_cached_plan_is_not_reused_under_a_lower_memory_limit():
    x, W = np.ones(300), np.full((300, 300), 1e-3)
    jf = jac.jacobian(lambda x, W: fn.tanh(W @ x), wrt="x")
    jf(x, W)
    with limited_memory(300 * 300 * 4):
        with pytest.raises(JacobianTooLarge):
            jf(x, W)


# ---------------------------------------------------------------- many dimensions: labels never run out


def test_arrays_of_sixteen_dimensions():
    x = rng(8).normal(size=(1,) * 15 + (2,))
    J = jac.jacobian(lambda x: fn.tanh(x) * 3.0, wrt="x")(x)
    assert J.shape == x.shape * 2
    np.testing.assert_allclose(J.reshape(2, 2), np.diag(3.0 / np.cosh(x.ravel()) ** 2))
    Jb = jac.jacobian(lambda x: fn.tanh(x), wrt="x", batched="x")(x)
    assert Jb.shape == x.shape + x.shape[1:]
    np.testing.assert_allclose(Jb.reshape(2, 2), np.diag(1.0 / np.cosh(x.ravel()) ** 2))


# ---------------------------------------------------------------- results are the caller's own


def test_results_share_no_memory_with_inputs_or_each_other():
    def f(x, W):
        return W @ x + x                          # dz/dW is a relabel of x; two paths for x
    r = rng(9)
    x, W = r.normal(size=3), r.normal(size=(3, 3))
    for order in ("optimal", "forward", "reverse"):
        J = jac.jacobian(f, wrt=("x", "W"), order=order)(x, W)
        for k, a in J.items():
            assert not np.may_share_memory(a, x) and not np.may_share_memory(a, W), (order, k)
        assert not np.may_share_memory(J["x"], J["W"]), order
        np.testing.assert_allclose(J["x"], W + np.eye(3))


# ---------------------------------------------------------------- the plan's structure guard


def test_execution_refuses_a_trace_whose_factored_structure_differs_from_the_plan():
    import dataclasses

    from jacobians.execute import execute
    jf = jac.jacobian(lambda x, W: fn.tanh(fn.linear(x, W)), wrt="x")
    r = rng(10)
    graph, plan = jf.plan_and_graph((r.normal(size=3), r.normal(size=(2, 3))), {})
    np.testing.assert_array_equal(execute(plan, graph)["x"], jf(graph.nodes[0].value, graph.nodes[1].value))
    (c, k), _ = plan.links[0]
    real = graph.nodes[c].builders[k]
    bent = lambda check=True: dataclasses.replace(real(check), inp="Q" * len(real().inp), check=False)  # noqa: E731
    graph.nodes[c].builders = tuple(bent if i == k else b for i, b in enumerate(graph.nodes[c].builders))
    with pytest.raises(RuntimeError, match="differs from the plan's"):
        execute(plan, graph)


# ---------------------------------------------------------------- numpy names mean numpy (item 2; every mapping: test_numpy_meanings.py)

def test_np_dot_and_np_linalg_norm_mean_what_numpy_means():
    r = rng(40)
    x, W = r.normal(size=(3, 4)), r.normal(size=(4, 2))
    J = jac.jacobian(lambda x, W: np.dot(x, W), wrt="W")(x, W)           # d (x W)[b, o] / d W[i, j] = x[b, i] delta_oj
    np.testing.assert_allclose(J, np.einsum("bi,oj->boij", x, np.eye(2)))
    G = jac.jacobian(lambda X: np.linalg.norm(X), wrt="X")(x)              # Frobenius, not a per-row norm
    assert G.shape == x.shape
    np.testing.assert_allclose(G, x / np.linalg.norm(x), rtol=1e-13)


# ---------------------------------------------------------------- deep chains plan in polynomial time (item 6; more: test_network_planning.py)

def test_a_24_layer_chain_plans_and_agrees_with_both_folds():
    # 24 layers took more than 25 s to plan under order="optimal" ('dp' over a batch label on every term)
    r = rng(41)
    Ws = [r.normal(size=(6, 6)) / 3 for _ in range(24)]

    def deep(x, *Ws):
        for W in Ws:
            x = fn.tanh(fn.linear(x, W))
        return x
    x = r.normal(size=(4, 6))
    plans = {o: jac.jacobian(deep, wrt="x", batched="x", order=o).plan(x, *Ws) for o in ("optimal", "forward", "reverse")}
    assert plans["optimal"].flops <= min(plans["forward"].flops, plans["reverse"].flops)
    np.testing.assert_allclose(jac.jacobian(deep, wrt="x", batched="x")(x, *Ws),
                               jac.jacobian(deep, wrt="x", batched="x", order="reverse")(x, *Ws), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- the memory guard sizes before allocating (item 7)

def test_an_op_refuses_before_building_any_of_its_jacobians():
    # jac.ops.linear built the Jacobian for x before refusing the one for W; peak measured, limit 20 MiB
    x, W = np.ones((64, 200)), np.ones((200, 200))           # dz/dx 20 MiB (per sample), dz/dW 410 MiB
    tracemalloc.start()
    try:
        with limited_memory(24 << 20), pytest.raises(JacobianTooLarge):
            jac.ops.linear(x, W)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak


def test_compares_sweeps_stay_under_the_limit():
    # the JVP/VJP sweeps built an n x n identity per chunk (1.17 GB under a 200 MiB limit)
    from jacobians.graph import trace
    from jacobians.modes import sweep_jacobian
    import inspect
    r = rng(42)
    f = lambda x, W: fn.tanh(fn.linear(x, W))   # noqa: E731
    x, W = r.normal(size=2000), r.normal(size=(3, 2000))
    graph = trace(f, inspect.signature(f).bind(x, W), ["x", "W"])
    tracemalloc.start()
    try:
        with limited_memory(2 << 20):
            J = sweep_jacobian(graph, "x", "jvp").jacobian
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, peak                    # the identity alone would be 32 MB
    np.testing.assert_allclose(J, (1 - np.tanh(W @ x) ** 2)[:, None] * W, rtol=1e-12)


# ---------------------------------------------------------------- the memory limit's variable (item 11; every case: test_limits.py)

@pytest.mark.parametrize("value", ["abc", "1 G", "nan", "inf", "0", "-1"])
def test_a_bad_memory_limit_variable_is_named(monkeypatch, value):
    from jacobians import limits
    monkeypatch.setenv("JACOBIANS_MAX_BYTES", value)
    monkeypatch.setattr(limits, "_limit", None, raising=False)
    with pytest.raises(ValueError, match="JACOBIANS_MAX_BYTES"):
        limits.parse_bytes(value, "environment variable JACOBIANS_MAX_BYTES")


@pytest.mark.parametrize("value, nbytes", [("2GiB", 2 << 30), ("500MB", 500_000_000), ("4096", 4096)])
def test_human_sizes_are_accepted(value, nbytes):
    from jacobians.limits import parse_bytes
    assert parse_bytes(value, "JACOBIANS_MAX_BYTES") == nbytes


# ---------------------------------------------------------------- aliasing: op results own their data (item 5; every op: test_ops.py)

@pytest.mark.parametrize("call", [
    lambda W: jac.ops.linear(np.ones(3), W, batch=False),
    lambda W: jac.ops.dot(np.ones(3), W[0], batch=False),
    lambda W: jac.ops.matmul(np.ones(2), W, batch=False),
    lambda W: jac.ops.matmul(W.T, np.ones(2), batch=False),
    lambda W: jac.ops.multiply(W, np.array(2.0), batch=False),
])
def test_writing_into_a_returned_jacobian_leaves_the_inputs_alone(call):
    W = np.arange(6.0).reshape(2, 3) + 1
    before = W.copy()
    value, jacs = call(W)
    for J in (value, *jacs):
        assert J.flags.owndata or J.base is None or not np.shares_memory(J, W)
        J[...] = 0
    np.testing.assert_array_equal(W, before)


def test_optimal_drops_a_candidate_over_the_limit_and_keeps_one_that_fits():
    """order="optimal" weighs forward and reverse; a forward sweep whose intermediate would pass the
    memory limit must not fail the call when reverse fits (the tutorial CNN hit this: forward through
    the dense layers needed 6.9 GiB, reverse a few MiB)."""
    r = np.random.default_rng(0)
    n = 1500
    B, A, x = r.standard_normal((n, n)) / 40, r.standard_normal((2, n)) / 40, r.standard_normal(n)

    def f(x, A, B):
        h = np.tanh(B @ x)[1:]          # the slice splits the chain: forward must hold d h / d x
        return np.tanh(A[:, 1:] @ h)

    with limited_memory("12MB"):
        with pytest.raises(JacobianTooLarge, match="dtanh_1/dx"):
            jac.jacobian(f, wrt="x", order="forward")(x, A, B)
        J = jac.jacobian(f, wrt="x", order="optimal")(x, A, B)
        np.testing.assert_allclose(J, jac.jacobian(f, wrt="x", order="reverse")(x, A, B), rtol=1e-12, atol=1e-14)
    h = np.tanh(B @ x)
    expected = (1 - np.tanh(A[:, 1:] @ h[1:]) ** 2)[:, None] * (A[:, 1:] * (1 - h[1:] ** 2)) @ B[1:]
    np.testing.assert_allclose(J, expected, rtol=1e-10, atol=1e-13)


def test_index_arrays_key_plans_by_shape_and_a_changed_structure_replans():
    """``E[ids]`` with new ids of the same shape reuses the plan (the ids are read from each call's
    trace); a cached plan whose links no longer fit the trace is replaced, never run."""
    from dataclasses import replace

    from jacobians import transforms
    r = np.random.default_rng(3)
    E, W = r.normal(size=(30, 4)), r.normal(size=(2, 4))
    f = lambda ids, E, W: np.mean(E[ids], axis=1) @ W.T
    jf = jac.jacobian(f, wrt="E", batched="ids")
    made = []
    real = transforms.make_plan
    try:
        transforms.make_plan = lambda *a, **k: made.append(1) or real(*a, **k)
        for _ in range(3):
            ids = r.integers(0, 30, size=(3, 5))
            J = jf(ids, E, W)
            for b in range(3):
                ref = numerical_jacobian(lambda E: f(ids[b:b + 1], E, W)[0], E)
                np.testing.assert_allclose(J[b], ref, rtol=1e-6, atol=1e-8)
        assert len(made) == 1
        (key, plan), = jf._cache.items()
        (link, structure), *rest = plan.links
        jf._cache[key] = replace(plan, links=((link, structure[:-1] + (("bogus",),)), *rest))
        np.testing.assert_allclose(jf(ids, E, W), J, rtol=1e-14)
        assert len(made) == 2 and jf._cache[key].links == plan.links
    finally:
        transforms.make_plan = real
