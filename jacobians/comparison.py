"""Forward vs reverse vs optimal on one network: costs from shapes, times measured, results checked.

    >>> import numpy as np, jacobians as jac
    >>> def net(x, W1, W2):
    ...     return jac.fn.linear(jac.fn.tanh(jac.fn.linear(x, W1)), W2)
    >>> rng = np.random.default_rng(0)
    >>> report = jac.compare(net, rng.normal(size=(8, 20)), rng.normal(size=(30, 20)),
    ...                      rng.normal(size=(5, 30)), wrt="x", batched="x", repeats=1)
    >>> [r.order for r in report.rows]
    ['forward', 'reverse', 'optimal', 'bracket', 'jvp', 'vjp']
    >>> max(r.max_abs_diff for r in report.rows) < 1e-12
    True

Rows: the contraction orders of the one einsum network (``forward`` from the
input end, ``reverse`` from the output end, ``optimal`` by path search,
``bracket`` by Naumann-style chain bracketing) and the matrix-free sweeps
(``jvp``: n input basis vectors pushed forward, ``vjp``: m output basis vectors
pulled back).  FLOPs follow opt_einsum: a multiply-add counts 2.  For a dense
chain (every link one dense matrix, no batch) the report puts CS182's
predictions next to the counts; with ``m_0 = n`` inputs and ``m_L = m`` outputs:

* jvp ``2 n sum_{k=1..L} m_k m_{k-1}``, vjp ``2 m sum_{k=1..L} m_k m_{k-1}``;
* the forward order skips the product with the identity seed,
  ``2 n sum_{k=2..L} m_k m_{k-1}``; the reverse order ``2 m sum_{k=1..L-1} ...``.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from .plan import readable
from .transforms import jacobian
from .limits import format_bytes
from .modes import MODES, sweep_jacobian
from .network import bracket_plan

__all__ = ["compare", "Report", "Row", "chain_dims", "cs182_prediction"]

DEFAULT_ORDERS = ("forward", "reverse", "optimal", "bracket", "jvp", "vjp")


@dataclass
class Row:
    order: str
    flops: int
    predicted: int | None          # CS182's formula (dense chains only)
    largest_elements: int
    largest_bytes: int
    seconds: float                 # median wall time of ``repeats`` calls (forward pass included)
    repeats: int
    max_abs_diff: float            # against the optimal order's Jacobian
    max_rel_diff: float
    how: str                       # the path, bracketing or sweep


@dataclass
class Report:
    """One row per order; ``print(report)`` gives the table, ``report.rows`` the data."""

    title: str
    jacobian_shape: tuple
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, order: str) -> Row:
        return next(r for r in self.rows if r.order == order)

    def to_dict(self) -> dict:
        return {"title": self.title, "jacobian_shape": list(self.jacobian_shape),
                "rows": [asdict(r) for r in self.rows], "notes": self.notes}

    def __str__(self) -> str:
        best = min(r.flops for r in self.rows) or 1
        head = ["order", "FLOPs", "x best", "CS182", "largest", "time ms", "max |diff|", "how"]
        body = []
        for r in self.rows:
            body.append([r.order, f"{r.flops:.4g}", f"{r.flops / best:.1f}",
                         "" if r.predicted is None else ("= " if r.predicted == r.flops else "!= ") + f"{r.predicted:.4g}",
                         format_bytes(r.largest_bytes), f"{r.seconds * 1e3:.2f} ({r.repeats})",
                         f"{r.max_abs_diff:.1e}", r.how])
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
        fmt = lambda cells: "  ".join(c.ljust(w) if i in (0, 7) else c.rjust(w)
                                      for i, (c, w) in enumerate(zip(cells, widths)))
        lines = [self.title, f"Jacobian shape {self.jacobian_shape}; FLOPs: a multiply-add counts 2",
                 fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]
        lines = [l.rstrip() for l in lines]  # the last column is left-justified: no trailing blanks
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def chain_dims(network) -> list[int] | None:
    """``[m_0 = n, m_1, ..., m_L = m]`` if the network is a dense chain, else None."""
    sizes = network.sizes
    dims = []
    links = [l for l in network.links if l[0]]
    if not links or len(links) != len(network.links) - 1 or network.links[0][0]:
        return None  # relabel-only links or an accumulated block: not a plain chain
    for positions, out, inp in reversed(links):
        if len(positions) != 1 or set(out) & set(inp) or set(network.terms[positions[0]]) != set(out) | set(inp):
            return None
        if dims and dims[-1] != math.prod(sizes[l] for l in inp):
            return None
        if not dims:
            dims.append(math.prod(sizes[l] for l in inp))
        dims.append(math.prod(sizes[l] for l in out))
    return dims


def cs182_prediction(dims: Sequence[int], order: str) -> int | None:
    """CS182's cost of building the Jacobian of a dense chain, in FLOPs (multiply-add = 2)."""
    n, m = dims[0], dims[-1]
    terms = [dims[k] * dims[k - 1] for k in range(1, len(dims))]
    return {"jvp": 2 * n * sum(terms), "vjp": 2 * m * sum(terms),
            "forward": 2 * n * sum(terms[1:]), "reverse": 2 * m * sum(terms[:-1])}.get(order)


def _timed(call: Callable, repeats: int) -> tuple[float, object]:
    result = call()  # warm-up: tracing, planning, caches (not timed)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def compare(f: Callable, *args, wrt, batched=None, orders: Sequence[str] = DEFAULT_ORDERS,
            repeats: int = 5, progress: Callable[[str], None] | None = None, **kwargs) -> Report:
    """Every order's cost, time and agreement for d f / d ``wrt`` on these arguments.

    ``orders`` picks among ``'forward', 'reverse', 'optimal', 'bracket', 'jvp', 'vjp'``.
    The optimal order's Jacobian is the reference every other row is checked against.
    """
    orders = (orders,) if isinstance(orders, str) else tuple(orders)  # one name, not its letters
    unknown = [o for o in orders if o not in DEFAULT_ORDERS]
    if not orders:
        raise ValueError(f"compare: orders is empty; valid options are {', '.join(map(repr, DEFAULT_ORDERS))}")
    if unknown:
        raise ValueError(f"compare: unknown order {unknown[0]!r}; valid options are "
                         f"{', '.join(map(repr, DEFAULT_ORDERS))}")
    if not isinstance(wrt, (str, int)):
        raise ValueError("compare: wrt names one argument")
    say = progress or (lambda msg: None)
    ref_fn = jacobian(f, wrt=wrt, batched=batched, order="optimal")
    graph, ref_plan = ref_fn.plan_and_graph(args, kwargs)
    name = ref_fn.wrt[0]
    say("optimal (reference)")
    ref_time, ref = _timed(lambda: ref_fn(*args, **kwargs), repeats)
    in_shape = np.shape(graph.nodes[graph.inputs[name]].value)
    out_shape = np.shape(graph.nodes[graph.output].value) if graph.output is not None else ()
    per_sample = batched is not None and ref_fn.batched == name and ref.shape == tuple(out_shape) + tuple(in_shape[1:])
    nets = ref_plan.networks
    dims = chain_dims(nets[0].network) if len(nets) == 1 and batched is None else None
    report = Report(f"d {getattr(f, '__name__', 'f')} / d {name}: output {tuple(out_shape)}, "
                    f"{name} {tuple(in_shape)}" + (", per-sample" if per_sample else ""), tuple(ref.shape))
    if dims:
        report.notes.append(f"dense chain of widths {dims}: CS182 predictions shown")
    itemsize = ref.dtype.itemsize
    for order in orders:
        if order == "optimal":
            plan, seconds, J = ref_plan, ref_time, ref
        elif order in MODES:
            say(order)
            plan = None

            def run(order=order):  # validate and replay on the arguments, as the other rows do
                replayed, _ = ref_fn.plan_and_graph(args, kwargs)
                return sweep_jacobian(replayed, name, order, per_sample=per_sample)
            seconds, sweep = _timed(run, repeats)
            J = sweep.jacobian
        else:
            say(order)
            jf = jacobian(f, wrt=wrt, batched=batched, order=order)
            plan = jf.plan(*args, **kwargs)
            seconds, J = _timed(lambda: jf(*args, **kwargs), repeats)
        diff = float(np.abs(J - ref).max(initial=0.0))
        scale = float(np.abs(ref).max(initial=0.0)) or 1.0
        if plan is not None:
            how = _describe(plan, order)
            row = Row(order, plan.flops, None if dims is None else cs182_prediction(dims, order),
                      plan.largest_intermediate, plan.largest_intermediate * itemsize,
                      seconds, repeats, diff, diff / scale, how)
        else:
            row = Row(order, sweep.flops, None if dims is None else cs182_prediction(dims, order),
                      sweep.largest_intermediate, sweep.largest_intermediate * itemsize, seconds, repeats,
                      diff, diff / scale, f"{sweep.vectors} basis vectors in chunks of {sweep.chunk}")
        report.rows.append(row)
    if "bracket" in orders and "optimal" in orders and len(nets) == 1:
        b, o = report.row("bracket"), report.row("optimal")
        _, model, text = bracket_plan(nets[0].network)
        report.notes.append(f"bracket chose {text} (dense-model cost {model:.4g} FLOPs); "
                            + ("same FLOPs as the path search" if b.flops == o.flops else
                               f"the path search, which sees deltas and the batch, needs {o.flops / max(b.flops, 1):.2f}x its FLOPs"))
    return report


def _describe(plan, order) -> str:
    nets = plan.networks
    if len(nets) == 1:
        return f"{readable(nets[0].network.eq)} path {list(nets[0].path)}"
    return f"{plan.strategy}, {len(nets)} networks"
