"""The AlphaGrad benchmark suite: vertex-elimination counts and runtime on the ten published tasks.

Usage (from the repository root)::

    python -m benchmarks.alphagrad                 # every task; writes benchmarks/results-alphagrad.{md,json}
    python -m benchmarks.alphagrad --quick         # short search, batch 16, one repeat, no JAX: seconds
    python -m benchmarks.alphagrad --tasks f g --search-time 5 --out /tmp/ag

Per task (:mod:`benchmarks.alphagrad_tasks`, one sample, the published inputs):

* **graph**: differentiated inputs, traced op nodes between them and the outputs, output arrays
  (the published column counts jaxpr equations: the traces differ in granularity);
* **multiplications** of the forward, reverse, Markowitz and searched (``order="optimal"``,
  ``search_time`` seconds) plans, counted the Graphax way by
  :func:`jacobians.elimination.multiplications`, next to the published counts, and each
  plan's FLOPs (the toolkit's own cost, which the search minimizes);
* **search time**: planning ``order="optimal"`` (trace, candidates, search) in seconds;
* **runtime** at batch 512 (``--batch``), per sample: ``jac.jacobian(f, wrt=every input,
  batched=the per-sample inputs)`` against JAX ``jit(vmap(jacfwd))`` and ``jit(vmap(jacrev))``
  (float64).  Every implementation's first call is checked against JAX's Jacobian (and the
  toolkit's per-sample Jacobian against ``jax.jacrev`` at the published inputs) before it is
  timed; then ``--repeats`` interleaved rounds, each sample looped to at least 5 ms; medians.

Goals (issue 13): forward and reverse within 10% of the published counts (or the convention
difference stated); the searched count at or below AlphaGrad's on at least 7 of 10 tasks with a
search under 10 s; toolkit runtime at or below JAX's best.  Each is marked met / missed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

import jacobians as jac
from jacobians.elimination import multiplications
from jacobians.graph import trace

from . import peers
from .alphagrad_tasks import TASKS, Task, jax_namespace
from .run import machine_info

HERE = Path(__file__).resolve().parent
ORDERS = ("forward", "reverse", "markowitz", "optimal")
RTOL, ATOL = 1e-7, 1e-10
MIN_SAMPLE_S = 0.005
SEARCH_GOAL_S = 10.0


# ---------------------------------------------------------------- flattening both sides' Jacobians

def toolkit_blocks(task: Task, J) -> dict:
    """``{(output k, wrt name): array}`` from ``jac.jacobian``'s nested result."""
    outs = J if isinstance(J, tuple) else (J,)
    return {(k, n): np.asarray(d[n]) for k, d in enumerate(outs) for n in task.wrt}


def jax_blocks(task: Task, J) -> dict:
    """The same keys from ``jax.jacrev(f, argnums=every wrt)``: outputs outside, arguments inside."""
    outs = J if isinstance(J, tuple) and isinstance(J[0], tuple) else (J,)
    return {(k, n): np.asarray(row[i]) for k, row in enumerate(outs) for i, n in enumerate(task.wrt)}


def agreement(mine: dict, ref: dict) -> tuple[bool, float, int]:
    """(agree?, max abs difference, entries compared): entries where the reference is finite (g has
    NaN outputs); shapes must match exactly."""
    worst, n, ok = 0.0, 0, True
    for key, r in ref.items():
        a = mine.get(key)
        if a is None or a.shape != r.shape:
            return False, math.inf, n
        fin = np.isfinite(r)
        if not fin.any():
            continue
        d = np.abs(a[fin] - r[fin])
        scale = float(np.abs(r[fin]).max())
        ok = ok and bool(np.all(np.isfinite(d))) and float(d.max()) <= RTOL * scale + ATOL
        worst, n = max(worst, float(d.max())), n + int(fin.sum())
    return ok, worst, n


def _jax_fn(task: Task):
    xp = jax_namespace()
    names = list(task.sample_args())

    def f(*args):
        return task.fn(*args, xp=xp)
    return f, names, tuple(names.index(n) for n in task.wrt)


def jax_reference(task: Task, args: dict) -> dict:
    """``jax.jacrev`` of the per-sample program at ``args`` (float64)."""
    import jax
    jax.config.update("jax_enable_x64", True)
    f, names, argnums = _jax_fn(task)
    J = jax.jacrev(f, argnums=argnums)(*[args[n] for n in names])
    return jax_blocks(task, J)


# ---------------------------------------------------------------- counts

def graph_size(task: Task, args: dict) -> tuple[int, int, int]:
    """(differentiated inputs, op nodes on a path from them to an output, output arrays)."""
    g = trace(task.fn, dict(args), list(task.wrt))
    sources = {g.inputs[n] for n in task.wrt}
    return len(task.wrt), len(g.between(sources) - sources), len(g.leaves)


def counts(task: Task, args: dict, search_time: float) -> dict:
    rows = {}
    for order in ORDERS:
        jf = jac.jacobian(task.fn, wrt=task.wrt, order=order,
                          search_time=search_time if order == "optimal" else None)
        t = time.perf_counter()
        plan = jf.plan(**args)
        dt = time.perf_counter() - t
        rows[order] = {"multiplications": multiplications(plan), "flops": int(plan.flops), "plan_s": dt,
                       "strategy": plan.strategy, "elimination": list(plan.elimination)}
    return rows


# ---------------------------------------------------------------- runtime

def runtime(task: Task, batch: int, repeats: int, search_time: float, use_jax: bool, log) -> dict:
    args = task.sample_args(batch)
    wrt_batched = tuple(n for n in task.batched if n in task.wrt)
    jf = jac.jacobian(task.fn, wrt=task.wrt, batched=wrt_batched, search_time=search_time)
    impls = {"toolkit": lambda: jf(**args)}
    to_blocks = {"toolkit": lambda J: toolkit_blocks(task, J)}
    res: dict = {"batch": batch, "rows": {}}
    if use_jax:
        import jax
        jax.config.update("jax_enable_x64", True)
        f, names, argnums = _jax_fn(task)
        in_axes = tuple(0 if n in task.batched else None for n in names)
        dev = [jax.device_put(args[n]) for n in names]
        for mode in ("jacfwd", "jacrev"):
            g = jax.jit(jax.vmap(getattr(jax, mode)(f, argnums=argnums), in_axes=in_axes))
            impls[f"jax-{mode}"] = (lambda g=g: jax.block_until_ready(g(*dev)))
            to_blocks[f"jax-{mode}"] = lambda J: jax_blocks(task, J)
    first, outs = {}, {}
    for name, call in impls.items():
        t = time.perf_counter()
        out = call()
        first[name] = time.perf_counter() - t
        outs[name] = to_blocks[name](out)
    ref = outs.get("jax-jacrev", outs["toolkit"])
    for name in impls:
        ok, worst, n = agreement(outs[name], ref)
        res["rows"][name] = {"first_call_s": first[name], "ok": ok, "max_abs_diff": worst, "compared": n}
    outs.clear()
    number = {}
    for name, call in impls.items():
        t = time.perf_counter()
        call()
        number[name] = max(1, math.ceil(MIN_SAMPLE_S / max(time.perf_counter() - t, 1e-9)))
    times: dict = {name: [] for name in impls}
    live = list(impls)
    for r in range(repeats):
        k = r % len(live)
        for name in live[k:] + live[:k]:
            call, n = impls[name], number[name]
            t = time.perf_counter()
            for _ in range(n):
                call()
            times[name].append((time.perf_counter() - t) / n)
    for name in impls:
        med = float(np.median(times[name]))
        res["rows"][name].update(median_s=med, per_sample_us=med / batch * 1e6, n=len(times[name]),
                                 number=number[name])
        log(f"    {name}: {med / batch * 1e6:.3f} us/sample ({'ok' if res['rows'][name]['ok'] else 'DISAGREES'})")
    return res


# ---------------------------------------------------------------- one task

def run_task(task: Task, args, log) -> dict:
    log(f"{task.name}:")
    sample = task.sample_args()
    res = {"name": task.name, "source": task.source, "notes": task.notes, "wrt": list(task.wrt),
           "published": {"graph": list(task.published[0]), "forward": task.published[1],
                         "reverse": task.published[2], "markowitz": task.published[3],
                         "alphagrad": task.published[4]}}
    res["graph"] = list(graph_size(task, sample))
    res["counts"] = counts(task, sample, args.search_time)
    c = res["counts"]
    log("  multiplications: " + ", ".join(f"{o} {c[o]['multiplications']}" for o in ORDERS)
        + f" (search {c['optimal']['plan_s']:.2f} s)")
    res["check"] = None
    if args.jax:
        mine = toolkit_blocks(task, jac.jacobian(task.fn, wrt=task.wrt, search_time=args.search_time)(**sample))
        ok, worst, n = agreement(mine, jax_reference(task, sample))
        res["check"] = {"ok": ok, "max_abs_diff": worst, "compared": n}
        log(f"  per-sample Jacobian vs jax.jacrev: {'ok' if ok else 'DISAGREES'} (max |diff| {worst:.2e}, {n} entries)")
    res["runtime"] = runtime(task, args.batch, args.repeats, args.search_time, args.jax, log) if args.batch else None
    res["goals"] = goals(res)
    res["ok"] = (res["check"] is None or res["check"]["ok"]) and \
        (res["runtime"] is None or all(r["ok"] for r in res["runtime"]["rows"].values()))
    return res


def goals(res: dict) -> dict:
    c, pub = res["counts"], res["published"]
    out = {}
    for mode in ("forward", "reverse"):
        ours, theirs = c[mode]["multiplications"], pub[mode]
        out[mode] = {"met": abs(ours - theirs) <= 0.1 * theirs, "ours": ours, "published": theirs,
                     "ratio": ours / theirs}
    searched = c["optimal"]["multiplications"]
    out["searched"] = {"met": searched <= pub["alphagrad"] and c["optimal"]["plan_s"] < SEARCH_GOAL_S,
                       "ours": searched, "alphagrad": pub["alphagrad"], "search_s": c["optimal"]["plan_s"]}
    rt = res.get("runtime")
    if rt and "jax-jacfwd" in rt["rows"]:
        best = min(rt["rows"][m]["per_sample_us"] for m in ("jax-jacfwd", "jax-jacrev"))
        ours = rt["rows"]["toolkit"]["per_sample_us"]
        out["runtime"] = {"met": ours <= best, "ours_us": ours, "jax_best_us": best, "ratio": ours / best}
    return out


# ---------------------------------------------------------------- report

def _mark(g: dict | None) -> str:
    return "n/a" if g is None else "met" if g["met"] else "missed"


def write_markdown(data: dict, path: Path) -> None:
    m = data["machine"]
    lines = ["# AlphaGrad benchmark suite (issue 13)", "",
             f"Generated by `{data['command']}` on {data['date']} in {data['wall_s']} s.", "",
             f"Machine: {m.get('cpu')}, {m.get('cores')} cores; Python {m.get('python')}, numpy {m.get('numpy')}, "
             f"opt_einsum {m.get('opt_einsum')}, jacobians {m.get('jacobians')}, JAX {m.get('jax') or 'not installed'}. "
             f"Threads: {data['threads']}.", "",
             f"Settings: search_time {data['settings']['search_time']} s, batch {data['settings']['batch']}, "
             f"{data['settings']['repeats']} interleaved repeats (medians), float64.", "",
             "Multiplications per sample, counted the Graphax way (`jacobians.elimination.multiplications`): "
             "ours / published. The graph column: differentiated inputs, traced op nodes, output arrays "
             "(ours; the published one counts jaxpr equations). `searched` is `order=\"optimal\"`: the cheapest "
             "in FLOPs of forward, reverse, Markowitz and the search (the count it minimizes is FLOPs, "
             "not multiplications). Gain: 1 - searched / min(forward, reverse), ours vs AlphaGrad's.", "",
             "| task | graph (ours / published) | forward | reverse | Markowitz | searched / AlphaGrad | gain ours / AG "
             "| FLOPs fwd / rev / searched | search s | goals fwd, rev, searched |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    met = 0
    for t in data["tasks"]:
        c, p, g = t["counts"], t["published"], t["goals"]
        mult = {o: c[o]["multiplications"] for o in ORDERS}
        gain = 1 - mult["optimal"] / min(mult["forward"], mult["reverse"])
        pgain = 1 - p["alphagrad"] / min(p["forward"], p["reverse"])
        met += g["searched"]["met"]
        lines.append(
            f"| {t['name']} | {','.join(map(str, t['graph']))} / {','.join(map(str, p['graph']))} "
            f"| {mult['forward']} / {p['forward']} | {mult['reverse']} / {p['reverse']} "
            f"| {mult['markowitz']} / {p['markowitz']} | {mult['optimal']} / {p['alphagrad']} "
            f"| {gain:+.0%} / {pgain:+.0%} "
            f"| {c['forward']['flops']} / {c['reverse']['flops']} / {c['optimal']['flops']} "
            f"| {c['optimal']['plan_s']:.2f} | {_mark(g['forward'])}, {_mark(g['reverse'])}, "
            f"{_mark(g['searched'])} |")
    n = len(data["tasks"])
    lines += ["", f"**Searched at or below AlphaGrad's count: {met} / {n} "
                  f"(goal: at least 7 of 10, search under {SEARCH_GOAL_S:.0f} s): "
                  f"{'met' if met >= 7 and n == 10 else 'missed' if n == 10 else 'n/a (not all tasks run)'}.**", ""]
    if any(t["runtime"] for t in data["tasks"]):
        lines += [f"Runtime at batch {data['settings']['batch']}, microseconds per sample (median of the "
                  "interleaved repeats; every row checked against JAX's `vmap(jacrev)` first):", "",
                  "| task | toolkit | JAX jit(vmap(jacfwd)) | JAX jit(vmap(jacrev)) | toolkit / JAX best | check "
                  "| goal |", "|---|---|---|---|---|---|---|"]
        rt_met = 0
        for t in data["tasks"]:
            rt = t["runtime"]
            if not rt:
                continue
            r = rt["rows"]
            cell = lambda k: f"{r[k]['per_sample_us']:.3f}" if k in r else "—"
            g = t["goals"].get("runtime")
            rt_met += bool(g and g["met"])
            check = "ok" if all(v["ok"] for v in r.values()) else "DISAGREES"
            lines.append(f"| {t['name']} | {cell('toolkit')} | {cell('jax-jacfwd')} | {cell('jax-jacrev')} "
                         f"| {g['ratio']:.2f} | {check} | {_mark(g)} |" if g else
                         f"| {t['name']} | {cell('toolkit')} | — | — | — | {check} | n/a |")
        lines += ["", f"**Runtime at or below JAX's best: {rt_met} / {n}.**", ""]
    lines += ["Per-task notes (where our program or count differs from the published one):", ""]
    for t in data["tasks"]:
        chk = t["check"]
        checked = f"per-sample Jacobian vs jax.jacrev: {'agrees' if chk['ok'] else 'DISAGREES'} " \
                  f"(max |diff| {chk['max_abs_diff']:.1e}, {chk['compared']} entries)" if chk else "not checked (no JAX)"
        lines.append(f"- **{t['name']}** (graphax `examples/{t['source']}`): {checked}. {t['notes']}")
    lines += ["", CONVENTION, ""]
    path.write_text("\n".join(lines))


CONVENTION = """Why forward and reverse counts differ from the published ones (the same for every task):
Graphax puts every jaxpr equation's Jacobian on an edge and multiplies it, including the
+-1 of add, subtract, negate and the ones of a sum; here those Jacobians are deltas (index
relabelings) and never multiplied, and constant factors such as `0.5 * x` are scalars folded into
one product.  The toolkit's forward is forward accumulation (tangents of every input pushed
through), its reverse one reverse sweep per output (the planner's modes), not Graphax's vertex
eliminations in topological order; the traced graphs have different granularity (a fused
`x @ W.T + b` against separate dot, transpose and broadcast equations).  So the counts are
comparable in kind, not equal; the gain column compares each method against its own best pure
mode.  See docs/elimination.md."""


# ---------------------------------------------------------------- main

def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.alphagrad", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="search 0.1 s, batch 16, one repeat, no JAX")
    ap.add_argument("--tasks", nargs="+", choices=list(TASKS), metavar="TASK", help="default: all ten")
    ap.add_argument("--search-time", type=float, help="seconds of the optimal search per task (default 5)")
    ap.add_argument("--batch", type=int, help="runtime batch (default 512, quick 16; 0: no runtime)")
    ap.add_argument("--repeats", type=int, help="interleaved timed rounds (default 7, quick 1)")
    ap.add_argument("--no-jax", action="store_true", help="no JAX check or JAX rows")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for results-alphagrad.{md,json}")
    args = ap.parse_args(argv)
    args.search_time = args.search_time or (0.1 if args.quick else 5.0)
    args.batch = (16 if args.quick else 512) if args.batch is None else args.batch
    args.repeats = args.repeats or (1 if args.quick else 7)
    args.jax = not (args.no_jax or args.quick) and peers.available("jax") is not None
    return args


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    tasks = [run_task(TASKS[n], args, log) for n in (args.tasks or TASKS)]
    data = {"command": " ".join(["python -m benchmarks.alphagrad"] + argv),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_info(), "threads": peers.thread_info(),
            "settings": {"quick": args.quick, "search_time": args.search_time, "batch": args.batch,
                         "repeats": args.repeats, "jax": args.jax, "rtol": RTOL, "atol": ATOL},
            "tasks": tasks, "all_correct": all(t["ok"] for t in tasks),
            "wall_s": round(time.perf_counter() - t0, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results-alphagrad.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    write_markdown(data, args.out / "results-alphagrad.md")
    log(f"wrote {args.out / 'results-alphagrad.md'} and .json in {data['wall_s']} s; "
        f"{'all checks passed' if data['all_correct'] else 'SOME CHECKS FAILED'}")
    return 0 if data["all_correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
