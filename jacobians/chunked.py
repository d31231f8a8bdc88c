"""Jacobians larger than memory: a lazy dask array whose blocks are per-sample chunks of the batch.

``chunked_jacobian(f, wrt, batched="x", chunks={"batch": 1024})(x, *rest)`` plans on a small
slice of the batch (shapes and dtype only, nothing contracted) and returns a
``dask.array.Array`` of the per-sample Jacobian ``(N, *out, *in)``, one block per chunk of
samples, each computed by :func:`jacobians.jacobian`'s own plan for that chunk.  Nothing is
computed until asked: store it with ``J.to_zarr(path)`` (never holding all of it), reduce it
(``J.sum(axis=0)``, per-sample norms), or ``J.compute()`` a part.  Scheduling, spilling to disk,
retries and distribution over a cluster are dask's (``dask.distributed.Client``).

dask is imported when a chunked Jacobian is built, never by ``import jacobians``.  The chunks
must split independent samples: a function whose samples interact (a batch mean, batch norm)
has a ``(N, *out, N, *in)`` Jacobian that no chunking of one batch axis gives, and is refused.
"""

from __future__ import annotations

import math
import operator
from typing import Callable

import numpy as np

from .limits import check_bytes, memory_limit
from .transforms import JacobianFunction

__all__ = ["chunked_jacobian", "ChunkedJacobian", "CHUNK_KEYS", "batch_chunk", "independent_samples"]

CHUNK_KEYS = ("batch",)   # the axes a chunked Jacobian splits (output labels: not yet)


def independent_samples(f: Callable, batched: tuple, arguments: dict) -> bool:
    """Whether each output sample of ``f`` depends on its own sample of the ``batched`` arguments only,
    so that chunks of the batch give the same values: checked on the first two samples, by the
    shape of ``d out / d x`` (per-sample, or ``(B, *out, B, *in)`` where samples interact); an
    integer batch (token ids) by comparing ``f`` on both samples with ``f`` on each alone."""
    two = {**arguments, **{b: np.asarray(arguments[b][:2]) for b in batched}}
    if len(two[batched[0]]) < 2:
        return True
    if all(two[b].dtype.kind in "fc" for b in batched):
        graph, plan = JacobianFunction(f, list(batched), tuple(batched), "reverse").plan_and_graph((), two)
        if graph.several or graph.output is None:
            return not graph.several
        out_ndim = np.ndim(graph.nodes[graph.output].value)
        return all(r.slot is None or len(r.shape) == out_ndim + np.ndim(two[name]) - 1
                   for name, r in plan.results.items())
    both = np.asarray(f(**two))
    alone = [np.asarray(f(**{**two, **{b: two[b][k:k + 1] for b in batched}})) for k in range(2)]
    return both.ndim > 0 and len(both) == 2 and all(a.shape == both[k:k + 1].shape and np.array_equal(a, both[k:k + 1])
                                                   for k, a in enumerate(alone))


def batch_chunk(what: str, chunks) -> int | None:
    """The samples per block that ``chunks`` asks for (``n`` or ``{"batch": n}``; None: the default)."""
    if chunks is None or (isinstance(chunks, int) and not isinstance(chunks, bool)):
        chunks = {"batch": chunks}
    if not isinstance(chunks, dict) or set(chunks) - set(CHUNK_KEYS):
        raise ValueError(f"{what}: chunks must be a number of samples or a dict with keys among "
                         f"{CHUNK_KEYS}; got {chunks!r}")
    size = chunks.get("batch")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"{what}: chunks['batch'] must be a positive number of samples; got {size!r}")
    return size


class _Blocks:
    """Computes one chunk's Jacobians (a dict by wrt name) where dask runs it.  Pickled to a worker
    as its specification: the worker builds its own JacobianFunction (plans are per process)."""

    def __init__(self, f: Callable, wrt, batched, order) -> None:
        self.spec = (f, wrt, batched, order)
        self._jacobian: JacobianFunction | None = None

    def __getstate__(self) -> dict:
        return {"spec": self.spec, "_jacobian": None}

    def __call__(self, arguments: dict) -> dict:
        if self._jacobian is None:
            self._jacobian = JacobianFunction(*self.spec)
        jf = self._jacobian
        out = jf(**arguments)
        return {jf.wrt[0]: out} if jf.single else out


class ChunkedJacobian:
    """``chunked_jacobian(f, wrt, batched=..., chunks=...)``: call it like ``f`` for lazy dask arrays."""

    def __init__(self, f: Callable, wrt, batched, chunks=None, order="optimal") -> None:
        self.jacobian = JacobianFunction(f, wrt, batched, order)
        self._blocks = _Blocks(f, wrt, batched, order)
        if not self.jacobian.batch_names:
            raise TypeError("chunked_jacobian: batched must name the argument(s) whose axis 0 is the sample batch")
        self.batch = batch_chunk("chunked_jacobian", chunks)

    def _shapes(self, arguments: dict, n: int) -> dict:
        """Per wrt name: (the shape of one sample's block, dtype), from plans on slices of 1 and 2 samples."""
        jf = self.jacobian

        def plan(k):
            sliced = {**arguments, **{b: arguments[b][:k] for b in jf.batch_names}}
            graph, p = jf.plan_and_graph((), sliced)
            if graph.several:
                raise ValueError("chunked_jacobian: f must return one array (several outputs: one chunked "
                                 "Jacobian per output)")
            return p
        one = plan(1)
        if n >= 2 and not independent_samples(jf.f, jf.batch_names, arguments):
            raise ValueError(f"chunked_jacobian: the samples of {jf.batched!r} interact in {jf._fname()} (a batch "
                             f"mean, batch norm): chunks of the batch cannot give its Jacobian; use jacobian()")
        return {name: (one.results[name].shape[1:], np.dtype(one.dtype)) for name in jf.wrt}

    def __call__(self, *args, **kwargs):
        import dask
        import dask.array as da

        jf = self.jacobian
        bound = jf.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        for b in jf.batch_names:
            if np.ndim(arguments[b]) == 0:
                raise ValueError(f"chunked_jacobian: batched={b!r} needs a leading batch axis; got a scalar")
        n = len(arguments[jf.batch_names[0]])
        small = {k: (v[:2] if k in jf.batch_names else v) for k, v in arguments.items()}
        small = {k: (v.compute() if hasattr(v, "compute") and k in jf.batch_names else v) for k, v in small.items()}
        shapes = self._shapes(small, n)
        per_sample = sum(math.prod(s) * dt.itemsize for s, dt in shapes.values())
        size = self.batch or max(1, memory_limit() // (4 * max(per_sample, 1)))
        size = max(1, min(size, n))
        check_bytes(size * per_sample, f"one chunk of {size} samples of the Jacobians",
                    hint="pass a smaller chunks={'batch': ...} or raise the limit with jacobians.set_memory_limit")
        shared = {k: (dask.delayed(v, pure=True) if isinstance(v, np.ndarray) else v)
                  for k, v in arguments.items() if k not in jf.batch_names}
        names = tuple(jf.wrt)
        pieces: dict[str, list] = {name: [] for name in names}
        for start in range(0, n, size):
            stop = min(start + size, n)
            part = {**shared, **{b: arguments[b][start:stop] for b in jf.batch_names}}
            block = dask.delayed(self._blocks, pure=True)(part)
            for name in names:
                shape, dtype = shapes[name]
                item = dask.delayed(operator.getitem, pure=True)(block, name)
                pieces[name].append(da.from_delayed(item, (stop - start,) + shape, dtype=dtype))
        out = {name: (da.concatenate(p, axis=0) if len(p) > 1 else p[0]) if p else
               da.zeros((0,) + shapes[name][0], dtype=shapes[name][1]) for name, p in pieces.items()}
        return out[names[0]] if jf.single else out


def chunked_jacobian(f: Callable, wrt=0, *, batched, chunks=None, order="optimal") -> ChunkedJacobian:
    """The per-sample Jacobians of ``f`` as lazy ``dask.array`` arrays, one block per chunk of samples.

    Same ``wrt``, ``batched`` and ``order`` as :func:`jacobians.jacobian`, same result shapes
    ``(N, *out, *in)`` (a dict by name for several ``wrt``); ``chunks={"batch": n}`` (or ``n``) is
    the number of samples per block (default: a quarter of :func:`jacobians.memory_limit` per
    block).  Each block is computed by ``jacobian``'s plan when dask asks for it, so the whole
    result may be far larger than memory: write it with ``.to_zarr(path)`` or reduce it.  The
    several ``wrt`` of one chunk are computed once, together.  Needs ``dask[array]`` (the
    ``dask`` extra: ``pip install jacobians[dask]``).

    >>> import numpy as np, jacobians as jac
    >>> def net(x, W):
    ...     return jac.fn.tanh(jac.fn.linear(x, W))
    >>> x, W = np.ones((5, 3)), np.full((4, 3), 0.1)
    >>> J = jac.chunked_jacobian(net, wrt="W", batched="x", chunks={"batch": 2})(x, W)
    >>> J.shape, J.chunks[0]
    ((5, 4, 4, 3), (2, 2, 1))
    >>> np.allclose(J.sum(axis=0).compute(), jac.jacobian(net, wrt="W", batched="x")(x, W).sum(axis=0))
    True
    """
    return ChunkedJacobian(f, wrt, batched, chunks, order)
