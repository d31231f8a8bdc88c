"""The memory guard: sizes are estimated from shapes before anything is allocated.

The limit defaults to a quarter of physical memory (at most 8 GiB) and can be
set with the ``JACOBIANS_MAX_BYTES`` environment variable or
:func:`set_memory_limit`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

__all__ = ["JacobianTooLarge", "memory_limit", "set_memory_limit", "check_bytes", "format_bytes"]


class JacobianTooLarge(MemoryError):
    """An explicit Jacobian or an intermediate would exceed the memory limit."""


def _default_limit() -> int:
    env = os.environ.get("JACOBIANS_MAX_BYTES")
    if env:
        return int(float(env))
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 8 << 30
    return min(physical // 4, 8 << 30)


_limit = _default_limit()


def memory_limit() -> int:
    """The largest array (bytes) the toolkit will allocate."""
    return _limit


def set_memory_limit(nbytes: int) -> int:
    """Set the limit in bytes; returns the previous one."""
    global _limit
    if int(nbytes) <= 0:
        raise ValueError(f"set_memory_limit: nbytes must be positive; got {nbytes}")
    previous, _limit = _limit, int(nbytes)
    return previous


@contextmanager
def limited_memory(nbytes: int):
    """Temporarily set the memory limit (tests, benchmarks)."""
    previous = set_memory_limit(nbytes)
    try:
        yield
    finally:
        set_memory_limit(previous)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def check_bytes(nbytes: int, what: str, shape: tuple[int, ...] | None = None, hint: str = "") -> None:
    """Raise :class:`JacobianTooLarge` if ``nbytes`` exceeds the limit."""
    if nbytes <= _limit:
        return
    shape_txt = f" of shape {shape}" if shape is not None else ""
    hint = hint or "use a smaller batch or fewer outputs, or raise the limit with jacobians.set_memory_limit"
    raise JacobianTooLarge(
        f"{what}{shape_txt} needs {format_bytes(nbytes)}, over the memory limit of "
        f"{format_bytes(_limit)}; {hint}"
    )
