"""jac.chunked_jacobian: lazy dask arrays of per-sample Jacobians, checked against jac.jacobian (numpy) on
small sizes, with the synchronous scheduler, on a two-process LocalCluster, and through a zarr store."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import jacobians as jac

da = pytest.importorskip("dask.array")

fn = jac.fn
RNG = np.random.default_rng(1414)


def net(x, W1, b1, W2):
    h = np.tanh(fn.linear(x, W1, b1))
    return fn.linear(h, W2) * 2.0


def args(B=11, D=4, H=5, O=3):
    return [RNG.normal(size=s) for s in [(B, D), (H, D), (H,), (O, H)]]


WRT = ("x", "W1", "b1", "W2")


def test_blocks_match_numpy_synchronous():
    a = args()
    J = jac.chunked_jacobian(net, wrt=WRT, batched="x", chunks={"batch": 4})(*a)
    expected = jac.jacobian(net, wrt=WRT, batched="x")(*a)
    assert set(J) == set(WRT)
    for name in WRT:
        assert isinstance(J[name], da.Array)
        assert J[name].shape == expected[name].shape and J[name].dtype == expected[name].dtype
        assert J[name].chunks[0] == (4, 4, 3)
        np.testing.assert_allclose(J[name].compute(scheduler="synchronous"), expected[name], rtol=1e-14, atol=0)


def test_reductions_straight_from_the_lazy_array():
    a = args()
    J = jac.chunked_jacobian(net, wrt="W1", batched="x", chunks=3)(*a)
    expected = jac.jacobian(net, wrt="W1", batched="x")(*a)
    np.testing.assert_allclose(J.sum(axis=0).compute(scheduler="synchronous"), expected.sum(axis=0), rtol=1e-13)
    norms = da.sqrt((J ** 2).sum(axis=tuple(range(1, J.ndim))))
    np.testing.assert_allclose(norms.compute(scheduler="synchronous"),
                               np.sqrt((expected.reshape(len(expected), -1) ** 2).sum(axis=1)), rtol=1e-13)
    # the per-sample gradient norms of the NTK module agree with the dask reduction
    np.testing.assert_allclose(jac.sample_grad_norms(net, wrt="W1", batched="x")(*a),
                               norms.compute(scheduler="synchronous"), rtol=1e-12)


def test_single_wrt_is_one_array_and_default_chunks():
    a = args(B=6)
    J = jac.chunked_jacobian(net, wrt="x", batched="x")(*a)
    assert J.chunks[0] == (6,)
    np.testing.assert_allclose(J.compute(scheduler="synchronous"), jac.jacobian(net, wrt="x", batched="x")(*a))


def test_a_dask_input_stays_lazy():
    a = args()
    x = da.from_array(a[0], chunks=5)
    J = jac.chunked_jacobian(net, wrt="W2", batched="x", chunks=4)(x, *a[1:])
    np.testing.assert_allclose(J.compute(scheduler="synchronous"), jac.jacobian(net, wrt="W2", batched="x")(*a))


def test_coupled_samples_and_bad_chunks_are_refused():
    coupled = lambda x, W: np.tanh(fn.linear(x, W) - fn.linear(x, W).mean(axis=0))
    with pytest.raises(ValueError, match="samples of 'x' interact"):
        jac.chunked_jacobian(coupled, wrt="W", batched="x", chunks=2)(np.ones((4, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"keys among \('batch',\)"):
        jac.chunked_jacobian(net, wrt="W1", batched="x", chunks={"rows": 2})
    with pytest.raises(ValueError, match="must be a positive number of samples"):
        jac.chunked_jacobian(net, wrt="W1", batched="x", chunks=0)
    with pytest.raises(TypeError, match="batched must name"):
        jac.chunked_jacobian(net, wrt="W1", batched=None)


def test_chunk_over_the_memory_limit_is_refused_before_anything_runs():
    from jacobians.limits import limited_memory
    a = args()
    with limited_memory(3_000), pytest.raises(jac.JacobianTooLarge, match="one chunk of 8 samples"):
        jac.chunked_jacobian(net, wrt="W1", batched="x", chunks=8)(*a)


def test_zarr_round_trip(tmp_path):
    zarr = pytest.importorskip("zarr")
    a = args()
    J = jac.chunked_jacobian(net, wrt="W1", batched="x", chunks=4)(*a)
    path = str(tmp_path / "J.zarr")
    J.to_zarr(path, compute=True)
    stored = zarr.open_array(path, mode="r")
    assert stored.shape == J.shape and stored.chunks[0] == 4
    np.testing.assert_allclose(stored[...], jac.jacobian(net, wrt="W1", batched="x")(*a), rtol=1e-14, atol=0)
    np.testing.assert_allclose(da.from_zarr(path).sum(axis=0).compute(scheduler="synchronous"),
                               J.sum(axis=0).compute(scheduler="synchronous"), rtol=1e-13)


def test_local_cluster_two_processes():
    distributed = pytest.importorskip("distributed")
    a = args(B=9)
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                  memory_limit="1GiB") as cluster, distributed.Client(cluster) as client:
        J = jac.chunked_jacobian(net, wrt=("W1", "b1"), batched="x", chunks=2)(*a)
        got = client.compute([J["W1"], J["b1"]], sync=True)
        where = client.run(lambda: __import__("os").getpid())
    assert len(set(where.values())) == 2
    expected = jac.jacobian(net, wrt=("W1", "b1"), batched="x")(*a)
    np.testing.assert_allclose(got[0], expected["W1"], rtol=1e-14, atol=0)
    np.testing.assert_allclose(got[1], expected["b1"], rtol=1e-14, atol=0)


def test_import_jacobians_does_not_import_dask():
    code = "import sys, jacobians; print(any(m.split('.')[0] in ('dask', 'distributed', 'zarr') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
