"""The public transforms: ``jacobian`` and :class:`JacobianFunction`, with their plan cache;
``hessian``, ``jvp``, ``vjp`` and ``hvp`` beside it, sharing its argument handling (:class:`Transform`).

Every call runs the Python function again under the tracer (a fresh graph that
holds that call's values); only the contraction plan, which depends on shapes
alone, is cached: an LRU of plans keyed by the trace's structural signature
(:attr:`jacobians.graph.Graph.signature`; ``wrt``, ``batched`` and ``order`` are
fixed per function).  So a cached plan never gives what a fresh trace would
not (a rebound closure variable, a changed global or an attribute of an
argument are seen), and concurrent calls share nothing mutable: per-call
buffers, no lock around the computation (a lock guards only the cache's own
bookkeeping).

``jacobian(..., backend=...)`` runs the plan's contractions on an array backend
(:mod:`jacobians.backends`): arrays of another backend are converted to numpy where the
call enters (the ops compute values and factors on the host), and the Jacobians come back
as the backend's arrays.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from typing import Callable

import numpy as np

from . import hessians, products
from .backends import backend_of, get_backend, infer_backend, numpy as _numpy
from .errors import as_float_array
from .execute import StructureChanged, execute
from .graph import Graph, trace, unflatten
from .limits import device_limit, memory_limit
from .network import resolve_order
from .plan import Plan
from .planner import make_plan

__all__ = ["jacobian", "JacobianFunction", "hessian", "HessianFunction", "jvp", "vjp", "hvp", "ProductFunction",
           "CACHE_SIZE"]

CACHE_SIZE = 32  # plans kept per JacobianFunction (least recently used dropped first)

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


class Transform:
    """What every transform of a traced function shares: ``wrt`` and ``batched`` resolved to
    argument names, the call bound, ``wrt`` checked as float arrays, the function traced.

    ``what`` names the transform in errors (``jacobian``, ``hessian``, ``jvp``, ...)."""

    what = "jacobian"

    several_batched = True   # whether batched may name several arguments (jacobian: yes)

    def __init__(self, f: Callable, wrt, batched) -> None:
        if not callable(f):
            raise TypeError(f"{self.what}: f must be a function; got {type(f).__name__}")
        self.f = f
        self.signature = inspect.signature(f)
        self._params = self.signature.parameters
        self.single = isinstance(wrt, (str, int)) and not isinstance(wrt, bool)
        if self.single:
            wrt_list = [wrt]
        elif isinstance(wrt, (tuple, list)):
            wrt_list = list(wrt)
        else:
            raise TypeError(f"{self.what}: wrt must name an argument of {self._fname()} (a name or a position) "
                            f"or a tuple of them; got {wrt!r} ({type(wrt).__name__})")
        if not wrt_list:
            raise ValueError(f"{self.what}: wrt names no argument")
        self.wrt = [self._name(w, "wrt") for w in wrt_list]
        if batched is None or isinstance(batched, (str, int)):
            self.batched = None if batched is None else self._name(batched, "batched")
            self.batch_names = () if batched is None else (self.batched,)
        elif isinstance(batched, (tuple, list)) and batched:
            self.batch_names = tuple(dict.fromkeys(self._name(b, "batched") for b in batched))
            self.batched = self.batch_names
        else:
            raise TypeError(f"{self.what}: batched must name an argument of {self._fname()} (a name or a "
                            f"position) or a non-empty tuple of them; got {batched!r}")
        if len(self.batch_names) > 1 and not self.several_batched:
            raise TypeError(f"{self.what}: batched names one argument (several batched arguments are "
                            f"supported by jacobian only); got {batched!r}")
        # a function of plain parameters called positionally skips inspect's binding (per-call cost)
        self._plain = tuple(self._params) if all(
            p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in self._params.values()) else None

    def _fname(self) -> str:
        return f"{getattr(self.f, '__name__', 'f')}{self.signature}"

    def _name(self, w, what) -> str:
        params = list(self._params)
        if isinstance(w, int) and not isinstance(w, bool):
            if not -len(params) <= w < len(params):
                raise ValueError(f"{self.what}: {what}={w} is out of range for {self._fname()}")
            w = params[w]
        elif not isinstance(w, str):
            raise TypeError(f"{self.what}: {what} must be an argument name or position; got {w!r} "
                            f"({type(w).__name__}) for {self._fname()}")
        elif w not in params:
            raise ValueError(f"{self.what}: {what}={w!r} is not an argument of {self._fname()}")
        if self._params[w].kind in _VARIADIC:
            star = "*" if self._params[w].kind is inspect.Parameter.VAR_POSITIONAL else "**"
            raise ValueError(f"{self.what}: {what}={w!r} is {self._fname()}'s {star}{w}; the argument to "
                             f"differentiate must be a named parameter")
        return w

    def _check_batch(self, arguments) -> None:
        """Every batched argument has an axis 0, and all of them the same size (one per-sample batch)."""
        for name in self.batch_names:
            if np.ndim(arguments[name]) == 0:
                raise ValueError(f"{self.what}: batched={name!r} needs a leading batch axis; got a scalar")
        sizes = {name: np.shape(arguments[name]) for name in self.batch_names}
        if len({shape[0] for shape in sizes.values()}) > 1:
            listed = ", ".join(f"{n} {shape}" for n, shape in sizes.items())
            raise ValueError(f"{self.what}: batched={self.batched!r}: axis 0 must be the same batch in every "
                             f"batched argument; got {listed}")

    def _trace(self, args, kwargs) -> Graph:
        """Bind the call, check ``wrt`` and ``batched``, and trace ``f`` on it (a fresh graph)."""
        if self._plain is not None and not kwargs and len(args) == len(self._plain):
            bound = arguments = dict(zip(self._plain, args))
        else:
            bound = self.signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = bound.arguments
        # floating-point array arguments are traced; integer and boolean arrays (token ids, masks)
        # and numpy scalars are constants of the call, like Python numbers
        inputs = [k for k, v in arguments.items() if isinstance(v, np.ndarray) and v.dtype.kind in "fc"]
        for name in self.wrt:
            arguments[name] = as_float_array(self.what, name, arguments[name])
            if name not in inputs:
                inputs.append(name)
        if self.batch_names:
            self._check_batch(arguments)
        return trace(self.f, bound, inputs)


class JacobianFunction(Transform):
    """``jacobian(f, wrt, batched=..., order=...)``: call it like ``f`` to get explicit Jacobians.

    ``batched`` is the name given (None, one name, or a tuple of names); ``batch_names`` is
    always a tuple."""

    def __init__(self, f: Callable, wrt, batched, order, search_time: float | None = None,
                 backend: str | None = None) -> None:
        super().__init__(f, wrt, batched)
        resolve_order(order)  # fail early on unknown names
        if backend is not None:
            get_backend(backend)  # fail early on unknown names and missing packages
        self.backend = backend
        if search_time is not None and (isinstance(search_time, bool) or not isinstance(search_time, (int, float))
                                        or not search_time > 0):
            raise ValueError(f"jacobian: search_time must be a positive number of seconds; got {search_time!r}")
        self.order = order
        self.search_time = search_time
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, *args, **kwargs):
        xp, device, args, kwargs = self._boundary(args, kwargs)
        graph, plan, factors = self._trace_and_plan(args, kwargs, xp.device_memory(device))
        try:
            results = execute(plan, graph, factors, xp, device)
        except StructureChanged:
            if factors is not None:   # a fresh plan on this very graph: a rule broke its structure
                raise
            graph, plan, factors = self._trace_and_plan(args, kwargs, xp.device_memory(device), fresh=True)
            results = execute(plan, graph, factors, xp, device)
        if not graph.several:
            return results[self.wrt[0]] if self.single else results
        per_leaf = [results[(k, self.wrt[0])] if self.single else {n: results[(k, n)] for n in self.wrt}
                    for k in range(len(graph.leaves))]
        return unflatten(graph.tree, per_leaf)

    def plan(self, *args, **kwargs) -> Plan:
        """The contraction plan for these arguments (traces and plans, contracts nothing)."""
        return self.plan_and_graph(args, kwargs)[1]

    def plan_and_graph(self, args, kwargs) -> tuple[Graph, Plan]:
        """This call's graph (its values) and the plan for it."""
        xp, device, args, kwargs = self._boundary(args, kwargs)
        graph, plan, _ = self._trace_and_plan(args, kwargs, xp.device_memory(device))
        return graph, plan

    def _boundary(self, args, kwargs):
        """``(backend module, device, args, kwargs)`` for this call: the backend given or inferred
        from the arguments, the device of its first argument array (None: its default), and the
        arguments with every array of another backend converted to numpy (values and factors are
        computed on the host)."""
        values = args + tuple(kwargs.values()) if kwargs else args
        foreign = [v for v in values if backend_of(v) != "numpy"]
        if not foreign and self.backend is None:
            return _numpy, None, args, kwargs
        name = self.backend or infer_backend(*foreign)
        xp = get_backend(name)
        device = next((xp.device_of(v) for v in foreign if backend_of(v) == name), None)
        if foreign:
            host = lambda v: v if backend_of(v) == "numpy" else get_backend(backend_of(v)).to_numpy(v)
            args = tuple(map(host, args))
            kwargs = {k: host(v) for k, v in kwargs.items()}
        return xp, device, args, kwargs

    def _trace_and_plan(self, args, kwargs, device_bytes: int | None = None, fresh: bool = False
                        ) -> tuple[Graph, Plan, dict | None]:
        """Trace, then the cached plan for the trace's signature, or a new one (``fresh``: always new,
        replacing the cached one: a cached plan met a structure its key did not capture)."""
        graph = self._trace(args, kwargs)   # on the host, under the host's memory limit
        if device_bytes is None:
            return self._plan(graph, fresh)
        with device_limit(device_bytes):    # the plan's sizes: against the limit of the device it runs on
            return self._plan(graph, fresh)

    def _plan(self, graph: Graph, fresh: bool = False) -> tuple[Graph, Plan, dict | None]:
        key = graph.signature
        if key is not None:
            key = (memory_limit(), key)   # sizes are checked and slices chosen against the limit
            with self._lock:
                plan = None if fresh else self._cache.get(key)
                if plan is not None:
                    self._cache.move_to_end(key)
            if plan is not None:
                return graph, plan, None
        factors: dict = {}
        plan = make_plan(graph, self.wrt, self.order, self.batch_names, factors, self.search_time)
        if key is not None:
            with self._lock:
                self._cache[key] = plan
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        return graph, plan, factors


def jacobian(f: Callable, wrt=0, *, batched=None, order="optimal", search_time: float | None = None,
             backend: str | None = None) -> JacobianFunction:
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
    An output that depends on no wrt argument (or a constant) gives zeros.  Zeros for an
    output ``(B, *O)`` that does not depend on a batched argument ``x`` ``(B, *I)`` are
    per-sample ``(B, *O, *I)`` when the same output's Jacobian w.r.t. another batched
    wrt argument is per-sample (the output is a per-sample value), else ``(*out, B, *I)``.  The outputs
    share one trace and one plan: reverse accumulation sweeps from each output, forward
    accumulation plans each ``d v / d x`` once for all outputs; ``optimal`` picks the cheaper.
    ``order`` is ``"optimal"`` (default), ``"forward"``, ``"reverse"``, ``"bracket"``,
    ``"markowitz"``, an explicit opt_einsum path for a single chain, or an
    :class:`~jacobians.elimination.Elimination`; all give the same tensor.  On a branching
    graph ``"optimal"`` searches vertex-elimination orders for at most ``search_time``
    seconds (default about half a second).

    ``backend`` (``"numpy"``, ``"torch"``, ``"jax"``, ``"cupy"``; default: inferred from the
    arguments, numpy for numpy arrays) is where the plan's contractions run and what kind of
    arrays the Jacobians are (torch tensors for torch inputs, on their device); the ops'
    values and factors are computed with numpy on the host either way (:mod:`jacobians.backends`).

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
    return JacobianFunction(f, wrt, batched, order, search_time, backend)


class HessianFunction(Transform):
    """``hessian(f, wrt, batched=...)``: call it like ``f`` to get explicit Hessians."""

    what = "hessian"
    several_batched = False

    def __call__(self, *args, **kwargs):
        graph = self._trace(args, kwargs)
        blocks = hessians.hessian(graph, self.wrt, self.batched)
        return blocks[self.wrt[0], self.wrt[0]] if self.single else blocks


class ProductFunction(Transform):
    """``jvp``/``vjp``/``hvp`` of ``f``: call it like ``f`` plus ``tangent=`` (``cotangent=`` for vjp)."""

    several_batched = False

    def __init__(self, f: Callable, wrt, batched, what: str) -> None:
        self.what = what
        super().__init__(f, wrt, batched)
        self.key = "cotangent" if what == "vjp" else "tangent"

    def __call__(self, *args, **kwargs):
        if self.key not in kwargs:
            raise TypeError(f"{self.what}: pass the {self.key} as {self.key}=... (an array shaped like "
                            + ("the output" if self.what == "vjp" else "wrt, or a dict of them by name") + ")")
        vector = kwargs.pop(self.key)
        graph = self._trace(args, kwargs)
        y = products.output_value(graph)
        if self.what == "vjp":
            u = self._check(vector, y.shape, "the output")
            out = products.vjp(graph, self.wrt, u)
            return y, (out[self.wrt[0]] if self.single else out)
        if self.single:
            vector = {self.wrt[0]: vector}
        elif not isinstance(vector, dict) or set(vector) != set(self.wrt):
            got = sorted(vector) if isinstance(vector, dict) else type(vector).__name__
            raise TypeError(f"{self.what}: with several wrt the tangent is a dict with one array per name "
                            f"{self.wrt}; got {got}")
        tangents = {w: self._check(vector[w], graph.nodes[graph.inputs[w]].value.shape, w) for w in self.wrt}
        if self.what == "jvp":
            return y, products.jvp(graph, tangents)
        if y.ndim != 0:
            raise ValueError(f"hvp: f must return a scalar (its Hessian-vector product); got shape {y.shape}")
        out = products.hvp(graph, tangents)
        return y, (out[self.wrt[0]] if self.single else out)

    def _check(self, v, shape, name) -> np.ndarray:
        v = as_float_array(self.what, f"{self.key} for {name}", v)
        if v.shape != tuple(shape):
            raise ValueError(f"{self.what}: {self.key} for {name}: expected shape {tuple(shape)}, got {v.shape}")
        return v


def hessian(f: Callable, wrt=0, *, batched=None) -> HessianFunction:
    """Hessians of ``f`` as explicit tensors: shape ``out + in + in`` (``wrt`` a tuple: a dict of
    every block ``{(p, q): out + in_p + in_q}``).

    With ``batched`` the Hessian w.r.t. that argument is per sample, ``(B, *out, *in, *in)``, when
    samples are independent (the batch is one symbolic delta, never ``(B, .., B, ..)`` zeros).
    Computed by forward propagation of factored first and second derivatives
    (:mod:`jacobians.hessians`): the Hessian of ``x^T A x`` is ``A + A^T``, written once.

    >>> import numpy as np, jacobians as jac
    >>> A = np.arange(4.0).reshape(2, 2)
    >>> jac.hessian(lambda x: jac.fn.dot(x, A @ x))(np.ones(2))
    array([[0., 3.],
           [3., 6.]])
    """
    return HessianFunction(f, wrt, batched)


def jvp(f: Callable, wrt=0, *, batched=None) -> ProductFunction:
    """``y, J v = jvp(f, wrt)(*args, tangent=v)``: one forward sweep, J never formed.

    ``tangent`` has the shape of ``wrt`` (several wrt: a dict by name; J v sums them).  ``batched``
    is accepted for symmetry with :func:`jacobian`; the batch is simply an axis of the tangent.

    >>> import numpy as np, jacobians as jac
    >>> jac.jvp(lambda x: jac.fn.tanh(x))(np.zeros(2), tangent=np.ones(2))
    (array([0., 0.]), array([1., 1.]))
    """
    return ProductFunction(f, wrt, batched, "jvp")


def vjp(f: Callable, wrt=0, *, batched=None) -> ProductFunction:
    """``y, u^T J = vjp(f, wrt)(*args, cotangent=u)``: one reverse sweep, J never formed.

    ``cotangent`` has the output's shape; the result has the shape of ``wrt`` (several: a dict).

    >>> import numpy as np, jacobians as jac
    >>> jac.vjp(lambda x: x.sum())(np.arange(3.0), cotangent=np.array(2.0))[1]
    array([2., 2., 2.])
    """
    return ProductFunction(f, wrt, batched, "vjp")


def hvp(f: Callable, wrt=0, *, batched=None) -> ProductFunction:
    """``y, H v = hvp(f, wrt)(*args, tangent=v)`` for a scalar ``f``: forward-over-reverse, H never formed.

    Several wrt: ``tangent`` and the result are dicts, ``(H v)_p = sum_q H_pq v_q``.

    >>> import numpy as np, jacobians as jac
    >>> jac.hvp(lambda x: jac.fn.sum(x ** 3))(np.ones(2), tangent=np.array([1.0, 0.0]))[1]
    array([6., 0.])
    """
    return ProductFunction(f, wrt, batched, "hvp")
