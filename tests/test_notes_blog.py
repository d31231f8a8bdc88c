"""The blog post "How to derive gradients in backprop without knowing matrix calculus (part 2)".

A softmax classifier over a batch: ``scores = X W + b`` with X (N, D), W (D, C),
b (1, C) or (C,), and ``Loss = mean_i -log softmax(scores)[i, y_i]``.  Its
gradients go through intermediate variables; the toolkit provides each step's
explicit Jacobian and the tests chain them, then compare with the closed forms
``dscores = (P - onehot(y)) / N``, ``dW = X^T dscores``, ``db = column sums``,
``dX = dscores W^T`` and with finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest

import jacobians as jac
from jacobians.testing import expand_batch, numerical_jacobian

OPS = jac.ops


def pull_back(upstream: np.ndarray, J: np.ndarray) -> np.ndarray:
    """Contract dL/d(output) (shaped like the output) with the explicit J (output + input)."""
    return np.tensordot(upstream, J, axes=upstream.ndim)


def _problem(seed=300, N=5, D=4, C=3, b_shape="C"):
    r = np.random.default_rng(seed)
    X, W = r.normal(size=(N, D)), r.normal(size=(D, C))
    b = r.normal(size=(1, C) if b_shape == "1xC" else (C,))
    y = r.integers(0, C, size=N)
    return X, W, b, y


def _mean_loss(X, W, b, y):
    """The classifier's loss in plain numpy (the referee for finite differences)."""
    s = X @ W + b
    s = s - s.max(axis=1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    return -np.mean(logp[np.arange(len(y)), y])


@pytest.mark.parametrize("b_shape", ["C", "1xC"])
def test_softmax_classifier_gradients_by_chaining_explicit_jacobians(b_shape):
    X, W, b, y = _problem(b_shape=b_shape)
    N, D = X.shape
    C = W.shape[1]
    H, (dH_dX, dH_dW) = OPS.matmul(X, W, batch=False)
    S, (dS_dH, dS_db) = OPS.add(H, b, batch=False)
    losses, (dlosses_dS,) = OPS.softmax_cross_entropy(S, y)      # per sample: (N,) and (N, C)
    L, (dL_dlosses,) = OPS.mean(losses)                          # (), Jacobian (N,)
    assert dH_dX.shape == (N, C, N, D) and dH_dW.shape == (N, C, D, C)
    assert dS_dH.shape == (N, C, N, C) and dS_db.shape == (N, C) + b.shape
    assert dlosses_dS.shape == (N, C) and dL_dlosses.shape == (N,)
    np.testing.assert_allclose(L, _mean_loss(X, W, b, y), rtol=1e-12)

    dL_dS = pull_back(dL_dlosses, expand_batch(dlosses_dS, 1))   # (N,) . (N, N, C) -> (N, C)
    dL_dH = pull_back(dL_dS, dS_dH)
    grads = {"W": pull_back(dL_dH, dH_dW), "b": pull_back(dL_dS, dS_db), "X": pull_back(dL_dH, dH_dX)}

    P = np.exp(S) / np.exp(S).sum(axis=1, keepdims=True)
    dscores = (P - np.eye(C)[y]) / N
    np.testing.assert_allclose(dL_dS, dscores, rtol=1e-10, atol=1e-15)
    closed = {"W": X.T @ dscores, "b": dscores.sum(axis=0).reshape(b.shape), "X": dscores @ W.T}
    args = dict(X=X, W=W, b=b)
    for name, g in grads.items():
        assert g.shape == args[name].shape, name
        np.testing.assert_allclose(g, closed[name], rtol=1e-10, atol=1e-14, err_msg=name)

        def loss_of(v, name=name):
            return _mean_loss(**{**args, name: v}, y=y)
        np.testing.assert_allclose(g, numerical_jacobian(loss_of, args[name]), rtol=1e-6, atol=1e-9,
                                   err_msg=name)


def test_dH_dW_is_a_four_dimensional_tensor_not_a_matrix():
    X, W, _, _ = _problem(seed=301, N=6, D=4, C=3)
    N, D = X.shape
    C = W.shape[1]
    H, (_, dH_dW) = OPS.matmul(X, W, batch=False)
    assert dH_dW.ndim == 4 and dH_dW.shape == (N, C, D, C)
    assert dH_dW.shape != (D, N)                                  # the tempting D x N guess
    # dH[n, c] / dW[d, e] = X[n, d] delta_ce
    np.testing.assert_array_equal(dH_dW, np.einsum("nd,ce->ncde", X, np.eye(C)))
    # contracted with a known dL/dH (N x C) over both of H's axes it yields W's shape, X^T dL/dH
    G = np.random.default_rng(302).normal(size=(N, C))
    np.testing.assert_allclose(pull_back(G, dH_dW), X.T @ G, rtol=1e-13)
    np.testing.assert_allclose(dH_dW, numerical_jacobian(lambda V: X @ V, W), rtol=1e-8, atol=1e-10)


def test_an_elementwise_step_between_matrices_is_an_elementwise_product():
    # S = H + b and E = exp(S): their 4-D Jacobians (N, C, N, C) are diagonal, so pulling a gradient
    # back through them is an elementwise product with an N x C matrix (ones, and exp(S))
    X, W, b, _ = _problem(seed=303)
    H, _ = OPS.matmul(X, W, batch=False)
    S, (dS_dH, _) = OPS.add(H, b, batch=False)
    E, (dE_dS,) = OPS.exp(S, batch=False)
    N, C = S.shape
    np.testing.assert_array_equal(dS_dH.reshape(N * C, N * C), np.eye(N * C))
    np.testing.assert_allclose(dE_dS.reshape(N * C, N * C), np.diag(np.exp(S).ravel()), rtol=1e-14)
    G = np.random.default_rng(304).normal(size=(N, C))
    np.testing.assert_array_equal(pull_back(G, dS_dH), G)
    np.testing.assert_allclose(pull_back(G, dE_dS), G * np.exp(S), rtol=1e-14)


def test_dscores_from_the_two_terms_of_the_loss():
    # Loss = 1/N sum_i ( -score[i, y_i] + log rowsum_i ),  rowsum_i = sum_c exp(score[i, c]);
    # score feeds both terms, so its gradient is the sum of the two contributions
    X, W, b, y = _problem(seed=305, N=6)
    N = X.shape[0]
    C = W.shape[1]
    scores = X @ W + b
    onehot = np.eye(C)[y]

    # first term: score[i, y_i] = sum_c score[i, c] onehot[i, c]
    picked_terms, (dpt_dscores, _) = OPS.multiply(scores, onehot)        # per sample (N, C, C)
    picked, (dpicked_dpt,) = OPS.sum(picked_terms, axis=1)               # per sample (N, C)
    first = -np.einsum("bc,bcd->bd", dpicked_dpt, dpt_dscores)
    np.testing.assert_array_equal(first, -onehot)                         # -1 at each correct class

    # second term: log rowsum; every score entry reaches exactly one rowsum entry
    E, (dE_dscores,) = OPS.exp(scores)                                    # (N, C, C)
    rowsum, (drowsum_dE,) = OPS.sum(E, axis=1)                            # (N,) and per sample (N, C)
    _, (drowsum_dE_full,) = OPS.sum(E, axis=1, batch=False)               # (N, N, C): one sample each
    assert drowsum_dE_full.shape == (N, N, C)
    np.testing.assert_array_equal(drowsum_dE_full, expand_batch(np.ones((N, C)), 1))
    logrow, (dlogrow_drowsum,) = OPS.log(rowsum)                          # per sample (N,)
    second = np.einsum("b,bc,bcd->bd", dlogrow_drowsum, drowsum_dE, dE_dscores)
    P = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(second, P, rtol=1e-12)                     # "the second part is P itself"
    _, (dlse,) = OPS.logsumexp(scores)
    np.testing.assert_allclose(second, dlse, rtol=1e-12)

    # the blog's procedure: start from zeros, -1 at the correct classes, add P, divide by N
    dscores = np.zeros_like(scores)
    dscores[np.arange(N), y] -= 1
    dscores += P
    dscores /= N
    np.testing.assert_allclose((first + second) / N, dscores, rtol=1e-12, atol=1e-15)
    _, (dlosses,) = OPS.softmax_cross_entropy(scores, y)
    np.testing.assert_allclose(dlosses / N, dscores, rtol=1e-10, atol=1e-15)
    numeric = numerical_jacobian(lambda s: _mean_loss(np.eye(N), s, 0.0, y), scores)
    np.testing.assert_allclose(dscores, numeric, rtol=1e-6, atol=1e-9)
