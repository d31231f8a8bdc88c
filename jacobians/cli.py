"""The ``jacobians`` command: ``compare``, ``explain`` and ``demo``.

    jacobians compare                      # forward vs reverse vs optimal on a tanh MLP and a bottleneck
    jacobians compare --problem residual --widths 64,128,64 --batch 8 --json out.json
    jacobians explain                      # Clark's one-layer network, op by op, per sample
    jacobians explain --widths 784,1024,10 --batch 10
    jacobians demo                         # the lecture notes' worked examples, checked

Bad options are one line on stderr and exit code 2; an error from the
library (a shape mistake, a Jacobian over the memory limit) is one line
``jacobians: error: ...`` and exit code 1.  ``python -m jacobians`` is the same.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from typing import Callable, Sequence

import numpy as np

from . import __version__
from .comparison import DEFAULT_ORDERS
from .plots import ACTIVATIONS, DEFAULT_WIDTHS, PROBLEMS, problem

__all__ = ["main"]

RTOL = 1e-8            # a row disagrees with the optimal order beyond this relative difference
DEFAULT_PROBLEMS = ("mlp", "bottleneck")
CLARK = {"Dx": 6, "Dh": 5, "Nc": 3}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (usage stays in --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Fail(Exception):
    """A runtime failure the command reports as one line, with its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 failure, 2 bad options)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.error("choose a command: compare, explain or demo (jacobians --help describes them)")
        return args.run(args, args.parser)
    except SystemExit as e:  # --help, --version, option errors: argparse's exit code
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except _Fail as e:
        print(f"jacobians: error: {_one_line(e)}", file=sys.stderr)
        return e.code
    except (ValueError, MemoryError, ImportError) as e:  # from the library: a shape mistake, JacobianTooLarge
        print(f"jacobians: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("jacobians: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `jacobians compare | head`
        sys.stdout = None
        return 1


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


# ---------------------------------------------------------------- options

def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="jacobians", description="Full, explicit Jacobians with einsum: forward vs reverse vs "
                                              "optimal contraction orders, shape derivations, the notes' examples.")
    p.add_argument("--version", action="version", version=f"jacobians {__version__}")
    p.set_defaults(command=None)
    sub = p.add_subparsers(title="commands", metavar="{compare,explain,demo}")

    c = sub.add_parser("compare", help="forward vs reverse vs optimal on a built-in problem",
                       description="Cost (FLOPs, largest array), time and agreement of every contraction order "
                                   "and of the JVP/VJP sweeps on a built-in problem. With no options: a tanh MLP "
                                   f"{'-'.join(map(str, DEFAULT_WIDTHS['mlp']))} and a bottleneck chain "
                                   f"{'-'.join(map(str, DEFAULT_WIDTHS['bottleneck']))}, batch 32, per-sample "
                                   "d out/d x. Exits 1 if any order disagrees with the optimal one.")
    c.add_argument("--problem", metavar="NAMES",
                   help=f"comma-separated, from {', '.join(PROBLEMS)} (default: mlp,bottleneck; "
                        "mlp only when --widths is given)")
    c.add_argument("--widths", metavar="N,N,...",
                   help="layer widths, input first (e.g. 256,512,10; residual: D,H,D)")
    c.add_argument("--batch", metavar="B", default="32", help="batch size; 0 = one unbatched sample (default 32)")
    c.add_argument("--activation", choices=ACTIVATIONS, default="tanh", help="default tanh")
    c.add_argument("--repeats", metavar="N", default="3", help="timed calls per order, median reported (default 3)")
    c.add_argument("--orders", metavar="NAMES", default=",".join(DEFAULT_ORDERS),
                   help=f"comma-separated, from {', '.join(DEFAULT_ORDERS)} (default: all)")
    c.add_argument("--plot", metavar="FILE", help="also write the cost curves (PNG; needs matplotlib)")
    c.add_argument("--json", metavar="FILE", help="write the reports and the problem settings as JSON")
    c.add_argument("--seed", metavar="N", default="0", help="random weights and inputs (default 0)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    c.set_defaults(run=_compare, command="compare", parser=c)

    e = sub.add_parser("explain", help="the shape derivation of a chain, op by op",
                       description="Op by op: einsum subscripts, shapes, deltas, the chain rule with its "
                                   "dimensions lined up, the contraction path. Default: Clark's one-layer network "
                                   "x -> linear -> relu -> linear -> softmax cross entropy, per sample "
                                   f"({', '.join(f'{k}={v}' for k, v in CLARK.items())}); --widths/--activation "
                                   "explain a plain MLP instead.")
    e.add_argument("--widths", metavar="N,N,...", help="an MLP with these widths, input first (e.g. 784,1024,10)")
    e.add_argument("--activation", choices=ACTIVATIONS, help="the MLP's activation (default tanh)")
    e.add_argument("--batch", metavar="B", help="batch size; 0 = unbatched (default 4; 10 for an MLP)")
    e.add_argument("--wrt", metavar="NAME", default="x", help="the argument to differentiate (default x)")
    e.add_argument("--order", choices=("optimal", "forward", "reverse", "bracket"), default="optimal")
    e.add_argument("--seed", metavar="N", default="0")
    e.set_defaults(run=_explain, command="explain", parser=e)

    d = sub.add_parser("demo", help="the lecture notes' worked examples, with their shapes and checks",
                       description="Op Jacobian shapes, a finite-difference check, Clark's one-layer gradients, "
                                   "CS182's residual block and cost formulas, softmax cross entropy: each line "
                                   "says what it checked. Exits 1 if a check fails.")
    d.set_defaults(run=_demo, command="demo", parser=d)
    return p


def _ints(parser, option: str, text: str, minimum: int, what: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < minimum:
        parser.error(f"{option} must be {what}, got {text!r}")
    return values


def _int(parser, option: str, text: str, minimum: int, what: str) -> int:
    values = _ints(parser, option, text, minimum, what)
    if len(values) != 1:
        parser.error(f"{option} must be {what}, got {text!r}")
    return values[0]


def _names(parser, option: str, text: str, valid: Sequence[str]) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in valid]
    if not names or bad:
        parser.error(f"{option}: unknown {'name' if not names else repr(bad[0])}; valid options are {', '.join(valid)}")
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------- compare

def _compare(args, parser) -> int:
    widths = _ints(parser, "--widths", args.widths, 1, "positive integers") if args.widths else None
    if widths is not None and len(widths) < 2:
        parser.error(f"--widths needs at least two widths (input and output), got {args.widths!r}")
    batch = _int(parser, "--batch", args.batch, 0, "a non-negative integer")
    repeats = _int(parser, "--repeats", args.repeats, 1, "a positive integer")
    seed = _int(parser, "--seed", args.seed, 0, "a non-negative integer")
    orders = _names(parser, "--orders", args.orders, DEFAULT_ORDERS)
    names = _names(parser, "--problem", args.problem, PROBLEMS) if args.problem else \
        (["mlp"] if widths else list(DEFAULT_PROBLEMS))
    if "residual" in names and widths is not None and (len(widths) != 3 or widths[0] != widths[-1]):
        parser.error(f"--widths for the residual block must be D,H,D (the skip adds x to the output), got {args.widths!r}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401  (fail before the long part)
        except ImportError:
            raise _Fail("--plot needs matplotlib: pip install 'jacobians[plot]'") from None
    problems = [problem(n, widths, batch, args.activation, seed) for n in names]

    start = time.perf_counter()
    results, failures = [], []
    for k, p in enumerate(problems):
        def progress(msg: str, name=p.name) -> None:
            if not args.quiet:
                print(f"[{name}] {msg} ... ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
        report = p.compare(orders=orders, repeats=repeats, progress=progress)
        if k:
            print()
        print(f"== {p.description}")
        print(report)
        results.append({"settings": p.settings, "report": report.to_dict()})
        for r in report.rows:
            if not r.max_rel_diff <= RTOL:  # NaN disagrees too
                failures.append(f"{p.name}: order {r.order!r} disagrees with the optimal order: max |diff| "
                                f"{r.max_abs_diff:.3g} (relative {r.max_rel_diff:.3g} > {RTOL:g})")
    if args.plot:
        from .plots import cost_curves
        n = min(problems[0].settings["widths"][0], 512)
        if not args.quiet:
            print(f"[plot] cost curves around n = {n} ... ({time.perf_counter() - start:.1f} s)",
                  file=sys.stderr, flush=True)
        cost_curves(n=n, activation=args.activation, repeats=min(repeats, 3), seed=seed).savefig(args.plot, dpi=110)
        print(f"\ncost curves written to {args.plot}")
    if args.json:
        doc = {"jacobians": __version__, "command": "compare", "orders": orders, "repeats": repeats,
               "tolerance": RTOL, "problems": results, "ok": not failures}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=2, default=_json_default)
        print(f"{'' if args.plot else chr(10)}report written to {args.json}")
    if failures:
        print(f"jacobians compare: error: {failures[0]}" + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""),
              file=sys.stderr)
        return 1
    return 0


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


# ---------------------------------------------------------------- explain

def _clark(batch: int, seed: int):
    """Clark's one-layer network: z = W x + b1, h = relu(z), theta = U h + b2, J = CE(y, softmax(theta))."""
    from .graph import fn

    def clark(x, W, b1, U, b2, y):
        z = fn.linear(x, W, b1)
        h = fn.relu(z)
        theta = fn.linear(h, U, b2)
        return fn.softmax_cross_entropy(theta, y)

    rng = np.random.default_rng(seed)
    Dx, Dh, Nc = CLARK["Dx"], CLARK["Dh"], CLARK["Nc"]
    lead = (batch,) if batch else ()
    args = (rng.normal(size=lead + (Dx,)), rng.normal(size=(Dh, Dx)), rng.normal(size=Dh),
            rng.normal(size=(Nc, Dh)), rng.normal(size=Nc), rng.integers(0, Nc, size=lead))
    return clark, args


def _explain(args, parser) -> int:
    from .explain import explain
    seed = _int(parser, "--seed", args.seed, 0, "a non-negative integer")
    mlp = args.widths is not None or args.activation is not None
    widths = _ints(parser, "--widths", args.widths, 1, "positive integers") if args.widths else [784, 1024, 10]
    if len(widths) < 2:
        parser.error(f"--widths needs at least two widths (input and output), got {args.widths!r}")
    batch = _int(parser, "--batch", args.batch, 0, "a non-negative integer") if args.batch is not None else \
        (10 if mlp else 4)
    if mlp:
        p = problem("mlp", widths, batch, args.activation or "tanh", seed)
        f, fargs, dims = p.f, p.args, None
        header = f"explain {p.description}"
    else:
        f, fargs = _clark(batch, seed)
        dims = CLARK
        header = ("explain Clark's one-layer network: z = W x + b1 (linear_0), h = relu(z) (relu_0), "
                  "theta = U h + b2 (linear_1), J = CE(y, softmax(theta)) (softmax_cross_entropy_0); "
                  + ", ".join(f"{k}={v}" for k, v in CLARK.items())
                  + (f", batch {batch} (per sample)" if batch else ", one sample"))
    valid = [n for n in inspect.signature(f).parameters if n != "y"]  # y: Clark's labels, not differentiable
    if args.wrt not in valid:
        parser.error(f"--wrt must be one of {', '.join(valid)}, got {args.wrt!r}")
    print(header)
    print()
    print(explain(f, *fargs, wrt=args.wrt, batched="x" if batch else None, order=args.order, dims=dims))
    return 0


# ---------------------------------------------------------------- demo

def _demo(args, parser) -> int:
    checks = _demo_checks()
    failed = 0
    for title, check in checks:
        try:
            detail = check()
            print(f"{title}: {detail} ok")
        except AssertionError as e:
            failed += 1
            print(f"{title}: FAILED: {_one_line(e)}")
    print(f"\n{len(checks) - failed} of {len(checks)} checks ok")
    return 1 if failed else 0


def _demo_checks() -> list[tuple[str, Callable[[], str]]]:
    import jacobians as jac
    from .testing import check_jacobian
    rng = np.random.default_rng(0)
    ops = jac.ops

    def same(a, b, what: str, tol: float = 1e-12) -> float:
        d = float(np.abs(np.asarray(a) - np.asarray(b)).max(initial=0.0))
        assert np.shape(a) == np.shape(b) and d <= tol * max(1.0, float(np.abs(b).max(initial=0.0))), \
            f"{what}: shapes {np.shape(a)} vs {np.shape(b)}, max |diff| {d:.3g}"
        return d

    def shapes(got: dict, want: dict) -> str:
        for k in want:
            assert got[k] == want[k], f"{k}: expected {want[k]}, got {got[k]}"
        return ", ".join(f"{k} {v}" for k, v in got.items())

    def linear():
        B, D, H = 2, 3, 4
        _, (dx, dW, db) = ops.linear(rng.normal(size=(B, D)), rng.normal(size=(H, D)), rng.normal(size=H))
        return shapes({"dz/dx (B,H,D)": dx.shape, "dz/dW (B,H,H,D)": dW.shape, "dz/db (B,H,H)": db.shape},
                      {"dz/dx (B,H,D)": (B, H, D), "dz/dW (B,H,H,D)": (B, H, H, D), "dz/db (B,H,H)": (B, H, H)})

    def sigmoid():
        _, (da,) = ops.sigmoid(rng.normal(size=(2, 4)))
        return shapes({"da/dh (B,H,H)": da.shape}, {"da/dh (B,H,H)": (2, 4, 4)})

    def matmul():
        n, m, p = 2, 3, 4
        _, (dX, dY) = ops.matmul(rng.normal(size=(n, m)), rng.normal(size=(m, p)), batch=False)
        return shapes({"dC/dX (n,p,n,m)": dX.shape, "dC/dY (n,p,m,p)": dY.shape},
                      {"dC/dX (n,p,n,m)": (n, p, n, m), "dC/dY (n,p,m,p)": (n, p, m, p)})

    def finite_differences():
        results = check_jacobian(ops.softmax, rng.normal(size=(3, 4))) + \
            check_jacobian(ops.linear, rng.normal(size=(3, 4)), rng.normal(size=(2, 4)), rng.normal(size=2))
        worst = max(r.max_abs_error for r in results)
        return f"softmax and linear ({len(results)} Jacobians) against central differences, max abs error {worst:.1e}"

    def clark():
        Dx, Dh, Nc = CLARK["Dx"], CLARK["Dh"], CLARK["Nc"]
        f, (x, W, b1, U, b2, y) = _clark(0, 1)
        J = jac.jacobian(f, wrt=("x", "W", "b1", "U", "b2"))(x, W, b1, U, b2, y)
        z = W @ x + b1
        h = np.maximum(z, 0)
        theta = U @ h + b2
        yhat = np.exp(theta - theta.max()) / np.exp(theta - theta.max()).sum()
        d1 = yhat - np.eye(Nc)[y]                    # dJ/dtheta (identity 7)
        d2 = (U.T @ d1) * (z > 0)                    # dJ/dz = d1 U sgn(h)
        closed = {"U": np.outer(d1, h), "b2": d1, "W": np.outer(d2, x), "b1": d2, "x": W.T @ d2}
        worst = max(same(J[k], v, f"dJ/d{k}") for k, v in closed.items())
        from .explain import explain
        e = explain(f, x, W, b1, U, b2, y, wrt="x", dims=CLARK)
        check = "(1xDh) = (1xNc)(NcxDh)(DhxDh)"
        assert any(check in line for line in e.lineup), f"no line-up {check} in {e.lineup}"
        return (f"dJ/dU = d1 h^T, dJ/db2 = d1, dJ/dW = d2 x^T, dJ/db1 = d2, dJ/dx = W^T d2 "
                f"(Dx={Dx}, Dh={Dh}, Nc={Nc}; max |diff| {worst:.1e}); dimension check dJ/dz {check}")

    def residual():
        D, H = 4, 6
        W1, W2, x = rng.normal(size=(H, D)), rng.normal(size=(D, H)), rng.normal(size=D)

        def block(x, W1, W2):
            return W2 @ jac.fn.relu(W1 @ x) + x
        J = jac.jacobian(block, wrt="x")(x, W1, W2)
        R = np.diag((W1 @ x > 0).astype(float))
        d = same(J, W2 @ R @ W1 + np.eye(D), "dy/dx")
        return f"y = W2 relu(W1 x) + x: dy/dx = W2 R W1 + I ({D}x{D}, max |diff| {d:.1e})"

    def softmax_ce():
        B, C = 3, 5
        logits, labels = rng.normal(size=(B, C)), rng.integers(0, C, size=B)
        J = jac.jacobian(lambda t, y: jac.fn.softmax_cross_entropy(t, y), wrt="t", batched="t")(logits, labels)
        q = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        d = same(J, q - np.eye(C)[labels], "dJ/dtheta")
        return f"per-sample dJ/dtheta (B,C) = {J.shape} equals yhat - y (max |diff| {d:.1e})"

    def cs182_costs():
        n, m1, m2, m3 = 7, 5, 9, 3
        Ws = [rng.normal(size=s) for s in ((m1, n), (m2, m1), (m3, m2))]

        def chain(x, W1, W2, W3):
            return W3 @ (W2 @ (W1 @ x))
        report = jac.compare(chain, rng.normal(size=n), *Ws, wrt="x", orders=("jvp", "vjp", "optimal"), repeats=1)
        s = m1 * n + m2 * m1 + m3 * m2
        want = {"jvp": 2 * n * s, "vjp": 2 * m3 * s}
        for order, flops in want.items():
            assert report.row(order).flops == flops, f"{order}: counted {report.row(order).flops}, formula {flops}"
        return (f"chain {n}->{m1}->{m2}->{m3}: JVPs 2n*sum(m_k m_k-1) = {want['jvp']} FLOPs, "
                f"VJPs 2m*sum = {want['vjp']} FLOPs, counted exactly")

    return [("linear (Schaeffer)", linear), ("sigmoid (Schaeffer)", sigmoid), ("matmul unbatched (Yeh)", matmul),
            ("finite differences", finite_differences), ("Clark one-layer network", clark),
            ("CS182 residual block", residual), ("softmax cross entropy (Clark identity 7)", softmax_ce),
            ("CS182 JVP/VJP costs", cs182_costs)]
