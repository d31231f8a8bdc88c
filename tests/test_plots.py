"""Plots (only where matplotlib is installed) and the sweeps behind them (numpy only)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import jacobians as jac
from jacobians import plots

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib")


def is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG


# ------------------------------------------------------------------ numpy only


def test_importing_the_package_the_plots_and_the_cli_does_not_import_matplotlib():
    code = "import sys, jacobians, jacobians.plots, jacobians.cli; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_without_matplotlib_the_error_says_how_to_install_it(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import of these now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'jacobians\[plot\]'"):
        plots.heatmap(np.eye(3))
    with pytest.raises(ImportError, match=r"pip install 'jacobians\[plot\]'"):
        plots.cost_curves(n=4)


def test_the_width_sweep_crosses_at_m_equals_n():
    data = plots.sweep_width(n=8, ms=[2, 4, 8, 16, 32], repeats=1, min_time=0)
    f, r, o = (data["flops"][k] for k in ("forward", "reverse", "optimal"))
    for m, fw, rv, op in zip(data["m"], f, r, o):
        assert (rv < fw) if m < 8 else (fw < rv) if m > 8 else (fw == rv)
        assert op == min(fw, rv)
    assert all(len(v) == 5 for v in data["seconds"].values())


def test_the_bottleneck_sweep_meets_in_the_middle():
    # n -> n -> k -> n -> n: the pure modes pay ~2 n^3, the middle way ~6 n^2 k: a ratio of ~n / 3k
    n = 32
    data = plots.sweep_bottleneck(n=n, ks=[1, 2, 4], repeats=1, min_time=0)
    for order in ("optimal", "bracket"):
        for k, a, b in zip(data["k"], data["flops"][order], data["flops"]["forward"]):
            assert b / a > n / (4 * k), (order, k, a, b)
    assert data["flops"]["forward"] == data["flops"]["reverse"]


def test_problems_are_checked():
    with pytest.raises(ValueError, match="valid options"):
        plots.problem("cnn")
    with pytest.raises(ValueError, match="D,H,D"):
        plots.problem("residual", (4, 5, 6))
    p = plots.problem("residual", (4, 5, 4), batch=0)
    assert p.batched is None and p.args[0].shape == (4,)
    assert jac.jacobian(p.f, wrt="x")(*p.args).shape == (4, 4)


# ------------------------------------------------------------------ figures


def test_heatmap_of_a_per_sample_jacobian_draws_block_lines(mpl, tmp_path):
    p = plots.problem("mlp", (5, 4, 3), batch=3)
    J = jac.jacobian(p.f, wrt="x", batched="x")(*p.args)          # (B, 3, 5)
    fig = plots.heatmap(J, out_shape=(3, 3), title="per sample")
    ax = fig.axes[0]
    assert ax.get_title() == "per sample"
    assert len(ax.lines) == 2                                     # between the 3 samples
    assert ax.get_images()[0].get_array().shape == (9, 5)
    assert "output (3, 3)" in ax.get_ylabel() and "input (5,)" in ax.get_xlabel()
    path = tmp_path / "J.png"
    fig.savefig(path)
    assert is_png(path)


def test_heatmap_shapes(mpl, tmp_path):
    J = np.arange(2 * 3 * 4 * 5, dtype=float).reshape(2, 3, 4, 5)
    fig = plots.heatmap(J)                                         # even: (2, 3) x (4, 5)
    ax = fig.axes[0]
    assert ax.get_images()[0].get_array().shape == (6, 20)
    assert len(ax.lines) == 1 + 3                                  # 2 output blocks, 4 input blocks
    fig = plots.heatmap(J, in_shape=(5,))
    assert fig.axes[0].get_images()[0].get_array().shape == (24, 5)
    with pytest.raises(ValueError, match="out_shape or in_shape"):
        plots.heatmap(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="must equal"):
        plots.heatmap(J, out_shape=(2, 3), in_shape=(5,))
    from matplotlib.figure import Figure
    own = Figure()
    ax = own.add_subplot()
    assert plots.heatmap(np.eye(4), ax=ax) is own


def test_cost_curves_png(mpl, tmp_path):
    fig = plots.cost_curves(n=8, ms=[2, 8, 32], ks=[1, 2, 8], repeats=1, min_time=0)
    assert len(fig.axes) >= 4
    assert "m = n = 8" in [t.get_text() for t in fig.axes[0].texts]
    path = tmp_path / "costs.png"
    fig.savefig(path)
    assert is_png(path)


def test_cli_plot_writes_the_cost_curves(mpl, tmp_path):
    path = tmp_path / "curves.png"
    p = subprocess.run([sys.executable, "-m", "jacobians", "compare", "--widths", "12,16,4", "--batch", "2",
                        "--repeats", "1", "--min-time", "0", "--orders", "forward,reverse,optimal", "--plot", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert is_png(path)
    assert f"cost curves written to {path}" in p.stdout


def test_function_figure_is_a_heatmap_and_three_cost_bars_per_report(mpl, tmp_path):
    p = plots.problem("mlp", (5, 4, 3), batch=12)
    reports, Js = [], []
    for wrt in ("x", "W1"):
        reports.append(jac.compare(p.f, *p.args, wrt=wrt, batched="x", orders=("forward", "reverse", "vjp"),
                                   repeats=2, min_time=0))
        Js.append(jac.jacobian(p.f, wrt=wrt, batched="x")(*p.args))
    fig = plots.function_figure(reports, Js, title="mlp")
    heat = [ax for ax in fig.axes if ax.get_images()]
    assert len(heat) == 2
    assert heat[0].get_title() == "d out / d x: (12, 3, 5) per sample (first 8 of 12 along output axis 0)"
    assert heat[0].get_images()[0].get_array().shape == (8 * 3, 5)            # 8 sample blocks of 3 rows
    assert heat[1].get_images()[0].get_array().shape == (8 * 3, 4 * 5)        # W1 (4, 5): not per sample
    bars = [ax for ax in fig.axes if ax.patches]
    assert len(bars) == 2 * 3
    assert [b.get_height() for b in bars[0].patches] == [r.flops for r in reports[0].rows]
    assert [b.get_height() for b in bars[1].patches] == [r.largest_bytes for r in reports[0].rows]
    assert [t.get_text() for t in bars[0].get_xticklabels()] == ["forward", "reverse", "vjp"]
    path = tmp_path / "f.svg"
    fig.savefig(path)
    assert path.read_text().lstrip().startswith("<?xml")
    with pytest.raises(ValueError, match="one Jacobian per report"):
        plots.function_figure(reports, Js[:1])
    with pytest.raises(ValueError, match=r"Jacobian 0 has shape \(12, 3, 4, 5\); its report says \(12, 3, 5\)"):
        plots.function_figure(reports[:1], Js[1:])
