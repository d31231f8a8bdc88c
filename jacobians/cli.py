"""The ``jacobians`` command: ``compare``, ``explain`` and ``demo``, on built-in problems or your function.

    jacobians compare                      # forward vs reverse vs optimal on a tanh MLP and a bottleneck
    jacobians compare --problem residual --widths 64,128,64 --batch 8 --json out.json
    jacobians compare examples/mlp.py:net --wrt x,W1 --batched x        # inputs from example_inputs()
    jacobians compare model.py:net --batched x --shape x=32,784 --shape W1=256,784 ... --plot net.png
    jacobians compare mypackage.models:net --inputs inputs.npz --repeats 20 --min-time 1
    jacobians explain                      # Clark's one-layer network, op by op, per sample
    jacobians explain --widths 784,1024,10 --batch 10
    jacobians explain examples/mlp.py:net --batched x
    jacobians demo                         # the lecture notes' worked examples, checked

A function is ``FILE.py:NAME`` or ``MODULE:NAME`` (importable from the current
directory).  Its arguments come from ``--inputs FILE.npz`` (arrays by argument
name), ``--shape NAME=N,N,...`` (standard normal float64 from ``--seed``), and,
for any argument still without a value, the module's ``example_inputs()`` (a
dict by name, or a tuple in argument order); arguments with defaults may be left out.

Bad options (a bad path or function name, a malformed or missing shape, an
output path that cannot be written, inputs the function does not run on) are
one line on stderr and exit code 2, before anything is computed; an error from
the library (a Jacobian over the memory limit) is one line ``jacobians: error:
...`` and exit code 1.  Progress is one status line on stderr, only when stderr
is a terminal and without ``-q``, cleared before each report prints.
``python -m jacobians`` is the same.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import math
import os
import re
import shutil
import sys
import textwrap
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import __version__
from .comparison import DEFAULT_MIN_TIME, DEFAULT_ORDERS, DEFAULT_REPEATS, blas_threads
from .limits import JacobianTooLarge
from .plots import ACTIVATIONS, DEFAULT_WIDTHS, PROBLEMS, problem

__all__ = ["main"]

RTOL = 1e-8            # a row disagrees with the optimal order beyond this relative difference
DEFAULT_PROBLEMS = ("mlp", "bottleneck")
CLARK = {"Dx": 6, "Dh": 5, "Nc": 3}
FUNCTION_OPTIONS = ("--wrt", "--batched", "--shape", "--inputs", "--output")  # need a function
BUILTIN_OPTIONS = ("--problem", "--widths", "--batch", "--activation")  # not with a function


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (usage stays in --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_one_line(message)}\n")


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


def _one_line(e: BaseException | str) -> str:
    return " ".join(str(e).split())


# ---------------------------------------------------------------- options

def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="jacobians", description="Full, explicit Jacobians with einsum: forward vs reverse vs "
                                              "optimal contraction orders, shape derivations, the notes' examples.")
    p.add_argument("--version", action="version", version=f"jacobians {__version__}")
    p.set_defaults(command=None)
    sub = p.add_subparsers(title="commands", metavar="{compare,explain,demo}")

    c = sub.add_parser("compare", help="forward vs reverse vs optimal on your function or a built-in problem",
                       description="Cost (FLOPs, largest array), time and agreement of every contraction order "
                                   "and of the JVP/VJP sweeps, on FUNCTION (FILE.py:NAME or MODULE:NAME) or on a "
                                   "built-in problem. With no FUNCTION and no options: a tanh MLP "
                                   f"{'-'.join(map(str, DEFAULT_WIDTHS['mlp']))} and a bottleneck chain "
                                   f"{'-'.join(map(str, DEFAULT_WIDTHS['bottleneck']))}, batch 32, per-sample "
                                   "d out/d x. Exits 1 if any order disagrees with the optimal one.")
    c.add_argument("function", nargs="?", metavar="FUNCTION",
                   help="your function: path/to/model.py:net or package.module:net")
    _function_options(c, several_wrt=True)
    c.add_argument("--output", metavar="KEY", help="a function returning a tuple, list or dict of arrays: "
                                                   "the output to compare (a position or a key)")
    c.add_argument("--problem", metavar="NAMES",
                   help=f"built-in problems, comma-separated, from {', '.join(PROBLEMS)} (default: mlp,bottleneck; "
                        "mlp only when --widths is given)")
    c.add_argument("--widths", metavar="N,N,...",
                   help="built-in problems: layer widths, input first (e.g. 256,512,10; residual: D,H,D)")
    c.add_argument("--batch", metavar="B", help="built-in problems: batch size; 0 = one unbatched sample (default 32)")
    c.add_argument("--activation", choices=ACTIVATIONS, help="built-in problems: default tanh")
    c.add_argument("--repeats", metavar="N", default=str(DEFAULT_REPEATS),
                   help=f"at least N timed calls per order, after one warm-up call (default {DEFAULT_REPEATS})")
    c.add_argument("--min-time", metavar="SECONDS", default=f"{DEFAULT_MIN_TIME:g}",
                   help="and at least this much time of timed calls per order; the report shows their median "
                        f"and interquartile range (default {DEFAULT_MIN_TIME:g})")
    c.add_argument("--orders", metavar="NAMES", default=",".join(DEFAULT_ORDERS),
                   help=f"comma-separated, from {', '.join(DEFAULT_ORDERS)} (default: all)")
    c.add_argument("--plot", metavar="FILE", help="also write a figure (PNG, SVG, PDF, ...; needs matplotlib): for "
                   "a function, its Jacobian heatmap and every order's FLOPs, largest array and time; for the "
                   "built-in problems, the cost curves")
    c.add_argument("--json", metavar="FILE", help="write the reports and the settings as JSON")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress line on stderr")
    c.set_defaults(run=_compare, command="compare", parser=c)

    e = sub.add_parser("explain", help="the shape derivation of your function or a built-in chain, op by op",
                       description="Op by op: einsum subscripts, shapes, deltas, the chain rule with its "
                                   "dimensions lined up, the contraction path; on FUNCTION (FILE.py:NAME or "
                                   "MODULE:NAME) or, without one, on Clark's one-layer network "
                                   "x -> linear -> relu -> linear -> softmax cross entropy, per sample "
                                   f"({', '.join(f'{k}={v}' for k, v in CLARK.items())}); --widths/--activation "
                                   "explain a plain MLP instead.")
    e.add_argument("function", nargs="?", metavar="FUNCTION",
                   help="your function: path/to/model.py:net or package.module:net")
    _function_options(e, several_wrt=False)
    e.add_argument("--widths", metavar="N,N,...", help="an MLP with these widths, input first (e.g. 784,1024,10)")
    e.add_argument("--activation", choices=ACTIVATIONS, help="the MLP's activation (default tanh)")
    e.add_argument("--batch", metavar="B", help="batch size; 0 = unbatched (default 4; 10 for an MLP)")
    e.add_argument("--order", choices=("optimal", "forward", "reverse", "bracket"), default="optimal")
    e.set_defaults(run=_explain, command="explain", parser=e)

    d = sub.add_parser("demo", help="the lecture notes' worked examples, with their shapes and checks",
                       description="Op Jacobian shapes, a finite-difference check, Clark's one-layer gradients, "
                                   "CS182's residual block and cost formulas, softmax cross entropy: each line "
                                   "says what it checked. Exits 1 if a check fails.")
    d.set_defaults(run=_demo, command="demo", parser=d)
    return p


def _function_options(p, several_wrt: bool) -> None:
    p.add_argument("--wrt", metavar="NAMES", action="append",
                   help="the argument(s) to differentiate" + (", repeatable or comma-separated" if several_wrt else
                   "; repeatable or comma-separated, one derivation each") + " (default: a function's first "
                   "argument; x for the built-in networks)")
    p.add_argument("--batched", metavar="NAMES", help="a function's argument(s) whose axis 0 is the batch, "
                                                      "comma-separated (one batch): per-sample Jacobians")
    p.add_argument("--shape", metavar="NAME=N,N,...", action="append",
                   help="random standard normal float64 input of this shape, e.g. x=32,784 (repeatable)")
    p.add_argument("--inputs", metavar="FILE.npz", help="a function's arguments by name (numpy.savez)")
    p.add_argument("--seed", metavar="N", default="0", help="random weights and inputs (default 0)")


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


def _seconds(parser, option: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        parser.error(f"{option} must be a number of seconds >= 0, got {text!r}")
    return value


def _names(parser, option: str, text: str, valid: Sequence[str]) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in valid]
    if not names or bad:
        parser.error(f"{option}: unknown {'name' if not names else repr(bad[0])}; valid options are {', '.join(valid)}")
    return list(dict.fromkeys(names))


def _given(args, options: Sequence[str]) -> list[str]:
    return [o for o in options if getattr(args, o.lstrip("-").replace("-", "_"), None) is not None]


def _check_output(parser, option: str, path: str) -> None:
    """An output file must be writable before anything is computed: a file name in an existing directory."""
    if os.path.isdir(path):
        parser.error(f"{option} {path!r} is a directory; give a file name in it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(parent):
        parser.error(f"{option} {path!r}: the directory {os.path.dirname(path) or '.'!r} does not exist")
    if not os.path.isdir(parent):
        parser.error(f"{option} {path!r}: {os.path.dirname(path)!r} is not a directory")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        parser.error(f"{option} {path!r} exists and cannot be written")
    if not os.path.exists(path) and not os.access(parent, os.W_OK | os.X_OK):
        parser.error(f"{option} {path!r}: no permission to create files in {os.path.dirname(path) or '.'!r}")


def _check_plot(parser, path: str) -> str:
    """The figure's format (from the file's extension, PNG without one), checked before the long part."""
    try:
        import matplotlib  # noqa: F401  (itself first: a cached submodule would hide its absence)
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise _Fail("--plot needs matplotlib: pip install 'jacobians[plot]'") from None
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if ext and ext not in formats:
        parser.error(f"--plot {path!r}: unknown image format {ext!r}; valid options are {', '.join(sorted(formats))}")
    return ext or "png"


class _Status:
    """One status line on stderr, rewritten in place and cleared before anything else prints.

    Shown only when stderr is a terminal and ``-q`` is not given; the line is cut
    to the terminal's width (a wrapped line could not be cleared with ``\\r``).
    """

    def __init__(self, quiet: bool) -> None:
        self.stream = sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.on = not quiet and callable(isatty) and bool(isatty())
        self.width = 0
        self.start = time.perf_counter()

    def show(self, text: str) -> None:
        if not self.on:
            return
        text = f"{text} ... ({time.perf_counter() - self.start:.1f} s)"
        text = text[:max(10, shutil.get_terminal_size((80, 24)).columns - 1)]
        self.stream.write("\r" + text + " " * max(0, self.width - len(text)))
        self.stream.flush()
        self.width = len(text)

    def clear(self) -> None:
        if self.on and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0

    def __enter__(self) -> "_Status":
        return self

    def __exit__(self, *exc) -> None:
        self.clear()


# ---------------------------------------------------------------- your function

@dataclass
class _Function:
    """The user's function, where it came from, and its arguments."""

    label: str                      # as given: examples/mlp.py:net
    f: Callable
    module: object
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)  # argument -> "--shape" | "--inputs" | "example_inputs()"
    wrt: list = field(default_factory=list)
    batched: str | None = None

    @property
    def params(self) -> list[inspect.Parameter]:
        return [p for p in inspect.signature(self.f).parameters.values()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    @property
    def signature(self) -> str:
        return f"{getattr(self.f, '__name__', 'f')}({', '.join(p.name for p in self.params)})"

    def value(self, name: str):
        pos = [p.name for p in self.params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return self.args[pos.index(name)] if name in pos[:len(self.args)] else self.kwargs[name]

    def describe_inputs(self) -> str:
        """``inputs from example_inputs(): x (8, 20), W1 (32, 20); from --shape: b1 (32,)`` (float64 unsaid)."""
        groups: dict[str, list[str]] = {}
        for p in self.params:
            if p.name in self.sources:
                v = self.value(p.name)
                if isinstance(v, (np.ndarray, np.generic)):
                    what = f"{tuple(np.shape(v))}" + ("" if v.dtype == np.float64 else f" {v.dtype}")
                else:
                    what = type(v).__name__
                groups.setdefault(self.sources[p.name], []).append(f"{p.name} {what}")
        return "inputs " + "; ".join(f"from {src}: {', '.join(items)}" for src, items in groups.items())

    def settings(self, wrt: str, seed: int) -> dict:
        inputs = {}
        for name, source in self.sources.items():
            v = self.value(name)
            inputs[name] = {"shape": list(np.shape(v)), "dtype": str(np.asarray(v).dtype), "source": source}
        return {"function": self.label, "wrt": wrt, "batched": self.batched, "seed": seed, "inputs": inputs}


def _load_function(parser, spec: str) -> _Function:
    """``FILE.py:NAME`` or ``MODULE:NAME`` -> the function, or a one-line error (exit 2)."""
    where, colon, name = spec.rpartition(":")
    if not colon:
        where, name = spec, ""
    is_file = where.endswith(".py") or os.sep in where or "/" in where
    if is_file:
        module = _load_file(parser, where)
    else:
        if not where or not all(part.isidentifier() for part in where.split(".")):
            parser.error(f"FUNCTION must be FILE.py:NAME or MODULE:NAME, got {spec!r}")
        module = _import_module(parser, where)
    functions = sorted(k for k, v in vars(module).items()
                       if inspect.isfunction(v) and v.__module__ == module.__name__ and not k.startswith("_"))
    listing = f"; its functions are {', '.join(functions)}" if functions else "; it defines no functions"
    if not name:
        parser.error(f"name the function: {where}:NAME{listing}")
    f = module
    for part in name.split("."):
        if not part.isidentifier() or not hasattr(f, part):
            parser.error(f"{where} has no function {name!r}{listing}")
        f = getattr(f, part)
    if not callable(f):
        parser.error(f"{where}:{name} is a {type(f).__name__}, not a function")
    try:
        params = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        parser.error(f"{where}:{name}: its signature cannot be read; wrap it in a Python function")
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        parser.error(f"{where}:{name} takes *args; name its arguments (def {name}(x, W, ...)) so that --shape "
                     "and --wrt can refer to them")
    return _Function(spec, f, module)


def _load_file(parser, path: str):
    if not os.path.isfile(path):
        parser.error(f"no such file: {path!r}" if not os.path.exists(path) else f"{path!r} is not a file")
    stem = os.path.splitext(os.path.basename(path))[0]
    modname = stem if stem.isidentifier() and stem not in sys.modules else f"_jacobians_user_{len(sys.modules)}"
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        parser.error(f"cannot load {path!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    saved_path = list(sys.path)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))  # its own imports, as `python path` would
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:  # the user's code: a syntax error, an import, anything it raises
        sys.modules.pop(modname, None)
        if isinstance(e, KeyboardInterrupt):
            raise
        parser.error(f"cannot load {path}: {type(e).__name__}: {e}")
    finally:
        sys.path[:] = saved_path
    return module


def _import_module(parser, name: str):
    saved_path = list(sys.path)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # `jacobians compare models:net` run where models.py is
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            parser.error(f"no module named {name!r} (run from the directory that holds it, or give FILE.py:NAME)")
        parser.error(f"cannot import {name}: {type(e).__name__}: {e}")
    except Exception as e:
        parser.error(f"cannot import {name}: {type(e).__name__}: {e}")
    finally:
        sys.path[:] = saved_path


_SHAPE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")


def _shapes(parser, func: _Function, texts: Sequence[str]) -> dict[str, tuple[int, ...]]:
    names = [p.name for p in func.params]
    shapes: dict[str, tuple[int, ...]] = {}
    for text in texts:
        m = _SHAPE.match(text)
        if not m:
            parser.error(f"--shape must be NAME=N,N,... (e.g. x=32,784), got {text!r}")
        name, dims = m.group(1), m.group(2).strip()
        if name not in names:
            parser.error(f"--shape {text!r}: {name!r} is not an argument of {func.signature}")
        if name in shapes:
            parser.error(f"--shape gives {name!r} twice")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not shape or min(shape) < 1:
            parser.error(f"--shape {text!r}: the sizes must be positive integers separated by commas, e.g. {name}=32,784")
        shapes[name] = shape
    return shapes


def _npz(parser, func: _Function, path: str) -> dict:
    names = [p.name for p in func.params]
    if not os.path.isfile(path):
        parser.error(f"--inputs: no such file: {path!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as e:
        parser.error(f"--inputs {path!r} is not a .npz file of arrays ({type(e).__name__}: {e})")
    if not isinstance(arrays, dict):  # np.load of a .npy gives one array
        parser.error(f"--inputs {path!r} holds one array; save the arguments by name: numpy.savez(path, x=x, W=W)")
    unnamed = [k for k in arrays if re.fullmatch(r"arr_\d+", k)]
    if unnamed and len(unnamed) == len(arrays) and not set(arrays) & set(names):  # numpy.savez(path, x, W)
        if len(arrays) > len(names):
            parser.error(f"--inputs {path!r} holds {len(arrays)} arrays; {func.signature} takes {len(names)}")
        return {names[int(k[4:])]: v for k, v in arrays.items()}
    bad = [k for k in arrays if k not in names]
    if bad:
        parser.error(f"--inputs {path!r}: {bad[0]!r} is not an argument of {func.signature}")
    return arrays


def _example_inputs(parser, func: _Function) -> dict:
    names = [p.name for p in func.params]
    where = func.label.rpartition(":")[0]
    try:
        got = func.module.example_inputs()
    except Exception as e:
        parser.error(f"{where}: example_inputs() failed: {type(e).__name__}: {e}")
    if isinstance(got, dict):
        bad = [k for k in got if k not in names]
        if bad:
            parser.error(f"{where}: example_inputs() gives {bad[0]!r}, which is not an argument of {func.signature}")
        return dict(got)
    if isinstance(got, (tuple, list)):
        if len(got) > len(names):
            parser.error(f"{where}: example_inputs() gives {len(got)} values; {func.signature} takes {len(names)}")
        return dict(zip(names, got))
    parser.error(f"{where}: example_inputs() must return a dict of arguments by name or a tuple in order; "
                 f"got a {type(got).__name__}")


def _arguments(parser, func: _Function, args) -> None:
    """Fill ``func.args``/``kwargs`` from --inputs, --shape, then example_inputs(); check --wrt and --batched."""
    params = func.params
    names = [p.name for p in params]
    values, sources = {}, {}
    if args.inputs:
        values = _npz(parser, func, args.inputs)
        sources = dict.fromkeys(values, "--inputs")
    shapes = _shapes(parser, func, args.shape or [])
    seed = _int(parser, "--seed", args.seed, 0, "a non-negative integer")
    rng = np.random.default_rng(seed)
    for name in names:  # argument order, not option order: the same --seed gives the same inputs
        if name in shapes:
            values[name] = rng.standard_normal(shapes[name])
            sources[name] = "--shape"
    if any(n not in values for n in names) and callable(getattr(func.module, "example_inputs", None)):
        for name, v in _example_inputs(parser, func).items():
            if name not in values:
                values[name], sources[name] = v, "example_inputs()"
    missing = [p.name for p in params if p.name not in values and p.default is p.empty]
    if missing:
        hint = "" if callable(getattr(func.module, "example_inputs", None)) else \
            f", or define example_inputs() in {func.label.rpartition(':')[0]}"
        parser.error(f"{'argument' if len(missing) == 1 else 'arguments'} {', '.join(missing)} of {func.signature} "
                     f"{'has' if len(missing) == 1 else 'have'} no value: give --shape {missing[0]}=N,N,... "
                     f"or --inputs FILE.npz{hint}")
    func.sources = sources
    for p in params:
        if p.name not in values:
            continue  # its default
        if p.kind == p.KEYWORD_ONLY:
            func.kwargs[p.name] = values[p.name]
        elif len(func.args) == [q.name for q in params].index(p.name):
            func.args.append(values[p.name])
        else:  # an earlier positional argument kept its default: the rest go by name
            func.kwargs[p.name] = values[p.name]
    wrt = [w.strip() for text in (args.wrt or [names[0]] if names else []) for w in text.split(",") if w.strip()]
    if not wrt:
        parser.error(f"--wrt names no argument; {func.signature} takes {', '.join(names) or 'none'}")
    for w in wrt:
        if w not in names:
            parser.error(f"--wrt {w!r} is not an argument of {func.signature}")
        if w not in values:
            parser.error(f"--wrt {w!r} has no value (its default is not an array): give --shape {w}=N,N,...")
    batched = None if args.batched is None else [b.strip() for b in args.batched.split(",") if b.strip()]
    for b in batched or ():
        if b not in names:
            parser.error(f"--batched {b!r} is not an argument of {func.signature}")
    if batched is not None and not batched:
        parser.error("--batched names no argument")
    func.wrt = list(dict.fromkeys(wrt))
    func.batched = None if batched is None else batched[0] if len(batched) == 1 else tuple(dict.fromkeys(batched))


@contextmanager
def _one_line_errors(func: _Function):
    """After the dry run, whatever the user's function still raises is one line (exit 1), not a traceback."""
    try:
        yield
    except (_Fail, ValueError, MemoryError, ImportError, KeyboardInterrupt, BrokenPipeError, SystemExit):
        raise  # main() reports these
    except Exception as e:
        raise _Fail(f"{func.label}: {type(e).__name__}: {e}") from e


def _dry_run(parser, func: _Function) -> None:
    """Trace and plan once, so that inputs the function does not run on are a usage error (exit 2)."""
    from .transforms import jacobian
    try:
        jacobian(func.f, wrt=tuple(func.wrt), batched=func.batched).plan(*func.args, **func.kwargs)
    except (JacobianTooLarge, KeyboardInterrupt):
        raise
    except Exception as e:  # the user's function or arguments: shapes that do not fit, an unsupported call
        parser.error(f"{func.label} does not run on these inputs ({func.describe_inputs()}): "
                     f"{type(e).__name__}: {e}")


def _function(parser, args) -> _Function:
    builtin = _given(args, BUILTIN_OPTIONS)
    if builtin:
        parser.error(f"{builtin[0]} is for the built-in problems, not for a function; describe {args.function}'s "
                     "inputs with --shape, --inputs or example_inputs()")
    func = _load_function(parser, args.function)
    _arguments(parser, func, args)
    return func


# ---------------------------------------------------------------- compare

def _compare(args, parser) -> int:
    repeats = _int(parser, "--repeats", args.repeats, 1, "a positive integer")
    min_time = _seconds(parser, "--min-time", args.min_time)
    orders = _names(parser, "--orders", args.orders, DEFAULT_ORDERS)
    for option in ("--json", "--plot"):
        path = getattr(args, option[2:])
        if path is not None:
            _check_output(parser, option, path)
    if args.json and args.plot and os.path.abspath(args.json) == os.path.abspath(args.plot):
        parser.error(f"--json and --plot name the same file {args.json!r}")
    fmt = _check_plot(parser, args.plot) if args.plot else None
    if args.function is None:
        options = [o for o in FUNCTION_OPTIONS if getattr(args, o[2:]) is not None]
        if options:
            parser.error(f"{options[0]} needs a function: jacobians compare FILE.py:NAME {options[0]} ...")
        return _compare_builtin(args, parser, repeats, min_time, orders, fmt)
    func = _function(parser, args)
    _dry_run(parser, func)
    with _one_line_errors(func):
        return _compare_function(args, func, repeats, min_time, orders, fmt)


def _compare_function(args, func: _Function, repeats: int, min_time: float, orders: list[str], fmt) -> int:
    from . import comparison
    seed = int(args.seed)
    output = getattr(args, "output", None)
    if output is not None and output.lstrip("-").isdigit():
        output = int(output)  # a position; any other text is a dict key
    results, reports, failures = [], [], []
    print(f"== {func.label}" + (f", batched over {func.batched}" if func.batched else ""))
    print("\n".join(textwrap.wrap(func.describe_inputs(), 100, subsequent_indent="    ", break_long_words=False)))
    with _Status(args.quiet) as status:
        for w in func.wrt:
            report = comparison.compare(func.f, *func.args, wrt=w, batched=func.batched, output=output,
                                        orders=orders, repeats=repeats,
                                        min_time=min_time, progress=lambda msg, w=w: status.show(f"[d/d{w}] {msg}"),
                                        **func.kwargs)
            status.clear()
            print()
            print(report)
            reports.append(report)
            results.append({"settings": func.settings(w, seed), "report": report.to_dict()})
            failures += _disagreements(f"d/d{w}", report)
        if args.plot:
            from .transforms import jacobian
            from .plots import function_figure
            status.show("[plot] Jacobian heatmaps and costs")
            Js = [jacobian(func.f, wrt=w, batched=func.batched)(*func.args, **func.kwargs) for w in func.wrt]
            Js = Js if output is None else [J[output] for J in Js]
            function_figure(reports, Js, title=func.label).savefig(args.plot, dpi=110, format=fmt)
            status.clear()
            print(f"\nfigure written to {args.plot}")
    return _finish(args, "compare", orders, repeats, min_time, results, failures, {"function": func.label})


def _disagreements(name: str, report) -> list[str]:
    return [f"{name}: order {r.order!r} disagrees with the optimal order: max |diff| {r.max_abs_diff:.3g} "
            f"(relative {r.max_rel_diff:.3g} > {RTOL:g})" for r in report.rows if not r.max_rel_diff <= RTOL]  # NaN too


def _finish(args, command, orders, repeats, min_time, results, failures, extra: dict) -> int:
    if args.json:
        doc = {"jacobians": __version__, "command": command, **extra, "orders": orders, "repeats": repeats,
               "min_time": min_time, "blas": blas_threads(), "tolerance": RTOL, "problems": results,
               "ok": not failures}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=2, default=_json_default)
        print(f"{'' if args.plot else chr(10)}report written to {args.json}")
    if failures:
        print(f"jacobians compare: error: {failures[0]}" + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""),
              file=sys.stderr)
        return 1
    return 0


def _compare_builtin(args, parser, repeats: int, min_time: float, orders: list[str], fmt) -> int:
    widths = _ints(parser, "--widths", args.widths, 1, "positive integers") if args.widths else None
    if widths is not None and len(widths) < 2:
        parser.error(f"--widths needs at least two widths (input and output), got {args.widths!r}")
    batch = _int(parser, "--batch", args.batch, 0, "a non-negative integer") if args.batch is not None else 32
    activation = args.activation or "tanh"
    seed = _int(parser, "--seed", args.seed, 0, "a non-negative integer")
    names = _names(parser, "--problem", args.problem, PROBLEMS) if args.problem else \
        (["mlp"] if widths else list(DEFAULT_PROBLEMS))
    if "residual" in names and widths is not None and (len(widths) != 3 or widths[0] != widths[-1]):
        parser.error(f"--widths for the residual block must be D,H,D (the skip adds x to the output), got {args.widths!r}")
    problems = [problem(n, widths, batch, activation, seed) for n in names]

    results, failures = [], []
    with _Status(args.quiet) as status:
        for k, p in enumerate(problems):
            report = p.compare(orders=orders, repeats=repeats, min_time=min_time,
                               progress=lambda msg, name=p.name: status.show(f"[{name}] {msg}"))
            status.clear()
            if k:
                print()
            print(f"== {p.description}")
            print(report)
            results.append({"settings": p.settings, "report": report.to_dict()})
            failures += _disagreements(p.name, report)
        if args.plot:
            from .plots import cost_curves
            n = min(problems[0].settings["widths"][0], 512)
            status.show(f"[plot] cost curves around n = {n}")
            cost_curves(n=n, activation=activation, repeats=min(repeats, 3), seed=seed,
                        min_time=min_time).savefig(args.plot, dpi=110, format=fmt)
            status.clear()
            print(f"\ncost curves written to {args.plot}")
    return _finish(args, "compare", orders, repeats, min_time, results, failures, {})


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
        J = fn.softmax_cross_entropy(theta, y)
        return J

    rng = np.random.default_rng(seed)
    Dx, Dh, Nc = CLARK["Dx"], CLARK["Dh"], CLARK["Nc"]
    lead = (batch,) if batch else ()
    args = (rng.normal(size=lead + (Dx,)), rng.normal(size=(Dh, Dx)), rng.normal(size=Dh),
            rng.normal(size=(Nc, Dh)), rng.normal(size=Nc), rng.integers(0, Nc, size=lead))
    return clark, args


def _explain_function(args, func: _Function) -> int:
    from .explain import explain
    print(f"explain {func.label}" + (f", batched over {func.batched}" if func.batched else ""))
    print("\n".join(textwrap.wrap(func.describe_inputs(), 100, subsequent_indent="    ", break_long_words=False)))
    for w in func.wrt:
        print()
        print(explain(func.f, *func.args, wrt=w, batched=func.batched, order=args.order, **func.kwargs))
    return 0


def _explain(args, parser) -> int:
    from .explain import explain
    if args.function is not None:
        func = _function(parser, args)
        _dry_run(parser, func)
        with _one_line_errors(func):
            return _explain_function(args, func)
    options = [o for o in ("--batched", "--shape", "--inputs") if getattr(args, o[2:]) is not None]
    if options:
        parser.error(f"{options[0]} needs a function: jacobians explain FILE.py:NAME {options[0]} ...")
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
        header = ("explain Clark's one-layer network: z = W x + b1, h = relu(z), theta = U h + b2,\n"
                  "    J = CE(y, softmax(theta)); " + ", ".join(f"{k}={v}" for k, v in CLARK.items())
                  + (f", batch of {batch} (per sample)" if batch else ", one sample"))
    valid = [n for n in inspect.signature(f).parameters if n != "y"]  # y: Clark's labels, not differentiable
    wrt = [w.strip() for text in (args.wrt or ["x"]) for w in text.split(",") if w.strip()] or [""]
    for w in wrt:
        if w not in valid:
            parser.error(f"--wrt must be one of {', '.join(valid)}, got {w!r}")
    print(header)
    for w in dict.fromkeys(wrt):
        print()
        print(explain(f, *fargs, wrt=w, batched="x" if batch else None, order=args.order, dims=dims))
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
        report = jac.compare(chain, rng.normal(size=n), *Ws, wrt="x", orders=("jvp", "vjp", "optimal"),
                             repeats=1, min_time=0)
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
