"""The Matrix Cookbook, section 2 (derivatives): every identity with det, inv, trace and norms.

Each row is a function written with ``jac.fn`` (or numpy's names on traced values), its Jacobian
w.r.t. ``X`` through ``jac.jacobian`` in every order, and the Cookbook's closed form (equation
numbers of the 2012 edition).  Scalar functions give the gradient in X's shape (numerator layout:
``d f / d X[i, j]``, which is the Cookbook's layout for scalar-by-matrix derivatives).
"""

from __future__ import annotations

import numpy as np
import pytest

import jacobians as jac

fn = jac.fn
ORDERS = ("forward", "reverse", "optimal")
n = 3
_r = np.random.default_rng(2012)
X0 = _r.normal(size=(n, n)) + 3 * np.eye(n)          # well conditioned: every det and inverse is tame
A0, B0, C0, D0 = (_r.normal(size=(n, n)) for _ in range(4))
a0, b0, c0 = (_r.normal(size=n) for _ in range(3))
inv, det = np.linalg.inv, np.linalg.det


def _tr(M):
    return fn.trace(M)


# (name, f(X, A, B, C, D, a, b, c), closed form of d f / d X as a function of the same numpy arrays)
IDENTITIES = [
    # determinants
    ("49 d det(X) = det(X) X^-T", lambda X, A, B, C, D, a, b, c: fn.det(X),
     lambda X, A, B, C, D, a, b, c: det(X) * inv(X).T),
    ("49 via numpy names", lambda X, A, B, C, D, a, b, c: np.linalg.det(X),
     lambda X, A, B, C, D, a, b, c: det(X) * inv(X).T),
    ("51 d det(AXB) = det(AXB) X^-T", lambda X, A, B, C, D, a, b, c: fn.det(A @ X @ B),
     lambda X, A, B, C, D, a, b, c: det(A @ X @ B) * inv(X).T),
    ("52 d det(X^T A X) = 2 det(X^T A X) X^-T", lambda X, A, B, C, D, a, b, c: fn.det(X.T @ A @ X),
     lambda X, A, B, C, D, a, b, c: 2 * det(X.T @ A @ X) * inv(X).T),
    ("55 d log det(X^T X) = 2 X^-T (square X)", lambda X, A, B, C, D, a, b, c: fn.slogdet(X.T @ X),
     lambda X, A, B, C, D, a, b, c: 2 * inv(X).T),
    ("56 d det(X^3) = 3 det(X^3) X^-T", lambda X, A, B, C, D, a, b, c: fn.det(X @ X @ X),
     lambda X, A, B, C, D, a, b, c: 3 * det(X @ X @ X) * inv(X).T),
    ("57 d log|det X| = X^-T", lambda X, A, B, C, D, a, b, c: fn.slogdet(X),
     lambda X, A, B, C, D, a, b, c: inv(X).T),
    ("d det(X^-1) = -det(X^-1) X^-T", lambda X, A, B, C, D, a, b, c: fn.det(fn.inv(X)),
     lambda X, A, B, C, D, a, b, c: -det(inv(X)) * inv(X).T),
    # inverses
    ("61 d a^T X^-1 b = -X^-T a b^T X^-T", lambda X, A, B, C, D, a, b, c: a @ fn.inv(X) @ b,
     lambda X, A, B, C, D, a, b, c: -inv(X).T @ np.outer(a, b) @ inv(X).T),
    ("61 via solve: a^T solve(X, b)", lambda X, A, B, C, D, a, b, c: fn.dot(a, fn.solve(X, b)),
     lambda X, A, B, C, D, a, b, c: -inv(X).T @ np.outer(a, b) @ inv(X).T),
    ("63 d tr(A X^-1 B) = -(X^-1 B A X^-1)^T", lambda X, A, B, C, D, a, b, c: _tr(A @ np.linalg.inv(X) @ B),
     lambda X, A, B, C, D, a, b, c: -(inv(X) @ B @ A @ inv(X)).T),
    ("124 d tr(X^-1 A) = -(X^-1 A X^-1)^T", lambda X, A, B, C, D, a, b, c: _tr(fn.inv(X) @ A),
     lambda X, A, B, C, D, a, b, c: -(inv(X) @ A @ inv(X)).T),
    # traces
    ("100 d tr(X) = I", lambda X, A, B, C, D, a, b, c: np.trace(X),
     lambda X, A, B, C, D, a, b, c: np.eye(n)),
    ("101 d tr(XA) = A^T", lambda X, A, B, C, D, a, b, c: _tr(X @ A),
     lambda X, A, B, C, D, a, b, c: A.T),
    ("102 d tr(AXB) = A^T B^T", lambda X, A, B, C, D, a, b, c: _tr(A @ X @ B),
     lambda X, A, B, C, D, a, b, c: A.T @ B.T),
    ("103 d tr(A X^T B) = B A", lambda X, A, B, C, D, a, b, c: _tr(A @ X.T @ B),
     lambda X, A, B, C, D, a, b, c: B @ A),
    ("104 d tr(X^T A) = A", lambda X, A, B, C, D, a, b, c: _tr(X.T @ A),
     lambda X, A, B, C, D, a, b, c: A),
    ("106 d tr(X^2) = 2 X^T", lambda X, A, B, C, D, a, b, c: _tr(X @ X),
     lambda X, A, B, C, D, a, b, c: 2 * X.T),
    ("107 d tr(X^2 B) = (XB + BX)^T", lambda X, A, B, C, D, a, b, c: _tr(X @ X @ B),
     lambda X, A, B, C, D, a, b, c: (X @ B + B @ X).T),
    ("108 d tr(X^T B X) = B X + B^T X", lambda X, A, B, C, D, a, b, c: _tr(X.T @ B @ X),
     lambda X, A, B, C, D, a, b, c: B @ X + B.T @ X),
    ("110 d tr(X B X^T) = X B^T + X B", lambda X, A, B, C, D, a, b, c: _tr(X @ B @ X.T),
     lambda X, A, B, C, D, a, b, c: X @ B.T + X @ B),
    ("109 d tr(X kron X) = 2 tr(X) I", lambda X, A, B, C, D, a, b, c: _tr(fn.kron(X, X)),
     lambda X, A, B, C, D, a, b, c: 2 * np.trace(X) * np.eye(n)),
    ("112 d tr(X^3) = 3 (X^2)^T", lambda X, A, B, C, D, a, b, c: _tr(X @ X @ X),
     lambda X, A, B, C, D, a, b, c: 3 * (X @ X).T),
    ("116 d tr(B^T X^T C X B) = C^T X B B^T + C X B B^T", lambda X, A, B, C, D, a, b, c: _tr(B.T @ X.T @ C @ X @ B),
     lambda X, A, B, C, D, a, b, c: C.T @ X @ B @ B.T + C @ X @ B @ B.T),
    ("117 d tr(X B X^T C) = C X B + C^T X B^T", lambda X, A, B, C, D, a, b, c: _tr(X @ B @ X.T @ C),
     lambda X, A, B, C, D, a, b, c: C @ X @ B + C.T @ X @ B.T),
    ("trace as einsum: d einsum('ii', AX) = A^T", lambda X, A, B, C, D, a, b, c: fn.einsum("ij,ji", A, X),
     lambda X, A, B, C, D, a, b, c: A.T),
    # bilinear and quadratic forms
    ("70 d a^T X b = a b^T", lambda X, A, B, C, D, a, b, c: a @ X @ b,
     lambda X, A, B, C, D, a, b, c: np.outer(a, b)),
    ("71 d a^T X^T b = b a^T", lambda X, A, B, C, D, a, b, c: a @ X.T @ b,
     lambda X, A, B, C, D, a, b, c: np.outer(b, a)),
    ("77 d b^T X^T X c = X (b c^T + c b^T)", lambda X, A, B, C, D, a, b, c: b @ X.T @ X @ c,
     lambda X, A, B, C, D, a, b, c: X @ (np.outer(b, c) + np.outer(c, b))),
    ("81 d (Xb + c)^T D (Xb + c) = (D + D^T)(Xb + c) b^T",
     lambda X, A, B, C, D, a, b, c: (X @ b + c) @ D @ (X @ b + c),
     lambda X, A, B, C, D, a, b, c: np.outer((D + D.T) @ (X @ b + c), b)),
    # norms
    ("130 d ||X||_F^2 = 2 X", lambda X, A, B, C, D, a, b, c: fn.square(fn.norm(X)),
     lambda X, A, B, C, D, a, b, c: 2 * X),
    ("d ||X||_F = X / ||X||_F", lambda X, A, B, C, D, a, b, c: np.linalg.norm(X, "fro"),
     lambda X, A, B, C, D, a, b, c: X / np.linalg.norm(X)),
    ("d ||X||_F^2 = 2X via trace: tr(X^T X)", lambda X, A, B, C, D, a, b, c: _tr(X.T @ X),
     lambda X, A, B, C, D, a, b, c: 2 * X),
    ("129 d ||Xa - b||_2 = (Xa - b) a^T / ||Xa - b||", lambda X, A, B, C, D, a, b, c: fn.norm(X @ a - b),
     lambda X, A, B, C, D, a, b, c: np.outer(X @ a - b, a) / np.linalg.norm(X @ a - b)),
    ("d ||X||_nuc = U V^T", lambda X, A, B, C, D, a, b, c: fn.norm(X, ord="nuc"),
     lambda X, A, B, C, D, a, b, c: (lambda U, s, Vh: U @ Vh)(*np.linalg.svd(X))),
    ("d ||X||_2 = u_1 v_1^T", lambda X, A, B, C, D, a, b, c: fn.norm(X, ord=2),
     lambda X, A, B, C, D, a, b, c: (lambda U, s, Vh: np.outer(U[:, 0], Vh[0]))(*np.linalg.svd(X))),
]

# matrix-valued: the full Jacobian J[i, j, k, l] = d F[i, j] / d X[k, l]
MATRIX_IDENTITIES = [
    ("59 d X^-1 = -X^-1 dX X^-1", lambda X, A: fn.inv(X),
     lambda X, A: -np.einsum("ik,lj->ijkl", inv(X), inv(X))),
    ("60 d (A X^-1) = -A X^-1 dX X^-1", lambda X, A: A @ np.linalg.inv(X),
     lambda X, A: -np.einsum("ik,lj->ijkl", A @ inv(X), inv(X))),
    ("d solve(X, A) = -X^-1 dX X^-1 A", lambda X, A: fn.solve(X, A),
     lambda X, A: -np.einsum("ik,lj->ijkl", inv(X), inv(X) @ A)),
    ("d (X^-1)^T = -(X^-1 dX X^-1)^T", lambda X, A: fn.inv(X).T,
     lambda X, A: -np.einsum("jk,li->ijkl", inv(X), inv(X))),
]

ARGS = dict(X=X0, A=A0, B=B0, C=C0, D=D0, a=a0, b=b0, c=c0)


def test_there_are_at_least_twenty_identities():
    assert len(IDENTITIES) + len(MATRIX_IDENTITIES) >= 20


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name, f, closed", IDENTITIES, ids=[i[0] for i in IDENTITIES])
def test_scalar_identity(name, f, closed, order):
    got = jac.jacobian(f, wrt="X", order=order)(**ARGS)
    expected = closed(**ARGS)
    assert got.shape == (n, n)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10 * max(1.0, np.abs(expected).max()),
                               err_msg=name)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("name, f, closed", MATRIX_IDENTITIES, ids=[i[0] for i in MATRIX_IDENTITIES])
def test_matrix_identity(name, f, closed, order):
    got = jac.jacobian(f, wrt="X", order=order)(X0, A0)
    expected = closed(X0, A0)
    assert got.shape == (n, n, n, n)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("order", ORDERS)
def test_batched_identity_per_sample(order):
    """57 on a batch of matrices: d log|det X_b| / d X_b = X_b^-T, per sample (B, n, n)."""
    Xs = _r.normal(size=(4, n, n)) + 3 * np.eye(n)
    got = jac.jacobian(lambda X: fn.slogdet(X), wrt="X", batched="X", order=order)(Xs)
    np.testing.assert_allclose(got, np.swapaxes(inv(Xs), -1, -2), rtol=1e-12)
