"""The empirical neural tangent kernel, and per-sample gradient norms, without forming J.

For ``f(x, *params)`` with a per-sample batch ``x`` and ``J(x)[a, o, p] = d f(x)[a, o] / d p``
(summed over every ``wrt`` parameter), the empirical NTK is

    Theta[a, b, o, o'] = sum_p J(x1)[a, o, p] J(x2)[b, o', p]        (N1, N2, *O, *O)

Neither Jacobian is formed.  A reverse sweep from the output stops one segment short of each
parameter (:func:`jacobians.planner.open_reverse`): it accumulates the blocks ``G = d out / d z``
at the branch points and leaves the last links open, as factored einsum terms.  The two open
networks (one per input batch) are contracted against each other over the parameter's labels
with the cheapest path, so a linear layer ``z = h W^T + b``, whose ``dz/dW`` is the symbolic
``delta (x) h``, contributes ``(G1 G2^T) * (h1 . h2 + 1)`` -- the *structured derivatives* of
Novak et al. (ICML 2022, neural-tangents), found here by the path search rather than written per
layer.  Paths that share the block ``G`` (a weight and its bias) share its product.

The work is chunked over samples of both batches (``chunk`` samples per block, chosen from
:func:`jacobians.memory_limit` when not given) when samples are independent; with ``x2=None``
only the blocks on and above the diagonal are contracted (the kernel is symmetric).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .chunked import independent_samples
from .execute import execute
from .graph import Graph
from .limits import check_bytes, format_bytes, memory_limit
from .network import Network, aligned, resolve_order
from .plan import Link, Slot
from .planner import compute_itemsize, open_reverse
from .transforms import Transform

__all__ = ["ntk", "NTKFunction", "sample_grad_norms", "chunked_ntk", "ChunkedNTK"]

_SECOND = 60000   # the second batch's labels: the first's code points shifted past the surrogates
_OPTIMAL = resolve_order("optimal")


class _Side:
    """One batch chunk: its trace, the open chains per wrt, their arrays, label sizes and output labels."""

    def __init__(self, graph: Graph, wrt: list[str]) -> None:
        factors: dict = {}
        plan, self.chains, self.sizes = open_reverse(graph, wrt, factors, compute_itemsize(graph))
        blocks = execute(plan, graph, factors)
        nodes = graph.nodes
        self.dtype = np.dtype(plan.dtype)

        def array(src):
            if isinstance(src, Slot):
                return blocks[src.index]
            f = factors.get((src.node, src.arg)) or nodes[src.node].builders[src.arg]()
            return f.terms[src.operand][1]
        self.arrays = {n: [[array(s) for s in c.sources] for c in cs] for n, cs in self.chains.items()}
        self.out_shape = np.shape(nodes[graph.output].value)


def _second(label: str) -> str:
    code = ord(label) + _SECOND
    if ord(label) >= _SECOND:
        raise ValueError("ntk: the traced function has too many axes to label both batches apart")
    return chr(code)


def _contract(terms: list[tuple[str, np.ndarray]], output: str, sizes: dict, what: str) -> np.ndarray:
    """``einsum(terms -> output)`` on the cheapest path, in slices of an output label if an
    intermediate would exceed the memory limit."""
    net = Network(tuple(t for t, _ in terms), tuple(tuple(sizes[l] for l in t) for t, _ in terms), output)
    path = _OPTIMAL(net)
    cost = net.cost(path)
    itemsize = max(np.asarray(a).dtype.itemsize for _, a in terms)
    target = max(1, memory_limit() // (4 * itemsize))
    chunk = net.chunking(path, target) if cost.largest_intermediate > target else None
    largest = cost.largest_intermediate if chunk is None else -(-cost.largest_intermediate // chunk[1])
    check_bytes(largest * itemsize, f"an intermediate of {what}",
                hint="pass a smaller chunk= (samples per block) or raise the limit with jacobians.set_memory_limit")
    return net.contract([a for _, a in terms], path, chunk)


def _add_diagonal(target: np.ndarray, labels: list[str], value: np.ndarray, value_labels: str) -> None:
    """``target[labels] += value`` where a label repeated in ``labels`` is a diagonal (a delta) and a
    label ``value`` lacks is a broadcast."""
    distinct = list(dict.fromkeys(labels))
    axes = [[i for i, l in enumerate(labels) if l == u] for u in distinct]
    view = as_strided(target, [target.shape[g[0]] for g in axes],
                      [sum(target.strides[i] for i in g) for g in axes], writeable=True)
    view += aligned(np.asarray(value), value_labels, distinct)


def _pair_block(s1: _Side, s2: _Side, target: np.ndarray, wrt: list[str], same: bool) -> None:
    """Add ``sum_p J1 J2^T`` of two chunks into ``target`` (``(n1, n2, *O, *O)``, or ``(n, *O, *O)``
    with ``same``: the per-sample diagonal ``a == b`` of one chunk against itself)."""
    groups: dict[tuple, list] = {}
    sizes = dict(s1.sizes)
    for name in wrt:
        for c1, a1 in zip(s1.chains[name], s1.arrays[name]):
            for c2, a2 in zip(s2.chains[name], s2.arrays[name]):
                unify = {_second(l2): l1 for l2, l1 in zip(c2.bottom, c1.bottom)}
                if same:
                    unify[_second(c2.top[0])] = c1.top[0]
                r = lambda t: "".join(unify.get(_second(l), _second(l)) for l in t)
                for l, n in s2.sizes.items():
                    sizes.setdefault(r(l), n)
                out = [c1.top[0]] + ([] if same else [r(c2.top[0])]) + list(c1.top[1:]) + [r(l) for l in c2.top[1:]]
                g = tuple((t, id(a), a) for t, a, s in zip(c1.terms, a1, c1.sources) if isinstance(s, Slot)) + \
                    tuple((r(t), id(a), a) for t, a, s in zip(c2.terms, a2, c2.sources) if isinstance(s, Slot))
                links = [(t, a) for t, a, s in zip(c1.terms, a1, c1.sources) if isinstance(s, Link)] + \
                        [(r(t), a) for t, a, s in zip(c2.terms, a2, c2.sources) if isinstance(s, Link)]
                carried = set("".join(t for t, _, _ in g) + "".join(t for t, _ in links))
                every = set(c1.top + c1.bottom + c1.walked) | set(r("".join(c2.top + c2.bottom + c2.walked)))
                factor = math.prod(sizes[l] for l in every - carried - set(out))  # sums over ones
                key = (tuple((t, i) for t, i, _ in g), tuple(out))
                groups.setdefault(key, [tuple((t, a) for t, _, a in g), out]).append((links, factor, name))
    for (_, out), (g, _, *members) in ((k, v) for k, v in groups.items()):
        distinct = "".join(dict.fromkeys(out))
        g_labels = set("".join(t for t, _ in g))
        what = "the NTK block of " + ", ".join(dict.fromkeys(m[2] for m in members))
        if len(members) == 1:
            links, factor, _ = members[0]
            terms = list(g) + links
        else:   # paths sharing the block G (a weight and its bias): sum their link parts first
            parts = []
            for links, factor, _ in members:
                keep = "".join(l for l in dict.fromkeys("".join(t for t, _ in links)) if l in g_labels or l in distinct)
                parts.append((_contract(links, keep, sizes, what) if links else np.ones(()), keep, factor))
            union = "".join(dict.fromkeys("".join(k for _, k, _ in parts)))
            K = np.zeros([sizes[l] for l in union], dtype=target.dtype)
            for arr, keep, f in parts:
                K += aligned(arr, keep, list(union)) * f if f != 1 else aligned(arr, keep, list(union))
            terms, factor = list(g) + ([(union, K)] if union else []), 1
            if not union:
                factor = K.item()
        carried = set("".join(t for t, _ in terms))
        output = "".join(l for l in distinct if l in carried)
        value = _contract(terms, output, sizes, what) if terms else np.ones(())
        if factor != 1:
            value = value * factor
        _add_diagonal(target, out, value, output)


class NTKFunction(Transform):
    """``ntk(f, wrt, batched=...)``: call it as ``(x1, x2, *rest)`` for the empirical NTK."""

    what = "ntk"
    several_batched = False

    def __init__(self, f: Callable, wrt, batched, chunk: int | None = None) -> None:
        super().__init__(f, wrt, batched)
        if self.batched is None:
            raise TypeError(f"{self.what}: batched must name the argument whose axis 0 is the sample batch")
        if self.batched in self.wrt:
            raise ValueError(f"{self.what}: wrt={self.batched!r} is the batched argument; the kernel is taken "
                             f"w.r.t. shared parameters")
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise ValueError(f"{self.what}: chunk must be a positive number of samples; got {chunk!r}")
        self.chunk = chunk
        self._others = [p for p in self._params if p != self.batched]

    def _arguments(self, x, args, kwargs) -> dict:
        if len(args) > len(self._others):
            raise TypeError(f"{self.what}: {self._fname()} takes {len(self._others)} arguments besides "
                            f"{self.batched!r}; got {len(args)}")
        bound = dict(zip(self._others, args))
        for k in kwargs:
            if k in bound or k == self.batched:
                raise TypeError(f"{self.what}: argument {k!r} given twice")
        bound.update(kwargs)
        bound[self.batched] = x
        return bound

    def _side(self, x, args, kwargs) -> _Side:
        return self._side_of(self._arguments(x, args, kwargs))

    def _side_of(self, arguments: dict) -> _Side:
        x = arguments[self.batched]
        graph = self._trace((), arguments)
        out = graph.nodes[graph.output].value if graph.output is not None and not graph.several else None
        if graph.several or out is None:
            raise ValueError(f"{self.what}: f must return one array that depends on the traced arguments")
        if out.ndim == 0 or out.shape[0] != np.shape(x)[0]:
            raise ValueError(f"{self.what}: f's output must keep the batch on axis 0 ({np.shape(x)[0]} samples); "
                             f"got shape {out.shape}")
        if graph.output in graph.inputs.values():
            raise ValueError(f"{self.what}: f returns one of its arguments; its kernel needs no contraction")
        return _Side(graph, self.wrt)

    def _independent(self, x, args, kwargs) -> bool:
        return independent_samples(self.f, (self.batched,), self._arguments(x, args, kwargs))

    def _chunk(self, n1: int, n2: int, out_elems: int, itemsize: int) -> int:
        if self.chunk is not None:
            return self.chunk
        # a pair of chunks makes a few (c, c, *O, *O) arrays: keep them to a sixteenth of the limit
        target = memory_limit() // (16 * itemsize * max(out_elems, 1) ** 2)
        return max(1, min(max(n1, n2), math.isqrt(max(target, 1))))

    def __call__(self, x1, x2=None, *args, **kwargs):
        x1 = np.asarray(x1)
        symmetric = x2 is None
        x2 = x1 if symmetric else np.asarray(x2)
        for name, x in (("x1", x1), ("x2", x2)):
            if x.ndim == 0:
                raise ValueError(f"{self.what}: {name} needs a leading batch axis; got a scalar")
        n1, n2 = len(x1), len(x2)
        probe = self._side(x1[:1], args, kwargs)
        if not symmetric and x2.shape[1:] != x1.shape[1:]:
            raise ValueError(f"{self.what}: x1 {x1.shape} and x2 {x2.shape} must have the same sample shape")
        out = probe.out_shape[1:]
        dtype = probe.dtype
        c = self._chunk(n1, n2, math.prod(out), dtype.itemsize)
        if c < max(n1, n2) and not self._independent(x1, args, kwargs):
            c = max(n1, n2)   # samples interact (a batch mean, batch norm): one block
        shape = (n1, n2) + out + out
        check_bytes(math.prod(shape) * dtype.itemsize, "the NTK", shape)
        theta = np.zeros(shape, dtype=dtype)
        starts1, starts2 = range(0, n1, c), range(0, n2, c)
        sides2 = {}
        for i in starts1:
            s1 = self._side(x1[i:i + c], args, kwargs)
            for j in starts2:
                if symmetric and j < i:
                    continue
                if symmetric and j == i:
                    s2 = s1
                else:
                    s2 = sides2.get(j) or sides2.setdefault(j, self._side(x2[j:j + c], args, kwargs))
                block = theta[i:i + c, j:j + c]
                _pair_block(s1, s2, block, self.wrt, same=False)
                if symmetric and j > i:
                    k = len(out)
                    perm = (1, 0) + tuple(range(2 + k, 2 + 2 * k)) + tuple(range(2, 2 + k))
                    theta[j:j + c, i:i + c] = block.transpose(perm)
            if symmetric:
                sides2.pop(i, None)
        return theta


def ntk(f: Callable, wrt=0, *, batched, chunk: int | None = None) -> NTKFunction:
    """The empirical neural tangent kernel of ``f`` w.r.t. ``wrt`` (its shared parameters),
    without forming the per-sample Jacobian.

    ``ntk(f, wrt, batched="x")(x1, x2, *rest)`` gives ``Theta[a, b, *o, *o'] = sum_p J(x1)[a, o, p]
    J(x2)[b, o', p]`` of shape ``(N1, N2, *O, *O)``, summed over every ``wrt`` argument, where
    ``J(x)`` is ``jacobian(f, wrt, batched="x")`` at ``f(x, *rest)``.  ``rest`` are ``f``'s other
    arguments in order (or by keyword); ``x2=None`` is ``x1`` against itself (computed once per
    pair of blocks, the kernel being symmetric).  ``chunk`` bounds the samples per block of
    each batch (default: from the memory limit).

    >>> import numpy as np, jacobians as jac
    >>> def net(x, W, b):
    ...     return jac.fn.tanh(jac.fn.linear(x, W, b))
    >>> x, W, b = np.ones((4, 3)), np.full((2, 3), 0.1), np.zeros(2)
    >>> jac.ntk(net, wrt=("W", "b"), batched="x")(x, None, W, b).shape
    (4, 4, 2, 2)
    """
    return NTKFunction(f, wrt, batched, chunk)


class _Norms(NTKFunction):
    what = "sample_grad_norms"

    def __call__(self, x, *args, **kwargs):
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError(f"{self.what}: {self.batched} needs a leading batch axis; got a scalar")
        n = len(x)
        probe = self._side(x[:1], args, kwargs)
        out = probe.out_shape[1:]
        c = self.chunk or max(1, min(n, memory_limit() // (16 * probe.dtype.itemsize * max(math.prod(out), 1) ** 2)))
        if c < n and not self._independent(x, args, kwargs):
            c = n
        gram = np.zeros((n,) + out + out, dtype=probe.dtype)
        for i in range(0, n, c):
            s = self._side(x[i:i + c], args, kwargs)
            _pair_block(s, s, gram[i:i + c], self.wrt, same=True)
        k = len(out)
        diag = gram.reshape(n, math.prod(out), math.prod(out)).diagonal(axis1=1, axis2=2) if k else gram[:, None]
        return np.sqrt(np.maximum(diag.sum(axis=1), 0))


def sample_grad_norms(f: Callable, wrt=0, *, batched, chunk: int | None = None) -> NTKFunction:
    """Per-sample Frobenius norms ``||J(x)[a]||`` of the Jacobian w.r.t. ``wrt`` (all of them together),
    shape ``(N,)``, without forming J: the diagonal ``a == b`` of :func:`ntk`'s contraction.  For a
    per-sample loss ``f`` (output ``(N,)``) these are the per-sample gradient norms (as clipped by
    DP-SGD).

    >>> import numpy as np, jacobians as jac
    >>> def loss(x, w):
    ...     return jac.fn.tanh(x @ w)
    >>> jac.sample_grad_norms(loss, wrt="w", batched="x")(np.eye(2), np.zeros(2))
    array([1., 1.])
    """
    return _Norms(f, wrt, batched, chunk)


# ---------------------------------------------------------------- the kernel as a lazy dask array

class _Tasks:
    """What chunked_ntk's dask tasks run, wherever dask runs them: one chunk's open reverse sweep
    (:class:`_Side`), or the kernel block of two chunks.  Pickled to a worker as its specification;
    each process builds its own :class:`NTKFunction` (traces and plans are per process)."""

    def __init__(self, f: Callable, wrt: list[str], batched: str) -> None:
        self.spec = (f, list(wrt), batched)
        self._ntk: NTKFunction | None = None

    def __getstate__(self) -> dict:
        return {"spec": self.spec, "_ntk": None}

    def side(self, arguments: dict) -> _Side:
        if self._ntk is None:
            self._ntk = NTKFunction(*self.spec)
        return self._ntk._side_of(arguments)

    def block(self, s1: _Side, s2: _Side) -> np.ndarray:
        out = s1.out_shape[1:]
        target = np.zeros((s1.out_shape[0], s2.out_shape[0]) + out + out, dtype=s1.dtype)
        _pair_block(s1, s2, target, self.spec[1], same=False)
        return target


def _samples(x, name: str, what: str):
    """A batch as given (a dask array stays lazy) or as a numpy array; never a scalar."""
    x = x if hasattr(x, "compute") and hasattr(x, "chunks") else np.asarray(x)
    if x.ndim == 0:
        raise ValueError(f"{what}: {name} needs a leading batch axis; got a scalar")
    return x


class ChunkedNTK(NTKFunction):
    """``chunked_ntk(f, wrt, batched=..., chunks=...)``: call it as ``(x1, x2, *rest)`` for a lazy
    dask array of the empirical NTK."""

    what = "chunked_ntk"

    def __init__(self, f: Callable, wrt, batched, chunks=None) -> None:
        from .chunked import batch_chunk
        super().__init__(f, wrt, batched)
        self.chunk = batch_chunk(self.what, chunks)
        self._tasks = _Tasks(f, self.wrt, self.batched)

    def __call__(self, x1, x2=None, *args, **kwargs):
        import dask
        import dask.array as da

        symmetric = x2 is None
        x1 = _samples(x1, "x1", self.what)
        x2 = x1 if symmetric else _samples(x2, "x2", self.what)
        if not symmetric and x2.shape[1:] != x1.shape[1:]:
            raise ValueError(f"{self.what}: x1 {x1.shape} and x2 {x2.shape} must have the same sample shape")
        n1, n2 = len(x1), len(x2)
        if n1 == 0 or n2 == 0:
            raise ValueError(f"{self.what}: x1 and x2 need at least one sample; got {n1} and {n2}")
        bound = self._arguments(x1, args, kwargs)
        first = x1 if n1 >= 2 or symmetric else x2
        head = np.asarray(first[:2])
        probe = self._side_of({**bound, self.batched: head[:1]})
        out, dtype = probe.out_shape[1:], probe.dtype
        if len(head) >= 2 and not self._independent(head, args, kwargs):
            raise ValueError(f"{self.what}: the samples of {self.batched!r} interact in {self._fname()} (a batch "
                             f"mean, batch norm): blocks of samples cannot give its kernel; use ntk()")
        c = self._chunk(n1, n2, math.prod(out), dtype.itemsize)
        c = max(1, min(c, max(n1, n2)))
        block_shape = (min(c, n1), min(c, n2)) + out + out
        check_bytes(math.prod(block_shape) * dtype.itemsize, "one block of the NTK", block_shape,
                    hint="pass a smaller chunks={'batch': ...} or raise the limit with jacobians.set_memory_limit")
        shared = {k: (dask.delayed(v, pure=True) if isinstance(v, np.ndarray) else v)
                  for k, v in bound.items() if k != self.batched}
        side = dask.delayed(self._tasks.side, pure=True)
        block = dask.delayed(self._tasks.block, pure=True)
        sides1 = [side({**shared, self.batched: x1[i:i + c]}) for i in range(0, n1, c)]
        sides2 = sides1 if symmetric else [side({**shared, self.batched: x2[j:j + c]}) for j in range(0, n2, c)]
        k = len(out)
        mirror = (1, 0) + tuple(range(2 + k, 2 + 2 * k)) + tuple(range(2, 2 + k))
        rows: list[list] = []
        for a, i in enumerate(range(0, n1, c)):
            row = []
            for b, j in enumerate(range(0, n2, c)):
                if symmetric and b < a:   # the kernel is symmetric: the upper block, transposed
                    row.append(rows[b][a].transpose(mirror))
                    continue
                shape = (min(c, n1 - i), min(c, n2 - j)) + out + out
                row.append(da.from_delayed(block(sides1[a], sides2[b]), shape, dtype=dtype))
            rows.append(row)
        return da.concatenate([da.concatenate(r, axis=1) for r in rows], axis=0)


def chunked_ntk(f: Callable, wrt=0, *, batched, chunks=None) -> ChunkedNTK:
    """The empirical NTK of :func:`ntk` as a lazy ``dask.array``, one task per pair of sample blocks.

    ``chunked_ntk(f, wrt, batched="x", chunks={"batch": n})(x1, x2, *rest)`` has :func:`ntk`'s
    shape ``(N1, N2, *O, *O)`` and values, chunked ``n`` samples by ``n`` samples on its first two
    axes (``chunks=n`` is the same; default: from :func:`jacobians.memory_limit`).  Each block of
    samples' reverse sweep is one task, each pair of blocks' contraction another; with ``x2=None``
    only the blocks on and above the diagonal are contracted, those below are their transposes.
    Nothing runs until asked: ``.to_zarr(path)`` writes the kernel block by block without holding
    it, and a ``dask.distributed`` ``Client`` runs the tasks on its workers (each worker applies its
    own :func:`jacobians.memory_limit`).  ``x1``/``x2`` may be dask arrays.  Samples that interact
    (a batch mean, batch norm) are refused: use :func:`ntk`.  Needs the ``dask`` extra.

    >>> import numpy as np, jacobians as jac
    >>> def net(x, W, b):
    ...     return jac.fn.tanh(jac.fn.linear(x, W, b))
    >>> x, W, b = np.linspace(-1, 1, 15).reshape(5, 3), np.full((2, 3), 0.1), np.zeros(2)
    >>> theta = jac.chunked_ntk(net, wrt=("W", "b"), batched="x", chunks=2)(x, None, W, b)
    >>> theta.shape, theta.chunks[:2]
    ((5, 5, 2, 2), ((2, 2, 1), (2, 2, 1)))
    >>> np.allclose(theta.compute(), jac.ntk(net, wrt=("W", "b"), batched="x")(x, None, W, b))
    True
    """
    return ChunkedNTK(f, wrt, batched, chunks)
