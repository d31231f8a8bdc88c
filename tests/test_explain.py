"""explain(): subscripts, shapes and deltas per op, Clark's dimension check, the path, shape mistakes."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import jacobians as jac
from jacobians.explain import ExplainError, Explanation

fn = jac.fn
Dx, Dh, Nc, B = 6, 5, 3, 4
CLARK = {"Dx": Dx, "Dh": Dh, "Nc": Nc}


def clark(x, W, b1, U, b2, y):
    z = fn.linear(x, W, b1)
    h = fn.relu(z)
    theta = fn.linear(h, U, b2)
    J = fn.softmax_cross_entropy(theta, y)
    return J


def clark_args(batch=B, seed=0):
    r = np.random.default_rng(seed)
    lead = (batch,) if batch else ()
    return (r.normal(size=lead + (Dx,)), r.normal(size=(Dh, Dx)), r.normal(size=Dh), r.normal(size=(Nc, Dh)),
            r.normal(size=Nc), r.integers(0, Nc, size=lead))


@pytest.fixture(scope="module")
def per_sample() -> Explanation:
    return jac.explain(clark, *clark_args(), wrt="x", batched="x", dims=CLARK)


def test_steps_run_from_the_input_with_subscripts_shapes_and_deltas(per_sample):
    e = per_sample
    assert [s.node for s in e.steps] == ["z", "h", "theta", "J"]      # the variables of clark's source
    assert [s.op for s in e.steps] == ["linear", "relu", "linear", "softmax_cross_entropy"]
    lin, relu, lin2, ce = e.steps
    # dz/dx = W[j, k] delta[n, N]: the batch is n, a delta's input side its capital (an eye operand)
    assert lin.subscripts == "jk,nN->njNk" and lin.operands == ["W", f"eye({B})"]
    assert (lin.in_shape, lin.out_shape) == ((B, Dx), (B, Dh))
    assert lin.jacobian_shape == (B, Dh, B, Dx) and lin.per_sample_shape == (B, Dh, Dx)
    assert lin.deltas == [("n", 0, 0, B)]
    assert lin.call == "linear(x=x, W=W, b=b1)"
    # elementwise: every axis tied, the derivative enters as a (B, Dh) array
    assert relu.subscripts == "nj,nN,jJ->njNJ" and relu.operands[0] == "relu'(z)"
    assert relu.per_sample_shape == (B, Dh, Dh) and len(relu.deltas) == 2
    assert lin2.operands[0] == "U" and lin2.per_sample_shape == (B, Nc, Dh)
    assert ce.argument == "logits" and ce.per_sample_shape == (B, Nc) and ce.out_shape == (B,)
    text = str(e)
    assert "d z/d x = einsum('jk,nN->njNk', W, eye(4))" in text
    assert "per sample (4, 5, 6), dense (4, 5, 4, 6)" in text
    assert "-- every axis tied: a diagonal" in text and "-- the per-sample batch" in text


def test_clark_dimension_check_lines_up(per_sample):
    e = per_sample
    # d J / d x, and Clark's own check for d J / d z: (1 x Dh) = (1 x Nc)(Nc x Dh)(Dh x Dh)
    assert e.lineup[0].startswith("d J/d x (1x6) = (1x3)(3x5)(5x5)(5x6)")
    assert "(1xDx) = (1xNc)(NcxDh)(DhxDh)(DhxDx)" in e.lineup[0]
    dz = [l for l in e.lineup if "/d z " in l]
    assert len(dz) == 1
    assert "(1x5) = (1x3)(3x5)(5x5)" in dz[0]
    assert "(1xDh) = (1xNc)(NcxDh)(DhxDh)" in dz[0]
    assert "(1xDh) = (1xNc)(NcxDh)(DhxDh)" in str(e)
    assert any("dimensions line up" in n for n in e.notes)


def test_the_plan_is_shown_with_path_and_flops(per_sample):
    e = per_sample
    (net,) = e.networks
    assert net["eq"] == "ni,ij,nj,jk->nk"          # the batch n, then Nc, Dh, Dx: deltas merged away
    assert net["path"] == [tuple(p) for p in e.plan.networks[0].path]
    assert net["flops"] == e.plan.flops == sum(f for _, f in net["steps"])
    assert [what.split(" ")[0] for _, _, what in net["operands"]] == [
        "softmax_cross_entropy'(theta)", "U", "relu'(z)", "W"]
    assert e.order_flops["optimal"] == e.plan.flops <= min(e.order_flops["forward"], e.order_flops["reverse"])
    text = str(e)
    assert "ni,ij,nj,jk->nk" in text and f"path {net['path']}" in text and "FLOPs" in text


def test_a_shared_parameter_and_an_unbatched_sample():
    e = jac.explain(clark, *clark_args(), wrt="W", batched="x", dims=CLARK)
    first = e.steps[0]
    assert first.argument == "W" and first.subscripts == "nk,jJ->njJk" and first.operands == ["x", "eye(5)"]
    assert first.jacobian_shape == (B, Dh, Dh, Dx) and first.per_sample_shape is None
    assert first.layout.startswith("shared parameter")
    assert "(1x30) = (1x3)(3x5)(5x5)(5x30)" in e.lineup[0]
    assert "(1xDh*Dx) = (1xNc)(NcxDh)(DhxDh)(DhxDh*Dx)" in e.lineup[0]
    e = jac.explain(clark, *clark_args(batch=0), wrt="x", dims=CLARK)
    assert e.lineup[0].startswith("d J/d x (1x6) = (1x3)(3x5)(5x5)(5x6)")
    assert all(s.per_sample_shape is None for s in e.steps)


def test_a_mean_over_the_batch_uses_full_sizes():
    r = np.random.default_rng(0)

    def loss(x, W):
        return fn.mean(fn.tanh(fn.matmul(x, W)))
    e = jac.explain(loss, r.normal(size=(3, 4)), r.normal(size=(4, 2)), wrt="x", batched="x")
    assert e.lineup[0] == "d mean_0/d x (1x12) = (1x6)(6x6)(6x12)"
    assert e.steps[-1].layout.startswith("output without batch axis")
    assert e.steps[-1].ones == "ni"                 # the batch n and the feature axis: a sum over both
    assert any("full ones" in n for n in e.notes)


def test_a_skip_connection_sums_two_paths():
    r = np.random.default_rng(0)

    def block(x, W1, W2):
        return fn.linear(fn.relu(fn.linear(x, W1)), W2) + x
    e = jac.explain(block, r.normal(size=(3, 4)), r.normal(size=(7, 4)), r.normal(size=(4, 7)), wrt="x", batched="x")
    assert len(e.paths) == 2
    assert e.lineup == ["d add_0/d x (4x4) = (4x4)(4x7)(7x7)(7x4) + (4x4)"]
    assert [(s.node, s.argument) for s in e.steps][-2:] == [("add_0", "a"), ("add_0", "b")]
    assert "add deltas" in str(e)


def test_degenerate_functions_are_explained_not_crashed():
    x, W = np.ones(3), np.ones((2, 3))
    assert "the Jacobian is the identity" in str(jac.explain(lambda x, W: x, x, W))
    assert "does not depend on x" in str(jac.explain(lambda x, W: fn.tanh(W), x, W))
    assert "returns a constant" in str(jac.explain(lambda x, W: np.ones(2), x, W))


# ------------------------------------------------------------------ shape mistakes


def test_a_shape_mistake_names_the_op_its_input_shapes_and_the_line():
    r = np.random.default_rng(0)

    def net(x, W1, W2):
        h = fn.tanh(fn.linear(x, W1))
        return fn.linear(h, W2)                    # W2 has 6 columns, h has 5 features
    with pytest.raises(ExplainError) as info:
        jac.explain(net, r.normal(size=(3, 4)), r.normal(size=(5, 4)), r.normal(size=(2, 6)), wrt="x", batched="x")
    e = info.value
    assert isinstance(e, ValueError)
    msg = str(e)
    assert "\n" not in msg
    assert "at linear_1 (op linear)" in msg
    assert "x = tanh_0 (3, 5)" in msg and "W = W2 (2, 6)" in msg
    assert "return fn.linear(h, W2)" in msg and "net()" in msg
    assert "expected x (..., D) and W (H, D) with the same D" in msg       # the op's own words
    assert "Traced before it: linear_0 (3, 5), tanh_0 (3, 5)" in msg
    assert (e.op, e.node, e.shapes) == ("linear", "linear_1", {"x": (3, 5), "W": (2, 6)})
    assert isinstance(e.original, ValueError)


def test_a_mistake_in_the_first_op():
    def net(x, y):
        return fn.add(x, y)
    with pytest.raises(ValueError, match=r"at add_0 \(op add\).*a = x \(3,\), b = y \(4,\).*do not broadcast"):
        jac.explain(net, np.ones(3), np.ones(4))


def test_bad_arguments_to_explain():
    x, W = np.ones(3), np.ones((2, 3))
    with pytest.raises(ValueError, match="one argument"):
        jac.explain(lambda x, W: W @ x, x, W, wrt=("x", "W"))
    with pytest.raises(ValueError, match="not an argument"):
        jac.explain(lambda x, W: W @ x, x, W, wrt="q")
    with pytest.raises(ValueError, match="valid options"):
        jac.explain(lambda x, W: W @ x, x, W, order="sideways")
    with pytest.raises(ValueError, match="distinct"):
        jac.explain(lambda x, W: W @ x, x, W, dims={"n": 3, "m": 3})


def test_nothing_below_the_tools_layer_imports_explain():
    pkg = pathlib.Path(jac.__file__).parent
    for name in ("errors", "limits", "labels", "factored", "ops", "network", "graph", "plan", "planner", "execute", "transforms", "modes", "comparison"):
        files = sorted((pkg / name).glob("*.py")) if (pkg / name).is_dir() else [pkg / f"{name}.py"]  # a package: each module
        for path in files:
            src = path.read_text()
            assert not re.search(r"^\s*(from\s+\S*explain\S*\s+import|import\s+\S*explain)|from\s+\.\s+import[^\n]*\bexplain\b",
                                 src, re.M), path.name
