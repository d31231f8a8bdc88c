"""Normalizations and probabilities over the last axis (batch_norm: over the batch)."""

from __future__ import annotations

import numpy as np

from ..errors import fail
from ..labels import lead
from ._registry import _guard, _need, _real, defop, rule


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _logsumexp(x):
    m = x.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[..., 0]


@defop("x", data="x", core={"x": 1}, formula="dq_i/dx_j = q_i (delta_ij - q_j)")
def softmax(x):
    """Softmax over the last axis (stable): J[..., i, j] = q_i (delta_ij - q_j)."""
    _need("softmax", "x", x, 1, "the class axis", nonempty=True)
    q = _softmax(x)
    L = lead(x.ndim - 1)

    def dx():
        _guard("softmax", "x", x.shape + x.shape[-1:], q.dtype)
        return rule(L + "i", L + "j", (L + "ij", np.einsum("...i,ij->...ij", q, np.eye(q.shape[-1], dtype=q.dtype))
                                       - q[..., :, None] * q[..., None, :]))
    return q, (dx,)


@defop("x", data="x", core={"x": 1}, formula="dy_i/dx_j = delta_ij - softmax(x)_j")
def log_softmax(x):
    """log softmax over the last axis (stable): J[..., i, j] = delta_ij - q_j."""
    _need("log_softmax", "x", x, 1, "the class axis", nonempty=True)
    y = x - _logsumexp(x)[..., None]
    L = lead(x.ndim - 1)
    n = x.shape[-1]

    def dx():
        _guard("log_softmax", "x", x.shape + (n,), y.dtype)
        return rule(L + "i", L + "j", (L + "ij", np.eye(n, dtype=y.dtype) - np.exp(y)[..., None, :]))
    return y, (dx,)


@defop("x", data="x", core={"x": 1}, formula="dy/dx_j = softmax(x)_j")
def logsumexp(x):
    """log sum exp over the last axis (stable): (..., n) -> (...); J = softmax(x)."""
    _need("logsumexp", "x", x, 1, "the reduced axis", nonempty=True)
    L = lead(x.ndim - 1)
    return _logsumexp(x), (lambda: rule(L, L + "j", (L + "j", _softmax(x))),)


@defop("x gamma beta", data="x", core={"x": 1},
       formula="dy_i/dx_j = gamma_i (delta_ij - 1/n - xhat_i xhat_j / n) / sigma, dy/dgamma = delta xhat, "
               "dy/dbeta = delta")
def layer_norm(x, gamma=None, beta=None, eps=1e-5):
    """Normalize over the last axis, then ``gamma * xhat + beta``; gamma, beta (D,) optional."""
    _need("layer_norm", "x", x, 1, "the normalized axis", nonempty=True)
    eps = _real("layer_norm", "eps", eps)
    n = x.shape[-1]
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p is not None and p.shape != (n,):
            fail("layer_norm", f"argument {name}: expected shape ({n},) to match x {x.shape}; got {p.shape}")
    sigma = np.sqrt(x.var(axis=-1, keepdims=True) + eps)
    xhat = (x - x.mean(axis=-1, keepdims=True)) / sigma
    g = np.ones(n, dtype=x.dtype) if gamma is None else gamma
    y = g * xhat + (0 if beta is None else beta)
    L = lead(x.ndim - 1)

    def dx():  # d xhat_i / d x_j = (delta_ij - 1/n - xhat_i xhat_j / n) / sigma, times gamma_i
        _guard("layer_norm", "x", x.shape + (n,), x.dtype)
        block = np.eye(n, dtype=x.dtype) - 1.0 / n - xhat[..., :, None] * xhat[..., None, :] / n
        return rule(L + "i", L + "j", (L + "ij", g[:, None] * block / sigma[..., None]))
    return y, (dx, lambda: rule(L + "i", "i", (L + "i", xhat)), lambda: rule(L + "i", "i"))


@defop("x gamma beta", data="x", core={"x": 1},
       formula="dy[b,f]/dx[c,f'] = delta_ff' gamma_f (delta_bc - 1/B - xhat_bf xhat_cf / B) / sigma_f, "
               "dy/dgamma = delta xhat, dy/dbeta = delta")
def batch_norm(x, gamma=None, beta=None, eps=1e-5):
    """Training-mode batch norm: statistics over axis 0, so samples interact: J is (B, *F, B, *F).

    ``J[b, f, c, f'] = delta_ff' gamma_f (delta_bc - 1/B - xhat_bf xhat_cf / B) / sigma_f``.
    """
    _need("batch_norm", "x", x, 1, "the batch axis")
    if x.shape[0] == 0:
        fail("batch_norm", f"argument x needs at least one sample along axis 0 (the batch statistics); "
                           f"got shape {x.shape}")
    eps = _real("batch_norm", "eps", eps)
    B, F = x.shape[0], x.shape[1:]
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p is not None and p.shape != F:
            fail("batch_norm", f"argument {name}: expected shape {F} to match x {x.shape}; got {p.shape}")
    sigma = np.sqrt(x.var(axis=0) + eps)
    xhat = (x - x.mean(axis=0)) / sigma
    g = np.ones(F, dtype=x.dtype) if gamma is None else gamma
    y = g * xhat + (0 if beta is None else beta)
    f = lead(len(F))

    def dx():
        _guard("batch_norm", "x", (B, B) + F, x.dtype)
        k = np.eye(B, dtype=x.dtype).reshape((B, B) + (1,) * len(F)) - 1.0 / B - xhat[:, None] * xhat[None, :] / B
        return rule("b" + f, "c" + f, ("bc" + f, k * (g / sigma)))
    return y, (dx, lambda: rule("b" + f, f, ("b" + f, xhat)), lambda: rule("b" + f, f))
