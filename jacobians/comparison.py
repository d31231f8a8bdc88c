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

import functools
import gc
import math
import numbers
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from .graph import describe_tree
from .plan import readable
from .transforms import jacobian
from .limits import format_bytes
from .modes import MODES, sweep_jacobian
from .network import bracket_plan

__all__ = ["compare", "compare_hessian", "Report", "Row", "Timing", "chain_dims", "cs182_prediction", "blas_threads"]

DEFAULT_ORDERS = ("forward", "reverse", "optimal", "bracket", "jvp", "vjp")
ELIMINATION_ORDERS = ("markowitz", "optimal-elimination")  # rows added where the graph branches
DEFAULT_REPEATS = 5       # at least this many timed calls per order ...
DEFAULT_MIN_TIME = 0.2    # ... and at least this many seconds of them (timeit's autorange aims at 0.2 s too)
CS182_PATTERN = "an unbatched chain of dense links (each link one dense matrix)"


@dataclass(frozen=True)
class Timing:
    """Wall times of the timed calls (after one untimed warm-up call), in seconds."""

    median: float
    q1: float                      # the interquartile range: the middle half of the calls
    q3: float
    min: float
    max: float
    count: int

    @classmethod
    def of(cls, times: Sequence[float]) -> "Timing":
        if len(times) > 1:
            q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
        else:
            q1 = q3 = times[0]
        return cls(statistics.median(times), q1, q3, min(times), max(times), len(times))


@dataclass
class Row:
    order: str
    flops: int
    predicted: int | None          # CS182's formula (dense chains only)
    largest_elements: int
    largest_bytes: int
    seconds: float                 # median wall time of the timed calls (forward pass included)
    seconds_q1: float              # the middle half of the calls took seconds_q1 .. seconds_q3
    seconds_q3: float
    seconds_min: float
    seconds_max: float
    repeats: int                   # timed calls made (at least ``repeats`` and ``min_time`` seconds)
    max_abs_diff: float            # against the optimal order's Jacobian
    max_rel_diff: float
    how: str                       # the path, bracketing or sweep
    moved: int = 0                 # elements gathered or scattered through index maps (memory traffic)


@dataclass
class Report:
    """One row per order; ``print(report)`` gives the table, ``report.rows`` the data."""

    title: str
    jacobian_shape: tuple
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timing: dict = field(default_factory=dict)     # {"warmup": 1, "repeats": N, "min_time": s}
    blas: dict = field(default_factory=dict)       # blas_threads()
    wrt: str = ""
    input_shape: tuple = ()                        # of the argument ``wrt``
    output_shape: tuple = ()
    per_sample: bool = False                       # jacobian_shape is output_shape + input_shape[1:]

    def row(self, order: str) -> Row:
        return next(r for r in self.rows if r.order == order)

    def to_dict(self) -> dict:
        return {"title": self.title, "jacobian_shape": list(self.jacobian_shape),
                "wrt": self.wrt, "input_shape": list(self.input_shape), "output_shape": list(self.output_shape),
                "per_sample": self.per_sample, "rows": [asdict(r) for r in self.rows], "notes": self.notes,
                "timing": self.timing, "blas": self.blas}

    def __str__(self) -> str:
        """The table; for ``chain3`` of the tests, widths 5, 4, 3, 2 (one run, times vary)::

            d chain3 / d x: output (2,), x (5,)
            Jacobian shape (2, 5); FLOPs: a multiply-add counts 2
            order    FLOPs  x best  CS182  largest  time ms       IQR ms  runs  max |diff|  how
            -------  -----  ------  -----  -------  -------  -----------  ----  ----------  -----------...
            forward    180     1.4  = 180    120 B    0.115  0.111-0.136   721     4.4e-16  ab,bc,cd->ad ...
            reverse    128     1.0  = 128     80 B    0.110  0.107-0.117   783     0.0e+00  ab,bc,cd->ad ...
            ...
            note: dense chain of widths [5, 4, 3, 2]: CS182 predictions shown (optimal and bracket have none)
            note: times: median and interquartile range (IQR) of >= 5 calls and >= 0.2 s per order, after 1
            warm-up call; BLAS scipy-openblas, threads unknown (none of OPENBLAS_NUM_THREADS, ... is set)
        """
        best = min(r.flops for r in self.rows) or 1
        moved = any(r.moved for r in self.rows)   # a column only where index maps move memory
        head = ["order", "FLOPs", "x best", "CS182"] + (["moved"] if moved else []) + \
            ["largest", "time ms", "IQR ms", "runs", "max |diff|", "how"]
        body = []
        for r in self.rows:
            body.append([r.order, f"{r.flops:.4g}", f"{r.flops / best:.1f}",
                         "" if r.predicted is None else ("= " if r.predicted == r.flops else "!= ") + f"{r.predicted:.4g}"]
                        + ([f"{r.moved:.4g}"] if moved else []) +
                        [format_bytes(r.largest_bytes), _ms(r.seconds), f"{_ms(r.seconds_q1)}-{_ms(r.seconds_q3)}",
                         str(r.repeats), f"{r.max_abs_diff:.1e}", r.how])
        last = len(head) - 1
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
        fmt = lambda cells: "  ".join(c.ljust(w) if i in (0, last) else c.rjust(w)
                                      for i, (c, w) in enumerate(zip(cells, widths)))
        lines = [self.title, f"Jacobian shape {self.jacobian_shape}; FLOPs: a multiply-add counts 2",
                 fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]
        lines = [l.rstrip() for l in lines]  # the last column is left-justified: no trailing blanks
        notes = list(self.notes)
        if self.timing:
            t = self.timing
            notes.append(f"times: median and interquartile range (IQR) of >= {t['repeats']} calls and "
                         f">= {t['min_time']:g} s per order, after {t['warmup']} warm-up call; "
                         + describe_blas(self.blas or blas_threads()))
        return "\n".join(lines + [f"note: {n}" for n in notes])


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


# BLAS libraries and the environment variables each reads for its thread count, first one wins
_BLAS_ENV = {"openblas": ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"),
             "mkl": ("MKL_NUM_THREADS", "OMP_NUM_THREADS"),
             "blis": ("BLIS_NUM_THREADS", "OMP_NUM_THREADS"),
             "accelerate": ("VECLIB_MAXIMUM_THREADS",)}


def blas_threads() -> dict:
    """The BLAS behind numpy and its thread count: ``{"library", "threads", "source"}``.

    Read with ``threadpoolctl`` when it is installed; otherwise the library's
    name comes from numpy's build config and the count from the environment
    variable that library reads (``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``,
    ... then ``OMP_NUM_THREADS``); ``threads`` is ``"unknown"`` when neither says.
    """
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        pass
    else:
        try:
            pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        except Exception:  # a broken threadpoolctl must not break a timing report
            pools = []
        if pools:
            return {"library": ", ".join(dict.fromkeys(str(p.get("internal_api", "?")) for p in pools)),
                    "threads": max(int(p["num_threads"]) for p in pools), "source": "threadpoolctl"}
    library = "unknown"
    try:
        library = str(np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"])
    except Exception:  # numpy < 1.26 has no mode="dicts"; a build without the section
        pass
    names = next((v for k, v in _BLAS_ENV.items() if k in library.lower()),
                 tuple(dict.fromkeys(n for v in _BLAS_ENV.values() for n in v)))
    for name in names:
        value = os.environ.get(name, "").split(",")[0].strip()  # OMP_NUM_THREADS may list nested levels
        if value.isdigit() and int(value) > 0:
            return {"library": library, "threads": int(value), "source": name}
    return {"library": library, "threads": "unknown", "source": f"none of {', '.join(names)} is set"}


def describe_blas(blas: dict) -> str:
    threads = blas.get("threads", "unknown")
    if threads == "unknown":
        return f"BLAS {blas.get('library', 'unknown')}, threads unknown ({blas.get('source', '')})"
    return f"BLAS {blas['library']}, {threads} thread{'s' if threads != 1 else ''} ({blas['source']})"


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


def _timed(call: Callable, repeats: int, min_time: float) -> tuple[Timing, object]:
    """One untimed warm-up call (tracing, planning, caches), then calls until both limits are met."""
    result = call()
    times: list[float] = []
    total = 0.0
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection in one call and not in another is noise (timeit does the same)
    try:
        while len(times) < repeats or total < min_time:
            result = None  # one result alive at a time, not two
            t = time.perf_counter()
            result = call()
            dt = time.perf_counter() - t
            times.append(dt)
            total += dt
    finally:
        if gc_was_enabled:
            gc.enable()
    return Timing.of(times), result


def _check_options(orders, repeats, min_time, progress) -> tuple[str, ...]:
    valid = ", ".join(map(repr, DEFAULT_ORDERS))
    if isinstance(orders, str):
        orders = (orders,)  # one name, not its letters
    elif orders is None or not hasattr(orders, "__iter__"):
        raise TypeError(f"compare: orders must be an order name or a sequence of them ({valid}); "
                        f"got {orders!r} ({type(orders).__name__})")
    orders = tuple(orders)
    if isinstance(repeats, bool) or not isinstance(repeats, numbers.Integral):
        raise TypeError(f"compare: repeats must be a positive integer; got {repeats!r} ({type(repeats).__name__})")
    if repeats < 1:
        raise ValueError(f"compare: repeats must be a positive integer (timed calls per order); got {repeats}")
    if isinstance(min_time, bool) or not isinstance(min_time, numbers.Real):
        raise TypeError(f"compare: min_time must be a number of seconds; got {min_time!r} ({type(min_time).__name__})")
    if not (math.isfinite(min_time) and min_time >= 0):
        raise ValueError(f"compare: min_time must be a finite number of seconds >= 0; got {min_time!r}")
    if progress is not None and not callable(progress):
        raise TypeError(f"compare: progress must be a function of one string, or None; got {type(progress).__name__}")
    return orders


def _cs182_note(batched, nets) -> str:
    """Why the CS182 column is empty: which pattern its formulas need and what this network has instead."""
    if batched is not None:
        why = f"this Jacobian is batched over {batched!r} (the formulas count one sample)"
    elif not nets:
        why = "this Jacobian needs no contraction"
    elif len(nets) > 1:
        why = f"this Jacobian is accumulated from {len(nets)} networks (a graph with fan-out or a skip), not one chain"
    else:
        why = "some link here is not one dense matrix (an elementwise op is a diagonal, a bias or a skip a delta)"
    return f"CS182 column empty: its formulas need {CS182_PATTERN}; {why}"


def _pick(f: Callable, output) -> Callable:
    """``f`` returning only ``f(...)[output]`` (same signature, named ``f[output]``)."""
    name = getattr(f, "__name__", "f")

    @functools.wraps(f)
    def picked(*args, **kwargs):
        out = f(*args, **kwargs)
        if not isinstance(out, (tuple, list, dict)):
            raise ValueError(f"compare: output={output!r} picks from a tuple, list or dict of outputs; "
                             f"{name} returns one array")
        try:
            return out[output]
        except (KeyError, IndexError, TypeError):
            keys = list(out) if isinstance(out, dict) else list(range(len(out)))
            raise ValueError(f"compare: output={output!r} is not one of {name}'s outputs; "
                             f"valid options are {', '.join(map(repr, keys))}") from None
    picked.__name__ = f"{name}[{output!r}]"
    return picked


def compare(f: Callable, *args, wrt, batched=None, output=None, orders: Sequence[str] = DEFAULT_ORDERS,
            repeats: int = DEFAULT_REPEATS, min_time: float = DEFAULT_MIN_TIME,
            progress: Callable[[str], None] | None = None, **kwargs) -> Report:
    """Every order's cost, time and agreement for d f / d ``wrt`` on these arguments.

    ``orders`` picks among ``'forward', 'reverse', 'optimal', 'bracket', 'jvp', 'vjp'``.
    The optimal order's Jacobian is the reference every other row is checked against.
    Each order is called once untimed (tracing, planning, caches), then timed
    until both ``repeats`` calls and ``min_time`` seconds are reached; a row
    holds the median, the interquartile range, min and max, and the report the
    BLAS thread count (:func:`blas_threads`).  ``progress`` is called with the
    name of each order before it runs.

    A report covers one output: for ``f`` returning a tuple, list or dict of arrays,
    ``output`` picks one (``output=0``, ``output="h"``); without it such an ``f`` raises
    a ValueError that lists the choices.
    """
    asked = orders is not DEFAULT_ORDERS   # the default also gets the elimination rows where the graph branches
    orders = _check_options(orders, repeats, min_time, progress)
    unknown = [o for o in orders if o not in DEFAULT_ORDERS + ELIMINATION_ORDERS]
    if not orders:
        raise ValueError(f"compare: orders is empty; valid options are {', '.join(map(repr, DEFAULT_ORDERS))}")
    if unknown:
        raise ValueError(f"compare: unknown order {unknown[0]!r}; valid options are "
                         f"{', '.join(map(repr, DEFAULT_ORDERS + ELIMINATION_ORDERS))}")
    if not isinstance(wrt, (str, int)) or isinstance(wrt, bool):
        raise ValueError(f"compare: wrt names one argument (a name or a position); got {wrt!r}")
    say = progress or (lambda msg: None)
    if output is not None:
        f = _pick(f, output)
    ref_fn = jacobian(f, wrt=wrt, batched=batched, order="optimal")
    graph, ref_plan = ref_fn.plan_and_graph(args, kwargs)
    if graph.several:
        kind, children = graph.tree
        keys = [k for k, _ in children] if kind is dict else list(range(len(children)))
        raise ValueError(f"compare: {getattr(f, '__name__', 'f')} returns {describe_tree(graph.tree)}; a "
                         f"report covers one output: pick it with output= (one of {', '.join(map(repr, keys))})")
    name = ref_fn.wrt[0]
    say("optimal (reference)")
    ref_timing, ref = _timed(lambda: ref_fn(*args, **kwargs), repeats, min_time)
    in_shape = np.shape(graph.nodes[graph.inputs[name]].value)
    out_shape = np.shape(graph.nodes[graph.output].value) if graph.output is not None else ()
    per_sample = name in ref_fn.batch_names and ref.shape == tuple(out_shape) + tuple(in_shape[1:])
    nets = ref_plan.networks
    dims = chain_dims(nets[0].network) if len(nets) == 1 and batched is None else None
    report = Report(f"d {getattr(f, '__name__', 'f')} / d {name}: output {tuple(out_shape)}, "
                    f"{name} {tuple(in_shape)}" + (", per-sample" if per_sample else ""), tuple(ref.shape),
                    timing={"warmup": 1, "repeats": repeats, "min_time": min_time}, blas=blas_threads(),
                    wrt=name, input_shape=tuple(in_shape), output_shape=tuple(out_shape), per_sample=per_sample)
    if not any(o in ("forward", "reverse", "jvp", "vjp") for o in orders):
        pass  # no row could have a formula
    elif dims:
        report.notes.append(f"dense chain of widths {dims}: CS182 predictions shown (optimal and bracket have none)")
    else:
        report.notes.append(_cs182_note(batched, nets))
    itemsize = ref.dtype.itemsize
    elimination = [o for o in (orders if asked else ELIMINATION_ORDERS) if o in ELIMINATION_ORDERS]
    orders = [o for o in orders if o not in ELIMINATION_ORDERS]
    for order in orders:
        if order == "optimal":
            plan, timing, J = ref_plan, ref_timing, ref
        elif order in MODES:
            say(order)
            plan = None

            def run(order=order):  # validate and replay on the arguments, as the other rows do
                replayed, _ = ref_fn.plan_and_graph(args, kwargs)
                return sweep_jacobian(replayed, name, order, per_sample=per_sample)
            timing, sweep = _timed(run, repeats, min_time)
            J = sweep.jacobian
        else:
            say(order)
            jf = jacobian(f, wrt=wrt, batched=batched, order=order)
            plan = jf.plan(*args, **kwargs)
            timing, J = _timed(lambda: jf(*args, **kwargs), repeats, min_time)
        diff = float(np.abs(J - ref).max(initial=0.0))
        scale = float(np.abs(ref).max(initial=0.0)) or 1.0
        if plan is not None:
            how = _describe(plan, order)
            flops, largest, moved = plan.flops, plan.largest_intermediate, plan.moved
        else:
            flops, largest, moved = sweep.flops, sweep.largest_intermediate, 0
            how = f"{sweep.vectors} basis vectors in chunks of {sweep.chunk}"
        t = timing
        row = Row(order, flops, None if dims is None else cs182_prediction(dims, order), largest, largest * itemsize,
                  t.median, t.q1, t.q3, t.min, t.max, t.count, diff, diff / scale, how, moved)
        report.rows.append(row)
    if elimination:
        report.rows += _elimination_rows(f, args, kwargs, wrt, batched, graph, name, ref, elimination,
                                         repeats, min_time, say, itemsize, report.notes)
    if "bracket" in orders and "optimal" in orders and len(nets) == 1:
        b, o = report.row("bracket"), report.row("optimal")
        _, model, text = bracket_plan(nets[0].network)
        report.notes.append(f"bracket chose {text} (dense-model cost {model:.4g} FLOPs); "
                            + ("same FLOPs as the path search" if b.flops == o.flops else
                               f"the path search, which sees deltas and the batch, needs {o.flops / max(b.flops, 1):.2f}x its FLOPs"))
    return report


def _elimination_rows(f, args, kwargs, wrt, batched, graph, name, ref, which, repeats, min_time, say,
                      itemsize, notes) -> list[Row]:
    """Rows for vertex-elimination orders (``which``: "markowitz", "optimal-elimination") where the
    graph branches; none (and a note) where it does not.  "optimal-elimination" is the cheapest
    elimination order the ``"optimal"`` search finds (forward, reverse, Markowitz or searched; the
    plain "optimal" row may be an accumulation instead), replayed by its node names."""
    from .elimination import Elimination, eliminate, intermediate_vertices
    from .planner import compute_itemsize
    if graph.output is None or not intermediate_vertices(graph, [name]):
        notes.append("no elimination rows: nothing branches between "
                     f"{name} and the output (forward and reverse are the only vertex orders)")
        return []
    rows = []
    for order in which:
        say(order)
        if order == "optimal-elimination":
            found = eliminate(graph, [name], "optimal", "optimal", compute_itemsize(graph), {})
            how_found = min(found, key=lambda c: c[0])
            jf = jacobian(f, wrt=wrt, batched=batched, order=Elimination(how_found[3]))
        else:
            jf = jacobian(f, wrt=wrt, batched=batched, order=order)
        plan = jf.plan(*args, **kwargs)
        timing, J = _timed(lambda: jf(*args, **kwargs), repeats, min_time)
        diff = float(np.abs(J - ref).max(initial=0.0))
        scale = float(np.abs(ref).max(initial=0.0)) or 1.0
        how = f"eliminate {' -> '.join(plan.elimination)}" if plan.elimination else plan.strategy
        if order == "optimal-elimination":
            how = f"{how_found[4]} order: {how}"
        t = timing
        rows.append(Row(order, plan.flops, None, plan.largest_intermediate, plan.largest_intermediate * itemsize,
                        t.median, t.q1, t.q3, t.min, t.max, t.count, diff, diff / scale, how, plan.moved))
    return rows


def _describe(plan, order) -> str:
    nets = plan.networks
    if len(nets) == 1:
        return f"{readable(nets[0].network.eq)} path {list(nets[0].path)}"
    return f"{plan.strategy}, {len(nets)} networks"


# ---------------------------------------------------------------- Hessian rows (issue 11)

HESSIAN_ORDERS = ("symbolic", "hvp")


def compare_hessian(f: Callable, *args, wrt, batched=None, orders: Sequence[str] = HESSIAN_ORDERS,
                    repeats: int = DEFAULT_REPEATS, min_time: float = DEFAULT_MIN_TIME,
                    progress: Callable[[str], None] | None = None, **kwargs) -> Report:
    """The Hessian d2 f / d ``wrt``^2 two ways, timed and checked, as a :class:`Report`.

    Rows (``orders`` picks among them):

    * ``symbolic``: :func:`jacobians.hessian`, the second-order chain rule on factored terms (the reference);
    * ``hvp``: forward-over-reverse, one :func:`jacobians.hvp` per input basis vector (n of them) and,
      for an output of m entries, per output entry (the scalar ``sum(e_i * f)``): m n sweeps, each a
      tangent sweep and a reverse sweep carrying adjoints and their tangents, as ``jax.hessian`` spends
      n Hessian-vector products.  ``batched`` is not used by this row (it builds the full block; the
      per-sample block is read off its diagonal to compare).

    Each row is timed as :func:`compare` times its orders (one warm-up call, then ``repeats`` calls and
    ``min_time`` seconds) and checked against ``symbolic`` (``max_abs_diff``).  FLOPs are not counted
    for these rows (``flops`` is 0: the terms and sweeps are contracted as they are built, with no plan
    to cost); ``largest`` is the explicit Hessian's size, which both rows write.
    """
    from .transforms import hessian, hvp
    orders = _check_options(orders, repeats, min_time, progress)
    bad = [o for o in orders if o not in HESSIAN_ORDERS]
    if not orders or bad:
        raise ValueError(f"compare_hessian: unknown order {bad[0] if bad else None!r}; valid options are "
                         f"{', '.join(map(repr, HESSIAN_ORDERS))}")
    if not isinstance(wrt, (str, int)) or isinstance(wrt, bool):
        raise ValueError(f"compare_hessian: wrt names one argument (a name or a position); got {wrt!r}")
    say = progress or (lambda msg: None)
    hf = hessian(f, wrt=wrt, batched=batched)
    say("symbolic (reference)")
    ref_timing, ref = _timed(lambda: hf(*args, **kwargs), repeats, min_time)
    name = hf.wrt[0]
    import inspect
    params = list(inspect.signature(f).parameters)
    x = np.asarray(args[wrt if isinstance(wrt, int) else params.index(name)])
    y = np.asarray(f(*args, **kwargs))
    per_sample = ref.shape != y.shape + x.shape + x.shape
    report = Report(f"d2 {getattr(f, '__name__', 'f')} / d {name}^2: output {y.shape}, {name} {x.shape}"
                    + (", per-sample" if per_sample else ""), tuple(ref.shape),
                    timing={"warmup": 1, "repeats": repeats, "min_time": min_time}, blas=blas_threads(),
                    wrt=name, input_shape=x.shape, output_shape=y.shape, per_sample=per_sample)
    report.notes.append("FLOPs not counted for Hessian rows (contracted as built, no plan to cost)")
    itemsize = ref.dtype.itemsize
    scale = float(np.abs(ref).max(initial=0.0)) or 1.0
    for order in orders:
        if order == "symbolic":
            timing, H, how = ref_timing, ref, "second-order chain rule on factored terms"
        else:
            say(order)
            scalar = _weighted(f, name)
            hv = hvp(scalar, wrt=wrt)
            basis = np.eye(x.size, dtype=x.dtype).reshape((x.size,) + x.shape)
            weights = np.eye(max(y.size, 1), dtype=y.dtype).reshape((max(y.size, 1),) + y.shape)

            def run():
                return np.stack([np.stack([hv(*args, w=w, tangent=v, **kwargs)[1] for v in basis], axis=-1)
                                 for w in weights]).reshape(y.shape + x.shape + x.shape)
            timing, H = _timed(run, repeats, min_time)
            if per_sample:
                H = _per_sample(H, y.ndim, x.ndim, ref.shape)
            how = f"{y.size * x.size} forward-over-reverse HVPs ({y.size} output entries x {x.size} basis vectors)"
        diff = float(np.abs(H - ref).max(initial=0.0))
        t = timing
        report.rows.append(Row(order, 0, None, ref.size, ref.size * itemsize, t.median, t.q1, t.q3, t.min, t.max,
                               t.count, diff, diff / scale, how))
    return report


def _weighted(f: Callable, name: str) -> Callable:
    """``sum(w * f(...))`` with ``w`` a keyword (the scalar whose HVPs give one output entry's Hessian)."""
    import inspect
    from .graph import fn

    def scalar(*a, w, **k):
        return fn.sum(f(*a, **k) * w)
    sig = inspect.signature(f)
    scalar.__signature__ = sig.replace(parameters=list(sig.parameters.values())
                                       + [inspect.Parameter("w", inspect.Parameter.KEYWORD_ONLY)])
    scalar.__name__ = f"sum(w * {getattr(f, '__name__', 'f')})"
    return scalar


def _per_sample(H: np.ndarray, out_ndim: int, in_ndim: int, shape: tuple) -> np.ndarray:
    """The per-sample blocks ``(B, *O, *I, *I)`` of a full ``(B, *O, B, *I, B, *I)`` Hessian block."""
    ar = np.arange(H.shape[0])
    idx = (ar,) + (slice(None),) * (out_ndim - 1) + (ar,) + (slice(None),) * (in_ndim - 1) + (ar,)
    return H[idx].reshape(shape)
