"""Shape derivations: what the composer does with a function, op by op, before contracting anything.

``explain(f, *args, wrt=..., batched=...)`` traces ``f``, plans its Jacobian and
writes down, for each op on the way from ``wrt`` to the output (input end
first), its einsum (deltas shown as ``eye`` operands), the value shapes, the
Jacobian's shape by the shape rule and the deltas; then the chain rule with
the dimensions lined up as in Clark's check ``(1xDh) = (1xNc)(NcxDh)(DhxDh)``;
then the contraction path the plan chose and what it costs::

    >>> import numpy as np, jacobians as jac
    >>> def net(x, W, U):
    ...     return jac.fn.linear(jac.fn.relu(jac.fn.linear(x, W)), U)
    >>> rng = np.random.default_rng(0)
    >>> e = jac.explain(net, rng.normal(size=(4, 5)), rng.normal(size=(6, 5)),
    ...                 rng.normal(size=(3, 6)), wrt="x", batched="x")
    >>> print(e.lineup[0])
    d linear_1/d x (B=4: 3x5) = (3x6)(6x6)(6x5)
    >>> [s.node for s in e.steps]
    ['linear_0', 'relu_0', 'linear_1']

A shape mistake while tracing raises :class:`ExplainError` (a ``ValueError``)
naming the op, the shapes of its inputs, the line of ``f`` that called it and
the op's own message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import opt_einsum as oe

from . import graph as _graph
from .plan import Link, MapStep, NetStep, Ones, Plan, Slot, ZeroStep, readable
from .transforms import jacobian
from .limits import JacobianTooLarge

__all__ = ["explain", "Explanation", "Step", "ExplainError"]

MAX_PATHS = 16  # chain-rule paths written out for a branching function


class ExplainError(ValueError):
    """A shape mistake while tracing, with the op, its input shapes and the caller's line."""

    def __init__(self, message: str, op: str | None = None, node: str | None = None,
                 shapes: dict | None = None, original: BaseException | None = None) -> None:
        super().__init__(message)
        self.op, self.node, self.shapes, self.original = op, node, shapes or {}, original


@dataclass
class Step:
    """One link of the chain: ``d node / d parent`` for the op that made ``node``."""

    node: str                       # e.g. "linear_0"
    op: str                         # e.g. "linear"
    call: str                       # e.g. "linear(x=x, W=W1, b=b1)"
    argument: str                   # the op's argument that lies on the path, e.g. "x"
    parent: str                     # the node fed into that argument
    in_shape: tuple
    out_shape: tuple
    subscripts: str                 # einsum of the factored form, deltas as eye operands
    operands: list                  # names of the operands of ``subscripts``, in order
    jacobian_shape: tuple           # the dense (*out, *in)
    per_sample_shape: tuple | None  # (B, *O, *I) where the batch delta stays implicit
    layout: str                     # which row of the shape rule applies
    deltas: list                    # (label, out axis, in axis, size) per delta
    ones: str                       # labels no operand carries: a factor of ones (a sum, a broadcast)
    rows: int                       # the factor flattened for the dimension check
    cols: int

    @property
    def einsum(self) -> str:
        return f"einsum('{self.subscripts}', {', '.join(self.operands)})"


@dataclass
class Explanation:
    """``str()`` is the derivation; ``steps``, ``lineup`` and ``plan`` hold it as data."""

    function: str
    wrt: str
    batched: str | None
    order: object
    steps: list[Step] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)      # "x -> linear_0 (4, 6) -> ..."
    lineup: list[str] = field(default_factory=list)     # the dimension check, output end first
    notes: list[str] = field(default_factory=list)
    plan: Plan | None = None
    networks: list[dict] = field(default_factory=list)
    order_flops: dict = field(default_factory=dict)     # FLOPs of the same Jacobian in other orders
    jacobian_shape: tuple = ()
    operand_names: dict = field(default_factory=dict, repr=False)  # (node, argument, operand) -> name
    text: str = ""

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"<Explanation d {self.function}/d {self.wrt}: {len(self.steps)} steps>"


# ---------------------------------------------------------------- the public function

def explain(f: Callable, *args, wrt=0, batched=None, order="optimal",
            dims: Mapping[str, int] | None = None, **kwargs) -> Explanation:
    """The shape derivation of ``d f / d wrt`` at these arguments (nothing is contracted).

    ``wrt`` names one argument; ``batched`` and ``order`` mean what they mean for
    :func:`jacobians.jacobian`.  ``dims`` names sizes for the dimension check,
    e.g. ``{"Dx": 5, "Dh": 4, "Nc": 3}`` writes ``(1xDh) = (1xNc)(NcxDh)(DhxDh)``
    next to the numbers.  Raises :class:`ExplainError` (a ``ValueError``) naming
    the op where tracing failed.
    """
    if not isinstance(wrt, (str, int)) or isinstance(wrt, bool):
        raise ValueError(f"explain: wrt names one argument (a name or a position); got {wrt!r}")
    names = _check_dims(dims)
    fname = getattr(f, "__name__", "f")
    jf = jacobian(f, wrt=wrt, batched=batched, order=order)
    try:
        graph, plan = jf.plan_and_graph(args, kwargs)
    except ValueError as e:
        raise _traced_error(e, fname) from e
    name = jf.wrt[0]
    ex = Explanation(fname, name, jf.batched, order, plan=plan)
    x = graph.inputs[name]
    ex.jacobian_shape = tuple(plan.results[name][1])
    _Derivation(graph, ex, x, names).run()
    for other in ("forward", "reverse", "optimal", "bracket"):
        if other == order:
            ex.order_flops[other] = plan.flops
            continue
        try:
            ex.order_flops[other] = jacobian(f, wrt=name, batched=jf.batched, order=other).plan(*args, **kwargs).flops
        except (ValueError, JacobianTooLarge):
            pass
    ex.networks = [_network_info(s, graph, ex.operand_names) for s in plan.networks]
    ex.text = _render(ex, graph)
    return ex


# ---------------------------------------------------------------- the derivation

class _Derivation:
    def __init__(self, graph, ex: Explanation, x: int, names: dict) -> None:
        self.g, self.ex, self.x, self.names = graph, ex, x, names
        self.factors: dict = {}
        self.batch = graph.inputs.get(ex.batched) if ex.batched is not None else None

    def factor(self, c: int, k: int):
        if (c, k) not in self.factors:
            builder = self.g.nodes[c].builders[k] if k < len(self.g.nodes[c].builders) else None
            try:
                self.factors[(c, k)] = builder() if builder is not None else None
            except JacobianTooLarge:
                self.factors[(c, k)] = None
        return self.factors[(c, k)]

    def carriers(self) -> set[int]:
        """Nodes whose axis 0 is the batch: the batched input and what inherits its axis 0 by a delta."""
        if self.batch is None:
            return set()
        carry = {self.batch}
        for i, node in enumerate(self.g.nodes):
            if node.op is None:
                continue
            for k, p in node.parents():
                f = self.factor(i, k) if p in carry else None
                if f is not None and f.per_sample:
                    carry.add(i)
                    break
        return carry

    def run(self) -> None:
        g, ex = self.g, self.ex
        if g.output is None:
            ex.notes.append(f"{ex.function} returns a constant: d out/d {ex.wrt} is zero")
            return
        rel = g.between({self.x})
        if g.output not in rel:
            ex.notes.append(f"the output {g.describe(g.output)} does not depend on {ex.wrt}: the Jacobian is zero")
            return
        if g.output == self.x:
            ex.notes.append(f"{ex.function} returns {ex.wrt} itself: the Jacobian is the identity")
            return
        carry = self.carriers()
        links = [(c, k, p) for c in sorted(rel) if g.nodes[c].op is not None
                 for k, p in g.nodes[c].parents() if p in rel]
        # per sample only if every link keeps the batch delta (or broadcasts a shared parameter into it)
        per_sample = self.batch is not None and g.output in carry and all(
            (p not in carry) or (c in carry and self.factor(c, k) is not None and self.factor(c, k).per_sample)
            for c, k, p in links)
        size = lambda i: math.prod(np.shape(g.nodes[i].value)[1 if per_sample and i in carry else 0:])
        for c, k, p in links:
            ex.steps.append(self.step(c, k, p, carry, size(c), size(p)))
        self.lineup(rel, per_sample, carry, size)

    def step(self, c: int, k: int, p: int, carry: set, rows: int, cols: int) -> Step:
        g = self.g
        node, parent = g.nodes[c], g.nodes[p]
        f = self.factor(c, k)
        out_shape, in_shape = tuple(np.shape(node.value)), tuple(np.shape(parent.value))
        if f is None:  # too large to build even its factors: shapes only
            return Step(node.name, node.op.name, self.call(c), node.op.arrays[k], parent.name, in_shape, out_shape,
                        "?", [], out_shape + in_shape, None, "(too large to build the factors)", [], "", rows, cols)
        operands = [self.operand_name(c, k, p, j, a) for j, (_, a) in enumerate(f.terms)]
        operands += [f"map {m.out!r}->{m.inp!r} ({'x'.join(map(str, m.out_shape)) or 'scalar'} indices)" for m in f.maps]
        operands += [f"eye({f.sizes[l]})" for l in f.deltas]
        deltas = [(l, f.out.index(l), f.inp.index(l), f.sizes[l]) for l in f.deltas]
        batched = self.batch is not None
        per_sample = None
        if batched and p in carry and c in carry and f.per_sample:
            layout, per_sample = "per-sample (B, *O, *I): samples independent", f.dense_shape(True)
        elif batched and c in carry and p not in carry:
            layout = "shared parameter (B, *O, *P)"
        elif batched and p in carry and c in carry:
            layout = "samples interact (B, *O, B, *I)"
        elif batched and p in carry:
            layout = "output without batch axis (*O, B, *I)"
        else:
            layout = "(*O, *I)"
        carried = set("".join(sub for sub, _ in f.terms)) | set(f.deltas) | set("".join(m.labels for m in f.maps))
        ones = "".join(l for l in dict.fromkeys(f.out + f.inp) if l not in carried)
        return Step(node.name, node.op.name, self.call(c), node.op.arrays[k], parent.name, in_shape, out_shape,
                    f.subscripts(), operands, f.dense_shape(False), per_sample, layout, deltas, ones, rows, cols)

    def call(self, c: int) -> str:
        node = self.g.nodes[c]
        parts = []
        for name, a in zip(node.op.arrays, node.args):
            if isinstance(a, int):
                parts.append(f"{name}={self.g.nodes[a].name}")
            elif a is not None:
                parts.append(f"{name}=const{tuple(np.shape(a[1]))}")
        parts += [f"{k}={v!r}" for k, v in node.params.items()]
        return f"{node.op.name}({', '.join(parts)})"

    def operand_name(self, c: int, k: int, p: int, j: int, a) -> str:
        """A readable name: the node or constant the operand is, else the op's derivative at its argument."""
        name = None
        for n in self.g.nodes:
            if n.value is a:
                name = n.name
                break
        else:
            for arg in self.g.nodes[c].args:
                if isinstance(arg, tuple) and arg[1] is a:
                    name = f"const{tuple(np.shape(a))}"
            if name is None:
                name = f"{float(a):g}" if np.ndim(a) == 0 else f"{self.g.nodes[c].op.name}'({self.g.nodes[p].name})"
        self.ex.operand_names[(c, k, j)] = name
        return name

    def lineup(self, rel: set, per_sample: bool, carry: set, size) -> None:
        g, ex = self.g, self.ex
        out = g.nodes[g.output].name
        paths = _paths(g, rel, self.x, g.output, MAX_PATHS + 1)
        B = np.shape(g.nodes[self.batch].value)[0] if per_sample else None
        for path in paths[:MAX_PATHS]:  # a path: node indices from x to the output
            ex.paths.append(" -> ".join(g.describe(i) for i in path))
        if len(paths) > MAX_PATHS:
            ex.notes.append(f"more than {MAX_PATHS} paths from {ex.wrt} to {out}: the first {MAX_PATHS} are shown; "
                            f"the composer sums them by accumulation, never one by one")
        # per path, the factors as (row node, column node), output end first
        chains = [[(p[j + 1], p[j]) for j in range(len(p) - 1)][::-1] for p in paths[:MAX_PATHS]]
        lead = lambda i: 1 if per_sample and i in carry else 0
        numeric = lambda i: str(size(i))
        named = lambda i: "*".join(self.names.get(n, str(n)) for n in np.shape(g.nodes[i].value)[lead(i):]) or "1"

        def line(v: int, products: list) -> str:
            dims = lambda name, fs: "".join(f"({name(r)}x{name(c)})" for r, c in fs)
            lhs = [(g.output, v)]
            text = (f"d {out}/d {g.nodes[v].name} ({'' if B is None else f'B={B}: '}{size(g.output)}x{size(v)}) = "
                    + " + ".join(dims(numeric, fs) for fs in products))
            if self.names:
                text += f"   i.e. {dims(named, lhs)} = " + " + ".join(dims(named, fs) for fs in products)
            return text

        ex.lineup.append(line(self.x, chains))
        if len(chains) == 1:  # the partial products d out / d v, from the output end (Clark's error signals)
            path, fs = paths[0], chains[0]
            for j in range(len(path) - 2, 0, -1):
                ex.lineup.append(line(path[j], [fs[:len(path) - 1 - j]]))
        chains = [[(size(r), size(c)) for r, c in fs] for fs in chains]
        ok = all(fs[i][1] == fs[i + 1][0] for fs in chains for i in range(len(fs) - 1))
        ex.notes.append("every factor's columns equal the next factor's rows: the dimensions line up" if ok else
                        "the dimensions do NOT line up: a Jacobian rule has the wrong shape")
        if self.batch is not None and not per_sample:
            ex.notes.append("the batch is not an independent per-sample axis on every link (samples interact, "
                            "or the output reduces over them): sizes are the full ones, batch included")


def _paths(g, rel: set, src: int, dst: int, limit: int) -> list[list[int]]:
    """Paths from ``src`` to ``dst`` through ``rel`` (node indices, input end first), at most ``limit``."""
    children: dict[int, list[int]] = {i: [] for i in rel}
    for c in sorted(rel):
        for _, p in g.nodes[c].parents():
            if p in rel and c not in children[p]:
                children[p].append(c)
    out, stack = [], [[src]]
    while stack and len(out) < limit:
        path = stack.pop()
        if path[-1] == dst:
            out.append(path)
            continue
        for c in reversed(children[path[-1]]):
            stack.append(path + [c])
    return out


def _check_dims(dims) -> dict[int, str]:
    if not dims:
        return {}
    names: dict[int, str] = {}
    for name, n in dims.items():
        if n in names:
            raise ValueError(f"explain: dims {names[n]!r} and {name!r} are both {n}; give the named sizes distinct values")
        names[int(n)] = str(name)
    return names


def _network_info(step: NetStep, graph, names: dict) -> dict:
    net = step.network
    rename: dict[str, str] = {}
    for ch in net.eq:
        if ch not in ",->" and ch not in rename:
            rename[ch] = oe.get_symbol(len(rename))
    r = lambda s: "".join(rename.get(ch, ch) for ch in s)
    operands = []
    for term, shape, src in step.operands():
        if isinstance(src, Link):
            c, k, j = src
            what = f"d {graph.nodes[c].name}/d {graph.nodes[c].op.arrays[k]}"
            named = names.get((c, k, j))
            operands.append((r(term), shape, f"{named} ({what})" if named else what))
        elif isinstance(src, Slot):
            operands.append((r(term), shape, f"the block from step {src.index}"))
        else:
            operands.append((r(term), shape, "ones"))
    pairs = []
    if len(net.terms) > 1:
        _, info = oe.contract_path(net.eq, *net.shapes, shapes=True, optimize=[tuple(p) for p in step.path])
        for inds, removed, eq, _, _ in info.contraction_list:
            labels = set(eq.replace(",", "").replace("->", ""))
            flops = oe.helpers.flop_count(labels, bool(removed), len(inds), info.size_dict)
            pairs.append((r(eq), int(flops)))
    return {"label": step.label, "eq": r(net.eq), "operands": operands, "path": [tuple(p) for p in step.path],
            "steps": pairs, "flops": step.cost.flops, "largest": step.cost.largest_intermediate,
            "sizes": {rename[l]: n for l, n in net.sizes.items()}}


# ---------------------------------------------------------------- the text

def _render(ex: Explanation, graph) -> str:
    lines = [f"explain d {ex.function}/d {ex.wrt}: Jacobian shape {ex.jacobian_shape}"
             + (f", batched={ex.batched!r}" if ex.batched else "") + f", order={ex.order!r}"]
    for p in ex.paths[:1] if len(ex.paths) == 1 else ex.paths:
        lines.append(f"  path: {p}")
    if ex.steps:
        lines.append("")
        lines.append("ops, input end first (J = d out/d argument, shape (*out, *in)):")
    for n, s in enumerate(ex.steps, 1):
        lines.append(f"{n}. {s.node} = {s.call}: d {s.node}/d {s.argument}, {s.argument} {s.in_shape} -> {s.out_shape}")
        lines.append(f"   J = {s.einsum}" + (f", ones on {', '.join(s.ones)} (a sum or a broadcast)" if s.ones else ""))
        shape = f"   J {s.jacobian_shape}"
        if s.per_sample_shape is not None:
            shape = f"   J per sample {s.per_sample_shape}  (dense {s.jacobian_shape})"
        lines.append(f"{shape}; layout {s.layout}")
        if s.deltas:
            tied = ", ".join(f"{l}: out axis {i} = in axis {j} ({n_})" for l, i, j, n_ in s.deltas)
            kind = ""
            if len(s.deltas) == len(s.out_shape) == len(s.in_shape):
                kind = " -- every axis tied: a diagonal"
            elif s.per_sample_shape is not None and len(s.deltas) == 1:
                kind = " -- the per-sample batch"
            lines.append(f"   deltas {tied}{kind}")
        else:
            lines.append("   deltas: none (a dense factor)")
    if ex.lineup:
        lines.append("")
        lines.append("chain rule, output end first, each factor flattened to (rows x columns)"
                     + (", per sample:" if "B=" in ex.lineup[0] else ":"))
        lines += ["  " + l for l in ex.lineup]
    if ex.plan is not None and ex.plan.steps:
        lines.append("")
        costs = ", ".join(f"{o} {v:.4g}" for o, v in ex.order_flops.items())
        lines.append(f"contraction ({ex.plan.strategy}): {ex.plan.flops:.4g} FLOPs"
                     + (f", {ex.plan.moved:.4g} elements moved by index maps" if ex.plan.moved else "")
                     + f"; the same Jacobian by order: {costs}")
    for net in ex.networks:
        lines.append(f"  {net['label']}: {net['eq']}   sizes "
                     + " ".join(f"{l}={n}" for l, n in sorted(net["sizes"].items())))
        for term, shape, what in net["operands"]:
            lines.append(f"    {term or repr(''):<6} {str(tuple(shape)):<14} {what}")
        lines.append(f"    path {net['path']}: {net['flops']:.4g} FLOPs, largest intermediate {net['largest']} elements")
        for eq, flops in net["steps"]:
            lines.append(f"      {eq:<24} {flops} FLOPs")
    if ex.plan is not None:
        for s in ex.plan.steps:
            if isinstance(s, ZeroStep):
                lines.append(f"  zeros of shape {s.shape} (a size-0 axis)")
            elif isinstance(s, MapStep):
                what = "the 0/1 form of" if isinstance(s.array, Ones) else f"a {s.direction} through"
                node = graph.nodes[s.source.node]
                lines.append(f"  {what} the index map of d {node.name}/d {node.op.arrays[s.source.arg]} "
                             f"into shape {s.shape}: {s.cost.moved} elements moved (memory traffic, not FLOPs)")
            elif not isinstance(s, NetStep):
                lines.append(f"  {'add' if s.add_to is not None else 'expand'} deltas into shape {s.shape}: {readable(s.eq)}")
    if ex.notes:
        lines.append("")
        lines += [f"note: {n}" for n in ex.notes]
    return "\n".join(lines)


# ---------------------------------------------------------------- errors while tracing

def _traced_error(e: ValueError, fname: str) -> ValueError:
    """The op where tracing failed, its input shapes and the caller's line, around the op's message.

    The tracer attaches a :class:`jacobians.graph.TraceContext` to an op's error as ``trace_context``."""
    ctx = getattr(e, "trace_context", None)
    if ctx is None:
        return ExplainError(f"explain {fname}: {_one_line(e)}", original=e)
    described = [f"{k} = {v}" if k in ctx.traced else f"{k} {v}" for k, v in ctx.inputs.items()]
    where = ""
    if ctx.filename is not None:
        where = f", called from {ctx.function}() line {ctx.lineno}" + (f" `{ctx.line}`" if ctx.line else "")
    before = f" Traced before it: {', '.join(ctx.before)}." if ctx.before else " It was the first op."
    msg = (f"explain {fname}: a shape mistake at {ctx.node} (op {ctx.op}){where}, with inputs "
           f"{', '.join(described) or 'none'}. The op says: {ctx.message.rstrip('.')}.{before}")
    return ExplainError(msg, ctx.op, ctx.node, dict(ctx.shapes), e)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()).rstrip(".")
