"""Losses, per sample: each reduces the last axis."""

from __future__ import annotations

import numpy as np

from ..errors import as_float_array, fail
from ..labels import lead
from ._registry import _need, defop, rule
from .normalization import _logsumexp


def _same_shape(op, a_name, a, b_name, b):
    if a.shape != b.shape:
        fail(op, f"arguments {a_name} and {b_name} must have the same shape; got {a.shape} and {b.shape}")


@defop("yhat y", data="yhat y", core={"yhat": 1, "y": 1}, formula="dl/dyhat = yhat - y, dl/dy = y - yhat")
def mse(yhat, y):
    """Squared error per sample: ``0.5 ||y - yhat||^2`` over the last axis: (..., D) -> (...)."""
    _need("mse", "yhat", yhat, 1, "the feature axis")
    _same_shape("mse", "yhat", yhat, "y", y)
    r = yhat - y
    L = lead(yhat.ndim - 1)
    return 0.5 * np.einsum("...i,...i->...", r, r), (
        lambda: rule(L, L + "i", (L + "i", r)),
        lambda: rule(L, L + "i", (L + "i", -r)),
    )


@defop("phat p", data="phat p", core={"phat": 1, "p": 1}, formula="dl/dphat = -p / phat, dl/dp = -log phat")
def cross_entropy(phat, p):
    """Cross entropy per sample ``-sum p log phat`` over the last axis; phat > 0."""
    _need("cross_entropy", "phat", phat, 1, "the class axis")
    _same_shape("cross_entropy", "phat", phat, "p", p)
    if (phat <= 0).any():
        fail("cross_entropy", f"argument phat must be positive (predicted probabilities); got min {phat.min()}")
    L = lead(phat.ndim - 1)
    logp = np.log(phat)
    return -np.einsum("...i,...i->...", p, logp), (
        lambda: rule(L, L + "i", (L + "i", -p / phat)),
        lambda: rule(L, L + "i", (L + "i", -logp)),
    )


@defop("logits target", data="logits", core={"logits": 1}, nondiff="target",
       formula="dl/dlogits = softmax(logits) sum(target) - target (target not differentiated)")
def softmax_cross_entropy(logits, target):
    """Cross entropy of softmax(logits) against ``target`` over the last axis: (..., C) -> (...).

    ``target`` is integer class labels (...) or target probabilities / one-hot (..., C); it is
    not differentiated.  J w.r.t. the logits is ``softmax(logits) * sum(target) - target``
    (``yhat - y`` for one-hot targets, Clark identity 7).
    """
    _need("softmax_cross_entropy", "logits", logits, 1, "the class axis", nonempty=True)
    C = logits.shape[-1]
    if target is None:
        fail("softmax_cross_entropy", "argument target is required: integer class labels (...) or target "
                                      "probabilities (..., C); got None", TypeError)
    if np.issubdtype(target.dtype, np.integer):
        if target.shape != logits.shape[:-1]:
            fail("softmax_cross_entropy", f"integer labels must have shape {logits.shape[:-1]} "
                                          f"(logits {logits.shape} without the class axis); got {target.shape}")
        if target.size and (target.min() < 0 or target.max() >= C):
            fail("softmax_cross_entropy", f"labels must lie in [0, {C}); got min {target.min()}, max {target.max()}")
        y = np.eye(C, dtype=logits.dtype)[target]
    else:
        y = as_float_array("softmax_cross_entropy", "target", target)
        _same_shape("softmax_cross_entropy", "logits", logits, "target", y)
    L = lead(logits.ndim - 1)
    logq = logits - _logsumexp(logits)[..., None]
    loss = -np.einsum("...i,...i->...", y, logq)
    return loss, (
        lambda: rule(L, L + "i", (L + "i", np.exp(logq) * y.sum(axis=-1, keepdims=True) - y)),
        None,
    )
