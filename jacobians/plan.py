"""Plan records: what a Jacobian computation does, as typed, printable data (shapes and structure only).

A :class:`Plan` is a list of steps.  A :class:`NetStep` contracts one einsum
network; a :class:`MapStep` contracts an array with one index map of an op's
Jacobian (a gather or a scatter-add, never the 0/1 tensor); an :class:`ExpandStep` writes a block onto the diagonal its deltas
leave (optionally adding it into an earlier block); a :class:`ZeroStep` is a
block with a size-0 axis somewhere in its network.  Every operand of a step
comes from a source:

* ``Slot(i)``: the array step ``i`` made;
* ``Link(node, arg, operand)``: operand ``operand`` of the factored Jacobian of
  graph node ``node`` w.r.t. its array argument ``arg`` (taken from the call's
  own graph when the plan runs);
* ``MapLink(node, arg, map)``: index map ``map`` of that factored Jacobian (read by a MapStep);
* ``Ones(shape)``: a factor of ones (a broadcast, a sum);
* ``Eye(n)``: a delta made explicit (only in expansions, written as a diagonal).

A plan never holds an array: it depends on the shapes, dtypes and ops of a
trace alone, so one plan serves every call with the same structure, from any
thread.  The per-call bookkeeping (which slot to free after which step, which
block must be copied before it is written) is fixed when the plan is made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Union

import opt_einsum as oe

from .limits import format_bytes
from .network import Cost, Network

__all__ = ["Slot", "Link", "MapLink", "Ones", "Eye", "Source", "NetStep", "WindowStep", "MapStep", "ExpandStep", "ZeroStep",
           "Step", "Result",
           "Plan", "readable"]


class Slot(NamedTuple):
    """The array made by step ``index``."""

    index: int


class Link(NamedTuple):
    """Operand ``operand`` of node ``node``'s factored Jacobian w.r.t. its array argument ``arg``."""

    node: int
    arg: int
    operand: int


class MapLink(NamedTuple):
    """Index map ``map`` (a position in ``maps``) of node ``node``'s factored Jacobian w.r.t. argument ``arg``."""

    node: int
    arg: int
    map: int


class Ones(NamedTuple):
    """A factor of ones of this shape."""

    shape: tuple


class Eye(NamedTuple):
    """An ``n x n`` identity (a delta made explicit; written as a diagonal, never allocated)."""

    n: int


Source = Union[Slot, Link, Ones, Eye]


@dataclass(frozen=True)
class NetStep:
    """Contract one network; its operands come from slots, op links, or ones."""

    network: Network
    path: tuple
    sources: tuple           # of Slot | Link | Ones, one per network term
    slot: int
    cost: Cost
    label: str               # e.g. "dy/dx" (for reports)
    chunk: tuple | None = None  # (label, n): contracted in n slices of that output label
    free: tuple = ()         # slots no later step reads (dropped after this one)
    fetch: tuple = field(default=(), repr=False)  # per source: (0, slot) | (1, link position, operand) | (2, shape)

    def operands(self):
        """``(term, shape, source)`` per operand of the network, in its order."""
        return zip(self.network.terms, self.network.shapes, self.sources)


@dataclass(frozen=True)
class WindowStep:
    """A network whose result is scattered through sliding windows (a convolution's transposed
    Jacobian in reverse accumulation), contracted once per kernel offset instead of as one block.

    ``network`` is the whole network (its output carries, per window, an output position ``p``
    and a kernel offset ``i`` read at input position ``h = p*stride + i*dilation - padding``); the
    block it makes is the kernel's size times the result (im2col).  Instead, for each combination
    of offsets, ``sub`` (the network with the offsets fixed: the operands that carry them are
    sliced) is contracted on ``path`` and added into the result's strided view: the shifted-GEMM
    form of a transposed convolution.  ``windows``: per window ``(source, p, i, h, spans)``, with
    ``spans[i] = (lo, hi, start, stride)``: output positions ``lo:hi`` land at ``start::stride``.
    ``result``: the result's labels (the network's other output labels, then each ``h``).
    The operands that carry no offset (``fixed``, positions in ``network``) are contracted
    once by ``pre`` on ``pre_path`` (its output laid out with the labels ``sub`` sums last, so
    that each shifted contraction is one GEMM on contiguous memory); ``sub``'s operands are
    that result, then the ``varying`` operands with their offsets fixed.
    """

    network: Network
    pre: Network
    pre_path: tuple
    fixed: tuple
    varying: tuple
    sub: Network
    path: tuple
    sources: tuple           # of Slot | Link | Ones, one per network term
    windows: tuple
    result: str
    shape: tuple
    slot: int
    cost: Cost
    label: str
    free: tuple = ()
    fetch: tuple = field(default=(), repr=False)

    def operands(self):
        return zip(self.network.terms, self.network.shapes, self.sources)


@dataclass(frozen=True)
class MapStep:
    """Contract one array with one index map of a link, without forming the map.

    ``direction`` is ``"gather"`` (the array carries the map's input labels ``inp``; the
    result carries its output labels ``out``: forward accumulation) or ``"scatter"`` (the
    array carries ``out``, summed except ``keep``; the result carries ``inp``: reverse
    accumulation).  ``array`` is a :class:`Slot`, or ``Ones(())`` for a scatter of ones that
    writes the map's 0/1 form over ``out + inp`` (only where a delta ties the map to the
    Jacobian's own axes, so it is no larger than the block it enters).  Labels are the
    planner's; the map itself comes from the call's factored form (``source``) and is
    relabeled onto ``out`` and ``inp``.  ``cost.moved`` is :func:`~jacobians.indexmaps.map_cost`.
    """

    source: MapLink
    out: str
    inp: str
    array: Any               # Slot | Ones
    labels: str              # the array's labels
    direction: str
    keep: str
    result: str              # the result's labels
    shape: tuple
    slot: int
    cost: Cost
    label: str
    free: tuple = ()

    @property
    def sources(self) -> tuple:
        return (self.array,)


@dataclass(frozen=True)
class ExpandStep:
    """Relabel a block onto a finer tie pattern (deltas as eye), optionally adding into a slot.

    ``view`` and ``data_perm``/``data_shape`` are the diagonal the eyes leave, worked out
    from ``eq`` once: the output's axes grouped per distinct label (a group of several axes
    is a delta), and how the block's axes line up with those groups.
    """

    eq: str
    sources: tuple           # of Slot | Eye | Ones
    shape: tuple[int, ...]
    slot: int
    add_to: int | None = None
    copy_target: bool = False  # add_to's array is still read elsewhere: add into a copy
    free: tuple = ()
    view: tuple = field(init=False, repr=False)        # per distinct label, the output axes it spans
    data_perm: tuple = field(init=False, repr=False)   # block axes in view order
    data_shape: tuple = field(init=False, repr=False)  # the block reshaped to broadcast over the view
    has_data: bool = field(init=False, repr=False)
    has_eye: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        terms, out = self.eq.split("->")
        terms = terms.split(",") if self.sources else []   # one term per source; a 0-d block's is ""
        merge = {t[1]: t[0] for t, s in zip(terms, self.sources) if isinstance(s, Eye)}
        sub = [merge.get(l, l) for l in out]
        labels = list(dict.fromkeys(sub))
        data = next((t for t, s in zip(terms, self.sources) if isinstance(s, Slot)), None)
        set_ = lambda k, v: object.__setattr__(self, k, v)
        set_("view", tuple(tuple(i for i, l in enumerate(sub) if l == u) for u in labels))
        set_("has_data", data is not None)
        set_("has_eye", bool(merge))
        if data is not None:
            set_("data_perm", tuple(data.index(l) for l in labels if l in data))
            set_("data_shape", tuple(self.shape[sub.index(l)] if l in data else 1 for l in labels))
        else:
            set_("data_perm", ())
            set_("data_shape", ())

    @property
    def cost(self) -> Cost:
        n = math.prod(self.shape)
        return Cost(n * (2 if self.add_to is not None else 1), n, ())


@dataclass(frozen=True)
class ZeroStep:
    """A block of zeros: its network has a size-0 axis (an empty batch, a layer of width 0)."""

    shape: tuple[int, ...]
    slot: int
    label: str
    free: tuple = ()

    @property
    def cost(self) -> Cost:
        return Cost(0, math.prod(self.shape), ())


Step = Union[NetStep, WindowStep, MapStep, ExpandStep, ZeroStep]


class Result(NamedTuple):
    """Where one Jacobian ends up: its slot (None: zeros, the output does not depend on it),
    its shape, and whether the slot's array must be copied to be the caller's own."""

    slot: int | None
    shape: tuple
    copy: bool = False


@dataclass(frozen=True)
class Plan:
    """How one call computes its Jacobians: steps, their costs, the result shapes.

    ``print(plan)`` shows every network with its path and FLOPs; for CS182's residual block
    w.r.t. x (batched) and W1::

        plan: order='optimal' (forward accumulation), 3 steps, 1.21e+06 FLOPs, largest array 2.9 MiB, ...
          dadd_0/dx: ab,cb,bd->cad  path [(0, 2), (0, 1)]  7.8e+05 FLOPs
          add deltas: ab,c->cab
          dadd_0/dW1: ab,cb,cd->cabd  path [(0, 1), (0, 1)]  4.03e+05 FLOPs

    (``add deltas`` is the skip connection's identity, added onto the diagonal.)
    ``itemsize`` is the bytes per element the computation runs in (every array of the
    trace counts, not only the wrt arguments); ``dtype`` is the results' dtype.
    """

    order: Any
    strategy: str
    steps: tuple = ()
    results: dict = field(default_factory=dict)     # wrt name -> Result
    links: tuple = ()                               # ((node, arg), factored structure) per link read
    itemsize: int = 8
    dtype: str = "float64"
    n_slots: int = 0
    elimination: tuple = ()                         # vertex-elimination order (node names), if one was used

    @property
    def flops(self) -> int:
        return sum(s.cost.flops for s in self.steps)

    @property
    def moved(self) -> int:
        """Elements moved by the map steps (gathers and scatter-adds): memory traffic, not FLOPs."""
        return sum(s.cost.moved for s in self.steps)

    @property
    def largest_intermediate(self) -> int:
        """Elements of the largest array any step creates."""
        return max([s.cost.largest_intermediate for s in self.steps] + [0])

    @property
    def result_elements(self) -> int:
        return sum(math.prod(r.shape) for r in self.results.values())

    @property
    def networks(self) -> list[NetStep]:
        return [s for s in self.steps if isinstance(s, NetStep)]

    def __str__(self) -> str:
        lines = [f"plan: order={self.order!r} ({self.strategy}), {len(self.steps)} steps, "
                 f"{self.flops:.3g} FLOPs, " + (f"{self.moved:.3g} moved, " if self.moved else "") + f"largest array {format_bytes(self.largest_intermediate * self.itemsize)}, "
                 f"results {format_bytes(self.result_elements * self.itemsize)}"]
        if self.elimination:
            lines.append(f"  elimination order: {' -> '.join(self.elimination)}")
        for s in self.steps:
            if isinstance(s, NetStep):
                sliced = f", in {s.chunk[1]} slices" if s.chunk else ""
                lines.append(f"  {s.label}: {readable(s.network.eq)}  path {list(s.path)}  {s.cost.flops:.3g} FLOPs{sliced}")
            elif isinstance(s, WindowStep):
                offsets = math.prod(len(w[4]) for w in s.windows)
                lines.append(f"  {s.label}: {readable(s.network.eq)} as {offsets} shifted "
                             f"{readable(s.sub.eq)}  path {list(s.path)}  {s.cost.flops:.3g} FLOPs, "
                             f"{s.cost.moved:.3g} moved")
            elif isinstance(s, MapStep):
                what = "0/1 map" if isinstance(s.array, Ones) else s.direction
                lines.append(f"  {s.label}: {what} {readable(s.out + '->' + s.inp)}  {s.cost.moved:.3g} moved")
            elif isinstance(s, ZeroStep):
                lines.append(f"  {s.label}: zeros {s.shape} (a size-0 axis)")
            else:
                lines.append(f"  {'add' if s.add_to is not None else 'expand'} deltas: {readable(s.eq)}")
        return "\n".join(lines)


def readable(eq: str) -> str:
    """An equation with its labels renamed a, b, c, ... in order of appearance."""
    names: dict[str, str] = {}
    return "".join(c if c in ",->" else names.setdefault(c, oe.get_symbol(len(names))) for c in eq)
