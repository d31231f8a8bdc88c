"""Einsum labels for the whole package: one allocator that never runs out.

Two disjoint, unbounded sequences built on :func:`opt_einsum.get_symbol`:

* leading (batch / broadcast) axes, :func:`lead`: ``A B ... Z``, then symbols past the ASCII letters;
* core axes, :func:`core` and :func:`fresh`: ``a b ... z``, then other symbols past the ASCII letters.

Small counts keep the ASCII letters (``lead(1) + "d"`` is ``"Ad"``); past 26 the two
sequences take alternate symbols ``get_symbol(52), get_symbol(53), ...``, so a lead label
and a core label never meet.  The composer relabels every op's labels onto its own.
"""

from __future__ import annotations

import string
from typing import Iterable, Iterator

import opt_einsum as oe

__all__ = ["lead", "core", "fresh", "prime"]

_UPPER = string.ascii_uppercase
_LOWER = string.ascii_lowercase


def _label(k: int, ascii_letters: str, parity: int) -> str:
    return ascii_letters[k] if k < 26 else oe.get_symbol(52 + 2 * (k - 26) + parity)


def lead(n: int, start: int = 0) -> str:
    """Labels ``start .. start+n-1`` of the leading-axes sequence (``A``, ``B``, ...)."""
    if start + n <= 26:
        return _UPPER[start:start + n]
    return "".join(_label(k, _UPPER, 0) for k in range(start, start + n))


def core(n: int, start: int = 0) -> str:
    """Labels ``start .. start+n-1`` of the core-axes sequence (``a``, ``b``, ...)."""
    if start + n <= 26:
        return _LOWER[start:start + n]
    return "".join(_label(k, _LOWER, 1) for k in range(start, start + n))


def fresh(taken: Iterable[str] = "") -> Iterator[str]:
    """Core labels not in ``taken``, in order, without end."""
    taken = set(taken)
    k = 0
    while True:
        label = _label(k, _LOWER, 1)
        k += 1
        if label not in taken:
            yield label


def prime(label: str) -> str:
    """The display partner of an ASCII letter (its other case); any other label is returned as is."""
    return label.swapcase() if label in string.ascii_letters else label
