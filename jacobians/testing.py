"""The one numerical checker: analytic Jacobians against central differences in float64.

    >>> import numpy as np, jacobians as jac
    >>> from jacobians.testing import check_jacobian
    >>> x = np.random.default_rng(0).normal(size=(3, 4))
    >>> report = check_jacobian(jac.ops.softmax, x)       # raises AssertionError on a mismatch
    >>> report[0].max_abs_error < 1e-7
    True

Small problems compare the whole tensor; larger ones compare ``J u`` with the
directional difference along random directions ``u`` (which covers ``<v, J u>``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import ops as _ops

__all__ = ["check_jacobian", "check_row", "numerical_jacobian", "expand_batch", "CheckResult"]


@dataclass
class CheckResult:
    op: str
    argument: str
    shape: tuple[int, ...]
    mode: str                 # "full" or "directions"
    max_abs_error: float
    max_rel_error: float

    def __str__(self) -> str:
        return (f"{self.op} d/d{self.argument} {self.shape}: {self.mode}, "
                f"max abs err {self.max_abs_error:.2e}, rel {self.max_rel_error:.2e}")


def numerical_jacobian(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of ``f`` at ``x`` in float64: shape ``f(x).shape + x.shape``."""
    x = np.array(x, dtype=np.float64)
    y0 = np.asarray(f(x))
    J = np.empty((y0.size, x.size))
    flat = x.reshape(-1)
    for k in range(x.size):
        h = eps * max(1.0, abs(flat[k]))
        old = flat[k]
        flat[k] = old + h
        up = np.array(f(x), dtype=np.float64).reshape(-1)  # a copy: f may return a view of x
        flat[k] = old - h
        down = np.array(f(x), dtype=np.float64).reshape(-1)
        flat[k] = old
        J[:, k] = (up - down) / (2 * h)
    return J.reshape(y0.shape + x.shape)


def directional_derivative(f: Callable, x: np.ndarray, u: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    h = eps * max(1.0, float(np.abs(x).max(initial=0.0)))
    return (np.array(f(x + h * u)) - np.array(f(x - h * u))) / (2 * h)


def expand_batch(J: np.ndarray, out_ndim: int) -> np.ndarray:
    """Per-sample ``(B, *O, *I)`` to the full ``(B, *O, B, *I)`` (zeros off the sample diagonal)."""
    B = J.shape[0]
    O, I = J.shape[1:out_ndim], J.shape[out_ndim:]
    full = np.zeros((B,) + O + (B,) + I, dtype=J.dtype)
    for b in range(B):
        full[(b,) + (slice(None),) * len(O) + (b,)] = J[b]
    return full


def check_jacobian(op: _ops.Op | str, *args, batch: bool = True, rtol: float = 1e-5, atol: float = 1e-7,
                   eps: float = 1e-6, full_limit: int = 40_000, directions: int = 4, seed: int = 0,
                   **params) -> list[CheckResult]:
    """Check every Jacobian of ``op`` at ``args`` against central differences (float64).

    Also checks the shape rule: each Jacobian is ``out.shape + arg.shape``, or the
    per-sample ``out.shape + arg.shape[1:]`` when ``batch`` and samples are independent.
    Raises ``AssertionError`` naming the op, the argument, the shapes, analytic vs numeric.
    """
    op = _ops.get(op) if isinstance(op, str) else op
    args64 = [np.asarray(a, dtype=np.float64) if _is_float(a) else a for a in args]
    value, jacs = op(*args64, batch=batch, **params)
    arrays, static = op.bind(args64, params)
    names = [n for n in op.diff_arrays if arrays.get(n) is not None]
    assert len(jacs) == len(names), f"{op.name}: {len(jacs)} Jacobians for arguments {names}"
    rng = np.random.default_rng(seed)
    results = []
    for name, J in zip(names, jacs):
        x = arrays[name]
        full_shape = value.shape + x.shape
        sample_shape = value.shape + x.shape[1:]
        if J.shape == full_shape:
            full = J
        elif batch and value.ndim and x.ndim and value.shape[0] == x.shape[0] and J.shape == sample_shape:
            full = None  # per-sample: compare through expand_batch below
        else:
            raise AssertionError(
                f"{op.name}: shape rule violated for d/d{name}: output {value.shape}, argument {x.shape}, "
                f"expected {full_shape}" + (f" or per-sample {sample_shape}" if batch else "") + f", got {J.shape}")

        def f(xv, name=name):
            a = dict(arrays)
            a[name] = xv
            return op.evaluate(a, static)[0]

        size = value.size * x.size
        if size <= full_limit:
            numeric = numerical_jacobian(f, x, eps)
            analytic = expand_batch(J, value.ndim) if full is None else full
            results.append(_compare(op.name, name, J.shape, "full", analytic, numeric, rtol, atol, args64))
        else:
            worst = None
            for _ in range(directions):
                u = rng.normal(size=x.shape)
                numeric = directional_derivative(f, x, u, eps)
                if full is None:
                    B = x.shape[0]
                    Jf = J.reshape(B, value.size // B, x.size // B)
                    analytic = np.einsum("boi,bi->bo", Jf, u.reshape(B, -1)).reshape(value.shape)
                else:
                    analytic = np.tensordot(J, u, axes=x.ndim)
                r = _compare(op.name, name, J.shape, "directions", analytic, numeric, rtol, atol, args64)
                worst = r if worst is None or r.max_abs_error > worst.max_abs_error else worst
            results.append(worst)
    return results


def _compare(op, name, shape, mode, analytic, numeric, rtol, atol, args) -> CheckResult:
    analytic = np.asarray(analytic, dtype=np.float64)
    err = np.abs(analytic - numeric)
    scale = max(1.0, float(np.abs(numeric).max(initial=0.0)))
    tol = atol * scale + rtol * np.abs(numeric)
    abs_err = float(err.max(initial=0.0))
    rel_err = abs_err / scale
    if not np.all(err <= tol):
        k = np.unravel_index(int(np.argmax(err - tol)), err.shape)
        shapes = ", ".join(str(np.shape(a)) for a in args)
        raise AssertionError(
            f"{op}: Jacobian w.r.t. {name} (shape {shape}) disagrees with central differences ({mode}) "
            f"for arguments of shapes {shapes}: at index {tuple(int(i) for i in k)} analytic "
            f"{analytic[k]:.10g} vs numeric {numeric[k]:.10g}; max abs error {abs_err:.3g}")
    return CheckResult(op, name, tuple(shape), mode, abs_err, rel_err)


def _is_float(a) -> bool:
    return isinstance(a, (float, np.floating)) or (isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)) \
        or (isinstance(a, (list, tuple)) and np.issubdtype(np.asarray(a).dtype, np.floating))


def check_row(op: _ops.Op | str, *args, rtol: float = 1e-6, atol: float = 1e-6, eps: float = 1e-5,
              **params) -> CheckResult:
    """Check an elementwise op's second-derivative column against central differences of its first (float64).

    Unary rows: ``f''(x)`` against ``(f'(x + h) - f'(x - h)) / 2h``; binary rows: ``(f_aa, f_ab, f_bb)``
    against the differences of ``(f_a, f_b)`` in a and in b (``f_ab`` both ways).  ``args`` are the
    points (arrays of one shape).  Raises ``AssertionError`` naming the op, the entry and the point.
    """
    op = _ops.get(op) if isinstance(op, str) else op
    row = op.row
    if row is None:
        raise AssertionError(f"{op.name}: not an elementwise op (no row)")
    pts = [np.asarray(a, dtype=np.float64) for a in args]
    shape = np.broadcast_shapes(*[p.shape for p in pts])

    def column(d, *p):  # a derivative entry (or tuple of entries) at the points, as float64 arrays
        v = (d(*p, row.f(*p, **params), **params) if callable(d) else d)
        v = v if row.arity == 2 else (v,)
        return [np.broadcast_to(np.asarray(t, dtype=np.float64), shape) for t in v]

    second = column(row.d2, *pts)
    if row.arity == 1:
        (x,) = pts
        pairs = [("f''", second[0], (column(row.d1, x + eps)[0] - column(row.d1, x - eps)[0]) / (2 * eps))]
    else:
        a, b = pts
        da = [(u - d) / (2 * eps) for u, d in zip(column(row.d1, a + eps, b), column(row.d1, a - eps, b))]
        db = [(u - d) / (2 * eps) for u, d in zip(column(row.d1, a, b + eps), column(row.d1, a, b - eps))]
        pairs = [("f_aa", second[0], da[0]), ("f_ab", second[1], da[1]), ("f_ba", second[1], db[0]),
                 ("f_bb", second[2], db[1])]
    worst = None
    for what, analytic, numeric in pairs:
        r = _compare(op.name, what, shape, "second derivative", analytic, numeric, rtol, atol, pts)
        worst = r if worst is None or r.max_abs_error > worst.max_abs_error else worst
    return worst
