"""cupy: arrays on the current CUDA device, with the device's memory as the limit."""

from __future__ import annotations

import builtins

import cupy
import cupyx
import numpy as np
import opt_einsum as oe
from cupy.lib.stride_tricks import as_strided

name = "cupy"


def asarray(x, dtype=None, device=None):
    if device is None:
        return cupy.asarray(x, dtype=dtype)
    with cupy.cuda.Device(device):
        return cupy.asarray(x, dtype=dtype)


def to_numpy(x) -> np.ndarray:
    return cupy.asnumpy(x)


def device_of(x):
    return x.device.id


def device_memory(device) -> int | None:
    dev = cupy.cuda.runtime.getDevice() if device is None else device
    return int(cupy.cuda.runtime.getDeviceProperties(dev)["totalGlobalMem"])


def _on(device, make, *args, **kw):
    if device is None:
        return make(*args, **kw)
    with cupy.cuda.Device(device):
        return make(*args, **kw)


def empty(shape, dtype, device=None):
    return _on(device, cupy.empty, tuple(shape), dtype=dtype)


def zeros(shape, dtype, device=None):
    return _on(device, cupy.zeros, tuple(shape), dtype=dtype)


def ones(shape, dtype, device=None):
    return _on(device, cupy.ones, tuple(shape), dtype=dtype)


def eye(n, dtype, device=None):
    return _on(device, cupy.eye, n, dtype=dtype)


def matmul(a, b):
    return cupy.matmul(a, b)


def multiply(a, b):
    return cupy.multiply(a, b)


def einsum(eq, *arrays):
    return oe.contract(eq, *arrays, backend="cupy")


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
    return cupy.broadcast_to(a, shape)


def set_at(target, key, value):
    target[key] = value
    return target


def add_at(target, key, value):
    target[key] += value
    return target


def write_diagonal(target, groups, src, add: bool):
    strides = target.strides
    view = as_strided(target, tuple(target.shape[g[0]] for g in groups),
                      tuple(builtins.sum(strides[a] for a in g) for g in groups))
    src = 1 if src is None else src
    if add:
        view += src
    else:
        view[...] = src
    return target


def gather(a, idx: np.ndarray, padded: bool):
    if padded:
        valid = idx >= 0
        return cupy.take_along_axis(a, cupy.asarray(np.where(valid, idx, 0)), axis=2) * cupy.asarray(valid, a.dtype)
    return cupy.take_along_axis(a, cupy.asarray(idx), axis=2)


def scatter_add(a, idx: np.ndarray, n: int, padded: bool, injective: bool):
    nk, nr, nl = a.shape
    if padded:
        valid = idx >= 0
        a = a * cupy.asarray(valid, a.dtype)[:, None, :]
        idx = np.where(valid, idx, 0)
    result = cupy.zeros((nk, nr, n), dtype=a.dtype)
    rows = (cupy.arange(nk)[:, None, None], cupy.arange(nr)[None, :, None], cupy.asarray(idx)[:, None, :])
    cupyx.scatter_add(result, rows, cupy.broadcast_to(a, (nk, nr, nl)))
    return result
