"""The array seam: where the executor's contractions run (numpy by default; torch, jax, cupy lazily).

A backend is one short module of the same few functions (``asarray``/``to_numpy``;
``empty``/``zeros``/``ones``/``eye``; ``matmul``, ``multiply``, ``einsum`` through
opt_einsum's ``backend=``; ``transpose``/``reshape``/``sum``; ``write_diagonal`` for a
delta's diagonal; ``gather``/``scatter_add``/``add_at`` for index maps; ``device_of`` and
``device_memory`` for the memory limit).  :func:`get_backend` imports one by name, on
first use; nothing outside this package imports torch, jax or cupy.

What runs where (the honest scope of the seam): the traced function's values and every
op's Jacobian factors are computed by the ops with numpy **on the host**; the inputs of
another backend are converted with its ``to_numpy`` where the call is traced, and each
link's factors are moved to the backend once per call.  The **contractions** of the plan
(its einsum networks as batched GEMMs and broadcast products, the gathers and
scatter-adds of index maps, the diagonals deltas leave, the result buffers) run on the
backend, and the Jacobians come back as that backend's arrays.

>>> from jacobians.backends import get_backend, infer_backend
>>> import numpy as np
>>> infer_backend(np.ones(2), 3.0)
'numpy'
>>> get_backend("numpy").matmul(np.eye(2), np.ones((2, 1))).shape
(2, 1)
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["NAMES", "get_backend", "infer_backend", "backend_of"]

NAMES = ("numpy", "torch", "jax", "cupy")
_ROOTS = {"torch": "torch", "jax": "jax", "jaxlib": "jax", "cupy": "cupy", "cupyx": "cupy"}


def get_backend(name: str) -> ModuleType:
    """The backend module called ``name`` (imported on first use)."""
    module = _loaded.get(name)
    if module is not None:
        return module
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; valid options are {', '.join(map(repr, NAMES))}")
    try:
        module = _loaded[name] = importlib.import_module(f"{__name__}.{name}")
    except ImportError as e:
        raise ImportError(f"backend {name!r} needs the package {name!r}, which cannot be imported ({e})") from None
    return module


_loaded: dict[str, ModuleType] = {}


def backend_of(x) -> str:
    """The backend an array belongs to, by its type's package (torch, jax, cupy), else ``'numpy'``.

    Nothing is imported: a torch tensor can exist only if torch is already loaded."""
    t = type(x)
    name = _by_type.get(t)
    if name is None:
        name = _by_type[t] = _ROOTS.get(t.__module__.partition(".")[0], "numpy")
    return name


_by_type: dict[type, str] = {}


def infer_backend(*arrays) -> str:
    """The backend of the arrays among ``arrays`` (numpy when none belongs to another backend).

    Arrays of two different non-numpy backends in one call are refused."""
    found = {backend_of(a) for a in arrays} - {"numpy"}
    if len(found) > 1:
        raise ValueError(f"arrays of several backends in one call ({', '.join(sorted(found))}); "
                         f"convert them to one, or pass backend=... explicitly")
    return found.pop() if found else "numpy"
