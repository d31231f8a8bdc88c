"""The memory guard: sizes are estimated from shapes before anything is allocated.

The limit defaults to a quarter of physical memory (at most 8 GiB) and can be
set with the ``JACOBIANS_MAX_BYTES`` environment variable or
:func:`set_memory_limit`.

A limit is a positive whole number of bytes, given as an integer (``2_000_000``,
an integral float such as ``1e9``) or as a string: a number, optionally with a
decimal point and an exponent, then optionally a unit, spaces allowed, case
ignored::

    "4096"  "1e9"  "500MB"  "1.5 GB"  "2GiB"  "64 kib"

Units: ``B``; ``KB``, ``MB``, ``GB``, ``TB``, ``PB`` are powers of 1000;
``KiB``, ``MiB``, ``GiB``, ``TiB``, ``PiB`` are powers of 1024.  With a unit the
size is rounded down to whole bytes; in bytes it must be a whole number.
Anything else (``"abc"``, ``"1 G"``, ``"100k"``, nan, inf, 0, negatives, ``1.5``,
``True``, ``None``, more than 2**63 bytes) is refused with a one-line
``ValueError`` (``TypeError`` for a value that is neither a number nor a string)
naming ``set_memory_limit`` or ``JACOBIANS_MAX_BYTES`` and the value.

A bad ``JACOBIANS_MAX_BYTES`` never breaks ``import jacobians``: the error is
raised, naming the variable, by the first call that needs the limit (any op, any
plan, :func:`memory_limit`), so the command line reports it as its usual one-line
error.  :func:`set_memory_limit` replaces it (and returns the built-in default as
the previous limit).

The limit is per device.  On the host it is the limit above.  While a call runs on an
accelerator (an array backend's CUDA device, :mod:`jacobians.backends`), it is half of
that device's memory (an array and its operands must fit there together), or the limit
set with :func:`set_memory_limit` / ``JACOBIANS_MAX_BYTES`` where that is smaller:
:func:`device_limit` scopes it to the call (a context variable: other threads and calls
keep theirs).
"""

from __future__ import annotations

import math
import numbers
import os
import re
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal

__all__ = ["JacobianTooLarge", "memory_limit", "set_memory_limit", "limited_memory", "device_limit",
           "check_bytes", "format_bytes", "parse_bytes"]


class JacobianTooLarge(MemoryError):
    """An explicit Jacobian or an intermediate would exceed the memory limit."""


UNITS = {"b": 1, **{p + "b": 1000 ** k for k, p in enumerate("kmgtp", 1)},
         **{p + "ib": 1024 ** k for k, p in enumerate("kmgtp", 1)}}
MAX_LIMIT = 2 ** 63
_SIZE = re.compile(r"\s*((?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*([a-z]*)\s*", re.IGNORECASE)
_HOW = ("a positive whole number of bytes or a size such as '500MB', '1.5 GB' or '2GiB' "
        "(KB, MB, GB, TB: powers of 1000; KiB, MiB, GiB, TiB: powers of 1024)")


def parse_bytes(value, what: str = "set_memory_limit: nbytes") -> int:
    """A memory size (see the module docstring) as a whole number of bytes; ``what`` names it in errors.

    >>> parse_bytes("1.5 GB"), parse_bytes("2GiB"), parse_bytes(1e9)
    (1500000000, 2147483648, 1000000000)
    """
    if isinstance(value, bool) or type(value).__name__ in ("bool", "bool_"):  # numpy's bool too
        raise TypeError(f"{what} must be {_HOW}; got {value!r} (a bool)")
    if isinstance(value, numbers.Integral):
        n = int(value)
    elif isinstance(value, numbers.Real):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{what} must be {_HOW}; got {value!r}")
        n = int(value)
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value)
        unit = match and UNITS.get(match[2].lower() or "b")
        if not unit:
            raise ValueError(f"{what} must be {_HOW}; got {value!r}")
        number = Decimal(match[1])
        if number.adjusted() > 30:  # more than 10**30: refused below, without building the number
            raise ValueError(f"{what} must be at most 2**63 bytes; got {value!r}")
        exact = number * unit
        if unit == 1 and exact != exact.to_integral_value():
            raise ValueError(f"{what} must be {_HOW}; got {value!r} (not a whole number of bytes)")
        n = int(exact)  # rounds towards zero: whole bytes
    else:
        raise TypeError(f"{what} must be {_HOW}; got {value!r} (a {type(value).__name__})")
    if n <= 0:
        raise ValueError(f"{what} must be positive; got {value!r}")
    if n > MAX_LIMIT:
        raise ValueError(f"{what} must be at most 2**63 bytes; got {value!r}")
    return n


def _physical_default() -> int:
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 8 << 30
    return min(physical // 4, 8 << 30)


def _from_environment() -> tuple[int, str | None]:
    """(the limit, None) or (the built-in default, the error a bad JACOBIANS_MAX_BYTES deserves)."""
    env = os.environ.get("JACOBIANS_MAX_BYTES", "")
    if env:
        try:
            return parse_bytes(env, "JACOBIANS_MAX_BYTES"), None
        except (TypeError, ValueError) as e:
            return _physical_default(), f"environment variable {e}"
    return _physical_default(), None


_limit, _env_error = _from_environment()
_explicit = bool(os.environ.get("JACOBIANS_MAX_BYTES"))   # set by the user (caps a device's limit too)
_device: ContextVar[int | None] = ContextVar("jacobians_device_limit", default=None)


def memory_limit() -> int:
    """The largest array (bytes) the toolkit will allocate (on the current call's device)."""
    if _env_error is not None:
        raise ValueError(_env_error)
    device = _device.get()
    return _limit if device is None else device


def set_memory_limit(nbytes) -> int:
    """Set the limit (bytes, or a size such as ``"2GiB"``: see :func:`parse_bytes`); returns the previous one."""
    global _limit, _env_error, _explicit
    n = parse_bytes(nbytes, "set_memory_limit: nbytes")
    previous, _limit, _env_error, _explicit = _limit, n, None, True
    return previous


@contextmanager
def limited_memory(nbytes):
    """Temporarily set the memory limit (tests, benchmarks)."""
    global _explicit
    explicit = _explicit
    previous = set_memory_limit(nbytes)
    try:
        yield
    finally:
        set_memory_limit(previous)
        _explicit = explicit


@contextmanager
def device_limit(device_bytes: int | None):
    """Within: the limit of a device with ``device_bytes`` of memory (None: the host's, unchanged).

    Half the device's memory, or the limit the user set where that is smaller."""
    if device_bytes is None:
        yield
        return
    limit = max(device_bytes // 2, 1)
    if _explicit and _env_error is None:
        limit = min(limit, _limit)
    token = _device.set(limit)
    try:
        yield
    finally:
        _device.reset(token)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def check_bytes(nbytes: int, what: str, shape: tuple[int, ...] | None = None, hint: str = "") -> None:
    """Raise :class:`JacobianTooLarge` if ``nbytes`` exceeds the limit."""
    if nbytes <= _limit and _env_error is None and _device.get() is None:
        return
    limit = memory_limit()  # a bad JACOBIANS_MAX_BYTES: its ValueError
    if nbytes <= limit:
        return
    shape_txt = f" of shape {shape}" if shape is not None else ""
    hint = hint or "use a smaller batch or fewer outputs, or raise the limit with jacobians.set_memory_limit"
    raise JacobianTooLarge(
        f"{what}{shape_txt} needs {format_bytes(nbytes)}, over the memory limit of "
        f"{format_bytes(limit)}; {hint}"
    )
