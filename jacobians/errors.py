"""Input validation shared by every op: clear errors naming op, argument, expected, actual."""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["as_float_array", "as_int_array", "all_finite", "fail"]


def fail(op: str, message: str, exc: type[Exception] = ValueError) -> None:
    raise exc(f"{op}: {message}")


def all_finite(arr: np.ndarray) -> bool:
    """One scan for NaN/inf (a 0-d array without the ufunc machinery: scalar programs call this a lot)."""
    if arr.ndim == 0:
        return math.isfinite(arr.item())
    return bool(np.isfinite(arr).all())


def as_float_array(op: str, name: str, value, check_finite: bool = True) -> np.ndarray:
    """A floating-point ndarray, or a TypeError/ValueError that names ``op`` and ``name``."""
    if isinstance(value, np.ndarray):
        arr = value
    else:
        if isinstance(value, (bool, np.bool_)):
            fail(op, f"argument {name} must be a floating-point array; got a bool", TypeError)
        if isinstance(value, numbers.Real) and not isinstance(value, np.generic):
            value = float(value)  # a Python number is a constant, promoted like numpy does
        try:
            arr = np.asarray(value)
        except Exception as e:  # ragged lists and the like
            fail(op, f"argument {name} is not an array ({e})", TypeError)
    if arr.dtype.kind != "f":
        fail(op, f"argument {name} must be a floating-point array (float32 or float64); "
                 f"got dtype {arr.dtype} with shape {arr.shape}", TypeError)
    if check_finite and not all_finite(arr):
        fail(op, f"argument {name} contains NaN or inf (shape {arr.shape})")
    return arr


def as_int_array(op: str, name: str, value) -> np.ndarray:
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.integer):
        fail(op, f"argument {name} must be an integer array; got dtype {arr.dtype}", TypeError)
    return arr
