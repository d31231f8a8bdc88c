"""Pictures of Jacobians and of what the contraction orders cost (matplotlib: the ``plot`` extra).

    >>> import jacobians.plots as jp
    >>> jp.heatmap(J, out_shape=(B, H), in_shape=(D,)).savefig("J.png")   # doctest: +SKIP
    >>> jp.cost_curves().savefig("costs.png")                             # doctest: +SKIP

matplotlib is imported inside the functions that draw, never by ``import
jacobians``; figures are made on the Agg canvas, without pyplot, so nothing
global (the backend, the open figures) changes.  The problems the curves sweep
(:func:`problem`, :func:`sweep_width`, :func:`sweep_bottleneck`) need numpy only:
the CLI uses them too.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import comparison
from .graph import fn

__all__ = ["heatmap", "function_figure", "cost_curves", "sweep_width", "sweep_bottleneck", "problem", "Problem",
           "PROBLEMS", "ACTIVATIONS"]

PROBLEMS = ("mlp", "bottleneck", "residual")
ACTIVATIONS = ("tanh", "relu", "sigmoid", "softplus")
DEFAULT_WIDTHS = {"mlp": (256, 512, 512, 10), "bottleneck": (256, 256, 8, 256, 256), "residual": (256, 512, 256)}
CURVE_ORDERS = ("forward", "reverse", "optimal")


def _figure(figsize):
    """A Figure on the Agg canvas (no pyplot), or an ImportError that says how to get matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("jacobians.plots needs matplotlib: pip install 'jacobians[plot]'") from None
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# ---------------------------------------------------------------- problems (numpy only)

@dataclass
class Problem:
    """A function, its arguments and what to differentiate: ``compare(p.f, *p.args, wrt=p.wrt, batched=p.batched)``."""

    name: str
    f: Callable
    args: tuple
    wrt: str = "x"
    batched: str | None = None
    settings: dict = field(default_factory=dict)

    def compare(self, **kwargs) -> comparison.Report:
        return comparison.compare(self.f, *self.args, wrt=self.wrt, batched=self.batched, **kwargs)

    @property
    def description(self) -> str:
        s = self.settings
        widths = "-".join(map(str, s["widths"]))
        what = {"mlp": f"{s['activation']} MLP", "bottleneck": f"{s['activation']} bottleneck chain",
                "residual": f"residual block y = W2 {s['activation']}(W1 x + b1) + b2 + x"}[self.name]
        batch = f"batch {s['batch']}, per-sample d out/d x" if s["batch"] else "unbatched, d out/d x"
        return f"{self.name}: {what}, widths {widths}, {batch}"


def problem(name: str = "mlp", widths: Sequence[int] | None = None, batch: int = 32,
            activation: str = "tanh", seed: int = 0) -> Problem:
    """A built-in problem for :func:`jacobians.compare`.

    ``mlp``: ``linear -> act -> ... -> linear`` over ``widths`` (input first);
    ``bottleneck``: the same with a narrow middle width (n -> n -> k -> n -> n);
    ``residual``: ``W2 act(W1 x + b1) + b2 + x`` with widths ``(D, H, D)``.
    ``batch=0`` gives one unbatched sample; otherwise the Jacobian is per sample.
    """
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; valid options are {', '.join(map(repr, PROBLEMS))}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid options are {', '.join(map(repr, ACTIVATIONS))}")
    widths = tuple(int(w) for w in (DEFAULT_WIDTHS[name] if widths is None else widths))
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"widths must be at least two positive integers; got {widths}")
    if name == "residual" and (len(widths) != 3 or widths[0] != widths[-1]):
        raise ValueError(f"the residual block needs widths D,H,D (the skip adds x to the output); got {widths}")
    if batch < 0:
        raise ValueError(f"batch must be 0 (unbatched) or positive; got {batch}")
    rng = np.random.default_rng(seed)
    act = getattr(fn, activation)
    params, names = [], []
    for k, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:]), 1):
        params += [rng.normal(size=(n_out, n_in)) / math.sqrt(n_in), 0.1 * rng.normal(size=n_out)]
        names += [f"W{k}", f"b{k}"]
    x = rng.normal(size=(batch, widths[0]) if batch else widths[0])
    layers = len(widths) - 1
    residual = name == "residual"

    def f(x, *params):
        h = x
        for k in range(layers):
            h = fn.linear(h, params[2 * k], params[2 * k + 1])
            if k < layers - 1:
                h = act(h)
        return fn.add(h, x) if residual else h

    f.__name__ = name
    # named parameters, so that the weights are arrays of the graph (and plans are cached per shape)
    f.__signature__ = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                         for n in ["x"] + names])
    settings = {"problem": name, "widths": list(widths), "batch": batch, "activation": activation, "seed": seed}
    return Problem(name, f, (x, *params), "x", "x" if batch else None, settings)


SWEEP_MIN_TIME = 0.05  # seconds of timed calls per point (compare's default 0.2 s, times dozens of points)


def sweep_width(n: int = 256, ms: Sequence[int] | None = None, hidden: int | None = None, batch: int = 0,
                activation: str = "tanh", repeats: int = 3, seed: int = 0, min_time: float = SWEEP_MIN_TIME) -> dict:
    """FLOPs and times of forward, reverse and optimal for an MLP n -> h -> h -> m, as m sweeps past n.

    Forward mode pays per input (n), reverse per output (m): the curves cross at m = n.
    Returns ``{"n": n, "m": [...], "flops": {order: [...]}, "seconds": {order: [...]}}``;
    each time is the median of at least ``repeats`` calls and ``min_time`` seconds.
    """
    hidden = n if hidden is None else hidden
    ms = [max(1, n // 8), max(1, n // 4), max(1, n // 2), n, 2 * n, 4 * n, 8 * n] if ms is None else list(ms)
    out = {"n": n, "hidden": hidden, "batch": batch, "m": ms,
           "flops": {o: [] for o in CURVE_ORDERS}, "seconds": {o: [] for o in CURVE_ORDERS}}
    for m in ms:
        report = problem("mlp", (n, hidden, hidden, m), batch, activation, seed).compare(
            orders=CURVE_ORDERS, repeats=repeats, min_time=min_time)
        for r in report.rows:
            out["flops"][r.order].append(r.flops)
            out["seconds"][r.order].append(r.seconds)
    return out


def sweep_bottleneck(n: int = 256, ks: Sequence[int] | None = None, batch: int = 0, activation: str = "tanh",
                     repeats: int = 3, seed: int = 0, orders: Sequence[str] = CURVE_ORDERS + ("bracket",),
                     min_time: float = SWEEP_MIN_TIME) -> dict:
    """FLOPs and times for the chain n -> n -> k -> n -> n as the bottleneck width k sweeps up to n.

    Both pure modes pay about ``2 n^3`` whatever k is; multiplying the two halves
    separately and meeting at the k-wide middle costs about ``6 n^2 k``.
    """
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if k <= n] if ks is None else list(ks)
    out = {"n": n, "batch": batch, "k": ks, "flops": {o: [] for o in orders}, "seconds": {o: [] for o in orders}}
    for k in ks:
        report = problem("bottleneck", (n, n, k, n, n), batch, activation, seed).compare(
            orders=orders, repeats=repeats, min_time=min_time)
        for r in report.rows:
            out["flops"][r.order].append(r.flops)
            out["seconds"][r.order].append(r.seconds)
    return out


# ---------------------------------------------------------------- figures

def heatmap(J, out_shape: Sequence[int] | None = None, in_shape: Sequence[int] | None = None, ax=None,
            title: str | None = None):
    """The Jacobian ``(*out, *in)`` as a matrix ``(prod out, prod in)``, with block boundaries.

    Lines separate the blocks of the leading output axis (rows) and of the
    leading input axis (columns): with a per-sample ``(B, H, D)`` and
    ``out_shape=(B, H)`` each sample is a band of H rows.  Without shapes, a
    2-D ``J`` is a plain matrix and an even number of axes splits in half.
    Returns the Figure (``ax``'s, if given).
    """
    J = np.asarray(J, dtype=float)
    out_shape, in_shape = _split(J.shape, out_shape, in_shape)
    rows, cols = math.prod(out_shape), math.prod(in_shape)
    M = J.reshape(rows, cols)
    if ax is None:
        fig = _figure((min(10.0, 3.0 + 6.0 * cols / max(rows, cols)), min(10.0, 2.5 + 6.0 * rows / max(rows, cols))))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    lim = float(np.abs(M).max(initial=0.0)) or 1.0
    im = ax.imshow(M, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest", aspect="auto")
    fig.colorbar(im, ax=ax, shrink=0.8)
    for shape, size, line, ticks, setlabels in ((out_shape, rows, ax.axhline, ax.set_yticks, ax.set_yticklabels),
                                                (in_shape, cols, ax.axvline, ax.set_xticks, ax.set_xticklabels)):
        if len(shape) > 1 and shape[0] > 1:
            block = size // shape[0]
            for b in range(1, shape[0]):
                line(b * block - 0.5, color="k", linewidth=0.8)
            if shape[0] <= 32:
                ticks([b * block + (block - 1) / 2 for b in range(shape[0])])
                setlabels([str(b) for b in range(shape[0])])
    ax.set_ylabel(f"output {tuple(out_shape)}" + (" (blocks: axis 0)" if len(out_shape) > 1 else ""))
    ax.set_xlabel(f"input {tuple(in_shape)}" + (" (blocks: axis 0)" if len(in_shape) > 1 else ""))
    ax.set_title(title or f"Jacobian {J.shape} as a {rows} x {cols} matrix")
    return fig


def _split(shape, out_shape, in_shape):
    if out_shape is None and in_shape is None:
        if len(shape) % 2:
            raise ValueError(f"heatmap: give out_shape or in_shape for a Jacobian of shape {shape} "
                             f"(an odd number of axes, e.g. a per-sample (B, *O, *I), does not split in half)")
        out_shape = shape[:len(shape) // 2]
    if out_shape is None:
        in_shape = tuple(in_shape)
        out_shape = shape[:len(shape) - len(in_shape)]
    out_shape = tuple(out_shape)
    in_shape = shape[len(out_shape):] if in_shape is None else tuple(in_shape)
    if tuple(shape) != out_shape + in_shape:
        raise ValueError(f"heatmap: out_shape {out_shape} + in_shape {in_shape} must equal the Jacobian's shape {shape}")
    return out_shape, in_shape


def cost_curves(n: int = 256, ms: Sequence[int] | None = None, ks: Sequence[int] | None = None, batch: int = 0,
                activation: str = "tanh", repeats: int = 3, seed: int = 0, data: dict | None = None,
                min_time: float = SWEEP_MIN_TIME):
    """Two sweeps, FLOPs (top) and measured time (bottom), as one Figure.

    (a) an MLP n -> n -> n -> m as the output width m sweeps past the input
    width n: forward wins below m = n, reverse above, optimal follows the lower;
    (b) a bottleneck chain n -> n -> k -> n -> n as k sweeps: optimal and
    bracket meet in the middle and beat both pure modes by about n / 3k.
    ``data`` reuses ``{"width": sweep_width(...), "bottleneck": sweep_bottleneck(...)}``.
    """
    fig = _figure((11, 7.5))  # fail before the sweeps if matplotlib is missing
    data = data or {}
    width = data.get("width") or sweep_width(n, ms, batch=batch, activation=activation, repeats=repeats, seed=seed,
                                             min_time=min_time)
    neck = data.get("bottleneck") or sweep_bottleneck(n, ks, batch=batch, activation=activation,
                                                      repeats=repeats, seed=seed, min_time=min_time)
    axes = fig.subplots(2, 2)
    style = {"forward": ("C0", "o-"), "reverse": ("C1", "s-"), "optimal": ("C2", "^--"), "bracket": ("C3", "x:")}
    for col, (sweep, xkey, xlabel) in enumerate(((width, "m", "output width m"),
                                                 (neck, "k", "bottleneck width k"))):
        for row, (ykey, ylabel) in enumerate((("flops", "FLOPs (multiply-add = 2)"), ("seconds", "time (s)"))):
            ax = axes[row][col]
            for order, ys in sweep[ykey].items():
                color, fmt = style.get(order, ("k", ".-"))
                ax.plot(sweep[xkey], ys, fmt, color=color, label=order)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            if xkey == "m":
                ax.axvline(sweep["n"], color="gray", linestyle="--", linewidth=1)
                ax.annotate(f"m = n = {sweep['n']}", (sweep["n"], 0.95), xycoords=("data", "axes fraction"),
                            ha="center", va="top", fontsize=8, color="gray")
            ax.legend(fontsize=8)
    batch_txt = f", batch {width['batch']} per sample" if width["batch"] else ", one sample"
    axes[0][0].set_title(f"(a) MLP {width['n']} -> {width['hidden']} -> {width['hidden']} -> m{batch_txt}")
    axes[0][1].set_title(f"(b) chain {neck['n']} -> {neck['n']} -> k -> {neck['n']} -> {neck['n']}")
    fig.suptitle("d out / d x: forward vs reverse vs optimal contraction order")
    return fig


def function_figure(reports: Sequence[comparison.Report], jacobians: Sequence, title: str | None = None,
                    max_blocks: int = 8):
    """Your function's Jacobians and what every order costs: one row per report of :func:`jacobians.compare`.

    Each row: the heatmap of that report's Jacobian (``jacobians[k]``, the
    tensor ``compare`` checked; at most ``max_blocks`` blocks of the leading
    output axis are drawn, the title says so), then bars of every order's
    FLOPs, largest intermediate and median time (the bar's whisker: the
    interquartile range of the timed calls).  Returns the Figure.
    """
    if len(reports) != len(jacobians) or not reports:
        raise ValueError(f"function_figure: give one Jacobian per report; got {len(reports)} reports "
                         f"and {len(jacobians)} Jacobians")
    fig = _figure((17, 3.6 * len(reports) + 0.6))
    grid = fig.add_gridspec(len(reports), 4, width_ratios=(2.2, 1, 1, 1))
    style = {"forward": "C0", "reverse": "C1", "optimal": "C2", "bracket": "C3", "jvp": "C4", "vjp": "C5"}
    for k, (report, J) in enumerate(zip(reports, jacobians)):
        J = np.asarray(J)
        if tuple(J.shape) != tuple(report.jacobian_shape):
            raise ValueError(f"function_figure: Jacobian {k} has shape {J.shape}; its report says "
                             f"{tuple(report.jacobian_shape)}")
        in_shape = tuple(report.input_shape[1:] if report.per_sample else report.input_shape)
        out_shape = tuple(J.shape[:J.ndim - len(in_shape)])
        shown = ""
        if len(out_shape) > 1 and out_shape[0] > max_blocks:
            shown = f" (first {max_blocks} of {out_shape[0]} along output axis 0)"
            J = J[:max_blocks]
            out_shape = (max_blocks,) + out_shape[1:]
        heatmap(J, out_shape=out_shape, in_shape=in_shape, ax=fig.add_subplot(grid[k, 0]),
                title=f"d out / d {report.wrt}: {tuple(report.jacobian_shape)}"
                      + (" per sample" if report.per_sample else "") + shown)
        orders = [r.order for r in report.rows]
        colors = [style.get(o, "k") for o in orders]
        ms = np.array([r.seconds for r in report.rows]) * 1e3
        spread = np.array([[r.seconds - r.seconds_q1, r.seconds_q3 - r.seconds] for r in report.rows]).T * 1e3
        for col, (values, ylabel, extra) in enumerate((
                ([r.flops for r in report.rows], "FLOPs (multiply-add = 2)", {}),
                ([r.largest_bytes for r in report.rows], "largest intermediate (bytes)", {}),
                (ms, "time (ms): median, IQR", {"yerr": spread, "capsize": 3}))):
            ax = fig.add_subplot(grid[k, col + 1])
            ax.bar(orders, [max(v, 1e-12) for v in values], color=colors, **extra)
            ax.set_yscale("log")
            ax.set_ylabel(ylabel)
            ax.tick_params(axis="x", labelrotation=45)
            ax.grid(True, axis="y", which="both", alpha=0.3)
            if col == 2:
                t = report.timing
                ax.set_title(f">= {t.get('repeats', '?')} calls, >= {t.get('min_time', '?')} s each", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig
