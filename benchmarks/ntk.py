"""Issue 14's benchmarks: the empirical NTK without forming J, and a Jacobian larger than a worker's memory.

Usage (from the repository root)::

    python -m benchmarks.ntk                    # writes benchmarks/results-ntk.{md,json}
    python -m benchmarks.ntk --quick            # small sizes: seconds
    python -m benchmarks.ntk --n 1000 --common-n 32 --nt-python /work/venvs/nt/bin/python

**(a) The NTK** of an MLP 784-512-512-10 (tanh, float64; 669,706 parameters) on ``N`` samples,
the full kernel ``Theta (N, N, 10, 10)`` of ``x`` against itself:

* ``toolkit``: ``jac.ntk(mlp, wrt=<all six>, batched="x")(x, None, *params)``;
* ``jax-jacobian-contraction``: ``jit(vmap(jacrev))`` for the per-sample ``J`` (N, 10, P) of every
  parameter, then ``jit`` of the einsum ``aop,bqp->abop`` summed over parameters (float64);
* ``nt-1``/``nt-2``/``nt-3``: neural-tangents' ``empirical_ntk_fn`` (``trace_axes=()``,
  ``vmap_axes=0``) with implementation 1 (Jacobian contraction), 2 (NTK-vector products) and 3
  (structured derivatives), run by the interpreter given as ``--nt-python`` (a separate venv:
  neural-tangents imports jax2tf) when it is given and imports.

Every row runs in its own subprocess (``--one IMPL N``): inputs built from one seed, one
warm-up call (reported as "first call": for the jitted rows trace + compile + one run), then
``--repeats`` timed calls, median reported; the peak memory is ``VmHWM - VmRSS`` around the last
call after resetting the kernel's peak mark (``/proc/self/clear_refs``), the result included.
Checked before timed: the toolkit's kernel at ``N = 6`` equals the explicit
``J J^T`` of ``jac.jacobian`` (max abs difference in the JSON), and every row returns a
fingerprint (the ``8 x 8`` sample corner of its kernel and its total) compared with the
toolkit's at the same ``N`` (relative difference <= 1e-9, else the row is marked wrong).
The Jacobian-contraction rows form ``J`` (N x 53.6 MB): they run at ``--common-n`` and at
``--baseline-n`` (the largest N where the JAX baseline's ``J`` fits here: 128, a 6.9 GB ``J``);
the large ``--n`` (the issue's 2,000) runs the rows whose memory allows it.

**(a') The NTK on a cluster**: ``jac.chunked_ntk(mlp, wrt=<all six>, batched="x", chunks=...)(x, None,
*params)`` at ``--dask-n`` samples on a ``LocalCluster`` of 2 worker processes (1 thread each) with
``--dask-worker-limit`` memory each -- below the kernel and far below the materialized per-sample
``J`` -- written with ``to_zarr`` into a temporary folder; wall time (building the graph included)
and each worker's peak resident memory (``ru_maxrss``).  Checked against the in-process
``jac.ntk``: the stored ``8 x 8`` sample corner and total against the ``toolkit`` row's
fingerprint at the same ``N`` (same inputs), an off-diagonal corner ``x[:8]`` against ``x[-8:]``,
and its mirror.

**(b) Larger than a worker's memory**: ``jac.chunked_jacobian`` of the same MLP w.r.t. every
parameter, ``(N, 10, P)`` per-sample, on a ``LocalCluster`` of 2 worker processes with
``--worker-limit`` memory each, written straight into a zarr group (one array per parameter) in
a temporary folder; wall time, the result's size and each worker's peak resident memory
(``ru_maxrss``) are reported, and samples read back from the store are checked against
``jac.jacobian``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .run import _reset_peak, _status   # the harness's own peak-RSS helpers

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIZES = (784, 512, 512, 10)
NAMES = ("W1", "b1", "W2", "b2", "W3", "b3")
IMPLS = ("toolkit", "jax-jacobian-contraction", "nt-1", "nt-2", "nt-3")
NT_NOTE = ("not run: no working install on this machine. neural-tangents 0.6.5 imports jax2tf (tensorflow) and jax "
           "internals removed after jax 0.4.2x (with jax 0.10 and 0.4.30 it fails on import or in implementation 3); "
           "jax 0.4.23 needs numpy < 2, which conflicted with tensorflow 2.21's ml_dtypes. Pass --nt-python to a "
           "venv where it imports.")


def inputs(n: int, seed: int = 14):
    r = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:]):
        params += [r.standard_normal((fan_out, fan_in)) / math.sqrt(fan_in), 0.1 * r.standard_normal(fan_out)]
    return r.standard_normal((n, SIZES[0])), params


def mlp(x, W1, b1, W2, b2, W3, b3):
    import jacobians as jac
    h = np.tanh(jac.fn.linear(x, W1, b1))
    h = np.tanh(jac.fn.linear(h, W2, b2))
    return jac.fn.linear(h, W3, b3)


def make(impl: str, x, params):
    """A zero-argument callable computing Theta (N, N, 10, 10) as a numpy-convertible array."""
    if impl == "toolkit":
        import jacobians as jac
        f = jac.ntk(mlp, wrt=NAMES, batched="x")
        return lambda: f(x, None, *params)
    import jax
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    p = [jnp.asarray(a) for a in params]
    xj = jnp.asarray(x)

    def apply(params, x):
        W1, b1, W2, b2, W3, b3 = params
        h = jnp.tanh(x @ W1.T + b1)
        h = jnp.tanh(h @ W2.T + b2)
        return h @ W3.T + b3

    if impl == "jax-jacobian-contraction":
        per_sample = jax.jit(jax.vmap(jax.jacrev(lambda ps, xi: apply(ps, xi[None])[0]), in_axes=(None, 0)))

        @jax.jit
        def contract(J1):
            return sum(jnp.einsum("ao...,bq...->aboq", j, j) if j.ndim == 3 else
                       jnp.einsum("aop,bqp->aboq", j.reshape(j.shape[0], j.shape[1], -1),
                                  j.reshape(j.shape[0], j.shape[1], -1)) for j in J1)
        return lambda: contract(per_sample(p, xj)).block_until_ready()
    import neural_tangents as nt
    which = {"nt-1": nt.NtkImplementation.JACOBIAN_CONTRACTION, "nt-2": nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
             "nt-3": nt.NtkImplementation.STRUCTURED_DERIVATIVES}[impl]
    kernel = jax.jit(nt.empirical_ntk_fn(apply, trace_axes=(), vmap_axes=0, implementation=which))
    # neural-tangents lays the kernel out (N1, N2, O1, O2), as the toolkit does
    return lambda: kernel(xj, None, p).block_until_ready()


def fingerprint(theta) -> dict:
    theta = np.asarray(theta)
    return {"shape": list(theta.shape), "corner": theta[:8, :8].ravel().tolist(), "total": float(theta.sum())}


def child(impl: str, n: int, repeats: int) -> dict:
    x, params = inputs(n)
    f = make(impl, x, params)
    t = time.perf_counter()
    out = f()
    first = time.perf_counter() - t
    fp = fingerprint(out)
    del out
    times = []
    peak = None
    for k in range(repeats):
        last = k == repeats - 1
        if last and _reset_peak():
            base = _status("VmRSS")
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
        if last and _status("VmHWM") is not None and base is not None:
            peak = _status("VmHWM") - base
        del out
    return {"impl": impl, "n": n, "first_s": first, "times_s": times, "median_s": float(np.median(times)),
            "peak_bytes": peak, "fingerprint": fp}


def run_child(impl: str, n: int, repeats: int, python: str, timeout: float) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    cmd = [python, "-m", "benchmarks.ntk", "--one", impl, str(n), "--repeats", str(repeats)]
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"impl": impl, "n": n, "error": f"over the {timeout:.0f} s limit of one row"}
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = p.stderr.strip().splitlines()[-1:] or [f"exit status {p.returncode}"]
        return {"impl": impl, "n": n, "error": f"failed (rc {p.returncode}): {tail[0][:300]}"}
    return json.loads(lines[-1])


def agrees(fp: dict, ref: dict) -> float:
    if fp["shape"] != ref["shape"]:
        return math.inf
    a, b = np.array(fp["corner"]), np.array(ref["corner"])
    return float(max(np.abs(a - b).max() / np.abs(b).max(), abs(fp["total"] - ref["total"]) / abs(ref["total"])))


def small_check() -> float:
    """The toolkit's kernel against the explicit J J^T of jac.jacobian, N = 6."""
    import jacobians as jac
    x, params = inputs(6)
    theta = jac.ntk(mlp, wrt=NAMES, batched="x")(x, None, *params)
    J = jac.jacobian(mlp, wrt=NAMES, batched="x")(x, *params)
    ref = sum(np.einsum("aop,bqp->aboq", J[k].reshape(6, 10, -1), J[k].reshape(6, 10, -1)) for k in NAMES)
    return float(np.abs(theta - ref).max())


# ---------------------------------------------------------------- (a') the NTK on a LocalCluster

def dask_ntk_row(n: int, chunk: int, worker_limit: str) -> dict:
    import dask.array as da
    import distributed
    import zarr

    import jacobians as jac
    from jacobians.limits import parse_bytes
    x, params = inputs(n)
    folder = tempfile.mkdtemp(prefix="jacobians-ntk-zarr-")
    try:
        with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                      memory_limit=worker_limit) as cluster, distributed.Client(cluster) as client:
            base = client.run(_peak_rss)
            t = time.perf_counter()
            theta = jac.chunked_ntk(mlp, wrt=NAMES, batched="x", chunks=chunk)(x, None, *params)
            tasks = len(theta.__dask_graph__())
            theta.to_zarr(folder, compute=True)
            wall = time.perf_counter() - t
            cluster_rss = client.run(_peak_rss)
            total = float(da.from_zarr(folder).sum().compute())
        stored = zarr.open_array(folder, mode="r")
        k = min(8, n)
        f = jac.ntk(mlp, wrt=NAMES, batched="x")
        off = f(x[:k], x[-k:], *params)
        diff_off = float(max(np.abs(stored[:k, n - k:] - off).max(),
                             np.abs(stored[n - k:, :k] - off.transpose(1, 0, 3, 2)).max()) / np.abs(off).max())
        fp = {"shape": list(stored.shape), "corner": stored[:8, :8].ravel().tolist(), "total": total}
        disk = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"n": n, "chunk": chunk, "workers": 2, "worker_limit_bytes": parse_bytes(worker_limit),
            "kernel_bytes": n * n * 100 * 8, "j_bytes": n * 10 * 669706 * 8, "graph_tasks": tasks,
            "wall_s": wall, "stored_bytes": int(disk), "worker_peak_rss_bytes": sorted(cluster_rss.values()),
            "worker_start_rss_bytes": sorted(base.values()), "fingerprint": fp, "off_diagonal_rel_diff": diff_off}


# ---------------------------------------------------------------- (b) dask into zarr

def _peak_rss() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def zarr_row(n: int, chunk: int, worker_limit: str) -> dict:
    import dask
    import dask.array as da
    import distributed
    import zarr

    import jacobians as jac
    from jacobians.limits import parse_bytes
    x, params = inputs(n, seed=15)
    folder = tempfile.mkdtemp(prefix="jacobians-zarr-")
    try:
        with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                      memory_limit=worker_limit) as cluster, distributed.Client(cluster) as client:
            base = client.run(_peak_rss)
            t = time.perf_counter()
            J = jac.chunked_jacobian(mlp, wrt=NAMES, batched="x", chunks={"batch": chunk})(x, *params)
            nbytes = sum(J[k].nbytes for k in NAMES)
            root = zarr.open_group(folder, mode="w")
            dask.compute(*[J[k].to_zarr(folder, component=k, compute=False) for k in NAMES])
            wall = time.perf_counter() - t
            peaks = client.run(_peak_rss)
        stored = zarr.open_group(folder, mode="r")
        pick = [0, n // 2, n - 1]
        ref = jac.jacobian(mlp, wrt=NAMES, batched="x")(x[pick], *params)
        diff = max(float(np.abs(stored[k][pick] - ref[k]).max()) for k in NAMES)
        disk = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
        del root
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"n": n, "chunk": chunk, "workers": 2, "worker_limit_bytes": parse_bytes(worker_limit),
            "result_bytes": int(nbytes), "stored_bytes": int(disk), "wall_s": wall,
            "worker_peak_rss_bytes": sorted(peaks.values()), "worker_start_rss_bytes": sorted(base.values()),
            "check_max_abs_diff": diff, "checked_samples": pick}


# ---------------------------------------------------------------- report

def gb(n) -> str:
    return "n/a" if n is None else f"{n / 1e9:.2f} GB"


def write_md(data: dict, path: Path) -> None:
    m = data["machine"]
    lines = ["# NTK and larger-than-memory benchmarks (issue 14)", "",
             f"Generated by `python -m benchmarks.ntk` on {data['date']}: {m.get('cpu')}, {m.get('cores')} cores, "
             f"{gb(m.get('ram_bytes'))} RAM, numpy {m.get('numpy')}, opt_einsum {m.get('opt_einsum')}, "
             f"jax {m.get('jax') or 'absent'}, neural-tangents {data.get('neural_tangents') or 'not run'}, "
             f"dask {data.get('dask_version') or 'absent'}, zarr {data.get('zarr_version') or 'absent'}. "
             "A shared machine: compare rows within this run.", "",
             f"Checked before timed: the toolkit's kernel at N = 6 against the explicit `J J^T` from "
             f"`jac.jacobian`: max abs difference {data['small_check']:.1e}. Every other row's kernel is compared "
             "with the toolkit's at the same N (corner and total, relative).", "",
             "## (a) Empirical NTK, MLP 784-512-512-10, float64, full kernel (N, N, 10, 10)", "",
             "| N | kernel | implementation | first call | median | repeats | peak memory | vs toolkit | check |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n, rows in data["ntk"].items():
        tk = rows.get("toolkit", {}).get("median_s")
        for impl, r in rows.items():
            kernel = gb(int(n) ** 2 * 100 * 8)
            if "error" in r:
                lines.append(f"| {n} | {kernel} | {impl} | | | | | | {r['error']} |")
                continue
            ratio = f"{r['median_s'] / tk:.2f}x" if tk and impl != "toolkit" else ""
            lines.append(f"| {n} | {kernel} | {impl} | {r['first_s']:.2f} s | {r['median_s']:.2f} s | "
                         f"{len(r['times_s'])} | {gb(r['peak_bytes'])} | {ratio} | {r.get('check', 'reference')} |")
    if data.get("neural_tangents_note"):
        lines += ["", f"neural-tangents: {data['neural_tangents_note']}"]
    lines += ["", "Goals (issue 14, at the issue's N = 2,000 where the row ran):", ""]
    for g in data["goals"]:
        lines.append(f"- **{g['status']}**: {g['goal']} — {g['detail']}")
    d = data.get("dask_ntk")
    if d:
        lines += ["", "## (a') The same NTK as dask tasks on a LocalCluster, into zarr", ""]
        if "error" in d:
            lines.append(f"Failed: {d['error']}")
        else:
            lines += ["| N | kernel | materialized J | workers x limit | chunk | tasks | wall time | stored on disk "
                      "| peak RSS per worker | check |", "|---|---|---|---|---|---|---|---|---|---|",
                      f"| {d['n']} | {gb(d['kernel_bytes'])} | {gb(d['j_bytes'])} | {d['workers']} x "
                      f"{gb(d['worker_limit_bytes'])} | {d['chunk']} x {d['chunk']} samples | {d['graph_tasks']} | "
                      f"{d['wall_s']:.1f} s | {gb(d['stored_bytes'])} | "
                      f"{', '.join(gb(b) for b in d['worker_peak_rss_bytes'])} | {d.get('check', 'n/a')} |", "",
                      f"`jac.chunked_ntk(mlp, wrt=<all six>, batched='x', chunks={d['chunk']})(x, None, *params)"
                      ".to_zarr(path)` on a `LocalCluster(n_workers=2, processes=True, threads_per_worker=1, "
                      "memory_limit=...)`: one task per block's reverse sweep, one per pair of blocks on and above "
                      "the diagonal, the blocks below are their transposes; the wall time includes building the "
                      "graph. Check: the stored kernel's 8 x 8 sample corner and total against the in-process "
                      "`toolkit` row at the same N (same inputs), and the off-diagonal corner `x[:8]` vs `x[-8:]` "
                      "and its mirror against `jac.ntk` (relative). Peak RSS is each worker's `ru_maxrss` at the "
                      f"end (at start: {', '.join(gb(b) for b in d['worker_start_rss_bytes'])})."]
    z = data.get("zarr")
    if z:
        lines += ["", "## (b) A per-sample Jacobian larger than a worker's memory, straight into zarr", ""]
        if "error" in z:
            lines.append(f"Failed: {z['error']}")
        else:
            lines += ["| samples | result | workers x limit | chunk | wall time | stored on disk | peak RSS per worker "
                      "| check |", "|---|---|---|---|---|---|---|---|",
                      f"| {z['n']} | {gb(z['result_bytes'])} | {z['workers']} x {gb(z['worker_limit_bytes'])} | "
                      f"{z['chunk']} samples | {z['wall_s']:.1f} s | {gb(z['stored_bytes'])} | "
                      f"{', '.join(gb(b) for b in z['worker_peak_rss_bytes'])} | max abs diff "
                      f"{z['check_max_abs_diff']:.1e} on samples {z['checked_samples']} |", "",
                      f"`jac.chunked_jacobian(mlp, wrt=<all six>, batched='x', chunks={{'batch': {z['chunk']}}})` on a "
                      "`LocalCluster(n_workers=2, processes=True, threads_per_worker=1, memory_limit=...)`, each "
                      "parameter's `(N, 10, *P)` array written with `to_zarr` (zarr's default compression); "
                      "peak RSS is each worker's `ru_maxrss` at the end (their RSS at start: "
                      f"{', '.join(gb(b) for b in z['worker_start_rss_bytes'])})."]
    path.write_text("\n".join(lines) + "\n")


def goals(data: dict, big: int) -> list[dict]:
    out = []
    rows = data["ntk"].get(str(big), {})
    tk = rows.get("toolkit", {})
    nts = {k: r for k, r in rows.items() if k.startswith("nt-") and "median_s" in r and r.get("check") == "ok"}
    if "median_s" not in tk:
        return [{"goal": "the NTK at N = %d" % big, "status": "missed", "detail": tk.get("error", "not run")}]
    if nts:
        best = min(nts, key=lambda k: nts[k]["median_s"])
        met = tk["median_s"] < nts[best]["median_s"]
        out.append({"goal": "faster than neural-tangents' best implementation (CPU, float64)",
                    "status": "met" if met else "missed",
                    "detail": f"N = {big}: toolkit {tk['median_s']:.2f} s, {best} {nts[best]['median_s']:.2f} s"})
    else:
        why = "; ".join(f"{k}: {r['error']}" for k, r in rows.items() if k.startswith("nt-") and "error" in r)
        out.append({"goal": "faster than neural-tangents' best implementation (CPU, float64)", "status": "not measured",
                    "detail": f"neural-tangents did not run at N = {big}" + (f" ({why})" if why else "")})
    base = rows.get("jax-jacobian-contraction", {})
    if "median_s" in base:
        ratio = base["median_s"] / tk["median_s"]
        out.append({"goal": "at least 2x faster than the JAX Jacobian-contraction baseline",
                    "status": "met" if ratio >= 2 else "missed",
                    "detail": f"N = {big}: {ratio:.1f}x"})
    else:
        ran = [int(n) for n, r in data["ntk"].items() if r.get("jax-jacobian-contraction", {}).get("check") == "ok"
               and "median_s" in r.get("toolkit", {})]
        common = max(ran) if ran else data["common_n"]
        c = data["ntk"].get(str(common), {})
        ratio = (c.get("jax-jacobian-contraction", {}).get("median_s") or math.nan) / \
            (c.get("toolkit", {}).get("median_s") or math.nan)
        others = ", ".join(f"N = {n}: {data['ntk'][str(n)]['jax-jacobian-contraction']['median_s'] / data['ntk'][str(n)]['toolkit']['median_s']:.1f}x"
                           for n in sorted(ran) if n != common)
        out.append({"goal": "at least 2x faster than the JAX Jacobian-contraction baseline",
                    "status": ("met at N = %d" % common) if ratio >= 2 else ("missed at N = %d" % common),
                    "detail": f"the baseline cannot run at N = {big} (its J alone is {gb(big * 10 * 669706 * 8)}; "
                              f"{base.get('error', 'not run')}); at N = {common}, the largest N it ran: {ratio:.1f}x"
                              + (f" ({others})" if others else "")})
    kernel = big * big * 100 * 8
    if tk.get("peak_bytes") is not None:
        out.append({"goal": "peak memory under 2x the kernel plus one chunk", "status":
                    "met" if tk["peak_bytes"] < 2 * kernel else "missed",
                    "detail": f"N = {big}: peak {gb(tk['peak_bytes'])} (result included), kernel {gb(kernel)}"})
    goal = "the same NTK on a LocalCluster (dask) with a per-worker limit below the materialized J"
    d = data.get("dask_ntk")
    if not d:
        out.append({"goal": goal, "status": "not measured", "detail": "the row was not run (--no-dask-ntk)"})
    elif "error" in d:
        out.append({"goal": goal, "status": "missed", "detail": d["error"]})
    else:
        met = d.get("check") == "ok" and d["worker_limit_bytes"] < d["j_bytes"]
        same = "" if d["n"] == big else f" (the in-process rows: N = {big})"
        out.append({"goal": goal, "status": "met" if met else "missed",
                    "detail": f"N = {d['n']}{same}: {d['wall_s']:.1f} s on 2 workers x {gb(d['worker_limit_bytes'])} "
                              f"(materialized J {gb(d['j_bytes'])}, kernel {gb(d['kernel_bytes'])}), peak RSS per "
                              f"worker {', '.join(gb(b) for b in d['worker_peak_rss_bytes'])}; check {d.get('check')}"})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ntk")
    ap.add_argument("--one", nargs=2, metavar=("IMPL", "N"))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--common-n", type=int, default=32)
    ap.add_argument("--baseline-n", type=int, default=128, help="the largest N of the J-forming rows")
    ap.add_argument("--dask-n", type=int, default=2000)
    ap.add_argument("--dask-chunk", type=int, default=250)
    ap.add_argument("--dask-worker-limit", default="1GiB")
    ap.add_argument("--no-dask-ntk", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--nt-python", default=None)
    ap.add_argument("--row-timeout", type=float, default=900)
    ap.add_argument("--zarr-n", type=int, default=80)
    ap.add_argument("--zarr-chunk", type=int, default=4)
    ap.add_argument("--worker-limit", default="1GiB")
    ap.add_argument("--no-zarr", action="store_true")
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--render", action="store_true", help="rewrite results-ntk.md from results-ntk.json")
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(child(args.one[0], int(args.one[1]), args.repeats)))
        return 0
    if args.render:
        write_md(json.loads((Path(args.out) / "results-ntk.json").read_text()), Path(args.out) / "results-ntk.md")
        return 0
    if args.quick:
        args.n, args.common_n, args.baseline_n, args.repeats, args.zarr_n = 64, 8, 16, 2, 4
        args.dask_n, args.dask_chunk = 64, 16
    from .run import machine_info
    data = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(),
            "argv": sys.argv[1:], "common_n": args.common_n, "baseline_n": args.baseline_n, "n": args.n, "ntk": {}}
    for mod in ("dask", "zarr"):
        try:
            data[mod + "_version"] = __import__(mod).__version__
        except ImportError:
            data[mod + "_version"] = None
    data["small_check"] = small_check()
    print(f"small check: {data['small_check']:.2e}", flush=True)
    nt_ok = False
    if args.nt_python:
        p = subprocess.run([args.nt_python, "-c", "import neural_tangents as nt; print(nt.__version__)"],
                           capture_output=True, text=True)
        nt_ok = p.returncode == 0
        data["neural_tangents"] = p.stdout.strip() if nt_ok else None
        if not nt_ok:
            data["neural_tangents_error"] = (p.stderr.strip().splitlines() or ["?"])[-1]
    failed = False
    if not args.nt_python:
        data["neural_tangents_note"] = NT_NOTE
    elif not nt_ok:
        data["neural_tangents_note"] = f"not run: {args.nt_python} failed to import it: {data['neural_tangents_error']}"
    for n in dict.fromkeys(sorted({args.common_n, args.baseline_n, args.n})):
        rows = {}
        for impl in IMPLS:
            if impl.startswith("nt-") and not nt_ok:
                continue
            if impl in ("jax-jacobian-contraction", "nt-1") and n > max(args.common_n, args.baseline_n):
                rows[impl] = {"impl": impl, "n": n, "error": f"not run: J alone would be {gb(n * 10 * 669706 * 8)}"}
                continue
            python = args.nt_python if impl.startswith("nt-") else sys.executable
            r = run_child(impl, n, args.repeats, python, args.row_timeout)
            if "fingerprint" in r and impl != "toolkit" and "fingerprint" in rows.get("toolkit", {}):
                d = agrees(r["fingerprint"], rows["toolkit"]["fingerprint"])
                r["check"] = "ok" if d <= 1e-9 else f"WRONG (rel. diff {d:.1e})"
                r["check_rel_diff"] = d
                failed |= d > 1e-9
            rows[impl] = r
            print(n, impl, r.get("median_s", r.get("error")), flush=True)
        data["ntk"][str(n)] = rows
    if not args.no_dask_ntk:
        try:
            d = dask_ntk_row(args.dask_n, args.dask_chunk, args.dask_worker_limit)
            ref = data["ntk"].get(str(d["n"]), {}).get("toolkit", {}).get("fingerprint")
            worst = max(agrees(d["fingerprint"], ref) if ref else math.nan, d["off_diagonal_rel_diff"])
            d["check_rel_diff"] = worst
            d["check"] = "ok" if worst <= 1e-9 else (f"WRONG (rel. diff {worst:.1e})" if ref else
                                                     "no in-process row at this N to compare")
            failed |= not worst <= 1e-9
        except Exception as e:  # reported in the table, and the run fails
            d = {"error": f"{type(e).__name__}: {e}"[:300]}
            failed = True
        data["dask_ntk"] = d
        print("dask ntk", {k: v for k, v in d.items() if k != "fingerprint"}, flush=True)
    data["goals"] = goals(data, args.n)
    if not args.no_zarr:
        try:
            data["zarr"] = zarr_row(args.zarr_n, args.zarr_chunk, args.worker_limit)
        except Exception as e:  # reported in the table, and the run fails
            data["zarr"] = {"error": f"{type(e).__name__}: {e}"[:300]}
            failed = True
        print("zarr", data["zarr"], flush=True)
    out = Path(args.out)
    (out / "results-ntk.json").write_text(json.dumps(data, indent=1))
    write_md(data, out / "results-ntk.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
