"""compare(): exact FLOP counts worked by hand, CS182's formulas, agreement of every order, the report."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

import jacobians as jac
from jacobians import comparison
from jacobians.comparison import DEFAULT_ORDERS, chain_dims, cs182_prediction

fn = jac.fn


def chain3(x, W1, W2, W3):
    return fn.matmul(W3, fn.matmul(W2, fn.matmul(W1, x)))


def dense_chain(n, m1, m2, m3, seed=0):
    r = np.random.default_rng(seed)
    return (r.normal(size=n), r.normal(size=(m1, n)), r.normal(size=(m2, m1)), r.normal(size=(m3, m2)))


def mlp(x, W1, b1, W2, b2, W3, b3):
    return fn.linear(fn.tanh(fn.linear(fn.tanh(fn.linear(x, W1, b1)), W2, b2)), W3, b3)


def mlp_args(widths, batch, seed=0):
    r = np.random.default_rng(seed)
    args = [r.normal(size=(batch, widths[0]) if batch else widths[0])]
    for a, b in zip(widths[:-1], widths[1:]):
        args += [r.normal(size=(b, a)) / np.sqrt(a), 0.1 * r.normal(size=b)]
    return args


# ------------------------------------------------------------------ exact FLOPs on a dense 3-link chain

# (n, m1, m2, m3): x has n entries, W_k maps m_{k-1} -> m_k; a multiply-add counts 2
CHAINS = [(7, 5, 9, 3), (3, 8, 4, 11), (6, 6, 6, 6), (1, 4, 2, 5), (10, 2, 10, 1)]


@pytest.mark.parametrize("n, m1, m2, m3", CHAINS)
def test_dense_chain_flops_in_every_order_are_the_hand_counts(n, m1, m2, m3):
    report = jac.compare(chain3, *dense_chain(n, m1, m2, m3), wrt="x", repeats=1, min_time=0)
    s = m1 * n + m2 * m1 + m3 * m2
    hand = {
        # forward: W2 W1 (m2 x m1 times m1 x n), then W3 times that; the identity seed costs nothing
        "forward": 2 * n * (m2 * m1 + m3 * m2),
        # reverse: W3 W2 (m3 x m2 times m2 x m1), then that times W1
        "reverse": 2 * m3 * (m1 * n + m2 * m1),
        # n JVPs through the three matrices; m3 VJPs back through them
        "jvp": 2 * n * s,
        "vjp": 2 * m3 * s,
        # the cheaper of the two bracketings (W3 W2) W1 and W3 (W2 W1)
        "optimal": min(2 * (m3 * m2 * m1 + m3 * m1 * n), 2 * (m2 * m1 * n + m3 * m2 * n)),
    }
    hand["bracket"] = hand["optimal"]  # a dense chain: Naumann's DP finds the same bracketing
    for order, flops in hand.items():
        assert report.row(order).flops == flops, (order, report.row(order).flops, flops)


@pytest.mark.parametrize("n, m1, m2, m3", CHAINS)
def test_cs182_predicted_column_equals_the_count(n, m1, m2, m3):
    report = jac.compare(chain3, *dense_chain(n, m1, m2, m3), wrt="x", repeats=1, min_time=0)
    for order in ("forward", "reverse", "jvp", "vjp"):
        row = report.row(order)
        assert row.predicted == row.flops == cs182_prediction([n, m1, m2, m3], order)
    assert report.row("optimal").predicted is None and report.row("bracket").predicted is None
    assert any("dense chain of widths [%d, %d, %d, %d]" % (n, m1, m2, m3) in note for note in report.notes)


def test_chain_dims_of_the_one_network():
    args = dense_chain(7, 5, 9, 3)
    plan = jac.jacobian(chain3, wrt="x").plan(*args)
    assert chain_dims(plan.networks[0].network) == [7, 5, 9, 3]
    # not a dense chain: an elementwise link is a delta, a batch label is shared
    plan = jac.jacobian(mlp, wrt="x", batched="x").plan(*mlp_args((4, 5, 6, 3), batch=2))
    assert chain_dims(plan.networks[0].network) is None


def test_no_prediction_column_for_a_batched_network():
    report = jac.compare(mlp, *mlp_args((4, 5, 6, 3), batch=2), wrt="x", batched="x", repeats=1, min_time=0)
    assert all(r.predicted is None for r in report.rows)


# ------------------------------------------------------------------ every order agrees


def residual(x, W1, b1, W2, b2):
    return fn.add(fn.linear(fn.relu(fn.linear(x, W1, b1)), W2, b2), x)


def residual_args(D, H, batch, seed=0):
    r = np.random.default_rng(seed)
    return (r.normal(size=(batch, D)), r.normal(size=(H, D)), r.normal(size=H), r.normal(size=(D, H)), r.normal(size=D))


CASES = {
    "dense chain": (chain3, dense_chain(6, 4, 7, 5), "x", None, (5, 6)),
    "batched MLP, per sample": (mlp, mlp_args((6, 8, 7, 3), batch=4), "x", "x", (4, 3, 6)),
    "batched MLP, shared W1": (mlp, mlp_args((6, 8, 7, 3), batch=4), "W1", "x", (4, 3, 8, 6)),
    "unbatched MLP": (mlp, mlp_args((6, 8, 7, 3), batch=0), "x", None, (3, 6)),
    "residual block": (residual, residual_args(5, 9, batch=3), "x", "x", (3, 5, 5)),
    "residual block, W1": (residual, residual_args(5, 9, batch=3), "W1", "x", (3, 5, 9, 5)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_order_agrees_with_the_optimal_one(case):
    f, args, wrt, batched, shape = CASES[case]
    report = jac.compare(f, *args, wrt=wrt, batched=batched, repeats=1, min_time=0)
    assert [r.order for r in report.rows][:len(DEFAULT_ORDERS)] == list(DEFAULT_ORDERS)  # + elimination rows
    assert report.jacobian_shape == shape
    for r in report.rows:
        assert r.max_abs_diff < 1e-12 and r.max_rel_diff < 1e-12, (r.order, r.max_abs_diff)
        assert r.flops > 0 and r.seconds >= 0 and r.repeats == 1 and r.largest_elements > 0
    # and the reference itself is right: the plain jacobian with the forward order gives the same tensor
    J = jac.jacobian(f, wrt=wrt, batched=batched, order="forward")(*args)
    assert J.shape == shape


def test_a_bottleneck_chain_is_much_cheaper_in_the_optimal_and_bracket_orders():
    # n -> n -> k -> n -> n: each pure mode pays about 2 n^3, meeting at the k-wide middle about 6 n^2 k
    n, k = 48, 2
    r = np.random.default_rng(1)
    Ws = [r.normal(size=s) for s in ((n, n), (k, n), (n, k), (n, n))]

    def neck(x, W1, W2, W3, W4):
        return fn.matmul(W4, fn.matmul(W3, fn.matmul(W2, fn.matmul(W1, x))))
    report = jac.compare(neck, r.normal(size=n), *Ws, wrt="x", repeats=1, min_time=0)
    pure = min(report.row("forward").flops, report.row("reverse").flops)
    assert report.row("forward").flops == report.row("reverse").flops == 2 * (n * n * k + n * k * n + n * n * n)
    for order in ("optimal", "bracket"):
        assert report.row(order).flops == 2 * (n * n * k + n * k * n + n * k * n)   # (W4 W3)(W2 W1)
        assert report.row(order).flops * 5 < pure
    assert max(r.max_abs_diff for r in report.rows) < 1e-9


@pytest.mark.parametrize("m", [2, 4, 16, 32])
def test_reverse_wins_with_fewer_outputs_than_inputs_forward_with_more(m):
    # input width n = 8 (CS182: JVPs cost per input, VJPs per output); optimal takes the cheaper
    n = 8
    report = jac.compare(mlp, *mlp_args((n, 16, 16, m), batch=0), wrt="x",
                         orders=("forward", "reverse", "optimal"), repeats=1, min_time=0)
    f, r = report.row("forward").flops, report.row("reverse").flops
    assert (r < f) if m < n else (f < r)
    assert report.row("optimal").flops == min(f, r)


def test_forward_and_reverse_cost_the_same_when_outputs_equal_inputs():
    report = jac.compare(mlp, *mlp_args((8, 16, 16, 8), batch=0), wrt="x",
                         orders=("forward", "reverse"), repeats=1, min_time=0)
    assert report.row("forward").flops == report.row("reverse").flops


# ------------------------------------------------------------------ options and the report


def test_unknown_order_lists_the_valid_ones():
    with pytest.raises(ValueError) as e:
        jac.compare(chain3, *dense_chain(3, 2, 2, 2), wrt="x", orders=("forward", "sideways"))
    for name in DEFAULT_ORDERS:
        assert repr(name) in str(e.value)
    assert "'sideways'" in str(e.value)


def test_one_order_given_as_a_string_is_that_order():
    report = jac.compare(chain3, *dense_chain(3, 2, 2, 2), wrt="x", orders="reverse", repeats=1, min_time=0)
    assert [r.order for r in report.rows] == ["reverse"]


def test_empty_orders_is_an_error():
    with pytest.raises(ValueError, match="orders is empty"):
        jac.compare(chain3, *dense_chain(3, 2, 2, 2), wrt="x", orders=())


def test_wrt_names_one_argument():
    with pytest.raises(ValueError, match="one argument"):
        jac.compare(chain3, *dense_chain(3, 2, 2, 2), wrt=("x", "W1"))


def test_report_prints_its_columns_and_every_order_and_serializes():
    seen = []
    report = jac.compare(chain3, *dense_chain(5, 4, 3, 2), wrt="x", repeats=2, min_time=0, progress=seen.append)
    text = str(report)
    for header in ("order", "FLOPs", "x best", "CS182", "largest", "time ms", "max |diff|", "how"):
        assert header in text
    lines = text.splitlines()
    for order in DEFAULT_ORDERS:
        assert any(line.startswith(order) for line in lines), order
    assert all(line == line.rstrip() for line in lines)
    # one progress line per order (the reference first)
    assert len(seen) == len(DEFAULT_ORDERS) and seen[0].startswith("optimal")
    d = json.loads(json.dumps(report.to_dict()))
    assert [r["order"] for r in d["rows"]] == list(DEFAULT_ORDERS)
    assert d["jacobian_shape"] == [2, 5]
    assert {"flops", "predicted", "seconds", "max_abs_diff", "how"} <= set(d["rows"][0])


def test_a_constant_function_has_a_zero_jacobian_in_every_order():
    # the sweeps used to index the graph with the missing output node (TypeError)
    x, W = np.ones((2, 3)), np.ones((2, 2))
    report = jac.compare(lambda x, W: np.ones(4), x, W, wrt="x", repeats=1, min_time=0)
    assert report.jacobian_shape == (4, 2, 3)
    assert all(r.flops == 0 and r.max_abs_diff == 0 for r in report.rows)


# ------------------------------------------------------------------ timing: warm-up, repeats, min_time, spread


class FakeClock:
    """perf_counter for comparison's timer: each call of ``call`` advances it by the next step."""

    def __init__(self, steps):
        self.now, self.steps, self.calls = 0.0, list(steps), 0

    def perf_counter(self):
        return self.now

    def call(self):
        self.now += self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        return self.calls


@pytest.mark.parametrize("repeats, min_time, timed", [
    (3, 0.0, 3),      # the count alone
    (2, 0.5, 4),      # 4 calls of 0.125 s reach 0.5 s
    (6, 0.5, 6),      # both limits: the count is the larger
    (1, 0.0, 1),
])
def test_timer_warms_up_then_times_until_both_limits(monkeypatch, repeats, min_time, timed):
    clock = FakeClock([10.0, 0.125])   # the warm-up call is slow (tracing, planning): never timed
    monkeypatch.setattr(comparison.time, "perf_counter", clock.perf_counter)
    t, result = comparison._timed(clock.call, repeats, min_time)
    assert clock.calls == timed + 1 and result == timed + 1      # the last call's result
    assert t.count == timed and t.max == t.median == 0.125


def test_timing_median_quartiles_and_range():
    t = comparison.Timing.of([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (t.median, t.q1, t.q3, t.min, t.max, t.count) == (3.0, 2.0, 4.0, 1.0, 5.0, 5)
    one = comparison.Timing.of([0.5])
    assert (one.median, one.q1, one.q3, one.count) == (0.5, 0.5, 0.5, 1)


def test_rows_hold_the_spread_and_the_count_of_timed_calls():
    report = jac.compare(chain3, *dense_chain(5, 4, 3, 2), wrt="x", repeats=3, min_time=0.02)
    for r in report.rows:
        assert r.repeats >= 3
        assert r.repeats * r.seconds_max >= 0.02          # the timed calls add up to min_time at least
        assert 0 < r.seconds_min <= r.seconds_q1 <= r.seconds <= r.seconds_q3 <= r.seconds_max
    assert report.timing == {"warmup": 1, "repeats": 3, "min_time": 0.02}
    text = str(report)
    for header in ("time ms", "IQR ms", "runs"):
        assert header in text
    assert "median and interquartile range (IQR) of >= 3 calls and >= 0.02 s per order, after 1 warm-up call" in text
    d = json.loads(json.dumps(report.to_dict()))
    assert d["timing"]["min_time"] == 0.02 and "threads" in d["blas"]
    assert {"seconds", "seconds_q1", "seconds_q3", "seconds_min", "seconds_max", "repeats"} <= set(d["rows"][0])


@pytest.mark.parametrize("kwargs, exc, argument", [
    ({"repeats": 0}, ValueError, "repeats"),
    ({"repeats": -1}, ValueError, "repeats"),
    ({"repeats": 2.5}, TypeError, "repeats"),
    ({"repeats": True}, TypeError, "repeats"),
    ({"repeats": "3"}, TypeError, "repeats"),
    ({"min_time": -1}, ValueError, "min_time"),
    ({"min_time": float("nan")}, ValueError, "min_time"),
    ({"min_time": float("inf")}, ValueError, "min_time"),
    ({"min_time": "1"}, TypeError, "min_time"),
    ({"orders": None}, TypeError, "orders"),
    ({"orders": 5}, TypeError, "orders"),
    ({"orders": [1]}, ValueError, "unknown order 1"),
    ({"progress": "yes"}, TypeError, "progress"),
    ({"wrt": None}, ValueError, "wrt"),
])
def test_bad_options_are_one_line_errors_naming_the_argument(kwargs, exc, argument):
    with pytest.raises(exc) as e:
        jac.compare(chain3, *dense_chain(3, 2, 2, 2), **{"wrt": "x", **kwargs})
    message = str(e.value)
    assert message.startswith("compare: ") and argument in message and "\n" not in message
    assert type(e.value) is exc


# ------------------------------------------------------------------ BLAS threads


def blas_variables():
    return sorted({name for names in comparison._BLAS_ENV.values() for name in names})


def test_blas_threads_from_the_environment_without_threadpoolctl(monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)          # as if not installed
    for name in blas_variables():
        monkeypatch.setenv(name, "3")
    info = comparison.blas_threads()
    assert info["threads"] == 3 and info["source"] in blas_variables()
    for name in blas_variables():
        monkeypatch.delenv(name)
    info = comparison.blas_threads()
    assert info["threads"] == "unknown" and "is set" in info["source"]
    assert "threads unknown" in comparison.describe_blas(info)


def test_blas_threads_from_threadpoolctl_when_installed(monkeypatch):
    fake = types.ModuleType("threadpoolctl")
    fake.threadpool_info = lambda: [{"user_api": "openmp", "internal_api": "openmp", "num_threads": 16},
                                    {"user_api": "blas", "internal_api": "openblas", "num_threads": 7}]
    monkeypatch.setitem(sys.modules, "threadpoolctl", fake)
    info = comparison.blas_threads()
    assert info == {"library": "openblas", "threads": 7, "source": "threadpoolctl"}
    assert comparison.describe_blas(info) == "BLAS openblas, 7 threads (threadpoolctl)"
    report = jac.compare(chain3, *dense_chain(3, 2, 2, 2), wrt="x", orders="optimal", repeats=1, min_time=0)
    assert report.blas == info and "BLAS openblas, 7 threads (threadpoolctl)" in str(report)


# ------------------------------------------------------------------ the CS182 column


@pytest.mark.parametrize("case, why", [
    ("batched MLP, per sample", "batched over 'x'"),
    ("unbatched MLP", "not one dense matrix"),
])
def test_an_empty_cs182_column_says_which_pattern_it_needs(case, why):
    f, args, wrt, batched, _ = CASES[case]
    report = jac.compare(f, *args, wrt=wrt, batched=batched, repeats=1, min_time=0)
    assert all(r.predicted is None for r in report.rows)
    note = next(n for n in report.notes if n.startswith("CS182 column empty"))
    assert "an unbatched chain of dense links" in note and why in note
    assert "CS182 column empty" in str(report)


def test_a_filled_cs182_column_has_no_such_note():
    report = jac.compare(chain3, *dense_chain(4, 3, 5, 2), wrt="x", repeats=1, min_time=0)
    assert not any(n.startswith("CS182 column empty") for n in report.notes)
    report = jac.compare(chain3, *dense_chain(4, 3, 5, 2), wrt="x", orders="optimal", repeats=1, min_time=0)
    assert not any("CS182" in n for n in report.notes)          # no row could have a formula
