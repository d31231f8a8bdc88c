"""numpy: the default backend, on the host; the executor's strided-view tricks live here."""

from __future__ import annotations

import builtins

import numpy as np
import opt_einsum as oe
from numpy.lib.stride_tricks import as_strided

name = "numpy"


def asarray(x, dtype=None, device=None):
    return np.asarray(x, dtype=dtype)


def to_numpy(x) -> np.ndarray:
    return np.asarray(x)


def device_of(x):
    return None


def device_memory(device) -> int | None:
    """Bytes of memory of an accelerator; None for the host (its limit is :mod:`jacobians.limits`')."""
    return None


def empty(shape, dtype, device=None):
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype, device=None):
    return np.zeros(shape, dtype=dtype)


def ones(shape, dtype, device=None):
    return np.ones(shape, dtype=dtype)


def eye(n, dtype, device=None):
    return np.eye(n, dtype=dtype)


def matmul(a, b):
    return np.matmul(a, b)


def multiply(a, b):
    return np.multiply(a, b, order="C")   # C order: the next GEMM reads it contiguously


def einsum(eq, *arrays):
    return oe.contract(eq, *arrays)


def transpose(a, perm):
    return a.transpose(perm)


def reshape(a, shape):
    return a.reshape(shape)


def sum(a, axes):
    return a.sum(axis=axes)


def copy(a):
    return a.copy()


def astype(a, dtype):
    return a.astype(dtype)


def broadcast_to(a, shape):
    return np.broadcast_to(a, shape)


def set_at(target, key, value):
    """``target[key] = value`` (returns target; a backend without in-place writes returns a new array)."""
    target[key] = value
    return target


def add_at(target, key, value):
    """``target[key] += value`` for a basic index (slices: no position twice)."""
    target[key] += value
    return target


def write_diagonal(target, groups, src, add: bool):
    """``target[diagonal] (+)= src``: view axis ``k`` spans the target axes ``groups[k]`` (a delta
    ties them), so the diagonal is a strided view of stride sum; ``src`` broadcasts over it
    (None: ones)."""
    strides = target.strides
    shape = tuple(target.shape[g[0]] for g in groups)
    strides = tuple(builtins.sum(strides[a] for a in g) for g in groups)
    if target.flags.c_contiguous:   # a fresh block (the usual case): a view straight onto its buffer
        view = np.ndarray(shape, target.dtype, target, 0, strides)
    else:
        view = as_strided(target, shape, strides, writeable=True)
    src = 1 if src is None else src
    if add:
        view += src
    else:
        view[...] = src
    return target


def gather(a, idx: np.ndarray, padded: bool):
    """``out[s, r, l] = a[s, r, idx[s, 0, l]]`` (0 where ``idx`` is -1) for ``a`` (S, R, N), host ``idx`` (S, 1, L)."""
    if padded:
        valid = idx >= 0
        result = np.take_along_axis(a, np.where(valid, idx, 0), axis=2)
        result *= valid
        return result
    if idx.shape[0] == 1:
        return np.take(a, idx[0, 0], axis=2)
    return np.take_along_axis(a, idx, axis=2)


def scatter_add(a, idx: np.ndarray, n: int, padded: bool, injective: bool):
    """``out[k, r, idx[k, l]] += a[k, r, l]`` into zeros (K, R, n); host ``idx`` (K, L), -1 = dropped.

    ``injective``: no position appears twice in a row of ``idx`` (an assignment suffices)."""
    nk, nr = a.shape[:2]
    dtype = np.result_type(a.dtype, np.float32) if np.issubdtype(a.dtype, np.floating) else np.float64
    if padded:
        valid = idx >= 0
    if nk == 1 and injective:  # every position read at most once: plain assignment
        result = np.zeros((nk, nr, n), dtype=dtype)
        if padded:
            cols = valid[0]
            result[0][:, idx[0, cols]] = a[0][:, cols]
        else:
            result[0][:, idx[0]] = a[0]
        return result
    # bincount over (keep, rest, position) triples
    target = (np.arange(nk)[:, None, None] * nr + np.arange(nr)[None, :, None]) * n + idx[:, None, :]
    weights = np.broadcast_to(a, target.shape)
    if padded:
        sel = np.broadcast_to(valid[:, None, :], target.shape)
        target, weights = target[sel], weights[sel]
    sums = np.bincount(target.ravel(), weights=np.ravel(weights), minlength=nk * nr * n)
    return sums.astype(dtype, copy=False).reshape(nk, nr, n)

