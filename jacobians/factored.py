"""The factored Jacobian: one einsum term with symbolic deltas and index maps.

``Factored(out, inp, operands)`` stands for

    J[out..., inp...] = einsum(terms, maps -> out + inp)  *  prod delta(l_out, l_in)

where a label written in both ``out`` and ``inp`` is a Kronecker delta between
that output axis and that input axis.  The delta is never stored: it is the
*same* label on both sides.  A label of ``out`` or ``inp`` that no operand
carries is a factor of ones (a broadcast, a sum).  Examples, for x (B, D),
W (H, D) and z = x W^T (B, H)::

    dz/dx = Factored("bh", "bd", [("hd", W)])    # delta on b: samples independent
    dz/dW = Factored("bh", "hd", [("bd", x)])    # delta on h
    d sigmoid(z)/dz = Factored("bh", "bh", [("bh", s * (1 - s))])

The second kind of symbolic factor is the **index map**
(:class:`~jacobians.indexmaps.IndexMap`): a 0/1 tensor ``M[o..., i...] = [flat(i) ==
index[o]]`` held as its integer ``index`` (O(output), not O(out x in))::

    d x[:, 1:5] / dx = Factored("Aa", "AB", [IndexMap("a", "B", [1, 2, 3, 4], (D,))])
    d conv1d / dx    = Factored("Aop", "Ach", [("oci", W), window_map("p", "i", "h", ...)])

The maps of a form live in ``maps``, apart from its einsum ``terms``; reading
``operands`` (the map-free view) raises :class:`IndexMapsPending` when there are
maps, so code that knows nothing of maps fails loudly instead of dropping one.
``product`` contracts maps as gathers (tangents) and scatter-adds (cotangents);
``without_maps`` is the dense 0/1 fallback.

The composer contracts these forms with the deltas as label merges; ``dense``
is the one place where they become explicit tensors (deltas as identity
matrices, exactly as the notes build ``einsum("ij,bk->bijk", eye(H), x)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import opt_einsum as oe

from .backends import get_backend, numpy as _numpy
from .indexmaps import IndexMap, gather, scatter
from .labels import fresh, prime
from .limits import check_bytes

__all__ = ["Factored", "IndexMap", "IndexMapsPending"]


class IndexMapsPending(NotImplementedError):
    """A map-bearing :class:`Factored` was read through ``operands``, which cannot express its maps."""


@dataclass(frozen=True, init=False)
class Factored:
    """d out / d arg as subscripts, operands, symbolic deltas and index maps.

    ``out`` and ``inp`` label the axes of the op's output and of the argument
    (distinct labels within each); ``terms`` are ``(subscript, array)`` pairs over
    those labels (and possibly internal summed labels); ``maps`` are
    :class:`~jacobians.indexmaps.IndexMap` 0/1 factors, never stored densely.  The
    constructor's ``operands`` may mix both: maps are sorted out of it.  ``dtype``
    is the dtype of the dense tensor when no operand gives one (deltas, maps and ones only).

    ``operands`` is the map-free reader's view: it is ``terms`` when there are no
    maps and raises :class:`IndexMapsPending` otherwise, so that code which builds an
    einsum from ``out``, ``inp`` and ``operands`` alone can never silently drop a map.
    Map-aware code reads ``terms`` and ``maps``; :meth:`without_maps` is the dense fallback.
    """

    out: str
    inp: str
    out_shape: tuple[int, ...]
    in_shape: tuple[int, ...]
    terms: tuple[tuple[str, np.ndarray], ...] = ()
    dtype: np.dtype | None = None
    maps: tuple[IndexMap, ...] = ()
    check: bool = field(default=True, compare=False, repr=False)  # False: structure known good (a replay)

    def __init__(self, out: str, inp: str, out_shape: tuple, in_shape: tuple, operands=(), dtype=None,
                 check: bool = True, maps=(), *, terms=()) -> None:
        operands = tuple(terms) + tuple(operands)   # ``terms=``: the field's name (dataclasses.replace)
        terms = tuple(t for t in operands if not isinstance(t, IndexMap))
        maps = tuple(maps) + tuple(t for t in operands if isinstance(t, IndexMap))
        for name, value in (("out", out), ("inp", inp), ("out_shape", tuple(out_shape)),
                            ("in_shape", tuple(in_shape)), ("terms", terms), ("dtype", dtype),
                            ("maps", maps), ("check", check)):
            object.__setattr__(self, name, value)
        self.__post_init__()

    def __post_init__(self) -> None:
        if not self.check:
            return
        for side, labels, shape in (("out", self.out, self.out_shape), ("inp", self.inp, self.in_shape)):
            if len(set(labels)) != len(labels) or len(labels) != len(shape):
                raise AssertionError(f"Factored: bad {side} labels {labels!r} for shape {shape}")
        sizes = self.sizes
        for sub, arr in self.terms:
            if len(sub) != np.ndim(arr) or len(set(sub)) != len(sub):
                raise AssertionError(f"Factored: operand {sub!r} has shape {np.shape(arr)}")
            for label, n in zip(sub, np.shape(arr)):
                if sizes.setdefault(label, n) != n:
                    raise AssertionError(f"Factored: label {label!r} is {n} in operand {sub!r}, {sizes[label]} elsewhere")
        read = set()
        carried = set("".join(s for s, _ in self.terms))
        for m in self.maps:
            for label, n in m.sizes.items():
                if sizes[label] != n:
                    raise AssertionError(f"Factored: label {label!r} is {n} in {m!r}, {sizes[label]} elsewhere")
            # a map reads argument axes nothing else touches: products gather them first, scatter them last
            if any(l not in self.inp or l in self.out or l in carried or l in read for l in m.inp):
                raise AssertionError(f"Factored: {m!r} must read argument axes of {self.inp!r} that are not "
                                     f"output labels, operand labels or read by another map")
            read.update(m.inp)

    @property
    def operands(self) -> tuple[tuple[str, np.ndarray], ...]:
        """The einsum operands, for map-free forms; raises :class:`IndexMapsPending` when there are maps."""
        if self.maps:
            raise IndexMapsPending(
                f"Factored {self.out!r} -> {self.inp!r} holds index maps {list(self.maps)}; reading its "
                f"operands alone would drop them: read terms and maps (jacobians.indexmaps.apply_map "
                f"contracts a map), or use without_maps() for the dense 0/1 fallback")
        return self.terms

    @property
    def sizes(self) -> dict[str, int]:
        sizes = dict(zip(self.out, self.out_shape))
        for label, n in zip(self.inp, self.in_shape):
            if sizes.setdefault(label, n) != n:
                raise AssertionError(f"Factored: delta on {label!r} joins sizes {sizes[label]} and {n}")
        for sub, arr in self.terms:
            for label, n in zip(sub, np.shape(arr)):
                sizes.setdefault(label, n)
        for m in self.maps:
            for label, n in m.sizes.items():
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

    def _labels(self) -> str:
        return self.out + self.inp + "".join(s for s, _ in self.terms) + "".join(m.labels for m in self.maps)

    def _dtype(self):
        fallback = np.float64 if self.dtype is None else self.dtype
        return np.result_type(*[a for _, a in self.terms]) if self.terms else np.dtype(fallback)

    def subscripts(self) -> str:
        """The einsum of the form, deltas written as ``eye`` operands and maps as their 0/1 terms (for display)."""
        used = set(self._labels())
        primes = {}
        for l in self.deltas:  # the case-swapped label, unless another axis already uses it
            p = prime(l)
            if p in used:
                p = next(fresh(used))
            used.add(p)
            primes[l] = p
        inp = "".join(primes.get(l, l) for l in self.inp)
        ren = lambda s: "".join(primes.get(l, l) for l in s)
        terms = [s for s, _ in self.terms] + [m.out + ren(m.inp) for m in self.maps] \
            + [l + primes[l] for l in self.deltas]
        return ",".join(terms) + "->" + self.out + inp

    def dense_shape(self, collapse_batch: bool = False) -> tuple[int, ...]:
        if collapse_batch and self.per_sample:
            return self.out_shape + self.in_shape[1:]
        return self.out_shape + self.in_shape

    def dense(self, collapse_batch: bool = False, what: str = "Jacobian", backend: str | None = None):
        """The explicit tensor ``(out..., in...)``.

        With ``collapse_batch`` and a delta between output axis 0 and argument
        axis 0, that delta is kept implicit: the result is per-sample,
        ``(B, out[1:]..., in[1:]...)``.  Maps enter as their 0/1 tensors (each
        at most as large as the result, whose size is checked first).
        ``backend`` (:mod:`jacobians.backends`): the einsum runs there (operands moved to it)
        and the tensor is its array; default numpy.
        """
        xp = _numpy if backend is None else get_backend(backend)
        shape = self.dense_shape(collapse_batch)
        dtype = self._dtype()
        check_bytes(math.prod(shape) * np.dtype(dtype).itemsize, what, shape)
        sizes = self.sizes
        keep = self.inp[0] if collapse_batch and self.per_sample else None
        new = fresh(self._labels())
        rename = {l: next(new) for l in self.deltas if l != keep}
        inp = "".join(rename.get(l, l) for l in self.inp)
        if keep is not None:
            inp = inp[1:]
        terms: list[str] = [s for s, _ in self.terms]
        arrays: list = [xp.asarray(a) for _, a in self.terms]
        for m in self.maps:  # map input labels are never deltas, so the map keeps its own labels
            terms.append(m.labels)
            arrays.append(xp.asarray(m.dense(dtype)))
        for label, primed in rename.items():
            terms.append(label + primed)
            arrays.append(xp.eye(sizes[label], dtype))
        output = self.out + inp
        missing = [l for l in output if not any(l in t for t in terms)]
        if missing:  # factors of ones: broadcasts and sums
            terms.append("".join(missing))
            arrays.append(xp.ones([sizes[l] for l in missing], dtype))
        if not terms:
            return xp.ones(shape, dtype)
        result = _contract(terms, arrays, output, xp)
        if xp is _numpy:
            return np.asarray(result, dtype=dtype).reshape(shape)
        return xp.reshape(xp.astype(result, dtype), shape)

    def without_maps(self) -> "Factored":
        """An equivalent map-free form: each map as a dense 0/1 operand (guarded by the memory limit).

        A fallback for code that does not handle maps yet: it costs O(out x in) per map.
        """
        if not self.maps:
            return self
        dtype = self._dtype()
        dense = tuple((m.labels, m.dense(dtype)) for m in self.maps)
        return Factored(self.out, self.inp, self.out_shape, self.in_shape, self.terms + dense, self.dtype, self.check)

    def product(self, v, side: str = "in", backend: str | None = None) -> tuple:
        """Contract with a stack of vectors, never forming J (a JVP or a VJP).

        ``side="in"``: tangents ``v`` of shape ``in_shape + (k,)`` give ``J v``, ``out_shape + (k,)``.
        ``side="out"``: cotangents of shape ``out_shape + (k,)`` give ``v^T J``, ``in_shape + (k,)``.
        A delta needs no work: the tangent's axis simply carries the output label.  A map
        is a gather on the way in (applied to the tangent before the einsum) and a
        scatter-add on the way out (applied after it); neither forms the map.
        Returns the array, the einsum equation and the operand shapes (for costing; map
        steps move memory and are not in it).  ``backend``: the array backend of ``v`` and of
        the result (:mod:`jacobians.backends`; default numpy); the operands are moved to it.
        """
        xp = _numpy if backend is None else get_backend(backend)
        if side not in ("in", "out"):
            raise ValueError(f"Factored.product: unknown side {side!r}; valid options are 'in', 'out'")
        k = next(fresh(self._labels()))
        src, dst = (self.inp, self.out) if side == "in" else (self.out, self.inp)
        sizes = self.sizes
        arr, labels = v, src + k
        if side == "in":
            for m in self.maps:
                arr, labels = gather(m, arr, labels, xp)
            result = dst + k
        else:
            need = set(dst + k).union(*[m.out for m in self.maps])
            present = set(labels).union(*[s for s, _ in self.terms])
            result = "".join(l for l in dict.fromkeys(dst + k + "".join(m.out for m in self.maps))
                             if l in need and l in present)
        terms = [s for s, _ in self.terms] + [labels]
        arrays = [xp.asarray(a, device=xp.device_of(v)) for _, a in self.terms] + [arr]
        missing = "".join(l for l in result if not any(l in t for t in terms))
        if missing:  # a broadcast: the result is constant along these axes
            terms.append(missing)
            arrays.append(xp.ones([sizes[l] for l in missing], _dtype(v), xp.device_of(v)))
        eq = ",".join(terms) + "->" + result
        out = _contract(terms, arrays, result, xp)
        shapes = tuple(tuple(a.shape) for a in arrays)
        if side == "in":
            return out, eq, shapes
        labels = result
        for j in range(len(self.maps) - 1, -1, -1):
            m = self.maps[j]
            later = set(dst).union(*[self.maps[i].out for i in range(j)])
            out, labels = scatter(m, xp.asarray(out) if xp is _numpy else out, labels,
                                  keep="".join(l for l in m.out if l in later and l in labels), xp=xp)
        missing = "".join(l for l in dst if l not in labels)
        terms = [labels] + ([missing] if missing else [])
        arrays = [out] + ([xp.ones([sizes[l] for l in missing], _dtype(out), xp.device_of(out))] if missing else [])
        return _contract(terms, arrays, dst + k, xp), eq, shapes


def _dtype(a) -> np.dtype:
    return np.dtype(str(a.dtype).rpartition(".")[2])   # torch.float64 -> float64


def _contract(terms: list[str], arrays: list, output: str, xp=_numpy):
    """``oe.contract`` of ``terms -> output`` (on backend ``xp``: opt_einsum's ``backend=``).

    numpy's einsum knows 52 labels; past that (arrays of many dimensions) the labels of
    size 1, which carry nothing, are squeezed out first and put back by a reshape.
    """
    if len(set("".join(terms) + output)) <= 52:
        return xp.einsum(",".join(terms) + "->" + output, *arrays)
    size = {l: n for t, a in zip(terms, arrays) for l, n in zip(t, a.shape)}
    squeeze = lambda t: "".join(l for l in t if size[l] != 1)
    arrays = [xp.reshape(a, [n for n in a.shape if n != 1]) for a in arrays]
    result = xp.einsum(",".join(map(squeeze, terms)) + "->" + squeeze(output), *arrays)
    return xp.reshape(result, [size[l] for l in output])
