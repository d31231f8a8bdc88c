"""The empirical NTK and per-sample gradient norms (jac.ntk, jac.sample_grad_norms) against the explicit
``J(x1) J(x2)^T`` built from ``jac.jacobian`` (itself checked against finite differences by the op and
model suites), on MLPs, a small CNN, a tied weight and a batch-coupled net; chunked and unchunked;
and against JAX's vmap(jacrev) when JAX is installed."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import jacobians as jac
from jacobians.limits import limited_memory

fn = jac.fn
RNG = np.random.default_rng(14)
ntk_module = sys.modules["jacobians.ntk"]   # jacobians.ntk is the function


def explicit(f, wrt, x1, x2, rest):
    """``sum_p J(x1)[a, o, p] J(x2)[b, o', p]`` from the explicit per-sample Jacobians."""
    J1 = jac.jacobian(f, wrt=wrt, batched="x")(x1, *rest)
    J2 = jac.jacobian(f, wrt=wrt, batched="x")(x2, *rest)
    out = np.shape(f(x1[:1], *rest))[1:]
    k = int(np.prod(out, dtype=int))
    total = 0
    for n in wrt:
        A = J1[n].reshape(len(x1), k, -1)
        B = J2[n].reshape(len(x2), k, -1)
        total = total + np.einsum("aop,bqp->aboq", A, B)
    return np.asarray(total).reshape((len(x1), len(x2)) + out + out)


def mlp(x, W1, b1, W2, b2):
    h = np.tanh(x @ W1.T + b1)
    return fn.linear(h, W2, b2)


def mlp_args(D=4, H=6, O=3):
    return [RNG.normal(size=s) for s in [(H, D), (H,), (O, H), (O,)]]


def test_mlp_every_parameter_against_explicit():
    rest = mlp_args()
    wrt = ("W1", "b1", "W2", "b2")
    x1, x2 = RNG.normal(size=(5, 4)), RNG.normal(size=(7, 4))
    theta = jac.ntk(mlp, wrt=wrt, batched="x")(x1, x2, *rest)
    assert theta.shape == (5, 7, 3, 3)
    np.testing.assert_allclose(theta, explicit(mlp, wrt, x1, x2, rest), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("wrt", [("W1",), ("b2",), ("W2", "b1"), ("W1", "W2")])
def test_mlp_subsets_of_parameters(wrt):
    rest = mlp_args()
    x1, x2 = RNG.normal(size=(3, 4)), RNG.normal(size=(4, 4))
    theta = jac.ntk(mlp, wrt=wrt, batched="x")(x1, x2, *rest)
    np.testing.assert_allclose(theta, explicit(mlp, wrt, x1, x2, rest), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 2, 3, 100])
def test_chunks_and_symmetry(chunk):
    """x2=None is x1 against itself (upper blocks computed, lower ones mirrored); every chunking agrees."""
    rest = mlp_args()
    wrt = ("W1", "b1", "W2", "b2")
    x = RNG.normal(size=(7, 4))
    theta = jac.ntk(mlp, wrt=wrt, batched="x", chunk=chunk)(x, None, *rest)
    np.testing.assert_allclose(theta, explicit(mlp, wrt, x, x, rest), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(theta, theta.transpose(1, 0, 3, 2), rtol=1e-12, atol=1e-12)
    x2 = RNG.normal(size=(5, 4))
    theta = jac.ntk(mlp, wrt=wrt, batched="x", chunk=chunk)(x, x2, *rest)
    np.testing.assert_allclose(theta, explicit(mlp, wrt, x, x2, rest), rtol=1e-12, atol=1e-12)


def test_memory_limit_chunks_the_samples():
    rest = mlp_args()
    wrt = ("W1", "b2")
    x = RNG.normal(size=(40, 4))
    with limited_memory(40_000):   # the kernel (115 KiB) would not fit: refused, one line
        with pytest.raises(jac.JacobianTooLarge, match="the NTK"):
            jac.ntk(mlp, wrt=wrt, batched="x")(x, None, *rest)
    with limited_memory(200_000):  # fits, in blocks of a few samples
        theta = jac.ntk(mlp, wrt=wrt, batched="x")(x, None, *rest)
    np.testing.assert_allclose(theta, explicit(mlp, wrt, x, x, rest), rtol=1e-12, atol=1e-12)


def test_structured_linear_layer_never_forms_the_jacobian():
    """For a linear layer the NTK contraction is (G1 G2^T) * (h1 . h2): no network carries the weight's
    labels past the link (the per-sample J of shape (B, O, H, D) is never an operand or a result)."""
    seen = []
    original = ntk_module._contract

    def spy(terms, output, sizes, what):
        seen.append(max(np.size(a) for _, a in terms))
        return original(terms, output, sizes, what)
    B, D, H, O = 6, 30, 20, 4
    rest = [RNG.normal(size=s) for s in [(H, D), (H,), (O, H), (O,)]]
    x = RNG.normal(size=(B, D))
    ntk_module._contract = spy
    try:
        theta = jac.ntk(mlp, wrt=("W1", "b1", "W2", "b2"), batched="x")(x, None, *rest)
    finally:
        ntk_module._contract = original
    assert seen and max(seen) < B * O * H * D
    np.testing.assert_allclose(theta, explicit(mlp, ("W1", "b1", "W2", "b2"), x, x, rest), rtol=1e-12, atol=1e-12)


def cnn(x, W, b, V, c):
    h = fn.relu(fn.conv2d(x, W, b))            # (B, 3, 4, 4)
    h = fn.avg_pool2d(h, 2)                    # (B, 3, 2, 2)
    return fn.linear(h.reshape(h.shape[0], -1), V, c)


def test_cnn_against_explicit():
    rest = [RNG.normal(size=s) for s in [(3, 2, 3, 3), (3,), (5, 12), (5,)]]
    wrt = ("W", "b", "V", "c")
    x1, x2 = RNG.normal(size=(3, 2, 6, 6)), RNG.normal(size=(2, 2, 6, 6))
    theta = jac.ntk(cnn, wrt=wrt, batched="x", chunk=2)(x1, x2, *rest)
    assert theta.shape == (3, 2, 5, 5)
    np.testing.assert_allclose(theta, explicit(cnn, wrt, x1, x2, rest), rtol=1e-11, atol=1e-11)


def tied(x, W, v):
    h = np.tanh(x @ W.T)                       # W used twice: two paths into it
    return np.sin(h @ W) @ v                   # a scalar per sample: Theta (N1, N2)


def test_tied_weight_and_scalar_output():
    rest = [RNG.normal(size=(4, 4)) * 0.5, RNG.normal(size=4)]
    x1, x2 = RNG.normal(size=(3, 4)), RNG.normal(size=(5, 4))
    theta = jac.ntk(tied, wrt=("W", "v"), batched="x")(x1, x2, *rest)
    assert theta.shape == (3, 5)
    np.testing.assert_allclose(theta, explicit(tied, ("W", "v"), x1, x2, rest), rtol=1e-11, atol=1e-12)


def coupled(x, W):
    h = fn.linear(x, W)
    return np.tanh(h - h.mean(axis=0))        # samples interact: the batch cannot be split


def test_coupled_samples_are_one_block():
    W = RNG.normal(size=(3, 4))
    x = RNG.normal(size=(6, 4))
    theta = jac.ntk(coupled, wrt="W", batched="x", chunk=2)(x, None, W)
    np.testing.assert_allclose(theta, explicit(coupled, ("W",), x, x, [W]), rtol=1e-12, atol=1e-12)


def test_sample_grad_norms():
    rest = mlp_args()
    wrt = ("W1", "b1", "W2", "b2")
    x = RNG.normal(size=(7, 4))
    J = jac.jacobian(mlp, wrt=wrt, batched="x")(x, *rest)
    expected = np.sqrt(sum((J[n].reshape(7, -1) ** 2).sum(axis=1) for n in wrt))
    for chunk in (None, 3):
        np.testing.assert_allclose(jac.sample_grad_norms(mlp, wrt=wrt, batched="x", chunk=chunk)(x, *rest),
                                   expected, rtol=1e-12)
    # a per-sample loss: the norms of the per-sample gradients
    loss = lambda x, W1, b1, W2, b2: fn.sum(mlp(x, W1, b1, W2, b2) ** 2, axis=1)
    g = jac.jacobian(loss, wrt="W1", batched="x")(x, *rest)      # (B, H, D)
    np.testing.assert_allclose(jac.sample_grad_norms(loss, wrt="W1", batched="x")(x, *rest),
                               np.sqrt((g.reshape(7, -1) ** 2).sum(axis=1)), rtol=1e-12)


def test_bad_calls_name_the_problem():
    rest = mlp_args()
    with pytest.raises(TypeError, match="ntk: batched"):
        jac.ntk(mlp, wrt="W1", batched=None)
    with pytest.raises(ValueError, match="wrt='x' is the batched argument"):
        jac.ntk(mlp, wrt="x", batched="x")
    with pytest.raises(ValueError, match="ntk: chunk must be a positive"):
        jac.ntk(mlp, wrt="W1", batched="x", chunk=0)
    with pytest.raises(ValueError, match=r"ntk: x1 \(3, 4\) and x2 \(3, 5\)"):
        jac.ntk(mlp, wrt="W1", batched="x")(np.ones((3, 4)), np.ones((3, 5)), *rest)
    with pytest.raises(ValueError, match="output must keep the batch"):
        jac.ntk(lambda x, W: fn.sum(fn.linear(x, W)), wrt="W", batched="x")(np.ones((3, 4)), None, rest[0])


def test_against_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    rest = mlp_args(D=5, H=8, O=3)
    x1, x2 = RNG.normal(size=(4, 5)), RNG.normal(size=(6, 5))

    def f(params, x):
        W1, b1, W2, b2 = params
        return jnp.tanh(x @ W1.T + b1) @ W2.T + b2

    per_sample = jax.vmap(jax.jacrev(lambda p, x: f(p, x[None])[0]), in_axes=(None, 0))
    J1, J2 = per_sample(rest, x1), per_sample(rest, x2)
    flat = lambda J: np.asarray(J).reshape(J.shape[0], J.shape[1], -1)
    ref = sum(np.einsum("aop,bqp->aboq", flat(a), flat(b)) for a, b in zip(J1, J2))
    theta = jac.ntk(mlp, wrt=("W1", "b1", "W2", "b2"), batched="x")(x1, x2, *rest)
    np.testing.assert_allclose(theta, ref, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- jac.chunked_ntk: the kernel as dask tasks

WRT = ("W1", "b1", "W2", "b2")


@pytest.mark.parametrize("chunks", [1, 3, {"batch": 4}, 100])
def test_chunked_against_in_process_synchronous(chunks):
    da = pytest.importorskip("dask.array")
    rest = mlp_args()
    x, x2 = RNG.normal(size=(7, 4)), RNG.normal(size=(5, 4))
    c = chunks["batch"] if isinstance(chunks, dict) else chunks
    for other in (None, x2):
        theta = jac.chunked_ntk(mlp, wrt=WRT, batched="x", chunks=chunks)(x, other, *rest)
        n2 = 7 if other is None else 5
        assert isinstance(theta, da.Array) and theta.shape == (7, n2, 3, 3) and theta.dtype == np.float64
        assert theta.chunks[0] == tuple(min(c, 7 - i) for i in range(0, 7, c))
        assert theta.chunks[1] == tuple(min(c, n2 - j) for j in range(0, n2, c))
        expected = jac.ntk(mlp, wrt=WRT, batched="x")(x, other, *rest)
        np.testing.assert_allclose(theta.compute(scheduler="synchronous"), expected, rtol=1e-13, atol=1e-13)


def test_chunked_symmetric_contracts_the_upper_blocks_once(monkeypatch):
    pytest.importorskip("dask.array")
    calls = []
    original = ntk_module._pair_block

    def spy(s1, s2, target, wrt, same):
        calls.append(target.shape[:2])
        return original(s1, s2, target, wrt, same)
    monkeypatch.setattr(ntk_module, "_pair_block", spy)
    rest = mlp_args()
    x = RNG.normal(size=(7, 4))
    theta = jac.chunked_ntk(mlp, wrt=WRT, batched="x", chunks=3)(x, None, *rest).compute(scheduler="synchronous")
    assert sorted(calls) == sorted([(3, 3), (3, 3), (3, 1), (3, 3), (3, 1), (1, 1)])   # 6 of the 3 x 3 blocks
    np.testing.assert_allclose(theta, explicit(mlp, WRT, x, x, rest), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(theta, theta.transpose(1, 0, 3, 2), rtol=0, atol=0)


def test_chunked_cnn_with_a_dask_input():
    da = pytest.importorskip("dask.array")
    rest = [RNG.normal(size=s) for s in [(3, 2, 3, 3), (3,), (5, 12), (5,)]]
    wrt = ("W", "b", "V", "c")
    x1, x2 = RNG.normal(size=(5, 2, 6, 6)), RNG.normal(size=(3, 2, 6, 6))
    theta = jac.chunked_ntk(cnn, wrt=wrt, batched="x", chunks=2)(da.from_array(x1, chunks=3), x2, *rest)
    assert theta.chunks[:2] == ((2, 2, 1), (2, 1))
    np.testing.assert_allclose(theta.compute(scheduler="synchronous"), explicit(cnn, wrt, x1, x2, rest),
                               rtol=1e-11, atol=1e-11)


def test_chunked_scalar_output_and_keyword_arguments():
    pytest.importorskip("dask.array")
    W, v = RNG.normal(size=(4, 4)) * 0.5, RNG.normal(size=4)
    x = RNG.normal(size=(5, 4))
    theta = jac.chunked_ntk(tied, wrt=("W", "v"), batched="x", chunks=2)(x, None, W, v=v)
    assert theta.shape == (5, 5) and theta.chunks == ((2, 2, 1), (2, 2, 1))
    np.testing.assert_allclose(theta.compute(scheduler="synchronous"), explicit(tied, ("W", "v"), x, x, [W, v]),
                               rtol=1e-11, atol=1e-12)


def test_chunked_to_zarr(tmp_path):
    pytest.importorskip("dask.array")
    zarr = pytest.importorskip("zarr")
    rest = mlp_args()
    x = RNG.normal(size=(9, 4))
    theta = jac.chunked_ntk(mlp, wrt=WRT, batched="x", chunks=4)(x, None, *rest)
    path = str(tmp_path / "ntk.zarr")
    theta.to_zarr(path, compute=True)
    stored = zarr.open_array(path, mode="r")
    assert stored.shape == (9, 9, 3, 3) and stored.chunks[:2] == (4, 4)
    np.testing.assert_allclose(stored[...], jac.ntk(mlp, wrt=WRT, batched="x")(x, None, *rest), rtol=1e-13, atol=1e-13)


def test_chunked_on_a_two_process_local_cluster():
    pytest.importorskip("dask.array")
    distributed = pytest.importorskip("distributed")
    rest = mlp_args()
    x1, x2 = RNG.normal(size=(6, 4)), RNG.normal(size=(4, 4))
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                  memory_limit="1GiB") as cluster, distributed.Client(cluster) as client:
        gram = jac.chunked_ntk(mlp, wrt=WRT, batched="x", chunks=2)(x1, None, *rest)
        cross = jac.chunked_ntk(mlp, wrt=WRT, batched="x", chunks=3)(x1, x2, *rest)
        got = client.compute([gram, cross], sync=True)
        where = client.run(lambda: __import__("os").getpid())
    assert len(set(where.values())) == 2
    f = jac.ntk(mlp, wrt=WRT, batched="x")
    np.testing.assert_allclose(got[0], f(x1, None, *rest), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(got[1], f(x1, x2, *rest), rtol=1e-13, atol=1e-13)


def test_chunked_refusals_name_the_problem():
    pytest.importorskip("dask.array")
    rest = mlp_args()
    W = RNG.normal(size=(3, 4))
    with pytest.raises(ValueError, match="chunked_ntk: the samples of 'x' interact"):
        jac.chunked_ntk(coupled, wrt="W", batched="x", chunks=2)(RNG.normal(size=(6, 4)), None, W)
    with pytest.raises(ValueError, match=r"chunked_ntk: chunks must be .* keys among \('batch',\)"):
        jac.chunked_ntk(mlp, wrt="W1", batched="x", chunks={"rows": 2})
    with pytest.raises(ValueError, match=r"chunked_ntk: chunks\['batch'\] must be a positive"):
        jac.chunked_ntk(mlp, wrt="W1", batched="x", chunks=0)
    with pytest.raises(ValueError, match=r"chunked_ntk: x1 \(3, 4\) and x2 \(3, 5\)"):
        jac.chunked_ntk(mlp, wrt="W1", batched="x")(np.ones((3, 4)), np.ones((3, 5)), *rest)
    with pytest.raises(ValueError, match="chunked_ntk: x1 needs a leading batch axis"):
        jac.chunked_ntk(mlp, wrt="W1", batched="x")(np.float64(1.0), None, *rest)
    with limited_memory(5_000), pytest.raises(jac.JacobianTooLarge, match="one block of the NTK"):
        jac.chunked_ntk(mlp, wrt=WRT, batched="x", chunks=10)(RNG.normal(size=(10, 4)), None, *rest)
