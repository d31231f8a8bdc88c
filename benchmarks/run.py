"""The benchmark harness: the toolkit against numpy closed forms, JAX and PyTorch.

Usage (from the repository root)::

    python -m benchmarks.run                      # every problem, full sizes; writes benchmarks/results.{md,json,png}
    python -m benchmarks.run --quick              # small sizes, 3 repeats: seconds
    python -m benchmarks.run --problems bottleneck residual --repeats 11
    python -m benchmarks.run --no-peers --no-memory --out /tmp/bench
    python -m benchmarks.run --only small,planning,overhead   # the issue-8 tables alone
    python -m benchmarks.run --only models,hessians           # issue 9's models, issue 11's Hessians

Options: ``--quick`` (small variants, few repeats), ``--only TABLES``
(comma-separated, of ``problems`` (the main table), ``small`` (the small
models), ``models``, ``hessians``, ``planning``, ``overhead``; default all), ``--problems NAME...``
(instead of the problems the tables pick, see :mod:`benchmarks.problems`;
without ``--only`` it runs only those problems), ``--repeats N`` (default 7,
quick 3), ``--no-peers`` (skip JAX / PyTorch), ``--no-memory`` (skip the
peak-memory subprocesses), ``--out DIR`` (default: this folder), ``--budget S``
(seconds of timed calls per implementation before its repeats are cut, default
20, quick 2), ``--gap S`` (idle time before each timed call, default 0.02).
``--plan-layers N,N`` (planning depths, default 10,40,100, quick 3,6),
``--plan-timeout S`` (default 60), ``--overhead-calls N`` (default 5000,
quick 200).  The exit status is 1 when any implementation disagrees with the
toolkit or fails (a planning depth cut by its timeout is reported, not
failed), 0 otherwise.  The peers are optional (``pip install 'jax[cpu]'``,
a CPU build of ``torch``, ``matplotlib`` for the plot); without them their
rows are skipped with a note.

What is measured, per problem:

* **Correctness first.**  Every implementation's first call (the warm-up) is
  compared with the toolkit's ``order="optimal"`` Jacobians (the numpy closed
  form's where the toolkit gave none): same shapes, and
  ``max |a - ref| <= 1e-7 * max |ref| + 1e-12`` per wrt.  The max abs diff is
  in the table; a disagreement fails the run.
* **Time.**  The warm-up call is excluded and reported as "first call" (for
  the jitted JAX rows that is trace + compile + one run; for the toolkit it is
  trace + plan + one run).  Then N repeats (default 7), interleaved: each
  round calls every implementation once, in a rotating order, after a short
  idle gap (so thread pools that spin after a call, OpenBLAS, OpenMP, XLA, go
  quiet).  Median, min-max and IQR are reported.  One untimed calibration call
  (skipped when the first call took over 1 s) sets how many calls make one
  sample (short calls are looped until a sample lasts 5 ms; the table's n
  reads "repeats x calls") and cuts the repeats of an implementation whose
  samples would exceed ``--budget`` seconds in all.  JAX results are waited
  for with ``block_until_ready``; no conversion to numpy is timed.
* **Array backends** (issue 14): a problem's ``backends`` add rows "toolkit
  (backend=jax)" / "toolkit (backend=torch)": the same plan with its
  contractions on that backend (numpy inputs; values and factors on the host,
  moved to the backend every call; the backend's arrays out), so the GEMMs run
  on XLA's or torch's CPU kernels instead of numpy's BLAS.  Skipped with
  ``--no-peers``.
* **Peak memory** (``--no-memory`` skips it).  Each implementation runs alone
  in a fresh subprocess (``python -m benchmarks.run --one PROBLEM IMPL``):
  inputs built and the implementation set up (imports, device_put), one
  warm-up call, its result dropped; then the kernel's peak-RSS mark is reset
  (``echo 5 > /proc/self/clear_refs``) and the peak is ``VmHWM - VmRSS``
  around one more call: the extra resident memory of one steady-state call,
  result included.  Memory an allocator kept cached from the warm-up sits in
  the baseline and is not counted.  The first call's peak over the RSS after
  imports + inputs is also recorded (results.json).  Where clear_refs is not
  writable the fallback is ``ru_maxrss`` (``resource.getrusage``) minus the
  RSS before the calls, which includes the warm-up.
* **Physical lower bounds.**  The result must be written once: result bytes /
  write bandwidth (``ndarray.fill`` on a resident 1 GiB array, best of 3;
  larger than the 480 MiB L3 this VM reports; quick: 32 MiB);
  the optimal plan's FLOPs (``jf.plan(...).flops``) must be executed: FLOPs /
  float64 GEMM rate (2048 x 2048 ``@``, best of 3).  Both and their max are
  reported next to the toolkit's time (the machine is measured before and
  after the problems; the bounds use the better rates).  Writing into freshly
  allocated pages, as every new result array does, is much slower (page
  faults); that rate and the time it implies are reported as well.

* **Small models** (``--only small``): the CS224n window net, the softmax
  classifier, a 5-step tanh RNN and one attention block, run exactly like the
  problems above (checked, warm-up, interleaved repeats); their own table
  shows the toolkit against JAX and torch on repeat calls, with toolkit /
  best peer.
* **Models** (``--only models``, issue 9): the PyTorch tutorial CNN (conv2d,
  max_pool2d), an embedding classifier (``E[ids]``) and a 20-step LSTM
  (``X[:, t]``, gate slices, several batched arguments), per sample, against
  jit(vmap(jacrev / jacfwd)) and torch.func; **Hessians** (``--only
  hessians``, issue 11): ``jac.hessian`` of x^T A x, a logistic-regression
  loss and a tanh MLP's per-sample input Hessian against ``jax.hessian``
  (jit(jacfwd(jacrev))), ``torch.func.hessian`` and numpy closed forms.  Both
  tables show first-call and median times, peak memory and each problem's
  goals (the issues' targets) as met / missed / n/a.  These problems use
  toolkit features that may not be merged yet: a toolkit row raising
  ``NotImplementedError`` (``IndexMapsPending``), ``TypeError`` or
  ``AttributeError`` (no ``jac.hessian``) reads "not supported yet: <error>"
  and does not fail the run; the numpy closed form is then the reference the
  peers are checked against (any other toolkit error still fails the run).
  Each output is compared with the reference as soon as it is computed and
  dropped (the embedding's Jacobian is 1.6 GB).
* **Planning time** (``--only planning``): ``jf.plan(x)`` of a tanh chain
  with 10, 40 and 100 layers (width 16, B=8), per-sample d out / d x, the
  default order, each depth in a fresh process (no plan cache) cut after
  ``--plan-timeout`` seconds; once a depth is cut the deeper ones are skipped.
* **Fixed per-call overhead** (``--only overhead``): linear + tanh on x
  (2, 3); every call timed alone, ``--overhead-calls`` interleaved rounds of
  the toolkit, the numpy closed form and the peers; overhead = median per call
  minus the numpy closed form's median.

On a loaded shared machine, multi-threaded BLAS and XLA pools spin against
other processes and millisecond timings scatter by 10-100x; one thread each
is far steadier (the thread counts, XLA_FLAGS included, are recorded)::

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
    python -m benchmarks.run --only small,overhead

Machine, versions, thread counts and BLAS go into results.json.  The machine
this was developed on is shared and has 2 cores: compare ratios within a run,
not absolute times across runs.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import jacobians as jac
from jacobians.backends import get_backend

from . import peers
from .problems import HESSIANS, MODELS, PROBLEMS, SMALL_MODELS, TINY, Problem, get, mlp_chain

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RTOL, ATOL = 1e-7, 1e-12
MIN_SAMPLE_S = 0.005
SECTIONS = ("problems", "small", "models", "hessians", "planning", "overhead")
PENDING_GROUPS = ("models", "hessians")  # their toolkit rows may read "not supported yet" (features in flight)
PENDING_ERRORS = (NotImplementedError, TypeError, AttributeError)  # IndexMapsPending is a NotImplementedError
PLAN_WIDTH, PLAN_BATCH = 16, 8          # the planning chains (quick: 4, 2)


# ---------------------------------------------------------------- implementations

def toolkit_impl(problem: Problem, inputs: dict, order: str, backend: str | None = None) -> peers.Impl:
    """``jac.jacobian`` (or ``jac.hessian`` for a Hessian problem, out + in + in) of the problem's function.

    ``backend``: the plan's contractions on that array backend (row ``toolkit@jax``, numpy inputs,
    the backend's arrays out; jax's asynchronous results are waited for)."""
    if problem.kind == "hessian":  # AttributeError until jac.hessian lands: "not supported yet"
        jf = jac.hessian(problem.fn, wrt=problem.wrt if len(problem.wrt) > 1 else problem.wrt[0],
                         batched=problem.batched)
    elif backend is not None:
        if backend == "jax":
            peers._jax_ops()   # float64: jax's 64-bit mode, as for the jax rows
        jf = jac.jacobian(problem.fn, wrt=problem.wrt, batched=problem.batched, order=order, backend=backend)
    else:
        jf = jac.jacobian(problem.fn, wrt=problem.wrt, batched=problem.batched, order=order)
    xp = get_backend(backend or "numpy")
    ready = (lambda out: __import__("jax").block_until_ready(out)) if backend == "jax" else (lambda out: out)

    def call():
        return ready(jf(**inputs))

    def to_numpy(out):
        if not isinstance(out, dict):
            return {problem.wrt[0]: xp.to_numpy(out)}
        if problem.kind == "hessian":
            return {w: out[(w, w)] for w in problem.wrt}
        return {w: xp.to_numpy(v) for w, v in out.items()}
    if backend is None:
        impl = peers.Impl(f"toolkit-{order}", f"toolkit ({order})", "toolkit", call, to_numpy)
    else:
        impl = peers.Impl(f"toolkit@{backend}", f"toolkit (backend={backend})", "toolkit", call, to_numpy)
    impl.jf = jf
    return impl


def numpy_impl(problem: Problem, inputs: dict) -> peers.Impl:
    return peers.Impl("numpy", "numpy closed form", "numpy", lambda: problem.closed_form(inputs), dict)


def make_impl(problem: Problem, inputs: dict, impl_id: str) -> peers.Impl:
    if impl_id.startswith("toolkit-"):
        return toolkit_impl(problem, inputs, impl_id.split("-", 1)[1])
    if impl_id.startswith("toolkit@"):
        return toolkit_impl(problem, inputs, "optimal", impl_id.split("@", 1)[1])
    if impl_id == "numpy":
        return numpy_impl(problem, inputs)
    fw, mode = impl_id.split("-", 1)
    return peers.make(problem, inputs, fw, mode)


# ---------------------------------------------------------------- machine

def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def measure_machine(quick: bool) -> dict:
    """GEMM rate and memory bandwidths of this machine (numpy, all BLAS threads)."""
    n = 512 if quick else 2048
    r = np.random.default_rng(0)
    a, b = r.standard_normal((n, n)), r.standard_normal((n, n))
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(3))
    gemm = 2 * n ** 3 / best
    nbytes = (32 if quick else 1024) << 20
    t_fresh = _timed(lambda: np.ones(nbytes // 8))          # fresh pages: allocate + first touch
    buf = np.empty(nbytes // 8)
    buf.fill(0.0)
    t_write = min(_timed(lambda: buf.fill(1.0)) for _ in range(3))
    t_read = min(_timed(lambda: buf.sum()) for _ in range(3))
    del buf
    return {"gemm_n": n, "gemm_flops_per_s": gemm, "bandwidth_bytes": nbytes,
            "write_bytes_per_s": nbytes / t_write, "read_bytes_per_s": nbytes / t_read,
            "fresh_write_bytes_per_s": nbytes / t_fresh}


def _timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def machine_info() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    mem = next((int(line.split()[1]) * 1024 for line in _read("/proc/meminfo").splitlines()
                if line.startswith("MemTotal")), None)
    import opt_einsum
    info = {"cpu": cpu, "cores": os.cpu_count(), "ram_bytes": mem, "os": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "opt_einsum": opt_einsum.__version__,
            "jacobians": jac.__version__, **{k: v for k, v in peers.versions().items()}}
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        info["blas"] = {k: blas.get(k) for k in ("name", "version", "openblas configuration") if k in blas}
    except Exception:  # older numpy: no dict mode
        info["blas"] = None
    return info


# ---------------------------------------------------------------- memory (child process)

def _status(field: str) -> int | None:
    for line in _read("/proc/self/status").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss() -> int:
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def child_memory(problem_name: str, impl_id: str, quick: bool, single: bool) -> dict:
    """Run one implementation alone; peak resident memory of one call above the baseline."""
    problem = get(problem_name)
    inputs = problem.build(quick)
    impl = make_impl(problem, inputs, impl_id)
    gc.collect()
    base0 = _status("VmRSS")
    can_reset = _reset_peak() and base0 is not None and _status("VmHWM") is not None
    if not can_reset:
        base0 = _maxrss() if base0 is None else base0
    out = impl.call()
    first_peak = (_status("VmHWM") if can_reset else _maxrss()) - base0
    if single:
        return {"peak_bytes": first_peak, "first_call_peak_bytes": first_peak, "baseline_rss_bytes": base0,
                "method": "first call only (slow implementation): VmHWM - VmRSS after imports + inputs"
                          if can_reset else "ru_maxrss - RSS after imports + inputs (first call)"}
    del out
    gc.collect()
    if can_reset:
        _reset_peak()
        base = _status("VmRSS")
        out = impl.call()
        peak = _status("VmHWM") - base
        method = "clear_refs: VmHWM - VmRSS around one call after a warm-up"
    else:
        base = base0
        out = impl.call()
        peak = _maxrss() - base
        method = "ru_maxrss - RSS after imports + inputs (includes the warm-up call)"
    del out
    return {"peak_bytes": peak, "first_call_peak_bytes": first_peak, "baseline_rss_bytes": base,
            "method": method}


def measure_memory(problem: Problem, impl_id: str, quick: bool, single: bool) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.run", "--one", problem.name, impl_id]
    cmd += ["--quick"] if quick else []
    cmd += ["--single"] if single else []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return {"error": "memory subprocess timed out"}
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": f"memory subprocess failed (rc {p.returncode}): {p.stderr.strip()[-300:]}"}
    return json.loads(lines[-1])


# ---------------------------------------------------------------- one problem

def compare(out: dict, ref: dict, wrt) -> tuple[bool, float, dict]:
    diffs, ok = {}, True
    for w in wrt:
        a, r = np.asarray(out.get(w)), np.asarray(ref[w])
        if a.shape != r.shape:
            diffs[w] = f"shape {a.shape} != {r.shape}"
            ok = False
            continue
        d = float(np.max(np.abs(a - r))) if r.size else 0.0
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        diffs[w] = d
        ok = ok and bool(np.isfinite(d)) and d <= RTOL * scale + ATOL
    worst = max([d for d in diffs.values() if isinstance(d, float)] + [0.0])
    return ok, (worst if all(isinstance(d, float) for d in diffs.values()) else float("nan")), diffs


def plan_costs(problem: Problem, inputs: dict) -> dict:
    costs = {}
    if problem.kind == "hessian":  # jacobian plans do not describe a Hessian
        return costs
    for order in ("optimal", "forward", "reverse"):
        try:
            plan = jac.jacobian(problem.fn, wrt=problem.wrt, batched=problem.batched, order=order).plan(**inputs)
            costs[order] = {"flops": int(plan.flops), "largest_intermediate": int(plan.largest_intermediate),
                            "result_elements": int(plan.result_elements), "strategy": plan.strategy,
                            "text": str(plan)}
        except Exception as e:  # JacobianTooLarge, a feature not there yet, or a bug: report, do not stop
            costs[order] = {"error": _one_line(e)}
    return costs


def _one_line(e: BaseException, limit: int = 200) -> str:
    text = f"{type(e).__name__}: {e}".splitlines()[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def run_problem(problem: Problem, args, machine: dict, log) -> dict:
    inputs = problem.build(args.quick)
    res = {"name": problem.name, "title": problem.title, "notes": problem.notes, "wrt": list(problem.wrt),
           "batched": problem.batched, "per_sample": problem.per_sample, "group": problem.group,
           "kind": problem.kind, "inputs": {k: list(np.shape(v)) for k, v in inputs.items()},
           "input_bytes": int(sum(np.asarray(v).nbytes for v in inputs.values())), "skipped": [], "rows": []}
    res["plan"] = plan_costs(problem, inputs)
    impls: list[peers.Impl] = []
    errors: dict[str, str] = {}
    pending: dict[str, str] = {}   # toolkit rows of features not merged yet: reported, not failed
    first: dict[str, float] = {}
    outputs: dict[str, dict] = {}  # the reference's output only: the others are checked as they come
    checks: dict[str, tuple] = {}
    contiguous: dict[str, bool] = {}
    ref_id = None
    may_pend = problem.group in PENDING_GROUPS

    def warm(impl: peers.Impl) -> None:
        nonlocal ref_id
        log(f"  {impl.label}: first call ...")
        try:
            t = time.perf_counter()
            out = impl.call()
            first[impl.id] = time.perf_counter() - t
            got = impl.to_numpy(out)
            del out
            contiguous[impl.id] = all(np.asarray(a).flags.c_contiguous for a in got.values())
            if ref_id is None:
                ref_id = impl.id
                outputs[impl.id] = got
            checks[impl.id] = compare(got, outputs[ref_id], problem.wrt)
            del got
        except PENDING_ERRORS as e:
            if not (may_pend and impl.kind == "toolkit"):
                errors[impl.id] = f"{type(e).__name__}: {e}"
                log(f"    ERROR {errors[impl.id]}")
            else:
                pending[impl.id] = _one_line(e)
                log(f"    not supported yet: {pending[impl.id]}")
        except Exception as e:  # reported in the row; the run fails
            errors[impl.id] = f"{type(e).__name__}: {e}"
            log(f"    ERROR {errors[impl.id]}")
        impls.append(impl)
        gc.collect()

    def failed_impl(impl_id: str, label: str, kind: str, e: Exception) -> peers.Impl:
        if may_pend and kind == "toolkit" and isinstance(e, PENDING_ERRORS):
            pending[impl_id] = _one_line(e)
            log(f"  {label}: not supported yet: {pending[impl_id]}")
        else:
            errors[impl_id] = f"{type(e).__name__}: {e}"
        return peers.Impl(impl_id, label, kind, lambda: None, dict)

    for order in problem.orders:
        try:
            impl = toolkit_impl(problem, inputs, order)
        except Exception as e:  # jac.hessian missing, a batched tuple refused at construction
            impls.append(failed_impl(f"toolkit-{order}", f"toolkit ({order})", "toolkit", e))
            continue
        warm(impl)
    for backend in problem.backends if not args.no_peers else ():
        if peers.available(backend) is None:
            res["skipped"].append(f"toolkit (backend={backend}): {backend} not installed")
            continue
        warm(toolkit_impl(problem, inputs, "optimal", backend))
    warm(numpy_impl(problem, inputs))
    if not args.no_peers:
        rows, notes = peers.plan_rows(problem, inputs, outputs[ref_id]) if ref_id else ([], [])
        res["skipped"] += notes
        for impl_id, fw, mode, label in rows:
            try:
                impl = peers.make(problem, inputs, fw, mode)
            except Exception as e:
                impls.append(failed_impl(impl_id, label, fw, e))
                continue
            warm(impl)
    else:
        res["skipped"].append("peers: skipped (--no-peers)")
    res["shapes"] = {w: list(a.shape) for w, a in outputs.get(ref_id, {}).items()}
    res["result_bytes"] = int(sum(a.nbytes for a in outputs.get(ref_id, {}).values()))
    res["reference"] = ref_id
    outputs.clear()
    gc.collect()

    # interleaved timing
    live = [i for i in impls if i.id not in errors and i.id not in pending]
    times: dict[str, list[float]] = {i.id: [] for i in live}
    target = {i.id: args.repeats for i in live}
    number = {}
    for impl in live:  # calibration (untimed): short calls are looped so one sample lasts >= MIN_SAMPLE_S
        dt = first[impl.id] if first[impl.id] >= 1.0 else _timed(impl.call)
        number[impl.id] = max(1, min(1000, math.ceil(MIN_SAMPLE_S / max(dt, 1e-9))))
        target[impl.id] = max(1, min(args.repeats, int(args.budget // max(dt, 1e-9))))
    for r in range(args.repeats):
        k = r % max(len(live), 1)
        for impl in live[k:] + live[:k]:
            if len(times[impl.id]) >= target[impl.id]:
                continue
            n = number[impl.id]
            time.sleep(args.gap)
            t = time.perf_counter()
            for _ in range(n):
                out = impl.call()
                del out
            times[impl.id].append((time.perf_counter() - t) / n)
        log(f"  round {r + 1}/{args.repeats} done")

    # memory, each implementation alone in a subprocess
    memory = {}
    if not args.no_memory:
        for impl in live:
            slow = bool(times[impl.id]) and float(np.median(times[impl.id])) > args.budget / 4
            log(f"  memory: {impl.label}{' (single call)' if slow else ''} ...")
            memory[impl.id] = measure_memory(problem, impl.id, args.quick, slow)

    # rows
    med = {i: float(np.median(t)) for i, t in times.items() if t}
    base_np, base_tk = med.get("numpy"), med.get("toolkit-optimal")
    for impl in impls:
        t = np.array(times.get(impl.id, [])) * 1e3
        ok, worst, diffs = checks.get(impl.id, (False, float("nan"), {}))
        m = memory.get(impl.id, {})
        row = {"id": impl.id, "label": impl.label, "kind": impl.kind,
               "first_call_ms": first[impl.id] * 1e3 if impl.id in first else None,
               "n": int(t.size), "number": number.get(impl.id, 0), "times_ms": t.round(5).tolist()}
        if t.size:
            row.update(median_ms=float(np.median(t)), min_ms=float(t.min()), max_ms=float(t.max()),
                       q1_ms=float(np.percentile(t, 25)), q3_ms=float(np.percentile(t, 75)),
                       ratio_numpy=float(np.median(t)) / 1e3 / base_np if base_np else None,
                       ratio_toolkit=float(np.median(t)) / 1e3 / base_tk if base_tk else None)
        if "peak_bytes" in m:
            row.update(peak_mib=m["peak_bytes"] / 2**20, first_call_peak_mib=m["first_call_peak_bytes"] / 2**20,
                       memory_method=m["method"])
        elif "error" in m:
            row["memory_error"] = m["error"]
        if impl.id in pending:
            row.update(ok=True, max_abs_diff=None, diffs={}, error=None, pending=pending[impl.id], note=impl.note,
                       c_contiguous=None)
        else:
            row.update(ok=bool(ok) and impl.id not in errors, max_abs_diff=worst,
                       diffs={w: (d if isinstance(d, float) else str(d)) for w, d in diffs.items()},
                       error=errors.get(impl.id), note=impl.note, c_contiguous=contiguous.get(impl.id))
        res["rows"].append(row)

    res["toolkit_median_s"] = base_tk
    _bounds(res, machine)
    res["goals"] = evaluate_goals(problem, res)
    res["ok"] = all(r["ok"] for r in res["rows"])
    return res


def evaluate_goals(problem: Problem, res: dict) -> list[dict]:
    """The issue's targets for this problem, each ``met``, ``missed`` or ``n/a`` (with the numbers).

    Tests: ``time_vs`` (toolkit median <= factor x the median of row ``ref``), ``time_vs_write``
    (toolkit median <= factor x the time to write the result once), ``memory`` (toolkit peak <=
    factor x (result + inputs) bytes), ``memory_excess`` (toolkit peak - result bytes < ``ref(shapes)``
    bytes, ``ref`` a function of the input shapes).
    """
    tk = _row(res, "toolkit-optimal") or {}
    out = []
    for text, test, ref, factor in problem.goals:
        g = {"goal": text, "status": "n/a", "detail": ""}
        if tk.get("pending"):
            g["detail"] = "toolkit not supported yet"
        elif test in ("time_vs", "time_vs_write"):
            mine = tk.get("median_ms")
            if test == "time_vs":
                other = (_row(res, ref) or {}).get("median_ms")
                what = (_row(res, ref) or {}).get("label", ref)
            else:
                other, what = res["bounds"]["write_ms"], "writing the result"
            if mine is None or other is None:
                g["detail"] = f"no timing for {'the toolkit' if mine is None else what}"
            else:
                g.update(status="met" if mine <= factor * other else "missed",
                         detail=f"toolkit {_fmt_ms(mine)} ms vs {what} {_fmt_ms(other)} ms "
                                f"(ratio {mine / other:.2f}, goal <= {factor:g})")
        elif test in ("memory", "memory_excess"):
            peak = tk.get("peak_mib")
            if peak is None:
                g["detail"] = "no memory measurement (--no-memory)" if "memory_error" not in tk else tk["memory_error"]
            else:
                result = res["result_bytes"] / 2**20
                if test == "memory":
                    limit = factor * (result + res["input_bytes"] / 2**20)
                    g.update(status="met" if peak <= limit else "missed",
                             detail=f"peak {peak:.1f} MiB vs {factor:g} x (result {result:.1f} + inputs "
                                    f"{res['input_bytes'] / 2**20:.1f}) = {limit:.1f} MiB")
                else:
                    limit = factor * ref({k: tuple(v) for k, v in res["inputs"].items()}) / 2**20
                    g.update(status="met" if peak - result < limit else "missed",
                             detail=f"peak {peak:.1f} MiB - result {result:.1f} MiB vs {limit:.1f} MiB")
        out.append(g)
    return out


def _bounds(res: dict, machine: dict) -> None:
    """Physical lower bounds: result bytes / write bandwidth, optimal-plan FLOPs / GEMM rate."""
    flops = res["plan"].get("optimal", {}).get("flops")
    t_bw = res["result_bytes"] / machine["write_bytes_per_s"]
    t_fl = flops / machine["gemm_flops_per_s"] if flops is not None else None
    bound = max(t_bw, t_fl or 0.0)
    base_tk = res.get("toolkit_median_s")
    res["bounds"] = {"write_ms": t_bw * 1e3,
                     "fresh_write_ms": res["result_bytes"] / machine["fresh_write_bytes_per_s"] * 1e3,
                     "flops_ms": None if t_fl is None else t_fl * 1e3, "bound_ms": bound * 1e3,
                     "toolkit_over_bound": (base_tk / bound) if base_tk and bound else None}


# ---------------------------------------------------------------- planning time (child process)

def child_plan(layers: int, width: int, batch: int) -> dict:
    """Plan (trace + plan, no contraction) the per-sample d out / d x of a tanh chain, first call, default order."""
    chain, x = mlp_chain(layers, width, batch)
    jf = jac.jacobian(chain, wrt="x", batched="x")
    t = time.perf_counter()
    plan = jf.plan(x)
    dt = time.perf_counter() - t
    return {"plan_s": dt, "flops": int(plan.flops), "strategy": plan.strategy,
            "header": str(plan).splitlines()[0]}


def measure_planning(args, log) -> dict:
    """One fresh process per depth (no plan cache, and a hang is cut at ``--plan-timeout`` seconds)."""
    width, batch = (4, 2) if args.quick else (PLAN_WIDTH, PLAN_BATCH)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    rows, capped = [], None
    for layers in args.plan_layers:
        row = {"layers": layers, "plan_s": None}
        if capped is not None:
            row.update(status="skipped", note=f"not run: {capped} layers already took over {args.plan_timeout:g} s")
            rows.append(row)
            log(f"  {layers} layers: skipped")
            continue
        log(f"  {layers} layers: planning (cap {args.plan_timeout:g} s) ...")
        cmd = [sys.executable, "-m", "benchmarks.run", "--plan-one", str(layers), str(width), str(batch)]
        try:
            p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.plan_timeout)
        except subprocess.TimeoutExpired:
            capped = layers
            row.update(status="timeout", note=f"over {args.plan_timeout:g} s (process killed; import time included)")
            rows.append(row)
            continue
        lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
        if p.returncode != 0 or not lines:
            row.update(status="error", note=f"rc {p.returncode}: {p.stderr.strip()[-300:]}")
        else:
            row.update(json.loads(lines[-1]), status="ok")
        rows.append(row)
    return {"width": width, "batch": batch, "timeout_s": args.plan_timeout, "order": "default", "rows": rows,
            "ok": all(r["status"] != "error" for r in rows)}


# ---------------------------------------------------------------- fixed per-call overhead

def measure_overhead(args, log) -> dict:
    """Per-call time of :data:`TINY` (toolkit, numpy closed form, peers), each call timed alone.

    Rounds interleave the implementations in a rotating order; the fixed overhead of an
    implementation is its median per-call time minus the numpy closed form's median.
    """
    problem, inputs = TINY, TINY.build(args.quick)
    impls = [toolkit_impl(problem, inputs, "optimal"), numpy_impl(problem, inputs)]
    ref = impls[0].to_numpy(impls[0].call())
    notes = []
    if not args.no_peers:
        rows, notes = peers.plan_rows(problem, inputs, ref)
        for _, fw, mode, _ in rows:
            impls.append(peers.make(problem, inputs, fw, mode))
    else:
        notes.append("peers: skipped (--no-peers)")
    checks = {i.id: compare(i.to_numpy(i.call()), ref, problem.wrt) for i in impls}
    for impl in impls:  # warm-up
        for _ in range(50):
            impl.call()
    log(f"  {args.overhead_calls} rounds of {len(impls)} calls ...")
    times = {i.id: np.empty(args.overhead_calls) for i in impls}
    clock = time.perf_counter
    for r in range(args.overhead_calls):
        k = r % len(impls)
        for impl in impls[k:] + impls[:k]:
            t = clock()
            impl.call()
            times[impl.id][r] = clock() - t
    base = float(np.median(times["numpy"]))
    rows = []
    for impl in impls:
        t = times[impl.id] * 1e6
        ok, worst, _ = checks[impl.id]
        rows.append({"id": impl.id, "label": impl.label, "kind": impl.kind, "median_us": float(np.median(t)),
                     "q1_us": float(np.percentile(t, 25)), "q3_us": float(np.percentile(t, 75)),
                     "minus_numpy_us": float(np.median(t)) - base * 1e6, "ok": bool(ok), "max_abs_diff": worst})
    tk = rows[0]
    return {"problem": problem.title, "calls": args.overhead_calls, "rows": rows, "skipped": notes,
            "fixed_overhead_us": tk["minus_numpy_us"], "ok": all(r["ok"] for r in rows)}


# ---------------------------------------------------------------- reports

def _fmt_ms(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _fmt_ratio(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def _fastest_peer(p: dict):
    rows = [r for r in p["rows"] if r["kind"] in ("jax", "torch") and r.get("median_ms") is not None]
    return min(rows, key=lambda r: r["median_ms"]) if rows else None


def _row(p: dict, rid: str):
    return next((r for r in p["rows"] if r["id"] == rid), None)


def write_markdown(data: dict, path: Path) -> None:
    m, mach = data["machine"], data["measured"]
    threads = data["threads"]
    L = [f"# Benchmark results",
         "",
         f"Generated by `{data['command']}` on {data['date']} — do not edit by hand; "
         f"rerun the command (see the docstring of `benchmarks/run.py` for the method).",
         ""]
    if data["settings"]["quick"]:
        L += ["**Quick run: small sizes** (the titles name the full sizes; the Jacobians lines give the sizes "
              "run), timings dominated by per-call overheads.", ""]
    L += [f"Machine: {m['cpu']}, {m['cores']} cores, {(m['ram_bytes'] or 0) / 2**30:.0f} GiB RAM, {m['os']}; "
         f"Python {m['python']}, numpy {m['numpy']}, opt_einsum {m['opt_einsum']}, "
         f"jax {m.get('jax') or 'not installed'}, torch {m.get('torch') or 'not installed'}. "
         f"Threads: {', '.join(f'{k} {v}' for k, v in threads.items())}.",
         ""]
    if data["sections"] != list(SECTIONS):
        L += [f"Tables in this run: {', '.join(data['sections'])} (`--only`; the full run has "
              f"{', '.join(SECTIONS)}).", ""]
    if mach:
        L += [f"Measured here: float64 GEMM {mach['gemm_flops_per_s'] / 1e9:.1f} GFLOP/s "
              f"({mach['gemm_n']}x{mach['gemm_n']}), write bandwidth {mach['write_bytes_per_s'] / 1e9:.1f} GB/s "
              f"(resident pages; fresh pages {mach['fresh_write_bytes_per_s'] / 1e9:.2f} GB/s), read "
              f"{mach['read_bytes_per_s'] / 1e9:.1f} GB/s. Repeats: {data['settings']['repeats']} "
              f"(interleaved), float64 everywhere.",
              "",
              "Ratios are median / median: `x numpy` against the numpy closed form, `x toolkit` against the toolkit "
              "(order optimal); below 1 is faster. Peak MiB: extra resident memory of one steady-state call, each "
              "implementation alone in a subprocess. Max abs diff: against the toolkit's Jacobians.",
              ""]
    if data["problems"]:
        L += ["## Summary",
              "",
              "| problem | toolkit ms | numpy ms | fastest peer | peer ms | toolkit / numpy | toolkit / peer | lower bound ms | toolkit / bound | checks |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for p in data["problems"]:
        tk, npr, peer = _row(p, "toolkit-optimal"), _row(p, "numpy"), _fastest_peer(p)
        tkm = tk.get("median_ms") if tk else None
        npm = npr.get("median_ms") if npr else None
        L.append(f"| {p['name']} | {_fmt_ms(tkm)} | {_fmt_ms(npm)} | {peer['label'] if peer else '–'} | "
                 f"{_fmt_ms(peer['median_ms']) if peer else '–'} | "
                 f"{_fmt_ratio(tkm / npm) if tkm and npm else '–'} | "
                 f"{_fmt_ratio(tkm / peer['median_ms']) if tkm and peer else '–'} | "
                 f"{_fmt_ms(p['bounds']['bound_ms'])} | {_fmt_ratio(p['bounds']['toolkit_over_bound'])} | "
                 f"{'pass' if p['ok'] else '**FAIL**'} |")
    L += _small_models_md(data) + _models_md(data) + _hessians_md(data) + _planning_md(data) + _overhead_md(data)
    for p in data["problems"]:
        shapes = ", ".join(f"{w} {tuple(s)}" for w, s in p["shapes"].items())
        b = p["bounds"]
        plan = p["plan"]
        fl = ", ".join(f"{o} {plan[o]['flops']:.3g}" if "flops" in plan[o] else f"{o}: {plan[o]['error']}"
                       for o in ("optimal", "forward", "reverse") if o in plan)
        if plan and all("error" in c for c in plan.values()) and len({c["error"] for c in plan.values()}) == 1:
            fl = f"none ({plan['optimal']['error']})"
        fl = fl or "– (a Hessian: no Jacobian plan)"
        L += ["", f"## {p['name']}", "", p["title"] + ".", ""]
        if p["notes"]:
            L += [p["notes"], ""]
        L += [f"Jacobians: {shapes}; {p['result_bytes'] / 2**20:.1f} MiB. Toolkit plan FLOPs: {fl}.",
              "",
              f"Lower bounds: write {_fmt_ms(b['write_ms'])} ms, FLOPs {_fmt_ms(b['flops_ms'])} ms; "
              f"max {_fmt_ms(b['bound_ms'])} ms — toolkit at {_fmt_ratio(b['toolkit_over_bound'])}x the bound. "
              f"(Writing the result into freshly mapped pages, as a new array does, takes "
              f"{_fmt_ms(b['fresh_write_ms'])} ms here.)",
              ""]
        odd = [r["label"] for r in p["rows"] if r.get("c_contiguous") is False]
        if odd:
            L += [f"Not C-contiguous (a transposed view is returned): {', '.join(odd)}.", ""]
        L += [
              "| implementation | first call ms | median ms | min–max ms | n | x numpy | x toolkit | peak MiB | max abs diff | check |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in p["rows"]:
            spread = f"{_fmt_ms(r['min_ms'])}–{_fmt_ms(r['max_ms'])}" if "min_ms" in r else "–"
            peak = f"{r['peak_mib']:.1f}" if "peak_mib" in r else ("error" if "memory_error" in r else "–")
            diff = "–" if r["max_abs_diff"] is None or math.isnan(r["max_abs_diff"]) else f"{r['max_abs_diff']:.1e}"
            check = _check(r)
            L.append(f"| {r['label']} | {_fmt_ms(r['first_call_ms'])} | {_fmt_ms(r.get('median_ms'))} | {spread} | "
                     f"{r['n']}{'x' + str(r['number']) if r.get('number', 1) > 1 else ''} | {_fmt_ratio(r.get('ratio_numpy'))} | {_fmt_ratio(r.get('ratio_toolkit'))} | "
                     f"{peak} | {diff} | {check} |")
        if p.get("reference") and p["reference"] != "toolkit-optimal":
            ref = _row(p, p["reference"])
            L.append(f"\nMax abs diff: against {ref['label'] if ref else p['reference']} (the toolkit gave no result).")
        for r in p["rows"]:
            if r.get("pending"):
                L.append(f"\n{r['label']}: not supported yet: {r['pending']}")
            if r.get("error"):
                L.append(f"\n**{r['label']} failed:** {r['error']}")
            elif not r["ok"]:
                L.append(f"\n**{r['label']} disagrees with the toolkit:** {r['diffs']}")
            if r.get("memory_error"):
                L.append(f"\n{r['label']}: {r['memory_error']}")
        for g in p.get("goals", ()):
            detail = f" ({g['detail']})" if g["detail"] else ""
            L.append(f"\n- goal: {g['goal']}: **{g['status']}**{detail}")
        for s in p["skipped"]:
            L.append(f"\n- {s}")
    path.write_text("\n".join(L) + "\n")


SMALL_ROWS = ("toolkit-optimal", "jax-jacrev", "jax-jacfwd", "torch-jacrev", "torch-jacfwd", "numpy")


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check(r: dict) -> str:
    if r.get("pending"):
        return "not supported yet"
    return "pass" if r["ok"] else "**FAIL**"


GROUP_ROWS = ("toolkit-optimal", "numpy", "jax-jacrev", "jax-jacfwd", "jax-hessian", "torch-jacrev", "torch-jacfwd",
              "torch-hessian")


def _rows_vs_best(p: dict, ids) -> list[tuple]:
    """Per implementation row of ``p`` (in ``ids`` order, absent ones skipped): the problem's name on
    the first row only, the row, whether it is the toolkit's, its median, its ratio to the fastest
    peer (formatted, bold for the toolkit) and its IQR (formatted)."""
    best, out = _fastest_peer(p), []
    for rid in ids:
        r = _row(p, rid)
        if r is None:
            continue
        med = r.get("median_ms")
        rat = _fmt_ratio(med / best["median_ms"] if med and best else None)
        tk = rid == "toolkit-optimal"
        iqr = f"{_fmt_ms(r['q1_ms'])}–{_fmt_ms(r['q3_ms'])}" if "q1_ms" in r else "–"
        out.append(("" if out else p["name"], r, tk, med, f"**{rat}**" if tk else rat, iqr))
    return out


def _group_md(data: dict, group: str, title: str, intro: str) -> list[str]:
    """The models / Hessians tables: every implementation's time, peak memory, check, then the goals."""
    problems = [p for p in data["problems"] if p.get("group") == group]
    if not problems:
        return []
    L = ["", f"## {title}", "", intro, "",
         "| problem | implementation | first call ms | median ms | IQR ms | n | x best peer | peak MiB | check |",
         "|---|---|---|---|---|---|---|---|---|"]
    for p in problems:
        for name, r, tk, med, rat, iqr in _rows_vs_best(p, GROUP_ROWS):
            peak = f"{r['peak_mib']:.1f}" if "peak_mib" in r else ("error" if "memory_error" in r else "–")
            check = f"not supported yet: {_short(r['pending'])}" if r.get("pending") else _check(r)
            L.append(f"| {name} | {'**' + r['label'] + '**' if tk else r['label']} | "
                     f"{_fmt_ms(r['first_call_ms'])} | {_fmt_ms(med)} | {iqr} | "
                     f"{r['n']}{'x' + str(r['number']) if r.get('number', 1) > 1 else ''} | "
                     f"{rat} | {peak} | {check} |")
    L += ["", "Goals (the issue's targets; toolkit row):", ""]
    for p in problems:
        result_mib = p["result_bytes"] / 2**20
        L.append(f"- {p['name']}: result {result_mib:.3g} MiB, inputs {p['input_bytes'] / 2**20:.3g} MiB"
                 + ("" if p.get("goals") else "; no goal set"))
        for g in p.get("goals", ()):
            L.append(f"  - {g['goal']}: **{g['status']}**" + (f" ({g['detail']})" if g["detail"] else ""))
    notes = [f"- {p['name']}: {s}" for p in problems for s in p["skipped"]]
    return L + ([""] + notes if notes else [])


def _models_md(data: dict) -> list[str]:
    return _group_md(data, "models", "Models (issue 9)",
                     "Per-sample Jacobians of real models as a user writes them (conv2d / max_pool2d, `E[ids]`, "
                     "`X[:, t]` and gate slices), against JAX jit(vmap(jacrev / jacfwd)) and torch.func vmap, "
                     "each checked before timing. Peak MiB: extra resident memory of one steady-state call, "
                     "alone in a subprocess. A toolkit row that raises for a feature still in another branch "
                     "reads \"not supported yet\" and the numpy closed form is then the reference.")


def _hessians_md(data: dict) -> list[str]:
    return _group_md(data, "hessians", "Hessians (issue 11)",
                     "`jac.hessian` (out + in + in) against jax.hessian = jit(jacfwd(jacrev)) (vmapped per "
                     "sample where per-sample), torch.func.hessian and numpy closed forms, each checked before "
                     "timing; peak memory as in the models table.")


def _small_models_md(data: dict) -> list[str]:
    problems = [p for p in data["problems"] if p["name"] in data.get("small_models", ())]
    if not problems:
        return []
    L = ["", "## Small models (repeat calls)", "",
         "Time per call after the warm-up: median of the interleaved repeats (each repeat loops short calls "
         "until it lasts 5 ms), the interquartile range and min-max of those repeats. `x best peer`: median / "
         "the fastest JAX or torch median (the toolkit's row is toolkit / best peer). Every row was checked "
         "against the toolkit's Jacobians before timing (the numpy closed form too); details per problem below.",
         "",
         "| model | implementation | median ms | IQR ms | min–max ms | n | x best peer | check |",
         "|---|---|---|---|---|---|---|---|"]
    for p in problems:
        for name, r, tk, med, rat, iqr in _rows_vs_best(p, SMALL_ROWS):
            spread = f"{_fmt_ms(r['min_ms'])}–{_fmt_ms(r['max_ms'])}" if "min_ms" in r else "–"
            label = f"**{r['label']}**" if tk else r["label"]
            L.append(f"| {name} | {label} | {_fmt_ms(med)} | {iqr} | {spread} | "
                     f"{r['n']}{'x' + str(r['number']) if r.get('number', 1) > 1 else ''} | "
                     f"{rat} | {'pass' if r['ok'] else '**FAIL**'} |")
    notes = [f"- {p['name']}: {s}" for p in problems for s in p["skipped"]]
    return L + ([""] + notes if notes else [])


def _planning_md(data: dict) -> list[str]:
    pl = data.get("planning")
    if not pl:
        return []
    L = ["", "## Planning time", "",
         f"`jf.plan(x)` of a tanh MLP chain (`tanh(linear(h, W_k, b_k))` per layer, width {pl['width']}, "
         f"B={pl['batch']}), per-sample d out / d x, default order, first call (a fresh process: no plan "
         f"cache); trace + plan, nothing contracted. Capped at {pl['timeout_s']:g} s per depth; once a depth "
         f"hits the cap the deeper ones are not run.",
         "",
         "| layers | plan s | plan FLOPs | strategy | status |",
         "|---|---|---|---|---|"]
    for r in pl["rows"]:
        t = f"{r['plan_s']:.3g}" if r.get("plan_s") is not None else "–"
        fl = f"{r['flops']:.3g}" if r.get("flops") is not None else "–"
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('note', '')}"
        L.append(f"| {r['layers']} | {t} | {fl} | {r.get('strategy', '–')} | {status} |")
    return L


def _overhead_md(data: dict) -> list[str]:
    ov = data.get("overhead")
    if not ov:
        return []
    L = ["", "## Fixed per-call overhead", "",
         f"{ov['problem']}. Each call timed alone, {ov['calls']} interleaved rounds after 50 warm-up calls; "
         f"median and IQR per call. `minus numpy`: median minus the numpy closed form's median — the fixed "
         f"cost of a call. **Toolkit fixed overhead: {ov['fixed_overhead_us']:.0f} µs per call.**",
         "",
         "| implementation | median µs | IQR µs | minus numpy µs | check |",
         "|---|---|---|---|---|"]
    for r in ov["rows"]:
        L.append(f"| {r['label']} | {r['median_us']:.1f} | {r['q1_us']:.1f}–{r['q3_us']:.1f} | "
                 f"{r['minus_numpy_us']:.1f} | {'pass' if r['ok'] else '**FAIL**'} |")
    notes = [f"- {s}" for s in ov["skipped"]]
    return L + ([""] + notes if notes else [])


def write_plot(data: dict, path: Path) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no plot"
    problems = data["problems"]
    if not problems:
        return "no problems in this run: no plot"
    canon = ["toolkit-optimal", "toolkit-forward", "toolkit-reverse", "numpy",
             "jax-jacrev", "jax-jacfwd", "torch-jacrev", "torch-jacfwd"]
    ids = list(dict.fromkeys(r["id"] for p in problems for r in p["rows"] if r.get("ratio_numpy")))
    ids.sort(key=lambda i: canon.index(i) if i in canon else len(canon))
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(problems)), 5))
    width = 0.8 / max(len(ids), 1)
    labels = {}
    for k, rid in enumerate(ids):
        xs, ys = [], []
        for j, p in enumerate(problems):
            r = _row(p, rid)
            if r and r.get("ratio_numpy"):
                xs.append(j + (k - (len(ids) - 1) / 2) * width)
                ys.append(r["ratio_numpy"])
                labels[rid] = r["label"] if r["kind"] in ("toolkit", "numpy") else \
                    rid.replace("-", " ") + (" (jit)" if r["kind"] == "jax" else "")
        ax.bar(xs, ys, width, label=labels.get(rid, rid))
    for j, p in enumerate(problems):
        npr = _row(p, "numpy")
        if npr and npr.get("median_ms"):
            ax.plot([j - 0.45, j + 0.45], [p["bounds"]["bound_ms"] / npr["median_ms"]] * 2, "k:", lw=1)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(problems)))
    ax.set_xticklabels([p["name"] for p in problems], rotation=20)
    ax.set_ylabel("median time / numpy closed form (log)")
    ax.set_title("Jacobian benchmarks, float64 (dotted: physical lower bound; peers vmapped per sample "
                 "where the problem is per-sample)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# ---------------------------------------------------------------- main

def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                 description="Benchmark the toolkit against numpy closed forms, JAX and PyTorch.")
    ap.add_argument("--quick", action="store_true", help="small sizes, few repeats (seconds)")
    ap.add_argument("--problems", nargs="+", metavar="NAME", choices=list(PROBLEMS), help="default: all")
    ap.add_argument("--repeats", type=int, help="timed calls per implementation (default 7, quick 3)")
    ap.add_argument("--no-peers", action="store_true", help="skip JAX and PyTorch")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for results.md/json/png (default: benchmarks/)")
    ap.add_argument("--budget", type=float, help="seconds of timed calls per implementation (default 20, quick 2)")
    ap.add_argument("--gap", type=float, default=0.02, help="idle seconds before each timed call")
    ap.add_argument("--only", metavar="TABLES",
                    help=f"comma-separated tables to run, of {','.join(SECTIONS)} (default: all; with --problems: "
                         f"only those problems)")
    ap.add_argument("--plan-layers", metavar="N,N,...",
                    help="depths of the planning-time chains (default 10,40,100; quick 3,6)")
    ap.add_argument("--plan-timeout", type=float, default=60.0,
                    help="seconds one planning depth may take before it is cut (default 60)")
    ap.add_argument("--overhead-calls", type=int,
                    help="timed rounds of the fixed-overhead problem (default 5000, quick 200)")
    ap.add_argument("--one", nargs=2, metavar=("PROBLEM", "IMPL"), help=argparse.SUPPRESS)
    ap.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--plan-one", nargs=3, type=int, metavar=("LAYERS", "WIDTH", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.only is None:
        args.sections = ["problems"] if args.problems else list(SECTIONS)
    else:
        asked = [t.strip() for t in args.only.split(",") if t.strip()]
        bad = [t for t in asked if t not in SECTIONS]
        if bad or not asked:
            ap.error(f"--only: unknown table {', '.join(map(repr, bad)) or '(none given)'}; "
                     f"valid: {', '.join(SECTIONS)}")
        args.sections = [t for t in SECTIONS if t in asked]
    try:
        layers = args.plan_layers or ("3,6" if args.quick else "10,40,100")
        args.plan_layers = [int(v) for v in layers.split(",")]
    except ValueError:
        ap.error(f"--plan-layers: expected comma-separated integers, got {args.plan_layers!r}")
    if any(v < 1 for v in args.plan_layers):
        ap.error("--plan-layers: every depth must be at least 1")
    if args.plan_timeout <= 0:
        ap.error("--plan-timeout must be positive")
    if args.overhead_calls is None:
        args.overhead_calls = 200 if args.quick else 5000
    if args.overhead_calls < 1:
        ap.error("--overhead-calls must be at least 1")
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if args.budget is None:
        args.budget = 2.0 if args.quick else 20.0
    return args


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.one:
        print(json.dumps(child_memory(args.one[0], args.one[1], args.quick, args.single)))
        return 0
    if args.plan_one:
        print(json.dumps(child_plan(*args.plan_one)))
        return 0

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.problems:
        names = list(args.problems)
    else:
        names = [n for n, p in PROBLEMS.items() if ("problems" in args.sections and p.group == "main")
                 or ("small" in args.sections and n in SMALL_MODELS)
                 or (p.group in ("models", "hessians") and p.group in args.sections)]
    t0 = time.perf_counter()
    problems, measured = [], None
    if names:
        log("measuring the machine (GEMM rate, bandwidth) ...")
        measured = measure_machine(args.quick)
        for name in names:
            log(f"{name}:")
            problems.append(run_problem(get(name), args, measured, log))
        log("measuring the machine again (the bounds use the better of the two measurements) ...")
        again = measure_machine(args.quick)
        best = {k: max(v, again[k]) if k.endswith("_per_s") else v for k, v in measured.items()}
        for p in problems:  # recompute the bounds with the best rates seen
            _bounds(p, best)
        measured = {**best, "start": measured, "end": again}
    planning = overhead = None
    if "planning" in args.sections:
        log("planning time:")
        planning = measure_planning(args, log)
    if "overhead" in args.sections:
        log("fixed per-call overhead:")
        overhead = measure_overhead(args, log)
    data = {"command": " ".join(["python -m benchmarks.run"] + argv),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_info(), "threads": peers.thread_info(), "measured": measured,
            "settings": {"quick": args.quick, "repeats": args.repeats, "budget_s": args.budget, "gap_s": args.gap,
                         "peers": not args.no_peers, "memory": not args.no_memory, "rtol": RTOL, "atol": ATOL},
            "sections": args.sections,
            "problems": problems,
            "small_models": [n for n in SMALL_MODELS if "small" in args.sections and n in names],
            "planning": planning, "overhead": overhead,
            "all_correct": all(p["ok"] for p in problems) and all(t["ok"] for t in (planning, overhead) if t),
            "wall_s": None}
    data["wall_s"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    write_markdown(data, args.out / "results.md")
    note = write_plot(data, args.out / "results.png")
    log(note or f"wrote {args.out / 'results.png'}")
    log(f"wrote {args.out / 'results.md'} and results.json in {data['wall_s']} s; "
        f"{'all checks passed' if data['all_correct'] else 'SOME CHECKS FAILED'}")
    return 0 if data["all_correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
