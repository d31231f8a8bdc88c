"""Shape ops: reshape and transpose (deltas, and one identity block where axes really move)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import fail
from ..labels import core, lead
from ._registry import _axes, _guard, defop, rule


@defop("x", data="x",
       formula="dy/dx = the identity reshaped to y.shape + x.shape (deltas on the leading axes both share)")
def reshape(x, shape):
    """numpy's reshape (the full shape, batch axis included); the leading axes both shapes share stay tied."""
    try:
        y = x.reshape(shape)
    except (ValueError, TypeError) as e:
        fail("reshape", f"cannot reshape x of shape {x.shape} to {shape}: {e}")
    k = 0
    # a zero-size axis stops the tie: behind it, the sizes of the rest need not agree
    while k < min(x.ndim, y.ndim) and x.shape[k] == y.shape[k] != 0:
        k += 1
    if x.shape[k:] == y.shape[k:]:  # nothing moves
        L = lead(x.ndim)
        return y, (lambda: rule(L, L),)
    m, n = y.ndim - k, x.ndim - k
    L, rest_out, rest_in = lead(k), core(m), core(n, start=max(m, 13))

    def block():
        _guard("reshape", "x", y.shape[k:] + x.shape[k:], x.dtype)
        return np.eye(math.prod(x.shape[k:]), dtype=x.dtype).reshape(y.shape[k:] + x.shape[k:])
    return y, (lambda: rule(L + rest_out, L + rest_in, (rest_out + rest_in, block())),)


@defop("x", data="x", formula="dy/dx = deltas between y's axis k and x's axis axes[k]")
def transpose(x, axes=None):
    """numpy's transpose: a permutation of axes, all deltas."""
    if axes is None:
        perm = tuple(reversed(range(x.ndim)))
    else:
        axes = (axes,) if isinstance(axes, (int, np.integer)) else tuple(axes)
        _axes("transpose", axes, x.ndim)  # integers in range, no repeats
        perm = tuple(a % x.ndim for a in axes)
    if sorted(perm) != list(range(x.ndim)):
        fail("transpose", f"axes {axes} is not a permutation of the {x.ndim} axes of x {x.shape}")
    L = lead(x.ndim)
    return x.transpose(perm), (lambda: rule("".join(L[p] for p in perm), L),)
