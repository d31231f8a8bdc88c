"""Index maps: the 0/1 factors of slicing, gathering, padding and convolution, never stored densely.

An :class:`IndexMap` with labels ``out`` and ``inp`` stands for the 0/1 tensor

    M[o..., i...] = 1  if  flat(i...) == index[o...]  (and index[o...] >= 0),  else 0

over the labels ``out + inp`` of an einsum: ``index`` has one axis per ``out`` label
and holds a C-order flat position into the ``inp`` axes (of shape ``in_shape``), or
``-1`` where the output position reads nothing (a pad).  A slice ``x[:, 1:5]`` is the
map ``"a" -> "B"`` with ``index = [1, 2, 3, 4]`` next to a delta on the batch; a
lookup ``E[ids]`` is ``"ab" -> "A"`` with ``index = ids``; a convolution's input
Jacobian holds one map per spatial axis, ``(output position p, kernel offset i) -> h``
with ``index[p, i] = p*stride + i*dilation - padding``, and the weight as an operand
over ``i``; a max pool's map is ``(b, c, p, q) -> (h, w)``, the argmax, whose ``b, c``
are the deltas it passes through.

Contracted against an array, a map is a *gather* (the array carries ``inp``, the
result ``out``: :func:`gather`) or a *scatter-add* (the array carries ``out``, the
result ``inp``: :func:`scatter`); :func:`apply_map` is the one entry point and
:func:`map_cost` its cost from shapes (elements moved: memory traffic, not FLOPs).
Labels of the map's ``out`` that the array already carries are *diagonal*: the
gather reads ``array[..., s, ..., index[s, ...]]`` (the max pool's batch and
channel); other array labels pass through.  Nothing here ever builds the
``out x in`` tensor except :meth:`IndexMap.dense`, which is guarded by the memory limit.

An ``IndexMap`` is a 2-tuple ``(out + inp, index)`` as well, so it can travel in an op
rule's operand list beside ``(subscript, array)`` pairs; :class:`~jacobians.factored.Factored`
sorts it into its ``maps``.
"""

from __future__ import annotations

import math

import numpy as np

from .backends import numpy as _numpy
from .limits import check_bytes

__all__ = ["IndexMap", "apply_map", "gather", "scatter", "map_cost", "axis_map", "window_map"]

DIRECTIONS = ("gather", "scatter")


class IndexMap(tuple):
    """``M[out..., inp...] = [flat(inp) == index[out]]`` (see the module docstring).

    Fields: ``out`` (labels, one per axis of ``index``), ``inp`` (labels of the axes
    read), ``index`` (integer array, ``-1`` = nothing read), ``in_shape`` (sizes of
    the ``inp`` axes).  Immutable; as a tuple it is ``(out + inp, index)``.
    """

    def __new__(cls, out: str, inp: str, index, in_shape, window: tuple[int, int, int] | None = None) -> "IndexMap":
        index = np.asarray(index)
        if not np.issubdtype(index.dtype, np.integer):
            raise TypeError(f"IndexMap: index must be an integer array; got dtype {index.dtype}")
        index = index.astype(np.intp, copy=False)
        in_shape = tuple(int(n) for n in in_shape)
        if len(out) != index.ndim or len(inp) != len(in_shape) or len(set(out + inp)) != len(out + inp):
            raise ValueError(f"IndexMap: labels {out!r} -> {inp!r} do not fit index {index.shape} and "
                             f"input axes {in_shape} (one distinct label per axis)")
        n = math.prod(in_shape)
        if index.size and (index.max() >= n or index.min() < -1):
            raise ValueError(f"IndexMap: index values must lie in [-1, {n}) for input axes {in_shape}; "
                             f"got [{index.min()}, {index.max()}]")
        self = tuple.__new__(cls, (out + inp, index))
        d = self.__dict__
        d["out"], d["inp"], d["index"], d["in_shape"] = out, inp, index, in_shape
        d["window"] = window  # (stride, dilation, padding) when made by window_map: scatters by strided views
        return self

    def __setattr__(self, name, value):
        raise AttributeError("IndexMap is immutable")

    def __reduce__(self):
        return IndexMap, (self.out, self.inp, self.index, self.in_shape, self.window)

    @property
    def labels(self) -> str:
        return self.out + self.inp

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.index.shape

    @property
    def sizes(self) -> dict[str, int]:
        return dict(zip(self.out + self.inp, self.index.shape + self.in_shape))

    @property
    def in_size(self) -> int:
        return math.prod(self.in_shape)

    @property
    def padded(self) -> bool:
        """True when some output position reads nothing (``index == -1``)."""
        if "_padded" not in self.__dict__:
            self.__dict__["_padded"] = bool(self.index.size) and bool((self.index < 0).any())
        return self.__dict__["_padded"]

    @property
    def injective(self) -> bool:
        """True when no input position is read twice (a slice, a flip, a pad): scatters can assign."""
        if "_injective" not in self.__dict__:
            valid = self.index[self.index >= 0] if self.padded else self.index.ravel()
            hits = np.bincount(valid, minlength=self.in_size) if valid.size else np.zeros(1, np.intp)
            self.__dict__["_injective"] = bool(hits.max(initial=0) <= 1)
        return self.__dict__["_injective"]

    @property
    def as_slice(self) -> slice | None:
        """The map as a basic slice ``start:stop:step`` of its one input axis when its one output axis
        reads an arithmetic progression (``x[:, 1:5]``, a gate ``z[:, k*H:(k+1)*H]``, a flip); else None."""
        if "_slice" not in self.__dict__:
            sl = None
            idx = self.index
            if idx.ndim == 1 and len(self.in_shape) == 1 and idx.size and not self.padded:
                step = int(idx[1] - idx[0]) if idx.size > 1 else 1
                if step != 0 and (idx.size == 1 or bool((np.diff(idx) == step).all())):
                    stop = int(idx[-1]) + step
                    sl = slice(int(idx[0]), None if stop < 0 else stop, step)
            self.__dict__["_slice"] = sl
        return self.__dict__["_slice"]

    def dense(self, dtype=np.float64) -> np.ndarray:
        """The explicit 0/1 tensor over ``out + inp`` (for the checker and :meth:`Factored.without_maps`)."""
        shape = self.out_shape + self.in_shape
        check_bytes(math.prod(shape) * np.dtype(dtype).itemsize, "the dense form of an index map", shape)
        m = np.zeros((self.index.size, self.in_size), dtype=dtype)
        flat = self.index.ravel()
        rows = np.flatnonzero(flat >= 0)
        m[rows, flat[rows]] = 1
        return m.reshape(shape)

    def relabel(self, mapping: dict[str, str]) -> "IndexMap":
        """The same map over renamed labels (for a planner that relabels every op onto its own)."""
        ren = lambda s: "".join(mapping.get(l, l) for l in s)
        return IndexMap(ren(self.out), ren(self.inp), self.index, self.in_shape, self.window)

    def __repr__(self) -> str:
        pads = ", padded" if self.padded else ""
        return f"IndexMap({self.out!r} -> {self.inp!r}, index {self.index.shape}, in {self.in_shape}{pads})"

    def __eq__(self, other) -> bool:
        return (isinstance(other, IndexMap) and (self.out, self.inp, self.in_shape) == (other.out, other.inp, other.in_shape)
                and np.array_equal(self.index, other.index))

    __hash__ = None


# ---------------------------------------------------------------- constructors

def axis_map(out: str, inp: str, index, n_in: int) -> IndexMap:
    """One output axis reading one input axis of size ``n_in`` (a slice, flip, roll, pad, repeat)."""
    return IndexMap(out, inp, np.asarray(index, dtype=np.intp), (n_in,))


def window_map(out: str, offset: str, inp: str, n_out: int, kernel: int, n_in: int,
               stride: int = 1, dilation: int = 1, padding: int = 0) -> IndexMap:
    """A sliding window along one axis: ``index[p, i] = p*stride + i*dilation - padding`` (-1 outside)."""
    pos = np.arange(n_out)[:, None] * stride + np.arange(kernel)[None, :] * dilation - padding
    return IndexMap(out + offset, inp, np.where((pos >= 0) & (pos < n_in), pos, -1), (n_in,),
                    (stride, dilation, padding))


# ---------------------------------------------------------------- the kernels

def _check_labels(m: IndexMap, array: np.ndarray, labels: str, fn: str) -> None:
    if len(labels) != array.ndim or len(set(labels)) != len(labels):
        raise ValueError(f"{fn}: labels {labels!r} do not fit an array of shape {array.shape}")


def gather(m: IndexMap, array, labels: str, xp=_numpy) -> tuple[np.ndarray, str]:
    """Contract ``array`` (carrying all of ``m.inp``) with the map: the result carries ``m.out``.

    Result labels: the map's ``out`` labels the array already carries (diagonal), the
    array's other labels, then the map's new ``out`` labels.  Costs one read per result element.
    ``xp`` is the array's backend (:mod:`jacobians.backends`); the index stays on the host.
    """
    _check_labels(m, array, labels, "gather")
    missing = [l for l in m.inp if l not in labels]
    if missing:
        raise ValueError(f"gather: the array {labels!r} lacks the map's input labels {''.join(missing)!r} ({m!r})")
    for l, n in zip(m.inp, m.in_shape):
        if array.shape[labels.index(l)] != n:
            raise ValueError(f"gather: label {l!r} is {array.shape[labels.index(l)]} in the array, {n} in {m!r}")
    shared = "".join(l for l in m.out if l in labels)
    new = "".join(l for l in m.out if l not in labels)
    rest = "".join(l for l in labels if l not in m.inp and l not in shared)
    size = dict(zip(labels, array.shape))
    for l in shared:
        if size[l] != m.sizes[l]:
            raise ValueError(f"gather: label {l!r} is {size[l]} in the array, {m.sizes[l]} in {m!r}")
    if xp is _numpy and not shared and m.as_slice is not None:   # a basic slice: a strided copy
        k = labels.index(m.inp)
        moved = np.moveaxis(array[(slice(None),) * k + (m.as_slice,)], k, -1)
        return np.ascontiguousarray(moved), rest + new
    a = xp.transpose(array, [labels.index(l) for l in shared + rest + m.inp])
    ns, nr = math.prod(size[l] for l in shared), math.prod(size[l] for l in rest)
    a = xp.reshape(a, (ns, nr, m.in_size))
    idx = m.index.transpose([m.out.index(l) for l in shared + new]).reshape(ns, 1, -1)
    result = xp.gather(a, idx, m.padded)
    shape = [size[l] for l in shared + rest] + [m.sizes[l] for l in new]
    return xp.reshape(result, shape), shared + rest + new


def scatter(m: IndexMap, array, labels: str, keep: str = "", xp=_numpy, order: str | None = None
            ) -> tuple[np.ndarray, str]:
    """Contract ``array`` (carrying ``m.out`` labels) with the map: the result carries ``m.inp``.

    A scatter-add: ``result[..., index[o]] += array[..., o]``, summing over the map's
    ``out`` labels except those in ``keep`` (diagonal labels that stay on the result,
    e.g. a max pool's batch and channel).  ``out`` labels the array lacks are broadcast
    (the array is the same along them).  Result labels: ``keep``, the array's other
    labels, then ``m.inp``.  ``xp`` is the array's backend.  ``order`` (a permutation of
    those labels) asks for another layout: numpy writes it directly (no transposed copy of the
    result afterwards: the planner's final layout); other backends transpose.
    """
    _check_labels(m, array, labels, "scatter")
    if any(l in labels for l in m.inp):
        raise ValueError(f"scatter: the array {labels!r} already carries an input label of {m!r}")
    if any(l not in m.out for l in keep):
        raise ValueError(f"scatter: keep {keep!r} must be output labels of {m!r}")
    size = dict(zip(labels, array.shape))
    for l in m.out:
        if l in size and size[l] != m.sizes[l]:
            raise ValueError(f"scatter: label {l!r} is {size[l]} in the array, {m.sizes[l]} in {m!r}")
    absent = "".join(l for l in m.out if l not in labels)
    if absent:  # broadcast along the map labels the array lacks
        array = xp.broadcast_to(xp.reshape(array, tuple(array.shape) + (1,) * len(absent)),
                                tuple(array.shape) + tuple(m.sizes[l] for l in absent))
        labels += absent
        size.update((l, m.sizes[l]) for l in absent)
    summed = "".join(l for l in m.out if l not in keep)
    rest = "".join(l for l in labels if l not in m.out)
    natural = keep + rest + m.inp
    if order is not None and (len(order) != len(natural) or set(order) != set(natural)):
        raise ValueError(f"scatter: order {order!r} must be a permutation of the result labels {natural!r}")
    if order == natural:
        order = None
    if m.window is not None and not keep:
        return _scatter_window(m, xp.transpose(array, [labels.index(l) for l in rest + m.out]), rest, size, xp, order)
    a = xp.transpose(array, [labels.index(l) for l in keep + rest + summed])
    nk, nr = math.prod(size[l] for l in keep), math.prod(size[l] for l in rest)
    a = xp.reshape(a, (nk, nr, math.prod(size[l] for l in summed)))
    shape = [size[l] for l in keep + rest] + list(m.in_shape)
    layout = natural if order is None else order
    if xp is _numpy and not keep and m.as_slice is not None:   # a basic slice: zeros, one strided assignment
        owner = np.zeros([shape[natural.index(l)] for l in layout], dtype=_float_dtype(a))
        view = owner.transpose([layout.index(l) for l in natural]) if order is not None else owner
        view[..., m.as_slice] = a.reshape([size[l] for l in rest] + [-1])
        return owner, layout
    idx = m.index.transpose([m.out.index(l) for l in keep + summed]).reshape(nk, -1)
    if xp is _numpy and order is not None and not (nk == 1 and m.injective):
        return _scatter_in_layout(a, idx, m, shape, natural, order), order
    result = xp.reshape(xp.scatter_add(a, idx, m.in_size, m.padded, m.injective), shape)
    if order is not None:
        result = xp.copy(xp.transpose(result, [natural.index(l) for l in order]))
    return result, layout


def _scatter_in_layout(a: np.ndarray, idx: np.ndarray, m: IndexMap, shape: list, natural: str, order: str):
    """numpy's bincount scatter-add, each position counted in the layout ``order`` (the same sums,
    written where the caller wants them: a (B, C, V, d) embedding Jacobian is not copied again)."""
    nk, nr = a.shape[:2]
    target = (np.arange(nk)[:, None, None] * nr + np.arange(nr)[None, :, None]) * m.in_size + idx[:, None, :]
    weights = np.broadcast_to(a, target.shape)
    if m.padded:
        sel = np.broadcast_to((idx >= 0)[:, None, :], target.shape)
        target, weights = target[sel], weights[sel]
    coords = np.unravel_index(target.ravel(), shape)
    target = np.ravel_multi_index(tuple(coords[natural.index(l)] for l in order),
                                  tuple(shape[natural.index(l)] for l in order))
    sums = np.bincount(target, weights=np.ravel(weights), minlength=math.prod(shape))
    return sums.astype(_float_dtype(a), copy=False).reshape([shape[natural.index(l)] for l in order])


def _scatter_window(m: IndexMap, a, rest: str, size: dict, xp=_numpy, order: str | None = None
                    ) -> tuple[np.ndarray, str]:
    """col2im: ``result[..., p*stride + i*dilation - padding] += a[..., p, i]``, one strided add per offset i.

    With ``order`` numpy allocates the result in that layout and writes through a transposed view."""
    stride, dilation, padding = m.window
    n_out, kernel = m.out_shape
    n = m.in_shape[0]
    natural = rest + m.inp
    shape = tuple(a.shape[:-2]) + (n,)
    owner = None
    if order is not None and xp is _numpy:
        owner = np.zeros([shape[natural.index(l)] for l in order], dtype=_float_dtype(a))
        result = owner.transpose([order.index(l) for l in natural])
    else:
        result = xp.zeros(shape, _float_dtype(a), xp.device_of(a))
    for i in range(kernel):
        first = i * dilation - padding
        lo = -(first // stride) if first < 0 else 0                  # the first p whose position is >= 0
        hi = min(n_out, (n - 1 - first) // stride + 1) if n - 1 >= first else 0
        if hi > lo:
            start = lo * stride + first
            result = xp.add_at(result, (..., slice(start, start + (hi - lo - 1) * stride + 1, stride)),
                               a[..., lo:hi, i])
    if owner is not None:
        return owner, order
    if order is not None:
        return xp.copy(xp.transpose(result, [natural.index(l) for l in order])), order
    return result, natural


def apply_map(m: IndexMap, array, labels: str, direction: str, keep: str = "",
              xp=_numpy, order: str | None = None) -> tuple[np.ndarray, str]:
    """The planner's map step: ``direction="gather"`` (array carries ``m.inp``, result ``m.out``)
    or ``"scatter"`` (array carries ``m.out``, result ``m.inp``; ``keep``: out labels that stay).

    Returns ``(array, labels)``; other labels pass through.  Cost: :func:`map_cost`.
    ``xp``: the array's backend (:mod:`jacobians.backends`); ``order``: a scatter's result layout,
    if not the natural one.
    """
    if direction == "gather":
        if keep:
            raise ValueError("apply_map: keep is for scatters (a gather keeps every label it shares)")
        if order is not None:
            raise ValueError("apply_map: order is for scatters (a gather's layout is fixed)")
        return gather(m, array, labels, xp)
    if direction == "scatter":
        return scatter(m, array, labels, keep, xp, order)
    raise ValueError(f"apply_map: unknown direction {direction!r}; valid options are "
                     + ", ".join(map(repr, DIRECTIONS)))


def _float_dtype(a) -> np.dtype:
    """The numpy dtype of a scatter's result: the array's float type (at least float32), else float64."""
    dtype = np.dtype(str(a.dtype).rpartition(".")[2])   # torch.float64 -> float64
    return np.result_type(dtype, np.float32) if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def map_cost(m: IndexMap, labels: str, sizes: dict[str, int], direction: str, keep: str = "") -> int:
    """Elements moved by :func:`apply_map` on an array with ``labels`` (sizes from ``sizes``), from shapes.

    A gather reads one element per result element; a scatter reads every element of the
    (broadcast) array and writes the zero-initialised result.
    """
    sizes = {**sizes, **m.sizes}
    if direction == "gather":
        out = set(labels) - set(m.inp) | set(m.out)
        return math.prod(sizes[l] for l in out)
    if direction == "scatter":
        read = math.prod(sizes[l] for l in set(labels) | set(m.out))
        written = math.prod(sizes[l] for l in (set(labels) - set(m.out)) | set(keep)) * m.in_size
        return read + written
    raise ValueError(f"map_cost: unknown direction {direction!r}; valid options are "
                     + ", ".join(map(repr, DIRECTIONS)))
