"""Linear algebra with numpy's names and meaning: values against numpy, Jacobians against closed forms
and central differences, batched like numpy.linalg, and clear errors instead of NaN."""

from __future__ import annotations

import numpy as np
import pytest

import jacobians as jac
from jacobians.testing import check_jacobian, numerical_jacobian

ops = jac.ops
r = np.random.default_rng(11)


def spd(*shape):
    m = r.normal(size=shape)
    return m @ np.swapaxes(m, -1, -2) + shape[-1] * np.eye(shape[-1])


# ---------------------------------------------------------------- values are numpy's

VALUES = [
    ("inv", np.linalg.inv, [(3, 3)], {}), ("inv", np.linalg.inv, [(2, 4, 4)], {}),
    ("det", np.linalg.det, [(3, 3)], {}), ("det", np.linalg.det, [(2, 2, 3, 3)], {}),
    ("slogdet", lambda a: np.linalg.slogdet(a).logabsdet, [(2, 3, 3)], {}),
    ("solve", np.linalg.solve, [(3, 3), (3,)], {}), ("solve", np.linalg.solve, [(2, 3, 3), (3,)], {}),
    ("solve", np.linalg.solve, [(2, 3, 3), (2, 3, 4)], {}), ("solve", np.linalg.solve, [(1, 3, 3), (2, 3, 1)], {}),
    ("trace", np.trace, [(3, 4)], {"offset": 1}), ("trace", np.trace, [(2, 3, 4)], {"axis1": 1, "axis2": 2}),
    ("trace", np.trace, [(2, 3, 4)], {"offset": -1, "axis1": -1, "axis2": 0}),
    ("diagonal", np.diagonal, [(3, 4)], {"offset": -1}), ("diagonal", np.diagonal, [(2, 3, 4)], {"axis1": 2, "axis2": 1}),
    ("kron", np.kron, [(2, 3), (3, 2)], {}), ("kron", np.kron, [(2, 1, 3), (2, 2)], {}), ("kron", np.kron, [(), (3,)], {}),
    ("outer", np.outer, [(3,), (4,)], {}), ("outer", np.linalg.outer, [(2,), (5,)], {}),
    ("norm", np.linalg.norm, [(2, 3, 4)], {}),
    *[("norm", np.linalg.norm, [(3, 4)], {"axis": ax, "ord": o, "keepdims": k})
      for ax in (0, -1) for o in (None, 1, 2, 3, 0.5, -1, np.inf, -np.inf) for k in (False, True)],
    *[("norm", np.linalg.norm, [(2, 3, 4)], {"axis": ax, "ord": o, "keepdims": k})
      for ax in ((1, 2), (2, 0)) for o in (None, "fro", "nuc", 1, -1, 2, -2, np.inf, -np.inf) for k in (False, True)],
    ("norm", np.linalg.norm, [(4,)], {"ord": 1}), ("norm", np.linalg.norm, [(3, 4)], {"ord": "nuc"}),
]


@pytest.mark.parametrize("name, ref, shapes, kw", VALUES, ids=[f"{v[0]}{v[2]}{v[3]}" for v in VALUES])
def test_values_are_numpys(name, ref, shapes, kw):
    args = [r.normal(size=s) for s in shapes]
    value, _ = getattr(ops, name)(*args, batch=False, **kw)
    expected = ref(*args, **kw)
    assert value.shape == np.shape(expected)
    np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-13)
    check_jacobian(name, *args, batch=False, **kw)


# ---------------------------------------------------------------- closed forms

def test_inv_and_det_closed_forms():
    A = r.normal(size=(2, 3, 3))
    Y, (dY,) = ops.inv(A)
    assert dY.shape == (2, 3, 3, 3, 3)                                  # per-sample
    np.testing.assert_allclose(dY, -np.einsum("bik,blj->bijkl", Y, Y), rtol=1e-12)
    d, (dd,) = ops.det(A)
    np.testing.assert_allclose(dd, d[:, None, None] * np.swapaxes(Y, -1, -2), rtol=1e-10)
    _, (dl,) = ops.slogdet(A)
    np.testing.assert_allclose(dl, np.swapaxes(Y, -1, -2), rtol=1e-12)


def test_det_of_a_singular_matrix_has_the_cofactor_jacobian():
    A = np.array([[1.0, 2.0], [2.0, 4.0]])                            # rank 1: det 0, adj finite
    d, (dd,) = ops.det(A, batch=False)
    assert d == 0.0
    np.testing.assert_allclose(dd, [[4.0, -2.0], [-2.0, 1.0]], atol=1e-14)   # cofactors
    check_jacobian("det", A, batch=False)
    Z = np.zeros((3, 3))
    _, (dZ,) = ops.det(Z, batch=False)                                 # rank 0: every cofactor is 0
    np.testing.assert_array_equal(dZ, np.zeros((3, 3)))


def test_solve_both_arguments_by_implicit_differentiation():
    A, b = r.normal(size=(2, 3, 3)), r.normal(size=(2, 3, 4))
    x, (dA, db) = ops.solve(A, b)
    Ai = np.linalg.inv(A)
    np.testing.assert_allclose(dA, -np.einsum("bip,bqk->bikpq", Ai, x), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db, np.einsum("bim,kl->bikml", Ai, np.eye(4)), rtol=1e-10, atol=1e-12)
    # numpy 2's rule: a 1-D b is one vector for every matrix of the stack
    x, (_, db) = ops.solve(A, b[0, :, 0])
    assert x.shape == (2, 3) and db.shape == (2, 3, 3)
    with pytest.raises(ValueError, match=r"^solve: argument b must be \(3,\) or \(\.\.\., 3, k\)"):
        ops.solve(A, r.normal(size=(2, 3)))                           # numpy 2 reads (2, 3) as a (M, K) matrix


def test_cholesky_against_central_differences_of_the_symmetrized_input():
    A = spd(2, 3, 3)
    L, (dL,) = ops.cholesky(A)
    np.testing.assert_allclose(L, np.linalg.cholesky(A), rtol=1e-12)
    sym = lambda a: np.linalg.cholesky((a + np.swapaxes(a, -1, -2)) / 2)
    for b in range(2):
        np.testing.assert_allclose(dL[b], numerical_jacobian(sym, A[b]), rtol=1e-6, atol=1e-9)
    # along a symmetric direction the Jacobian is the derivative of numpy's cholesky itself
    E = r.normal(size=(3, 3))
    E = E + E.T
    h = 1e-6
    fd = (np.linalg.cholesky(A[0] + h * E) - np.linalg.cholesky(A[0] - h * E)) / (2 * h)
    np.testing.assert_allclose(np.tensordot(dL[0], E, axes=2), fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dL[0], np.swapaxes(dL[0], -1, -2), atol=1e-14)   # split evenly over a[i,j], a[j,i]
    U, (dU,) = ops.cholesky(A, upper=True)
    np.testing.assert_allclose(U, np.linalg.cholesky(A, upper=True), rtol=1e-12)
    np.testing.assert_allclose(dU, np.swapaxes(dL, 1, 2), rtol=1e-12)


def test_kron_is_per_sample_where_the_other_factor_has_size_one():
    x, v = r.normal(size=(4, 3)), r.normal(size=2)
    y, (dx, dv) = ops.kron(x, v)
    assert y.shape == (4, 6) and dx.shape == (4, 6, 3) and dv.shape == (4, 6, 2)
    np.testing.assert_allclose(dx, np.broadcast_to(np.kron(np.eye(3), v[:, None]), (4, 6, 3)), rtol=1e-14)


# ---------------------------------------------------------------- norm

def test_norm_means_numpys():
    x = r.normal(size=(3, 4))
    n, (dn,) = ops.norm(x)
    assert n.shape == () and dn.shape == (3, 4)                      # Frobenius of everything
    np.testing.assert_allclose(dn, x / np.linalg.norm(x), rtol=1e-14)
    n, (dn,) = ops.norm(x, axis=-1)                                    # the per-row norm
    np.testing.assert_allclose(dn, x / np.linalg.norm(x, axis=-1, keepdims=True), rtol=1e-14)


@pytest.mark.parametrize("ord", [None, 2, 1, 3, np.inf])
def test_norm_neither_underflows_nor_overflows(ord):
    x = np.array([[1e-200, -2e-200, 2e-200], [3e200, 4e200, -1e200]])
    n, (dn,) = ops.norm(x, ord=ord, axis=-1)
    unit = np.array([[1.0, -2.0, 2.0], [3.0, 4.0, -1.0]])
    ref_n = np.linalg.norm(unit, ord=ord, axis=-1)
    np.testing.assert_allclose(n, ref_n * [1e-200, 1e200], rtol=1e-14)
    _, (du,) = ops.norm(unit, ord=ord, axis=-1)
    np.testing.assert_allclose(dn, du, rtol=1e-13)                   # the gradient is scale-free
    assert np.isfinite(dn).all()


def test_norm_errors():
    with pytest.raises(ValueError, match=r"^norm: the Jacobian is undefined where the norm is 0"):
        ops.norm(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"^norm: ord=0 is not a differentiable vector norm"):
        ops.norm(np.ones(3), ord=0)
    with pytest.raises(ValueError, match=r"^norm: ord=3 is not a matrix norm"):
        ops.norm(np.ones((2, 2)), ord=3)
    with pytest.raises(ValueError, match=r"^norm: ord='fro' is not a differentiable vector norm"):
        ops.norm(np.ones(3), ord="fro")
    with pytest.raises(ValueError, match=r"^norm: ord=1 needs axis= for x of 3 dimensions"):
        ops.norm(np.ones((2, 2, 2)), ord=1)
    with pytest.raises(ValueError, match=r"^norm: axis must be an int or a 2-tuple"):
        ops.norm(np.ones((2, 2, 2)), axis=(0, 1, 2))
    with pytest.raises(ValueError, match=r"^norm: the Jacobian of the 0.5-norm is undefined where an entry"):
        ops.norm(np.array([1.0, 0.0]), ord=0.5)


# ---------------------------------------------------------------- singular and non-SPD inputs

@pytest.mark.parametrize("call, message", [
    (lambda: ops.inv(np.ones((2, 2)), batch=False), "inv: argument a is singular to working precision"),
    (lambda: ops.inv(np.stack([np.eye(2), np.ones((2, 2))])),
     "inv: argument a is singular to working precision at batch index (1,)"),
    (lambda: ops.inv(np.array([[1.0, 1.0], [1.0, 1.0 + 1e-17]]), batch=False), "inv: argument a is singular"),
    (lambda: ops.solve(np.ones((2, 2)), np.ones(2)), "solve: argument a is singular to working precision"),
    (lambda: ops.slogdet(np.ones((2, 2)), batch=False), "slogdet: argument a is singular (det = 0"),
    (lambda: ops.slogdet(np.array([[1.0, 1.0], [1.0, 1.0 + 1e-15]]), batch=False),
     "slogdet: argument a is singular to working precision"),
    (lambda: ops.cholesky(-np.eye(2), batch=False), "cholesky: argument a is not positive definite"),
    (lambda: ops.inv(np.ones((2, 3)), batch=False), "inv: argument a must be a stack of square matrices"),
    (lambda: ops.det(np.ones(3), batch=False), "det: argument a must be a stack of square matrices"),
    (lambda: ops.inv(np.eye(2)), "inv: argument a needs a leading batch axis with batch=True"),
    (lambda: ops.trace(np.ones((2, 2)), axis1=1, axis2=-1), "trace: axis1 and axis2 must differ"),
    (lambda: ops.diagonal(np.ones(3)), "diagonal: argument a must have at least 2 dimensions"),
    (lambda: ops.outer(np.ones((2, 3)), np.ones((3, 2))), "outer: leading (batch) axes do not broadcast"),
])
def test_bad_inputs_are_clear_errors_not_nan(call, message):
    with pytest.raises(ValueError) as e:
        call()
    assert str(e.value).startswith(message), str(e.value)


def test_trace_refuses_out_and_casts_dtype():
    with pytest.raises(TypeError, match=r"^trace: out= is not supported"):
        ops.trace(np.eye(2), out=np.empty(()))
    t, (dt,) = ops.trace(np.eye(2), dtype=np.float32, batch=False)
    assert t.dtype == dt.dtype == np.float32


@pytest.mark.parametrize("name, arg", [("inv", r.normal(size=(2, 3, 3))), ("det", r.normal(size=(2, 3, 3))),
                                       ("slogdet", r.normal(size=(2, 3, 3))), ("cholesky", spd(2, 3, 3))])
def test_float32(name, arg):
    v32, (j32,) = getattr(ops, name)(arg.astype(np.float32))
    v64, (j64,) = getattr(ops, name)(arg)
    assert v32.dtype == j32.dtype == np.float32
    np.testing.assert_allclose(j32, j64, rtol=1e-3, atol=1e-3)
