"""jax: jax.numpy arrays on the inputs' device.  Arrays are immutable: writes return new arrays.

float64 needs jax's 64-bit mode (``jax.config.update("jax_enable_x64", True)``); without it
a float64 Jacobian is refused rather than silently computed in float32."""

from __future__ import annotations

import builtins

import jax
import jax.numpy as jnp
import numpy as np
import opt_einsum as oe

name = "jax"


def _check(dtype) -> None:
    if dtype is not None and np.dtype(dtype).itemsize * (2 if np.dtype(dtype).kind != "c" else 1) > 8 \
            and not jax.config.jax_enable_x64:
        raise TypeError(f"backend 'jax': {np.dtype(dtype)} needs jax's 64-bit mode, which is off; call "
                        f"jax.config.update('jax_enable_x64', True) first, or pass float32 arrays")


def asarray(x, dtype=None, device=None):
    _check(dtype if dtype is not None else getattr(x, "dtype", None))
    a = jnp.asarray(x, dtype=dtype)
    return a if device is None else jax.device_put(a, device)


def to_numpy(x) -> np.ndarray:
    return np.asarray(x)


def device_of(x):
    devices = x.devices()
    return next(iter(devices)) if len(devices) == 1 else None


def device_memory(device) -> int | None:
    if device is None or device.platform == "cpu":
        return None
    stats = device.memory_stats() or {}
    return stats.get("bytes_limit")


def _put(a, device):
    return a if device is None else jax.device_put(a, device)


def empty(shape, dtype, device=None):
    return zeros(shape, dtype, device)


def zeros(shape, dtype, device=None):
    _check(dtype)
    return _put(jnp.zeros(tuple(shape), dtype=dtype), device)


def ones(shape, dtype, device=None):
    _check(dtype)
    return _put(jnp.ones(tuple(shape), dtype=dtype), device)


def eye(n, dtype, device=None):
    _check(dtype)
    return _put(jnp.eye(n, dtype=dtype), device)


def matmul(a, b):
    return jnp.matmul(a, b)


def multiply(a, b):
    return jnp.multiply(a, b)


def einsum(eq, *arrays):
    return oe.contract(eq, *arrays, backend="jax")


def transpose(a, perm):
    return jnp.transpose(a, tuple(perm))


def reshape(a, shape):
    return jnp.reshape(a, tuple(shape))


def sum(a, axes):
    return jnp.sum(a, axis=tuple(axes))


def copy(a):
    return a   # immutable: sharing is safe


def astype(a, dtype):
    _check(dtype)
    return a.astype(dtype)


def broadcast_to(a, shape):
    return jnp.broadcast_to(a, tuple(shape))


def set_at(target, key, value):
    return target.at[key].set(value)


def add_at(target, key, value):
    return target.at[key].add(value)


def write_diagonal(target, groups, src, add: bool):
    """No views in jax: the diagonal's flat positions as an index array, then one scatter."""
    shape = target.shape
    strides = [int(np.prod(shape[a + 1:])) for a in range(len(shape))]
    flat = np.zeros((), dtype=np.int64)
    for g in groups:
        step = builtins.sum(strides[a] for a in g)
        flat = flat[..., None] + np.arange(shape[g[0]]) * step
    values = jnp.broadcast_to(1 if src is None else src, flat.shape).astype(target.dtype)
    out = target.reshape(-1).at[flat.ravel()]
    out = out.add(values.ravel()) if add else out.set(values.ravel())
    return out.reshape(shape)


def gather(a, idx: np.ndarray, padded: bool):
    if padded:
        valid = idx >= 0
        return jnp.take_along_axis(a, jnp.asarray(np.where(valid, idx, 0)), axis=2) * jnp.asarray(valid, a.dtype)
    return jnp.take_along_axis(a, jnp.asarray(idx), axis=2)


def scatter_add(a, idx: np.ndarray, n: int, padded: bool, injective: bool):
    nk, nr, nl = a.shape
    if padded:
        valid = idx >= 0
        a = a * jnp.asarray(valid, a.dtype)[:, None, :]
        idx = np.where(valid, idx, 0)
    rows = (np.arange(nk)[:, None, None], np.arange(nr)[None, :, None], idx[:, None, :])
    return jnp.zeros((nk, nr, n), dtype=a.dtype).at[rows].add(a)
