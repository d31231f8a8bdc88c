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


# ------------------------------------------------------------------ readable on a projector

WIDTH = 100
GOLDEN = pathlib.Path(__file__).parent / "golden" / "explain_cs224n.txt"


def window_score(x, W, b, u):
    """The CS224n lecture's window scorer: s = u^T sigmoid(W x + b)."""
    z = W @ x + b
    h = fn.sigmoid(z)
    s = u @ h
    return s


def cs224n_text() -> str:
    """Clark's network w.r.t. W and x (batch of 4, per sample), and the lecture's scorer w.r.t. x."""
    parts = [str(jac.explain(clark, *clark_args(), wrt=w, batched="x", dims=CLARK)) for w in ("W", "x")]
    r = np.random.default_rng(1)
    parts.append(str(jac.explain(window_score, r.normal(size=Dx), r.normal(size=(Dh, Dx)), r.normal(size=Dh),
                                 r.normal(size=Dh), wrt="x", dims={"Dx": Dx, "Dh": Dh})))
    return "\n\n".join(parts) + "\n"


def test_cs224n_explanation_matches_the_golden_file():
    """The whole text, compared line by line with tests/golden/explain_cs224n.txt.

    After an intended change of the output, regenerate the file and review its diff:
        JACOBIANS_REGEN_GOLDEN=1 python -m pytest tests/test_explain.py -k golden
    """
    import os
    text = cs224n_text()
    if os.environ.get("JACOBIANS_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text.splitlines() == GOLDEN.read_text().splitlines()


def test_cs224n_explanation_fits_a_projector_and_names_the_variables():
    text = cs224n_text()
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    for name in ("z", "h", "theta", "J", "s"):
        assert f"\n{name} = " in "\n" + re.sub(r"\n\d+\. ", "\n", text), name
    assert "linear_0" not in text and "relu_0" not in text and "sigmoid_0" not in text


def test_closed_forms_of_clark_and_the_lecture():
    e = jac.explain(clark, *clark_args(), wrt="W", batched="x", dims=CLARK)
    lin, relu, _, ce = e.steps
    assert "backprop sends g to g x^T (delta x^T)" in lin.closed
    assert relu.closed.startswith("d h/d z = diag([z > 0])")
    assert ce.closed.startswith("d J/d theta = (yhat - y)^T, yhat = softmax(theta)")
    # Clark's delta_2 = dJ/dz, then dJ/dW = delta_2^T x^T
    assert e.gradient == "delta x^T, delta = (d J/d z)^T = diag([z > 0]) U^T (yhat - y)"
    e = jac.explain(clark, *clark_args(), wrt="x", batched="x", dims=CLARK)
    assert e.closed[0] == "(yhat - y)^T U diag([z > 0]) W"
    assert e.gradient == "W^T diag([z > 0]) U^T (yhat - y)"           # W^T diag(f'(z)): the layer's input
    r = np.random.default_rng(1)
    e = jac.explain(window_score, r.normal(size=Dx), r.normal(size=(Dh, Dx)), r.normal(size=Dh), r.normal(size=Dh))
    assert e.steps[2].closed.startswith("d h/d z = diag(h (1 - h))")     # sigma'(z) = h (1 - h) on a diagonal
    assert e.closed[0] == "u^T diag(h (1 - h)) W" and e.gradient == "W^T diag(h (1 - h)) u"


def test_no_line_says_a_thing_equals_itself():
    for text in (cs224n_text(), str(jac.explain(lambda x, W: fn.linear(x, W), np.ones(3), np.ones((2, 3)), wrt="W"))):
        for line in text.splitlines():
            m = re.search(r"(\([^()]*\)) = (\([^()]*\))$", line)
            assert not (m and m.group(1) == m.group(2)), line
    e = jac.explain(lambda x, W: fn.linear(x, W), np.ones(3), np.ones((2, 3)), wrt="W")
    assert e.lineup == ["d linear_0/d W (2x6) = step 1 alone (one factor)"]
    assert e.closed == ["(I kron x^T)"]


def test_one_label_set_across_sections():
    e = jac.explain(clark, *clark_args(), wrt="x", batched="x", dims=CLARK)
    assert e.labels == {"n": (B, True), "i": (Nc, False), "j": (Dh, False), "k": (Dx, False)}
    assert "n = the batch (4 samples), i = 3 (Nc), j = 5 (Dh), k = 6 (Dx)" in str(e).replace("\n      ", " ")
    # every letter of the path's network and of its pairwise steps is one the steps use for that axis
    (net,) = e.networks
    assert net["sizes"] == {"n": B, "i": Nc, "j": Dh, "k": Dx}
    step_letters = set("".join(s.subscripts for s in e.steps).replace(",", "").replace("->", ""))
    assert set(net["eq"].replace(",", "").replace("->", "")) <= step_letters
    assert {ch for eq, _ in net["steps"] for ch in eq if ch.isalpha()} <= set(net["sizes"])
    # no size name is an einsum letter: B is not a label, and a one-letter dims name moves the batch off n
    assert "B" not in step_letters
    e = jac.explain(clark, *clark_args(), wrt="x", batched="x", dims={"n": Dx, "Dh": Dh, "Nc": Nc})
    letters = set("".join(s.subscripts for s in e.steps))
    assert "n" not in letters and "N" not in letters and e.batch_label != "n"


def test_flops_add_up_to_the_header():
    r = np.random.default_rng(0)

    def block(x, W1, W2):
        return fn.linear(fn.relu(fn.linear(x, W1)), W2) + x
    e = jac.explain(block, r.normal(size=(3, 4)), r.normal(size=(7, 4)), r.normal(size=(4, 7)), wrt="x", batched="x")
    net, add = e.networks
    assert add["kind"] == "add" and add["flops"] == 3 * 4 * 4 * 2      # one read-add-write per element of (3, 4, 4)
    assert e.plan.flops == net["flops"] + add["flops"]
    text = str(e).replace("\n    ", " ")
    assert f"{e.plan.flops} FLOPs = {net['flops']} (d add_0/d x) + {add['flops']} (add deltas)" in text
    assert f"add deltas into shape (3, 4, 4): iI,n->niI, {add['flops']} FLOPs" in text
    assert net["eq"].endswith("->niI")                                 # the same letters as the add step


def test_names_from_the_source_loops_and_fallbacks():
    r = np.random.default_rng(0)

    def deep(x, W):
        h = x
        for _ in range(3):
            h = fn.tanh(fn.linear(h, W))
        return h
    e = jac.explain(deep, r.normal(size=4), r.normal(size=(4, 4)))
    assert [s.node for s in e.steps] == ["linear_0", "h", "linear_1", "h_1", "linear_2", "h_2"]

    def shadow(x, W):
        x = fn.tanh(x)                    # an argument's name is taken: the node is x_1
        return fn.linear(x, W)
    e = jac.explain(shadow, r.normal(size=4), r.normal(size=(2, 4)))
    assert [s.node for s in e.steps] == ["x_1", "linear_0"]
    e = jac.explain(lambda x, W: fn.tanh(fn.linear(x, W)), r.normal(size=4), r.normal(size=(2, 4)))
    assert [s.node for s in e.steps] == ["linear_0", "tanh_0"]        # no assignment: the op's own names


def test_long_lines_wrap_and_keep_every_character():
    from jacobians.explain import _wrap
    line = "   J = einsum('" + ",".join("abcdefgh"[:k] for k in range(1, 9)) * 3 + "->a', " + ", ".join(["W"] * 30) + ")"
    out = _wrap(line)
    assert len(out) > 1 and all(len(l) <= WIDTH for l in out)
    assert "".join(out).replace(" ", "") == line.replace(" ", "")       # only spaces added: nothing cut
    assert all(l.startswith(" " * 7) for l in out[1:])                 # continuations indented past the line's own
    assert _wrap("x" * 250) == ["x" * 100, " " * 4 + "x" * 96, " " * 4 + "x" * 54]
