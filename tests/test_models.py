"""Researchers' models as they write them (issue 9): numpy-style code with indexing, concatenation,
convolution and pooling, through ``jac.jacobian``.

Each Jacobian is checked against central differences (whole tensors where they are small,
directional differences ``J u`` along random ``u`` where they are not) and, when JAX is
installed, against ``jax.jacrev`` to 1e-12.  The plans' largest intermediates are checked
against the dense 0/1 forms the index maps replace: a map never becomes an out x in tensor.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import jacobians as jac
from jacobians.plan import MapStep, Ones
from jacobians.testing import directional_derivative, expand_batch, numerical_jacobian

fn = jac.fn
RNG = np.random.default_rng(2026)


def per_sample_directional(f, args, name, J, n_dirs=3, rtol=1e-6, atol=1e-7):
    """Per-sample ``J (B, *O, *I[1:])`` against directional differences of ``f`` in ``args[name]``."""
    x = args[name]
    out = np.asarray(f(**args))
    for _ in range(n_dirs):
        u = RNG.normal(size=x.shape)
        numeric = directional_derivative(lambda v: np.asarray(f(**{**args, name: v})), x, u)
        k = x.ndim - 1
        analytic = np.einsum(J, list(range(out.ndim + k)), u, [0] + list(range(out.ndim, out.ndim + k)),
                             list(range(out.ndim)))
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol)


def shared_directional(f, args, name, J, n_dirs=3, rtol=1e-6, atol=1e-7):
    """``J (*O, *P)`` for an unbatched argument against directional differences."""
    x = args[name]
    out = np.asarray(f(**args))
    for _ in range(n_dirs):
        u = RNG.normal(size=x.shape)
        numeric = directional_derivative(lambda v: np.asarray(f(**{**args, name: v})), x, u)
        analytic = np.tensordot(J, u, axes=x.ndim)
        assert analytic.shape == out.shape
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol)


def jax_or_skip():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


# ---------------------------------------------------------------- the PyTorch tutorial CNN

def cnn(x, W1, b1, W2, b2, V1, c1, V2, c2, V3, c3):
    h = fn.max_pool2d(fn.relu(fn.conv2d(x, W1, b1)), 2)          # (B, 6, 14, 14)
    h = fn.max_pool2d(fn.relu(fn.conv2d(h, W2, b2)), 2)          # (B, 16, 5, 5)
    h = h.reshape(h.shape[0], -1)                                # flatten: (B, 400)
    h = fn.relu(fn.linear(h, V1, c1))
    h = fn.relu(fn.linear(h, V2, c2))
    return fn.linear(h, V3, c3)                                  # (B, 10)


def cnn_args(B=2):
    r = np.random.default_rng(7)
    s = lambda *shape, fan: r.normal(size=shape) / np.sqrt(fan)
    return dict(x=r.normal(size=(B, 3, 32, 32)), W1=s(6, 3, 5, 5, fan=75), b1=s(6, fan=4), W2=s(16, 6, 5, 5, fan=150),
                b2=s(16, fan=4), V1=s(120, 400, fan=400), c1=s(120, fan=4), V2=s(84, 120, fan=120), c2=s(84, fan=4),
                V3=s(10, 84, fan=84), c3=s(10, fan=4))


def cnn_jax(x, W1, b1, W2, b2, V1, c1, V2, c2, V3, c3):
    jax = jax_or_skip()
    jnp, lax = jax.numpy, jax.lax

    def conv(h, W, b):
        return lax.conv_general_dilated(h, W, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW")) \
            + b[None, :, None, None]

    def pool(h):
        return lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    h = pool(jax.nn.relu(conv(x, W1, b1)))
    h = pool(jax.nn.relu(conv(h, W2, b2)))
    h = h.reshape(h.shape[0], -1)
    h = jax.nn.relu(h @ V1.T + c1)
    h = jax.nn.relu(h @ V2.T + c2)
    return h @ V3.T + c3


def test_cnn_per_sample_jacobians_against_differences():
    args = cnn_args()
    J = jac.jacobian(cnn, wrt=("x", "W1"), batched="x")(**args)
    assert J["x"].shape == (2, 10, 3, 32, 32) and J["W1"].shape == (2, 10, 6, 3, 5, 5)
    per_sample_directional(cnn, args, "x", J["x"])
    shared_directional(cnn, args, "W1", J["W1"])


def test_cnn_against_jax():
    jax = jax_or_skip()
    args = cnn_args()
    J = jac.jacobian(cnn, wrt=("x", "W1"), batched="x")(**args)
    names = list(args)
    ref = jax.jit(jax.jacrev(cnn_jax, argnums=(0, 1)))(*[args[n] for n in names])
    Jx = np.asarray(ref[0])     # (B, 10, B, 3, 32, 32): the per-sample diagonal is ours
    np.testing.assert_allclose(expand_batch(J["x"], 2), Jx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(J["W1"], np.asarray(ref[1]), rtol=1e-12, atol=1e-12)


def test_cnn_plan_never_forms_a_convolution_matrix():
    """The dense 0/1 form of conv1's input Jacobian per sample is (6*28*28) x (3*32*32) = 14.5M elements
    (what the issue's 290 MB of constants were); the plan's largest array stays below the explicit result
    and far below that."""
    args = cnn_args()
    plan = jac.jacobian(cnn, wrt="x", batched="x").plan(**args)
    dense_conv = 6 * 28 * 28 * 3 * 32 * 32
    assert plan.moved > 0
    assert plan.largest_intermediate < dense_conv // 10


# ---------------------------------------------------------------- an embedding classifier

IDS = np.random.default_rng(3).integers(0, 50, size=(4, 6))       # (B, T) token ids, constants


def embed(E, W, b):
    return fn.linear(E[IDS].mean(axis=1), W, b)                      # (B, 5)


def embed_args(V=50, d=8, C=5):
    r = np.random.default_rng(11)
    return dict(E=r.normal(size=(V, d)), W=r.normal(size=(C, d)), b=r.normal(size=C))


@pytest.mark.parametrize("order", ["forward", "reverse", "optimal"])
def test_embedding_classifier_against_differences(order):
    args = embed_args()
    J = jac.jacobian(embed, wrt=("E", "W"), order=order)(**args)
    for name in ("E", "W"):
        numeric = numerical_jacobian(lambda v: np.asarray(embed(**{**args, name: v})), args[name])
        np.testing.assert_allclose(J[name], numeric, rtol=1e-6, atol=1e-8)


def test_embedding_classifier_against_jax():
    jax = jax_or_skip()
    args = embed_args()
    J = jac.jacobian(embed, wrt="E")(**args)
    ref = jax.jacrev(lambda E, W, b: E[IDS].mean(axis=1) @ W.T + b)(*args.values())
    np.testing.assert_allclose(J, np.asarray(ref), rtol=1e-12, atol=1e-12)


def test_embedding_with_a_large_vocabulary_never_forms_the_one_hot():
    """V = 20000: the lookup's dense 0/1 Jacobian (B, T, d, V, d) would be 30.7M elements and the one-hot
    (B, T, V) 480k; the plan's largest array is the explicit result (B, 5, V, d) and nothing larger."""
    V, d, C = 20000, 4, 5
    ids = np.random.default_rng(5).integers(0, V, size=(4, 6))
    args = dict(E=np.random.default_rng(6).normal(size=(V, d)), W=np.ones((C, d)), b=np.zeros(C))
    f = lambda E, W, b: fn.linear(E[ids].mean(axis=1), W, b)
    for order in ("reverse", "optimal"):
        plan = jac.jacobian(f, wrt="E", order=order).plan(**args)
        result = 4 * C * V * d
        assert plan.largest_intermediate <= result < 4 * 6 * d * V * d
        assert plan.moved > 0
        assert not [s for s in plan.steps if isinstance(s, MapStep) and isinstance(s.array, Ones)]  # no 0/1 map
    J = jac.jacobian(f, wrt="E")(**args)
    rows = np.unique(ids)
    dense = np.zeros((4, C, V, d))
    for bi in range(4):
        for t in range(6):
            dense[bi, :, ids[bi, t], :] += args["W"] / 6
    np.testing.assert_array_equal(np.flatnonzero(np.abs(J).sum(axis=(0, 1, 3))), rows)
    np.testing.assert_allclose(J, dense, rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------- an LSTM unrolled 3 steps

H, D, T = 3, 4, 3


def lstm(X, Wx, Wh, b):
    B = X.shape[0]
    h = np.zeros((B, H))
    c = np.zeros((B, H))
    for t in range(T):
        z = X[:, t] @ Wx.T + h @ Wh.T + b                            # (B, 4H)
        i, f, g, o = fn.sigmoid(z[:, :H]), fn.sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), fn.sigmoid(z[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
    return h


def lstm_args(B=2):
    r = np.random.default_rng(13)
    return dict(X=r.normal(size=(B, T, D)), Wx=r.normal(size=(4 * H, D)) / 2, Wh=r.normal(size=(4 * H, H)) / 2,
                b=r.normal(size=4 * H) / 2)


@pytest.mark.parametrize("order", ["forward", "reverse", "optimal"])
def test_lstm_per_sample_against_differences(order):
    args = lstm_args()
    J = jac.jacobian(lstm, wrt="X", batched="X", order=order)(**args)
    assert J.shape == (2, H, T, D)
    numeric = numerical_jacobian(lambda v: np.asarray(lstm(**{**args, "X": v})), args["X"])
    np.testing.assert_allclose(expand_batch(J, 2), numeric, rtol=1e-6, atol=1e-8)


def test_lstm_against_jax():
    jax = jax_or_skip()
    jnp = jax.numpy
    args = lstm_args()

    def ref(X, Wx, Wh, b):
        h = c = jnp.zeros((X.shape[0], H))
        for t in range(T):
            z = X[:, t] @ Wx.T + h @ Wh.T + b
            i, f, g, o = (jax.nn.sigmoid(z[:, :H]), jax.nn.sigmoid(z[:, H:2 * H]), jnp.tanh(z[:, 2 * H:3 * H]),
                          jax.nn.sigmoid(z[:, 3 * H:]))
            c = f * c + i * g
            h = o * jnp.tanh(c)
        return h
    J = jac.jacobian(lstm, wrt="X", batched="X")(**args)
    np.testing.assert_allclose(expand_batch(J, 2), np.asarray(jax.jit(jax.jacrev(ref))(*args.values())), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- a GLU with np.split

def glu(x, W):
    a, b = np.split(x @ W.T, 2, axis=-1)
    return a * fn.sigmoid(b)


@pytest.mark.parametrize("order", ["forward", "reverse", "optimal"])
def test_glu_against_differences_and_jax(order):
    r = np.random.default_rng(17)
    args = dict(x=r.normal(size=(3, 5)), W=r.normal(size=(8, 5)))
    J = jac.jacobian(glu, wrt=("x", "W"), batched="x", order=order)(**args)
    num_x = numerical_jacobian(lambda v: np.asarray(glu(v, args["W"])), args["x"])
    np.testing.assert_allclose(expand_batch(J["x"], 2), num_x, rtol=1e-6, atol=1e-8)
    num_W = numerical_jacobian(lambda v: np.asarray(glu(args["x"], v)), args["W"])
    np.testing.assert_allclose(J["W"], num_W, rtol=1e-6, atol=1e-8)
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)

    def ref(x, W):
        a, b = jax.numpy.split(x @ W.T, 2, axis=-1)
        return a * jax.nn.sigmoid(b)
    Jx, JW = jax.jacrev(ref, argnums=(0, 1))(*args.values())
    np.testing.assert_allclose(expand_batch(J["x"], 2), np.asarray(Jx), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(J["W"], np.asarray(JW), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- slicing: the map stays a map

def test_slicing_plan_never_forms_the_selection_matrix():
    """x (B, 4096) sliced to x[:, 1000:1016]: the 0/1 selection with its batch delta is (B, 16, B, 4096);
    the per-sample result (B, 16, 4096) is the largest array of the plan, in every order."""
    B, n = 8, 4096
    x = np.random.default_rng(19).normal(size=(B, n))
    f = lambda x: np.tanh(x[:, 1000:1016]) * 2.0
    for order in ("forward", "reverse", "optimal"):
        plan = jac.jacobian(f, wrt="x", batched="x", order=order).plan(x)
        assert plan.largest_intermediate <= B * 16 * n < B * 16 * B * n
    J = jac.jacobian(f, wrt="x", batched="x")(x)
    ref = np.zeros((B, 16, n))
    for k in range(16):
        ref[:, k, 1000 + k] = 2 * (1 - np.tanh(x[:, 1000 + k]) ** 2)
    np.testing.assert_allclose(J, ref, rtol=1e-14, atol=1e-15)
