"""The array-backend seam (issue 14, part 1): ``jacobian(..., backend=...)`` gives numpy's Jacobians.

Every case runs on each backend of the fixture ``backend`` (numpy always; torch and jax
when installed) and is compared with the numpy backend's result to 1e-12: every op's
first-order Jacobian (the op table of tests/test_ops.py, each op as a traced function),
a representative subset of the composer's chains (tests/test_composer.py), the
index-map models, random DAGs (tests/test_composer_properties.py), chunked networks.
The numpy results are themselves checked against central differences by those files.
CUDA cases (torch on a GPU, cupy) skip, saying why, where no GPU is present.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings

import jacobians as jac
from jacobians import limits
from jacobians.backends import NAMES, backend_of, get_backend, infer_backend
from test_composer import OP_CASES, _clark, _residual, clark_net, residual_batched
from test_composer_properties import programs, arguments
from test_hessian import op_function
from test_ops import SPECS, make_args

fn = jac.fn
ORDERS = ("forward", "reverse", "optimal")
# jax compiles every primitive for every new shape (seconds per case in eager mode): it runs one
# spec per op and fewer orders than torch; the orders differ in step kinds, which torch covers
JAX_ORDERS = ("forward", "reverse")


class Backend:
    """One backend under test: its name, and numpy arrays converted to its arrays."""

    def __init__(self, name: str, device=None) -> None:
        self.name, self.device = name, device
        self.xp = get_backend(name)

    def to(self, a):
        if isinstance(a, np.ndarray) and a.dtype.kind in "fc":
            return self.xp.asarray(a, device=self.device)
        return a

    def check(self, J, ref, what: str = "") -> None:
        """``J`` (this backend's arrays, possibly nested) equals ``ref`` (numpy's) to 1e-12."""
        if isinstance(ref, dict):
            assert isinstance(J, dict) and set(J) == set(ref), what
            for k in ref:
                self.check(J[k], ref[k], f"{what} d/d{k}")
            return
        if isinstance(ref, (tuple, list)):
            for k, (a, b) in enumerate(zip(J, ref, strict=True)):
                self.check(a, b, f"{what}[{k}]")
            return
        assert backend_of(J) == self.name, f"{what}: a {type(J).__name__}, expected a {self.name} array"
        got = self.xp.to_numpy(J)
        assert got.dtype == ref.dtype and got.shape == ref.shape, (what, got.dtype, got.shape, ref.dtype, ref.shape)
        scale = max(1.0, float(np.abs(ref).max(initial=0.0)))
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * scale, err_msg=what)


@pytest.fixture(params=["numpy", "torch", "jax"])
def backend(request) -> Backend:
    if request.param != "numpy":
        module = pytest.importorskip(request.param)
        if request.param == "jax":
            module.config.update("jax_enable_x64", True)   # float64 Jacobians need jax's 64-bit mode
    return Backend(request.param)


def compare(backend: Backend, f, args: dict, wrt, batched=None, orders=None) -> None:
    """The Jacobians of ``f`` on the backend's arrays == numpy's, in every order (jax: :data:`JAX_ORDERS`)."""
    for order in orders or (JAX_ORDERS if backend.name == "jax" else ORDERS):
        ref = jac.jacobian(f, wrt=wrt, batched=batched, order=order)(**args)
        J = jac.jacobian(f, wrt=wrt, batched=batched, order=order)(**{k: backend.to(v) for k, v in args.items()})
        backend.check(J, ref, f"{getattr(f, '__name__', 'f')} order={order}")


# ---------------------------------------------------------------- every op, first order


def _specs(k: int):
    """Per op, its ``k``-th spec that runs without a batch (the op table's other rows differ in shape only)."""
    kept, count = [], {}
    for s in SPECS:
        if s.unbatched is not None:
            count[s.op] = count.get(s.op, 0) + 1
            if count[s.op] == k:
                kept.append(s)
    return kept


def test_the_op_table_covers_every_op():
    assert {s.op for s in _specs(1)} == set(jac.ops.OPS)


def op_matches_numpy(spec, backend: Backend) -> None:
    """``jacobian(op-as-function, backend=...)`` w.r.t. every differentiable argument == numpy's."""
    f, names, values, _, _ = op_function(spec, make_args(spec))
    ref = jac.jacobian(f, wrt=tuple(names))(*values)
    J = jac.jacobian(f, wrt=tuple(names), backend=backend.name)(*[backend.to(v) for v in values])
    backend.check(J, ref, spec.id)


@pytest.mark.parametrize("spec", [pytest.param(s, id=s.id) for s in _specs(1)])
def test_every_op_first_order_matches_numpy(spec, backend):
    op_matches_numpy(spec, backend)


@pytest.mark.parametrize("spec", [pytest.param(s, id=s.id) for s in _specs(2)])
def test_every_ops_second_spec_matches_numpy_on_torch(spec):
    pytest.importorskip("torch")
    op_matches_numpy(spec, Backend("torch"))


# ---------------------------------------------------------------- the composer's cases

COMPOSER_OPS = ("linear", "matmul", "dot", "add", "multiply", "divide", "sum", "mean", "reshape", "transpose",
                "relu", "tanh", "softmax", "logsumexp", "layer_norm", "batch_norm", "softmax_cross_entropy",
                "cross_entropy", "norm", "maximum", "where", "amax", "det", "solve")


@pytest.mark.parametrize("op", COMPOSER_OPS)
def test_composer_chains_match_numpy(op, backend):
    f, args, wrt, batched, _ = OP_CASES[op]()
    compare(backend, f, args, tuple(wrt), batched)


def test_composer_clark_and_residual_match_numpy(backend):
    compare(backend, clark_net, _clark(), ("U", "b2", "W", "b1", "x"))
    compare(backend, residual_batched, _residual(32, 3), ("x", "W1", "W2"), "x")   # a skip: a block added


def _models():
    r = np.random.default_rng(5)

    def cnn(x, K, b, W):
        h = fn.relu(fn.conv2d(x, K, b, padding=1))
        h = fn.max_pool2d(h, 2)
        return fn.linear(h.reshape(h.shape[0], -1), W)

    def embedded(E, W):   # a lookup and slices: gathers and scatter-adds
        ids = np.array([[1, 4, 4], [0, 2, 5]])
        h = E[ids].sum(axis=1)
        return np.tanh(fn.linear(h[:, 1:], W)) + h[:, :2]

    return [(cnn, dict(x=r.normal(size=(2, 2, 6, 6)), K=r.normal(size=(3, 2, 3, 3)), b=r.normal(size=3),
                       W=r.normal(size=(4, 27))), ("x", "K", "W"), "x"),
            (embedded, dict(E=r.normal(size=(6, 5)), W=r.normal(size=(2, 4))), ("E", "W"), None)]


@pytest.mark.parametrize("case", _models(), ids=lambda c: c[0].__name__)
def test_index_map_models_match_numpy(case, backend):
    f, args, wrt, batched = case
    compare(backend, f, args, wrt, batched)


@settings(max_examples=10, deadline=None, derandomize=True, database=None)
@given(programs(dag=True))
def test_random_dags_match_numpy(case):
    p, wrt, batched, seed = case
    f, args = p.function(), arguments(p, seed)
    for name in ("torch", "jax"):
        if _available(name):
            compare(Backend(name), f, args, wrt, batched, orders=("optimal",))


def _available(name: str) -> bool:
    try:
        module = __import__(name)
    except ImportError:
        return False
    if name == "jax":
        module.config.update("jax_enable_x64", True)
    return True


def test_chunked_networks_match_numpy(backend):
    """Under a small memory limit the planner slices a network along an output label (forward order:
    slope * W1 is 312.5 KiB against a 64 KiB limit)."""
    r = np.random.default_rng(71)
    m = 200
    a = dict(x=r.normal(size=m), W1=r.normal(size=(m, m)) / 15, w2=r.normal(size=(1, m)))

    def g(x, W1, w2):
        return fn.linear(fn.tanh(fn.linear(x, W1)), w2)
    with limits.limited_memory(64 << 10):
        f = jac.jacobian(g, wrt="x", order="forward")
        assert any(s.chunk for s in f.plan(**a).networks)
        backend.check(jac.jacobian(g, wrt="x", order="forward", backend=backend.name)(**a), f(**a))


# ---------------------------------------------------------------- the boundary


def test_numpy_inputs_with_a_backend_give_its_arrays_and_keep_float32(backend):
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    W = np.full((2, 4), 0.5, dtype=np.float32)
    J = jac.jacobian(lambda x, W: fn.tanh(fn.linear(x, W)), wrt="x", batched="x", backend=backend.name)(x, W)
    ref = jac.jacobian(lambda x, W: fn.tanh(fn.linear(x, W)), wrt="x", batched="x")(x, W)
    assert backend_of(J) == backend.name
    got = backend.xp.to_numpy(J)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    # the backend's own float32 arrays in: float32 Jacobians of the same backend out
    J = jac.jacobian(lambda x, W: fn.tanh(fn.linear(x, W)), wrt="x", batched="x")(backend.to(x), backend.to(W))
    assert backend_of(J) == backend.name and backend.xp.to_numpy(J).dtype == np.float32


def test_an_output_independent_of_wrt_gives_the_backends_zeros(backend):
    J = jac.jacobian(lambda x, W: fn.tanh(W), wrt="x")(backend.to(np.ones(3)), backend.to(np.ones(2)))
    assert backend_of(J) == backend.name and backend.xp.to_numpy(J).shape == (2, 3)
    assert not backend.xp.to_numpy(J).any()


def test_backend_names_and_inference():
    with pytest.raises(ValueError, match=r"unknown backend 'tensorflow'; valid options are 'numpy', 'torch', "
                                         r"'jax', 'cupy'"):
        jac.jacobian(np.tanh, backend="tensorflow")
    assert infer_backend(np.ones(2), 1.0, "s", None) == "numpy"
    assert NAMES == ("numpy", "torch", "jax", "cupy")
    torch, jnp = pytest.importorskip("torch"), pytest.importorskip("jax.numpy")
    assert infer_backend(np.ones(2), torch.ones(2)) == "torch"
    assert infer_backend(jnp.ones(2), 3) == "jax"
    with pytest.raises(ValueError, match="arrays of several backends in one call \\(jax, torch\\)"):
        infer_backend(torch.ones(2), jnp.ones(2))


def test_an_explicit_backend_converts_other_inputs():
    """``backend="numpy"`` with torch inputs: the inputs are converted, numpy arrays come back."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).normal(size=(3, 4))
    J = jac.jacobian(lambda x: fn.tanh(x) * 2.0, wrt="x", batched="x", backend="numpy")(torch.from_numpy(x))
    assert isinstance(J, np.ndarray)
    np.testing.assert_allclose(J, jac.jacobian(lambda x: fn.tanh(x) * 2.0, wrt="x", batched="x")(x), rtol=1e-15)


def test_torch_inputs_that_require_grad_are_read_as_values():
    torch = pytest.importorskip("torch")
    x = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    J = jac.jacobian(lambda x: fn.tanh(x), wrt="x", batched="x")(x)
    assert isinstance(J, torch.Tensor) and not J.requires_grad and J.shape == (2, 3, 3)


def test_jax_without_its_64_bit_mode_refuses_float64_and_runs_float32():
    """In a fresh process (the fixture turns the 64-bit mode on for this one)."""
    pytest.importorskip("jax")
    code = ("import numpy as np, jax.numpy as jnp, jacobians as jac\n"
            "f = jac.jacobian(lambda x: jac.fn.tanh(x), wrt='x', batched='x', backend='jax')\n"
            "try:\n    f(np.ones((2, 3)))\nexcept TypeError as e:\n    print(e)\n"
            "J = jac.jacobian(lambda x: jac.fn.tanh(x), wrt='x', batched='x')(jnp.ones((2, 3)))\n"
            "print(type(J).__module__.split('.')[0], J.dtype, J.shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(jac.__file__).parent.parent).stdout.splitlines()
    assert out == ["backend 'jax': float64 needs jax's 64-bit mode, which is off; call "
                   "jax.config.update('jax_enable_x64', True) first, or pass float32 arrays",
                   "jaxlib float32 (2, 3, 3)"]


def test_nothing_outside_the_backends_imports_torch_jax_or_cupy():
    root = Path(jac.__file__).parent
    for path in root.rglob("*.py"):
        if path.parent.name == "backends":
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                assert words[1].partition(".")[0] not in ("torch", "jax", "jaxlib", "cupy", "cupyx"), (path, line)
    code = ("import sys, numpy as np, jacobians as jac; jac.jacobian(lambda x: jac.fn.tanh(x))(np.ones(2)); "
            "print(sorted(m for m in ('torch', 'jax', 'cupy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=root.parent).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- the memory limit per device


def test_device_limit_is_half_the_device_unless_the_user_set_less():
    host = limits.memory_limit()
    with limits.device_limit(None):
        assert limits.memory_limit() == host
    with limits.limited_memory("1GiB"):
        with limits.device_limit(16 << 30):       # the user's 1 GiB caps a 16 GiB device
            assert limits.memory_limit() == 1 << 30
        with limits.device_limit(1 << 30):        # half of a 1 GiB device is below the user's limit
            assert limits.memory_limit() == 1 << 29
            with pytest.raises(limits.JacobianTooLarge, match="over the memory limit of 512.0 MiB"):
                limits.check_bytes((1 << 29) + 1, "a block")
        assert limits.memory_limit() == 1 << 30
    assert limits.memory_limit() == host


def test_plans_are_sized_against_the_devices_limit(monkeypatch):
    """A backend whose device reports 1 MiB: the 2 MiB result is refused, naming the limit (512 KiB)."""
    xp = get_backend("numpy")
    monkeypatch.setattr(xp, "device_memory", lambda device: 1 << 20)
    x = np.ones((16, 128))
    with pytest.raises(limits.JacobianTooLarge, match="over the memory limit of 512.0 KiB"):
        jac.jacobian(lambda x: fn.tanh(x), wrt="x")(x)
    monkeypatch.undo()
    assert jac.jacobian(lambda x: fn.tanh(x), wrt="x")(x).shape == (16, 128, 16, 128)


# ---------------------------------------------------------------- CUDA


def _cuda_torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch on CUDA: no CUDA device on this machine (torch.cuda.is_available() is False)")
    return torch


def test_torch_cuda_matches_numpy_and_stays_on_the_device():
    torch = _cuda_torch()
    b = Backend("torch", torch.device("cuda"))
    f, args, wrt, batched = _models()[0]
    compare(b, f, args, wrt, batched)
    J = jac.jacobian(f, wrt="x", batched="x")(**{k: b.to(v) for k, v in args.items()})
    assert J.device.type == "cuda"
    assert get_backend("torch").device_memory(J.device) == torch.cuda.get_device_properties(0).total_memory


def test_cupy_matches_numpy():
    cupy = pytest.importorskip("cupy")
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:
        n = 0
    if not n:
        pytest.skip("cupy: no CUDA device on this machine")
    b = Backend("cupy")
    for f, args, wrt, batched in _models():
        compare(b, f, args, wrt, batched)
    f, args, wrt, batched, _ = OP_CASES["layer_norm"]()
    compare(b, f, args, tuple(wrt), batched)


# ---------------------------------------------------------------- Factored.dense / product


def test_factored_dense_and_products_on_torch_match_numpy():
    """Every op's factored forms: ``dense(backend="torch")`` and both products (maps as gathers and
    scatter-adds on torch) equal numpy's."""
    torch = pytest.importorskip("torch")
    b = Backend("torch")
    r = np.random.default_rng(3)
    for spec in _specs(1):
        _, forms = getattr(jac.ops, spec.op).factored(*make_args(spec), **spec.params)
        for f in forms:
            what = f"{spec.id}: {f.out!r} -> {f.inp!r}"
            b.check(f.dense(backend="torch"), f.dense(), what + " dense")
            v, u = r.normal(size=f.in_shape + (2,)), r.normal(size=f.out_shape + (2,))
            b.check(f.product(torch.from_numpy(v), backend="torch")[0], f.product(v)[0], what + " J v")
            b.check(f.product(torch.from_numpy(u), "out", backend="torch")[0], f.product(u, "out")[0], what + " u J")
