"""numpy names on traced values mean exactly what numpy means, or raise a TypeError naming them.

Every mapping of :func:`jacobians.graph.numpy_table` is exercised below: the traced value equals
numpy's on plain arrays (the reference is numpy itself), and the Jacobian through
``jac.jacobian`` equals central differences of the plain numpy function.  The registry-derived
mappings (``Op.numpy``) are also swept over every spec of the op table in test_ops.py.
"""

from __future__ import annotations

import inspect
import re
import zlib

import numpy as np
import pytest

import jacobians as jac
from jacobians.graph import Graph, Node, Traced, TracedBool, numpy_table
from jacobians.ops import OPS
from jacobians.testing import numerical_jacobian

from test_ops import SPECS, make_args

fn = jac.fn


def traced_value(f, args):
    """``f`` run on traced inputs: the value the tracer computed."""
    g = Graph()
    names = list(inspect.signature(f).parameters)
    out = f(*[Traced(g, g.add(Node(n, value=a))) for n, a in zip(names, args)])
    return out.value if isinstance(out, Traced) else out


def assert_numpy_meaning(f, args, rtol=1e-6):
    """Value equals numpy's; the Jacobian w.r.t. every argument equals central differences."""
    ref = f(*args)
    value = traced_value(f, args)
    assert np.shape(value) == np.shape(ref)
    np.testing.assert_allclose(value, ref, rtol=1e-13, atol=1e-13)
    names = list(inspect.signature(f).parameters)
    J = jac.jacobian(f, wrt=tuple(names))(*args)
    for k, name in enumerate(names):
        def of(v, k=k):
            return np.asarray(f(*args[:k], v, *args[k + 1:]), dtype=np.float64)
        numeric = numerical_jacobian(of, args[k])
        assert J[name].shape == np.shape(ref) + args[k].shape, name
        np.testing.assert_allclose(J[name], numeric, rtol=rtol, atol=1e-7, err_msg=f"d/d{name}")


def data(key: str, *shapes, kind="normal"):
    r = np.random.default_rng(zlib.crc32(key.encode()))
    if kind == "pos":
        return [r.uniform(0.5, 2.0, size=s) for s in shapes]
    if kind == "away":    # no kinks or ties within reach of the finite differences
        return [r.choice([-1.0, 1.0], size=s) * r.uniform(0.2, 1.5, size=s) for s in shapes]
    return [r.normal(size=s) for s in shapes]


# (id, function of plain or traced arrays, argument shapes, input kind); the table's keys list
# the numpy names each row exercises (test_every_table_entry_is_exercised checks the union)
CASES = [
    # reductions: axis defaults, negative and tuple axes, keepdims, 1-D
    ("sum", lambda a: np.sum(a), [(3, 4)]),
    ("sum", lambda a: np.sum(a, axis=0), [(3, 4)]),
    ("sum", lambda a: np.sum(a, axis=-1, keepdims=True), [(2, 3, 4)]),
    ("sum", lambda a: np.sum(a, (0, 2)), [(2, 3, 4)]),
    ("sum", lambda a: np.sum(a), [(5,)]),
    ("sum", lambda a: a.sum(1, keepdims=True), [(3, 4)]),
    ("mean", lambda a: np.mean(a), [(3, 4)]),
    ("mean", lambda a: np.mean(a, axis=1), [(3, 4)]),
    ("mean", lambda a: np.mean(a, axis=(0, 1), keepdims=True), [(2, 3, 4)]),
    ("mean", lambda a: a.mean(axis=0), [(4,)]),
    ("max", lambda a: np.max(a), [(3, 4)]),
    ("max", lambda a: np.max(a, axis=0), [(3, 4)]),
    ("max", lambda a: np.max(a, axis=-1, keepdims=True), [(2, 3, 4)]),
    ("max", lambda a: a.max(axis=(0, 2)), [(2, 3, 4)]),
    ("amax", lambda a: np.amax(a, 1), [(3, 4)]),
    ("amax", lambda a: np.amax(a), [(5,)]),
    ("min", lambda a: np.min(a, axis=1), [(3, 4)]),
    ("min", lambda a: a.min(), [(3, 4)]),
    ("amin", lambda a: np.amin(a, axis=0, keepdims=True), [(3, 4)]),
    # shapes
    ("transpose", lambda a: np.transpose(a), [(2, 3, 4)]),
    ("transpose", lambda a: np.transpose(a, (1, 0, 2)), [(2, 3, 4)]),
    ("transpose", lambda a: a.T, [(2, 3, 4)]),                 # numpy: all axes reversed
    ("transpose", lambda a: a.T, [(3, 4)]),
    ("transpose", lambda a: a.transpose(2, 0, 1), [(2, 3, 4)]),
    ("transpose", lambda a: a.transpose((1, 0)), [(3, 4)]),
    ("swapaxes", lambda a: np.swapaxes(a, 0, 2), [(2, 3, 4)]),
    ("swapaxes", lambda a: a.swapaxes(-1, -2), [(2, 3, 4)]),
    ("swapaxes", lambda a: a.mT, [(2, 3, 4)]),
    ("moveaxis", lambda a: np.moveaxis(a, 0, -1), [(2, 3, 4)]),
    ("moveaxis", lambda a: np.moveaxis(a, (0, 1), (2, 0)), [(2, 3, 4)]),
    ("reshape", lambda a: np.reshape(a, (3, -1)), [(2, 3, 2)]),
    ("reshape", lambda a: np.reshape(a, 12), [(3, 4)]),
    ("reshape", lambda a: a.reshape(2, 6), [(3, 4)]),
    ("reshape", lambda a: a.reshape((4, 3)), [(3, 4)]),
    ("reshape", lambda a: a.reshape([2, 2, 3]), [(3, 4)]),
    ("ravel", lambda a: np.ravel(a), [(3, 4)]),
    ("ravel", lambda a: a.ravel(), [(2, 3, 2)]),
    ("ravel", lambda a: a.flatten(), [(3, 4)]),
    # np.dot in every case numpy defines
    ("dot", lambda a, b: np.dot(a, b), [(), (3, 4)]),            # a scalar factor
    ("dot", lambda a, b: np.dot(a, b), [(3, 4), ()]),
    ("dot", lambda a, b: np.dot(a, b), [(4,), (4,)]),            # inner product
    ("dot", lambda a, b: np.dot(a, b), [(3, 4), (4,)]),          # matrix . vector
    ("dot", lambda a, b: np.dot(a, b), [(4,), (4, 2)]),          # vector . matrix
    ("dot", lambda a, b: np.dot(a, b), [(3, 4), (4, 2)]),        # matrix product (issue 8: was W, not W.T)
    ("dot", lambda a, b: np.dot(a, b), [(2, 3, 4), (4,)]),       # N-D . 1-D: over the last axes
    ("dot", lambda a, b: np.dot(a, b), [(2, 3, 4), (4, 2)]),     # N-D . 2-D
    ("dot", lambda a, b: np.dot(a, b), [(3,), (2, 3, 4)]),       # 1-D . N-D
    ("dot", lambda a, b: np.dot(a, b), [(2, 3), (4, 3, 2)]),     # 2-D . 3-D: (2, 4, 2)
    ("dot", lambda a, b: np.dot(a, b), [(2, 1, 3), (2, 4, 3, 2)]),  # 3-D . 4-D: (2, 1, 2, 4, 2)
    ("dot", lambda a, b: a.dot(b), [(3, 4), (4, 2)]),
    ("matmul", lambda a, b: np.matmul(a, b), [(3, 4), (4, 2)]),
    ("matmul", lambda a, b: np.matmul(a, b), [(2, 3, 4), (4, 2)]),
    ("matmul", lambda a, b: np.matmul(a, b), [(4,), (4,)]),
    ("matmul", lambda a, b: a @ b, [(2, 3, 4), (2, 4, 2)]),
    ("vecdot", lambda a, b: np.vecdot(a, b), [(3, 4), (4,)]),
    # elementwise ufuncs from the registry and the adapted ones
    ("add", lambda a, b: np.add(a, b), [(3, 4), (4,)]),
    ("subtract", lambda a, b: np.subtract(a, b), [(3, 1), (4,)]),
    ("multiply", lambda a, b: np.multiply(a, b), [(3, 4), (3, 4)]),
    ("divide", lambda a, b: np.divide(a, b), [(3, 4), (4,)], "pos"),
    ("divide", lambda a, b: np.true_divide(a, b), [(3, 4), (3, 4)], "pos"),
    ("negative", lambda a: np.negative(a), [(3, 4)]),
    ("positive", lambda a: np.positive(a) * 2.0, [(3, 4)]),
    ("square", lambda a: np.square(a), [(3, 4)]),
    ("power", lambda a: np.power(a, 3), [(3, 4)]),
    ("power", lambda a: np.power(a, 2), [(3, 4)]),
    ("power", lambda a: np.power(a, 0.5), [(3, 4)], "pos"),
    ("power", lambda a: a ** -1.5, [(3, 4)], "pos"),
    ("exp", lambda a: np.exp(a), [(3, 4)]),
    ("log", lambda a: np.log(a), [(3, 4)], "pos"),
    ("tanh", lambda a: np.tanh(a), [(3, 4)]),
    ("sqrt", lambda a: np.sqrt(a), [(3, 4)], "pos"),
    # piecewise
    ("maximum", lambda a, b: np.maximum(a, b), [(3, 4), (4,)]),
    ("maximum", lambda a: np.maximum(a, 0.0), [(3, 4)], "away"),
    ("minimum", lambda a, b: np.minimum(a, b), [(3, 4), (3, 1)]),
    ("fmax", lambda a, b: np.fmax(a, b), [(3, 4), (3, 4)]),
    ("fmin", lambda a, b: np.fmin(a, b), [(3, 4), (3, 4)]),
    ("absolute", lambda a: np.abs(a), [(3, 4)], "away"),
    ("absolute", lambda a: abs(a) + np.absolute(a), [(3, 4)], "away"),
    ("fabs", lambda a: np.fabs(a), [(3, 4)], "away"),
    ("clip", lambda a: np.clip(a, -0.5, 0.5), [(3, 4)]),
    ("clip", lambda a: np.clip(a, None, 0.3), [(3, 4)]),
    ("clip", lambda a: np.clip(a, min=-0.2), [(3, 4)]),
    ("clip", lambda a: a.clip(-0.5, 0.5), [(3, 4)]),
    ("clip", lambda a, b: np.clip(a, b, 1.0), [(3, 4), (4,)]),  # a traced bound: maximum, then minimum
    ("where", lambda a, b: np.where(a > 0, a, b), [(3, 4), (3, 4)], "away"),
    ("where", lambda a: np.where(a < 0.5, a, 0.0), [(3, 4)], "away"),
    ("where", lambda a, b: np.where(a > b, a, 2.0 * b), [(3, 4), (4,)], "away"),
    # comparisons: boolean constants of the trace, promoted to the float dtype where used
    ("greater", lambda a: a * (a > 0.5), [(3, 4)], "away"),
    ("greater", lambda a: (a > 0.5) * a, [(3, 4)], "away"),
    ("greater", lambda a: a * np.greater(a, 0.1), [(3, 4)], "away"),
    ("less", lambda a, b: a * (a < b), [(3, 4), (4,)], "away"),
    ("less", lambda a: np.where(np.less(a, 0.0), -a, a), [(3, 4)], "away"),
    ("greater_equal", lambda a: a * (a >= 0.3), [(3, 4)], "away"),
    ("less_equal", lambda a: a * np.less_equal(a, 0.3), [(3, 4)], "away"),
    ("equal", lambda a: a * (a.max(axis=1, keepdims=True) == a), [(3, 4)], "away"),
    ("not_equal", lambda a: a * (a != a.max()), [(3, 4)], "away"),
    ("less", lambda a, b: np.where(~(a > 0) & (b > 0) | (a > 1.0), a, b), [(3, 4), (3, 4)], "away"),
    ("less", lambda a: a * (a > 0).astype(np.float64) + a * np.logical_not(a > 0), [(3, 4)], "away"),
    ("shape", lambda a: np.reshape(a, (np.shape(a)[0], np.size(a) // np.shape(a)[0] // np.ndim(a), -1)),
     [(2, 3, 4)]),
    # linear algebra and einsum (jacobians/ops/linalg.py, contractions.py) under numpy's names
    ("einsum", lambda a, b: np.einsum("ij,jk->ik", a, b), [(2, 3), (3, 4)]),
    ("einsum", lambda a: np.einsum("...ii->...i", a), [(2, 3, 3)]),
    ("einsum", lambda a, b: np.einsum("bqd,bkd", a, b), [(2, 3, 4), (2, 5, 4)]),
    ("trace", lambda a: np.trace(a), [(3, 3)]),
    ("trace", lambda a: np.trace(a, axis1=1, axis2=2), [(2, 3, 3)]),
    ("diagonal", lambda a: np.diagonal(a), [(3, 4)]),
    ("diagonal", lambda a: np.diagonal(a, offset=1, axis1=1, axis2=2), [(2, 3, 3)]),
    ("kron", lambda a, b: np.kron(a, b), [(2, 2), (3, 2)]),
    ("linalg.inv", lambda a: np.linalg.inv(a + 3 * np.eye(3)), [(3, 3)]),
    ("linalg.det", lambda a: np.linalg.det(a + 3 * np.eye(3)), [(2, 3, 3)]),
    ("linalg.solve", lambda a, b: np.linalg.solve(a + 3 * np.eye(3), b), [(3, 3), (3,)]),
    ("linalg.norm", lambda a: np.linalg.norm(a), [(3, 4)]),
    ("linalg.norm", lambda a: np.linalg.norm(a, axis=-1), [(3, 4)]),
    ("linalg.norm", lambda a: np.linalg.norm(a, ord=1, axis=0), [(3, 4)]),
    # the elementwise rows' numpy ufuncs (jacobians/ops/elementwise.py): inputs inside each domain
    *[(n, (lambda u: lambda a: u(0.5 * np.tanh(a)))(getattr(np, n)), [(3, 4)])
      for n in ("arcsin", "arccos", "arctanh", "tan")],
    *[(n, (lambda u: lambda a: u(a))(getattr(np, n)), [(3, 4)])
      for n in ("arctan", "arcsinh", "sin", "cos", "sinh", "cosh", "exp2", "expm1", "sign")],
    *[(n, (lambda u: lambda a: u(a))(getattr(np, n)), [(3, 4)], "pos") for n in ("log10", "log1p", "log2", "cbrt",
                                                                                   "reciprocal")],
    ("arccosh", lambda a: np.arccosh(1.5 + a), [(3, 4)], "pos"),
    *[(n, (lambda u: lambda a, b: u(a, b))(getattr(np, n)), [(3, 4), (4,)], "away")
      for n in ("arctan2", "hypot", "logaddexp")],
    ("ndim", lambda a: a * np.ndim(a), [(3,)]),
    ("size", lambda a: a * np.size(a, 0), [(3,)]),
    # indexing and shape functions (jacobians/ops/indexing.py): index maps, contracted by gathers and scatters
    ("getitem", lambda a: np.tanh(a)[1], [(3, 4)]),
    ("getitem", lambda a: a[:, 1:3] * a[:, -2:], [(3, 4)]),
    ("getitem", lambda a: a[..., ::2], [(2, 3, 5)]),
    ("getitem", lambda a: a[:, None] * a[None, :], [(3, 2)]),
    ("getitem", lambda a: a[-1, -2], [(3, 4)]),
    ("getitem", lambda a: np.tanh(a)[np.array([[0, 2], [2, 1]])], [(3, 4)]),          # E[ids]: rows repeated
    ("getitem", lambda a: a[:, np.array([3, 0, 3])], [(3, 4)]),
    ("getitem", lambda a: a[np.arange(12).reshape(3, 4) % 3 == 1], [(3, 4)]),           # a constant mask
    ("getitem", lambda a: a[a > 0.3], [(3, 4)], "away"),                                # a comparison as the mask
    ("getitem", lambda a: np.stack(list(a)) * 2.0, [(3, 4)]),                           # iteration: the rows
    ("take", lambda a: np.take(a, np.array([2, 0, 2]), axis=1), [(3, 4)]),
    ("take", lambda a: np.take(a, np.array([[5, 0], [11, 5]])), [(3, 4)]),
    ("concatenate", lambda a, b: np.concatenate([np.tanh(a), b], axis=1), [(3, 2), (3, 4)]),
    ("concatenate", lambda a, b: np.concatenate((a, b)), [(2, 4), (3, 4)]),
    ("concatenate", lambda a, b: np.concatenate([a, b], axis=None), [(2, 2), (3,)]),
    ("concatenate", lambda a: np.concatenate([a, np.ones((3, 1))], axis=-1), [(3, 4)]),
    ("stack", lambda a, b: np.stack([a, b]), [(3, 4), (3, 4)]),
    ("stack", lambda a, b: np.stack([a, np.tanh(b)], axis=-1), [(3, 4), (3, 4)]),
    ("split", lambda a: np.split(a, 2, axis=1)[0] * np.tanh(np.split(a, 2, axis=1)[1]), [(3, 4)]),   # a GLU
    ("split", lambda a: np.split(a, [1, 3])[2] + np.split(a, [1, 3])[0], [(4, 2)]),
    ("pad", lambda a: np.pad(a, 1), [(2, 3)]),
    ("pad", lambda a: np.pad(a, ((0, 0), (2, 1)), constant_values=0.5), [(2, 3)]),
    ("flip", lambda a: np.flip(a) * a, [(3, 4)]),
    ("flip", lambda a: np.flip(a, axis=1), [(3, 4)]),
    ("roll", lambda a: np.roll(a, 1, axis=1) * a, [(3, 4)]),
    ("roll", lambda a: np.roll(a, -5), [(3, 4)]),
    ("tile", lambda a: np.tile(a, (2, 1, 2)), [(3, 2)]),
    ("repeat", lambda a: np.repeat(a, 2, axis=0), [(3, 2)]),
    ("repeat", lambda a: np.repeat(a, [1, 0, 2]), [(3,)]),
    ("broadcast_to", lambda a: np.broadcast_to(a, (2, 3, 4)) * np.arange(4.0), [(3, 1)]),
    ("expand_dims", lambda a: np.expand_dims(a, (0, 2)), [(3, 4)]),
    ("squeeze", lambda a: np.squeeze(a), [(3, 1, 4)]),
    ("squeeze", lambda a: np.squeeze(a, axis=1), [(3, 1, 1)]),
    ("swapaxes", lambda a: np.swapaxes(a, 0, -1), [(2, 3, 4)]),
    ("moveaxis", lambda a: np.moveaxis(a, 0, -1), [(2, 3, 4)]),
]
ALIASES = {"shape": "np.shape", "ndim": "np.ndim", "size": "np.size"}


@pytest.mark.parametrize("case", [pytest.param(c, id=f"{c[0]}-{k}") for k, c in enumerate(CASES)])
def test_numpy_meaning(case):
    name, f, shapes, *kind = case
    assert_numpy_meaning(f, data(f"{name}{shapes}", *shapes, kind=kind[0] if kind else "normal"))


def test_every_table_entry_is_exercised():
    exercised = {"np." + c[0] for c in CASES}
    missing = set(numpy_table()) - exercised
    assert not missing, f"numpy names mapped but not tested here: {sorted(missing)}"


# ---------------------------------------------------------------- the registry's numpy names, over the op table

def _registry_cases():
    for spec in SPECS:
        op = OPS[spec.op]
        if not op.numpy or any(a is None or isinstance(a, str) or a.kind in ("labels", "mask") for a in spec.args) or spec.params:
            continue
        for path in op.numpy:
            func = np
            for part in path.split("."):
                func = getattr(func, part, None)
            if func is not None:
                yield pytest.param(spec, path, func, id=f"np.{path}-{spec.id}")


@pytest.mark.parametrize("spec, path, func", list(_registry_cases()))
def test_registry_numpy_names_on_the_op_table(spec, path, func):
    args = make_args(spec)
    params = ", ".join(f"a{k}" for k in range(len(args)))
    f = eval(f"lambda {params}: func({params})", {"func": func})
    assert_numpy_meaning(f, args)


def test_the_table_names_ops_and_adapters():
    table = numpy_table()
    assert table["np.tanh"] == "op tanh" and table["np.dot"].startswith("op multiply")
    assert table["np.linalg.norm"] == "op norm"   # numpy.linalg.norm's meaning: Frobenius by default
    for name, op in OPS.items():
        for path in op.numpy:
            assert table.get(f"np.{path}") == f"op {name}" or getattr(np, path, None) is None or \
                any(v == f"op {name}" for v in table.values())


# ---------------------------------------------------------------- refused, with a message naming numpy's function

x34 = data("refused", (3, 4))[0]


@pytest.mark.parametrize("f, message", [
    (lambda a: np.linalg.cond(a), r"np\.linalg\.cond is not a toolkit op"),
    (lambda a: np.cumsum(a), r"np\.cumsum is not a toolkit op"),
    (lambda a: np.sin(a) if "sin" not in OPS else np.cumprod(a), r"np\.(sin|cumprod) is not a toolkit op"),
    (lambda a: np.add.reduce(a), r"np\.add\.reduce is not supported on traced values \(use np\.sum"),
    (lambda a: np.multiply.outer(a, a), r"np\.multiply\.outer is not supported"),
    (lambda a: np.add.accumulate(a), r"np\.add\.accumulate is not supported"),
    (lambda a: np.add.at(a, [0], 1.0), r"np\.add\.at is not supported"),
    (lambda a: np.exp(a, out=np.empty((3, 4))), r"np\.exp: out=an array \(3, 4\) is not supported"),
    (lambda a: np.add(a, 1.0, where=a.shape[0] > 0 and np.ones((3, 4), bool)), r"np\.add: where=.* not supported"),
    (lambda a: np.multiply(a, 2.0, dtype=np.float32), r"np\.multiply: dtype=.* not supported"),
    (lambda a: np.add(a, 1.0, casting="unsafe"), r"np\.add: casting='unsafe' is not supported"),
    (lambda a: np.sum(a, dtype=np.float32), r"np\.sum: dtype=.* not supported on traced values"),
    (lambda a: np.sum(a, out=np.empty(())), r"np\.sum: out=an array \(\) is not supported"),
    (lambda a: np.sum(a, where=np.ones((3, 4), bool)), r"np\.sum: where=an array \(3, 4\)"),
    (lambda a: np.sum(a, initial=1.0), r"np\.sum: initial=1\.0 is not supported"),
    (lambda a: np.mean(a, dtype=np.float64), r"np\.mean: dtype=.* not supported"),
    (lambda a: np.max(a, initial=0.0), r"np\.max: initial=0\.0 is not supported"),
    (lambda a: np.amin(a, where=np.ones((3, 4), bool), initial=5.0), r"np\.amin: .* not supported"),
    (lambda a: a.sum(dtype=np.float32), r"np\.sum: dtype="),
    (lambda a: np.reshape(a, (4, 3), order="F"), r"np\.reshape: order='F' is not supported"),
    (lambda a: np.ravel(a, order="F"), r"np\.ravel: order='F'"),
    (lambda a: np.dot(a, a.T, out=np.empty((3, 3))), r"np\.dot: out=an array \(3, 3\)"),
    (lambda a: np.power(a, a), r"constant scalar exponent"),
    (lambda a: 2.0 ** a, r"constant scalar exponent"),
    (lambda a: a ** np.ones(4), r"constant scalar exponent"),
    (lambda a: np.where(a), r"np\.where\(condition\) with one argument"),
    (lambda a: a.astype(np.int64), r"astype\(int64\): a traced value keeps its dtype float64"),
    (lambda a: a.astype(np.float32), r"astype\(float32\)"),
])
def test_refused_with_the_numpy_name(f, message):
    with pytest.raises(TypeError, match=message):
        jac.jacobian(f, wrt="a")(x34)


def test_astype_to_its_own_dtype_is_the_value():
    assert_numpy_meaning(lambda a: a.astype(np.float64) * 2.0, [x34])


# ---------------------------------------------------------------- comparisons and masks

def test_comparisons_give_traced_bools_that_refuse_python_branches():
    g = Graph()
    x = Traced(g, g.add(Node("x", value=np.array([0.1, 0.7, -0.2]))))
    m = x > 0.5
    assert isinstance(m, TracedBool) and m.dtype == np.bool_
    np.testing.assert_array_equal(np.asarray(m), [False, True, False])
    for combined in (~m, m & (x < 1.0), m | (x < 0), m ^ (x < 0), m == (x > 0.5), m != (x > 0)):
        assert isinstance(combined, TracedBool)
    np.testing.assert_array_equal((~m).value, [True, False, True])
    np.testing.assert_array_equal((m | (x < 0)).value, [False, True, True])
    for branch in (lambda: bool(m), lambda: 1 if m else 0, lambda: m and x, lambda: not m,
                   lambda: bool(m.any()), lambda: bool(np.all(m)), lambda: bool((x > 0)[0] if False else m.all())):
        with pytest.raises(TypeError, match=r"Python branch .* comparison of traced values \(.*x \(3,\) > 0\.5"):
            branch()
    assert (m.sum(), np.sum(m)) == (1, 1)           # numbers computed from a mask are plain constants
    assert np.asarray(m * 2.0).dtype == np.float64


def test_a_mask_is_promoted_to_the_float32_dtype():
    x = np.array([0.1, 0.7, -0.2], dtype=np.float32)
    J = jac.jacobian(lambda x: x * (x > 0.5), wrt="x")(x)
    assert J.dtype == np.float32
    np.testing.assert_array_equal(J, np.diag([0.0, 1.0, 0.0]).astype(np.float32))


def test_the_function_sees_fresh_masks_on_every_call():
    jf = jac.jacobian(lambda x: x * (x > 0.5), wrt="x")
    np.testing.assert_array_equal(jf(np.array([0.1, 0.9])), np.diag([0.0, 1.0]))
    np.testing.assert_array_equal(jf(np.array([0.9, 0.1])), np.diag([1.0, 0.0]))


def test_the_issue_cases():
    """Issue 8 item 2: np.dot(x, W) is x @ W (not W as the last-axis inner product gave)."""
    r = np.random.default_rng(8)
    x, W = r.normal(size=(3, 4)), r.normal(size=(4, 2))
    J = jac.jacobian(lambda x, W: np.dot(x, W), wrt="x", batched="x")(x, W)
    np.testing.assert_allclose(J, np.broadcast_to(W.T, (3, 2, 4)))
    # np.linalg.norm is numpy's: Frobenius by default, not a per-row norm
    G = jac.jacobian(lambda X: np.linalg.norm(X), wrt="X")(x)
    np.testing.assert_allclose(G, x / np.sqrt((x * x).sum()), rtol=1e-13)


# ---------------------------------------------------------------- errors with the trace's context

def test_a_signature_mistake_names_the_op_the_node_and_the_line():
    def net(x, W):
        h = np.tanh(x)
        return fn.linear(h)                                   # W forgotten
    with pytest.raises(TypeError) as info:
        jac.jacobian(net, wrt="x")(x34, np.ones((2, 4)))
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("linear: missing a required argument: 'W'; signature is linear(x, W, b=None)")
    assert "at linear_0 = linear(x = tanh_0 (3, 4))" in msg
    assert re.search(r"called from net\(\) at test_numpy_meanings\.py:\d+", msg)
    ctx = info.value.trace_context
    assert (ctx.op, ctx.node, ctx.shapes, ctx.traced) == ("linear", "linear_0", {"x": (3, 4)}, {"x"})
    assert ctx.function == "net" and ctx.line == "return fn.linear(h)                                   # W forgotten"
    assert ctx.before == ("tanh_0 (3, 4)",)
    assert ctx.message.startswith("linear: missing a required argument")


@pytest.mark.parametrize("f, exc, node, start", [
    (lambda a: np.tanh(a) @ np.ones((2, 4)), ValueError, "matmul_0", "matmul: contracted sizes differ"),
    (lambda a: a + np.ones(5), ValueError, "add_0", "add: shapes do not broadcast"),
    (lambda a: np.log(a - 10.0), ValueError, "log_0", "log: argument x must be positive"),
    (lambda a: np.sum(np.exp(a), axis=3), ValueError, "sum_0", "sum: axis 3 is out of range"),
    (lambda a: fn.sum(a, axis=a), TypeError, None, "sum: argument axis must be a constant"),
    (lambda a: fn.linear(a, np.ones((2, 4)), np.ones(2), np.ones(2)), TypeError, "linear_0", "linear: too many"),
])
def test_op_errors_keep_their_type_and_gain_the_context(f, exc, node, start):
    with pytest.raises(exc) as info:
        jac.jacobian(f, wrt="a")(x34)
    assert type(info.value) is exc and str(info.value).startswith(start)
    if node is not None:
        assert info.value.trace_context.node == node
        assert f"(at {node} = " in str(info.value) and "test_numpy_meanings.py:" in str(info.value)


def test_a_plain_call_is_plain_numpy():
    """fn.<op> on arrays (no traced value) returns numpy's value and raises without a trace context."""
    np.testing.assert_array_equal(fn.maximum(np.array([1.0, -1.0]), 0.0), [1.0, 0.0])
    with pytest.raises(ValueError) as info:
        fn.add(np.ones(3), np.ones(4))
    assert not hasattr(info.value, "trace_context")
