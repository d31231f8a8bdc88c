"""The ``jacobians`` command, run as ``python -m jacobians`` in a subprocess (and main() in process)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jacobians
from jacobians import cli, comparison
from jacobians.comparison import DEFAULT_ORDERS

SMALL = ["--widths", "20,30,5", "--batch", "4", "--repeats", "1", "--min-time", "0"]
FAST = ["--repeats", "1", "--min-time", "0"]
MLP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "mlp.py")


def run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jacobians", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def columns_and_orders(out: str, orders=DEFAULT_ORDERS) -> None:
    for header in ("order", "FLOPs", "x best", "CS182", "largest", "time ms", "max |diff|", "how"):
        assert header in out
    lines = out.splitlines()
    for order in orders:
        assert any(line.startswith(order + " ") for line in lines), order


# ------------------------------------------------------------------ compare


def test_compare_small_prints_the_table_and_no_progress_when_piped():
    p = run("compare", *SMALL)
    assert p.returncode == 0, p.stderr
    columns_and_orders(p.stdout)
    assert "mlp: tanh MLP, widths 20-30-5, batch 4, per-sample d out/d x" in p.stdout
    assert "Jacobian shape (4, 5, 20)" in p.stdout
    assert "bottleneck" not in p.stdout            # --widths alone: the MLP only
    assert p.stderr == ""                          # stderr is a pipe here: no progress


def test_compare_with_no_arguments_runs_the_mlp_and_the_bottleneck():
    p = run("compare", "--quiet", *FAST)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert "== mlp: tanh MLP, widths 256-512-512-10, batch 32" in p.stdout
    assert "== bottleneck: tanh bottleneck chain, widths 256-256-8-256-256, batch 32" in p.stdout
    assert p.stdout.count("order    ") == 2
    columns_and_orders(p.stdout)


def test_compare_json_holds_the_rows_and_the_settings(tmp_path):
    out = tmp_path / "report.json"
    p = run("compare", "--problem", "residual,bottleneck", "--widths", "6,9,6", "--batch", "0",
            "--activation", "softplus", "--orders", "forward,reverse,optimal", "--repeats", "1", "--min-time", "0",
            "--seed", "3",
            "--json", str(out), "-q")
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    assert doc["ok"] is True and doc["orders"] == ["forward", "reverse", "optimal"] and doc["repeats"] == 1
    assert doc["min_time"] == 0 and "threads" in doc["blas"]
    assert [pr["settings"]["problem"] for pr in doc["problems"]] == ["residual", "bottleneck"]
    settings = doc["problems"][0]["settings"]
    assert settings == {"problem": "residual", "widths": [6, 9, 6], "batch": 0, "activation": "softplus", "seed": 3}
    rows = doc["problems"][0]["report"]["rows"]
    assert [r["order"] for r in rows] == ["forward", "reverse", "optimal"]
    assert all(r["max_rel_diff"] < 1e-12 and r["flops"] > 0 for r in rows)
    assert all(r["repeats"] == 1 and r["seconds_q1"] <= r["seconds"] <= r["seconds_q3"] for r in rows)
    assert doc["problems"][0]["report"]["jacobian_shape"] == [6, 6]
    assert f"report written to {out}" in p.stdout


def test_compare_exits_1_when_an_order_disagrees(monkeypatch, capsys):
    real = comparison.compare

    def broken(*args, **kwargs):
        report = real(*args, **kwargs)
        report.rows[0].max_abs_diff = report.rows[0].max_rel_diff = 0.5
        return report
    monkeypatch.setattr(comparison, "compare", broken)
    code = cli.main(["compare", *SMALL, "--orders", "forward,optimal", "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith("jacobians compare: error: mlp: order 'forward' disagrees with the optimal order")


def test_a_library_error_is_one_line_and_exit_1():
    # a memory limit too small for any Jacobian: JacobianTooLarge from the planner
    p = run("compare", *SMALL, "-q", env={"JACOBIANS_MAX_BYTES": "64"})
    assert p.returncode == 1
    assert p.stderr.startswith("jacobians: error: ") and p.stderr.count("\n") == 1
    assert "memory limit" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("args, message", [
    (["compare", "--widths", "10,-3"], "jacobians compare: error: --widths must be positive integers, got '10,-3'"),
    (["compare", "--widths", "10,x"], "jacobians compare: error: --widths must be positive integers, got '10,x'"),
    (["compare", "--widths", "10"], "jacobians compare: error: --widths needs at least two widths"),
    (["compare", "--batch", "-2"], "jacobians compare: error: --batch must be a non-negative integer, got '-2'"),
    (["compare", "--repeats", "0"], "jacobians compare: error: --repeats must be a positive integer, got '0'"),
    (["compare", "--min-time", "-1"], "jacobians compare: error: --min-time must be a number of seconds >= 0, got '-1'"),
    (["compare", "--min-time", "nan"], "jacobians compare: error: --min-time must be a number of seconds >= 0"),
    (["compare", "--shape", "x=3"], "jacobians compare: error: --shape needs a function: jacobians compare FILE.py:NAME"),
    (["compare", "--wrt", "x"], "jacobians compare: error: --wrt needs a function"),
    (["explain", "--inputs", "a.npz"], "jacobians explain: error: --inputs needs a function"),
    (["compare", "--orders", "forward,sideways"], "jacobians compare: error: --orders: unknown 'sideways'; "
                                                  "valid options are forward, reverse, optimal, bracket, jvp, vjp"),
    (["compare", "--problem", "cnn"], "jacobians compare: error: --problem: unknown 'cnn'"),
    (["compare", "--problem", "residual", "--widths", "4,5,6"], "D,H,D"),
    (["compare", "--activation", "elu"], "jacobians compare: error: argument --activation: invalid choice: 'elu'"),
    (["compare", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["explain", "--wrt", "q"], "jacobians explain: error: --wrt must be one of x, W, b1, U, b2, got 'q'"),
    (["explain", "--widths", "0,4"], "jacobians explain: error: --widths must be positive integers, got '0,4'"),
    (["frobnicate"], "jacobians: error: argument"),
    ([], "jacobians: error: choose a command"),
])
def test_bad_options_are_one_line_and_exit_2(args, message):
    p = run(*args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stderr.count("\n") == 1, p.stderr
    assert message in p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""


def test_bad_options_in_process(capsys):
    assert cli.main(["compare", "--widths", "10,-3"]) == 2
    assert capsys.readouterr().err == "jacobians compare: error: --widths must be positive integers, got '10,-3'\n"


# ------------------------------------------------------------------ explain, demo, help


def test_explain_default_is_clarks_network_with_his_dimension_check():
    p = run("explain")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "Clark's one-layer network" in out
    for node in ("z", "h", "theta", "J"):                    # the variables of Clark's network
        assert f"\n{node} = " in out.replace("\n1. ", "\n").replace("\n2. ", "\n").replace("\n3. ", "\n").replace("\n4. ", "\n")
    assert "d z/d x = einsum('jk,nN->njNk', W, eye(4))" in out
    assert "(1xDh) = (1xNc)(NcxDh)(DhxDh)" in out
    assert "d J/d x (1x6) = (1x3)(3x5)(5x5)(5x6)" in out
    assert "path [" in out and "FLOPs" in out


def test_explain_an_mlp():
    p = run("explain", "--widths", "8,6,3", "--batch", "2", "--activation", "sigmoid", "--order", "forward")
    assert p.returncode == 0, p.stderr
    # the problem's source reassigns h in a loop: h, h_1, h_2
    assert "d h_2/d x (3x8) = (3x6)(6x6)(6x8)" in p.stdout
    assert "h_1 = sigmoid(x=h)" in p.stdout and "order='forward'" in p.stdout


def test_demo_checks_the_notes_examples():
    p = run("demo")
    assert p.returncode == 0, p.stderr
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    checks, summary = lines[:-1], lines[-1]
    assert summary == f"{len(checks)} of {len(checks)} checks ok"
    assert all(l.endswith(" ok") for l in checks)
    out = p.stdout
    for expected in ("dz/dx (B,H,D) (2, 4, 3)", "dz/dW (B,H,H,D) (2, 4, 4, 3)", "dz/db (B,H,H) (2, 4, 4)",
                     "da/dh (B,H,H) (2, 4, 4)", "dC/dX (n,p,n,m) (2, 4, 2, 3)", "dC/dY (n,p,m,p) (2, 4, 3, 4)",
                     "central differences, max abs error", "W2 R W1 + I", "yhat - y",
                     "(1xDh) = (1xNc)(NcxDh)(DhxDh)", "dJ/dW = d2 x^T"):
        assert expected in out, expected


@pytest.mark.parametrize("args", [["--help"], ["compare", "--help"], ["explain", "--help"], ["demo", "--help"]])
def test_help_everywhere(args):
    p = run(*args)
    assert p.returncode == 0 and p.stdout.startswith("usage: jacobians") and p.stderr == ""


def test_version():
    p = run("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"jacobians {jacobians.__version__}"


def test_main_is_the_console_script_and_returns_codes(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"jacobians {jacobians.__version__}"
    assert cli.main(["compare", *SMALL, "--orders", "optimal,vjp", "-q"]) == 0
    columns_and_orders(capsys.readouterr().out, ("optimal", "vjp"))


def test_plot_without_matplotlib_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert cli.main(["compare", *SMALL, "--plot", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert err == "jacobians: error: --plot needs matplotlib: pip install 'jacobians[plot]'\n"
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------ progress: a terminal only, never interleaved


class Terminal:
    """stdout and stderr of one terminal: what each stream wrote, and the screen they leave."""

    def __init__(self):
        self.writes = []

    def stream(self, tag):
        term = self

        class Stream(io.TextIOBase):
            def write(self, text):
                term.writes.append((tag, text))
                return len(text)

            def isatty(self):
                return True
        return Stream()

    def text(self, tag=None):
        return "".join(t for k, t in self.writes if tag in (None, k))

    @staticmethod
    def screen(text):
        """What a terminal shows: \\r returns to column 0 and later characters overwrite."""
        lines, line, col = [], [], 0
        for ch in text:
            if ch == "\r":
                col = 0
            elif ch == "\n":
                lines.append("".join(line).rstrip())
                line, col = [], 0
            else:
                line[col:col + 1] = [ch]
                col += 1
        return lines + ["".join(line).rstrip()]


def on_terminal(monkeypatch, argv):
    term = Terminal()
    monkeypatch.setattr(sys, "stdout", term.stream("out"))
    monkeypatch.setattr(sys, "stderr", term.stream("err"))
    code = cli.main(argv)
    return code, term


def test_progress_on_a_terminal_is_one_status_line_cleared_before_each_report(monkeypatch):
    code, term = on_terminal(monkeypatch, ["compare", *SMALL, "--problem", "mlp,bottleneck",
                                           "--widths", "6,8,3,8,6", "--orders", "forward,optimal,vjp"])
    assert code == 0
    status = term.text("err")
    assert "\n" not in status                                     # rewritten in place, never a new line
    assert "\r[mlp] optimal (reference) ... (" in status and "\r[bottleneck] vjp ... (" in status
    # the screen shows exactly the report: no status text left over, none inside a report line
    assert Terminal.screen(term.text()) == Terminal.screen(term.text("out"))
    assert Terminal.screen(term.text())[0].startswith("== mlp: tanh MLP")


def test_quiet_on_a_terminal_prints_no_status(monkeypatch):
    code, term = on_terminal(monkeypatch, ["compare", *SMALL, "--orders", "optimal", "-q"])
    assert code == 0 and term.text("err") == ""


def test_a_failure_clears_the_status_line_first(monkeypatch):
    def boom(*args, progress=None, **kwargs):
        progress("optimal (reference)")
        raise ValueError("linear: argument W has shape (3, 4); expected (5, 4)")
    monkeypatch.setattr(comparison, "compare", boom)
    code, term = on_terminal(monkeypatch, ["compare", *SMALL])
    assert code == 1
    assert Terminal.screen(term.text()) == ["jacobians: error: linear: argument W has shape (3, 4); expected (5, 4)", ""]


# ------------------------------------------------------------------ your own function


def test_compare_a_function_in_a_file_with_its_example_inputs():
    p = run("compare", MLP + ":net", "--batched", "x", *FAST)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith(f"== {MLP}:net, batched over x\n")
    assert "inputs from example_inputs(): x (8, 20), W1 (32, 20), b1 (32,), W2 (5, 32), b2 (5,)" in out
    assert "d net / d x: output (8, 5), x (8, 20), per-sample" in out and "Jacobian shape (8, 5, 20)" in out
    columns_and_orders(out)
    assert p.stderr == ""


def test_compare_several_wrt_random_shapes_and_a_seed(capsys):
    shapes = ["--shape", "x=3,4", "--shape", "W1=6,4", "--shape", "b1=6", "--shape", "W2=2,6", "--shape", "b2=2"]
    argv = ["compare", MLP + ":net", "--wrt", "x,W1", "--wrt", "b2", "--batched", "x", *shapes, *FAST, "-q"]
    assert cli.main(argv + ["--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert "inputs from --shape: x (3, 4), W1 (6, 4), b1 (6,), W2 (2, 6), b2 (2,)" in out
    for title in ("d net / d x: output (3, 2), x (3, 4), per-sample", "d net / d W1: output (3, 2), W1 (6, 4)",
                  "d net / d b2: output (3, 2), b2 (2,)"):
        assert title in out, title
    assert "Jacobian shape (3, 2, 6, 4)" in out


def test_shape_overrides_example_inputs_argument_by_argument(capsys):
    assert cli.main(["compare", MLP + ":net", "--batched", "x", "--shape", "x=3,20", "--orders", "optimal",
                     *FAST, "-q"]) == 0
    out = capsys.readouterr().out
    assert "inputs from --shape: x (3, 20); from example_inputs(): W1 (32, 20), b1 (32,), W2 (5, 32), b2 (5,)" in out
    assert "Jacobian shape (3, 5, 20)" in out


def loaded(*argv):
    """The function and arguments the command would run on, without running it."""
    args = cli._parser().parse_args(["compare", *argv])
    func = cli._load_function(args.parser, args.function)
    cli._arguments(args.parser, func, args)
    return func


def test_random_inputs_follow_the_seed_in_argument_order():
    a = loaded(MLP + ":net", "--shape", "x=2,20", "--shape", "b2=5", "--seed", "1")
    b = loaded(MLP + ":net", "--shape", "b2=5", "--shape", "x=2,20", "--seed", "1")   # option order is irrelevant
    c = loaded(MLP + ":net", "--shape", "x=2,20", "--shape", "b2=5", "--seed", "2")
    assert a.sources == {"x": "--shape", "b2": "--shape", "W1": "example_inputs()", "b1": "example_inputs()",
                         "W2": "example_inputs()"}
    for name in ("x", "b2"):
        assert a.value(name).dtype == np.float64 and np.array_equal(a.value(name), b.value(name))
        assert not np.allclose(a.value(name), c.value(name))
    assert np.array_equal(a.value("W1"), c.value("W1"))                              # from example_inputs()
    assert a.wrt == ["x"] and a.batched is None                                      # the first argument


def test_the_example_mlp_jacobians_match_central_differences():
    from jacobians.testing import numerical_jacobian
    func = loaded(MLP + ":net", "--shape", "x=3,20")
    args = dict(zip(["x", "W1", "b1", "W2", "b2"], func.args))
    for name in args:
        J = jacobians.jacobian(func.f, wrt=name)(*func.args)
        numeric = numerical_jacobian(lambda v: func.f(**{**args, name: v}), args[name])
        assert J.shape == numeric.shape and np.allclose(J, numeric, rtol=1e-6, atol=1e-8), name
    per_sample = jacobians.jacobian(func.f, wrt="x", batched="x")(*func.args)
    full = numerical_jacobian(lambda v: func.f(**{**args, "x": v}), args["x"])        # (B, O, B, I)
    assert np.allclose(per_sample, np.einsum("bobi->boi", full), atol=1e-8)


def test_inputs_from_an_npz_by_name_or_in_order(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x, W1, b1, W2, b2 = (rng.normal(size=s) for s in ((2, 3), (4, 3), (4,), (2, 4), (2,)))
    named, ordered = tmp_path / "named.npz", tmp_path / "ordered.npz"
    np.savez(named, x=x, W1=W1, b1=b1, W2=W2, b2=b2)
    np.savez(ordered, x, W1, b1, W2, b2)
    for path in (named, ordered):
        out = tmp_path / "r.json"
        assert cli.main(["compare", MLP + ":net", "--inputs", str(path), "--batched", "x", "--orders", "optimal",
                         "--json", str(out), *FAST, "-q"]) == 0
        assert "inputs from --inputs: x (2, 3), W1 (4, 3), b1 (4,), W2 (2, 4), b2 (2,)" in capsys.readouterr().out
        doc = json.loads(out.read_text())
        assert doc["function"] == MLP + ":net" and doc["problems"][0]["report"]["jacobian_shape"] == [2, 2, 3]


def test_a_function_by_module_name_from_the_current_directory(tmp_path, monkeypatch, capsys):
    pkg = tmp_path / "mymodels"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "deep.py").write_text("import numpy as np\n\ndef f(x, W):\n    return np.tanh(W @ x)\n\n"
                                 "def example_inputs():\n    return (np.ones(3), np.full((2, 3), 0.5))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert cli.main(["compare", "mymodels.deep:f", "--orders", "optimal,vjp", *FAST, "-q"]) == 0
    out = capsys.readouterr().out
    assert "inputs from example_inputs(): x (3,), W (2, 3)" in out and "Jacobian shape (2, 3)" in out
    assert str(tmp_path) not in sys.path                     # only while importing


def test_explain_a_function_in_a_file(capsys):
    assert cli.main(["explain", MLP + ":net", "--batched", "x", "--wrt", "x,W2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"explain {MLP}:net, batched over x\n")
    assert "inputs from example_inputs(): x (8, 20)" in out
    assert "explain d net/d x: Jacobian shape (8, 5, 20)" in out
    assert "explain d net/d W2: Jacobian shape (8, 5, 5, 32)" in out


def test_compare_plot_of_a_function_is_its_heatmaps_and_cost_bars(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "net.png"
    assert cli.main(["compare", MLP + ":net", "--wrt", "x,W1", "--batched", "x", "--plot", str(path),
                     "--orders", "forward,reverse,vjp", *FAST, "-q"]) == 0
    assert f"figure written to {path}" in capsys.readouterr().out
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("make_argv, message", [
    (lambda t: ["compare", "nosuch.py:net"], "no such file: 'nosuch.py'"),
    (lambda t: ["compare", MLP], f"name the function: {MLP}:NAME; its functions are example_inputs, net"),
    (lambda t: ["compare", MLP + ":nope"], f"{MLP} has no function 'nope'; its functions are example_inputs, net"),
    (lambda t: ["compare", "no_such_module_xyz:net"], "no module named 'no_such_module_xyz'"),
    (lambda t: ["compare", "not a spec!"], "FUNCTION must be FILE.py:NAME or MODULE:NAME, got 'not a spec!'"),
    (lambda t: ["compare", write(t, "bad.py", "def f(x:\n") + ":f"], "bad.py: SyntaxError:"),
    (lambda t: ["compare", write(t, "imp.py", "import no_such_dependency_xyz\n") + ":f"],
     "ModuleNotFoundError: No module named 'no_such_dependency_xyz'"),
    (lambda t: ["compare", write(t, "val.py", "X = 3\n") + ":X"], "is a int, not a function"),
    (lambda t: ["compare", write(t, "star.py", "def f(*xs):\n    return xs[0]\n") + ":f"], "takes *args"),
    (lambda t: ["compare", MLP + ":net", "--shape", "x"], "--shape must be NAME=N,N,... (e.g. x=32,784), got 'x'"),
    (lambda t: ["compare", MLP + ":net", "--shape", "x=3,a"], "--shape 'x=3,a': the sizes must be positive integers"),
    (lambda t: ["compare", MLP + ":net", "--shape", "x=0,20"], "--shape 'x=0,20': the sizes must be positive"),
    (lambda t: ["compare", MLP + ":net", "--shape", "x="], "--shape 'x=': the sizes must be positive integers"),
    (lambda t: ["compare", MLP + ":net", "--shape", "q=3"], "'q' is not an argument of net(x, W1, b1, W2, b2)"),
    (lambda t: ["compare", MLP + ":net", "--shape", "x=3,20", "--shape", "x=4,20"], "--shape gives 'x' twice"),
    (lambda t: ["compare", write(t, "noex.py", "def f(x, W):\n    return W @ x\n") + ":f", "--shape", "x=3"],
     "argument W of f(x, W) has no value: give --shape W=N,N,... or --inputs FILE.npz, or define example_inputs()"),
    (lambda t: ["compare", MLP + ":net", "--shape", "x=8,7"], f"{MLP}:net does not run on these inputs"),
    (lambda t: ["compare", MLP + ":net", "--wrt", "q"], "--wrt 'q' is not an argument of net(x, W1, b1, W2, b2)"),
    (lambda t: ["compare", MLP + ":net", "--batched", "q"], "--batched 'q' is not an argument of net("),
    (lambda t: ["compare", MLP + ":net", "--widths", "3,4"], "--widths is for the built-in problems, not for a function"),
    (lambda t: ["compare", MLP + ":net", "--batch", "3"], "--batch is for the built-in problems"),
    (lambda t: ["compare", MLP + ":net", "--inputs", "missing.npz"], "--inputs: no such file: 'missing.npz'"),
    (lambda t: ["compare", MLP + ":net", "--inputs", write(t, "a.npz", "not an npz")], "is not a .npz file"),
    (lambda t: ["compare", write(t, "exfail.py", "def f(x):\n    return x\n\ndef example_inputs():\n"
                                               "    raise RuntimeError('no data here')\n") + ":f"],
     "example_inputs() failed: RuntimeError: no data here"),
    (lambda t: ["compare", write(t, "exstr.py", "def f(x):\n    return x\n\ndef example_inputs():\n"
                                              "    return 'x'\n") + ":f"],
     "example_inputs() must return a dict of arguments by name or a tuple in order; got a str"),
    (lambda t: ["compare", write(t, "exkey.py", "import numpy as np\ndef f(x):\n    return x\n\n"
                                              "def example_inputs():\n    return {'y': np.ones(2)}\n") + ":f"],
     "example_inputs() gives 'y', which is not an argument of f(x)"),
    (lambda t: ["explain", MLP + ":nope"], "has no function 'nope'"),
    (lambda t: ["explain", MLP + ":net", "--shape", "x=3"], "does not run on these inputs"),
    (lambda t: ["explain", MLP + ":net", "--widths", "3,4"], "--widths is for the built-in problems"),
])
def test_function_mistakes_are_one_line_and_exit_2(tmp_path, capsys, make_argv, message):
    argv = make_argv(tmp_path)
    assert cli.main(argv + ["-q"] if argv[0] == "compare" else argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""                                     # nothing computed, nothing printed
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"jacobians {argv[0]}: error: "), captured.err
    assert message in captured.err, captured.err


def test_a_function_mistake_in_a_subprocess_is_one_line_exit_2():
    p = run("compare", MLP + ":nope")
    assert p.returncode == 2 and p.stdout == "" and p.stderr.count("\n") == 1
    assert "has no function 'nope'" in p.stderr and "Traceback" not in p.stderr


# ------------------------------------------------------------------ output paths, checked before any work


@pytest.mark.parametrize("make_argv, message", [
    (lambda t: ["--json", str(t / "missing" / "r.json")], "--json '{t}/missing/r.json': the directory '{t}/missing' does not exist"),
    (lambda t: ["--json", str(t)], "--json '{t}' is a directory; give a file name in it"),
    (lambda t: ["--json", write(t, "f.txt", "") + "/r.json"], "--json '{t}/f.txt/r.json': '{t}/f.txt' is not a directory"),
    (lambda t: ["--plot", str(t)], "--plot '{t}' is a directory"),
    (lambda t: ["--plot", str(t / "no" / "p.png")], "--plot '{t}/no/p.png': the directory '{t}/no' does not exist"),
    (lambda t: ["--json", str(t / "same"), "--plot", str(t / "same")], "--json and --plot name the same file"),
])
@pytest.mark.parametrize("target", [[], [MLP + ":net"]], ids=["built-in", "function"])
def test_output_paths_are_checked_before_any_work(tmp_path, capsys, make_argv, message, target):
    if "--plot" in make_argv(tmp_path):
        pytest.importorskip("matplotlib")
    argv = ["compare", *target, *make_argv(tmp_path), *SMALL[-4:], "-q"]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("jacobians compare: error: ")
    assert message.format(t=tmp_path) in captured.err, captured.err


def test_a_plot_format_matplotlib_cannot_write_is_refused_first(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert cli.main(["compare", MLP + ":net", "--plot", str(tmp_path / "p.docx"), *FAST, "-q"]) == 2
    err = capsys.readouterr().err
    assert "unknown image format 'docx'; valid options are" in err and "png" in err
    assert not (tmp_path / "p.docx").exists()


def test_an_output_file_that_cannot_be_written_is_refused_first(tmp_path, capsys, monkeypatch):
    existing = tmp_path / "r.json"
    existing.write_text("{}")
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False)   # as for a read-only file (we may be root)
    assert cli.main(["compare", *SMALL, "--json", str(existing), "-q"]) == 2
    assert capsys.readouterr().err == f"jacobians compare: error: --json {str(existing)!r} exists and cannot be written\n"
    assert cli.main(["compare", *SMALL, "--json", str(tmp_path / "new.json"), "-q"]) == 2
    assert "no permission to create files in" in capsys.readouterr().err
    assert existing.read_text() == "{}"


def test_an_error_the_function_raises_after_the_dry_run_is_one_line_exit_1(tmp_path, capsys):
    path = write(tmp_path, "flaky.py", "import numpy as np\ncalls = [0]\n\ndef f(x):\n    calls[0] += 1\n"
                                       "    if calls[0] > 1:\n        raise RuntimeError('flaky')\n    return np.tanh(x)\n")
    assert cli.main(["compare", path + ":f", "--shape", "x=3", *FAST, "-q"]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"jacobians: error: {path}:f: RuntimeError: flaky\n"
