"""Tracing: a Python function of the toolkit's ops becomes a graph of nodes.

``jacobians.fn.<op>`` is every op of :mod:`jacobians.ops` returning only its
value.  Called on numpy arrays it is plain numpy; called on a traced value it
also records a node.  Traced values support ``+ - * / @ **``, unary ``-``,
``.T``, ``.sum()``, ``.mean()``, ``.reshape()`` and the numpy ufuncs that are
toolkit ops (``np.tanh(h)`` is ``fn.tanh(h)``).  Tracing is eager: values are
computed while the graph is recorded.  A graph belongs to one call (it holds that
call's values); its :attr:`Graph.signature` (ops, argument references, constant
shapes, parameters, value shapes and dtypes, never values) is what a plan is
cached by.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import ops as _ops
from .errors import as_float_array

__all__ = ["Traced", "Graph", "Node", "trace", "fn"]


@dataclass
class Node:
    """An input (``op is None``) or one op applied to nodes and constants."""

    name: str
    op: _ops.Op | None = None
    args: tuple = ()            # per array argument: int (a node), ("const", array) or None
    params: dict = field(default_factory=dict)
    value: np.ndarray | None = None
    builders: tuple = ()        # lazy Factored per array argument (None: absent or not differentiable)

    def parents(self):
        return [(k, a) for k, a in enumerate(self.args) if isinstance(a, int)]


class Graph:
    """Nodes in the order they were recorded (a topological order), with one call's values."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.inputs: dict[str, int] = {}
        self.output: int | None = None
        self.constant_output: np.ndarray | None = None
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
        dtype; then the output.  Two traces with equal signatures have equal plans."""
        if None in self._keys:
            return None
        out = self.constant_output
        tail = (self.output, None if out is None else (out.shape, out.dtype.str))
        return (*self._keys, tail)

    def between(self, sources: set[int]) -> set[int]:
        """Nodes on some path from ``sources`` to the output (sources and output included)."""
        fwd = set(sources)
        for i, node in enumerate(self.nodes):
            if any(p in fwd for _, p in node.parents()):
                fwd.add(i)
        rel = {self.output} if self.output in fwd else set()
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
    if isinstance(v, np.ndarray):
        raise _Unhashable
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
    """A value recorded in a graph."""

    __array_priority__ = 1000

    def __init__(self, graph: Graph, index: int) -> None:
        self.graph, self.index = graph, index

    @property
    def value(self) -> np.ndarray:
        return self.graph.nodes[self.index].value

    shape = property(lambda self: self.value.shape)
    ndim = property(lambda self: self.value.ndim)
    dtype = property(lambda self: self.value.dtype)
    size = property(lambda self: self.value.size)
    T = property(lambda self: fn.transpose(self))

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

    def __pow__(self, p):
        if isinstance(p, Traced) or np.ndim(p) != 0:
            raise TypeError("jacobians.fn: only a constant scalar exponent is supported in x ** p")
        return fn.square(self) if p == 2 else fn.power(self, float(p))

    def sum(self, axis=None, keepdims=False):
        return fn.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return fn.mean(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        return fn.reshape(self, shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape)

    def transpose(self, *axes):
        return fn.transpose(self, axes[0] if len(axes) == 1 and not isinstance(axes[0], int) else (axes or None))

    def __bool__(self):
        raise TypeError(
            f"jacobians: a Python branch (if, while, and/or, bool()) on a traced value "
            f"{self.graph.describe(self.index)} cannot be traced: the composer records one computation "
            f"for all inputs; write the choice with ops (relu, leaky_relu, multiply by a mask constant)")

    def _compare(self, other):  # h > 0 would otherwise fail with Python's "'>' not supported"
        raise TypeError(
            f"jacobians: comparing a traced value {self.graph.describe(self.index)} (<, <=, >, >=, ==, !=) is a "
            f"Python branch on data, which cannot be traced: the composer records one computation for all "
            f"inputs; write the choice with ops (relu, leaky_relu, multiply by a mask constant)")

    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = _compare
    __hash__ = object.__hash__  # identity, as before: only == is refused

    def __float__(self):
        raise TypeError(f"jacobians: float() of a traced value {self.graph.describe(self.index)} cannot be traced")

    def __iter__(self):
        raise TypeError(f"jacobians: iterating over a traced value {self.graph.describe(self.index)} "
                        f"is not supported; index ops are not part of the toolkit")

    def __getitem__(self, key):
        raise TypeError(f"jacobians: indexing a traced value {self.graph.describe(self.index)} is not "
                        f"supported by the composer; use reshape/transpose/sum, or pass the piece as an argument")

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            f"jacobians: a traced value {self.graph.describe(self.index)} was passed to a function the "
            f"tracer does not know (numpy, or jacobians.ops which returns Jacobians); inside a traced "
            f"function use jacobians.fn.<op>")

    # numpy ufuncs that are toolkit ops: each op declares the numpy names with exactly its meaning
    _UFUNCS = {n: op.name for op in _ops.OPS.values() for n in op.numpy if isinstance(getattr(np, n, None), np.ufunc)}

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = self._UFUNCS.get(ufunc.__name__)
        if method != "__call__" or name is None or kwargs:
            raise TypeError(f"jacobians: np.{ufunc.__name__} is not a toolkit op and cannot be traced; "
                            f"the ops are: {', '.join(sorted(_ops.OPS))}")
        return getattr(fn, name)(*inputs)

    def __array_function__(self, func, types_, args, kwargs):
        name = func.__name__
        if name in _ops.OPS and name not in ("add", "subtract", "multiply", "divide"):
            return getattr(fn, name)(*args, **kwargs)
        raise TypeError(f"jacobians: np.{name} is not a toolkit op and cannot be traced; "
                        f"the ops are: {', '.join(sorted(_ops.OPS))}")


def _traced_op(op: _ops.Op) -> Callable:
    def call(*args, **kwargs):
        if not _has_traced(args, kwargs):
            return op.evaluate(*op.bind(args, kwargs))[0]
        bound = op.arguments(args, kwargs)  # precompiled signature.bind with defaults applied
        graphs = {v.graph for v in bound.values() if isinstance(v, Traced)}
        if len(graphs) > 1:
            raise ValueError(f"{op.name}: traced values from two different traces were mixed")
        graph, = graphs
        refs, values, params = [], {}, {}
        for name, v in bound.items():
            if name not in op.arrays:
                if isinstance(v, Traced):
                    raise TypeError(f"{op.name}: argument {name} must be a constant, not a traced value")
                params[name] = v
        for name in op.arrays:
            v = bound.get(name)
            if isinstance(v, Traced):
                refs.append(v.index)
                values[name] = v.value
            elif v is None:
                refs.append(None)
                values[name] = None
            else:
                values[name] = v
                refs.append(None)
        arrays, params = op.bind((), {**values, **params})
        for k, name in enumerate(op.arrays):
            if refs[k] is None and arrays.get(name) is not None:
                refs[k] = ("const", arrays[name])
        value, builders = op.evaluate(arrays, params)
        count = sum(1 for n in graph.nodes if n.op is op)
        index = graph.add(Node(f"{op.name}_{count}", op, tuple(refs), params, value, builders))
        return Traced(graph, index)

    call.__name__ = op.name
    call.__doc__ = (op.__doc__ or "") + "\n\nTraced form: returns the value only (see jacobians.graph)."
    return call


def _has_traced(args, kwargs) -> bool:
    return any(isinstance(v, Traced) for v in args) or any(isinstance(v, Traced) for v in kwargs.values())


fn = types.SimpleNamespace(**{name: _traced_op(op) for name, op in _ops.OPS.items()})
fn.__doc__ = "Every op of jacobians.ops returning its value only; traceable by jacobians.jacobian."


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
    if isinstance(out, Traced):
        if out.graph is not graph:
            raise ValueError("jacobian: the function returned a value traced in another call")
        graph.output = out.index
    else:
        if isinstance(out, (tuple, list)):
            raise TypeError("jacobian: the function must return one array (tuples of outputs are not supported)")
        graph.constant_output = as_float_array("jacobian", "the function's output", out)
    return graph
