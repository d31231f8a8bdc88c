"""Schaeffer, "Gradients in Math and Code": batched einsum Jacobians with his shapes.

The toolkit's per-sample convention is his: a Jacobian of a per-sample output
``(B, *O)`` w.r.t. a per-sample input ``(B, *I)`` is ``(B, *O, *I)`` and w.r.t. a
shared parameter ``(*P)`` is ``(B, *O, *P)``.  His einsums are rebuilt in the
tests (from his description, with our own arrays) and compared to the toolkit.

What his page gets wrong, and which test shows it:

* squared error: ``0.5 * square(y - yhat)`` is elementwise, shape (B, D); his
  comment says (B, 1), true only for D = 1.  The per-sample loss that his
  Jacobian (B, 1, D) belongs to is ``0.5 ||y - yhat||^2``, which his later
  example uses (``test_squared_error_*``);
* cross entropy (``test_cross_entropy_*``): the loss lacks its minus sign;
  ``p`` and ``phat`` are normalized ``randn`` draws, so they have negative
  entries and ``log(phat)`` is NaN; ``einsum("bi,bi->b")`` has shape (B,), not
  (B, 1); and ``einsum("i,bj->bij", ones(N), p / phat)`` is (B, N, N), not the
  (B, 1, N) of its comment;
* the "deep linear" section calls ``W_L ... W_1 x`` affine; without biases it is
  linear (the affine and nonlinear sections are empty; tests added below).
"""

from __future__ import annotations

import numpy as np
import pytest

import jacobians as jac
from jacobians.testing import expand_batch, numerical_jacobian

from notes_helpers import rng

OPS = jac.ops


def bmm(*jacs: np.ndarray) -> np.ndarray:
    """Chain per-sample Jacobians (B, O, M) (B, M, I) ... -> (B, O, I)."""
    out = jacs[0]
    for Jk in jacs[1:]:
        out = np.einsum("boi,bij->boj", out, Jk)
    return out


# ------------------------------------------------------------------ the shape rule


def test_shape_rule_output_axes_then_input_axes():
    r = rng(200)
    X = r.normal(size=(2, 3))            # input (A, B)
    Y = r.normal(size=(3, 4))
    out, (dout_dX, _) = OPS.matmul(X, Y, batch=False)
    assert out.shape == (2, 4) and dout_dX.shape == out.shape + X.shape
    np.testing.assert_allclose(dout_dX, numerical_jacobian(lambda V: V @ Y, X), rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------------ squared error


@pytest.mark.parametrize("D", [1, 10])
def test_squared_error_wrt_prediction(D):
    B = 256                                          # his sizes
    r = rng(201 + D)
    y, yhat = r.normal(size=(B, D)), r.normal(size=(B, D))
    # his loss line squares elementwise: (B, D), while his comment says (B, 1) (right only for D = 1).
    # His Jacobian (B, 1, D) belongs to the per-sample scalar 0.5 ||y - yhat||^2, the norm form his
    # "scalar w.r.t. matrix" example uses; that is the toolkit's mse, (B,) with Jacobian (B, D).
    elementwise = 0.5 * np.square(y - yhat)
    assert elementwise.shape == (B, D)
    loss, (dloss_dyhat, dloss_dy) = OPS.mse(yhat, y)
    assert loss.shape == (B,) and dloss_dyhat.shape == (B, D)
    np.testing.assert_allclose(loss, elementwise.sum(axis=1), rtol=1e-13)   # 0.5 ||y - yhat||^2
    # his (B, 1) loss and (B, 1, D) Jacobian are ours with a singleton output axis put back
    his_jacobian = -np.einsum("i,bj->bij", np.ones(1), y - yhat)
    assert his_jacobian.shape == (B, 1, D)
    np.testing.assert_allclose(dloss_dyhat.reshape(B, 1, D), his_jacobian, rtol=1e-14)
    np.testing.assert_allclose(loss.reshape(B, 1),
                               0.5 * np.square(np.linalg.norm(y - yhat, axis=1, keepdims=True)), rtol=1e-12)
    np.testing.assert_allclose(dloss_dy, -dloss_dyhat, rtol=1e-14)
    # finite differences on a few samples, full (B, B, D) against the per-sample form
    b = 5
    numeric = numerical_jacobian(lambda v: 0.5 * np.sum((y[:b] - v) ** 2, axis=1), yhat[:b])
    np.testing.assert_allclose(expand_batch(dloss_dyhat[:b], 1), numeric, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ linear layer w.r.t. W


def test_linear_layer_wrt_weights_matches_identity_times_input():
    B, out_dim, in_dim = 256, 10, 20                 # his sizes
    r = rng(210)
    W, x = r.normal(size=(out_dim, in_dim)), r.normal(size=(B, in_dim))
    yhat, (_, dyhat_dW) = OPS.linear(x, W)
    np.testing.assert_allclose(yhat, np.einsum("ij,bj->bi", W, x), rtol=1e-12)
    assert dyhat_dW.shape == (B, out_dim, out_dim, in_dim)
    np.testing.assert_array_equal(dyhat_dW, np.einsum("ij,bk->bijk", np.eye(out_dim), x))
    # the same tensor from matmul on one sample (batch=False): (out, out, in)
    _, (dW_one, _) = OPS.matmul(W, x[7], batch=False)
    np.testing.assert_array_equal(dW_one, dyhat_dW[7])


def test_scalar_loss_wrt_weights_his_contraction_and_the_toolkit_chain_agree():
    B, out_dim, in_dim = 256, 10, 20
    r = rng(211)
    y, W, x = r.normal(size=(B, out_dim)), r.normal(size=(out_dim, in_dim)), r.normal(size=(B, in_dim))
    # his construction: per-sample 0.5 ||y - W x||^2, Jacobians (B, 1, out) and (B, out, out, in),
    # contracted with "bij,bjjk->bjk" (reading the block diagonal of dyhat/dW) then averaged
    diff = y - np.einsum("rc,bc->br", W, x)
    his_dloss_dyhat = -np.einsum("i,bj->bij", np.ones(1), diff)
    his_dyhat_dW = np.einsum("ij,bk->bijk", np.eye(out_dim), x)
    his = np.mean(np.einsum("bij,bjjk->bjk", his_dloss_dyhat, his_dyhat_dW), axis=0, keepdims=True)
    assert his.shape == (1, out_dim, in_dim)

    # the toolkit: linear -> mse per sample -> mean over the batch, chained explicitly
    yhat, (_, dyhat_dW) = OPS.linear(x, W)
    losses, (dloss_dyhat, _) = OPS.mse(yhat, y)
    total, (dtotal_dlosses,) = OPS.mean(losses)
    assert dyhat_dW.shape == (B, out_dim, out_dim, in_dim) and dloss_dyhat.shape == (B, out_dim)
    assert dtotal_dlosses.shape == (B,)              # a batch mean: (*O, B, *I) with O = I = ()
    per_sample = np.einsum("bo,bopq->bpq", dloss_dyhat, dyhat_dW)     # full contraction over o
    grad = np.tensordot(dtotal_dlosses, per_sample, axes=1)
    np.testing.assert_allclose(grad, his[0], rtol=1e-12, atol=1e-14)
    # his diagonal shortcut is exact here because dyhat_i/dW_jk vanishes for i != j
    off_diagonal = dyhat_dW * (1 - np.eye(out_dim))[None, :, :, None]
    assert not off_diagonal.any()
    # and it is the gradient of the mean loss
    numeric = numerical_jacobian(lambda V: np.mean(0.5 * np.sum((y - x @ V.T) ** 2, axis=1)), W)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ sigmoid and softmax


def test_sigmoid_jacobian_is_derivative_times_identity():
    B, D = 256, 10
    h = rng(220).normal(size=(B, D))
    a, (da_dh,) = OPS.sigmoid(h)
    s = 1 / (1 + np.exp(-h))
    np.testing.assert_allclose(a, s, rtol=1e-13)
    assert da_dh.shape == (B, D, D)
    np.testing.assert_allclose(da_dh, np.einsum("bi,ij->bij", s * (1 - s), np.eye(D)), rtol=1e-12, atol=1e-16)
    numeric = numerical_jacobian(lambda v: 1 / (1 + np.exp(-v)), h[:3])
    np.testing.assert_allclose(expand_batch(da_dh[:3], 2), numeric, rtol=1e-6, atol=1e-9)


def test_softmax_jacobian_is_diag_q_minus_q_q_transpose():
    B, D = 256, 10
    v = rng(221).normal(size=(B, D))
    q, (dq_dv,) = OPS.softmax(v)
    e = np.exp(v)
    q_ref = e / e.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(q, q_ref, rtol=1e-13)
    assert dq_dv.shape == (B, D, D)
    his = np.einsum("bi,ij->bij", q_ref, np.eye(D)) - np.einsum("bi,bj->bij", q_ref, q_ref)
    np.testing.assert_allclose(dq_dv, his, rtol=1e-11, atol=1e-15)
    numeric = numerical_jacobian(lambda u: np.exp(u) / np.exp(u).sum(axis=1, keepdims=True), v[:3])
    np.testing.assert_allclose(expand_batch(dq_dv[:3], 2), numeric, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ log-softmax and logsumexp (empty in the notes)


def test_log_softmax_jacobian_is_delta_ij_minus_q_j():
    B, D = 8, 6
    v = rng(230).normal(size=(B, D)) * 3
    ls, (J,) = OPS.log_softmax(v)
    q = np.exp(v) / np.exp(v).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(ls, np.log(q), rtol=1e-12)
    assert J.shape == (B, D, D)
    np.testing.assert_allclose(J, np.eye(D)[None] - q[:, None, :], rtol=1e-12, atol=1e-15)
    # the chain log o softmax gives the same (diag(1/q) times diag(q) - q q^T)
    _, (dq,) = OPS.softmax(v)
    _, (dlog,) = OPS.log(q)
    np.testing.assert_allclose(bmm(dlog, dq), J, rtol=1e-10, atol=1e-14)
    numeric = numerical_jacobian(lambda u: u - np.log(np.exp(u).sum(axis=1, keepdims=True)), v)
    np.testing.assert_allclose(expand_batch(J, 2), numeric, rtol=1e-6, atol=1e-9)


def test_logsumexp_jacobian_is_the_softmax():
    B, D = 8, 6
    v = rng(231).normal(size=(B, D)) * 3
    lse, (J,) = OPS.logsumexp(v)
    assert lse.shape == (B,) and J.shape == (B, D)
    np.testing.assert_allclose(lse, np.log(np.exp(v).sum(axis=1)), rtol=1e-13)
    np.testing.assert_allclose(J, np.exp(v) / np.exp(v).sum(axis=1, keepdims=True), rtol=1e-12)
    # stable far from the origin, where exp would overflow
    big = v + 800.0
    lse_big, (J_big,) = OPS.logsumexp(big)
    np.testing.assert_allclose(lse_big, lse + 800.0, rtol=1e-13)
    np.testing.assert_allclose(J_big, J, rtol=1e-10)
    numeric = numerical_jacobian(lambda u: np.log(np.exp(u).sum(axis=1)), v)
    np.testing.assert_allclose(expand_batch(J, 1), numeric, rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ cross entropy: what the notes' code does


def test_cross_entropy_the_notes_code_is_wrong():
    B, N = 256, 10
    r = rng(240)
    # his inputs: normalized standard-normal draws are not probabilities
    p = r.normal(size=(B, N))
    p = p / p.sum(axis=1, keepdims=True)
    phat = r.normal(size=(B, N))
    phat = phat / phat.sum(axis=1, keepdims=True)
    assert (p < 0).any() and (phat < 0).any()
    with np.errstate(invalid="ignore"):
        his_loss = np.einsum("bi,bi->b", p, np.log(phat))
    assert np.isnan(his_loss).any()                  # log of negative "probabilities"
    assert his_loss.shape == (B,)                    # not the (B, 1) of his comment
    his_jacobian = np.einsum("i,bj->bij", np.ones(N), p / phat)
    assert his_jacobian.shape == (B, N, N)           # not the (B, 1, N) of his comment
    assert his_jacobian.shape != (B, 1, N)
    # the toolkit refuses such a phat instead of returning NaN
    with pytest.raises(ValueError, match="positive"):
        OPS.cross_entropy(phat, p)


def test_cross_entropy_correct_result():
    B, N = 16, 10
    r = rng(241)
    p = r.dirichlet(np.ones(N), size=B)              # valid target distributions
    phat = r.dirichlet(np.ones(N), size=B)           # valid predictions (all entries > 0)
    loss, (dloss_dphat, dloss_dp) = OPS.cross_entropy(phat, p)
    assert loss.shape == (B,) and dloss_dphat.shape == (B, N)
    np.testing.assert_allclose(loss, -np.sum(p * np.log(phat), axis=1), rtol=1e-12)
    np.testing.assert_allclose(dloss_dphat, -p / phat, rtol=1e-12)
    np.testing.assert_allclose(dloss_dp, -np.log(phat), rtol=1e-12)
    assert (loss > 0).all()                          # a cross entropy is non-negative; his sum is its negative
    his_sign = np.einsum("bi,bi->b", p, np.log(phat))
    np.testing.assert_allclose(his_sign, -loss, rtol=1e-12)
    # his p / phat is the derivative of that sign-flipped sum, i.e. minus the true Jacobian
    # the (B, 1, N) he meant is ours with the singleton output axis; his einsum repeats rows instead
    his_jacobian = np.einsum("i,bj->bij", np.ones(N), p / phat)
    np.testing.assert_allclose(his_jacobian[:, :1, :], -dloss_dphat.reshape(B, 1, N), rtol=1e-12)
    numeric = numerical_jacobian(lambda v: -np.sum(p[:4] * np.log(v), axis=1), phat[:4])
    np.testing.assert_allclose(expand_batch(dloss_dphat[:4], 1), numeric, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ deep networks (headings only in the notes)


def _deep_weights(widths, seed):
    r = rng(seed)
    return [r.normal(size=(widths[i + 1], widths[i])) / np.sqrt(widths[i]) for i in range(len(widths) - 1)]


def test_deep_linear_network_jacobian_is_the_product_of_the_weights():
    widths = [5, 7, 3, 6, 4]                         # n_0 ... n_L
    Ws = _deep_weights(widths, 250)
    x = rng(251).normal(size=widths[0])
    h, J, acts = x, np.eye(widths[0]), [x]
    for W in Ws:
        h, (_, dh) = OPS.matmul(W, h, batch=False)
        J = dh @ J
        acts.append(h)
    product = np.linalg.multi_dot(Ws[::-1])          # W_L ... W_1
    assert J.shape == (widths[-1], widths[0])
    np.testing.assert_allclose(J, product, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(J, numerical_jacobian(lambda v: np.linalg.multi_dot(Ws[::-1] + [v]), x),
                               rtol=1e-7, atol=1e-10)
    # w.r.t. a middle weight W_k: dy/dW_k = (W_L ... W_{k+1}) (x) h_{k-1}, a 3-D tensor
    k = 2
    _, (dhk_dWk, _) = OPS.matmul(Ws[k], acts[k], batch=False)
    after = np.eye(widths[k + 1])                    # W_L ... W_{k+1}
    for W in Ws[k + 1:]:
        after = W @ after
    dy_dWk = np.tensordot(after, dhk_dWk, axes=1)
    assert dy_dWk.shape == (widths[-1],) + Ws[k].shape
    np.testing.assert_allclose(dy_dWk, np.einsum("ij,k->ijk", after, acts[k]), rtol=1e-12, atol=1e-14)

    def y_of(V):
        ws = list(Ws)
        ws[k] = V
        return np.linalg.multi_dot(ws[::-1] + [x])
    np.testing.assert_allclose(dy_dWk, numerical_jacobian(y_of, Ws[k]), rtol=1e-7, atol=1e-10)


def test_deep_linear_network_batched_per_sample_jacobians_are_all_the_product():
    widths = [4, 6, 5, 3]
    Ws = _deep_weights(widths, 252)
    X = rng(253).normal(size=(7, widths[0]))
    h, jacs = X, []
    for W in Ws:
        h, (dh, _) = OPS.linear(h, W)
        jacs.append(dh)
    J = bmm(*jacs[::-1])
    assert J.shape == (7, widths[-1], widths[0])
    np.testing.assert_allclose(J, np.broadcast_to(np.linalg.multi_dot(Ws[::-1]), J.shape), rtol=1e-12, atol=1e-14)


def test_deep_affine_and_nonlinear_networks():
    # affine: biases leave the input Jacobian unchanged; nonlinear: diag(f') between the weights
    widths = [4, 6, 5, 3]
    Ws = _deep_weights(widths, 254)
    r = rng(255)
    bs = [r.normal(size=n) for n in widths[1:]]
    X = r.normal(size=(5, widths[0]))
    h_aff, h_tanh, J_aff, J_tanh, expected_tanh = X, X, [], [], np.zeros((5, widths[-1], widths[0]))
    pre = []
    for W, b in zip(Ws, bs):
        h_aff, (d_aff, _, _) = OPS.linear(h_aff, W, b)
        J_aff.append(d_aff)
        z, (dz, _, _) = OPS.linear(h_tanh, W, b)
        h_tanh, (da,) = OPS.tanh(z)
        J_tanh += [dz, da]
        pre.append(z)
    np.testing.assert_allclose(bmm(*J_aff[::-1]), np.broadcast_to(np.linalg.multi_dot(Ws[::-1]), (5, 3, 4)),
                               rtol=1e-12, atol=1e-14)
    J = bmm(*J_tanh[::-1])
    for s in range(5):
        M = np.eye(widths[0])
        for W, z in zip(Ws, pre):
            M = np.diag(1 - np.tanh(z[s]) ** 2) @ W @ M
        expected_tanh[s] = M
    np.testing.assert_allclose(J, expected_tanh, rtol=1e-12, atol=1e-14)

    def net(V):
        for W, b in zip(Ws, bs):
            V = np.tanh(V @ W.T + b)
        return V
    np.testing.assert_allclose(expand_batch(J, 2), numerical_jacobian(net, X), rtol=1e-6, atol=1e-9)
