"""The public transforms: ``jacobian`` and :class:`JacobianFunction`, with their plan cache.

Every call runs the Python function again under the tracer (a fresh graph that
holds that call's values); only the contraction plan, which depends on shapes
alone, is cached: an LRU of plans keyed by the trace's structural signature
(:attr:`jacobians.graph.Graph.signature`; ``wrt``, ``batched`` and ``order`` are
fixed per function).  So a cached plan never gives what a fresh trace would
not (a rebound closure variable, a changed global or an attribute of an
argument are seen), and concurrent calls share nothing mutable: per-call
buffers, no lock around the computation (a lock guards only the cache's own
bookkeeping).
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from typing import Callable

import numpy as np

from .errors import as_float_array
from .execute import execute
from .graph import Graph, trace, unflatten
from .limits import memory_limit
from .network import resolve_order
from .plan import Plan
from .planner import make_plan

__all__ = ["jacobian", "JacobianFunction", "CACHE_SIZE"]

CACHE_SIZE = 32  # plans kept per JacobianFunction (least recently used dropped first)

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


class JacobianFunction:
    """``jacobian(f, wrt, batched=..., order=...)``: call it like ``f`` to get explicit Jacobians.

    ``batched`` is the name given (None, one name, or a tuple of names); ``batch_names`` is
    always a tuple."""

    def __init__(self, f: Callable, wrt, batched, order) -> None:
        if not callable(f):
            raise TypeError(f"jacobian: f must be a function; got {type(f).__name__}")
        self.f = f
        self.signature = inspect.signature(f)
        self._params = self.signature.parameters
        self.single = isinstance(wrt, (str, int)) and not isinstance(wrt, bool)
        if self.single:
            wrt_list = [wrt]
        elif isinstance(wrt, (tuple, list)):
            wrt_list = list(wrt)
        else:
            raise TypeError(f"jacobian: wrt must name an argument of {self._fname()} (a name or a position) "
                            f"or a tuple of them; got {wrt!r} ({type(wrt).__name__})")
        if not wrt_list:
            raise ValueError("jacobian: wrt names no argument")
        self.wrt = [self._name(w, "wrt") for w in wrt_list]
        if batched is None or isinstance(batched, (str, int)):
            self.batched = None if batched is None else self._name(batched, "batched")
            self.batch_names = () if batched is None else (self.batched,)
        elif isinstance(batched, (tuple, list)) and batched:
            self.batch_names = tuple(dict.fromkeys(self._name(b, "batched") for b in batched))
            self.batched = self.batch_names
        else:
            raise TypeError(f"jacobian: batched must name an argument of {self._fname()} (a name or a "
                            f"position) or a non-empty tuple of them; got {batched!r}")
        resolve_order(order)  # fail early on unknown names
        self.order = order
        # a function of plain parameters called positionally skips inspect's binding (per-call cost)
        self._plain = tuple(self._params) if all(
            p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in self._params.values()) else None
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def _fname(self) -> str:
        return f"{getattr(self.f, '__name__', 'f')}{self.signature}"

    def _name(self, w, what) -> str:
        params = list(self._params)
        if isinstance(w, int) and not isinstance(w, bool):
            if not -len(params) <= w < len(params):
                raise ValueError(f"jacobian: {what}={w} is out of range for {self._fname()}")
            w = params[w]
        elif not isinstance(w, str):
            raise TypeError(f"jacobian: {what} must be an argument name or position; got {w!r} "
                            f"({type(w).__name__}) for {self._fname()}")
        elif w not in params:
            raise ValueError(f"jacobian: {what}={w!r} is not an argument of {self._fname()}")
        if self._params[w].kind in _VARIADIC:
            star = "*" if self._params[w].kind is inspect.Parameter.VAR_POSITIONAL else "**"
            raise ValueError(f"jacobian: {what}={w!r} is {self._fname()}'s {star}{w}; the argument to "
                             f"differentiate must be a named parameter")
        return w

    def _check_batch(self, arguments) -> None:
        """Every batched argument has an axis 0, and all of them the same size (one per-sample batch)."""
        for name in self.batch_names:
            if np.ndim(arguments[name]) == 0:
                raise ValueError(f"jacobian: batched={name!r} needs a leading batch axis; got a scalar")
        sizes = {name: np.shape(arguments[name]) for name in self.batch_names}
        if len({shape[0] for shape in sizes.values()}) > 1:
            listed = ", ".join(f"{n} {shape}" for n, shape in sizes.items())
            raise ValueError(f"jacobian: batched={self.batched!r}: axis 0 must be the same batch in every "
                             f"batched argument; got {listed}")

    def __call__(self, *args, **kwargs):
        graph, plan, factors = self._trace_and_plan(args, kwargs)
        results = execute(plan, graph, factors)
        if not graph.several:
            return results[self.wrt[0]] if self.single else results
        per_leaf = [results[(k, self.wrt[0])] if self.single else {n: results[(k, n)] for n in self.wrt}
                    for k in range(len(graph.leaves))]
        return unflatten(graph.tree, per_leaf)

    def plan(self, *args, **kwargs) -> Plan:
        """The contraction plan for these arguments (traces and plans, contracts nothing)."""
        return self._trace_and_plan(args, kwargs)[1]

    def plan_and_graph(self, args, kwargs) -> tuple[Graph, Plan]:
        """This call's graph (its values) and the plan for it."""
        graph, plan, _ = self._trace_and_plan(args, kwargs)
        return graph, plan

    def _trace_and_plan(self, args, kwargs) -> tuple[Graph, Plan, dict | None]:
        if self._plain is not None and not kwargs and len(args) == len(self._plain):
            bound = arguments = dict(zip(self._plain, args))
        else:
            bound = self.signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
        # array arguments are traced (numpy scalars are constants, like Python numbers)
        inputs = [k for k, v in arguments.items() if type(v) is np.ndarray or isinstance(v, np.ndarray)]
        for name in self.wrt:
            arguments[name] = as_float_array("jacobian", name, arguments[name])
            if name not in inputs:
                inputs.append(name)
        if self.batch_names:
            self._check_batch(arguments)
        graph = trace(self.f, bound, inputs)
        key = graph.signature
        if key is not None:
            key = (memory_limit(), key)   # sizes are checked and slices chosen against the limit
            with self._lock:
                plan = self._cache.get(key)
                if plan is not None:
                    self._cache.move_to_end(key)
            if plan is not None:
                return graph, plan, None
        factors: dict = {}
        plan = make_plan(graph, self.wrt, self.order, self.batch_names, factors)
        if key is not None:
            with self._lock:
                self._cache[key] = plan
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        return graph, plan, factors


def jacobian(f: Callable, wrt=0, *, batched=None, order="optimal") -> JacobianFunction:
    """Jacobians of ``f`` (a function of :data:`jacobians.fn` ops) as explicit tensors.

    ``wrt`` names the arguments (names or positions; one name gives an array,
    a tuple gives a dict).  ``batched`` names the argument (or a tuple of arguments)
    whose axis 0 is the per-sample batch (the same batch in each: sizes must agree):
    the Jacobian w.r.t. each is per-sample ``(B, *out, *in)`` where samples are
    independent, and the full ``(B, *out, B, *in)`` where they interact.

    ``f`` may return one array or a tuple, list, namedtuple or dict of arrays
    (nested as deep as you like); the Jacobians come back in the same structure,
    the output structure outside and the wrt dict inside (as ``jax.jacobian`` of a
    pytree output): for ``f`` returning ``(h, c)``, ``wrt="x"`` gives ``(dh/dx, dc/dx)``
    and ``wrt=("x", "W")`` gives ``({"x": dh/dx, "W": dh/dW}, {"x": dc/dx, "W": dc/dW})``;
    a dict output ``{"h": h}`` gives ``{"h": dh/dx}`` or ``{"h": {"x": ..., "W": ...}}``.
    An output that depends on no wrt argument (or a constant) gives zeros.  The outputs
    share one trace and one plan: reverse accumulation sweeps from each output, forward
    accumulation plans each ``d v / d x`` once for all outputs; ``optimal`` picks the cheaper.
    ``order`` is ``"optimal"`` (default), ``"forward"``, ``"reverse"`` or an
    explicit opt_einsum path for a single chain; all give the same tensor.

    Every call runs ``f`` again; only the contraction plan, which depends on shapes
    alone, is cached.  Calls from several threads are safe (per-call buffers, no lock).

    >>> import numpy as np, jacobians as jac
    >>> def net(x, W):
    ...     return jac.fn.tanh(jac.fn.linear(x, W))
    >>> x, W = np.ones((4, 3)), np.full((2, 3), 0.1)
    >>> jac.jacobian(net, wrt="x", batched="x")(x, W).shape
    (4, 2, 3)
    >>> def two(x, W):
    ...     h = jac.fn.linear(x, W)
    ...     return jac.fn.tanh(h), h
    >>> [J.shape for J in jac.jacobian(two, wrt="x", batched="x")(x, W)]
    [(4, 2, 3), (4, 2, 3)]
    """
    return JacobianFunction(f, wrt, batched, order)
