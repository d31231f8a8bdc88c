"""Clark, "Computing Neural Network Gradients" (CS224n): identities 1-7 and the one-layer network.

Every Jacobian below comes from ``jacobians.ops`` (numerator layout, shape
``output + input``); the closed forms of the notes are written independently
with plain numpy, and finite differences referee both.

Vectors are 1-D arrays with ``batch=False``, so the toolkit's Jacobian of a
map R^m -> R^n is an (n, m) matrix, exactly Clark's Jacobian matrix.  A
"row vector" is still a 1-D array: numpy does not distinguish row and column,
so the transposes of the notes show up as the *order* of the factors.
"""

from __future__ import annotations

import numpy as np
import pytest

import jacobians as jac
from jacobians.testing import numerical_jacobian

from notes_helpers import contract, rng

OPS = jac.ops


# ------------------------------------------------------------------ the introduction: chaining = multiplying


def test_chain_rule_of_a_scalar_to_vector_then_vector_to_vector_map_is_a_matrix_product():
    # f: R -> R^2 (a 1-vector in, as the toolkit's arrays have at least one axis), g: R^2 -> R^2
    r = rng(0)
    t = r.normal(size=1)
    a = r.normal(size=2)
    M = r.normal(size=(2, 2))
    u, (du_dt, _) = OPS.multiply(t, a, batch=False)        # u = t * a        (2,), J (2, 1)
    f, (df_du,) = OPS.tanh(u, batch=False)                  # f = tanh(u)      J (2, 2)
    g, (_, dg_df) = OPS.matmul(M, f, batch=False)           # g = M f          J (2, 2)
    df_dt = contract(df_du, du_dt, 1)
    assert df_dt.shape == (2, 1) and dg_df.shape == (2, 2)
    dg_dt = contract(dg_df, df_dt, 1)                       # (2 x 2)(2 x 1) = (2 x 1)
    assert dg_dt.shape == (2, 1)
    numeric = numerical_jacobian(lambda s: M @ np.tanh(s * a), t)
    np.testing.assert_allclose(dg_dt, numeric, rtol=1e-7, atol=1e-9)
    # written out entrywise: dg_i/dt = sum_k dg_i/df_k df_k/dt
    by_hand = np.array([sum(dg_df[i, k] * df_dt[k, 0] for k in range(2)) for i in range(2)])
    np.testing.assert_allclose(dg_dt[:, 0], by_hand)


# ------------------------------------------------------------------ identities 1-4: Jacobians w.r.t. vectors


def test_identity_1_matrix_times_column_vector_wrt_the_vector_is_W():
    r = rng(1)
    n, m = 3, 5                                             # non-square: a transpose would not even fit
    W, x = r.normal(size=(n, m)), r.normal(size=m)
    z, (_, dz_dx) = OPS.matmul(W, x, batch=False)
    assert dz_dx.shape == (n, m)
    np.testing.assert_array_equal(dz_dx, W)
    # the affine op gives the same Jacobian (the bias does not change it)
    _, (dz_dx_lin, _, _) = OPS.linear(x, W, r.normal(size=n), batch=False)
    np.testing.assert_array_equal(dz_dx_lin, W)
    np.testing.assert_allclose(dz_dx, numerical_jacobian(lambda v: W @ v, x), rtol=1e-8, atol=1e-10)


def test_identity_2_row_vector_times_matrix_wrt_the_vector_is_W_transpose():
    r = rng(2)
    m, n = 4, 6
    x, W = r.normal(size=m), r.normal(size=(m, n))
    z, (dz_dx, _) = OPS.matmul(x, W, batch=False)           # z = x W, x a (1-D) row vector
    assert dz_dx.shape == (n, m)
    np.testing.assert_array_equal(dz_dx, W.T)
    # an explicit 1 x m row vector gives the same matrix between its singleton axes
    x_row = x[None, :]
    _, (dz_dxrow, _) = OPS.matmul(x_row, W, batch=False)
    assert dz_dxrow.shape == (1, n, 1, m)
    np.testing.assert_array_equal(dz_dxrow[0, :, 0, :], W.T)
    np.testing.assert_allclose(dz_dx, numerical_jacobian(lambda v: v @ W, x), rtol=1e-8, atol=1e-10)


def test_identity_3_a_vector_with_itself_has_the_identity_Jacobian():
    r = rng(3)
    x = r.normal(size=5)
    # three toolkit ops that return x unchanged; each Jacobian must be the identity matrix:
    #   reshape to the same shape, adding a zero vector, transposing a 1-D array
    _, (j_reshape,) = OPS.reshape(x, (5,), batch=False)
    _, (j_add, _) = OPS.add(x, np.zeros(5), batch=False)
    _, (j_transpose,) = OPS.transpose(x, batch=False)
    for J in (j_reshape, j_add, j_transpose):
        np.testing.assert_array_equal(J, np.eye(5))
    # "the term disappears in the chain rule": composing with it changes nothing
    A = r.normal(size=(3, 5))
    np.testing.assert_array_equal(contract(A, j_add, 1), A)


ELEMENTWISE = {
    # name: (input, closed-form derivative f'(x))
    "sigmoid": (lambda r: r.normal(size=6), lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2),
    "tanh": (lambda r: r.normal(size=6), lambda x: 1 / np.cosh(x) ** 2),
    "relu": (lambda r: r.normal(size=6), lambda x: (x > 0).astype(float)),
    "exp": (lambda r: r.normal(size=6), np.exp),
    "log": (lambda r: r.uniform(0.5, 2.0, size=6), lambda x: 1 / x),
    "softplus": (lambda r: r.normal(size=6), lambda x: 1 / (1 + np.exp(-x))),
    "square": (lambda r: r.normal(size=6), lambda x: 2 * x),
    "sqrt": (lambda r: r.uniform(0.5, 2.0, size=6), lambda x: 0.5 / np.sqrt(x)),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_identity_4_elementwise_function_has_Jacobian_diag_of_its_derivative(name):
    make, fprime = ELEMENTWISE[name]
    x = make(rng(4))
    assert np.abs(x).min() > 1e-3                           # keep relu away from its kink
    op = getattr(OPS, name)
    z, (dz_dx,) = op(x, batch=False)
    assert dz_dx.shape == (6, 6)
    np.testing.assert_allclose(dz_dx, np.diag(fprime(x)), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dz_dx, numerical_jacobian(lambda v: op(v, batch=False)[0], x),
                               rtol=1e-6, atol=1e-8)
    # multiplying by diag(f'(x)) is the same as the elementwise product with f'(x)
    delta = rng(40).normal(size=6)
    np.testing.assert_allclose(delta @ dz_dx, delta * fprime(x), rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ identities 5-6: Jacobians w.r.t. matrices


def test_identity_5_column_case_dJ_dW_is_the_outer_product_of_delta_and_x():
    r = rng(5)
    n, m = 3, 4
    W, x = r.normal(size=(n, m)), r.normal(size=m)
    z, (dz_dW, _) = OPS.matmul(W, x, batch=False)
    # the toolkit keeps the output axis first: (n, n, m); Clark arranges the same numbers as
    # n x m x n (his W-shaped "gradient" layout), i.e. the output axis moved to the back
    assert dz_dW.shape == (n, n, m)
    for i in range(n):
        for j in range(m):
            expected = np.zeros(n)
            expected[i] = x[j]                              # dz/dW_ij = x_j in slot i, zero elsewhere
            np.testing.assert_array_equal(dz_dW[:, i, j], expected)
    # a concrete scalar J(z) = 0.5 ||z - t||^2 gives delta = dJ/dz (n,) from the toolkit's mse
    t = r.normal(size=n)
    _, (delta, _) = OPS.mse(z, t, batch=False)
    dJ_dW = contract(delta, dz_dW, 1)
    assert dJ_dW.shape == W.shape
    np.testing.assert_allclose(dJ_dW, np.outer(delta, x), rtol=1e-12)   # delta^T x^T
    numeric = numerical_jacobian(lambda V: 0.5 * np.sum((V @ x - t) ** 2), W)
    np.testing.assert_allclose(dJ_dW, numeric, rtol=1e-6, atol=1e-8)


def test_identity_6_row_case_dJ_dW_is_x_transpose_times_delta():
    r = rng(6)
    m, n = 5, 3
    x, W = r.normal(size=m), r.normal(size=(m, n))
    z, (_, dz_dW) = OPS.matmul(x, W, batch=False)
    assert dz_dW.shape == (n, m, n)
    delta = r.normal(size=n)                                # any dJ/dz
    dJ_dW = contract(delta, dz_dW, 1)
    assert dJ_dW.shape == W.shape
    np.testing.assert_allclose(dJ_dW, np.outer(x, delta), rtol=1e-12)   # x^T delta
    numeric = numerical_jacobian(lambda V: delta @ (x @ V), W)
    np.testing.assert_allclose(dJ_dW, numeric, rtol=1e-6, atol=1e-8)
    # the dimension argument of the notes: with W not square only one ordering has W's shape
    assert np.outer(delta, x).shape != W.shape


# ------------------------------------------------------------------ identity 7: cross entropy of softmax


@pytest.mark.parametrize("k", [0, 3])
def test_identity_7_cross_entropy_of_softmax_wrt_logits_is_yhat_minus_y(k):
    r = rng(7)
    C = 5
    theta = r.normal(size=C) * 2
    y = np.eye(C)[k]
    yhat = np.exp(theta) / np.exp(theta).sum()
    # the fused op, with a one-hot target and with an integer label
    J1, (g1,) = OPS.softmax_cross_entropy(theta, y, batch=False)
    J2, (g2,) = OPS.softmax_cross_entropy(theta, np.array(k), batch=False)
    np.testing.assert_allclose(g1, yhat - y, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g2, yhat - y, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose([J1, J2], -np.log(yhat[k]), rtol=1e-12)
    # the chain: softmax Jacobian (C, C), then cross entropy's Jacobian w.r.t. its prediction (C,)
    q, (dq_dtheta,) = OPS.softmax(theta, batch=False)
    J3, (dJ_dq, _) = OPS.cross_entropy(q, y, batch=False)
    chained = contract(dJ_dq, dq_dtheta, 1)
    np.testing.assert_allclose(chained, yhat - y, rtol=1e-10, atol=1e-14)
    numeric = numerical_jacobian(lambda v: -np.log(np.exp(v[k]) / np.exp(v).sum()), theta)
    np.testing.assert_allclose(chained, numeric, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ the one-layer network


def _one_layer_setup(seed=8, Dx=5, Dh=4, Nc=3):
    r = rng(seed)
    params = dict(x=r.normal(size=Dx), W=r.normal(size=(Dh, Dx)), b1=r.normal(size=Dh),
                  U=r.normal(size=(Nc, Dh)), b2=r.normal(size=Nc))
    k = 1
    return params, np.eye(Nc)[k]


def _one_layer_loss(x, W, b1, U, b2, y):
    """The forward pass in plain numpy (the referee for finite differences)."""
    h = np.maximum(W @ x + b1, 0)
    theta = U @ h + b2
    logq = theta - theta.max() - np.log(np.exp(theta - theta.max()).sum())
    return -np.dot(y, logq)


def test_one_layer_network_gradients_by_chaining_the_toolkits_jacobians():
    p, y = _one_layer_setup()
    x, W, b1, U, b2 = p["x"], p["W"], p["b1"], p["U"], p["b2"]
    Dx, Dh, Nc = x.size, b1.size, b2.size

    # forward pass, one op at a time; every op hands back its explicit Jacobians
    z, (dz_dx, dz_dW, dz_db1) = OPS.linear(x, W, b1, batch=False)
    assert np.abs(z).min() > 1e-3                           # finite differences stay off the relu kink
    h, (dh_dz,) = OPS.relu(z, batch=False)
    theta, (dth_dh, dth_dU, dth_db2) = OPS.linear(h, U, b2, batch=False)
    yhat, (dyhat_dth,) = OPS.softmax(theta, batch=False)
    J, (dJ_dyhat, _) = OPS.cross_entropy(yhat, y, batch=False)
    assert (dz_dx.shape, dz_dW.shape, dz_db1.shape) == ((Dh, Dx), (Dh, Dh, Dx), (Dh, Dh))
    assert (dth_dh.shape, dth_dU.shape, dth_db2.shape) == ((Nc, Dh), (Nc, Nc, Dh), (Nc, Nc))
    assert dJ_dyhat.shape == (Nc,)
    np.testing.assert_allclose(J, _one_layer_loss(x, W, b1, U, b2, y), rtol=1e-12)

    # the error signals, by the chain rule on explicit Jacobians
    delta1 = contract(dJ_dyhat, dyhat_dth, 1)                       # dJ/dtheta
    delta2 = contract(contract(delta1, dth_dh, 1), dh_dz, 1)        # dJ/dz
    # Clark's closed forms
    np.testing.assert_allclose(delta1, yhat - y, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(delta2, (delta1 @ U) * np.sign(h), rtol=1e-10, atol=1e-14)

    # his dimension check: (1 x Dh) = (1 x Nc)(Nc x Dh)(Dh x Dh), with the toolkit's shapes
    row = delta1.reshape(1, Nc)
    assert row.shape == (1, Nc) and dth_dh.shape == (Nc, Dh) and dh_dz.shape == (Dh, Dh)
    assert row.shape[1] == dth_dh.shape[0] and dth_dh.shape[1] == dh_dz.shape[0]
    assert (row @ dth_dh @ dh_dz).shape == (1, Dh)

    grads = {
        "U": contract(delta1, dth_dU, 1),
        "b2": contract(delta1, dth_db2, 1),
        "W": contract(delta2, dz_dW, 1),
        "b1": contract(delta2, dz_db1, 1),
        "x": contract(delta2, dz_dx, 1),
    }
    closed = {
        "U": np.outer(delta1, h),        # delta1^T h^T
        "b2": delta1,                    # delta1^T
        "W": np.outer(delta2, x),        # delta2^T x^T
        "b1": delta2,                    # delta2^T
        "x": W.T @ delta2,               # W^T delta2^T
    }
    for name in grads:
        assert grads[name].shape == p[name].shape, name            # Clark's shape convention
        np.testing.assert_allclose(grads[name], closed[name], rtol=1e-10, atol=1e-13, err_msg=name)

        def loss_of(v, name=name):
            q = dict(p)
            q[name] = v
            return _one_layer_loss(y=y, **q)
        numeric = numerical_jacobian(loss_of, p[name])
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-8, err_msg=name)


def test_one_layer_network_full_chain_in_either_order_gives_dJ_dW():
    # the same gradient without the delta shortcuts: the whole product of explicit Jacobians,
    # contracted from the loss end (reverse) and from the parameter end (forward)
    p, y = _one_layer_setup(seed=9)
    z, (_, dz_dW, _) = OPS.linear(p["x"], p["W"], p["b1"], batch=False)
    h, (dh_dz,) = OPS.relu(z, batch=False)
    theta, (dth_dh, _, _) = OPS.linear(h, p["U"], p["b2"], batch=False)
    yhat, (dyhat_dth,) = OPS.softmax(theta, batch=False)
    _, (dJ_dyhat, _) = OPS.cross_entropy(yhat, y, batch=False)

    reverse = dJ_dyhat
    for Jk in (dyhat_dth, dth_dh, dh_dz, dz_dW):
        reverse = contract(reverse, Jk, 1)
    forward = dz_dW
    for Jk in (dh_dz, dth_dh, dyhat_dth):
        forward = contract(Jk, forward, 1)
    assert forward.shape == (p["b2"].size,) + p["W"].shape    # dyhat/dW: (Nc, Dh, Dx), a 3-D tensor
    forward = contract(dJ_dyhat, forward, 1)
    np.testing.assert_allclose(forward, reverse, rtol=1e-10, atol=1e-14)
    delta2 = ((yhat - y) @ p["U"]) * np.sign(h)
    np.testing.assert_allclose(reverse, np.outer(delta2, p["x"]), rtol=1e-10, atol=1e-14)


def test_one_layer_network_the_notes_pair_dJ_dtheta_with_dz_dW_which_does_not_compose():
    # The notes write dJ/dW = dJ/dtheta dz/dW = delta2 dz/dW (same for b1 and x): the first factor
    # should be dJ/dz, which is what delta2 is.  With the toolkit's explicit tensors the written
    # product is not even defined when Nc != Dh: dJ/dtheta has Nc entries, dz/dW's leading axis Dh.
    p, y = _one_layer_setup(seed=10)
    Nc, Dh = p["b2"].size, p["b1"].size
    assert Nc != Dh
    z, (_, dz_dW, _) = OPS.linear(p["x"], p["W"], p["b1"], batch=False)
    h, _ = OPS.relu(z, batch=False)
    theta, _ = OPS.linear(h, p["U"], p["b2"], batch=False)
    _, (dJ_dtheta,) = OPS.softmax_cross_entropy(theta, y, batch=False)
    assert dJ_dtheta.shape == (Nc,) and dz_dW.shape[0] == Dh
    with pytest.raises(ValueError):
        contract(dJ_dtheta, dz_dW, 1)
