"""torch: tensors on the inputs' device (CPU, or CUDA with the device's memory as the limit)."""

from __future__ import annotations

import builtins

import numpy as np
import opt_einsum as oe
import torch

name = "torch"


def _dtype(dtype):
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


def asarray(x, dtype=None, device=None):
    if isinstance(x, torch.Tensor):
        return x.to(device=device or x.device, dtype=None if dtype is None else _dtype(dtype))
    x = np.require(x, dtype, ["C", "W"])   # from_numpy needs positive strides and a writable buffer
    return torch.from_numpy(x).to(device or "cpu")


def to_numpy(x) -> np.ndarray:
    return x.detach().cpu().resolve_conj().resolve_neg().numpy()


def device_of(x):
    return x.device


def device_memory(device) -> int | None:
    if device is None or torch.device(device).type != "cuda":
        return None
    return torch.cuda.get_device_properties(torch.device(device)).total_memory


def empty(shape, dtype, device=None):
    return torch.empty(tuple(shape), dtype=_dtype(dtype), device=device)


def zeros(shape, dtype, device=None):
    return torch.zeros(tuple(shape), dtype=_dtype(dtype), device=device)


def ones(shape, dtype, device=None):
    return torch.ones(tuple(shape), dtype=_dtype(dtype), device=device)


def eye(n, dtype, device=None):
    return torch.eye(n, dtype=_dtype(dtype), device=device)


def matmul(a, b):
    return torch.matmul(a, b)


def multiply(a, b):
    return torch.mul(a, b)


def einsum(eq, *arrays):
    return oe.contract(eq, *arrays, backend="torch")


def transpose(a, perm):
    return a.permute(tuple(perm))


def reshape(a, shape):
    return a.reshape(tuple(shape))


def sum(a, axes):
    return a.sum(dim=tuple(axes))


def copy(a):
    return a.clone()


def astype(a, dtype):
    return a.to(_dtype(dtype))


def broadcast_to(a, shape):
    return a.expand(tuple(shape))


def set_at(target, key, value):
    target[key] = value
    return target


def add_at(target, key, value):
    target[key] += value
    return target


def write_diagonal(target, groups, src, add: bool):
    """A strided view (strides in elements, summed over the axes a delta ties), written in place."""
    stride = target.stride()
    view = target.as_strided([target.shape[g[0]] for g in groups],
                             [builtins.sum(stride[a] for a in g) for g in groups], target.storage_offset())
    if src is None:
        view.add_(1) if add else view.fill_(1)
    elif add:
        view.add_(src)
    else:
        view.copy_(src.expand(view.shape))
    return target


def _index(idx: np.ndarray, like):
    return torch.from_numpy(np.require(idx, np.int64, ["C", "W"])).to(like.device)


def gather(a, idx: np.ndarray, padded: bool):
    if padded:
        valid = idx >= 0
        return torch.take_along_dim(a, _index(np.where(valid, idx, 0), a), dim=2) * _index(valid, a).to(a.dtype)
    return torch.take_along_dim(a, _index(idx, a), dim=2)


def scatter_add(a, idx: np.ndarray, n: int, padded: bool, injective: bool):
    nk, nr, nl = a.shape
    if padded:
        valid = idx >= 0
        a = a * _index(valid, a).to(a.dtype)[:, None, :]
        idx = np.where(valid, idx, 0)
    result = torch.zeros((nk, nr, n), dtype=a.dtype, device=a.device)
    return result.scatter_add_(2, _index(idx, a)[:, None, :].expand(nk, nr, nl), a.expand(nk, nr, nl))

