"""Yeh, "Gradient Notes": softmax cross entropy, products w.r.t. each factor, broadcast sum and product.

Yeh avoids the 3-D and 4-D Jacobians ("not well-defined" to multiply) and works
entry by entry.  The toolkit builds those tensors explicitly (``batch=False``,
shape ``output + input``); contracting the known upstream gradient with them
over all output axes gives each of his boxed results.

One slip of the notes: in section 4 (x is 1 x m, W is m x n) the sums
``z_l = sum_k x_k W_kl`` are written with k running to n; k indexes x, so it
runs to m.  ``test_section_4_*`` uses m != n, where only the sum over m fits.
"""

from __future__ import annotations

import numpy as np
import pytest

import jacobians as jac
from jacobians.testing import numerical_jacobian

from notes_helpers import rng

OPS = jac.ops


def pull_back(upstream: np.ndarray, J: np.ndarray) -> np.ndarray:
    """dA/d(input) from dA/d(output) (shaped like the output) and the explicit J (output + input)."""
    return np.tensordot(upstream, J, axes=upstream.ndim)


# ------------------------------------------------------------------ section 1: the Jacobian's layout


def test_section_1_entry_ij_is_d_f_i_by_d_x_j():
    r = rng(10)
    M = r.normal(size=(3, 5))
    x = r.normal(size=5)
    t, (dt_dx,) = OPS.tanh(x, batch=False)
    _, (_, df_dt) = OPS.matmul(M, t, batch=False)
    J = df_dt @ dt_dx                            # f(x) = M tanh(x): R^5 -> R^3
    assert J.shape == (3, 5)                     # m x n
    numeric = numerical_jacobian(lambda v: M @ np.tanh(v), x)
    np.testing.assert_allclose(J, numeric, rtol=1e-7, atol=1e-9)
    # a scalar-valued f gives a 1 x n gradient: here one row of the same map
    np.testing.assert_allclose(J[1], numerical_jacobian(lambda v: (M @ np.tanh(v))[1], x), rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------ section 2: softmax cross entropy


@pytest.mark.parametrize("k", [0, 2, 5])
def test_section_2_softmax_cross_entropy_equals_logsumexp_minus_true_logit_and_its_gradient(k):
    r = rng(20 + k)
    n = 6
    theta = r.normal(size=n)
    y = np.eye(n)[k]
    J, (dJ,) = OPS.softmax_cross_entropy(theta, np.array(k), batch=False)
    # J = log sum_c e^theta_c - theta_k, built from two toolkit ops whose Jacobians we subtract
    lse, (dlse,) = OPS.logsumexp(theta, batch=False)
    pick, (dpick, _) = OPS.dot(theta, y, batch=False)      # theta_k = <theta, y>, Jacobian y
    np.testing.assert_allclose(J, lse - pick, rtol=1e-12)
    np.testing.assert_allclose(dlse - dpick, dJ, rtol=1e-12, atol=1e-15)
    yhat = np.exp(theta) / np.exp(theta).sum()
    np.testing.assert_allclose(dJ, yhat - y, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dJ, numerical_jacobian(
        lambda v: np.log(np.exp(v).sum()) - v[k], theta), rtol=1e-6, atol=1e-9)


def test_section_2_row_vector_form_gives_the_same_gradient():
    # "row or column, the result is the same": a 1 x n row of logits, per sample
    r = rng(21)
    theta = r.normal(size=(1, 4))
    J_row, (d_row,) = OPS.softmax_cross_entropy(theta, np.array([3]))
    J_vec, (d_vec,) = OPS.softmax_cross_entropy(theta[0], np.array(3), batch=False)
    assert d_row.shape == (1, 4)
    np.testing.assert_allclose(d_row[0], d_vec, rtol=1e-14)
    np.testing.assert_allclose(J_row[0], J_vec, rtol=1e-14)


# ------------------------------------------------------------------ sections 3 and 4: vector products w.r.t. W


def test_section_3_z_equals_Wx_dJ_dW_is_r_transpose_x_transpose():
    r = rng(30)
    n, m = 4, 3
    W, x = r.normal(size=(n, m)), r.normal(size=m)
    rvec = r.normal(size=n)                                 # r = dJ/dz
    z, (dz_dW, _) = OPS.matmul(W, x, batch=False)
    assert dz_dW.shape == (n, n, m)                         # the 3-D Jacobian
    for i in range(n):
        for j in range(m):
            for k in range(n):                              # dz_k/dW_ij = 1[k = i] x_j
                assert dz_dW[k, i, j] == (x[j] if k == i else 0.0)
    dJ_dW = pull_back(rvec, dz_dW)
    np.testing.assert_allclose(dJ_dW, np.outer(rvec, x), rtol=1e-14)
    np.testing.assert_allclose(dJ_dW, numerical_jacobian(lambda V: rvec @ (V @ x), W), rtol=1e-7, atol=1e-9)


def test_section_4_z_equals_xW_for_row_vectors_dJ_dW_is_x_transpose_r():
    r = rng(40)
    m, n = 5, 3            # different sizes: z_l sums over the m entries of x (the notes write n)
    x, W = r.normal(size=(1, m)), r.normal(size=(m, n))
    rrow = r.normal(size=(1, n))
    z, (_, dz_dW) = OPS.matmul(x, W, batch=False)
    assert z.shape == (1, n) and dz_dW.shape == (1, n, m, n)
    for i in range(m):
        for j in range(n):
            for l in range(n):                              # dz_l/dW_ij = 1[j = l] x_i
                assert dz_dW[0, l, i, j] == (x[0, i] if j == l else 0.0)
    dJ_dW = pull_back(rrow, dz_dW)
    np.testing.assert_allclose(dJ_dW, x.T @ rrow, rtol=1e-14)
    np.testing.assert_allclose(dJ_dW, numerical_jacobian(lambda V: np.sum(rrow * (x @ V)), W),
                               rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------ section 5: B = XY


def test_section_5_scalar_of_a_matrix_product_wrt_each_factor():
    r = rng(50)
    n, m, p = 3, 4, 2
    X, Y = r.normal(size=(n, m)), r.normal(size=(m, p))
    B, (dB_dX, dB_dY) = OPS.matmul(X, Y, batch=False)
    assert dB_dX.shape == (n, p, n, m) and dB_dY.shape == (n, p, m, p)   # the 4-D Jacobians
    # entrywise: dB_kl/dX_ij = 1[k = i] Y_jl and dB_kl/dY_ij = 1[l = j] X_ki
    eye_n, eye_p = np.eye(n), np.eye(p)
    np.testing.assert_array_equal(dB_dX, np.einsum("ki,jl->klij", eye_n, Y))
    np.testing.assert_array_equal(dB_dY, np.einsum("lj,ki->klij", eye_p, X))
    # A = sum(tanh(B)), a concrete scalar of B; dA/dB from the toolkit's tanh and sum Jacobians
    T, (dT_dB,) = OPS.tanh(B, batch=False)
    A, (dA_dT,) = OPS.sum(T, batch=False)
    dA_dB = pull_back(dA_dT, dT_dB)
    assert dA_dB.shape == (n, p)
    dA_dX, dA_dY = pull_back(dA_dB, dB_dX), pull_back(dA_dB, dB_dY)
    np.testing.assert_allclose(dA_dX, dA_dB @ Y.T, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dA_dY, X.T @ dA_dB, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dA_dX, numerical_jacobian(lambda V: np.tanh(V @ Y).sum(), X), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dA_dY, numerical_jacobian(lambda V: np.tanh(X @ V).sum(), Y), rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ section 6: broadcast sum


@pytest.mark.parametrize("row_shape", [(1, 5), (5,)], ids=["1xm", "m"])
def test_section_6_broadcast_sum_gradient_wrt_the_row_is_the_column_sums(row_shape):
    r = rng(60)
    n, m = 4, 5
    X, y = r.normal(size=(n, m)), r.normal(size=row_shape)
    G = r.normal(size=(n, m))                               # dA/dB, known
    B, (dB_dX, dB_dy) = OPS.add(X, y, batch=False)
    assert dB_dy.shape == (n, m) + row_shape
    # each row of B moves one-for-one with y: dB_i/dy is the identity for every row i
    for i in range(n):
        np.testing.assert_array_equal(dB_dy[i].reshape(m, m), np.eye(m))
    dA_dy = pull_back(G, dB_dy)
    np.testing.assert_allclose(dA_dy, G.sum(axis=0).reshape(row_shape), rtol=1e-14)
    np.testing.assert_allclose(pull_back(G, dB_dX), G, rtol=1e-14)
    np.testing.assert_allclose(dA_dy, numerical_jacobian(lambda v: np.sum(G * (X + v)), y), rtol=1e-7, atol=1e-9)


def test_section_6_broadcast_sum_written_as_ones_times_y():
    # B = X + 1 y with 1 an n x 1 column of ones: section 5 gives dA/dy = 1^T dA/dB
    r = rng(61)
    n, m = 3, 4
    X, y, G = r.normal(size=(n, m)), r.normal(size=(1, m)), r.normal(size=(n, m))
    ones = np.ones((n, 1))
    outer, (_, dO_dy) = OPS.matmul(ones, y, batch=False)
    B, (_, dB_dO) = OPS.add(X, outer, batch=False)
    via_product = pull_back(pull_back(G, dB_dO), dO_dy)
    _, (_, dB_dy) = OPS.add(X, y, batch=False)
    np.testing.assert_allclose(via_product, ones.T @ G, rtol=1e-14)
    np.testing.assert_allclose(via_product, pull_back(G, dB_dy), rtol=1e-14)


# ------------------------------------------------------------------ section 7: broadcast product


def test_section_7_broadcast_hadamard_product_gradients():
    r = rng(70)
    n, m = 4, 3
    y, X = r.normal(size=(1, m)), r.normal(size=(n, m))
    G = r.normal(size=(n, m))
    B, (dB_dy, dB_dX) = OPS.multiply(y, X, batch=False)
    assert dB_dy.shape == (n, m, 1, m) and dB_dX.shape == (n, m, n, m)
    # changing X_ij moves only B_ij, by y_j
    np.testing.assert_array_equal(dB_dX, np.einsum("ik,jl,j->ijkl", np.eye(n), np.eye(m), y[0]))
    dA_dy = pull_back(G, dB_dy)
    dA_dX = pull_back(G, dB_dX)
    np.testing.assert_allclose(dA_dy, np.sum(G * X, axis=0, keepdims=True), rtol=1e-13)   # sum_i G_i * X_i
    np.testing.assert_allclose(dA_dX, y * G, rtol=1e-14)
    np.testing.assert_allclose(dA_dy, numerical_jacobian(lambda v: np.sum(G * (v * X)), y), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(dA_dX, numerical_jacobian(lambda V: np.sum(G * (y * V)), X), rtol=1e-7, atol=1e-9)
