"""The ``jacobians`` command, run as ``python -m jacobians`` in a subprocess (and main() in process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import jacobians
from jacobians import cli, comparison
from jacobians.comparison import DEFAULT_ORDERS

SMALL = ["--widths", "20,30,5", "--batch", "4", "--repeats", "1"]


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


def test_compare_small_prints_the_table_and_progress():
    p = run("compare", *SMALL)
    assert p.returncode == 0, p.stderr
    columns_and_orders(p.stdout)
    assert "mlp: tanh MLP, widths 20-30-5, batch 4, per-sample d out/d x" in p.stdout
    assert "Jacobian shape (4, 5, 20)" in p.stdout
    assert "bottleneck" not in p.stdout            # --widths alone: the MLP only
    progress = p.stderr.splitlines()
    assert len(progress) == len(DEFAULT_ORDERS) and all(l.startswith("[mlp] ") for l in progress)
    assert "Traceback" not in p.stderr


def test_compare_with_no_arguments_runs_the_mlp_and_the_bottleneck():
    p = run("compare", "--quiet")
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert "== mlp: tanh MLP, widths 256-512-512-10, batch 32" in p.stdout
    assert "== bottleneck: tanh bottleneck chain, widths 256-256-8-256-256, batch 32" in p.stdout
    assert p.stdout.count("order    ") == 2
    columns_and_orders(p.stdout)


def test_compare_json_holds_the_rows_and_the_settings(tmp_path):
    out = tmp_path / "report.json"
    p = run("compare", "--problem", "residual,bottleneck", "--widths", "6,9,6", "--batch", "0",
            "--activation", "softplus", "--orders", "forward,reverse,optimal", "--repeats", "1", "--seed", "3",
            "--json", str(out), "-q")
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    assert doc["ok"] is True and doc["orders"] == ["forward", "reverse", "optimal"] and doc["repeats"] == 1
    assert [pr["settings"]["problem"] for pr in doc["problems"]] == ["residual", "bottleneck"]
    settings = doc["problems"][0]["settings"]
    assert settings == {"problem": "residual", "widths": [6, 9, 6], "batch": 0, "activation": "softplus", "seed": 3}
    rows = doc["problems"][0]["report"]["rows"]
    assert [r["order"] for r in rows] == ["forward", "reverse", "optimal"]
    assert all(r["max_rel_diff"] < 1e-12 and r["flops"] > 0 for r in rows)
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
    for node in ("linear_0", "relu_0", "linear_1", "softmax_cross_entropy_0"):
        assert f"{node} = " in out
    assert "einsum('hd,Aa->Ahad', W, eye(4))" in out
    assert "(1xDh) = (1xNc)(NcxDh)(DhxDh)" in out
    assert "d softmax_cross_entropy_0/d x (B=4: 1x6) = (1x3)(3x5)(5x5)(5x6)" in out
    assert "path [" in out and "FLOPs" in out


def test_explain_an_mlp():
    p = run("explain", "--widths", "8,6,3", "--batch", "2", "--activation", "sigmoid", "--order", "forward")
    assert p.returncode == 0, p.stderr
    assert "d linear_1/d x (B=2: 3x8) = (3x6)(6x6)(6x8)" in p.stdout
    assert "sigmoid_0 = sigmoid(x=linear_0)" in p.stdout and "order='forward'" in p.stdout


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
