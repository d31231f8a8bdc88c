"""CS182 discussion 3 (autodiff): layouts, finite differences, JVP/VJP costs, softmax,
logistic regression and a residual block, all from the toolkit's explicit Jacobians.

Errata of the notes exercised here (the toolkit is right):

* the chain rule for the four-layer network is printed as
  ``do/dx = do/dx4 dx4/dx3 dx2/dx2 dx2/dx``; the third factor must be
  ``dx3/dx2`` (``dx2/dx2`` would be an identity and the m2 x m1 block would be
  missing).  ``test_jvp_and_vjp_costs_of_a_dense_chain`` multiplies the four
  real factors and checks the product against finite differences;
* problem 5 calls ``delta_y`` "the gradient of the loss with respect to x"; it is
  the gradient with respect to **y** (the formula ``W1^T R W2^T delta_y + delta_y``
  only holds for dL/dy), see ``test_residual_block_vjp``.
"""

from __future__ import annotations

import numpy as np
import pytest

import jacobians as jac
from jacobians.testing import expand_batch, numerical_jacobian

from notes_helpers import contract, rng

OPS = jac.ops


# ------------------------------------------------------------------ layouts and numerical differentiation


def test_the_toolkit_uses_the_numerator_layout_not_the_denominator_layout():
    r = rng(100)
    A = r.normal(size=(2, 5))            # f: R^5 -> R^2
    x = r.normal(size=5)
    _, (_, J) = OPS.matmul(A, x, batch=False)
    assert J.shape == (2, 5)             # (df_i / dx_j)[i, j]: m x n
    numeric = numerical_jacobian(lambda v: A @ v, x)
    np.testing.assert_allclose(J, numeric, rtol=1e-8, atol=1e-10)
    assert J.T.shape != numeric.shape    # the denominator layout would be n x m


def test_one_sided_finite_differences_carry_a_first_order_error_the_exact_jacobian_does_not():
    x = np.array([0.3, -1.2, 0.8])
    _, (J,) = OPS.exp(x, batch=False)
    exact = np.exp(x)
    np.testing.assert_allclose(np.diag(J), exact, rtol=1e-15)
    for h in (1e-3, 1e-4):
        one_sided = (np.exp(x + h) - np.exp(x)) / h
        # the discretization error is h/2 f''(x) to leading order: it does not vanish for any finite h
        np.testing.assert_allclose((one_sided - np.diag(J)) / h, exact / 2, rtol=2e-3)
    # central differences (jacobians.testing) are second order: far closer at the same h
    central = np.diag(numerical_jacobian(np.exp, x, eps=1e-4))
    assert np.abs(central - exact).max() < 1e-3 * np.abs((np.exp(x + 1e-4) - np.exp(x)) / 1e-4 - exact).max()


# ------------------------------------------------------------------ JVP vs VJP cost for a dense chain


class MultiplyAdds:
    """Counts the multiply-adds of products with explicit Jacobian matrices (a x b: a*b each)."""

    def __init__(self) -> None:
        self.count = 0

    def jvp(self, J: np.ndarray, v: np.ndarray) -> np.ndarray:       # J v
        self.count += J.shape[0] * J.shape[1]
        return J @ v

    def vjp(self, u: np.ndarray, J: np.ndarray) -> np.ndarray:       # u^T J
        self.count += J.shape[0] * J.shape[1]
        return u @ J


def _chain_layers(n, m1, m2, m3, m, seed):
    """Four layers R^n -> R^m1 -> R^m2 -> R^m3 -> R^m; each returns (value, its Jacobian matrix)."""
    r = rng(seed)
    W1, W2, W3, W4 = (r.normal(size=s) / np.sqrt(s[1]) for s in ((m1, n), (m2, m1), (m3, m2), (m, m3)))
    b2 = r.normal(size=m2)

    def f1(x):       # tanh(W1 x)
        u, (_, du) = OPS.matmul(W1, x, batch=False)
        y, (dy,) = OPS.tanh(u, batch=False)
        return y, dy @ du

    def f2(x):       # W2 x + b2
        y, (dy, _, _) = OPS.linear(x, W2, b2, batch=False)
        return y, dy

    def f3(x):       # sigmoid(W3 x)
        u, (_, du) = OPS.matmul(W3, x, batch=False)
        y, (dy,) = OPS.sigmoid(u, batch=False)
        return y, dy @ du

    def f4(x):       # W4 x
        y, (_, dy) = OPS.matmul(W4, x, batch=False)
        return y, dy

    def plain(x):    # the same function in numpy (the referee)
        h = np.tanh(W1 @ x)
        h = W2 @ h + b2
        h = 1 / (1 + np.exp(-(W3 @ h)))
        return W4 @ h

    return (f1, f2, f3, f4), plain


@pytest.mark.parametrize("sizes", [(7, 5, 6, 4, 3), (3, 5, 6, 4, 7), (9, 6, 8, 5, 1), (4, 4, 4, 4, 4)])
def test_jvp_and_vjp_costs_of_a_dense_chain(sizes):
    n, m1, m2, m3, m = sizes
    layers, plain = _chain_layers(*sizes, seed=sum(sizes))
    x = rng(110).normal(size=n)
    # forward pass: keep every layer's explicit Jacobian (m_k x m_{k-1})
    jacs, h = [], x
    for f in layers:
        h, Jk = f(h)
        jacs.append(Jk)
    assert [Jk.shape for Jk in jacs] == [(m1, n), (m2, m1), (m3, m2), (m, m3)]
    per_vector = m1 * n + m2 * m1 + m3 * m2 + m * m3

    fwd = MultiplyAdds()                 # column j = J e_j, pushed from the input end
    columns = []
    for j in range(n):
        v = np.eye(n)[j]
        for Jk in jacs:
            v = fwd.jvp(Jk, v)
        columns.append(v)
    J_forward = np.stack(columns, axis=1)

    rev = MultiplyAdds()                 # row i = e_i^T J, pulled from the output end
    rows = []
    for i in range(m):
        u = np.eye(m)[i]
        for Jk in reversed(jacs):
            u = rev.vjp(u, Jk)
        rows.append(u)
    J_reverse = np.stack(rows, axis=0)

    assert fwd.count == n * per_vector   # n (m m3 + m3 m2 + m2 m1 + m1 n)
    assert rev.count == m * per_vector   # m (m m3 + m3 m2 + m2 m1 + m1 n)
    assert (rev.count < fwd.count) == (m < n) and (rev.count == fwd.count) == (m == n)
    assert J_forward.shape == J_reverse.shape == (m, n)
    np.testing.assert_allclose(J_forward, J_reverse, rtol=1e-12, atol=1e-14)
    # the product of the four real factors (the notes misprint the third as dx2/dx2)
    np.testing.assert_allclose(J_forward, jacs[3] @ jacs[2] @ jacs[1] @ jacs[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(J_forward, numerical_jacobian(plain, x), rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ softmax


def test_softmax_jacobian_is_p_i_times_delta_ij_minus_p_j():
    r = rng(120)
    k = 5
    z = r.normal(size=k)
    p, (J,) = OPS.softmax(z, batch=False)
    assert J.shape == (k, k)
    for i in range(k):
        for j in range(k):
            expected = p[i] * (1 - p[j]) if i == j else -p[i] * p[j]
            assert J[i, j] == pytest.approx(expected, rel=1e-12, abs=1e-15)
        np.testing.assert_allclose(J[i], p[i] * (np.eye(k)[i] - p), rtol=1e-12, atol=1e-15)  # grad of p_i
    np.testing.assert_allclose(J, numerical_jacobian(lambda v: np.exp(v) / np.exp(v).sum(), z),
                               rtol=1e-6, atol=1e-9)


def test_softmax_jacobian_batched_is_per_sample():
    r = rng(121)
    B, k = 4, 6
    Z = r.normal(size=(B, k)) * 2
    P, (J,) = OPS.softmax(Z)
    assert J.shape == (B, k, k)
    np.testing.assert_allclose(J, np.einsum("bi,ij->bij", P, np.eye(k)) - np.einsum("bi,bj->bij", P, P),
                               rtol=1e-12, atol=1e-15)
    for b in range(B):
        np.testing.assert_allclose(J[b], OPS.softmax(Z[b], batch=False)[1][0], rtol=1e-12, atol=1e-15)
    numeric = numerical_jacobian(lambda V: np.exp(V) / np.exp(V).sum(axis=1, keepdims=True), Z)
    np.testing.assert_allclose(expand_batch(J, 2), numeric, rtol=1e-6, atol=1e-9)


def test_gradient_of_log_p_i_is_e_i_minus_p():
    r = rng(122)
    k = 4
    z = r.normal(size=k)
    p, (dp_dz,) = OPS.softmax(z, batch=False)
    logp, (dlog_dp,) = OPS.log(p, batch=False)
    via_chain = contract(dlog_dp, dp_dz, 1)                 # grad p_i / p_i, row by row
    _, (via_log_softmax,) = OPS.log_softmax(z, batch=False)
    expected = np.eye(k) - p[None, :]                       # row i: e_i - p
    np.testing.assert_allclose(via_chain, expected, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(via_log_softmax, expected, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------ logistic regression L = -log p_y(Wx + b)


def _logistic_loss(x, W, b, y):
    z = W @ x + b
    return -(z[y] - np.log(np.exp(z).sum()))


def test_logistic_regression_gradients_by_the_chain_rule():
    r = rng(130)
    d, k, y = 5, 4, 2
    x, W, b = r.normal(size=d), r.normal(size=(k, d)), r.normal(size=k)
    e_y = np.eye(k)[y]
    # L = -log p_y(z), z = W x + b, spelled out one op at a time
    z, (dz_dx, dz_dW, dz_db) = OPS.linear(x, W, b, batch=False)
    p, (dp_dz,) = OPS.softmax(z, batch=False)
    logp, (dlogp_dp,) = OPS.log(p, batch=False)
    s, (ds_dlogp, _) = OPS.dot(logp, e_y, batch=False)      # log p_y
    L, (dL_ds,) = OPS.negative(s, batch=False)
    assert dz_db.shape == (k, k)
    np.testing.assert_array_equal(dz_db, np.eye(k))         # dz/db is the identity
    np.testing.assert_allclose(L, _logistic_loss(x, W, b, y), rtol=1e-12)

    grad_z_logpy = contract(contract(ds_dlogp, dlogp_dp, 1), dp_dz, 1)
    np.testing.assert_allclose(grad_z_logpy, e_y - p, rtol=1e-10, atol=1e-14)
    dL_dz = contract(dL_ds, grad_z_logpy, 0)                # the sign flip of the negative log likelihood
    grads = {"b": contract(dL_dz, dz_db, 1), "W": contract(dL_dz, dz_dW, 1), "x": contract(dL_dz, dz_dx, 1)}
    np.testing.assert_allclose(grads["b"], p - e_y, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(grads["W"], np.outer(p - e_y, x), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(grads["x"], W.T @ (p - e_y), rtol=1e-10, atol=1e-14)
    # the fused op agrees with the chain
    _, (fused,) = OPS.softmax_cross_entropy(z, np.array(y), batch=False)
    np.testing.assert_allclose(fused, dL_dz, rtol=1e-10, atol=1e-14)
    args = dict(x=x, W=W, b=b)
    for name, g in grads.items():
        def loss_of(v, name=name):
            return _logistic_loss(**{**args, name: v}, y=y)
        np.testing.assert_allclose(g, numerical_jacobian(loss_of, args[name]), rtol=1e-6, atol=1e-9,
                                   err_msg=name)


def test_logistic_regression_per_sample_gradients_over_a_batch():
    r = rng(131)
    B, d, k = 6, 4, 3
    X, W, b = r.normal(size=(B, d)), r.normal(size=(k, d)), r.normal(size=k)
    labels = r.integers(0, k, size=B)
    Z, (dZ_dX, dZ_dW, dZ_db) = OPS.linear(X, W, b)
    L, (dL_dZ,) = OPS.softmax_cross_entropy(Z, labels)
    assert (dZ_dX.shape, dZ_dW.shape, dZ_db.shape, dL_dZ.shape) == ((B, k, d), (B, k, k, d), (B, k, k), (B, k))
    P = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
    err = P - np.eye(k)[labels]
    np.testing.assert_allclose(dL_dZ, err, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.einsum("bk,bkij->bij", dL_dZ, dZ_dW), np.einsum("bk,bd->bkd", err, X),
                               rtol=1e-10, atol=1e-14)              # one (p - e_y) x^T per sample
    np.testing.assert_allclose(np.einsum("bk,bkj->bj", dL_dZ, dZ_db), err, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.einsum("bk,bkd->bd", dL_dZ, dZ_dX), err @ W, rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------ the residual block y = W2 relu(W1 x) + x


def _residual_setup(seed, d=5, h=7, B=None):
    r = rng(seed)
    W1, W2 = r.normal(size=(h, d)), r.normal(size=(d, h))
    x = r.normal(size=(d,) if B is None else (B, d))
    return W1, W2, x


def test_residual_block_full_jacobian_sums_the_two_paths():
    W1, W2, x = _residual_setup(140)
    d = x.size
    z, (_, dz_dx) = OPS.matmul(W1, x, batch=False)
    assert np.abs(z).min() > 1e-3
    a, (da_dz,) = OPS.relu(z, batch=False)
    u, (_, du_da) = OPS.matmul(W2, a, batch=False)
    y, (dy_du, dy_dx_skip) = OPS.add(u, x, batch=False)
    through_block = contract(dy_du, contract(du_da, contract(da_dz, dz_dx, 1), 1), 1)
    J = through_block + dy_dx_skip                          # two paths from x to y, summed
    R = np.diag((z > 0).astype(float))
    np.testing.assert_array_equal(da_dz, R)
    np.testing.assert_array_equal(dy_dx_skip, np.eye(d))
    np.testing.assert_allclose(J, W2 @ R @ W1 + np.eye(d), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(J, numerical_jacobian(lambda v: W2 @ np.maximum(W1 @ v, 0) + v, x),
                               rtol=1e-6, atol=1e-9)


def test_residual_block_vjp():
    # delta_y is dL/dy (the notes say "with respect to x"); a concrete loss L = 0.5 ||y - t||^2
    W1, W2, x = _residual_setup(141)
    t = rng(142).normal(size=x.size)
    z, (_, dz_dx) = OPS.matmul(W1, x, batch=False)
    a, (da_dz,) = OPS.relu(z, batch=False)
    u, (_, du_da) = OPS.matmul(W2, a, batch=False)
    y, (dy_du, dy_dx) = OPS.add(u, x, batch=False)
    _, (delta_y, _) = OPS.mse(y, t, batch=False)
    # pull delta_y back along each path, never forming the full Jacobian
    dL_da = delta_y @ dy_du @ du_da
    np.testing.assert_allclose(dL_da, W2.T @ delta_y, rtol=1e-12)
    dL_dz = dL_da @ da_dz
    np.testing.assert_allclose(dL_dz, (z > 0) * (W2.T @ delta_y), rtol=1e-12, atol=1e-15)   # R(z) W2^T delta_y
    dL_dx = dL_dz @ dz_dx + delta_y @ dy_dx
    R = np.diag((z > 0).astype(float))
    np.testing.assert_allclose(dL_dx, W1.T @ R @ W2.T @ delta_y + delta_y, rtol=1e-12, atol=1e-14)
    numeric = numerical_jacobian(lambda v: 0.5 * np.sum((W2 @ np.maximum(W1 @ v, 0) + v - t) ** 2), x)
    np.testing.assert_allclose(dL_dx, numeric, rtol=1e-6, atol=1e-9)
    # read literally (delta = dL/dx), the formula would have to map dL/dx to itself; it does not
    assert not np.allclose(W1.T @ R @ W2.T @ dL_dx + dL_dx, dL_dx)


def test_residual_block_batched_per_sample_jacobians():
    W1, W2, X = _residual_setup(143, B=4)
    B, d = X.shape
    Z, (dZ_dX, _) = OPS.linear(X, W1)
    assert np.abs(Z).min() > 1e-3
    A, (dA_dZ,) = OPS.relu(Z)
    U, (dU_dA, _) = OPS.linear(A, W2)
    Y, (dY_dU, dY_dX_skip) = OPS.add(U, X)
    assert dZ_dX.shape == (B, W1.shape[0], d) and dY_dX_skip.shape == (B, d, d)
    chain = np.einsum("boi,bij->boj", dY_dU, np.einsum("boi,bij->boj", dU_dA, np.einsum("boi,bij->boj", dA_dZ, dZ_dX)))
    J = chain + dY_dX_skip
    for b in range(B):
        np.testing.assert_allclose(J[b], W2 @ np.diag((Z[b] > 0).astype(float)) @ W1 + np.eye(d),
                                   rtol=1e-12, atol=1e-14)
    numeric = numerical_jacobian(lambda V: np.maximum(V @ W1.T, 0) @ W2.T + V, X)
    np.testing.assert_allclose(expand_batch(J, 2), numeric, rtol=1e-6, atol=1e-9)
