"""Index-map ops inside composed functions, against central differences.

``jac.jacobian`` of functions that slice, look up, concatenate and convolve, in every
accumulation order: the planner contracts index maps as gathers and scatter-adds (map steps).
The JVP/VJP sweeps of :mod:`jacobians.modes` already go through ``Factored.product`` and are
checked here without marks, as are the relabeling ops, which carry no map.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import jacobians as jac
from jacobians.graph import trace
from jacobians.modes import sweep_jacobian
from jacobians.ops.indexing import concatenate_in
from jacobians.testing import expand_batch, numerical_jacobian

fn = jac.fn
ORDERS = ("forward", "reverse", "optimal")
pending = pytest.mark.xfail(reason="numpy indexing on traced values pending", strict=True)

RNG = np.random.default_rng(31)
B, D, H = 3, 6, 7
IDS = RNG.integers(0, 9, size=(B, 4))


def numeric(f, args: dict, name: str) -> np.ndarray:
    return numerical_jacobian(lambda v: np.asarray(f(**{**args, name: v}), dtype=np.float64), args[name])


def sliced(x, W):                                  # x[:, 1:5] written with the op
    return fn.tanh(fn.getitem(fn.linear(x, W), (slice(None), slice(1, 5)))) + fn.getitem(x, (slice(None), slice(0, 4)))


def sliced_numpy(x, W):                            # the same as a user writes it
    return np.tanh(fn.linear(x, W)[:, 1:5]) + x[:, :4]


def looked_up(E, W):                               # an embedding classifier: mean of E[ids], then linear
    return fn.linear(fn.mean(fn.embedding(IDS, E), axis=1), W)


def looked_up_numpy(E, W):
    return fn.linear(E[IDS].mean(axis=1), W)


def concatenated(x, W):                            # GLU-style halves side by side
    return fn.tanh(concatenate_in(fn, [fn.tanh(x), fn.linear(x, W)], axis=1))


def concatenated_numpy(x, W):
    return np.concatenate([np.tanh(x), fn.linear(x, W)], axis=1)


def convolved(x, K, b):                            # conv, tanh, max pool, average pool, flatten
    h = fn.max_pool2d(fn.tanh(fn.conv2d(x, K, b, padding=1)), 2)
    return fn.reshape(fn.avg_pool2d(h, 2, stride=1), (x.shape[0], -1))


def _args(f):
    x = RNG.normal(size=(B, D))
    return {
        sliced: dict(x=x, W=RNG.normal(size=(H, D))),
        sliced_numpy: dict(x=x, W=RNG.normal(size=(H, D))),
        looked_up: dict(E=RNG.normal(size=(9, 5)), W=RNG.normal(size=(3, 5))),
        looked_up_numpy: dict(E=RNG.normal(size=(9, 5)), W=RNG.normal(size=(3, 5))),
        concatenated: dict(x=x, W=RNG.normal(size=(H, D))),
        concatenated_numpy: dict(x=x, W=RNG.normal(size=(H, D))),
        convolved: dict(x=RNG.normal(size=(2, 2, 6, 6)), K=RNG.normal(size=(3, 2, 3, 3)), b=RNG.normal(size=3)),
    }[f]


FUNCS = [sliced, sliced_numpy, looked_up, looked_up_numpy, concatenated, concatenated_numpy, convolved]
FIRST = {sliced: "x", sliced_numpy: "x", looked_up: "E", looked_up_numpy: "E", concatenated: "x", concatenated_numpy: "x",
         convolved: "x"}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("f", [f for f in FUNCS],
                         ids=lambda f: f.__name__)
def test_jacobian_through_index_maps(f, order):
    args = _args(f)
    wrt = tuple(args)
    J = jac.jacobian(f, wrt=wrt, order=order)(**args)
    for name in wrt:
        np.testing.assert_allclose(J[name], numeric(f, args, name), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("f", [sliced, concatenated, convolved], ids=lambda f: f.__name__)
def test_per_sample_jacobian_through_index_maps(f):
    args = _args(f)
    name = FIRST[f]
    J = jac.jacobian(f, wrt=name, batched=name)(**args)
    J = J[name] if isinstance(J, dict) else J
    out = np.asarray(f(**args))
    np.testing.assert_allclose(expand_batch(J, out.ndim), numeric(f, args, name), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("mode", ["jvp", "vjp"])
@pytest.mark.parametrize("f", [sliced, looked_up, concatenated, convolved], ids=lambda f: f.__name__)
def test_jvp_and_vjp_sweeps_go_through_maps(f, mode):
    """modes.sweep_jacobian contracts every op's Factored.product: gathers and scatter-adds."""
    args = _args(f)
    name = FIRST[f]
    bound = inspect.signature(f).bind(**args)
    graph = trace(f, bound, list(args))
    sweep = sweep_jacobian(graph, name, mode)
    np.testing.assert_allclose(sweep.jacobian, numeric(f, args, name), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("order", ORDERS)
def test_relabelings_compose_today(order):
    """broadcast_to, expand_dims, squeeze, swapaxes, moveaxis carry no map: the composer handles them now."""
    def f(x, W):
        h = fn.expand_dims(fn.tanh(fn.linear(x, W)), 1)                 # (B, 1, H)
        h = fn.broadcast_to(h, (B, 2, H))                               # (B, 2, H)
        h = fn.swapaxes(fn.moveaxis(h, 2, 1), 1, 2)                     # (B, 2, H)
        return fn.squeeze(fn.sum(h, axis=1, keepdims=True), 1)          # (B, H)
    args = dict(x=RNG.normal(size=(B, D)), W=RNG.normal(size=(H, D)))
    J = jac.jacobian(f, wrt=("x", "W"), order=order)(**args)
    for name in ("x", "W"):
        np.testing.assert_allclose(J[name], numeric(f, args, name), rtol=1e-6, atol=1e-8)


def test_map_steps_are_costed_and_shown():
    """A map step's cost is elements moved (memory traffic), apart from FLOPs: the plan, the comparison
    table and explain show it; an explicit path still applies to a single network only."""
    args = _args(sliced_numpy)
    plan = jac.jacobian(sliced_numpy, wrt="x", batched="x", order="reverse").plan(**args)
    maps = [s for s in plan.steps if type(s).__name__ == "MapStep"]
    assert maps and plan.moved == sum(s.cost.moved for s in maps) > 0
    assert all(s.cost.flops == 0 and s.cost.moved > 0 for s in maps)
    assert "moved" in str(plan) and "scatter" in str(plan)
    report = jac.compare(sliced_numpy, **args, wrt="x", batched="x", orders=("forward", "reverse"), repeats=1,
                         min_time=0.0)
    assert all(r.moved > 0 for r in report.rows) and " moved " in str(report)
    text = str(jac.explain(sliced_numpy, **args, wrt="x", batched="x"))
    assert "index map" in text and "elements moved" in text
    with pytest.raises(ValueError, match="single network"):
        jac.jacobian(sliced_numpy, wrt="x", order=[(0, 1)])(**args)


def test_a_per_sample_lookup_scatters_straight_into_the_result():
    """d logits / d E per sample is (B, C, V, d): the size of the result is the peak. The scatter writes
    the caller's layout itself; no transposed copy (which doubled the embedding benchmark's peak)."""
    ids = RNG.integers(0, 40, size=(4, 6))
    E, W = RNG.normal(size=(40, 3)), RNG.normal(size=(2, 3))
    f = lambda ids, E, W: fn.linear(fn.mean(fn.embedding(ids, E), axis=1), W)
    jf = jac.jacobian(f, wrt="E", batched="ids")
    plan = jf.plan(ids, E, W)
    assert [type(s).__name__ for s in plan.steps] == ["NetStep", "MapStep"]
    assert plan.steps[-1].shape == (4, 2, 40, 3)
    J = jf(ids, E, W)
    for b in range(4):
        one = lambda E, W: f(ids[b:b + 1], E, W)[0]
        np.testing.assert_allclose(J[b], numeric(one, dict(E=E, W=W), "E"), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("order", ORDERS)
def test_a_replayed_plan_reads_each_calls_maps(order):
    """Plans are cached by structure; the maps (ids, argmax positions) come from each call's own trace."""
    E, W = RNG.normal(size=(9, 5)), RNG.normal(size=(3, 5))
    jf = jac.jacobian(lambda ids, E, W: fn.linear(fn.mean(fn.embedding(ids, E), axis=1), W), wrt="E", order=order)
    for ids in (IDS, (IDS + 4) % 9):
        f = lambda E, W: fn.linear(fn.mean(fn.embedding(ids, E), axis=1), W)
        np.testing.assert_allclose(jf(ids, E, W), numeric(f, dict(E=E, W=W), "E"), rtol=1e-6, atol=1e-8)
    x = RNG.normal(size=(2, 2, 6, 6))
    K, b = RNG.normal(size=(3, 2, 3, 3)), RNG.normal(size=3)
    jc = jac.jacobian(convolved, wrt="x", order=order)
    for v in (x, -x):     # other argmax positions in the max pool
        np.testing.assert_allclose(jc(v, K, b), numeric(convolved, dict(x=v, K=K, b=b), "x"), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- every index-map op alone, in every order

def _map_specs():
    from test_ops import SPECS
    return [s for s in SPECS if jac.ops.OPS[s.op].family in ("indexing", "conv") and s.unbatched is not None]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("spec", [pytest.param(s, id=s.id) for s in _map_specs()])
def test_every_map_op_composed_alone_equals_its_op_jacobian(spec, order):
    """The op's own dense Jacobian is the reference: a map step may not drop a term of its link
    (avg_pool2d's 0-d 1/divisor was dropped by reverse scatters once)."""
    from test_ops import make_args
    op = jac.ops.OPS[spec.op]
    args = make_args(spec)
    arrays, params = op.bind(args, dict(spec.params))
    names = [n for n in op.diff_arrays if arrays.get(n) is not None]
    fixed = {n: a for n, a in arrays.items() if n not in names and a is not None}
    _, dense = op(*args, batch=False, **spec.params)

    def f(*values):
        return getattr(fn, spec.op)(**fixed, **dict(zip(names, values)), **params)
    f.__signature__ = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                         for n in names])
    J = jac.jacobian(f, wrt=tuple(names), order=order)(*[arrays[n] for n in names])
    for n, Jn in zip(names, dense):
        np.testing.assert_allclose(J[n], Jn, rtol=1e-12, atol=1e-12, err_msg=f"{spec.id} d/d{n} {order}")


def test_integer_array_arguments_are_constants_of_the_call():
    """Token ids passed as an argument index a traced table (they were traced as inputs once)."""
    ids, E = RNG.integers(0, 9, size=(2, 3)), RNG.normal(size=(9, 4))
    for order in ORDERS:
        J = jac.jacobian(lambda ids, E: E[ids].sum(axis=1), wrt="E", order=order)(ids, E)
        expected = np.zeros((2, 4, 9, 4))
        for b in range(2):
            for t in range(3):
                expected[b, :, ids[b, t], :] += np.eye(4)
        np.testing.assert_array_equal(J, expected)
