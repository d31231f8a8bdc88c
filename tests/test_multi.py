"""Several outputs (tuple, list, namedtuple, dict) and several batched arguments.

Every structured result is checked against ``jacobian`` of each output alone and, for the
models, against central differences (float64) of the whole function.
"""

from __future__ import annotations

import collections
import functools
import re

import numpy as np
import pytest

import jacobians as jac
from jacobians.graph import Graph, Node, trace
from jacobians.testing import expand_batch, numerical_jacobian

fn = jac.fn
ORDERS = ("forward", "reverse", "optimal")


def rng(seed):
    return np.random.default_rng(seed)


def alone(f, k, wrt, batched, order, *args):
    """d f(...)[k] / d wrt, by a function returning that output only (f's signature)."""
    return jac.jacobian(only(f, k), wrt=wrt, batched=batched, order=order)(*args)


def only(f, k):
    @functools.wraps(f)
    def g(*a):
        return f(*a)[k]
    return g


def close(a, b, tol=1e-12):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# ---------------------------------------------------------------- models

def mlp_two(x, W1, W2):
    """Two heads on one hidden layer: the hidden value is shared by both outputs."""
    h = np.tanh(x @ W1.T)
    return fn.sigmoid(h @ W2.T), h.sum(axis=1)


def mlp_args(seed=0, B=3, D=4, H=5, O=2):
    r = rng(seed)
    return r.normal(size=(B, D)), r.normal(size=(H, D)), r.normal(size=(O, H))


def lstm(X, h0, c0, W, U):
    """An LSTM unrolled over X's T steps; gate k of the 4H pre-activation picked by a constant
    one-hot (einsum) and step t of X likewise, so the test depends on no indexing op."""
    T = X.shape[1]
    h, c = h0, c0
    for t in range(T):
        x = fn.einsum("btd,t->bd", X, np.eye(T)[t])
        pre = fn.einsum("bd,ghd->gbh", x, W) + fn.einsum("bk,ghk->gbh", h, U)
        i, f, o, g = (fn.einsum("gbh,g->bh", pre, np.eye(4)[k]) for k in range(4))
        c = fn.sigmoid(f) * c + fn.sigmoid(i) * np.tanh(g)
        h = fn.sigmoid(o) * np.tanh(c)
    return h, c


def lstm_args(seed=1, B=2, T=2, D=3, H=4):
    r = rng(seed)
    return (r.normal(size=(B, T, D)), r.normal(size=(B, H)), r.normal(size=(B, H)),
            0.5 * r.normal(size=(4, H, D)), 0.5 * r.normal(size=(4, H, H)))


def rnn3(X, h0, Wx, Wh):
    """A 3-step tanh RNN; X is (B, 3, D), step t picked by a constant one-hot."""
    h = h0
    for t in range(3):
        h = np.tanh(fn.einsum("btd,t->bd", X, np.eye(3)[t]) @ Wx.T + h @ Wh.T)
    return h


def rnn_args(seed=2, B=3, D=2, H=4):
    r = rng(seed)
    return r.normal(size=(B, 3, D)), r.normal(size=(B, H)), r.normal(size=(H, D)), 0.5 * r.normal(size=(H, H))


def numeric(f, args, k, name, names):
    """Central differences of output k of f w.r.t. argument ``name`` (float64)."""
    i = names.index(name)

    def g(v):
        a = list(args)
        a[i] = v
        out = f(*a)
        return out if k is None else out[k]
    return numerical_jacobian(g, args[i])


# ---------------------------------------------------------------- the nesting

@pytest.mark.parametrize("order", ORDERS)
def test_tuple_output_one_wrt_gives_a_tuple_of_arrays(order):
    args = mlp_args()
    J = jac.jacobian(mlp_two, wrt="W1", order=order)(*args)
    assert isinstance(J, tuple) and len(J) == 2
    assert J[0].shape == (3, 2, 5, 4) and J[1].shape == (3, 5, 4)
    for k in range(2):
        close(J[k], alone(mlp_two, k, "W1", None, order, *args))
        close(J[k], numeric(mlp_two, args, k, "W1", ["x", "W1", "W2"]), 1e-7)


@pytest.mark.parametrize("order", ORDERS)
def test_tuple_output_several_wrt_gives_a_tuple_of_dicts(order):
    args = mlp_args(1)
    J = jac.jacobian(mlp_two, wrt=("x", "W1", "W2"), batched="x", order=order)(*args)
    assert isinstance(J, tuple) and [list(j) for j in J] == [["x", "W1", "W2"]] * 2
    assert J[0]["x"].shape == (3, 2, 4)            # per sample
    assert J[1]["W2"].shape == (3, 2, 5) and not J[1]["W2"].any()   # the second head does not use W2
    for k in range(2):
        for w in ("x", "W1", "W2"):
            close(J[k][w], alone(mlp_two, k, w, "x", order, *args))


@pytest.mark.parametrize("order", ORDERS)
def test_dict_list_and_namedtuple_outputs_keep_their_structure(order):
    args = mlp_args(2)
    Out = collections.namedtuple("Out", "y s")

    def as_dict(x, W1, W2):
        y, s = mlp_two(x, W1, W2)
        return {"s": s, "y": y}

    def as_list(x, W1, W2):
        return list(mlp_two(x, W1, W2))

    def as_named(x, W1, W2):
        return Out(*mlp_two(x, W1, W2))

    def nested(x, W1, W2):
        y, s = mlp_two(x, W1, W2)
        return {"pair": (y, s), "y": y}

    ref = [alone(mlp_two, k, ("x", "W1"), None, order, *args) for k in range(2)]
    Jd = jac.jacobian(as_dict, wrt=("x", "W1"), order=order)(*args)
    assert type(Jd) is dict and list(Jd) == ["s", "y"]   # the function's key order
    Jl = jac.jacobian(as_list, wrt=("x", "W1"), order=order)(*args)
    assert type(Jl) is list and len(Jl) == 2
    Jn = jac.jacobian(as_named, wrt=("x", "W1"), order=order)(*args)
    assert type(Jn) is Out
    Jnest = jac.jacobian(nested, wrt=("x", "W1"), order=order)(*args)
    assert list(Jnest) == ["pair", "y"] and type(Jnest["pair"]) is tuple
    for w in ("x", "W1"):
        for got_y, got_s in ((Jd["y"], Jd["s"]), tuple(Jl), (Jn.y, Jn.s), Jnest["pair"]):
            close(got_y[w], ref[0][w])
            close(got_s[w], ref[1][w])
        close(Jnest["y"][w], ref[0][w])


def test_a_one_element_tuple_is_still_a_tuple():
    args = mlp_args(3)
    J = jac.jacobian(lambda x, W1, W2: (mlp_two(x, W1, W2)[0],), wrt="x")(*args)
    assert type(J) is tuple and len(J) == 1
    close(J[0], alone(mlp_two, 0, "x", None, "optimal", *args))


# ---------------------------------------------------------------- outputs that share intermediates

def chain(x, W):
    """y = tanh(x W^T), z = sigmoid(y) * y, w = sum(z): each output is an intermediate of the next."""
    y = np.tanh(x @ W.T)
    z = fn.sigmoid(y) * y
    return y, z, z.sum(axis=-1)


@pytest.mark.parametrize("perm", [(0, 1, 2), (2, 1, 0), (1, 0, 2), (0, 2, 1), (2, 0, 1), (1, 2, 0)])
@pytest.mark.parametrize("order", ORDERS)
def test_outputs_that_are_intermediates_of_each_other_in_every_order(perm, order):
    r = rng(4)
    x, W = r.normal(size=(3, 4)), r.normal(size=(5, 4))

    def f(x, W):
        outs = chain(x, W)
        return tuple(outs[k] for k in perm)
    J = jac.jacobian(f, wrt=("x", "W"), batched="x", order=order)(x, W)
    for pos, k in enumerate(perm):
        for w in ("x", "W"):
            close(J[pos][w], alone(chain, k, w, "x", order, x, W))


@pytest.mark.parametrize("order", ORDERS)
def test_the_same_output_twice_gives_two_arrays(order):
    r = rng(5)
    x, W = r.normal(size=(3, 4)), r.normal(size=(5, 4))
    J = jac.jacobian(lambda x, W: (np.tanh(x @ W.T), ) * 2, wrt="x", batched="x", order=order)(x, W)
    close(J[0], J[1], 0)
    assert not np.shares_memory(J[0], J[1])


def test_constant_outputs_and_outputs_that_ignore_an_argument_are_zeros():
    r = rng(6)
    x, W = r.normal(size=(3, 4)), r.normal(size=(5, 4))

    def f(x, W):
        return {"y": x @ W.T, "const": np.ones((2,)), "x": x, "w": W * 2.0}
    J = jac.jacobian(f, wrt=("x", "W"), batched="x")(x, W)
    assert J["const"]["x"].shape == (2, 3, 4) and not J["const"]["x"].any()
    assert J["const"]["W"].shape == (2, 5, 4) and not J["const"]["W"].any()
    close(J["x"]["x"], np.broadcast_to(np.eye(4), (3, 4, 4)), 0)   # an input returned: the identity, per sample
    assert J["x"]["W"].shape == (3, 4, 5, 4) and not J["x"]["W"].any()
    assert J["w"]["x"].shape == (5, 4, 3, 4) and not J["w"]["x"].any()
    close(J["w"]["W"], 2.0 * np.eye(20).reshape(5, 4, 5, 4), 0)
    close(J["y"]["x"], alone(f, "y", "x", "x", "optimal", x, W))


# ---------------------------------------------------------------- an LSTM's (h, c)

@pytest.mark.parametrize("order", ORDERS)
def test_lstm_h_and_c_together_equal_each_alone_and_central_differences(order):
    args = lstm_args()
    names = ["X", "h0", "c0", "W", "U"]
    wrt = ("X", "h0", "c0", "W")
    J = jac.jacobian(lstm, wrt=wrt, batched=("X", "h0", "c0"), order=order)(*args)
    B, T, D = args[0].shape
    H = args[1].shape[1]
    assert J[0]["X"].shape == (B, H, T, D) and J[1]["c0"].shape == (B, H, H)   # per sample
    assert J[0]["W"].shape == (B, H, 4, H, D)                                 # shared parameter
    for k in range(2):
        for w in wrt:
            close(J[k][w], alone(lstm, k, w, ("X", "h0", "c0"), order, *args))
            full = J[k][w] if w == "W" else expand_batch(J[k][w], 2)
            close(full, numeric(lstm, args, k, w, names), 1e-7)


def test_forward_accumulation_plans_the_shared_tangents_once():
    """d v / d x for the values h and c share is planned once: fewer FLOPs than two plans."""
    args = lstm_args(B=4, T=3)
    for w in ("X", "W"):
        both = jac.jacobian(lstm, wrt=w, batched="X", order="forward").plan(*args)
        each = [jac.jacobian(only(lstm, k), wrt=w, batched="X", order="forward").plan(*args)
                for k in range(2)]
        assert both.flops < sum(p.flops for p in each)
        assert len(both.networks) < sum(len(p.networks) for p in each)


def test_plan_prints_the_networks_of_every_output():
    args = mlp_args(7)
    plan = jac.jacobian(mlp_two, wrt="W1", order="reverse").plan(*args)
    text = str(plan)
    assert "dsigmoid_0/d" in text and "dsum_0/d" in text      # one sweep per output
    assert text.count("FLOPs") == len(plan.networks) + 1       # the header and every network


def test_plans_are_cached_per_output_structure():
    args = mlp_args(8)
    flip = {"value": False}

    def f(x, W1, W2):
        y, s = mlp_two(x, W1, W2)
        return {"s": s, "y": y} if flip["value"] else (y, s)
    jf = jac.jacobian(f, wrt="x")
    first = jf(*args)
    flip["value"] = True
    second = jf(*args)                    # a fresh trace: another structure, another plan
    assert type(first) is tuple and type(second) is dict
    close(first[0], second["y"], 0)
    assert len(jf._cache) == 2


# ---------------------------------------------------------------- several batched arguments

@pytest.mark.parametrize("order", ORDERS)
def test_rnn_batched_over_X_and_h0_is_per_sample_for_both(order):
    args = rnn_args()
    X, h0 = args[:2]
    B, H = h0.shape
    per = jac.jacobian(rnn3, wrt=("X", "h0"), batched=("X", "h0"), order=order)(*args)
    assert per["X"].shape == (B, H, 3, 2) and per["h0"].shape == (B, H, H)
    full = jac.jacobian(rnn3, wrt=("X", "h0"), order=order)(*args)
    assert full["X"].shape == (B, H, B, 3, 2) and full["h0"].shape == (B, H, B, H)
    for w in ("X", "h0"):
        for b in range(B):
            close(per[w][b], full[w][b, :, b])            # the diagonal blocks
        close(expand_batch(per[w], 2), full[w])           # and nothing off the diagonal
        close(full[w], numeric(rnn3, args, None, w, ["X", "h0", "Wx", "Wh"]), 1e-7)
    # batched over one of them only: that one per sample, the other full (the old behaviour)
    only_x = jac.jacobian(rnn3, wrt=("X", "h0"), batched="X", order=order)(*args)
    assert only_x["X"].shape == (B, H, 3, 2) and only_x["h0"].shape == (B, H, B, H)


def test_batched_arguments_that_interact_keep_the_full_layout():
    r = rng(9)
    x, y = r.normal(size=(4, 3)), r.normal(size=(4, 3))

    def f(x, y):
        return x * y - (x + y).mean(axis=0)   # samples interact through the batch mean
    J = jac.jacobian(f, wrt=("x", "y"), batched=("x", "y"))(x, y)
    assert J["x"].shape == (4, 3, 4, 3) and J["y"].shape == (4, 3, 4, 3)
    close(J["x"], numeric(f, (x, y), None, "x", ["x", "y"]), 1e-7)


def test_batched_sizes_must_agree():
    X, h0, Wx, Wh = rnn_args()
    jf = jac.jacobian(rnn3, wrt="X", batched=("X", "h0"))
    with pytest.raises(ValueError, match=re.escape(
            "jacobian: batched=('X', 'h0'): axis 0 must be the same batch in every batched argument; "
            "got X (3, 3, 2), h0 (5, 4)")):
        jf(X, np.ones((5, 4)), Wx, Wh)
    with pytest.raises(ValueError, match=re.escape("batched='h0' needs a leading batch axis; got a scalar")):
        jf(X, 1.0, Wx, Wh)


def test_batched_names_are_checked():
    with pytest.raises(ValueError, match=re.escape("batched='z' is not an argument of rnn3(X, h0, Wx, Wh)")):
        jac.jacobian(rnn3, wrt="X", batched=("X", "z"))
    with pytest.raises(TypeError, match="batched must name an argument .* or a non-empty tuple"):
        jac.jacobian(rnn3, wrt="X", batched=())
    jf = jac.jacobian(rnn3, wrt="X", batched=(0, "h0", "X"))   # positions, repeats dropped
    assert jf.batched == jf.batch_names == ("X", "h0")
    assert jac.jacobian(rnn3, wrt="X", batched="X").batch_names == ("X",)


# ---------------------------------------------------------------- compare and the tools

def test_compare_needs_an_output_for_a_structured_function():
    args = mlp_args(10)
    with pytest.raises(ValueError, match=re.escape(
            "compare: mlp_two returns a tuple of 2; a report covers one output: pick it with output= "
            "(one of 0, 1)")):
        jac.compare(mlp_two, *args, wrt="x", batched="x", repeats=1, min_time=0)
    report = jac.compare(mlp_two, *args, wrt="x", batched="x", output=1, orders=("optimal", "reverse", "vjp"),
                         repeats=1, min_time=0)
    assert report.title.startswith("d mlp_two[1] / d x")
    assert report.jacobian_shape == (3, 4) and report.per_sample
    close(report.rows[0].max_abs_diff, 0.0, 0)
    assert max(r.max_abs_diff for r in report.rows) < 1e-12
    with pytest.raises(ValueError, match=re.escape("compare: output=2 is not one of mlp_two's outputs; "
                                                   "valid options are 0, 1")):
        jac.compare(mlp_two, *args, wrt="x", output=2, repeats=1, min_time=0)
    with pytest.raises(ValueError, match="output=0 picks from a tuple, list or dict of outputs; rnn3 returns one"):
        jac.compare(rnn3, *rnn_args(), wrt="X", output=0, repeats=1, min_time=0)


def test_compare_with_several_batched_arguments_is_per_sample():
    args = rnn_args()
    report = jac.compare(rnn3, *args, wrt="h0", batched=("X", "h0"), orders=("optimal", "forward", "jvp"),
                         repeats=1, min_time=0)
    assert report.per_sample and report.jacobian_shape == (3, 4, 4)
    assert max(r.max_abs_diff for r in report.rows) < 1e-12


def test_a_graph_with_several_outputs_refuses_the_single_output_view():
    g = trace(mlp_two, dict(zip(["x", "W1", "W2"], mlp_args())), ["x", "W1", "W2"])
    assert g.several and len(g.outputs) == 2 and all(isinstance(o, int) for o in g.outputs)
    with pytest.raises(ValueError, match="returns a tuple of 2, not one array; pick one"):
        g.output
    one = Graph()
    one.leaves.append(one.add(Node("x", value=np.ones(2))))
    assert not one.several and one.output == 0 and one.constant_output is None


def test_empty_and_foreign_outputs_are_refused():
    args = mlp_args()
    with pytest.raises(ValueError, match=re.escape("jacobian: the function returned a tuple of 0: no output array")):
        jac.jacobian(lambda x, W1, W2: (), wrt="x")(*args)
    kept = []
    jac.jacobian(lambda x, W1, W2: kept.append(np.tanh(x)) or kept[0], wrt="x")(*args)
    with pytest.raises(ValueError, match=re.escape(
            "jacobian: the function's output[1] is a value traced in another call")):
        jac.jacobian(lambda x, W1, W2: (np.tanh(x), kept[0]), wrt="x")(*args)
    with pytest.raises(TypeError, match=re.escape("argument the function's output['m'] must be a floating-point")):
        jac.jacobian(lambda x, W1, W2: {"y": np.tanh(x), "m": np.arange(3)}, wrt="x")(*args)


# ---------------------------------------------------------------- the command line

CELL = '''import numpy as np
import jacobians as jac

def cell(x, h, W, U):
    pre = np.tanh(x @ W.T + h @ U.T)
    return {"h": pre, "c": pre * h}

def example_inputs():
    r = np.random.default_rng(0)
    return r.normal(size=(3, 2)), r.normal(size=(3, 4)), r.normal(size=(4, 2)), r.normal(size=(4, 4))
'''


def test_cli_compare_picks_an_output_and_takes_several_batched(tmp_path, capsys):
    from jacobians import cli
    path = tmp_path / "cell.py"
    path.write_text(CELL)
    fast = ["--orders", "optimal,reverse,vjp", "--repeats", "1", "--min-time", "0", "-q"]
    assert cli.main(["compare", f"{path}:cell", "--wrt", "x,h", "--batched", "x,h", "--output", "c", *fast]) == 0
    out = capsys.readouterr().out
    assert "d cell['c'] / d x: output (3, 4), x (3, 2), per-sample" in out and "Jacobian shape (3, 4, 2)" in out
    assert "d cell['c'] / d h: output (3, 4), h (3, 4), per-sample" in out and "Jacobian shape (3, 4, 4)" in out
    assert cli.main(["compare", f"{path}:cell", "--wrt", "x", *fast]) == 1
    err = capsys.readouterr().err
    assert "a report covers one output: pick it with output= (one of 'h', 'c')" in err
    assert len(err.strip().splitlines()) == 1
    assert cli.main(["compare", f"{path}:cell", "--batched", "x,z", *fast]) == 2
    assert "--batched 'z' is not an argument of cell(x, h, W, U)" in capsys.readouterr().err


def test_lstm_pair_matches_jax_jacrev_of_the_pytree_output():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy

    def lstm_jax(X, h0, c0, W, U):
        h, c = h0, c0
        for t in range(X.shape[1]):
            pre = jnp.einsum("bd,ghd->gbh", X[:, t], W) + jnp.einsum("bk,ghk->gbh", h, U)
            i, f, o, g = pre
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return h, c

    args = lstm_args(seed=11)
    ref = jax.jacrev(lstm_jax, argnums=(0, 1, 3))(*args)     # per output, per argument: full tensors
    J = jac.jacobian(lstm, wrt=("X", "h0", "W"), batched=("X", "h0", "c0"))(*args)
    for k in range(2):
        for a, w in enumerate(("X", "h0", "W")):
            ours = J[k][w] if w == "W" else expand_batch(J[k][w], 2)
            close(ours, np.asarray(ref[k][a]))
