"""The factored Jacobian: one einsum term with symbolic deltas.

``Factored(out, inp, operands)`` stands for

    J[out..., inp...] = einsum(operands -> out + inp)  *  prod delta(l_out, l_in)

where a label written in both ``out`` and ``inp`` is a Kronecker delta between
that output axis and that input axis.  The delta is never stored: it is the
*same* label on both sides.  A label of ``out`` or ``inp`` that no operand
carries is a factor of ones (a broadcast, a sum).  Examples, for x (B, D),
W (H, D) and z = x W^T (B, H)::

    dz/dx = Factored("bh", "bd", [("hd", W)])    # delta on b: samples independent
    dz/dW = Factored("bh", "hd", [("bd", x)])    # delta on h
    d sigmoid(z)/dz = Factored("bh", "bh", [("bh", s * (1 - s))])

The composer contracts these forms with the deltas as label merges; ``dense``
is the one place where they become explicit tensors (deltas as identity
matrices, exactly as the notes build ``einsum("ij,bk->bijk", eye(H), x)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import opt_einsum as oe

from .labels import fresh, prime
from .limits import check_bytes

__all__ = ["Factored"]


@dataclass(frozen=True)
class Factored:
    """d out / d arg as subscripts, operands and symbolic deltas.

    ``out`` and ``inp`` label the axes of the op's output and of the argument
    (distinct labels within each); ``operands`` are ``(subscript, array)``
    pairs over those labels (and possibly internal summed labels).  ``dtype``
    is the dtype of the dense tensor when no operand gives one (deltas and ones only).
    """

    out: str
    inp: str
    out_shape: tuple[int, ...]
    in_shape: tuple[int, ...]
    operands: tuple[tuple[str, np.ndarray], ...] = ()
    dtype: np.dtype | None = None
    check: bool = field(default=True, compare=False, repr=False)  # False: structure known good (a replay)

    def __post_init__(self) -> None:
        if not self.check:
            return
        for side, labels, shape in (("out", self.out, self.out_shape), ("inp", self.inp, self.in_shape)):
            if len(set(labels)) != len(labels) or len(labels) != len(shape):
                raise AssertionError(f"Factored: bad {side} labels {labels!r} for shape {shape}")
        sizes = self.sizes
        for sub, arr in self.operands:
            if len(sub) != np.ndim(arr) or len(set(sub)) != len(sub):
                raise AssertionError(f"Factored: operand {sub!r} has shape {np.shape(arr)}")
            for label, n in zip(sub, np.shape(arr)):
                if sizes.setdefault(label, n) != n:
                    raise AssertionError(f"Factored: label {label!r} is {n} in operand {sub!r}, {sizes[label]} elsewhere")

    @property
    def sizes(self) -> dict[str, int]:
        sizes = dict(zip(self.out, self.out_shape))
        for label, n in zip(self.inp, self.in_shape):
            if sizes.setdefault(label, n) != n:
                raise AssertionError(f"Factored: delta on {label!r} joins sizes {sizes[label]} and {n}")
        for sub, arr in self.operands:
            for label, n in zip(sub, np.shape(arr)):
                sizes.setdefault(label, n)
        return sizes

    @property
    def deltas(self) -> str:
        """Labels tied by a delta (present in both ``out`` and ``inp``)."""
        return "".join(label for label in self.out if label in self.inp)

    @property
    def per_sample(self) -> bool:
        """True when output axis 0 and argument axis 0 are tied (independent samples)."""
        return bool(self.out) and bool(self.inp) and self.out[0] == self.inp[0]

    def subscripts(self) -> str:
        """The einsum of the form, deltas written as ``eye`` operands (for display)."""
        used = set(self.out + self.inp + "".join(s for s, _ in self.operands))
        primes = {}
        for l in self.deltas:  # the case-swapped label, unless another axis already uses it
            p = prime(l)
            if p in used:
                p = next(fresh(used))
            used.add(p)
            primes[l] = p
        inp = "".join(primes.get(l, l) for l in self.inp)
        terms = [s for s, _ in self.operands] + [l + primes[l] for l in self.deltas]
        return ",".join(terms) + "->" + self.out + inp

    def dense_shape(self, collapse_batch: bool = False) -> tuple[int, ...]:
        if collapse_batch and self.per_sample:
            return self.out_shape + self.in_shape[1:]
        return self.out_shape + self.in_shape

    def dense(self, collapse_batch: bool = False, what: str = "Jacobian") -> np.ndarray:
        """The explicit tensor ``(out..., in...)``.

        With ``collapse_batch`` and a delta between output axis 0 and argument
        axis 0, that delta is kept implicit: the result is per-sample,
        ``(B, out[1:]..., in[1:]...)``.
        """
        shape = self.dense_shape(collapse_batch)
        fallback = np.float64 if self.dtype is None else self.dtype
        dtype = np.result_type(*[a for _, a in self.operands]) if self.operands else fallback
        check_bytes(math.prod(shape) * np.dtype(dtype).itemsize, what, shape)
        sizes = self.sizes
        keep = self.inp[0] if collapse_batch and self.per_sample else None
        new = fresh(self.out + self.inp + "".join(s for s, _ in self.operands))
        rename = {l: next(new) for l in self.deltas if l != keep}
        inp = "".join(rename.get(l, l) for l in self.inp)
        if keep is not None:
            inp = inp[1:]
        terms: list[str] = [s for s, _ in self.operands]
        arrays: list[np.ndarray] = [np.asarray(a) for _, a in self.operands]
        for label, primed in rename.items():
            terms.append(label + primed)
            arrays.append(np.eye(sizes[label], dtype=dtype))
        output = self.out + inp
        missing = [l for l in output if not any(l in t for t in terms)]
        if missing:  # factors of ones: broadcasts and sums
            terms.append("".join(missing))
            arrays.append(np.ones([sizes[l] for l in missing], dtype=dtype))
        if not terms:
            return np.ones(shape, dtype=dtype)
        result = _contract(terms, arrays, output)
        return np.asarray(result, dtype=dtype).reshape(shape)


    def product(self, v: np.ndarray, side: str = "in") -> tuple[np.ndarray, str, tuple]:
        """Contract with a stack of vectors, never forming J (a JVP or a VJP).

        ``side="in"``: tangents ``v`` of shape ``in_shape + (k,)`` give ``J v``, ``out_shape + (k,)``.
        ``side="out"``: cotangents of shape ``out_shape + (k,)`` give ``v^T J``, ``in_shape + (k,)``.
        A delta needs no work: the tangent's axis simply carries the output label.
        Returns the array, the einsum equation and the operand shapes (for costing).
        """
        used = self.out + self.inp + "".join(s for s, _ in self.operands)
        k = next(fresh(used))
        src, dst = (self.inp, self.out) if side == "in" else (self.out, self.inp)
        terms = [s for s, _ in self.operands] + [src + k]
        arrays = [np.asarray(a) for _, a in self.operands] + [v]
        missing = "".join(l for l in dst if not any(l in t for t in terms))
        if missing:  # a broadcast: the result is constant along these axes
            sizes = self.sizes
            terms.append(missing)
            arrays.append(np.ones([sizes[l] for l in missing], dtype=v.dtype))
        eq = ",".join(terms) + "->" + dst + k
        return _contract(terms, arrays, dst + k), eq, tuple(a.shape for a in arrays)


def _contract(terms: list[str], arrays: list, output: str):
    """``oe.contract`` of ``terms -> output``.

    numpy's einsum knows 52 labels; past that (arrays of many dimensions) the labels of
    size 1, which carry nothing, are squeezed out first and put back by a reshape.
    """
    if len(set("".join(terms) + output)) <= 52:
        return oe.contract(",".join(terms) + "->" + output, *arrays)
    size = {l: n for t, a in zip(terms, arrays) for l, n in zip(t, np.shape(a))}
    squeeze = lambda t: "".join(l for l in t if size[l] != 1)
    arrays = [np.reshape(a, [n for n in np.shape(a) if n != 1]) for a in arrays]
    result = oe.contract(",".join(map(squeeze, terms)) + "->" + squeeze(output), *arrays)
    return np.reshape(result, [size[l] for l in output])
