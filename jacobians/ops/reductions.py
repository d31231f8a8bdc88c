"""Reductions over numpy-style ``axis`` arguments (the batch axis counts)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import fail
from ..labels import fresh, lead
from ._registry import _axes, defop, rule


def _reduce(op, x, axis, keepdims):
    axes = _axes(op, axis, x.ndim)
    L = lead(x.ndim)
    new = fresh()
    out = "".join((next(new) if keepdims else "") if k in axes else L[k] for k in range(x.ndim))
    return axes, out, L


@defop("x", data="x", formula="dy/dx = delta on the kept axes, ones on the summed axes")
def sum(x, axis=None, keepdims=False):
    """Sum over ``axis`` (numpy's meaning, the batch axis counts; None: all)."""
    axes, out, L = _reduce("sum", x, axis, keepdims)
    return x.sum(axis=axes, keepdims=keepdims), (lambda: rule(out, L),)


@defop("x", data="x", formula="dy/dx = delta on the kept axes, 1/n on the averaged axes")
def mean(x, axis=None, keepdims=False):
    """Mean over ``axis`` (numpy's meaning, the batch axis counts; None: all)."""
    axes, out, L = _reduce("mean", x, axis, keepdims)
    n = math.prod(x.shape[k] for k in axes)
    if n == 0:
        fail("mean", f"mean over an empty axis of shape {x.shape}")
    scale = np.array(1.0 / n, dtype=x.dtype)
    return x.mean(axis=axes, keepdims=keepdims), (lambda: rule(out, L, ("", scale)),)
