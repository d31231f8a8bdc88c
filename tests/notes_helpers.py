"""Helpers shared by the lecture-notes tests."""

import numpy as np


def contract(outer: np.ndarray, inner: np.ndarray, k: int) -> np.ndarray:
    """Chain rule for explicit Jacobians: sum over the ``k`` axes of the intermediate variable."""
    return np.tensordot(outer, inner, axes=k)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)
