"""Indexing and shape ops: slices, gathers, pads, flips, rolls, tiles, repeats (index maps) and pure
relabelings (broadcast_to, expand_dims, squeeze, swapaxes, moveaxis: deltas and ones, no map).

A rule's index maps (:class:`~jacobians.indexmaps.IndexMap`) travel in its operand list; each
maps output axes to the argument axes they read, per axis where it can (a slice ``x[:, 1:5]``
is the map ``a -> B`` beside a delta on the batch), so a map costs O(output), never O(out x in).

``concatenate``, ``stack`` and ``split`` take or give several arrays, which the registry's
one-output, fixed-argument ops cannot express: they are helpers over registered ops
(concatenation is a sum of ``pad``s, a split is one ``getitem`` per piece), as
``jac.ops.concatenate(arrays, axis)`` (value and Jacobians) and, for traced code,
``concatenate_in(jac.fn, arrays, axis)`` (the same composition over any namespace of ops).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..errors import as_float_array, as_int_array, fail
from ..indexmaps import IndexMap, axis_map
from ..labels import fresh, lead
from ._registry import _axes, defop, rule

__all__ = ["concatenate", "stack", "split", "concatenate_in", "stack_in", "split_in"]


def _int(op: str, name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        fail(op, f"argument {name} must be an integer; got {value!r}", TypeError)
    return int(value)


def _axis(op: str, axis, ndim: int) -> int:
    a = _int(op, "axis", axis)
    if not -ndim <= a < ndim:
        fail(op, f"axis {a} is out of range for an array of {ndim} dimensions")
    return a % ndim


# ---------------------------------------------------------------- getitem, take, embedding

def _index_array(op: str, k, n: int, axis: int) -> np.ndarray:
    arr = np.asarray(k)
    if ((arr < -n) | (arr >= n)).any():
        fail(op, f"index out of range for axis {axis} of size {n}: {arr.min()}..{arr.max()}", IndexError)
    return np.where(arr < 0, arr + n, arr)


def _index_plan(op: str, shape: tuple, key) -> tuple[str, str, list, tuple]:
    """``x[key]`` as labels and maps: (out labels, input labels, maps, output shape)."""
    key = key if isinstance(key, tuple) else (key,)
    items = []
    for k in key:
        if k is None or k is Ellipsis or isinstance(k, slice):
            items.append(k)
        elif isinstance(k, (bool, np.bool_)):
            fail(op, "a scalar boolean index is not supported (use a boolean array of the indexed axes' shape)", TypeError)
        elif isinstance(k, (numbers.Integral, np.integer)):
            items.append(int(k))
        else:
            try:
                arr = np.asarray(k)
            except Exception:
                arr = np.asarray(None)
            if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
                items.append(arr)
            else:
                fail(op, f"index entries must be integers, slices, None, Ellipsis or constant integer or boolean "
                         f"arrays; got {type(k).__name__}" + (f" of dtype {arr.dtype}" if arr.dtype != object else ""),
                     TypeError)
    consumed = sum(k.ndim if isinstance(k, np.ndarray) and k.dtype == bool else
                   0 if k is None or k is Ellipsis else 1 for k in items)
    if sum(k is Ellipsis for k in items) > 1:
        fail(op, "an index can only have a single ellipsis ('...')", IndexError)
    if consumed > len(shape):
        fail(op, f"too many indices for an array of shape {shape}: the key indexes {consumed} axes", IndexError)
    if any(k is Ellipsis for k in items):
        e = next(i for i, k in enumerate(items) if k is Ellipsis)
        items[e:e + 1] = [slice(None)] * (len(shape) - consumed)
    else:
        items += [slice(None)] * (len(shape) - consumed)
    advanced = [i for i, k in enumerate(items) if isinstance(k, np.ndarray) or (isinstance(k, int) and any(
        isinstance(j, np.ndarray) for j in items))]
    L = lead(len(shape))
    new = fresh(L)
    parts, maps, sizes = [], [], {}   # parts: labels, or None where the advanced block may go
    adv_axes, adv_arrays = [], []
    ax = 0
    for i, k in enumerate(items):
        if k is None:
            parts.append(next(new))
            sizes[parts[-1]] = 1
        elif isinstance(k, slice):
            n = shape[ax]
            rng = range(*k.indices(n))
            if rng == range(n):
                parts.append(L[ax])
            else:
                label = next(new)
                parts.append(label)
                maps.append(axis_map(label, L[ax], np.arange(rng.start, rng.stop, rng.step), n))
            ax += 1
        elif i in advanced:
            if not adv_axes or parts[-1] is not None:
                parts.append(None)   # where the advanced block goes if the advanced indices are adjacent
            if isinstance(k, np.ndarray) and k.dtype == bool:
                if k.shape != tuple(shape[ax:ax + k.ndim]):
                    fail(op, f"boolean index of shape {k.shape} does not match the indexed axes "
                             f"{tuple(shape[ax:ax + k.ndim])} of an array of shape {shape}", IndexError)
                adv_arrays += list(np.nonzero(k))
                adv_axes += list(range(ax, ax + k.ndim))
                ax += k.ndim
            else:
                adv_arrays.append(_index_array(op, k, shape[ax], ax))
                adv_axes.append(ax)
                ax += 1
        else:  # an integer: the axis disappears
            n = shape[ax]
            if not -n <= k < n:
                fail(op, f"index {k} is out of range for axis {ax} of size {n}", IndexError)
            maps.append(IndexMap("", L[ax], np.array(k % n), (n,)))
            ax += 1
    if adv_axes:
        try:
            arrays = np.broadcast_arrays(*adv_arrays)
        except ValueError:
            fail(op, f"index arrays do not broadcast: shapes {[np.shape(a) for a in adv_arrays]}", IndexError)
        g = arrays[0].shape
        labels = "".join(next(new) for _ in g)
        dims = tuple(shape[a] for a in adv_axes)
        flat = np.ravel_multi_index(tuple(arrays), dims) if arrays[0].size else np.zeros(g, dtype=np.intp)
        maps.append(IndexMap(labels, "".join(L[a] for a in adv_axes), flat, dims))
        blocks = [i for i, p in enumerate(parts) if p is None]
        if len(blocks) == 1:   # adjacent: the block replaces them in place
            parts[blocks[0]] = labels
        else:                  # separated: numpy puts the block first
            parts = [labels] + [p for p in parts if p is not None]
    out = "".join(parts)
    sizes.update((L[a], n) for a, n in enumerate(shape))
    for m in maps:
        sizes.update(m.sizes)
    return out, L, maps, tuple(sizes[l] for l in out)


@defop("x", data="x", formula="dy/dx = a map from y's axes to the axes of x they read (deltas on full slices)")
def getitem(x, key):
    """``x[key]`` with numpy's meaning: integers (negative too), slices with steps, Ellipsis, None, and
    constant integer or boolean arrays (advanced indexing, numpy's placement rules)."""
    out, L, maps, shape = _index_plan("getitem", x.shape, key)
    y = np.array(x[key])  # basic indexing gives a view: the value owns its data
    if y.shape != shape:
        raise AssertionError(f"getitem: planned shape {shape} but numpy gives {y.shape} for key {key!r}")
    return y, (lambda: rule(out, L, *maps),)


@defop("a indices", data="a", nondiff="indices",
       formula="dy/da = a map from y's axes to the axis of a read at indices")
def take(a, indices, axis=None):
    """numpy's take: ``a[..., indices, ...]`` along ``axis`` (None: of the flattened array)."""
    indices = as_int_array("take", "indices", indices)
    if axis is None:
        if a.size == 0 and indices.size:
            fail("take", f"cannot take from an empty array of shape {a.shape}", IndexError)
        flat = _index_array("take", indices, a.size, 0)
        key = np.unravel_index(flat, a.shape) if a.ndim else ()
        if not a.ndim:
            fail("take", "take with axis=None needs an array of at least 1 dimension", ValueError)
        out, L, maps, _ = _index_plan("take", a.shape, tuple(key))
        return a.reshape(-1)[flat], (lambda: rule(out, L, *maps), None)
    if a.ndim == 0:
        fail("take", "take along an axis needs an array of at least 1 dimension")
    ax = _axis("take", axis, a.ndim)
    out, L, maps, _ = _index_plan("take", a.shape, (slice(None),) * ax + (indices,))
    return np.take(a, indices, axis=ax), (lambda: rule(out, L, *maps), None)


@defop("ids E", data="ids", nondiff="ids", formula="dy/dE = the map (b, t) -> ids[b, t] on E's rows, delta on d")
def embedding(ids, E):
    """Rows of ``E`` (V, d) at the integer ``ids`` (any shape): ``E[ids]``, shape ``ids.shape + (d,)``."""
    ids = as_int_array("embedding", "ids", ids)
    if E.ndim != 2:
        fail("embedding", f"argument E must be a (V, d) table; got shape {E.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= E.shape[0]):  # no negative ids, as in PyTorch
        fail("embedding", f"ids must lie in [0, {E.shape[0]}) for E of shape {E.shape}; got {ids.min()}..{ids.max()}",
             IndexError)
    out, L, maps, _ = _index_plan("embedding", E.shape, (ids,))
    return E[ids], (None, lambda: rule(out, L, *maps))


# ---------------------------------------------------------------- pads, flips, rolls, tiles, repeats

def _widths(op: str, pad_width, ndim: int) -> np.ndarray:
    try:
        w = np.asarray(pad_width)
        if not (np.issubdtype(w.dtype, np.integer)):
            raise TypeError
        w = np.broadcast_to(w, (ndim, 2)) if w.ndim <= 2 else None
    except (TypeError, ValueError):
        w = None
    if w is None:
        fail(op, f"pad_width must be an integer, a (before, after) pair or one pair per axis of the {ndim} "
                 f"axes; got {pad_width!r}")
    if (w < 0).any():
        fail(op, f"pad widths must be non-negative; got {pad_width!r}")
    return w


def _per_axis(x, maps_for) -> tuple[str, str, list]:
    """Labels when each axis k of x either stays (delta) or is read through ``maps_for(k)``: (index, n_out)."""
    L = lead(x.ndim)
    new = fresh(L)
    out, maps = "", []
    for k in range(x.ndim):
        index = maps_for(k)
        if index is None:
            out += L[k]
        else:
            label = next(new)
            out += label
            maps.append(axis_map(label, L[k], index, x.shape[k]))
    return out, L, maps


@defop("x", data="x", formula="dy/dx = per padded axis, the map p -> p - before (nothing in the pad)")
def pad(x, pad_width, mode="constant", constant_values=0):
    """numpy's pad, constant mode (a scalar ``constant_values``)."""
    if mode != "constant":
        fail("pad", f"only mode='constant' is supported; got {mode!r}")
    if np.ndim(constant_values) != 0:
        fail("pad", f"constant_values must be a scalar; got {constant_values!r}")
    w = _widths("pad", pad_width, x.ndim)
    y = np.pad(x, w, mode="constant", constant_values=constant_values)

    def index(k):
        b, a = int(w[k, 0]), int(w[k, 1])
        if b == a == 0:
            return None
        p = np.arange(x.shape[k] + b + a) - b
        return np.where((p >= 0) & (p < x.shape[k]), p, -1)
    out, L, maps = _per_axis(x, index)
    return y, (lambda: rule(out, L, *maps),)


@defop("x", data="x", formula="dy/dx = per flipped axis, the map p -> n - 1 - p")
def flip(x, axis=None):
    """numpy's flip: reverse the order along ``axis`` (None: every axis)."""
    axes = _axes("flip", axis, x.ndim)
    out, L, maps = _per_axis(x, lambda k: np.arange(x.shape[k])[::-1] if k in axes and x.shape[k] > 1 else None)
    return np.flip(x, axes).copy(), (lambda: rule(out, L, *maps),)


@defop("x", data="x", formula="dy/dx = per rolled axis, the map p -> (p - shift) mod n")
def roll(x, shift, axis=None):
    """numpy's roll: shift cyclically along ``axis`` (None: the flattened array)."""
    shifts = np.asarray(shift)
    if not np.issubdtype(shifts.dtype, np.integer) or shifts.ndim > 1:
        fail("roll", f"shift must be an integer or a tuple of integers; got {shift!r}", TypeError)
    if axis is None:
        if shifts.ndim:
            fail("roll", f"with axis=None, shift must be one integer; got {shift!r}")
        y = np.roll(x, int(shifts))
        L = lead(x.ndim)
        g = fresh(L)
        out = "".join(next(g) for _ in range(x.ndim))
        index = np.roll(np.arange(x.size), int(shifts)).reshape(x.shape)
        return y, (lambda: rule(out, L, IndexMap(out, L, index, x.shape)) if x.ndim else rule("", ""),)
    axes = (axis,) if isinstance(axis, (numbers.Integral, np.integer)) else tuple(axis)
    norm = [_axis("roll", a, x.ndim) for a in axes]
    try:
        pairs = np.broadcast_arrays(shifts, np.asarray(norm))
    except ValueError:
        fail("roll", f"shift {shift!r} and axis {axis!r} do not broadcast")
    total = {}
    for s, a in zip(pairs[0].ravel(), pairs[1].ravel()):
        total[int(a)] = total.get(int(a), 0) + int(s)
    y = np.roll(x, shift, axis)

    def index(k):
        n = x.shape[k]
        if k not in total or n == 0 or total[k] % n == 0:
            return None
        return (np.arange(n) - total[k]) % n
    out, L, maps = _per_axis(x, index)
    return y, (lambda: rule(out, L, *maps),)


@defop("x", data="x", formula="dy/dx = per tiled axis, the map p -> p mod n; ones on new axes")
def tile(x, reps):
    """numpy's tile: repeat the whole array ``reps`` times per axis (new leading axes if reps is longer)."""
    r = np.atleast_1d(np.asarray(reps))
    if not np.issubdtype(r.dtype, np.integer) or r.ndim != 1 or (r < 0).any():
        fail("tile", f"reps must be a non-negative integer or a tuple of them; got {reps!r}", TypeError)
    d = max(len(r), x.ndim)
    r = (1,) * (d - len(r)) + tuple(int(v) for v in r)
    y = np.tile(x, r)
    L = lead(x.ndim)
    new = fresh(L)
    extra = "".join(next(new) for _ in range(d - x.ndim))
    out, maps = extra, []
    for k in range(x.ndim):
        rk, n = r[d - x.ndim + k], x.shape[k]
        if rk == 1:
            out += L[k]
        else:
            label = next(new)
            out += label
            maps.append(axis_map(label, L[k], np.arange(n * rk) % max(n, 1), n))
    return y, (lambda: rule(out, L, *maps),)


@defop("x", data="x", formula="dy/dx = the map p -> the element p repeats (along axis or flattened)")
def repeat(x, repeats, axis=None):
    """numpy's repeat: each element ``repeats`` times along ``axis`` (None: of the flattened array)."""
    rep = np.asarray(repeats)
    if not np.issubdtype(rep.dtype, np.integer) or rep.ndim > 1 or (rep < 0).any():
        fail("repeat", f"repeats must be a non-negative integer or a 1-D integer array; got {repeats!r}", TypeError)
    L = lead(x.ndim)
    if axis is None:
        try:
            index = np.repeat(np.arange(x.size), rep)
        except ValueError as e:
            fail("repeat", f"repeats {repeats!r} do not fit {x.size} elements: {e}")
        y = np.repeat(x, rep)
        label = next(fresh(L))
        return y, (lambda: rule(label, L, IndexMap(label, L, index, x.shape)),)
    ax = _axis("repeat", axis, x.ndim)
    try:
        index = np.repeat(np.arange(x.shape[ax]), rep)
    except ValueError as e:
        fail("repeat", f"repeats {repeats!r} do not fit axis {ax} of size {x.shape[ax]}: {e}")
    out, L, maps = _per_axis(x, lambda k: index if k == ax else None)
    return np.repeat(x, rep, axis=ax), (lambda: rule(out, L, *maps),)


# ---------------------------------------------------------------- relabelings: deltas and ones, no map

@defop("x", data="x", formula="dy/dx = deltas where sizes agree, ones on broadcast axes")
def broadcast_to(x, shape):
    """numpy's broadcast_to (the value is a copy that owns its data)."""
    shape = (shape,) if isinstance(shape, (numbers.Integral, np.integer)) else tuple(shape)
    try:
        y = np.array(np.broadcast_to(x, shape))
    except (ValueError, TypeError) as e:
        fail("broadcast_to", f"cannot broadcast x of shape {x.shape} to {shape}: {e}")
    L = lead(x.ndim)
    new = fresh(L)
    off = len(shape) - x.ndim
    out = "".join(next(new) for _ in range(off))
    out += "".join(L[k] if x.shape[k] == shape[off + k] else next(new) for k in range(x.ndim))
    return y, (lambda: rule(out, L),)


@defop("x", data="x", formula="dy/dx = deltas; the new axes of size 1 carry nothing")
def expand_dims(x, axis):
    """numpy's expand_dims: new axes of size 1 at ``axis`` (positions in the result)."""
    n = x.ndim + (len(axis) if isinstance(axis, (tuple, list)) else 1)
    axes = _axes("expand_dims", axis, n)
    L = lead(x.ndim)
    new = fresh(L)
    it = iter(L)
    out = "".join(next(new) if k in axes else next(it) for k in range(n))
    return np.expand_dims(x, axes).copy(), (lambda: rule(out, L),)


@defop("x", data="x", formula="dy/dx = deltas on the kept axes (the removed ones have size 1)")
def squeeze(x, axis=None):
    """numpy's squeeze: drop axes of size 1 (``axis``: only those, each of which must have size 1)."""
    if axis is None:
        axes = tuple(k for k, n in enumerate(x.shape) if n == 1)
    else:
        axes = _axes("squeeze", axis, x.ndim)
        bad = [k for k in axes if x.shape[k] != 1]
        if bad:
            fail("squeeze", f"cannot squeeze axis {bad[0]} of size {x.shape[bad[0]]} in x of shape {x.shape}")
    L = lead(x.ndim)
    out = "".join(L[k] for k in range(x.ndim) if k not in axes)
    return np.squeeze(x, axes).copy(), (lambda: rule(out, L),)


@defop("x", data="x", formula="dy/dx = deltas with the two axes exchanged")
def swapaxes(x, axis1, axis2):
    """numpy's swapaxes (on 3-D attention scores, ``swapaxes(k, -1, -2)`` is the per-sample transpose)."""
    a, b = _axis("swapaxes", axis1, x.ndim), _axis("swapaxes", axis2, x.ndim)
    L = list(lead(x.ndim))
    out = L.copy()
    out[a], out[b] = out[b], out[a]
    return np.swapaxes(x, a, b).copy(), (lambda: rule("".join(out), "".join(L)),)


@defop("x", data="x", formula="dy/dx = deltas with the axes moved")
def moveaxis(x, source, destination):
    """numpy's moveaxis: ``source`` axes to positions ``destination``, the others in order."""
    src = (source,) if isinstance(source, (numbers.Integral, np.integer)) else tuple(source)
    dst = (destination,) if isinstance(destination, (numbers.Integral, np.integer)) else tuple(destination)
    if len(src) != len(dst):
        fail("moveaxis", f"source {source!r} and destination {destination!r} must have the same number of axes")
    s = [_axis("moveaxis", a, x.ndim) for a in src]
    d = [_axis("moveaxis", a, x.ndim) for a in dst]
    if len(set(s)) != len(s) or len(set(d)) != len(d):
        fail("moveaxis", f"repeated axis in source {source!r} or destination {destination!r}")
    L = lead(x.ndim)
    order = [k for k in range(x.ndim) if k not in s]
    for dest, k in sorted(zip(d, s)):
        order.insert(dest, k)
    out = "".join(L[k] for k in order)
    return np.moveaxis(x, s, d).copy(), (lambda: rule(out, L),)


# ---------------------------------------------------------------- several arrays: helpers over the ops

def _concat_widths(op: str, shapes: list, axis) -> tuple[int, list]:
    if not shapes:
        fail(op, "needs at least one array")
    nd = len(shapes[0])
    if nd == 0:
        fail(op, "zero-dimensional arrays cannot be concatenated")
    ax = _axis(op, axis, nd)
    for k, s in enumerate(shapes):
        if len(s) != nd or s[:ax] + s[ax + 1:] != shapes[0][:ax] + shapes[0][ax + 1:]:
            fail(op, f"array {k} has shape {s}; all must match {shapes[0]} except along axis {ax}")
    total = sum(s[ax] for s in shapes)
    widths, start = [], 0
    for s in shapes:
        w = [(0, 0)] * nd
        w[ax] = (start, total - start - s[ax])
        widths.append(tuple(w))
        start += s[ax]
    return ax, widths


def _shape(a) -> tuple:
    """The shape of an array or of a traced value (which refuses np.shape)."""
    return tuple(a.shape) if hasattr(a, "shape") else np.shape(a)


def concatenate_in(ns, arrays, axis=0):
    """``np.concatenate`` over a namespace of ops (``jac.fn`` in traced code): a sum of ``ns.pad``s."""
    arrays = list(arrays)
    _, widths = _concat_widths("concatenate", [_shape(a) for a in arrays], axis)
    out = ns.pad(arrays[0], widths[0])
    for a, w in zip(arrays[1:], widths[1:]):
        out = ns.add(out, ns.pad(a, w))
    return out


def stack_in(ns, arrays, axis=0):
    """``np.stack`` over a namespace of ops: ``expand_dims`` then :func:`concatenate_in`."""
    arrays = list(arrays)
    if not arrays:
        fail("stack", "needs at least one array")
    if len({_shape(a) for a in arrays}) > 1:
        fail("stack", f"all arrays must have the same shape; got {[_shape(a) for a in arrays]}")
    ax = _axis("stack", axis, len(_shape(arrays[0])) + 1)
    return concatenate_in(ns, [ns.expand_dims(a, ax) for a in arrays], ax)


def _split_keys(x_shape, indices_or_sections, axis) -> list:
    nd = len(x_shape)
    if nd == 0:
        fail("split", "a zero-dimensional array cannot be split")
    ax = _axis("split", axis, nd)
    n = x_shape[ax]
    if isinstance(indices_or_sections, (numbers.Integral, np.integer)) and not isinstance(indices_or_sections, bool):
        k = int(indices_or_sections)
        if k <= 0 or n % k:
            fail("split", f"{k} sections do not divide axis {ax} of size {n} equally")
        bounds = [n // k * j for j in range(k + 1)]
    else:
        cuts = [min(max(int(c) + (n if c < 0 else 0), 0), n) for c in indices_or_sections]
        bounds = [0] + cuts + [n]
    return [(slice(None),) * ax + (slice(a, max(a, b)),) for a, b in zip(bounds[:-1], bounds[1:])]


def split_in(ns, x, indices_or_sections, axis=0):
    """``np.split`` over a namespace of ops: one ``ns.getitem`` (a slice) per piece."""
    return [ns.getitem(x, key) for key in _split_keys(_shape(x), indices_or_sections, axis)]


def concatenate(arrays, axis=0, batch: bool = True):
    """numpy's concatenate: the value and one Jacobian per array (each that array's ``pad`` map)."""
    arrays = [as_float_array("concatenate", f"arrays[{k}]", a) for k, a in enumerate(arrays)]
    ax, widths = _concat_widths("concatenate", [a.shape for a in arrays], axis)
    jacs = tuple(pad(a, w, batch=batch)[1][0] for a, w in zip(arrays, widths))
    return np.concatenate(arrays, axis=ax), jacs


def stack(arrays, axis=0, batch: bool = True):
    """numpy's stack: the value and one Jacobian per array."""
    arrays = [as_float_array("stack", f"arrays[{k}]", a) for k, a in enumerate(arrays)]
    if not arrays or len({a.shape for a in arrays}) > 1:
        fail("stack", f"needs arrays of one shape; got {[a.shape for a in arrays]}")
    ax = _axis("stack", axis, arrays[0].ndim + 1)
    value, jacs = concatenate([np.expand_dims(a, ax) for a in arrays], ax, batch=batch)
    return value, tuple(J.reshape(value.shape + (a.shape if J.ndim == value.ndim + a.ndim + 1 else a.shape[1:]))
                        for J, a in zip(jacs, arrays))


def split(x, indices_or_sections, axis=0, batch: bool = True):
    """numpy's split: a list of ``(piece, (Jacobian,))``, one ``getitem`` per piece."""
    return [getitem(x, key, batch=batch) for key in _split_keys(np.shape(x), indices_or_sections, axis)]
