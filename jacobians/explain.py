"""Shape derivations: what the composer does with a function, op by op, before contracting anything.

``explain(f, *args, wrt=..., batched=...)`` traces ``f``, plans its Jacobian and
writes down, for each op on the way from ``wrt`` to the output (input end
first), its einsum (deltas shown as ``eye`` operands), the value shapes, the
Jacobian's shape by the shape rule, the deltas and the closed form where one is
known; then the chain rule with the dimensions lined up as in Clark's check
``(1xDh) = (1xNc)(NcxDh)(DhxDh)`` and the same product in closed form; then the
contraction path the plan chose and what it costs::

    >>> import numpy as np, jacobians as jac
    >>> def net(x, W, U):
    ...     h = jac.fn.relu(jac.fn.linear(x, W))
    ...     return jac.fn.linear(h, U)
    >>> rng = np.random.default_rng(0)
    >>> e = jac.explain(net, rng.normal(size=(4, 5)), rng.normal(size=(6, 5)),
    ...                 rng.normal(size=(3, 6)), wrt="x", batched="x")
    >>> print(e.lineup[0]); print(e.closed[0])
    d linear_1/d x (3x5) = (3x6)(6x6)(6x5)
    U diag([linear_0 > 0]) W
    >>> [s.node for s in e.steps]
    ['linear_0', 'h', 'linear_1']

The text fits 100 columns (long lines wrap, nothing is cut).  Nodes are named
after the variables of ``f``'s source (``h`` above), else ``linear_0``.  One set
of einsum letters serves every section: ``n`` is the batch, ``i, j, k, ...`` the
other axes from the output end, a capital a delta's input side (``nN``); the
letters and their sizes are listed under the path.

A shape mistake while tracing raises :class:`ExplainError` (a ``ValueError``)
naming the op, the shapes of its inputs, the line of ``f`` that called it and
the op's own message.
"""

from __future__ import annotations

import ast
import inspect
import math
import re
import textwrap
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import opt_einsum as oe

from . import graph as _graph
from .plan import Eye, Link, MapStep, NetStep, Ones, Plan, Slot, WindowStep, ZeroStep, readable
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
    closed: str = ""                # the closed form where one is known, e.g. "d z/d x = W per sample; ..."

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
    networks: list[dict] = field(default_factory=list)  # per plan step: kind "network", "add", "expand", "zeros"
    order_flops: dict = field(default_factory=dict)     # FLOPs of the same Jacobian in other orders
    jacobian_shape: tuple = ()
    operand_names: dict = field(default_factory=dict, repr=False)  # (node, argument, operand) -> name
    node_names: dict = field(default_factory=dict)      # node index -> "z" (the source's variable) or "linear_0"
    labels: dict = field(default_factory=dict)          # einsum letter -> (size, is the batch), every section
    batch_label: str = "n"
    per_sample: bool = False
    dims: dict = field(default_factory=dict)            # size -> its name, from ``dims``
    closed: list[str] = field(default_factory=list)     # per lineup line, the product in closed form
    gradient: str = ""                                  # a scalar output: the gradient in the shape of wrt
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
    next to the numbers.  Nodes take the names of the variables ``f``'s source
    assigns them to (``z = fn.linear(x, W)`` is ``z``), else ``linear_0``.  Raises
    :class:`ExplainError` (a ``ValueError``) naming the op where tracing failed.
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
    ex.node_names, ex.dims = _node_names(f, graph), names
    d = _Derivation(graph, ex, x, names)
    try:   # constant array arguments (integer labels, masks) are named by their parameter
        bound = jf.signature.bind(*args, **kwargs).arguments
        d.constants = {id(v): k for k, v in bound.items() if isinstance(v, np.ndarray)}
    except TypeError:
        pass
    d.run()
    for other in ("forward", "reverse", "optimal", "bracket"):
        if other == order:
            ex.order_flops[other] = plan.flops
            continue
        try:
            ex.order_flops[other] = jacobian(f, wrt=name, batched=jf.batched, order=other).plan(*args, **kwargs).flops
        except (ValueError, JacobianTooLarge):
            pass
    ex.networks = d.networks(plan)
    ex.text = _render(ex)
    return ex


# ---------------------------------------------------------------- the user's variable names

def _node_names(f: Callable, graph) -> dict[int, str]:
    """Node index -> display name: the variable ``f``'s source assigns the node to, else ``linear_0``.

    Each op node records the user's frames that made it (``Node.where``); a node made in ``f``'s
    own frame on the line of ``name = ...`` is named ``name`` when it is the statement's last op (its
    value), and a statement run again (a loop) names ``h``, ``h_1``, ...  Inputs keep their names."""
    taken = {n.name for n in graph.nodes}          # inputs, and the op names other nodes fall back to
    out = {i: n.name for i, n in enumerate(graph.nodes)}
    spans = _assignments(f)
    if not spans:
        return out
    code = inspect.unwrap(f).__code__
    runs: list[tuple[int, tuple, int]] = []        # (node, statement span, lasti) per node made in f's frame
    for i, n in enumerate(graph.nodes):
        at = next(((line, lasti) for c, line, lasti in n.where if c is code), None)
        span = None if at is None else min((s for s in spans if s[0] <= at[0] <= s[1]),
                                           key=lambda s: s[1] - s[0], default=None)
        if span is not None:
            runs.append((i, span, at[1]))
        elif n.op is not None:
            runs.append((i, None, -1))
    for j, (i, span, lasti) in enumerate(runs):
        nxt = runs[j + 1] if j + 1 < len(runs) else None
        # the statement's value is its last op: the next node belongs to another statement or a new pass
        if span is not None and (nxt is None or nxt[1] != span or nxt[2] <= lasti):
            name, k = span[2], 0
            while name in taken:
                k += 1
                name = f"{span[2]}_{k}"
            taken.add(name)
            out[i] = name
    return out


def _assignments(f: Callable) -> list[tuple[int, int, str]]:
    """``(first line, last line, name)`` of each ``name = ...`` statement in ``f``'s source."""
    try:
        f = inspect.unwrap(f)
        lines, start = inspect.getsourcelines(f)
        tree = ast.parse(textwrap.dedent("".join(lines)))
        f.__code__  # noqa: B018 -- a callable without code (a class, a builtin) has no frame to read
    except (TypeError, OSError, SyntaxError, AttributeError, IndentationError):
        return []
    spans = []
    defs = [d for d in ast.walk(tree) if isinstance(d, (ast.FunctionDef, ast.AsyncFunctionDef))
            and d.name == f.__code__.co_name]
    if not defs:  # a lambda: its lines belong to the statement around it, whose names are not its own
        return []
    for node in (n for stmt in defs[0].body for n in ast.walk(stmt)):
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
            getattr(node, "target", None) if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else None
        if isinstance(target, ast.Name):
            spans.append((node.lineno + start - 1, node.end_lineno + start - 1, target.id))
    return spans


# ---------------------------------------------------------------- one label set for every section

_POOL = "ijkmpqrstuvwxyzabcdefgh"   # n is the batch; l and o read as 1 and 0
_BATCH = "n"


class _Letters:
    """Einsum letters for an explanation: ``n`` the batch, then i, j, k, ...; a delta's input side is the
    capital (``nN``).  No letter, nor its capital, is a size name of ``dims``."""

    def __init__(self, avoid=()) -> None:
        self.avoid = set(avoid) | {a.swapcase() for a in avoid}
        self.used: set[str] = set()

    def _ok(self, l: str) -> bool:
        return l not in self.avoid and l not in self.used and l.swapcase() not in self.used

    def take(self, prefer: str | None = None) -> str:
        if prefer is not None and self._ok(prefer):
            self.used.add(prefer)
            return prefer
        for l in _POOL:
            if self._ok(l):
                self.used.add(l)
                return l
        k = 52
        while not self._ok(oe.get_symbol(k)):
            k += 1
        self.used.add(oe.get_symbol(k))
        return oe.get_symbol(k)


def _injective(wanted: list[tuple[str, str | None]], letters: _Letters) -> dict[str, str]:
    """Local label -> letter, first come first served: a letter already given (or None) takes a spare one."""
    out: dict[str, str] = {}
    given: set[str] = set()
    for local, want in wanted:
        if local in out:
            continue
        if want is None or want in given:
            want = letters.take()
        out[local] = want
        given.add(want)
    return out


def _copy(letter: str, given: set) -> str | None:
    """A delta's input-side letter: the capital, unless that is taken in this einsum."""
    c = letter.swapcase()
    return c if c != letter and c not in given else None


# ---------------------------------------------------------------- closed forms

# (op, argument) -> the Jacobian as a matrix per sample, and its transpose, in the names of the call
# ({W}: what the call passed as W; {out}: the node made).  Elementwise ops take f' from ``op.formula``.
_CLOSED = {
    ("linear", "x"): ("{W}", "{W}^T"),
    ("linear", "W"): ("(I kron {x}^T)", "(I kron {x})"),
    ("linear", "b"): ("I", "I"),
    ("matmul", "X"): ("(I kron {Y}^T)", "(I kron {Y})"),       # W @ x w.r.t. W (checked: X 2-D, Y 1-D)
    ("add", "a"): ("I", "I"), ("add", "b"): ("I", "I"),
    ("subtract", "a"): ("I", "I"), ("subtract", "b"): ("-I", "-I"),
    ("softmax_cross_entropy", "logits"): ("(yhat - {target})^T", "(yhat - {target})"),
    ("mse", "yhat"): ("({yhat} - {y})^T", "({yhat} - {y})"),
}
_SAYS = {  # what the closed form means, for the step's line
    ("linear", "x"): "d {out}/d {x} = {W} per sample; backprop sends g to {W}^T g",
    ("linear", "W"): "d {out}/d {W} = (I kron {x}^T) per sample; backprop sends g to g {x}^T (delta x^T)",
    ("linear", "b"): "d {out}/d {b} = I; backprop passes g through",
    ("matmul", "X"): "d {out}/d {X} = (I kron {Y}^T); backprop sends g to g {Y}^T (delta x^T)",
    ("softmax_cross_entropy", "logits"): "d {out}/d {logits} = (yhat - {target})^T, "
                                         "yhat = softmax({logits}), {target} one-hot",
    ("mse", "yhat"): "d {out}/d {yhat} = ({yhat} - {y})^T",
}


def _closed_form(node, arg: str, names: dict, shapes: dict) -> tuple[str, str, str] | None:
    """(J, J^T, a sentence) for the op's Jacobian w.r.t. ``arg``, or None where none is tabled."""
    op = node.op
    key = (op.name, arg)
    if op.name == "matmul" and (len(shapes.get("X", ())), len(shapes.get("Y", ()))) != (2, 1):
        key = None
    if key in _CLOSED:
        J, JT = (t.format(**names) for t in _CLOSED[key])
        says = _SAYS.get(key, "d {out}/d {%s} = %s" % (arg, _CLOSED[key][0])).format(**names)
        return J, JT, says
    if op.name == "matmul" and arg == "Y" and len(shapes.get("Y", ())) == 1:
        if len(shapes.get("X", ())) == 2:
            return names["X"], names["X"] + "^T", f"d {names['out']}/d {names['Y']} = {names['X']}"
        if len(shapes.get("X", ())) == 1:
            return names["X"] + "^T", names["X"], f"d {names['out']}/d {names['Y']} = {names['X']}^T (a row)"
    if op.family == "elementwise" and len(op.arrays) == 1 and op.formula.startswith("dy/dx = delta "):
        d = op.formula[len("dy/dx = delta "):].strip()
        d = "1 " + d if d.startswith("/") else d
        d = re.sub(r"\b[xy]\b", lambda m: names[arg] if m.group() == "x" else names["out"], d)  # at once: x may be y
        J = f"diag({d})"
        return J, J, f"d {names['out']}/d {names[arg]} = {J}: {op.name}' on the diagonal"
    return None


# ---------------------------------------------------------------- the derivation

class _Derivation:
    def __init__(self, graph, ex: Explanation, x: int, names: dict) -> None:
        self.g, self.ex, self.x, self.names = graph, ex, x, names
        self.factors: dict = {}
        self.batch = graph.inputs.get(ex.batched) if ex.batched is not None else None
        self.letters = _Letters(n for n in names.values() if len(n) == 1)
        self.axis: dict = {}         # (node, axis) -> its letter
        self.local: dict = {}        # (node, arg) -> factor label -> letter
        self.forms: dict = {}        # (node, arg) -> (J, J^T) closed forms
        self.slots: dict = {}        # plan slot -> its output's letters
        self.result: list = []       # the letters of the Jacobian's axes (out, then wrt; a tie in capitals)
        self.constants: dict = {}    # id of a constant array argument -> the parameter's name

    def name(self, i: int) -> str:
        return self.ex.node_names.get(i, self.g.nodes[i].name)

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

    def label_axes(self, rel: set, links: list, carry: set) -> None:
        """One letter per axis class (axes tied by a delta share one), output end first; the batch is n."""
        parent: dict = {}

        def find(a):
            while parent.get(a, a) != a:
                a = parent[a]
            return a
        for c, k, p in links:
            f = self.factor(c, k)
            for l in (f.deltas if f is not None else ""):
                a, b = find((c, f.out.index(l))), find((p, f.inp.index(l)))
                if a != b:
                    parent[b] = a
        letters: dict = {}
        for i in sorted(rel, reverse=True):
            for ax in range(np.ndim(self.g.nodes[i].value)):
                root = find((i, ax))
                if root not in letters:
                    batch = ax == 0 and i in carry and _BATCH not in letters.values()
                    letters[root] = self.letters.take(_BATCH if batch else None)
                self.axis[(i, ax)] = letters[root]
        batch = next((l for (i, ax), l in self.axis.items() if ax == 0 and i in carry), None)
        self.ex.batch_label = batch or self.ex.batch_label
        for (i, ax), l in self.axis.items():  # in the order given: output end first
            self.ex.labels.setdefault(l, (int(np.shape(self.g.nodes[i].value)[ax]), l == batch))

    def run(self) -> None:
        g, ex = self.g, self.ex
        if g.output is None:
            ex.notes.append(f"{ex.function} returns a constant: d out/d {ex.wrt} is zero")
            return
        rel = g.between({self.x})
        if g.output not in rel:
            ex.notes.append(f"the output {self.describe(g.output)} does not depend on {ex.wrt}: the Jacobian is zero")
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
        ex.per_sample = per_sample
        self.label_axes(rel, links, carry)
        size = lambda i: math.prod(np.shape(g.nodes[i].value)[1 if per_sample and i in carry else 0:])
        outs = [self.axis[(g.output, i)] for i in range(np.ndim(g.nodes[g.output].value))]
        ins = [self.axis[(self.x, j)] for j in range(np.ndim(g.nodes[self.x].value))][
            1 if per_sample and self.x in carry else 0:]
        self.result = outs + [l.swapcase() if l in outs and l.swapcase() != l else l for l in ins]
        for c, k, p in links:
            ex.steps.append(self.step(c, k, p, carry, size(c), size(p)))
        self.lineup(rel, per_sample, carry, size)

    def describe(self, i: int) -> str:
        return f"{self.name(i)} {tuple(np.shape(self.g.nodes[i].value))}"

    def step(self, c: int, k: int, p: int, carry: set, rows: int, cols: int) -> Step:
        g = self.g
        node, parent = g.nodes[c], g.nodes[p]
        f = self.factor(c, k)
        arg = node.op.arrays[k]
        out_shape, in_shape = tuple(np.shape(node.value)), tuple(np.shape(parent.value))
        names, shapes = self.arg_names(c)
        form = _closed_form(node, arg, names, shapes)
        if form is not None:
            self.forms[(c, k)] = form[:2]
        if f is None:  # too large to build even its factors: shapes only
            return Step(self.name(c), node.op.name, self.call(c), arg, self.name(p), in_shape, out_shape,
                        "?", [], out_shape + in_shape, None, "(too large to build the factors)", [], "", rows, cols,
                        form[2] if form else "")
        wanted = [(l, self.axis[(c, i)]) for i, l in enumerate(f.out)]
        wanted += [(l, self.axis[(p, j)]) for j, l in enumerate(f.inp)]
        wanted += [(l, None) for l in "".join(s for s, _ in f.terms) + "".join(mp.labels for mp in f.maps)]
        m = _injective(wanted, self.letters)
        self.local[(c, k)] = m
        given = set(m.values())
        primes = {}
        for l in f.deltas:
            primes[l] = _copy(m[l], given) or self.letters.take()
            given.add(primes[l])
        r = lambda s: "".join(m[l] for l in s)
        rp = lambda s: "".join(primes.get(l, m[l]) for l in s)
        terms = [r(s) for s, _ in f.terms] + [r(mp.out) + rp(mp.inp) for mp in f.maps] \
            + [m[l] + primes[l] for l in f.deltas]
        subscripts = ",".join(terms) + "->" + r(f.out) + rp(f.inp)
        operands = [self.operand_name(c, k, p, j, a) for j, (_, a) in enumerate(f.terms)]
        operands += ["index map"] * len(f.maps) + [f"eye({f.sizes[l]})" for l in f.deltas]
        deltas = [(m[l], f.out.index(l), f.inp.index(l), f.sizes[l]) for l in f.deltas]
        b = self.ex.batch_label
        batched = self.batch is not None
        per_sample = None
        if batched and p in carry and c in carry and f.per_sample:
            layout, per_sample = f"per-sample ({b}, *O, *I): samples independent", f.dense_shape(True)
        elif batched and c in carry and p not in carry:
            layout = f"shared parameter ({b}, *O, *P)"
        elif batched and p in carry and c in carry:
            layout = f"samples interact ({b}, *O, {b}', *I)"
        elif batched and p in carry:
            layout = f"output without batch axis (*O, {b}, *I)"
        else:
            layout = "(*O, *I)"
        carried = set("".join(sub for sub, _ in f.terms)) | set("".join(mp.labels for mp in f.maps)) | set(f.deltas)
        ones = "".join(m[l] for l in dict.fromkeys(f.out + f.inp) if l not in carried)
        return Step(self.name(c), node.op.name, self.call(c), arg, self.name(p), in_shape, out_shape,
                    subscripts, operands, f.dense_shape(False), per_sample, layout, deltas, ones, rows, cols,
                    form[2] if form else "")

    def arg_names(self, c: int) -> tuple[dict, dict]:
        """The call's array arguments by name (a node's name, or ``const(shape)``), and their shapes."""
        node = self.g.nodes[c]
        names, shapes = {"out": self.name(c)}, {}
        for name, a in zip(node.op.arrays, node.args):
            if isinstance(a, int):
                names[name], shapes[name] = self.name(a), tuple(np.shape(self.g.nodes[a].value))
            elif a is not None:
                names[name] = self.constants.get(id(a[1]), f"const{tuple(np.shape(a[1]))}")
                shapes[name] = tuple(np.shape(a[1]))
            else:
                names[name] = name
        return names, shapes

    def call(self, c: int) -> str:
        node = self.g.nodes[c]
        names, _ = self.arg_names(c)
        parts = [f"{name}={names[name]}" for name, a in zip(node.op.arrays, node.args) if a is not None]
        parts += [f"{k}={v!r}" for k, v in node.params.items()]
        return f"{node.op.name}({', '.join(parts)})"

    def operand_name(self, c: int, k: int, p: int, j: int, a) -> str:
        """A readable name: the node or constant the operand is, else the op's derivative at its argument."""
        name = None
        for i, n in enumerate(self.g.nodes):
            if n.value is a:
                name = self.name(i)
                break
        else:
            for arg in self.g.nodes[c].args:
                if isinstance(arg, tuple) and arg[1] is a:
                    name = self.constants.get(id(a), f"const{tuple(np.shape(a))}")
            if name is None:
                name = f"{float(a):g}" if np.ndim(a) == 0 else f"{self.g.nodes[c].op.name}'({self.name(p)})"
        self.ex.operand_names[(c, k, j)] = name
        return name

    def lineup(self, rel: set, per_sample: bool, carry: set, size) -> None:
        g, ex = self.g, self.ex
        out = self.name(g.output)
        paths = _paths(g, rel, self.x, g.output, MAX_PATHS + 1)
        for path in paths[:MAX_PATHS]:  # a path: node indices from x to the output
            ex.paths.append(" -> ".join(self.describe(i) for i in path))
        if len(paths) > MAX_PATHS:
            ex.notes.append(f"more than {MAX_PATHS} paths from {ex.wrt} to {out}: the first {MAX_PATHS} are shown; "
                            f"the composer sums them by accumulation, never one by one")
        # per path, the factors as (row node, column node), output end first
        chains = [[(p[j + 1], p[j]) for j in range(len(p) - 1)][::-1] for p in paths[:MAX_PATHS]]
        lead = lambda i: 1 if per_sample and i in carry else 0
        numeric = lambda i: str(size(i))
        named = lambda i: "*".join(self.names.get(n, str(n)) for n in np.shape(g.nodes[i].value)[lead(i):]) or "1"
        number = {(s.node, s.argument): n for n, s in enumerate(ex.steps, 1)}
        arg_of = {(c, p): g.nodes[c].op.arrays[k] for c in rel if g.nodes[c].op is not None
                  for k, p in g.nodes[c].parents()}
        key_of = {(c, p): (c, k) for c in rel if g.nodes[c].op is not None for k, p in g.nodes[c].parents()}

        def symbol(fs: list, transpose: bool = False) -> str:
            parts = []
            for r, c in fs:
                form = self.forms.get(key_of[(r, c)])
                n = number[(self.name(r), arg_of[(r, c)])]
                parts.append(form[1 if transpose else 0] if form else f"J{n}" + ("^T" if transpose else ""))
            parts = parts[::-1] if transpose else parts
            kept = [s for s in parts if s != "I"]
            sign = "-" if kept.count("-I") % 2 else ""
            kept = [s for s in kept if s != "-I"]
            return sign + (" ".join(kept) if kept else "I")

        def line(v: int, products: list) -> dict:
            dims = lambda name, fs: "".join(f"({name(r)}x{name(c)})" for r, c in fs)
            lhs = f"d {out}/d {self.name(v)} ({size(g.output)}x{size(v)})"
            form = " + ".join(symbol(fs) for fs in products)
            if len(products) == 1 and len(products[0]) == 1:  # one factor: the op's own J, not a product
                (r, c), = products[0]
                text = f"{lhs} = step {number[(self.name(r), arg_of[(r, c)])]} alone (one factor)"
                return {"text": text, "form": form}
            text = f"{lhs} = " + " + ".join(dims(numeric, fs) for fs in products)
            if self.names:
                text += f"   i.e. {dims(named, [(g.output, v)])} = " + " + ".join(dims(named, fs) for fs in products)
            return {"text": text, "form": form}

        main = line(self.x, chains)
        ex.lineup.append(main["text"])
        ex.closed.append(main["form"])
        if size(g.output) == 1 and all(key_of[fs[-1]] in self.forms for fs in chains):
            ex.gradient = self.gradient(chains, symbol)
        if len(chains) == 1:  # the partial products d out / d v, from the output end (Clark's error signals)
            path, fs = paths[0], chains[0]
            for j in range(len(path) - 2, 0, -1):
                part = line(path[j], [fs[:len(path) - 1 - j]])
                ex.lineup.append(part["text"])
                ex.closed.append(part["form"])
        chains = [[(size(r), size(c)) for r, c in fs] for fs in chains]
        ok = all(fs[i][1] == fs[i + 1][0] for fs in chains for i in range(len(fs) - 1))
        ex.notes.append("every factor's columns equal the next factor's rows: the dimensions line up" if ok else
                        "the dimensions do NOT line up: a Jacobian rule has the wrong shape")
        if self.batch is not None and not per_sample:
            ex.notes.append("the batch is not an independent per-sample axis on every link (samples interact, "
                            "or the output reduces over them): sizes are the full ones, batch included")

    def gradient(self, chains: list, symbol) -> str:
        """The gradient in the shape of wrt (a scalar output): the transposed chain, delta x^T for a weight."""
        g = self.g
        terms = []
        for fs in chains:
            r, c = fs[-1]
            node = g.nodes[r]
            weight = (node.op.name, node.op.arrays[self.key(r, c)[1]])
            if weight in (("linear", "W"), ("matmul", "X")) and self.forms.get(self.key(r, c)):
                rest = symbol(fs[:-1], transpose=True) if len(fs) > 1 else "1"
                x = self.arg_names(r)[0]["x" if weight[0] == "linear" else "Y"]
                terms.append(f"delta {x}^T, delta = (d {self.name(g.output)}/d {self.name(r)})^T = {rest}")
            else:
                terms.append(symbol(fs, transpose=True))
        return " + ".join(terms)

    def key(self, c: int, p: int) -> tuple[int, int]:
        return next((c, k) for k, q in self.g.nodes[c].parents() if q == p)

    # ------------------------------------------------------------ the plan, in the same letters

    def networks(self, plan: Plan) -> list[dict]:
        out = []
        for s in plan.steps:
            if isinstance(s, NetStep):
                out.append(self.network(s))
            elif isinstance(s, WindowStep):
                node = self.g.nodes[s.windows[0][0].node]
                times = math.prod(len(w[4]) for w in s.windows)
                out.append({"kind": "windows", "flops": s.cost.flops, "moved": s.cost.moved, "shape": s.shape,
                            "label": f"{times} shifted contractions {readable(s.sub.eq)} added into sliding "
                                     f"windows: the transposed convolution of d {self.name(s.windows[0][0].node)}/d "
                                     f"{node.op.arrays[s.windows[0][0].arg]}"})
            elif isinstance(s, ZeroStep):
                out.append({"kind": "zeros", "shape": s.shape, "flops": 0})
            elif isinstance(s, MapStep):
                node = self.g.nodes[s.source.node]
                how = "the 0/1 form of" if isinstance(s.array, Ones) else f"a {s.direction} through"
                out.append({"kind": "map", "flops": 0, "moved": s.cost.moved, "shape": s.shape,
                            "label": f"{how} the index map of d {self.name(s.source.node)}/d "
                                     f"{node.op.arrays[s.source.arg]}"})
            else:
                out.append(self.expand(s))
        return out

    def network(self, step: NetStep) -> dict:
        g, net = self.g, step.network
        res = net.eq.split("->")[1]
        wanted = []  # the final Jacobian's letters first, then each operand's own
        if tuple(net.sizes[l] for l in res) == tuple(self.ex.jacobian_shape) and len(res) == len(self.result):
            wanted += list(zip(res, self.result))
        for term, _, src in step.operands():
            if isinstance(src, Link) and (src.node, src.arg) in self.local:
                f = self.factors[(src.node, src.arg)]
                sub = f.terms[src.operand][0] if src.operand < len(f.terms) else ""
                if len(sub) == len(term):
                    wanted += [(a, self.local[(src.node, src.arg)][b]) for a, b in zip(term, sub)]
            elif isinstance(src, Slot) and src.index in self.slots and len(self.slots[src.index]) == len(term):
                wanted += list(zip(term, self.slots[src.index]))
        wanted += [(ch, None) for ch in net.eq if ch not in ",->"]
        m = _injective(wanted, self.letters)
        r = lambda s: "".join(m.get(ch, ch) for ch in s)
        self.slots[step.slot] = r(net.eq.split("->")[1])
        operands = []
        for term, shape, src in step.operands():
            if isinstance(src, Link):
                c, k, j = src
                arg = g.nodes[c].args[k]
                what = f"d {self.name(c)}/d {self.name(arg) if isinstance(arg, int) else g.nodes[c].op.arrays[k]}"
                named = self.ex.operand_names.get((c, k, j))
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
        label = step.label
        head = re.match(r"d(.+)/d(.+)$", label)
        if head and g.output is not None and head.group(1) == g.nodes[g.output].name:
            label = f"d {self.name(g.output)}/d {head.group(2)}"
        return {"kind": "network", "label": label, "eq": r(net.eq), "operands": operands,
                "path": [tuple(p) for p in step.path], "steps": pairs, "flops": step.cost.flops,
                "largest": step.cost.largest_intermediate, "sizes": {m[l]: n for l, n in net.sizes.items()}}

    def expand(self, step) -> dict:
        terms, res = step.eq.split("->")
        terms = terms.split(",") if terms else []
        wanted = []
        if tuple(step.shape) == tuple(self.ex.jacobian_shape) and len(res) == len(self.result):
            wanted += list(zip(res, self.result))
        for t, src in zip(terms, step.sources):
            if isinstance(src, Slot) and src.index in self.slots and len(self.slots[src.index]) == len(t):
                wanted += list(zip(t, self.slots[src.index]))
        m = _injective(wanted, self.letters)
        for t, src in zip(terms, step.sources):
            if isinstance(src, Eye) and t[0] in m and t[1] not in m:
                m[t[1]] = _copy(m[t[0]], set(m.values())) or self.letters.take()
        for ch in step.eq:
            if ch not in ",->" and ch not in m:
                m[ch] = self.letters.take()
        eq = "".join(m.get(ch, ch) for ch in step.eq)
        return {"kind": "add" if step.add_to is not None else "expand", "eq": eq, "shape": step.shape,
                "flops": step.cost.flops}


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


# ---------------------------------------------------------------- the text

WIDTH = 100  # columns: a lecture projector


def _wrap(line: str, width: int = WIDTH) -> list[str]:
    """``line`` in lines of at most ``width`` columns, broken after spaces and commas, never cut short.

    Continuations are indented 4 past the line's own indent; a piece with no break in it that is
    still too wide is split where the width ends (nothing is dropped)."""
    if len(line) <= width:
        return [line]
    indent = " " * (len(line) - len(line.lstrip()) + 4)
    pieces = re.findall(r"[^ ,]*[ ,]+|[^ ,]+$", line)
    out, cur = [], ""
    for piece in pieces:
        if cur and len(cur) + len(piece.rstrip()) > width:
            out.append(cur.rstrip())
            cur = indent
            piece = piece.lstrip()
        while len(cur) + len(piece.rstrip()) > width:
            room = width - len(cur)
            out.append(cur + piece[:room])
            cur, piece = indent, piece[room:]
        cur += piece
    if cur.strip():
        out.append(cur.rstrip())
    return out


def _elimination_lines(plan) -> list[str]:
    """The vertex-elimination order a plan used, first to last, by node name (replayable with
    ``order=jacobians.elimination.Elimination(names)``); nothing for an accumulation plan."""
    if not getattr(plan, "elimination", ()):
        return []
    return [f"  elimination order, first to last ({len(plan.elimination)} vertices): "
            + " -> ".join(plan.elimination)]


def _render(ex: Explanation) -> str:
    lines = [f"explain d {ex.function}/d {ex.wrt}: Jacobian shape {ex.jacobian_shape}"
             + (f", batched over {ex.batched!r}" if ex.batched else "") + f", order={ex.order!r}"]
    for p in ex.paths[:1] if len(ex.paths) == 1 else ex.paths:
        lines.append(f"  path: {p}")
    if ex.labels:
        named = ex.dims
        desc = [f"{l} = the batch ({n} samples)" if batch else f"{l} = {n}" + (f" ({named[n]})" if n in named else "")
                for l, (n, batch) in ex.labels.items()]
        lines.append("  einsum labels, the same in every section: " + ", ".join(desc)
                     + "; a capital is a delta's input side")
    if ex.steps:
        lines.append("")
        lines.append("ops, input end first; each Jacobian d out/d in has the shape (*out, *in):")
    for n, s in enumerate(ex.steps, 1):
        lines.append(f"{n}. {s.node} = {s.call}: {s.parent} {s.in_shape} -> {s.node} {s.out_shape}")
        lines.append(f"   d {s.node}/d {s.parent} = {s.einsum}"
                     + (f", ones on {', '.join(s.ones)} (a sum or a broadcast)" if s.ones else ""))
        shape = f"   shape {s.jacobian_shape}"
        if s.per_sample_shape is not None:
            shape = f"   per sample {s.per_sample_shape}, dense {s.jacobian_shape}"
        lines.append(f"{shape}; layout {s.layout}")
        if s.deltas:
            tied = ", ".join(f"{l}: out axis {i} = in axis {j} ({n_})" for l, i, j, n_ in s.deltas)
            kind = ""
            if len(s.deltas) == len(s.out_shape) == len(s.in_shape):
                kind = " -- every axis tied: a diagonal"
            elif s.per_sample_shape is not None and len(s.deltas) == 1:
                kind = " -- the per-sample batch"
            if len(f"   deltas {tied}{kind}") <= WIDTH:
                lines.append(f"   deltas {tied}{kind}")
            else:  # the kind on a line of its own, not broken mid-phrase
                lines += [f"   deltas {tied}", f"      {kind}"]
        else:
            lines.append("   deltas: none (a dense factor)")
        if s.closed:
            lines.append(f"   closed form: {s.closed}")
    if ex.lineup:
        lines.append("")
        lines.append("chain rule, output end first, each factor flattened to (rows x columns)"
                     + (f", per sample (batch {ex.batch_label}):" if ex.per_sample else ":"))
        for text, form in zip(ex.lineup, ex.closed):
            text, _, named = text.partition("   i.e. ")
            lines.append("  " + text)
            if named:
                lines.append("      i.e. " + named)
            lines.append("      = " + form)
        if ex.gradient:
            lines.append(f"  as a gradient (the shape of {ex.wrt}): {ex.gradient}")
    if ex.plan is not None and ex.plan.steps:
        lines.append("")
        costs = ", ".join(f"{o} {v:.4g}" for o, v in ex.order_flops.items())
        what = {"network": None, "add": "add deltas", "expand": "expand deltas", "zeros": "zeros",
                "windows": "shifted contractions"}
        parts = [f"{s['flops']:.4g} ({what[s['kind']] or s['label']})" for s in ex.networks if s["kind"] != "map"]
        total = f"{ex.plan.flops:.4g} FLOPs" + (f" = {' + '.join(parts)}" if len(parts) > 1 else "")
        moved = f", {ex.plan.moved:.4g} elements moved by index maps" if ex.plan.moved else ""
        lines.append(f"contraction ({ex.plan.strategy}): {total}{moved}; the same Jacobian by order: {costs}")
        lines += _elimination_lines(ex.plan)
    for net in ex.networks:
        if net["kind"] == "network":
            lines.append(f"  {net['label']}: {net['eq']}   sizes "
                         + " ".join(f"{l}={n}" for l, n in net["sizes"].items()))
            for term, shape, what in net["operands"]:
                lines.append(f"    {term or repr(''):<6} {str(tuple(shape)):<14} {what}")
            lines.append(f"    path {net['path']}: {net['flops']:.4g} FLOPs, "
                         f"largest intermediate {net['largest']} elements")
            for eq, flops in net["steps"]:
                lines.append(f"      {eq:<24} {flops} FLOPs")
        elif net["kind"] == "zeros":
            lines.append(f"  zeros of shape {net['shape']} (a size-0 axis): 0 FLOPs")
        elif net["kind"] == "windows":
            lines.append(f"  {net['label']}, into shape {net['shape']}: {net['flops']:.4g} FLOPs, "
                         f"{net['moved']} elements moved")
        elif net["kind"] == "map":
            lines.append(f"  {net['label']} into shape {net['shape']}: {net['moved']} elements moved "
                         f"(memory traffic, not FLOPs)")
        else:
            lines.append(f"  {net['kind']} deltas into shape {net['shape']}: {net['eq']}, {net['flops']:.4g} FLOPs")
    if ex.notes:
        lines.append("")
        lines += [f"note: {n}" for n in ex.notes]
    return "\n".join(w for line in lines for w in _wrap(line))


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
