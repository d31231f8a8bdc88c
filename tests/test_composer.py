"""The composer: explicit Jacobians of whole traced functions (issue "Composer").

Every composed Jacobian is checked three ways:

* against central differences of the plain numpy function
  (:func:`jacobians.testing.numerical_jacobian`; per-sample results are
  expanded with :func:`jacobians.testing.expand_batch` first);
* against the product of the ops' explicit Jacobians (``jacobians.ops.<op>(...,
  batch=False)``), chained by hand with ``tensordot`` in the order the function
  computes them (:func:`by_hand`; the traced graph only lists the ops and their
  arguments, the numeric check vouches for that list);
* all orders against each other: ``forward``, ``reverse`` and ``optimal`` give
  the same tensor to 1e-10.

Sizes are small, dtypes float64 and seeds fixed.
"""

from __future__ import annotations

import inspect
import re
import time
import tracemalloc

import numpy as np
import pytest

import jacobians as jac
from jacobians import network, plan as plan_records, transforms
from jacobians.graph import trace
from jacobians.limits import JacobianTooLarge, limited_memory
from jacobians.testing import expand_batch, numerical_jacobian

fn = jac.fn
ORDERS = ("forward", "reverse", "optimal")


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- the three references


def numeric(f, args: dict, name: str) -> np.ndarray:
    """Central differences of ``f`` (run on plain numpy arrays) w.r.t. ``args[name]``: (*out, *in)."""
    def of(v):
        return np.asarray(f(**{**args, name: v}), dtype=np.float64)
    return numerical_jacobian(of, args[name])


def by_hand(f, args: dict, wrt) -> dict:
    """d out / d wrt as the product of the ops' explicit Jacobians (batch=False: (*O, *I)), in program order.

    A value used by several ops sums the products along every path (the chain rule on a DAG).
    """
    bound = inspect.signature(f).bind(**args)
    graph = trace(f, bound, [k for k, v in args.items() if isinstance(v, np.ndarray)])
    dense: dict[int, dict] = {}   # node -> {wrt name: d node / d wrt, (*node, *wrt)}
    for name, i in graph.inputs.items():
        dense[i] = {w: (np.eye(args[w].size).reshape(args[w].shape * 2) if w == name
                    else np.zeros(np.shape(args[name]) + args[w].shape)) for w in wrt}
    for i, node in enumerate(graph.nodes):
        if node.op is None:
            continue
        arrays = {a: graph.nodes[r].value if isinstance(r, int) else (None if r is None else r[1])
                  for a, r in zip(node.op.arrays, node.args)}
        value, jacs = node.op(**arrays, **node.params, batch=False)
        names = [a for a in node.op.diff_arrays if arrays[a] is not None]
        acc = {w: np.zeros(value.shape + args[w].shape) for w in wrt}
        for a, J in zip(names, jacs):
            r = node.args[node.op.arrays.index(a)]
            if isinstance(r, int):
                for w in wrt:
                    acc[w] += np.tensordot(J, dense[r][w], axes=np.ndim(arrays[a]))
        dense[i] = acc
    if graph.output is None:
        out_shape = np.shape(graph.constant_output)
        return {w: np.zeros(out_shape + args[w].shape) for w in wrt}
    return {w: dense[graph.output][w] for w in wrt}


def op_names(f, args: dict) -> set[str]:
    bound = inspect.signature(f).bind(**args)
    graph = trace(f, bound, [k for k, v in args.items() if isinstance(v, np.ndarray)])
    return {n.op.name for n in graph.nodes if n.op is not None}


def to_full(J: np.ndarray, out_shape: tuple, in_shape: tuple) -> np.ndarray:
    """The full (*out, *in) tensor of a result that may be per-sample (B, *out[1:], *in[1:])."""
    if J.shape == tuple(out_shape) + tuple(in_shape):
        return J
    assert J.shape == tuple(out_shape) + tuple(in_shape[1:]), (J.shape, out_shape, in_shape)
    return expand_batch(J, len(out_shape))


def assert_same(a: np.ndarray, b: np.ndarray, rtol: float = 1e-10, what: str = "") -> None:
    assert a.shape == b.shape, (what, a.shape, b.shape)
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=what)


def check(f, args: dict, wrt, batched=None, shapes: dict | None = None, rtol: float = 1e-6) -> dict:
    """Composed Jacobians (every order) == central differences == the hand product; returns the optimal ones."""
    wrt = tuple(wrt)
    results = {o: jac.jacobian(f, wrt=wrt, batched=batched, order=o)(**args) for o in ORDERS}
    out_shape = np.shape(f(**args))
    hand = by_hand(f, args, wrt)
    for name in wrt:
        J = results["optimal"][name]
        if shapes is not None:
            assert J.shape == shapes[name], (name, J.shape, shapes[name])
        for o in ORDERS:
            assert results[o][name].dtype == np.float64
            assert_same(results[o][name], J, 1e-10, f"d/d{name}: order {o} vs optimal")
        full = to_full(J, out_shape, args[name].shape)
        scale = max(1.0, float(np.abs(full).max(initial=0.0)))
        np.testing.assert_allclose(full, numeric(f, args, name), rtol=rtol, atol=1e-8 * scale,
                                   err_msg=f"d/d{name} vs central differences")
        assert_same(full, hand[name], 1e-10, f"d/d{name} vs the hand product")
    return results["optimal"]


# ---------------------------------------------------------------- a chain for every op

B, D, H, K = 3, 4, 5, 2


def _data(seed: int):
    r = rng(seed)
    return r, r.normal(size=(B, D)), 0.5 * r.normal(size=(H, D)), 0.5 * r.normal(size=(K, H))


def _elementwise_case(op: str, **kw):
    def make():
        r, x, W, V = _data(sum(map(ord, op)))

        def f(x, W, V):
            return fn.linear(getattr(fn, op)(fn.linear(x, W), **kw), V)
        return f, dict(x=x, W=W, V=V), ("x", "W", "V"), "x", dict(x=(B, K, D), W=(B, K, H, D), V=(B, K, K, H))
    return make


def _positive_case(op: str, **kw):
    """Ops with a domain (x > 0): applied to a positive traced input, then a linear map."""
    def make():
        r, x, W, V = _data(sum(map(ord, op)))
        x, V = np.abs(x) + 0.5, 0.5 * r.normal(size=(K, D))

        def f(x, V):
            return fn.linear(getattr(fn, op)(x, **kw), V)
        return f, dict(x=x, V=V), ("x", "V"), "x", dict(x=(B, K, D), V=(B, K, K, D))
    return make


def _case_linear():
    r, x, W, V = _data(1)
    b = r.normal(size=H)

    def f(x, W, b, V):
        return fn.linear(fn.tanh(fn.linear(x, W, b)), V)
    return f, dict(x=x, W=W, b=b, V=V), ("x", "W", "b", "V"), "x", \
        dict(x=(B, K, D), W=(B, K, H, D), b=(B, K, H), V=(B, K, K, H))


def _case_matmul():
    r, x, W, V = _data(2)
    A, M = 0.5 * r.normal(size=(D, H)), r.normal(size=(K, H))

    def f(x, A, M):
        return fn.matmul(M, fn.tanh(x @ A).T)   # (K, B): the batch is not the leading axis
    return f, dict(x=x, A=A, M=M), ("x", "A", "M"), "x", dict(x=(K, B, B, D), A=(K, B, D, H), M=(K, B, K, H))


def _case_dot():
    r, x, W, V = _data(3)
    c = r.normal(size=H)

    def f(x, W, c):
        return fn.dot(fn.tanh(fn.linear(x, W)), c)
    return f, dict(x=x, W=W, c=c), ("x", "W", "c"), "x", dict(x=(B, D), W=(B, H, D), c=(B, H))


def _case_add():
    r, x, W, V = _data(4)
    b = r.normal(size=H)

    def f(x, W, b):
        return fn.tanh(fn.add(fn.linear(x, W), b))  # b (H,) broadcast over the batch
    return f, dict(x=x, W=W, b=b), ("x", "W", "b"), "x", dict(x=(B, H, D), W=(B, H, H, D), b=(B, H, H))


def _case_subtract():
    r, x, W, V = _data(5)
    c = r.normal(size=H)

    def f(x, W, c):
        return fn.subtract(c, fn.sigmoid(fn.linear(x, W)))
    return f, dict(x=x, W=W, c=c), ("x", "W", "c"), "x", dict(x=(B, H, D), W=(B, H, H, D), c=(B, H, H))


def _case_multiply():
    r, x, W, V = _data(6)
    g = r.normal(size=H)

    def f(x, W, g):
        z = fn.linear(x, W)
        return fn.multiply(fn.multiply(z, g), fn.tanh(z))
    return f, dict(x=x, W=W, g=g), ("x", "W", "g"), "x", dict(x=(B, H, D), W=(B, H, H, D), g=(B, H, H))


def _case_divide():
    r, x, W, V = _data(7)
    d = np.abs(r.normal(size=H)) + 0.5

    def f(x, W, d):
        z = fn.linear(x, W)
        return fn.divide(fn.divide(fn.tanh(z), fn.exp(z)), d)
    return f, dict(x=x, W=W, d=d), ("x", "W", "d"), "x", dict(x=(B, H, D), W=(B, H, H, D), d=(B, H, H))


def _case_negative():
    r, x, W, V = _data(8)

    def f(x, W):
        return fn.tanh(fn.negative(fn.linear(x, W)))
    return f, dict(x=x, W=W), ("x", "W"), "x", dict(x=(B, H, D), W=(B, H, H, D))


def _case_sum():
    r, x, W, V = _data(9)

    def f(x, W):
        return fn.sum(fn.tanh(fn.linear(x, W)), axis=-1)
    return f, dict(x=x, W=W), ("x", "W"), "x", dict(x=(B, D), W=(B, H, D))


def _case_mean():
    r, x, W, V = _data(10)

    def f(x, W):
        return fn.tanh(fn.mean(fn.linear(x, W), axis=0))   # over the batch: (H,)
    return f, dict(x=x, W=W), ("x", "W"), "x", dict(x=(H, B, D), W=(H, H, D))


def _case_reshape():
    r, x, W, V = _data(11)
    W2 = r.normal(size=(3, 2))

    def f(x, W2):
        h = fn.reshape(fn.tanh(x), (B, 2, 2))             # (B, 4) -> (B, 2, 2): the batch stays tied
        return fn.reshape(fn.linear(h, W2), (B * 2 * 3,))  # the batch axis is folded away: full result
    return f, dict(x=x, W2=W2), ("x", "W2"), "x", dict(x=(B * 6, B, D), W2=(B * 6, 3, 2))


def _case_transpose():
    r, x, W, V = _data(12)
    M = r.normal(size=(K, B))

    def f(x, W, M):
        return fn.linear(fn.transpose(fn.tanh(fn.linear(x, W))), M)  # (H, B) @ M^T: mixes samples
    return f, dict(x=x, W=W, M=M), ("x", "W", "M"), "x", dict(x=(H, K, B, D), W=(H, K, H, D), M=(H, K, K, B))


def _case_relu():
    r, x, W, V = _data(13)
    z = x @ W.T
    assert np.abs(z).min() > 1e-3   # no kink within reach of the finite differences

    def f(x, W, V):
        return fn.linear(fn.relu(fn.linear(x, W)), V)
    return f, dict(x=x, W=W, V=V), ("x", "W", "V"), "x", dict(x=(B, K, D), W=(B, K, H, D), V=(B, K, K, H))


def _case_logsumexp():
    r, x, W, V = _data(14)

    def f(x, W):
        return fn.logsumexp(fn.linear(x, W))
    return f, dict(x=x, W=W), ("x", "W"), "x", dict(x=(B, D), W=(B, H, D))


def _case_layer_norm():
    r, x, W, V = _data(15)
    gamma, beta = 1 + 0.3 * r.normal(size=H), r.normal(size=H)

    def f(x, W, gamma, beta, V):
        return fn.linear(fn.layer_norm(fn.linear(x, W), gamma, beta), V)
    return f, dict(x=x, W=W, gamma=gamma, beta=beta, V=V), ("x", "W", "gamma", "beta", "V"), "x", \
        dict(x=(B, K, D), W=(B, K, H, D), gamma=(B, K, H), beta=(B, K, H), V=(B, K, K, H))


def _case_batch_norm():
    r, x, W, V = _data(16)
    gamma, beta = 1 + 0.3 * r.normal(size=H), r.normal(size=H)

    def f(x, W, gamma, beta):
        return fn.batch_norm(fn.linear(x, W), gamma, beta)
    return f, dict(x=x, W=W, gamma=gamma, beta=beta), ("x", "W", "gamma", "beta"), "x", \
        dict(x=(B, H, B, D), W=(B, H, H, D), gamma=(B, H, H), beta=(B, H, H))


def _case_mse():
    r, x, W, V = _data(17)
    y = r.normal(size=(B, H))

    def f(x, W, y):
        return fn.mse(fn.linear(x, W), y)
    return f, dict(x=x, W=W, y=y), ("x", "W", "y"), "x", dict(x=(B, D), W=(B, H, D), y=(B, B, H))


def _case_cross_entropy():
    r, x, W, V = _data(18)
    p = fn.softmax(r.normal(size=(B, H)))

    def f(x, W, p):
        return fn.cross_entropy(fn.softmax(fn.linear(x, W)), p)
    # p is not the batched argument: (B, *out, *p)
    return f, dict(x=x, W=W, p=p), ("x", "W", "p"), "x", dict(x=(B, D), W=(B, H, D), p=(B, B, H))


def _case_softmax_cross_entropy():
    r, x, W, V = _data(19)
    labels = np.array([0, 4, 2])

    def f(x, W, labels):
        return fn.softmax_cross_entropy(fn.linear(x, W), labels)
    return f, dict(x=x, W=W, labels=labels), ("x", "W"), "x", dict(x=(B, D), W=(B, H, D))


def _case_norm():
    r, x, W, V = _data(20)

    def f(x, W):
        return fn.norm(fn.tanh(fn.linear(x, W)), axis=-1)
    return f, dict(x=x, W=W), ("x", "W"), "x", dict(x=(B, D), W=(B, H, D))


def _linalg_case(op: str):
    """einsum and the linear-algebra ops on a per-sample (B, 2, 2) matrix M = reshape(linear(x, W)) (+ 2 I)."""
    eye, c, v = 2 * np.eye(2), np.array([0.5, -1.0]), np.array([1.0, -0.5])
    apply = {
        "einsum": lambda M: fn.einsum("bij,bkj->bik", M, fn.tanh(M)),
        "outer": lambda M: fn.outer(fn.reshape(M, (B, 4)), c),
        "kron": lambda M: fn.kron(M, v),
        "trace": lambda M: fn.trace(M, axis1=1, axis2=2),
        "diagonal": lambda M: fn.diagonal(M, offset=0, axis1=1, axis2=2),
        "inv": lambda M: fn.inv(M + eye),
        "det": fn.det,
        "slogdet": lambda M: fn.slogdet(M + eye),
        "solve": lambda M: fn.solve(M + eye, c),
        "cholesky": lambda M: fn.cholesky(fn.matmul(M, fn.transpose(M, (0, 2, 1))) + eye),
    }[op]

    def make():
        r, x, _, _ = _data(sum(map(ord, op)))
        W = 0.5 * r.normal(size=(4, D))

        def f(x, W):
            return apply(fn.reshape(fn.linear(x, W), (B, 2, 2)))
        out = np.shape(f(x, W))
        return f, dict(x=x, W=W), ("x", "W"), "x", dict(x=out + (D,), W=out + (4, D))
    return make


OP_CASES = {
    "linear": _case_linear, "matmul": _case_matmul, "dot": _case_dot, "add": _case_add,
    "subtract": _case_subtract, "multiply": _case_multiply, "divide": _case_divide,
    "negative": _case_negative, "sum": _case_sum, "mean": _case_mean, "reshape": _case_reshape,
    "transpose": _case_transpose, "relu": _case_relu, "logsumexp": _case_logsumexp,
    "layer_norm": _case_layer_norm, "batch_norm": _case_batch_norm, "mse": _case_mse,
    "cross_entropy": _case_cross_entropy, "softmax_cross_entropy": _case_softmax_cross_entropy,
    "norm": _case_norm,
    **{op: _linalg_case(op) for op in ("einsum", "outer", "kron", "trace", "diagonal", "inv", "det", "slogdet",
                                        "solve", "cholesky")},
    "exp": _elementwise_case("exp"), "sigmoid": _elementwise_case("sigmoid"),
    "tanh": _elementwise_case("tanh"), "leaky_relu": _elementwise_case("leaky_relu", alpha=0.1),
    "softplus": _elementwise_case("softplus"), "square": _elementwise_case("square"),
    "softmax": _elementwise_case("softmax"), "log_softmax": _elementwise_case("log_softmax"),
    "log": _positive_case("log"), "sqrt": _positive_case("sqrt"), "power": _positive_case("power", p=1.5),
}


# piecewise ops (jacobians/ops/piecewise.py); the random pre-activations keep away from kinks and ties
def _case_maximum(op="maximum"):
    r, x, W, V = _data(21 if op == "maximum" else 22)
    c = 0.3 * r.normal(size=H)

    def f(x, W, c):
        return getattr(fn, op)(fn.linear(x, W), c)
    return f, dict(x=x, W=W, c=c), ("x", "W", "c"), "x", dict(x=(B, H, D), W=(B, H, H, D), c=(B, H, H))


def _case_where():
    r, x, W, V = _data(23)

    def f(x, W, V):
        z = fn.linear(x, W)
        return fn.linear(fn.where(z > 0.1, z, 0.5 * fn.tanh(z)), V)   # a traced comparison, a constant mask
    return f, dict(x=x, W=W, V=V), ("x", "W", "V"), "x", dict(x=(B, K, D), W=(B, K, H, D), V=(B, K, K, H))


def _case_clip():
    r, x, W, V = _data(24)

    def f(x, W, V):
        return fn.linear(fn.clip(fn.linear(x, W), -0.4, 0.6), V)
    return f, dict(x=x, W=W, V=V), ("x", "W", "V"), "x", dict(x=(B, K, D), W=(B, K, H, D), V=(B, K, K, H))


def _case_amax(op="amax"):
    r, x, W, V = _data(25 if op == "amax" else 26)

    def f(x, W):
        return getattr(fn, op)(fn.tanh(fn.linear(x, W)), axis=-1, keepdims=op == "amin")
    return f, dict(x=x, W=W), ("x", "W"), "x", \
        dict(x=(B, D), W=(B, H, D)) if op == "amax" else dict(x=(B, 1, D), W=(B, 1, H, D))


OP_CASES.update({"maximum": _case_maximum, "minimum": lambda: _case_maximum("minimum"), "where": _case_where,
                 "abs": _elementwise_case("abs"), "clip": _case_clip, "amax": _case_amax,
                 "amin": lambda: _case_amax("amin")})


def _unit_case(op: str, shift: float = 0.0):
    """Ops defined on an interval: their input is 0.9 tanh(linear) + shift (|.| < 1, or > 1 for arccosh)."""
    def make():
        r, x, W, V = _data(sum(map(ord, op)))

        def f(x, W, V):
            return fn.linear(getattr(fn, op)(0.9 * fn.tanh(fn.linear(x, W)) + shift), V)
        return f, dict(x=x, W=W, V=V), ("x", "W", "V"), "x", dict(x=(B, K, D), W=(B, K, H, D), V=(B, K, K, H))
    return make


def _binary_case(op: str):
    """Binary elementwise ops: a traced (B, H) against a shared (H,) argument, broadcast over the batch."""
    def make():
        r, x, W, V = _data(sum(map(ord, op)))
        g = r.normal(size=H)

        def f(x, W, g):
            return fn.tanh(getattr(fn, op)(fn.linear(x, W), g))
        return f, dict(x=x, W=W, g=g), ("x", "W", "g"), "x", dict(x=(B, H, D), W=(B, H, H, D), g=(B, H, H))
    return make


OP_CASES.update({op: _elementwise_case(op) for op in (
    "sin", "cos", "arctan", "sinh", "cosh", "arcsinh", "expm1", "exp2", "erf", "erfc", "log_sigmoid", "silu",
    "swish", "gelu", "sign", "cbrt", "reciprocal")})
OP_CASES.update({op: _positive_case(op) for op in ("log1p", "log2", "log10")})
OP_CASES.update({op: _unit_case(op) for op in ("tan", "arcsin", "arccos", "arctanh")})
OP_CASES.update({"arccosh": _unit_case("arccosh", 2.0)})
OP_CASES.update({op: _binary_case(op) for op in ("arctan2", "logaddexp", "hypot")})


def test_the_table_covers_every_op():
    # index-map ops are composed in tests/test_indexing_composed.py until the planner integrates maps
    assert set(OP_CASES) == {n for n, op in jac.ops.OPS.items() if op.family not in ("indexing", "conv")}


@pytest.mark.parametrize("op", sorted(OP_CASES))
def test_chain_of_every_op(op):
    f, args, wrt, batched, shapes = OP_CASES[op]()
    assert op in op_names(f, args)
    check(f, args, wrt, batched, shapes)


@pytest.mark.parametrize("op", sorted(OP_CASES))
def test_chain_of_every_op_unbatched(op):
    """The same chains without ``batched``: every Jacobian is the full (*out, *in)."""
    f, args, wrt, _, _ = OP_CASES[op]()
    out_shape = np.shape(f(**args))
    check(f, args, wrt, None, {n: out_shape + args[n].shape for n in wrt})


# ---------------------------------------------------------------- networks from the notes


def _clark(seed: int = 30, D: int = 4, Hc: int = 5, C: int = 3):
    r = rng(seed)
    x, W, b1 = r.normal(size=D), r.normal(size=(Hc, D)), r.normal(size=Hc)
    U, b2 = r.normal(size=(C, Hc)), r.normal(size=C)
    y = np.eye(C)[1]
    assert np.abs(W @ x + b1).min() > 1e-3
    return dict(x=x, W=W, b1=b1, U=U, b2=b2, y=y)


def clark_net(x, W, b1, U, b2, y):
    z = W @ x + b1
    h = fn.relu(z)
    theta = U @ h + b2
    yhat = fn.softmax(theta)
    return fn.cross_entropy(yhat, y)


def clark_net_fused(x, W, b1, U, b2, y):
    return fn.softmax_cross_entropy(fn.linear(fn.relu(fn.linear(x, W, b1)), U, b2), y)


@pytest.mark.parametrize("net", [clark_net, clark_net_fused])
def test_clark_one_layer_network_gradients_are_his_closed_forms(net):
    a = _clark()
    x, W, b1, U, b2, y = (a[k] for k in ("x", "W", "b1", "U", "b2", "y"))
    wrt = ("U", "b2", "W", "b1", "x")
    J = check(net, a, wrt, shapes={k: a[k].shape for k in wrt})   # scalar output: gradient layout
    z = W @ x + b1
    h = np.maximum(z, 0)
    yhat = np.exp(U @ h + b2) / np.exp(U @ h + b2).sum()
    delta1 = yhat - y
    delta2 = (U.T @ delta1) * (z > 0)
    np.testing.assert_allclose(J["U"], np.outer(delta1, h), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(J["b2"], delta1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(J["W"], np.outer(delta2, x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(J["b1"], delta2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(J["x"], W.T @ delta2, rtol=1e-12, atol=1e-14)


def residual(x, W1, W2):
    return W2 @ fn.relu(W1 @ x) + x


def residual_batched(x, W1, W2):
    return fn.linear(fn.relu(fn.linear(x, W1)), W2) + x


def _residual(seed: int, Bn: int | None):
    r = rng(seed)
    Dn, Hn = 4, 6
    x = r.normal(size=(Dn,) if Bn is None else (Bn, Dn))
    W1, W2 = r.normal(size=(Hn, Dn)), r.normal(size=(Dn, Hn))
    assert np.abs(x @ W1.T).min() > 1e-3
    return dict(x=x, W1=W1, W2=W2)


def test_cs182_residual_block_is_w2_r_w1_plus_identity():
    a = _residual(31, None)
    J = check(residual, a, ("x", "W1", "W2"))
    x, W1, W2 = a["x"], a["W1"], a["W2"]
    R = np.diag((W1 @ x > 0).astype(float))
    assert J["x"].shape == (4, 4)
    np.testing.assert_allclose(J["x"], W2 @ R @ W1 + np.eye(4), rtol=1e-12, atol=1e-14)


def test_cs182_residual_block_batched_is_per_sample():
    a = _residual(32, 3)
    J = check(residual_batched, a, ("x", "W1", "W2"), batched="x",
              shapes=dict(x=(3, 4, 4), W1=(3, 4, 6, 4), W2=(3, 4, 4, 6)))
    x, W1, W2 = a["x"], a["W1"], a["W2"]
    for b in range(3):
        R = np.diag((W1 @ x[b] > 0).astype(float))
        np.testing.assert_allclose(J["x"][b], W2 @ R @ W1 + np.eye(4), rtol=1e-12, atol=1e-14)


def mean_softmax_loss(X, W, y):
    return fn.mean(fn.softmax_cross_entropy(fn.linear(X, W), y))


def test_softmax_classifier_with_a_mean_loss_over_the_batch():
    r = rng(33)
    N, Dn, C = 5, 4, 3
    X, W, y = r.normal(size=(N, Dn)), r.normal(size=(C, Dn)), np.array([0, 2, 1, 1, 0])
    J = check(mean_softmax_loss, dict(X=X, W=W, y=y), ("X", "W"), batched="X", shapes=dict(X=(N, Dn), W=(C, Dn)))
    S = X @ W.T
    P = np.exp(S) / np.exp(S).sum(axis=1, keepdims=True)
    Y = np.eye(C)[y]
    np.testing.assert_allclose(J["W"], (P - Y).T @ X / N, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(J["X"], (P - Y) @ W / N, rtol=1e-12, atol=1e-14)


def bn_net(x, W1, gamma, beta, W2):
    return fn.linear(fn.tanh(fn.batch_norm(fn.linear(x, W1), gamma, beta)), W2)


def test_batch_norm_inside_a_network_gives_the_full_batch_jacobian():
    r = rng(34)
    Bn, I, Hn, O = 4, 3, 5, 2
    a = dict(x=r.normal(size=(Bn, I)), W1=r.normal(size=(Hn, I)), gamma=1 + 0.2 * r.normal(size=Hn),
             beta=r.normal(size=Hn), W2=r.normal(size=(O, Hn)))
    J = check(bn_net, a, ("x", "W1", "gamma", "W2"), batched="x",
              shapes=dict(x=(Bn, O, Bn, I), W1=(Bn, O, Hn, I), gamma=(Bn, O, Hn), W2=(Bn, O, O, Hn)))
    off_diagonal = J["x"][0, :, 1]
    assert np.abs(off_diagonal).max() > 1e-3   # samples interact through the batch statistics


# ---------------------------------------------------------------- DAGs and corner cases


def _hx(seed: int):
    r = rng(seed)
    return dict(x=r.normal(size=(3, 4)), W=0.7 * r.normal(size=(5, 4)))


@pytest.mark.parametrize("body", [
    lambda h: h * h,
    lambda h: fn.multiply(h, h),
    lambda h: h + fn.tanh(h),
    lambda h: fn.square(h) - 2 * h,
    lambda h: fn.softmax(h) * fn.log_softmax(h),
], ids=["h*h", "multiply(h,h)", "h+tanh(h)", "square(h)-2h", "softmax*log_softmax"])
def test_a_value_used_twice(body):
    def f(x, W):
        return body(fn.linear(x, W))
    a = _hx(35)
    check(f, a, ("x", "W"), batched="x", shapes=dict(x=(3, 5, 4), W=(3, 5, 5, 4)))


@pytest.mark.parametrize("square", [lambda h: h * h, lambda h: fn.multiply(h, h), lambda h: h ** 2])
def test_h_times_h_counts_both_paths(square):
    a = _hx(35)
    J = jac.jacobian(lambda x, W: square(fn.linear(x, W)), wrt="x", batched="x")(**a)
    h = a["x"] @ a["W"].T
    np.testing.assert_allclose(J, 2 * h[:, :, None] * a["W"][None], rtol=1e-12)   # not h W: both uses count


def test_a_value_used_twice_unbatched():
    def f(x, W):
        h = fn.tanh(W @ x)
        return h * h + h
    r = rng(36)
    check(f, dict(x=r.normal(size=4), W=r.normal(size=(5, 4))), ("x", "W"))


def test_shared_weights_used_in_two_layers():
    def f(x, W):
        return fn.linear(fn.tanh(fn.linear(x, W)), W)
    r = rng(37)
    x, W = r.normal(size=(3, 4)), 0.6 * r.normal(size=(4, 4))
    J = check(f, dict(x=x, W=W), ("x", "W"), batched="x", shapes=dict(x=(3, 4, 4), W=(3, 4, 4, 4)))
    # the two uses add: d/dW = (through layer 2) + (through layer 1)
    h = np.tanh(x @ W.T)
    layer2 = np.einsum("ij,bk->bijk", np.eye(4), h)
    layer1 = np.einsum("im,bm,mj,bk->bijk", W, 1 - h * h, np.eye(4), x)
    np.testing.assert_allclose(J["W"], layer1 + layer2, rtol=1e-12, atol=1e-14)


def test_returning_the_input_is_the_identity():
    def f(x, W):
        return x
    r = rng(38)
    x, W = r.normal(size=(3, 4)), r.normal(size=(2, 4))
    J = check(f, dict(x=x, W=W), ("x", "W"), batched="x", shapes=dict(x=(3, 4, 4), W=(3, 4, 2, 4)))
    np.testing.assert_array_equal(J["x"], np.broadcast_to(np.eye(4), (3, 4, 4)))
    np.testing.assert_array_equal(J["W"], 0)
    Ju = check(f, dict(x=x, W=W), ("x",))
    np.testing.assert_array_equal(Ju["x"], np.eye(12).reshape(3, 4, 3, 4))
    assert jac.jacobian(lambda x: x, wrt=0)(x[0]).tolist() == np.eye(4).tolist()


def test_a_wrt_the_output_does_not_depend_on_gives_zeros():
    def f(x, W, V):
        return fn.tanh(fn.linear(x, W))
    r = rng(39)
    a = dict(x=r.normal(size=(3, 4)), W=r.normal(size=(5, 4)), V=r.normal(size=(2, 7)))
    for order in ORDERS:
        J = jac.jacobian(f, wrt=("V", "W"), batched="x", order=order)(**a)
        assert J["V"].shape == (3, 5, 2, 7) and J["V"].dtype == np.float64
        np.testing.assert_array_equal(J["V"], 0)
    check(f, a, ("x", "V"), batched="x", shapes=dict(x=(3, 5, 4), V=(3, 5, 2, 7)))
    # the batched argument itself unused: a parameter-only output has no batch axis
    def g(x, W):
        return fn.tanh(W)
    J = jac.jacobian(g, wrt=("x", "W"), batched="x")(a["x"], a["W"])
    assert J["x"].shape == (5, 4, 3, 4)
    np.testing.assert_array_equal(J["x"], 0)


def test_a_function_that_ignores_every_traced_input():
    def f(x):
        return np.ones(3)
    J = jac.jacobian(f, wrt="x")(np.zeros(2))
    assert J.shape == (3, 2)
    np.testing.assert_array_equal(J, 0)


def middle(x, W, b, c, V):
    h = fn.tanh(x @ W.T + b)                       # a traced transpose, a broadcast bias
    g = h.reshape(x.shape[0], 2, 3).sum(axis=1)    # (B, 6) -> (B, 2, 3) -> (B, 3)
    m = g - g.mean(axis=-1, keepdims=True)          # broadcasting (B, 1)
    return fn.linear(m * c, V)                      # c (3,) broadcast


def test_transpose_reshape_sum_mean_and_broadcasting_in_the_middle_of_a_chain():
    r = rng(40)
    a = dict(x=r.normal(size=(3, 4)), W=r.normal(size=(6, 4)), b=r.normal(size=6), c=r.normal(size=3),
             V=r.normal(size=(2, 3)))
    check(middle, a, ("x", "W", "b", "c", "V"), batched="x",
          shapes=dict(x=(3, 2, 4), W=(3, 2, 6, 4), b=(3, 2, 6), c=(3, 2, 3), V=(3, 2, 2, 3)))
    check(middle, a, ("x", "W"))


def test_samples_mixed_in_the_middle_give_the_full_jacobian():
    def f(x, W):
        h = fn.tanh(fn.linear(x, W))
        return fn.tanh(h @ h.T) @ h                 # (B, B) @ (B, H): every sample sees every other
    r = rng(41)
    check(f, dict(x=r.normal(size=(3, 4)), W=0.5 * r.normal(size=(2, 4))), ("x", "W"), batched="x",
          shapes=dict(x=(3, 2, 3, 4), W=(3, 2, 2, 4)))


def test_a_sum_over_the_batch_then_broadcast_back():
    def f(x, W):
        h = fn.linear(x, W)
        return fn.tanh(h - h.mean(axis=0))          # centred over the batch
    r = rng(42)
    check(f, dict(x=r.normal(size=(3, 4)), W=r.normal(size=(2, 4))), ("x", "W"), batched="x",
          shapes=dict(x=(3, 2, 3, 4), W=(3, 2, 2, 4)))


def test_constant_and_python_number_arguments():
    def f(x, W, scale=2.0):
        return scale * fn.tanh(fn.linear(x, W)) + 1.0
    r = rng(43)
    a = dict(x=r.normal(size=(3, 4)), W=r.normal(size=(2, 4)))
    J = check(f, a, ("x", "W"), batched="x")
    J3 = jac.jacobian(f, wrt="x", batched="x")(a["x"], a["W"], 3.0)
    np.testing.assert_allclose(J3, 1.5 * J["x"], rtol=1e-12)


# ---------------------------------------------------------------- orders


def mlp3(x, W1, W2, W3):
    return fn.linear(fn.tanh(fn.linear(fn.sigmoid(fn.linear(x, W1)), W2)), W3)


def _mlp3(seed: int, batch: int | None = 3):
    r = rng(seed)
    x = r.normal(size=(4,) if batch is None else (batch, 4))
    return dict(x=x, W1=r.normal(size=(6, 4)), W2=r.normal(size=(3, 6)), W3=r.normal(size=(5, 3)))


@pytest.mark.parametrize("batch", [None, 3])
def test_an_explicit_path_on_a_single_chain(batch):
    a = _mlp3(50, batch)
    batched = None if batch is None else "x"
    ref = jac.jacobian(mlp3, wrt="x", batched=batched, order="forward")(**a)
    plan = jac.jacobian(mlp3, wrt="x", batched=batched).plan(**a)
    assert len(plan.networks) == 1
    net = plan.networks[0].network
    n = len(net.terms)
    assert n >= 5   # three weights and two elementwise slopes
    paths = {
        "optimal's own": plan.networks[0].path,
        "left to right": [(0, 1)] * (n - 1),
        "right to left": [(n - 2 - k, n - 1 - k) for k in range(n - 1)],
        "pairs first": [(0, 1), (0, 1), (0, 1), (0, 1), (0, 1)][: n - 1],
    }
    for what, path in paths.items():
        J = jac.jacobian(mlp3, wrt="x", batched=batched, order=path)(**a)
        assert_same(J, ref, 1e-10, what)
        explicit_plan = jac.jacobian(mlp3, wrt="x", batched=batched, order=path).plan(**a)
        assert [list(p) for p in explicit_plan.networks[0].path] == [list(p) for p in path]
    assert_same(to_full(ref, np.shape(mlp3(**a)), a["x"].shape), numeric(mlp3, a, "x"), 1e-6)


def test_an_explicit_path_that_does_not_fit_the_network():
    a = _mlp3(51)
    with pytest.raises(ValueError, match=r"explicit path .* (not valid|uncontracted)"):
        jac.jacobian(mlp3, wrt="x", batched="x", order=[(0, 1)])(**a)
    with pytest.raises(ValueError, match=r"positions outside"):
        jac.jacobian(mlp3, wrt="x", batched="x", order=[(0, 9)] * 6)(**a)


def two_branches(x, W1, W2, W3):
    return fn.linear(fn.tanh(fn.linear(x, W1)), W2) + fn.linear(x, W3)


@pytest.mark.parametrize("path", [[(0, 1), (0, 1)], [(0, 1)], [(1, 2), (0, 1)]])
def test_an_explicit_path_on_a_branching_function_asks_for_a_named_order(path):
    r = rng(52)
    a = dict(x=r.normal(size=(3, 4)), W1=r.normal(size=(5, 4)), W2=r.normal(size=(2, 5)), W3=r.normal(size=(2, 4)))
    # the two branches are two networks (3 and 2 operands): whichever the path would fit, the error says why
    with pytest.raises(ValueError, match=re.escape("needs 2 (branches in the function or several wrt); "
                                                   "use order='forward', 'reverse' or 'optimal'")):
        jac.jacobian(two_branches, wrt="x", batched="x", order=path)(**a)
    with pytest.raises(ValueError, match="single network"):
        jac.jacobian(two_branches, wrt="x", batched="x", order=path).plan(**a)
    with pytest.raises(ValueError, match="single network"):   # several wrt: several networks
        jac.jacobian(mlp3, wrt=("x", "W1"), batched="x", order=[(0, 1)] * 5)(**_mlp3(52))


def test_an_explicit_path_on_a_skip_connection_applies_to_its_one_network():
    """The skip of y = W2 relu(W1 x) + x adds an identity (deltas only): one network, the path is used."""
    a = _residual(53, 3)
    ref = jac.jacobian(residual_batched, wrt="x", batched="x")(**a)
    for path in ([(0, 1), (0, 1)], [(1, 2), (0, 1)]):
        jf = jac.jacobian(residual_batched, wrt="x", batched="x", order=path)
        assert len(jf.plan(**a).networks) == 1
        assert_same(jf(**a), ref, 1e-10)


@pytest.mark.parametrize("order", ["fastest", "Forward", "dp", "", 3])
def test_unknown_order_names_list_the_valid_ones(order):
    with pytest.raises(ValueError) as e:
        jac.jacobian(mlp3, wrt="x", order=order)
    for name in ("'forward'", "'reverse'", "'optimal'"):
        assert name in str(e.value)


def _bottleneck(n: int, k: int):
    r = rng(53)
    Ws = [r.normal(size=s) / np.sqrt(s[1]) for s in [(n, n), (k, n), (n, k), (n, n)]]
    return dict(x=r.normal(size=n), W1=Ws[0], W2=Ws[1], W3=Ws[2], W4=Ws[3])


def bottleneck(x, W1, W2, W3, W4):
    h = fn.tanh(fn.linear(x, W1))
    h = fn.tanh(fn.linear(h, W2))
    h = fn.tanh(fn.linear(h, W3))
    return fn.linear(h, W4)


@pytest.mark.parametrize("n", [40, 64])
def test_the_bottleneck_chain_is_bracketed_around_the_bottleneck(n):
    k = 4
    a = _bottleneck(n, k)
    plans = {o: jac.jacobian(bottleneck, wrt="x", order=o).plan(**a) for o in ORDERS}
    # chain J4 D3 J3 D2 J2 D1 J1 (D: tanh slopes, vectors). Both folds end with an (n,n)x(n,n) product:
    # slopes n*n + n*k + n*n, products 2nnk + 2nkn + 2nnn
    fold = n * n + n * k + n * n + 2 * n * n * k + 2 * n * k * n + 2 * n * n * n
    # (J4 D3 J3)(D2 J2 D1 J1): the slopes go into the thin factors (3 * n*k), three thin products
    bracket = 3 * n * k + 3 * 2 * n * n * k
    assert plans["forward"].flops == fold
    assert plans["reverse"].flops == fold
    assert plans["optimal"].flops == bracket
    # fold / bracket is (2n + 4k) / (6k) to leading order: 4.04 for n=40 (so /5 cannot hold there), 6.04 for n=64
    assert fold / bracket > 4
    if n == 64:
        assert plans["optimal"].flops <= plans["forward"].flops / 5
        assert plans["optimal"].flops <= plans["reverse"].flops / 5
    check(bottleneck, a, ("x",), shapes=dict(x=(n, n)))


def matmul_chain(x, W1, W2, W3):
    return W3 @ (W2 @ (W1 @ x))


def test_exact_flops_of_a_hand_worked_chain():
    n, a_, b_, m = 2, 3, 5, 7
    r = rng(54)
    a = dict(x=r.normal(size=n), W1=r.normal(size=(a_, n)), W2=r.normal(size=(b_, a_)), W3=r.normal(size=(m, b_)))
    plans = {o: jac.jacobian(matmul_chain, wrt="x", order=o).plan(**a) for o in ORDERS}
    for o, p in plans.items():
        assert len(p.steps) == 1 and len(p.networks) == 1
        net = p.networks[0].network
        assert net.shapes == ((m, b_), (b_, a_), (a_, n))      # output end first: W3, W2, W1
        assert plan_records.readable(net.eq) == "ab,bc,cd->ad"
    # reverse: (W3 W2) first, 2*m*b*a, then (W3 W2) W1, 2*m*a*n      (a multiply-add counts 2)
    assert plans["reverse"].flops == 2 * m * b_ * a_ + 2 * m * a_ * n == 294
    assert [list(s) for s in plans["reverse"].networks[0].path] == [[0, 1], [0, 1]]
    # forward: (W2 W1) first, 2*b*a*n, then W3 (W2 W1), 2*m*b*n
    assert plans["forward"].flops == 2 * b_ * a_ * n + 2 * m * b_ * n == 200
    assert [list(s) for s in plans["forward"].networks[0].path] == [[1, 2], [0, 1]]
    assert plans["optimal"].flops == 200
    assert plans["reverse"].largest_intermediate == m * a_   # W3 W2 is (m, a)
    assert plans["forward"].largest_intermediate == m * n    # W2 W1 is (b, n) = 10, the result (m, n) = 14
    assert "ab,bc,cd->ad" in str(plans["reverse"]) and "294 FLOPs" in str(plans["reverse"])
    J = check(matmul_chain, a, ("x",))
    np.testing.assert_allclose(J["x"], a["W3"] @ a["W2"] @ a["W1"], rtol=1e-12)


def test_exact_flops_of_a_batched_chain():
    # per sample: the batch label is shared by every link, so each product is a batched GEMM
    Bn, n, h, m = 3, 4, 5, 2
    r = rng(55)
    a = dict(x=r.normal(size=(Bn, n)), W1=r.normal(size=(h, n)), W2=r.normal(size=(m, h)))

    def f(x, W1, W2):
        return fn.linear(fn.tanh(fn.linear(x, W1)), W2)
    plans = {o: jac.jacobian(f, wrt="x", batched="x", order=o).plan(**a) for o in ORDERS}
    # reverse: W2 (m,h) * slope (B,h) -> (B,m,h): B*m*h; then with W1: 2*B*m*h*n
    assert plans["reverse"].flops == Bn * m * h + 2 * Bn * m * h * n
    # forward: slope (B,h) * W1 (h,n) -> (B,h,n): B*h*n; then W2 with it: 2*B*m*h*n
    assert plans["forward"].flops == Bn * h * n + 2 * Bn * m * h * n
    assert plans["optimal"].flops == min(plans["reverse"].flops, plans["forward"].flops)
    check(f, a, ("x",), batched="x", shapes=dict(x=(Bn, m, n)))


def test_every_order_on_every_case_above_agrees():
    """check() compares the orders; this adds the plan's own claim: optimal never costs more."""
    cases = [OP_CASES[op]() for op in sorted(OP_CASES)]
    cases += [(clark_net, _clark(), ("x", "W", "U"), None, None),
              (residual_batched, _residual(56, 3), ("x", "W1"), "x", None),
              (bn_net, dict(x=rng(1).normal(size=(4, 3)), W1=rng(2).normal(size=(5, 3)), gamma=np.ones(5),
                            beta=np.zeros(5), W2=rng(3).normal(size=(2, 5))), ("x", "W1"), "x", None),
              (middle, dict(x=rng(4).normal(size=(3, 4)), W=rng(5).normal(size=(6, 4)), b=np.zeros(6),
                            c=np.ones(3), V=rng(6).normal(size=(2, 3))), ("x", "W", "b"), "x", None)]
    for f, args, wrt, batched, _ in cases:
        plans = {o: jac.jacobian(f, wrt=wrt, batched=batched, order=o).plan(**args) for o in ORDERS}
        assert plans["optimal"].flops <= min(plans["forward"].flops, plans["reverse"].flops), f.__name__
        results = {o: jac.jacobian(f, wrt=wrt, batched=batched, order=o)(**args) for o in ORDERS}
        for name in wrt:
            for o in ORDERS:
                assert_same(results[o][name], results["optimal"][name], 1e-10, f"{f.__name__} d/d{name} {o}")


# ---------------------------------------------------------------- caching and replay


def test_repeated_calls_retrace_and_reuse_the_cached_plan(monkeypatch):
    # every call runs the function again; only the plan (shapes alone) is cached
    calls = {"f": 0, "path search": 0, "plan": 0}

    def f(x, W1, W2, W3):
        calls["f"] += 1
        return mlp3(x, W1, W2, W3)

    dp, mp = network._dp_path, transforms.make_plan

    def counting_dp(*a, **k):
        calls["path search"] += 1
        return dp(*a, **k)

    def counting_plan(*a, **k):
        calls["plan"] += 1
        return mp(*a, **k)
    monkeypatch.setattr(network, "_dp_path", counting_dp)
    monkeypatch.setattr(transforms, "make_plan", counting_plan)

    jf = jac.jacobian(f, wrt=("x", "W2"), batched="x")
    first = _mlp3(60)
    J1 = jf(**first)
    J1_copy = {k: v.copy() for k, v in J1.items()}
    assert calls["f"] == 1 and calls["plan"] == 1 and calls["path search"] >= 1
    searched = calls["path search"]
    replayed = []
    for n, seed in enumerate((61, 62, 63), start=2):
        a = _mlp3(seed)                          # same shapes, new values
        replayed.append((a, jf(**a)))
        assert calls == {"f": n, "path search": searched, "plan": 1}
    jf.plan(**_mlp3(64))                         # a plan of the same shapes is the cached one
    assert calls == {"f": 5, "path search": searched, "plan": 1}
    for a, J in replayed:
        hand = by_hand(mlp3, a, ("x", "W2"))
        for name in ("x", "W2"):
            full = to_full(J[name], (3, 5), a[name].shape)
            assert_same(full, hand[name], 1e-10, name)
            assert_same(full, numeric(mlp3, a, name), 1e-6, name)
    for k in J1:                                 # earlier results are the caller's: never overwritten
        np.testing.assert_array_equal(J1[k], J1_copy[k])

    J = jf(**_mlp3(65, batch=5))                 # new shapes: planned again
    assert calls["plan"] == 2
    assert J["x"].shape == (5, 5, 4)
    jf(**_mlp3(66, batch=5))
    assert calls["plan"] == 2
    jf(**{k: v.astype(np.float32) for k, v in _mlp3(67).items()})   # a new dtype is a new signature
    assert calls["plan"] == 3


def test_replay_with_a_plan_that_is_a_pure_relabel_copies_the_operand():
    def f(x, W):
        return W @ x                              # dz/dx is W itself
    r = rng(68)
    x, W = r.normal(size=3), r.normal(size=(2, 3))
    jf = jac.jacobian(f, wrt="x")
    J = jf(x, W)
    np.testing.assert_array_equal(J, W)
    assert not np.may_share_memory(J, W)
    W2 = r.normal(size=(2, 3))
    np.testing.assert_array_equal(jf(x, W2), W2)
    np.testing.assert_array_equal(J, W)           # the first result is untouched


def mean_loss_with_labels(x, W, labels):
    return fn.mean(fn.softmax_cross_entropy(fn.linear(x, W), labels))


def _count_plans(monkeypatch) -> list:
    plans, make = [], transforms.make_plan
    monkeypatch.setattr(transforms, "make_plan", lambda *a, **k: plans.append(1) or make(*a, **k))
    return plans


def test_integer_labels_passed_as_an_argument_are_honoured_between_calls(monkeypatch):
    calls, plans = [], _count_plans(monkeypatch)

    def f(x, W, labels):
        calls.append(1)
        return mean_loss_with_labels(x, W, labels)
    r = rng(69)
    x, W = r.normal(size=(4, 3)), r.normal(size=(5, 3))
    jf = jac.jacobian(f, wrt=("x", "W"), batched="x")
    P = np.exp(x @ W.T) / np.exp(x @ W.T).sum(axis=1, keepdims=True)
    for labels in (np.array([0, 1, 2, 3]), np.array([4, 4, 0, 1]), np.array([2, 2, 2, 2])):
        J = jf(x, W, labels)
        Y = np.eye(5)[labels]
        np.testing.assert_allclose(J["W"], (P - Y).T @ x / 4, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(J["x"], (P - Y) @ W / 4, rtol=1e-12, atol=1e-15)
    assert len(calls) == 3 and len(plans) == 1               # traced every call, planned once
    J = jf(x, W, np.array([1, 1, 1, 1, 1, 1]).reshape(2, 3)[0].repeat(2)[:4])   # still (4,) ints
    assert len(plans) == 1
    np.testing.assert_allclose(J["x"], (P - np.eye(5)[[1, 1, 1, 1]]) @ W / 4, rtol=1e-12, atol=1e-15)


def test_static_arguments_are_seen_on_every_call(monkeypatch):
    calls, plans = [], _count_plans(monkeypatch)

    def f(x, b, scale=1.0):
        calls.append(1)
        return fn.tanh(x) * b * scale
    jf = jac.jacobian(f, wrt="x")
    x = np.zeros(3)
    np.testing.assert_array_equal(jf(x, (1.0, 2.0, 3.0)), np.diag([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(jf(x, (1.0, 2.0, 3.0)), np.diag([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(jf(x, (4.0, 5.0, 6.0)), np.diag([4.0, 5.0, 6.0]))
    np.testing.assert_array_equal(jf(x, (4.0, 5.0, 6.0), 2.0), np.diag([8.0, 10.0, 12.0]))
    assert len(calls) == 4 and len(plans) == 1              # the values are constants of the trace
    # a list's id is reused once the list is freed: every call must still see its own values
    for v in range(1000):
        np.testing.assert_array_equal(jf(x, [float(v)] * 3), v * np.eye(3), err_msg=f"call {v}")


# ---------------------------------------------------------------- the memory guard


def _peak_during(call) -> tuple[object, int]:
    tracemalloc.start()
    try:
        try:
            result = call()
        except Exception as e:   # noqa: BLE001 - handed back to the test
            result = e
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def wide_chain(x, W):
    return fn.tanh(fn.linear(fn.tanh(fn.linear(x, W)), W))


def test_a_jacobian_over_the_limit_is_refused_before_anything_is_allocated():
    n = 2000
    x, W = np.ones(n), np.broadcast_to(np.float64(1e-3), (n, n))   # no memory behind W
    jf = jac.jacobian(wide_chain, wrt="x")
    with limited_memory(1 << 20):
        for call in (lambda: jf(x, W), lambda: jf.plan(x, W)):
            e, peak = _peak_during(call)
            assert isinstance(e, JacobianTooLarge), e
            assert peak < 8 << 20             # the (2000, 2000) float64 result alone is 30.5 MiB
            text = str(e)
            for part in ("needs 30.5 MiB", "over the memory limit of 1.0 MiB", "use a smaller batch",
                         "another order", "(a,ab,b,bc->ac)"):   # the network, readable
                assert part in text, text


def test_the_refusal_names_the_result_and_says_what_to_do():
    x = np.linspace(-1, 1, 2000)
    with limited_memory(1 << 20):
        with pytest.raises(JacobianTooLarge) as e:
            jac.jacobian(lambda x: fn.tanh(x), wrt="x")(x)      # a diagonal, expanded: (2000, 2000)
    text = str(e.value)
    for part in ("(2000, 2000)", "needs 30.5 MiB", "over the memory limit of 1.0 MiB",
                 "raise the limit with jacobians.set_memory_limit"):
        assert part in text, text
    with limited_memory(1 << 20):   # per-sample: (B, D, D) is 50 times smaller than (B, D, B, D)
        J = jac.jacobian(lambda x: fn.tanh(x), wrt="x", batched="x")(x.reshape(50, 40))
    assert J.shape == (50, 40, 40)


def test_several_results_together_over_the_limit():
    r = rng(70)
    x, W = r.normal(size=(60,)), r.normal(size=(40, 60))       # dz/dW (40, 40, 60) 750 KiB, dz/dx 18.8 KiB
    with limited_memory(700 << 10):
        with pytest.raises(JacobianTooLarge, match=r"needs 7\d\d\.\d KiB, over the memory limit of 700\.0 KiB"):
            jac.jacobian(lambda x, W: fn.tanh(W @ x), wrt=("x", "W"))(x, W)
        J = jac.jacobian(lambda x, W: fn.tanh(W @ x), wrt="x")(x, W)
    assert J.shape == (40, 60)


def test_an_intermediate_over_the_limit_is_made_in_slices_of_an_output_label():
    r = rng(71)
    m = 200
    a = dict(x=r.normal(size=m), W1=r.normal(size=(m, m)) / 15, w2=r.normal(size=(1, m)))

    def g(x, W1, w2):
        return fn.linear(fn.tanh(fn.linear(x, W1)), w2)          # (1,) output: reverse is the cheap way
    with limited_memory(64 << 10):
        jf = jac.jacobian(g, wrt="x", order="forward")            # slope * W1 is (200, 200): 312.5 KiB
        plan = jf.plan(**a)
        (step,) = plan.networks
        assert step.chunk is not None and step.chunk[1] >= 5      # sliced along x's axis
        assert "slices" in str(plan)
        assert plan.largest_intermediate * 8 <= 64 << 10
        Jf = jf(**a)
        Jr = jac.jacobian(g, wrt="x", order="reverse")(**a)
        Jo = jac.jacobian(g, wrt="x")(**a)
    assert Jr.shape == (1, m)
    assert_same(Jf, Jr, 1e-12)
    assert_same(Jo, Jr, 1e-12)
    assert_same(Jr, numeric(g, a, "x"), 1e-6)


def test_an_intermediate_that_slicing_cannot_shrink_is_refused():
    # a scalar output of a (200,) input: no output label to slice along except x's own axis,
    # and a limit below one row of the (200, 200) product refuses before allocating
    r = rng(72)
    m = 200
    a = dict(x=r.normal(size=m), W1=r.normal(size=(m, m)) / 15)

    def g(x, W1):
        return fn.sum(fn.tanh(fn.linear(x, W1)))
    with limited_memory(1 << 10):
        with pytest.raises(JacobianTooLarge) as e:
            jac.jacobian(g, wrt="x", order="forward")(**a)
    assert "another order" in str(e.value) or "the explicit Jacobians" in str(e.value)


def test_slices_give_the_same_tensor_as_one_contraction():
    from jacobians.network import Network
    r = rng(73)
    net = Network(("ab", "cb", "bd"), ((6, 5), (4, 5), (5, 3)), "cad")
    arrays = [r.normal(size=s) for s in net.shapes]
    path = net.path("optimal")
    whole = net.contract(arrays, path)
    np.testing.assert_allclose(whole, np.einsum(net.eq, *arrays), rtol=1e-12)
    for label in "cad":
        for n in (1, 2, 3, net.sizes[label]):
            np.testing.assert_allclose(net.contract(arrays, path, (label, n)), whole, rtol=1e-12)
    assert net.chunking(path, 10**9) is None
    label, n = net.chunking(path, 40)
    assert label in "cad" and n >= 2


def test_a_big_problem_is_planned_from_shapes_without_executing():
    Bn, n = 64, 2000
    W = np.broadcast_to(np.float64(1e-3), (n, n))
    x = np.ones((Bn, n))
    jf = jac.jacobian(mlp3, wrt="x", batched="x")
    with limited_memory(4 << 30):
        start = time.perf_counter()
        plan, peak = _peak_during(lambda: jf.plan(x, W, W, W))
        elapsed = time.perf_counter() - start
    assert isinstance(plan, jac.Plan), plan
    # per sample the chain is four (n, n) products at best three: about 2 * B * 3 * n^3 = 3e12 FLOPs
    assert plan.flops > 1e12
    assert plan.result_elements == Bn * n * n                  # (64, 2000, 2000): 1.9 GiB
    assert peak < 64 << 20                                     # nothing of that size was allocated
    assert elapsed < 5
    assert "GiB" in str(plan)


# ---------------------------------------------------------------- bad input


def _xw():
    r = rng(80)
    return r.normal(size=(3, 4)), r.normal(size=(2, 4))


def test_a_numpy_function_the_tracer_does_not_know():
    x, W = _xw()
    with pytest.raises(TypeError, match=r"np\.cumsum is not a toolkit op.*the ops are: .*add, "):
        jac.jacobian(lambda x, W: np.cumsum(fn.linear(x, W)), wrt="x")(x, W)
    with pytest.raises(TypeError, match=r"np\.sort is not a toolkit op"):
        jac.jacobian(lambda x, W: np.sort(fn.linear(x, W)), wrt="x")(x, W)
    with pytest.raises(TypeError, match=r"np\.fft\.fft is not a toolkit op"):
        jac.jacobian(lambda x, W: np.fft.fft(fn.linear(x, W)), wrt="x")(x, W)
    with pytest.raises(TypeError, match=r"use jacobians\.fn\.<op>"):      # the op library returns Jacobians
        jac.jacobian(lambda x, W: jac.ops.tanh(fn.linear(x, W)), wrt="x")(x, W)


def test_numpy_functions_that_are_toolkit_ops_are_traced():
    x, W = _xw()

    def f(x, W):
        h = np.tanh(fn.linear(x, W))
        return np.exp(h) * np.square(h) + np.sum(h, axis=-1, keepdims=True)
    check(f, dict(x=x, W=W), ("x", "W"), batched="x", shapes=dict(x=(3, 2, 4), W=(3, 2, 2, 4)))


@pytest.mark.parametrize("branch", [
    lambda h: h if h.sum() > 0 else -h,
    lambda h: h if 0 < h.sum() else -h,
    lambda h: h if h.sum() <= 0 else -h,
    lambda h: h if h.sum() else -h,
    lambda h: h.sum() > 0 and h,
], ids=["sum>0", "0<sum", "sum<=0", "truth", "and"])
def test_a_python_branch_on_a_traced_value(branch):
    x, W = _xw()
    with pytest.raises(TypeError, match="branch") as e:
        jac.jacobian(lambda x, W: branch(fn.linear(x, W)), wrt="x")(x, W)
    assert "sum_0 ()" in str(e.value)        # names the value
    assert "relu" in str(e.value)            # and what to write instead


def test_indexing_iterating_or_float_of_a_traced_value():
    """Indexing and iteration mean numpy's (issue 9: the getitem op); float() still cannot be traced."""
    x, W = _xw()
    for f in (lambda x, W: fn.linear(x, W)[0], lambda x, W: fn.linear(x, W)[:, 1:],
              lambda x, W: sum(fn.linear(x, W))):
        J = jac.jacobian(f, wrt="x")(x, W)
        np.testing.assert_allclose(J, numerical_jacobian(lambda v: f(v, W), x), rtol=1e-6, atol=1e-8)
    with pytest.raises(TypeError, match="indexing .* with a traced value"):
        jac.jacobian(lambda x, W: fn.linear(x, W)[fn.sum(x)], wrt="x")(x, W)
    with pytest.raises(TypeError, match=r"float\(\)"):
        jac.jacobian(lambda x, W: fn.linear(x, W) * float(fn.sum(x)), wrt="x")(x, W)


def test_mismatched_shapes_between_chained_ops():
    x, W = _xw()
    V = np.ones((3, 5))                       # expects 5 inputs, the first layer gives 2
    with pytest.raises(ValueError, match=re.escape("linear: expected x (..., D) and W (H, D) with the same D; "
                                                   "got x (3, 2), W (3, 5)")):
        jac.jacobian(lambda x, W, V: fn.linear(fn.linear(x, W), V), wrt="x")(x, W, V)
    with pytest.raises(ValueError, match=r"matmul: contracted sizes differ"):
        jac.jacobian(lambda x, W: fn.linear(x, W) @ x, wrt="x")(x, W)
    with pytest.raises(ValueError, match=r"add: shapes do not broadcast"):
        jac.jacobian(lambda x, W: fn.linear(x, W) + x, wrt="x")(x, W)


def test_wrt_and_batched_must_name_arguments():
    x, W = _xw()

    def f(x, W):
        return fn.linear(x, W)
    with pytest.raises(ValueError, match=re.escape("wrt='V' is not an argument of f(x, W)")):
        jac.jacobian(f, wrt="V")
    with pytest.raises(ValueError, match=re.escape("wrt='V' is not an argument of f(x, W)")):
        jac.jacobian(f, wrt=("x", "V"))
    with pytest.raises(ValueError, match=re.escape("wrt=2 is out of range for f(x, W)")):
        jac.jacobian(f, wrt=2)
    with pytest.raises(ValueError, match=re.escape("wrt=-3 is out of range for f(x, W)")):
        jac.jacobian(f, wrt=-3)
    with pytest.raises(ValueError, match=re.escape("batched='b' is not an argument of f(x, W)")):
        jac.jacobian(f, wrt="x", batched="b")
    with pytest.raises(ValueError, match="wrt names no argument"):
        jac.jacobian(f, wrt=())
    with pytest.raises(ValueError, match="needs a leading batch axis"):
        jac.jacobian(lambda x, W: W * x, wrt="x", batched="x")(1.5, W)
    # positions are fine, negative ones too
    assert_same(jac.jacobian(f, wrt=-1)(x, W), jac.jacobian(f, wrt="W")(x, W), 0)
    assert set(jac.jacobian(f, wrt=(0, 1))(x, W)) == {"x", "W"}


def test_a_non_float_wrt_argument():
    x, W = _xw()

    def f(x, W):
        return fn.linear(x, W)
    with pytest.raises(TypeError, match=r"jacobian: argument x must be a floating-point array .* got dtype int64"):
        jac.jacobian(f, wrt="x")(np.ones((3, 4), dtype=np.int64), W)
    with pytest.raises(TypeError, match=r"argument x must be a floating-point array; got a bool"):
        jac.jacobian(f, wrt="x")(True, W)
    with pytest.raises(ValueError, match=r"argument x contains NaN or inf"):
        jac.jacobian(f, wrt="x")(np.full((3, 4), np.nan), W)


def test_returning_a_tuple_or_list():  # several outputs in depth: tests/test_multi.py
    x, W = _xw()
    alone = jac.jacobian(lambda x, W: fn.linear(x, W), wrt="x")(x, W)
    Jt = jac.jacobian(lambda x, W: (fn.linear(x, W), x), wrt="x")(x, W)
    assert isinstance(Jt, tuple) and len(Jt) == 2
    np.testing.assert_allclose(Jt[0], alone, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(Jt[1], np.eye(x.size).reshape(x.shape + x.shape))
    Jl = jac.jacobian(lambda x, W: [fn.linear(x, W)], wrt="x")(x, W)
    assert isinstance(Jl, list) and len(Jl) == 1
    np.testing.assert_allclose(Jl[0], alone, rtol=1e-13, atol=1e-13)


# ---------------------------------------------------------------- float32


@pytest.mark.parametrize("case", ["mlp3", "residual", "batch_norm", "mean loss", "middle"])
def test_float32_inputs_give_float32_jacobians(case):
    r = rng(90)
    f, args, wrt, batched = {
        "mlp3": (mlp3, _mlp3(91), ("x", "W1", "W3"), "x"),
        "residual": (residual_batched, _residual(92, 3), ("x", "W2"), "x"),
        "batch_norm": (bn_net, dict(x=r.normal(size=(4, 3)), W1=r.normal(size=(5, 3)), gamma=np.ones(5),
                                    beta=np.zeros(5), W2=r.normal(size=(2, 5))), ("x", "W1", "gamma"), "x"),
        "mean loss": (mean_softmax_loss, dict(X=r.normal(size=(5, 4)), W=r.normal(size=(3, 4)),
                                              y=np.array([0, 2, 1, 1, 0])), ("X", "W"), "X"),
        "middle": (middle, dict(x=r.normal(size=(3, 4)), W=r.normal(size=(6, 4)), b=r.normal(size=6),
                                c=r.normal(size=3), V=r.normal(size=(2, 3))), ("x", "W", "b"), "x"),
    }[case]
    args32 = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in args.items()}
    for order in ORDERS:
        J64 = jac.jacobian(f, wrt=wrt, batched=batched, order=order)(**args)
        J32 = jac.jacobian(f, wrt=wrt, batched=batched, order=order)(**args32)
        for name in wrt:
            assert J32[name].dtype == np.float32, (order, name)
            assert J32[name].shape == J64[name].shape
            scale = float(np.abs(J64[name]).max())
            np.testing.assert_allclose(J32[name], J64[name], rtol=2e-4, atol=2e-5 * scale, err_msg=f"{order} {name}")
    plan = jac.jacobian(f, wrt=wrt, batched=batched).plan(**args32)
    assert plan.itemsize == 4


def test_float32_wrt_with_float64_constants():
    x, W = _xw()
    J = jac.jacobian(lambda x, W: fn.tanh(fn.linear(x, W)), wrt="x", batched="x")(x.astype(np.float32), W)
    assert J.dtype == np.float32
    x32 = x.astype(np.float32)
    ref = jac.jacobian(lambda x, W: fn.tanh(fn.linear(x, W)), wrt="x", batched="x")(x32.astype(np.float64), W)
    np.testing.assert_allclose(J, ref, rtol=1e-5, atol=1e-6)


def test_zero_jacobian_layout_does_not_depend_on_sizes():
    # W with as many rows as the batch: still the full layout, no per-sample guess from equal sizes
    def g(x, W):
        return fn.tanh(W)
    r = rng(61)
    J = jac.jacobian(g, wrt="x", batched="x")(r.normal(size=(3, 4)), r.normal(size=(3, 2)))
    assert J.shape == (3, 2, 3, 4)
    np.testing.assert_array_equal(J, 0)


@pytest.mark.parametrize("compare", [lambda h: h == 0, lambda h: h != 0])
def test_equality_on_a_traced_value_is_refused_not_silently_false(compare):
    def f(x):
        h = fn.tanh(x)
        return h if compare(h) else -h
    with pytest.raises(TypeError, match="Python branch"):
        jac.jacobian(f, wrt="x")(np.ones(3))


def test_a_sum_never_overwrites_a_block_another_path_still_reads():
    # reverse mode: d sum / d add is shared (relabelled, same array) by the skip path into v1
    # and by the path through linear(v1, w1), which is read again for d/dw1 after the sum at v1
    def f(x, w0, w1):
        v1 = fn.linear(x, w0)
        return fn.sum(v1 + fn.linear(v1, w1))
    r = rng(62)
    a = dict(x=r.normal(size=1), w0=r.normal(size=(1, 1)), w1=r.normal(size=(1, 1)))
    for order in ORDERS:
        J = jac.jacobian(f, wrt=("x", "w0", "w1"), order=order)(**a)
        for name in a:
            def g(v, name=name):
                return f(**{**a, name: v})
            np.testing.assert_allclose(J[name], numerical_jacobian(g, a[name]), rtol=1e-6, atol=1e-9)


def test_optimal_is_never_worse_than_either_pure_mode():
    # a mean puts a scalar into the network; opt_einsum's 'dp' alone places it after an outer product
    def f(x, W1, W2):
        return fn.mean(fn.linear(fn.tanh(fn.linear(x, W1)), W2))
    r = rng(63)
    a = dict(x=r.normal(size=(3, 4)), W1=r.normal(size=(5, 4)), W2=r.normal(size=(2, 5)))
    for wrt in ("x", "W1", "W2"):
        flops = {o: jac.jacobian(f, wrt=wrt, order=o).plan(**a).flops for o in ("forward", "reverse", "optimal")}
        assert flops["optimal"] <= min(flops["forward"], flops["reverse"]), (wrt, flops)


def test_results_never_share_memory_with_each_other_or_the_inputs():
    # d/dx and d/dy of g(x + y) are the same block relabelled; W itself is d(W @ v)/dv's operand
    def f(x, y, W):
        return fn.tanh(fn.matmul(W, x + y))
    r = rng(74)
    a = dict(x=r.normal(size=3), y=r.normal(size=3), W=r.normal(size=(2, 3)))
    for order in ORDERS:
        J = jac.jacobian(f, wrt=("x", "y"), order=order)(**a)
        assert not np.may_share_memory(J["x"], J["y"])
        np.testing.assert_array_equal(J["x"], J["y"])
    def g(v, W):
        return fn.matmul(W, v)
    Jv = jac.jacobian(g, wrt="v")(a["x"], a["W"])
    assert not np.may_share_memory(Jv, a["W"])
    Jv[...] = 0
    assert np.abs(a["W"]).sum() > 0


@pytest.mark.parametrize("order", ["forward", "reverse", "optimal", "markowitz"])
def test_scalar_sums_of_paths_keep_every_term(order):
    """0-d blocks added into a sum: d(x1*x2 + x1)/dx1 = x2 + 1 (reverse once dropped the 0-d term's data)."""
    x1, x2 = np.array(0.7), np.array(0.3)
    J = jac.jacobian(lambda x1, x2: x1 * x2 + x1, wrt=("x1", "x2"), order=order)(x1, x2)
    assert J["x1"].shape == () and J["x2"].shape == ()
    np.testing.assert_allclose([J["x1"], J["x2"]], [1.3, 0.7], rtol=1e-15)


def test_zero_d_arguments_through_sums_and_broadcasts():
    """0-d blocks that are added into (a numpy scalar is read-only) and 0-d arguments broadcast
    against arrays: both once failed with "output array is read-only"."""
    np.testing.assert_allclose(jac.jacobian(lambda x: jac.fn.abs(x * x))(np.array(0.7)), 1.4, rtol=1e-15)
    J = jac.jacobian(lambda a, b: a * (0.1 * b * b), wrt="b")(np.ones((3, 2)), np.array(0.5))
    np.testing.assert_allclose(J, np.full((3, 2), 0.1), rtol=1e-14)
