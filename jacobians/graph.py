"""Tracing: a Python function of the toolkit's ops becomes a graph of nodes.

``jacobians.fn.<op>`` is every op of :mod:`jacobians.ops` returning only its
value.  Called on numpy arrays it is plain numpy; called on a traced value it
also records a node.  Traced values support ``+ - * / @ **``, unary ``-``,
``.T``, ``.sum()``, ``.mean()``, ``.reshape()`` and the numpy ufuncs that are
toolkit ops (``np.tanh(h)`` is ``fn.tanh(h)``).  Tracing is eager: values are
computed while the graph is recorded.  A graph belongs to one call (it holds that
call's values); its :attr:`Graph.signature` (ops, argument references, constant
shapes, parameters, value shapes and dtypes, never values) is what a plan is
cached by.  A function may return one array or a tuple, list, namedtuple or dict
of them (nested): :attr:`Graph.leaves` holds the arrays in order, :attr:`Graph.tree`
their nesting, and :func:`unflatten` puts per-output results back in that shape.
"""

from __future__ import annotations

import linecache
import os
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np

from . import ops as _ops
from .errors import as_float_array
from .ops.indexing import concatenate_in as _concatenate_in, split_in as _split_in, stack_in as _stack_in

__all__ = ["Traced", "TracedBool", "TraceContext", "Graph", "Node", "trace", "unflatten", "describe_tree", "fn",
           "numpy_table"]


@dataclass
class Node:
    """An input (``op is None``) or one op applied to nodes and constants."""

    name: str
    op: _ops.Op | None = None
    args: tuple = ()            # per array argument: int (a node), ("const", array) or None
    params: dict = field(default_factory=dict)
    value: np.ndarray | None = None
    builders: tuple = ()        # lazy Factored per array argument (None: absent or not differentiable)
    where: tuple = field(default=(), compare=False, repr=False)  # (code, line, lasti) of the user's frames

    def parents(self):
        return [(k, a) for k, a in enumerate(self.args) if isinstance(a, int)]


class Graph:
    """Nodes in the order they were recorded (a topological order), with one call's values."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.inputs: dict[str, int] = {}
        self.leaves: list = []          # per output array: its node index, or a constant ndarray
        self.tree = None                # how the leaves nest (None: f returned one array); see unflatten
        self._keys: list = []           # per node, its structural key (None: not hashable)

    def add(self, node: Node) -> int:
        self.nodes.append(node)
        self._keys.append(_node_key(node))
        return len(self.nodes) - 1

    @property
    def signature(self) -> tuple | None:
        """The structure of the trace, hashable, or None when a parameter cannot be hashed.

        Per node: the op's name (an input: its name), each array argument as a node index,
        ``None`` or a constant's shape and dtype, the static parameters, the value's shape and
        dtype; then the output's nesting and per output array its node (a constant: shape, dtype).
        Two traces with equal signatures have equal plans."""
        if None in self._keys:
            return None
        leaves = tuple(l if type(l) is int else (l.shape, l.dtype.str) for l in self.leaves)
        return (*self._keys, (self.tree, leaves))

    @property
    def several(self) -> bool:
        """Whether f returned a structure of arrays (a tuple, list or dict) rather than one array."""
        return self.tree is not None

    @property
    def outputs(self) -> list[int | None]:
        """Per output array (the leaves of f's result, in order): its node, or None for a constant."""
        return [l if type(l) is int else None for l in self.leaves]

    @property
    def output(self) -> int | None:
        """The output node of a function that returns one array (None: it returned a constant).

        Raises ValueError for a function that returns several: a tool that takes one output
        must be told which (``compare(..., output=k)``)."""
        self._one("the output")
        leaf = self.leaves[0] if self.leaves else None
        return leaf if type(leaf) is int else None

    @property
    def constant_output(self) -> np.ndarray | None:
        """The array a function returning one constant returned (None: a traced output)."""
        self._one("the output")
        leaf = self.leaves[0] if self.leaves else None
        return None if leaf is None or type(leaf) is int else leaf

    def _one(self, what: str) -> None:
        if self.several:
            raise ValueError(f"{what}: the function returns {describe_tree(self.tree)}, not one array; "
                             f"pick one (compare(..., output=k) takes output k)")

    def between(self, sources: set[int], targets: set[int] | None = None) -> set[int]:
        """Nodes on some path from ``sources`` to ``targets`` (default: every output node), both included."""
        if targets is None:
            targets = {l for l in self.leaves if type(l) is int}
        fwd = set(sources)
        for i, node in enumerate(self.nodes):
            if any(p in fwd for _, p in node.parents()):
                fwd.add(i)
        rel = {t for t in targets if t in fwd}
        for i in range(len(self.nodes) - 1, -1, -1):
            if i in rel:
                rel.update(p for _, p in self.nodes[i].parents() if p in fwd)
        return rel

    def describe(self, i: int) -> str:
        n = self.nodes[i]
        return f"{n.name} {tuple(np.shape(n.value))}"


class _Unhashable(Exception):
    pass


def _hashable(v):
    """``v`` as a hashable value (lists become tuples); raises _Unhashable when it has none."""
    if isinstance(v, (list, tuple)):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    if isinstance(v, np.ndarray):   # an index array (E[ids], take): plans depend on its shape, not its values
        return ("ndarray", v.shape, v.dtype.str)
    if isinstance(v, slice):   # unhashable before Python 3.12: x[..., 1:3] would re-plan every call
        return ("slice", _hashable(v.start), _hashable(v.stop), _hashable(v.step))
    try:
        hash(v)
    except TypeError:
        raise _Unhashable from None
    return v


def _ref_key(a):
    if a is None or type(a) is int:
        return a
    arr = a[1]
    return (np.shape(arr), getattr(arr, "dtype", np.dtype(type(arr))).str)


def _node_key(node: Node):
    value = node.value
    if node.op is None:
        return (node.name, value.shape, value.dtype.str)
    params = node.params
    try:
        params = tuple((k, _hashable(v)) for k, v in params.items()) if params else ()
    except _Unhashable:
        return None
    return (node.op.name, tuple(map(_ref_key, node.args)), params, value.shape, value.dtype.str)


class Traced:
    """A value recorded in a graph.

    Python operators, ndarray methods and numpy functions on traced values mean what
    they mean in numpy, or raise a ``TypeError`` naming the numpy function and what to
    use instead (the table: :func:`numpy_table`).  ``+ - * / @``, ``**`` with a constant
    exponent, unary ``- + abs()``; ``.sum .mean .max .min`` (``axis``, ``keepdims``),
    ``.reshape .ravel .transpose .T`` (``.T`` reverses all axes, as numpy: use
    ``.swapaxes(-1, -2)`` for the last two, e.g. in attention), ``.swapaxes .clip .dot``.

    Comparisons (``< <= > >= == !=``) give a :class:`TracedBool`: a boolean constant of
    this trace, with no Jacobian, recomputed on every call; ``x * (x > 0.5)``,
    ``np.where(x > 0, x, 0.1 * x)`` work, ``if x > 0:`` does not.
    """

    __array_priority__ = 1000
    __slots__ = ("graph", "index")

    def __init__(self, graph: Graph, index: int) -> None:
        self.graph, self.index = graph, index

    @property
    def value(self) -> np.ndarray:
        return self.graph.nodes[self.index].value

    shape = property(lambda self: self.value.shape)
    ndim = property(lambda self: self.value.ndim)
    dtype = property(lambda self: self.value.dtype)
    size = property(lambda self: self.value.size)
    T = property(lambda self: fn.transpose(self))  # numpy: all axes reversed
    mT = property(lambda self: self.swapaxes(-1, -2))

    def __len__(self) -> int:
        return len(self.value)

    def __repr__(self) -> str:
        return f"Traced({self.graph.describe(self.index)})"

    __add__ = lambda self, o: fn.add(self, o)
    __radd__ = lambda self, o: fn.add(o, self)
    __sub__ = lambda self, o: fn.subtract(self, o)
    __rsub__ = lambda self, o: fn.subtract(o, self)
    __mul__ = lambda self, o: fn.multiply(self, o)
    __rmul__ = lambda self, o: fn.multiply(o, self)
    __truediv__ = lambda self, o: fn.divide(self, o)
    __rtruediv__ = lambda self, o: fn.divide(o, self)
    __matmul__ = lambda self, o: fn.matmul(self, o)
    __rmatmul__ = lambda self, o: fn.matmul(o, self)
    __neg__ = lambda self: fn.negative(self)
    __pos__ = lambda self: self
    __abs__ = lambda self: fn.abs(self)
    __pow__ = lambda self, p: _power(self, p)
    __rpow__ = lambda self, b: _power(b, self)

    # comparisons: boolean constants of the trace (numpy's meaning), never a Python bool
    __lt__ = lambda self, o: _compare(np.less, "<", self, o)
    __le__ = lambda self, o: _compare(np.less_equal, "<=", self, o)
    __gt__ = lambda self, o: _compare(np.greater, ">", self, o)
    __ge__ = lambda self, o: _compare(np.greater_equal, ">=", self, o)
    __eq__ = lambda self, o: _compare(np.equal, "==", self, o)
    __ne__ = lambda self, o: _compare(np.not_equal, "!=", self, o)
    __hash__ = object.__hash__  # identity, as before

    # ndarray's methods, with ndarray's signatures
    def sum(self, axis=None, dtype=None, out=None, keepdims=False, initial=np._NoValue, where=True):
        return _np_sum(self, axis, dtype, out, keepdims, initial, where)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False, *, where=True):
        return _np_mean(self, axis, dtype, out, keepdims, where=where)

    def max(self, axis=None, out=None, keepdims=False, initial=np._NoValue, where=True):
        return _np_extreme("max", fn.amax, self, axis, out, keepdims, initial, where)

    def min(self, axis=None, out=None, keepdims=False, initial=np._NoValue, where=True):
        return _np_extreme("min", fn.amin, self, axis, out, keepdims, initial, where)

    def reshape(self, *shape, order="C", copy=None):
        if not shape:
            raise TypeError("reshape: a shape is required (e.g. x.reshape(3, -1) or x.reshape((3, -1)))")
        return _np_reshape(self, shape[0] if len(shape) == 1 and not isinstance(shape[0], (int, np.integer))
                           else shape, order)

    def ravel(self, order="C"):
        return _np_ravel(self, order)

    flatten = ravel  # a copy in numpy; values are never written in place here

    def transpose(self, *axes):
        return fn.transpose(self, axes[0] if len(axes) == 1 and not isinstance(axes[0], (int, np.integer))
                            else (axes or None))

    def swapaxes(self, axis1, axis2):
        return _np_swapaxes(self, axis1, axis2)

    def clip(self, min=np._NoValue, max=np._NoValue, out=None, **kwargs):
        return _np_clip(self, min, max, out, **kwargs)

    def dot(self, b, out=None):
        return _np_dot(self, b, out)

    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
        if np.dtype(dtype) == self.dtype:
            return self
        raise TypeError(f"jacobians: {self!r}.astype({np.dtype(dtype)}): a traced value keeps its dtype "
                        f"{self.dtype} (a cast is not an op); cast the inputs before the call")

    def __bool__(self):
        raise TypeError(
            f"jacobians: a Python branch (if, while, and/or, bool()) on a traced value "
            f"{self.graph.describe(self.index)} cannot be traced: the composer records one computation "
            f"for all inputs; write the choice with ops (np.where, np.maximum, relu, x * (x > 0))")

    def __float__(self):
        raise TypeError(f"jacobians: float() or int() of a traced value {self.graph.describe(self.index)} "
                        f"cannot be traced")

    __int__ = __index__ = __float__

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError(f"jacobians: iteration over a 0-d traced value {self.graph.describe(self.index)}")
        return (self[i] for i in range(len(self)))   # numpy's meaning: the rows

    def __getitem__(self, key):
        """numpy's indexing (the op getitem): integers, slices, None, Ellipsis, and constant integer or
        boolean arrays (a comparison of traced values is a constant mask of this call)."""
        key = _unwrap(key)
        if any(isinstance(k, Traced) for k in (key if isinstance(key, tuple) else (key,))):
            raise TypeError(f"jacobians: indexing {self.graph.describe(self.index)} with a traced value: an "
                            f"index must be a constant (integers, slices, integer or boolean arrays)")
        if isinstance(key, list):  # numpy treats a list as an integer or boolean array
            key = np.asarray(key)
        return fn.getitem(self, key)

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            f"jacobians: a traced value {self.graph.describe(self.index)} was passed to a function the "
            f"tracer does not know (numpy, or jacobians.ops which returns Jacobians); inside a traced "
            f"function use jacobians.fn.<op>")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _apply_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        handler = _FUNCTIONS.get(func)
        if handler is None:
            raise TypeError(_not_mapped(func, self))
        return handler(*args, **kwargs)


class TracedBool:
    """A comparison of traced values: a boolean array that is a constant of the trace.

    It has no Jacobian (a comparison is piecewise constant) and, since the function
    runs again on every call, it is recomputed from each call's inputs.  It combines
    with ``~ & | ^ == !=`` and numpy's logical functions; used with a traced value it
    is promoted to the value's float dtype (``x * (x > 0)``).  ``bool()`` (``if``,
    ``while``, ``and``/``or``) on it raises: one recorded computation serves all inputs.
    """

    __array_priority__ = 1000
    __slots__ = ("graph", "value", "origin")

    def __init__(self, graph: Graph, value: np.ndarray, origin: str) -> None:
        self.graph, self.value, self.origin = graph, value, origin

    shape = property(lambda self: self.value.shape)
    ndim = property(lambda self: self.value.ndim)
    dtype = property(lambda self: self.value.dtype)
    size = property(lambda self: self.value.size)
    T = property(lambda self: TracedBool(self.graph, self.value.T, f"({self.origin}).T"))

    def __len__(self) -> int:
        return len(self.value)

    def __repr__(self) -> str:
        return f"TracedBool({self.origin}, shape {self.value.shape})"

    def __bool__(self):
        raise TypeError(
            f"jacobians: a Python branch (if, while, and/or, bool()) on a comparison of traced values "
            f"({self.origin}) cannot be traced: the composer records one computation for all inputs; "
            f"write the choice with ops: np.where(cond, a, b), x * (x > 0), np.maximum, relu")

    def astype(self, dtype, *args, **kwargs):
        return self.value.astype(dtype, *args, **kwargs)  # numbers: a constant of this call

    def __array__(self, dtype=None, copy=None):
        return self.value if dtype is None else self.value.astype(dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if any(isinstance(v, Traced) for v in inputs):
            return NotImplemented  # Traced.__array_ufunc__ takes it
        return _constant(self.graph, getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs)),
                         f"np.{ufunc.__name__}({self.origin})")

    def __array_function__(self, func, types_, args, kwargs):
        if Traced in types_:
            return NotImplemented
        return _constant(self.graph, func(*_unwrap(args), **_unwrap(kwargs)), f"np.{func.__name__}({self.origin})")

    __invert__ = lambda self: np.invert(self)
    __and__ = lambda self, o: np.bitwise_and(self, o)
    __rand__ = lambda self, o: np.bitwise_and(o, self)
    __or__ = lambda self, o: np.bitwise_or(self, o)
    __ror__ = lambda self, o: np.bitwise_or(o, self)
    __xor__ = lambda self, o: np.bitwise_xor(self, o)
    __rxor__ = lambda self, o: np.bitwise_xor(o, self)
    __eq__ = lambda self, o: np.equal(self, o)
    __ne__ = lambda self, o: np.not_equal(self, o)
    __add__ = lambda self, o: np.add(self, o)
    __radd__ = lambda self, o: np.add(o, self)
    __sub__ = lambda self, o: np.subtract(self, o)
    __rsub__ = lambda self, o: np.subtract(o, self)
    __mul__ = lambda self, o: np.multiply(self, o)
    __rmul__ = lambda self, o: np.multiply(o, self)
    __truediv__ = lambda self, o: np.divide(self, o)
    __rtruediv__ = lambda self, o: np.divide(o, self)
    __hash__ = object.__hash__
    any = lambda self, *a, **k: np.any(self, *a, **k)
    all = lambda self, *a, **k: np.all(self, *a, **k)
    sum = lambda self, *a, **k: np.sum(self, *a, **k)
    reshape = lambda self, *shape: TracedBool(self.graph, self.value.reshape(*shape), self.origin)


def _unwrap(v):
    if isinstance(v, TracedBool):
        return v.value
    if isinstance(v, (list, tuple)):
        return type(v)(_unwrap(x) for x in v)
    if isinstance(v, dict):
        return {k: _unwrap(x) for k, x in v.items()}
    return v


def _constant(graph: Graph, result, what: str):
    """A numpy result computed from masks: boolean results stay guarded against Python branches."""
    if isinstance(result, (np.ndarray, np.bool_)) and result.dtype == np.bool_:
        return TracedBool(graph, np.asarray(result), what)
    return result


def _compare(ufunc, symbol: str, a, b) -> TracedBool:
    t = a if isinstance(a, Traced) else b
    other = b if t is a else a
    if isinstance(other, Traced) and other.graph is not t.graph:
        raise ValueError(f"jacobians: comparing traced values from two different traces")
    va, vb = (x.value if isinstance(x, (Traced, TracedBool)) else x for x in (a, b))
    desc = lambda x: x.graph.describe(x.index) if isinstance(x, Traced) else (
        repr(x) if np.ndim(x) == 0 else f"an array {np.shape(x)}")
    return TracedBool(t.graph, np.asarray(ufunc(va, vb)), f"{desc(a)} {symbol} {desc(b)}")


# ---------------------------------------------------------------- numpy's names on traced values
# A numpy function or ufunc called on a traced value means exactly what numpy means, or raises a
# TypeError naming it.  The map comes from the op registry (each Op.numpy names the numpy functions
# the op implements with the same positional arguments); adapters below translate numpy signatures
# the ops do not share (axis/keepdims with dtype/out/where only at their defaults, np.dot's cases).

def _display(func) -> str:
    name = getattr(func, "__name__", repr(func))
    module = [p for p in (getattr(func, "__module__", None) or "numpy").split(".")[1:] if not p.startswith("_")]
    return ".".join(["np", *module, name])


def _defaults(name: str, **given) -> None:
    """Refuse numpy arguments the toolkit does not implement unless they are at numpy's defaults."""
    for arg, value in given.items():
        default = _DEFAULTS[arg]
        if arg == "out" and isinstance(value, tuple) and all(v is None for v in value):
            continue
        if value is default or (isinstance(value, str) and value == default):
            continue
        if isinstance(value, tuple) and len(value) == 1:  # a ufunc's out=
            value = value[0]
        shown = f"an array {np.shape(_unwrap(value))}" if isinstance(value, (np.ndarray, Traced, TracedBool)) else (
            "arrays" if isinstance(value, tuple) else repr(value))
        raise TypeError(f"{name}: {arg}={shown} is not supported on traced values (only numpy's default, "
                        f"{arg}={default!r}); {_HINTS.get(arg, 'leave it out')}")


_DEFAULTS = {"out": None, "dtype": None, "where": True, "initial": np._NoValue, "casting": "same_kind",
             "order": "K", "subok": True, "signature": None, "axes": None, "axis": None, "keepdims": False}
_HINTS = {"dtype": "cast the inputs before the call (the result has their float dtype)",
          "out": "use the returned value (traced values are never written in place)",
          "where": "multiply by the mask or use np.where(mask, x, 0) before the reduction",
          "initial": "combine with np.maximum / np.minimum after the reduction",
          "order": "only C order is implemented"}


def _shape(v) -> tuple:
    return tuple(v.shape) if isinstance(v, (Traced, TracedBool)) else np.shape(v)


def _ndim(v) -> int:
    return len(_shape(v))


def _power(x, p):
    if isinstance(p, (Traced, TracedBool)) or np.ndim(p) != 0:
        raise TypeError("jacobians: only a constant scalar exponent is supported in x ** p and np.power(x, p) "
                        "(a traced or array exponent: np.exp(p * np.log(x)))")
    if not isinstance(x, Traced):
        return np.power(x, p)
    return fn.square(x) if p == 2 else fn.power(x, float(p))


def _np_sum(a, axis=None, dtype=None, out=None, keepdims=False, initial=np._NoValue, where=True):
    _defaults("np.sum", dtype=dtype, out=out, initial=initial, where=where)
    return fn.sum(a, axis=axis, keepdims=bool(keepdims) if keepdims is not np._NoValue else False)


def _np_mean(a, axis=None, dtype=None, out=None, keepdims=False, *, where=True):
    _defaults("np.mean", dtype=dtype, out=out, where=where)
    return fn.mean(a, axis=axis, keepdims=bool(keepdims) if keepdims is not np._NoValue else False)


def _np_extreme(name, op, a, axis=None, out=None, keepdims=False, initial=np._NoValue, where=True):
    _defaults(f"np.{name}", out=out, initial=initial, where=where)
    return op(a, axis=axis, keepdims=bool(keepdims) if keepdims is not np._NoValue else False)


def _np_reshape(a, shape=None, order="C", *, newshape=None, copy=None):
    if order != "C":
        raise TypeError(f"np.reshape: order={order!r} is not supported on traced values (only 'C')")
    shape = newshape if shape is None else shape
    return fn.reshape(a, tuple(shape) if isinstance(shape, (list, tuple)) else (shape,))


def _np_ravel(a, order="C"):
    if order != "C":
        raise TypeError(f"np.ravel: order={order!r} is not supported on traced values (only 'C')")
    return fn.reshape(a, (-1,))


def _np_transpose(a, axes=None):
    return fn.transpose(a, axes)


def _np_swapaxes(a, axis1, axis2):
    n = _ndim(a)
    for ax in (axis1, axis2):
        if not -n <= ax < n:
            raise ValueError(f"np.swapaxes: axis {ax} is out of range for {n} dimensions")
    perm = list(range(n))
    perm[axis1 % n], perm[axis2 % n] = perm[axis2 % n], perm[axis1 % n]
    return fn.transpose(a, tuple(perm))


def _np_moveaxis(a, source, destination):
    n = _ndim(a)
    src = [source] if isinstance(source, (int, np.integer)) else list(source)
    dst = [destination] if isinstance(destination, (int, np.integer)) else list(destination)
    if len(src) != len(dst) or any(not -n <= ax < n for ax in src + dst):
        raise ValueError(f"np.moveaxis: source {source} and destination {destination} must be as many "
                         f"axes in range for {n} dimensions")
    src, dst = [s % n for s in src], [d % n for d in dst]
    order = [k for k in range(n) if k not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return fn.transpose(a, tuple(order))


def _np_dot(a, b, out=None):
    """numpy's dot: a product by a scalar, matmul for a 1-D or 2-D b (or a 1-D a); otherwise the sum
    over a's last axis and b's second-to-last: (*A, n) . (*K, n, m) -> (*A, *K, m)."""
    _defaults("np.dot", out=out)
    na, nb = _ndim(a), _ndim(b)
    if na == 0 or nb == 0:
        return fn.multiply(a, b)
    if nb <= 2 or na == 1:
        return fn.matmul(a, b)
    A, K, m = _shape(a)[:-1], _shape(b)[:-2], _shape(b)[-1]
    a_ = fn.reshape(a, A + (1,) * len(K) + (1, -1))       # (*A, 1.., 1, n) @ (*K, n, m) -> (*A, *K, 1, m)
    return fn.reshape(fn.matmul(a_, b), A + K + (m,))


def _np_take(a, indices, axis=None, out=None, mode="raise"):
    _defaults("np.take", out=out)
    if mode != "raise":
        raise TypeError(f"np.take: mode={mode!r} is not supported on traced values (only 'raise')")
    if isinstance(indices, (Traced, TracedBool)):
        raise TypeError("np.take: the indices must be a constant integer array, not a traced value")
    if not isinstance(a, Traced):
        return np.take(a, indices, axis)
    return fn.take(a, indices, axis)


def _np_concatenate(arrays, axis=0, out=None, dtype=None, casting="same_kind"):
    _defaults("np.concatenate", out=out, dtype=dtype, casting=casting)
    arrays = [_unwrap(a) for a in arrays]
    if axis is None:
        arrays, axis = [fn.reshape(a, (-1,)) for a in arrays], 0
    return _concatenate_in(fn, arrays, axis)


def _np_stack(arrays, axis=0, out=None, dtype=None, casting="same_kind"):
    _defaults("np.stack", out=out, dtype=dtype, casting=casting)
    return _stack_in(fn, [_unwrap(a) for a in arrays], axis)


def _np_where(condition, x=np._NoValue, y=np._NoValue):
    if x is np._NoValue or y is np._NoValue:
        raise TypeError("np.where(condition) with one argument (the indices of nonzero entries) is not "
                        "supported on traced values; use np.where(condition, x, y)")
    if isinstance(condition, Traced):
        condition = _compare(np.not_equal, "!=", condition, 0.0)
    if not any(isinstance(v, Traced) for v in (x, y)):
        return np.where(_unwrap(condition), x, y)  # a constant of this call
    return fn.where(condition, x, y)


def _np_clip(a, a_min=np._NoValue, a_max=np._NoValue, out=None, *, min=np._NoValue, max=np._NoValue, **kwargs):
    _defaults("np.clip", out=out, **kwargs)
    lo = a_min if a_min is not np._NoValue else min
    hi = a_max if a_max is not np._NoValue else max
    lo, hi = (None if v is np._NoValue else v for v in (lo, hi))
    if isinstance(lo, Traced) or isinstance(hi, Traced):  # numpy defines clip as minimum(maximum(a, lo), hi)
        y = a if lo is None else fn.maximum(a, lo)
        return y if hi is None else fn.minimum(y, hi)
    return fn.clip(a, lo, hi)


def _ufunc_defaults(name: str, kwargs: dict) -> None:
    for arg in kwargs:
        if arg not in _DEFAULTS:
            raise TypeError(f"{name}: keyword {arg}= is not supported on traced values")
    _defaults(name, **kwargs)


_REFUSED_HINTS = {"reduce": "np.sum / jac.fn.sum", "accumulate": "no cumulative op exists",
                  "outer": "broadcasting: a[:, None] * b[None, :] is np.multiply.outer for 1-D a, b",
                  "at": "traced values are never written in place", "reduceat": "no segment op exists"}


def _apply_ufunc(ufunc, method, inputs, kwargs):
    name = f"np.{ufunc.__name__}"
    if method != "__call__":
        raise TypeError(f"jacobians: {name}.{method} is not supported on traced values "
                        f"(use {_REFUSED_HINTS.get(method, 'the ufunc itself')})")
    handler = _UFUNCS.get(ufunc)
    if handler is None:
        raise TypeError(_not_mapped(ufunc, next((v for v in inputs if isinstance(v, Traced)), None)))
    if kwargs:
        _ufunc_defaults(name, kwargs)
    return handler(*inputs)


def _not_mapped(func, traced) -> str:
    name = _display(func)
    short = getattr(func, "__name__", "")
    hint = f"the ops are: {', '.join(sorted(_ops.OPS))}"
    if short in _ops.OPS:
        doc = (_ops.OPS[short].__doc__ or "").strip().split("\n")[0]
        hint = f"jacobians.fn.{short} is not numpy's {short} ({doc}); call it explicitly if that is what you mean"
    return (f"jacobians: {name} is not a toolkit op and cannot be traced (called on {traced!r}); {hint}")


_REDUCE = "axis, keepdims; {} only at numpy's defaults"
_ADAPTERS = {  # numpy object -> (handler, what it maps to)
    np.sum: (_np_sum, "op sum (" + _REDUCE.format("dtype/out/initial/where") + ")"),
    np.mean: (_np_mean, "op mean (" + _REDUCE.format("dtype/out/where") + ")"),
    **{f: ((lambda name, op: lambda a, *r, **k: _np_extreme(name, getattr(fn, op), a, *r, **k))(f.__name__, op),
           f"op {op} (" + _REDUCE.format("out/initial/where") + ")")
       for f, op in ((np.max, "amax"), (np.amax, "amax"), (np.min, "amin"), (np.amin, "amin"))},
    np.reshape: (_np_reshape, "op reshape (order='C' only)"),
    np.ravel: (_np_ravel, "op reshape to (-1,) (order='C' only)"),
    np.transpose: (_np_transpose, "op transpose"),
    np.swapaxes: (_np_swapaxes, "op transpose (two axes swapped)"),
    np.moveaxis: (_np_moveaxis, "op transpose (axes moved)"),
    np.dot: (_np_dot, "op multiply (a 0-d factor), matmul (1-D a, or 1-D/2-D b), "
                      "reshape + matmul + reshape (N-D a, b of 3+ dims)"),
    np.where: (_np_where, "op where (condition constant: a comparison; a traced condition means != 0)"),
    np.clip: (_np_clip, "op clip (constant bounds), maximum + minimum (traced bounds)"),
    np.shape: (_shape, "the shape (a constant)"), np.ndim: (_ndim, "the number of dimensions (a constant)"),
    np.size: (lambda a, axis=None: int(np.prod(_shape(a))) if axis is None else _shape(a)[axis],
              "the size (a constant)"),
    np.power: (_power, "op square (p == 2) or power (a constant scalar p)"),
    np.take: (lambda a, indices, axis=None, out=None, mode="raise": _np_take(a, indices, axis, out, mode),
              "op take (out=None, mode='raise' only)"),
    np.concatenate: (lambda arrays, axis=0, out=None, **kw: _np_concatenate(arrays, axis, out, **kw),
                     "op pad per array, summed (concatenate_in; axis=None flattens first)"),
    np.stack: (lambda arrays, axis=0, out=None, **kw: _np_stack(arrays, axis, out, **kw),
               "op expand_dims + pad per array, summed (stack_in)"),
    np.split: (lambda ary, indices_or_sections, axis=0: _split_in(fn, ary, indices_or_sections, axis),
               "op getitem per piece (a list of traced values)"),
    np.pad: (lambda array, pad_width, mode="constant", **kw: fn.pad(array, pad_width, mode, **kw),
             "op pad (mode='constant', a scalar constant_values)"),
    np.flip: (lambda m, axis=None: fn.flip(m, axis), "op flip"),
    np.roll: (lambda a, shift, axis=None: fn.roll(a, shift, axis), "op roll"),
    np.tile: (lambda A, reps: fn.tile(A, reps), "op tile"),
    np.repeat: (lambda a, repeats, axis=None: fn.repeat(a, repeats, axis), "op repeat"),
    np.broadcast_to: (lambda array, shape, subok=False: fn.broadcast_to(array, shape), "op broadcast_to"),
    np.expand_dims: (lambda a, axis: fn.expand_dims(a, axis), "op expand_dims"),
    np.squeeze: (lambda a, axis=None: fn.squeeze(a, axis), "op squeeze"),
    np.positive: (lambda x: x, "the value itself"),
    **{u: ((lambda u, s: lambda a, b: _compare(u, s, a, b))(u, s), "a TracedBool (a boolean constant of the trace)")
       for u, s in ((np.less, "<"), (np.less_equal, "<="), (np.greater, ">"), (np.greater_equal, ">="),
                    (np.equal, "=="), (np.not_equal, "!="))},
}


def _registry_handler(op: _ops.Op):
    return getattr(fn, op.name)


def _build_numpy_map():
    """(ufuncs, functions, table): numpy object -> handler, and name -> what it maps to (for docs)."""
    ufuncs, functions, table = {}, {}, {}
    for op in _ops.OPS.values():
        for path in op.numpy:
            obj = np
            for part in path.split("."):
                obj = getattr(obj, part, None)
            if obj is None:  # not in this numpy version
                continue
            (ufuncs if isinstance(obj, np.ufunc) else functions)[obj] = _registry_handler(op)
            table[_display(obj) if not isinstance(obj, np.ufunc) else f"np.{obj.__name__}"] = f"op {op.name}"
    for obj, (handler, what) in _ADAPTERS.items():
        if obj not in functions and obj not in ufuncs:  # an op with exactly numpy's signature wins
            (ufuncs if isinstance(obj, np.ufunc) else functions)[obj] = handler
            table[f"np.{obj.__name__}" if isinstance(obj, np.ufunc) else _display(obj)] = what
    return ufuncs, functions, dict(sorted(table.items()))


def numpy_table() -> dict[str, str]:
    """Every numpy function and ufunc that works on traced values, and the op or adapter it maps to."""
    return dict(_TABLE)


# ---------------------------------------------------------------- ops as traced functions

class TraceContext(NamedTuple):
    """Where a traced op call failed, attached to the error as ``err.trace_context``.

    ``inputs`` maps each argument to what was passed (``"tanh_0 (3, 5)"`` for a traced value,
    ``"(4,)"`` for a constant array), ``traced`` names the traced ones; ``shapes`` maps arguments
    to shapes; ``before`` lists the nodes traced before this one; ``message`` is the op's own
    message, ``original`` its error.  ``where()`` is the caller as ``"net() at model.py:12"``."""

    op: str
    node: str
    inputs: dict
    traced: frozenset
    shapes: dict
    filename: str | None
    lineno: int | None
    function: str | None
    line: str
    before: tuple
    message: str
    original: BaseException

    def where(self) -> str:
        if self.filename is None:
            return ""
        return f"{self.function}() at {os.path.basename(self.filename)}:{self.lineno}"


_HERE = os.path.abspath(__file__)
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__))


def _caller():
    """The first frame outside this module and numpy: the user's line that called the op."""
    f = sys._getframe(2)
    while f is not None and (f.f_code.co_filename == _HERE or f.f_code.co_filename.startswith(_NUMPY_DIR)):
        f = f.f_back
    return f


def _where(depth: int = 8) -> tuple:
    """``(code, line, lasti)`` of the user's frames that made an op, innermost first: explain reads
    the function's own frame to name a node after the variable it is assigned to."""
    frame, out = _caller(), []
    while frame is not None and len(out) < depth:
        out.append((frame.f_code, frame.f_lineno, frame.f_lasti))
        frame = frame.f_back
    return tuple(out)


def _with_context(e: Exception, op: _ops.Op, graph: Graph, args, kwargs) -> Exception:
    """The same exception type, its message followed by the op's node, inputs and the caller's line."""
    try:
        bound = dict(op.signature.bind_partial(*args, **kwargs).arguments)
    except TypeError:
        bound = {f"arg{i}": a for i, a in enumerate(args)} | dict(kwargs)
    node = f"{op.name}_{_counts(graph).get(op, 0)}"
    inputs, shapes = {}, {}
    for name, a in bound.items():
        if isinstance(a, Traced):
            shapes[name] = tuple(a.shape)
            inputs[name] = graph.describe(a.index)
        elif isinstance(a, (np.ndarray, TracedBool)) or (isinstance(a, (list, tuple)) and name in op.arrays):
            shapes[name] = tuple(np.shape(_unwrap(a)))
            inputs[name] = f"{tuple(np.shape(_unwrap(a)))}"
        elif name in op.arrays and a is not None:
            inputs[name] = repr(a)
    frame = _caller()
    filename = lineno = function = None
    line = ""
    if frame is not None:
        filename, lineno, function = frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name
        line = linecache.getline(filename, lineno).strip()
    message = " ".join(str(e).split())
    before = tuple(graph.describe(i) for i, n in enumerate(graph.nodes) if n.op is not None)
    traced = frozenset(k for k, a in bound.items() if isinstance(a, Traced))
    ctx = TraceContext(op.name, node, inputs, traced, shapes, filename, lineno, function, line, before, message, e)
    described = ", ".join(f"{k} = {v}" if k in traced else f"{k} {v}" for k, v in inputs.items())
    text = f"{message} (at {node} = {op.name}({described})" + (f", called from {ctx.where()}" if filename else "") + ")"
    try:
        new = type(e)(text)
    except Exception:  # an exception type with another constructor: keep it, add the context as a note
        new = e
        e.add_note(text)
    new.trace_context = ctx
    return new


def _counts(graph: Graph) -> dict:
    counts = graph.__dict__.get("_op_counts")
    if counts is None:
        counts = graph.__dict__["_op_counts"] = {}
    return counts


_TRACE_TYPES = (Traced, TracedBool)


def _traced_op(op: _ops.Op) -> Callable:
    params_ = list(op.signature.parameters.values())
    # positional arguments map to parameter names by position unless the signature has *args
    names = tuple(p.name for p in params_) if all(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params_) else None
    float_arrays = frozenset(a for a in op.arrays if a not in op.nondiff)
    array_names = frozenset(op.arrays)
    known = frozenset(op.signature.parameters)

    def call(*args, **kwargs):
        found = [(k, v) for k, v in enumerate(args) if isinstance(v, _TRACE_TYPES)]
        found += [(k, v) for k, v in kwargs.items() if isinstance(v, _TRACE_TYPES)]
        if not found:
            return op.evaluate(*op.bind(args, kwargs))[0]
        graph = found[0][1].graph
        if any(v.graph is not graph for _, v in found):
            raise ValueError(f"{op.name}: traced values from two different traces were mixed")
        if not any(isinstance(v, Traced) for _, v in found):  # masks only: a constant of this call
            return call(*_unwrap(args), **_unwrap(kwargs))
        try:
            if names is None or len(args) > len(names):
                by_name = op.signature.bind(*args, **kwargs).arguments
                where = {k: n for n, v in by_name.items() for k, w in found if w is v}
            else:
                where = {k: (names[k] if isinstance(k, int) else k) for k, _ in found}
        except TypeError as e:
            raise _with_context(TypeError(f"{op.name}: {e}; signature is {op.name}{op.signature}"),
                                op, graph, args, kwargs) from None
        nodes, masks = {}, []
        for k, v in found:
            name = where.get(k)
            if name in known and name not in array_names:
                raise TypeError(f"{op.name}: argument {name} must be a constant, not a traced value")
            if isinstance(v, Traced):
                nodes[name] = v.index
            else:
                masks.append(name)
        values = list(args)
        kw = dict(kwargs)
        for k, v in found:
            (values.__setitem__ if isinstance(k, int) else kw.__setitem__)(k, v.value)
        if masks and any(m in float_arrays for m in masks):  # a bool constant takes the float dtype
            floats = [graph.nodes[i].value for i in nodes.values()]
            dtype = np.result_type(*floats) if floats else np.float64
            for k, v in found:
                if isinstance(v, TracedBool) and where.get(k) in float_arrays:
                    (values.__setitem__ if isinstance(k, int) else kw.__setitem__)(k, v.value.astype(dtype))
        try:
            arrays, params = op.bind(values, kw)
            value, builders = op.evaluate(arrays, params)
        except (ValueError, TypeError, ArithmeticError) as e:
            raise _with_context(e, op, graph, args, kwargs) from e
        refs = tuple(nodes[a] if a in nodes else (None if arrays.get(a) is None else ("const", arrays[a]))
                     for a in op.arrays)
        counts = _counts(graph)
        count = counts.get(op, 0)
        counts[op] = count + 1
        node = Node(f"{op.name}_{count}", op, refs, params, value, builders, _where())
        return Traced(graph, graph.add(node))

    call.__name__ = op.name
    call.__qualname__ = f"fn.{op.name}"
    call.__doc__ = (op.__doc__ or "") + "\n\nTraced form: returns the value only (see jacobians.graph)."
    return call


fn = types.SimpleNamespace(**{name: _traced_op(op) for name, op in _ops.OPS.items()})
fn.__doc__ = ("Every op of jacobians.ops returning its value only; traceable by jacobians.jacobian; "
              "also concatenate, stack and split (numpy's, over the ops pad, expand_dims and getitem).")
fn.concatenate = lambda arrays, axis=0: _np_concatenate(arrays, axis)
fn.stack = lambda arrays, axis=0: _np_stack(arrays, axis)
fn.split = lambda ary, indices_or_sections, axis=0: _split_in(fn, ary, indices_or_sections, axis)
_UFUNCS, _FUNCTIONS, _TABLE = _build_numpy_map()


def trace(f: Callable, bound, inputs: list[str]) -> Graph:
    """Run ``f`` on ``bound`` with the arguments ``inputs`` traced.

    ``bound`` is an ``inspect.BoundArguments``, or a dict holding every parameter of ``f`` in
    order (all positional-or-keyword), which is passed positionally."""
    graph = Graph()
    arguments = bound if isinstance(bound, dict) else bound.arguments
    for name in inputs:
        graph.inputs[name] = graph.add(Node(name, value=np.asarray(arguments[name])))
        arguments[name] = Traced(graph, graph.inputs[name])
    out = f(*arguments.values()) if isinstance(bound, dict) else f(*bound.args, **bound.kwargs)
    found: list = []
    graph.tree = _flatten(out, found, "the function's output")
    if not found:
        raise ValueError(f"jacobian: the function returned {describe_tree(graph.tree)}: no output array")
    for value, where in found:
        if isinstance(value, Traced):
            if value.graph is not graph:
                raise ValueError(f"jacobian: {where} is a value traced in another call")
            graph.leaves.append(value.index)
        else:
            graph.leaves.append(as_float_array("jacobian", where, value))
    return graph


# ---------------------------------------------------------------- several outputs

_CONTAINERS = (tuple, list, dict)


def _flatten(out, found: list, where: str):
    """The nesting of ``out`` (tuples, lists, namedtuples, dicts of arrays), its arrays appended to ``found``.

    A leaf is ``None``; a container is ``(type, children)``, a dict's children ``((key, child), ...)``."""
    kind = type(out)
    if kind in _CONTAINERS or (isinstance(out, tuple) and hasattr(kind, "_fields")):
        if kind is dict:
            return dict, tuple((k, _flatten(v, found, f"{where}[{k!r}]")) for k, v in out.items())
        return kind, tuple(_flatten(v, found, f"{where}[{i}]") for i, v in enumerate(out))
    found.append((out, where))
    return None


def unflatten(tree, leaves):
    """``leaves`` (in order) placed back into the nesting ``tree`` recorded by :func:`trace`."""
    it = iter(leaves)

    def build(t):
        if t is None:
            return next(it)
        kind, children = t
        if kind is dict:
            return {k: build(c) for k, c in children}
        values = [build(c) for c in children]
        return kind(*values) if hasattr(kind, "_fields") else kind(values)
    return build(tree)


def describe_tree(tree) -> str:
    """``"a tuple of 2"``, ``"a dict with keys 'h', 'c'"``: what a function returned, for messages."""
    if tree is None:
        return "one array"
    kind, children = tree
    if kind is dict:
        return "a dict with keys " + ", ".join(repr(k) for k, _ in children) if children else "an empty dict"
    return f"a {kind.__name__} of {len(children)}"
