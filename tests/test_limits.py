"""The memory limit's parsing, and the JVP / VJP sweeps held under it.

Parsing: ``set_memory_limit`` and ``JACOBIANS_MAX_BYTES`` take whole bytes or
human sizes (KB/MB/GB/TB decimal, KiB/MiB/GiB/TiB binary) and refuse anything else in one line
naming the function or the variable and the value; a bad variable never breaks ``import jacobians``.
Sweeps: ``sweep_jacobian`` builds only each chunk's basis columns and sizes its blocks before
allocating; tracemalloc's peak stays under the limit, or the sweep is refused before allocating."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from pathlib import Path

import jacobians as jac
from jacobians import limits
from jacobians.modes import sweep_jacobian
from jacobians.limits import JacobianTooLarge, limited_memory, memory_limit, parse_bytes, set_memory_limit

ROOT = Path(__file__).resolve().parents[1]

ACCEPTED = [
    (4096, 4096),
    (np.int64(4096), 4096),
    (1e9, 10 ** 9),                   # an integral float
    (np.float64(2048.0), 2048),
    ("4096", 4096),
    ("1e9", 10 ** 9),
    (" 7 ", 7),
    ("12 B", 12),
    ("500MB", 500 * 10 ** 6),
    ("1.5 GB", 1_500_000_000),
    ("64 kb", 64_000),                # case is ignored
    ("2GiB", 2 * 2 ** 30),
    ("1.5 KiB", 1536),
    ("0.5 mib", 2 ** 19),
    ("0.1 KB", 100),
    ("1.0000001 KB", 1000),           # rounded down to whole bytes
    ("1TiB", 2 ** 40),
]

# value, error type, the message's fragment after the name
REFUSED = [
    ("abc", ValueError, "must be a positive whole number of bytes or a size such as '500MB'"),
    ("1GB!", ValueError, "got '1GB!'"),
    ("1 G", ValueError, "got '1 G'"),     # a unit needs its B: 'G' alone is refused, not guessed
    ("100k", ValueError, "got '100k'"),
    ("nan", ValueError, "got 'nan'"),
    ("inf", ValueError, "got 'inf'"),
    ("0", ValueError, "must be positive; got '0'"),
    ("-1", ValueError, "got '-1'"),
    ("1.5", ValueError, "got '1.5' (not a whole number of bytes)"),
    ("0.0001 KB", ValueError, "must be positive; got '0.0001 KB'"),
    ("1e40", ValueError, "must be at most 2**63 bytes; got '1e40'"),
    ("", ValueError, "got ''"),
    (float("nan"), ValueError, "got nan"),
    (float("inf"), ValueError, "got inf"),
    (1.5, ValueError, "got 1.5"),
    (0, ValueError, "must be positive; got 0"),
    (-1, ValueError, "must be positive; got -1"),
    (2 ** 64, ValueError, "must be at most 2**63 bytes"),
    (True, TypeError, "got True (a bool)"),
    (np.True_, TypeError, "(a bool)"),
    (None, TypeError, "got None (a NoneType)"),
    ([1], TypeError, "got [1] (a list)"),
]


@pytest.mark.parametrize("value, nbytes", ACCEPTED)
def test_accepted_sizes(value, nbytes):
    assert parse_bytes(value) == nbytes
    with limited_memory(value):
        assert memory_limit() == nbytes


@pytest.mark.parametrize("value, error, fragment", REFUSED)
def test_set_memory_limit_refuses_in_one_line_and_keeps_the_limit(value, error, fragment):
    before = memory_limit()
    with pytest.raises(error) as info:
        set_memory_limit(value)
    text = str(info.value)
    assert text.startswith("set_memory_limit: nbytes must ") and "\n" not in text
    assert fragment in text
    assert memory_limit() == before


@pytest.mark.parametrize("value", ["abc", "1GB!", "nan", "inf", "0", "-1", "1.5", "1 G"])
def test_a_bad_environment_variable_is_named_with_its_value(monkeypatch, value):
    monkeypatch.setenv("JACOBIANS_MAX_BYTES", value)
    default, error = limits._from_environment()
    assert default == limits._physical_default()
    assert error.startswith("environment variable JACOBIANS_MAX_BYTES must ") and "\n" not in error
    assert error.endswith(f"got {value!r}") or f"got {value!r} (" in error


@pytest.mark.parametrize("value, nbytes", [("1GB", 10 ** 9), ("2GiB", 2 ** 31), ("1e9", 10 ** 9), ("64", 64)])
def test_good_environment_values(monkeypatch, value, nbytes):
    monkeypatch.setenv("JACOBIANS_MAX_BYTES", value)
    assert limits._from_environment() == (nbytes, None)


def test_an_empty_environment_variable_means_the_default(monkeypatch):
    monkeypatch.setenv("JACOBIANS_MAX_BYTES", "")
    assert limits._from_environment() == (limits._physical_default(), None)


SCRIPT = """
import numpy as np
import jacobians as jac          # must not raise
for call in (jac.memory_limit, lambda: jac.ops.tanh(np.ones(3))):
    try:
        call()
    except ValueError as e:
        print("ERR", e)
print("PREV", jac.set_memory_limit("1 MiB") == jac.limits._physical_default(), jac.memory_limit())
value, (J,) = jac.ops.tanh(np.ones(3), batch=False)
print("OK", J.shape)
"""


def test_a_bad_variable_does_not_break_import_and_is_reported_at_first_use():
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, env={**os.environ, "JACOBIANS_MAX_BYTES": "1 GBB"})
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    expected = ("ERR environment variable JACOBIANS_MAX_BYTES must be a positive whole number of bytes "
                "or a size such as '500MB'")
    assert len(lines) == 4 and all(line.startswith(expected) and line.endswith("got '1 GBB'") for line in lines[:2])
    assert lines[2] == f"PREV True {2 ** 20}"   # set_memory_limit replaces it
    assert lines[3] == "OK (3, 3)"


def test_the_command_line_reports_a_bad_variable_in_one_line():
    p = subprocess.run([sys.executable, "-m", "jacobians", "compare", "--widths", "4,3", "--batch", "2", "-q"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env={**os.environ, "JACOBIANS_MAX_BYTES": "nan"})
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert re.match(r"jacobians: error: environment variable JACOBIANS_MAX_BYTES must .* got 'nan'$", p.stderr.strip())


# ---------------------------------------------------------------- the sweeps' memory (compare's jvp / vjp rows)

N, M, BATCH = 2000, 8, 3   # an n x n identity would be 32 MB: sixteen times the limit below
LIMIT = 2 << 20


def _sweep_cases():
    r = np.random.default_rng(7)
    W = r.normal(size=(M, N)) / 40
    return {
        "chain": (lambda x: jac.fn.linear(jac.fn.tanh(x), W), r.normal(size=N), None),
        "fan-out": (lambda x: jac.fn.linear(jac.fn.tanh(x) * x + jac.fn.sigmoid(x), W), r.normal(size=N), None),
        "per-sample": (lambda x: jac.fn.linear(jac.fn.tanh(x) * x, W), r.normal(size=(BATCH, N)), "x"),
    }


def _traced_sweep(graph, mode, per_sample=False):
    tracemalloc.start()
    try:
        return sweep_jacobian(graph, "x", mode, per_sample=per_sample), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("mode", ["jvp", "vjp"])
@pytest.mark.parametrize("case", ["chain", "fan-out", "per-sample"])
def test_a_sweep_stays_under_the_memory_limit(case, mode):
    f, x, batched = _sweep_cases()[case]
    jf = jac.jacobian(f, wrt="x", batched=batched)
    expected = jf(x)
    graph, _ = jf.plan_and_graph((x,), {})
    with limited_memory(LIMIT):
        sweep, peak = _traced_sweep(graph, mode, per_sample=batched is not None)
    assert peak <= LIMIT, f"{case} {mode}: peak {peak} bytes over the limit {LIMIT}"
    assert sweep.vectors == (N if mode == "jvp" else M)
    if mode == "jvp":  # the limit, not the 64 MiB chunk budget, sized the chunks: several vectors, not all
        assert 1 < sweep.chunk < N
    np.testing.assert_allclose(sweep.jacobian, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("mode", ["jvp", "vjp"])
def test_a_sweep_whose_jacobian_cannot_fit_is_refused_before_allocating(mode):
    f, x, _ = _sweep_cases()["chain"]
    graph, _ = jac.jacobian(f, wrt="x").plan_and_graph((x,), {})
    with limited_memory(M * N * 8 - 1):
        with pytest.raises(JacobianTooLarge, match=re.escape(f"the Jacobian of shape {(M, N)} needs 125.0 KiB")):
            _traced_sweep(graph, mode)
    tracemalloc.start()
    try:
        with limited_memory(M * N * 8 - 1), pytest.raises(JacobianTooLarge):
            sweep_jacobian(graph, "x", mode)
        assert tracemalloc.get_traced_memory()[1] < M * N * 8 // 2   # the Jacobian (128 KB) was never allocated
    finally:
        tracemalloc.stop()


def test_a_sweep_with_no_room_for_one_vector_beside_the_jacobian_is_refused():
    f, x, _ = _sweep_cases()["chain"]
    graph, _ = jac.jacobian(f, wrt="x").plan_and_graph((x,), {})
    tracemalloc.start()
    try:
        with limited_memory(M * N * 8 + 64), pytest.raises(JacobianTooLarge,
                                                           match=re.escape(f"the Jacobian {(M, N)} and a jvp block")):
            sweep_jacobian(graph, "x", "jvp")
        assert tracemalloc.get_traced_memory()[1] < M * N * 8 // 2   # the factors (a 16 KB slope), not J
    finally:
        tracemalloc.stop()
