"""Peers: JAX and PyTorch Jacobians of the same problems, imported lazily.

Per-sample problems (``problem.peer_batched`` non-empty) are timed as

* JAX: ``jax.jit(jax.vmap(jax.jacrev(f, argnums), in_axes))`` and the same with ``jacfwd``;
* PyTorch: ``torch.func.vmap(torch.func.jacrev(f, argnums), in_dims)`` and ``jacfwd``;

with ``f`` the model of one sample.  Unbatched problems use plain
``jit(jacrev)`` / ``jit(jacfwd)`` and ``torch.func.jacrev`` / ``jacfwd`` of the
whole function (for batch norm that is the full ``(B, F, B, F)`` Jacobian).
Both run in float64 (``jax_enable_x64``; ``torch.float64`` tensors); integer inputs (token ids)
stay integers.  Hessian problems (``problem.kind == "hessian"``) are timed as
``jax.jit(jax.hessian(f))`` (``jacfwd(jacrev)``) and ``torch.func.hessian``,
vmapped per sample like the Jacobians.

Threads: numpy's BLAS, XLA's CPU pool and torch's intra-op pool all default
to every core; torch is set explicitly to numpy's BLAS thread count (or
``os.cpu_count()``) and the counts are recorded with the results.

A mode whose standard basis would be huge is skipped with a note, not run:
``jacfwd`` pushes one tangent per input element and ``jacrev`` pulls one
cotangent per output element, and both frameworks materialize that
``n x n`` identity (per sample, under ``vmap``); above :data:`BASIS_LIMIT`
bytes (e.g. forward mode w.r.t. every weight) the row is skipped.
"""

from __future__ import annotations

import importlib.util
import math
import os
import types
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["FRAMEWORKS", "Impl", "available", "make", "blas_threads", "thread_info"]

FRAMEWORKS = ("jax", "torch")
MODES = ("jacrev", "jacfwd")
BASIS_LIMIT = 1 << 30   # bytes of one n x n float64 standard basis


@dataclass
class Impl:
    """A timed implementation: ``call()`` runs it to completion; ``to_numpy(out)`` gives {wrt: ndarray}."""

    id: str
    label: str
    kind: str
    call: Callable[[], object]
    to_numpy: Callable[[object], dict]
    note: str = ""


def available(framework: str) -> str | None:
    """The framework's version, or None when it is not installed (nothing is imported to find out)."""
    if importlib.util.find_spec(framework) is None:
        return None
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(framework)
    except PackageNotFoundError:
        return "unknown"


def blas_threads() -> int | None:
    """numpy's BLAS thread count: threadpoolctl if installed, else OpenBLAS's own getter via ctypes."""
    try:
        from threadpoolctl import threadpool_info
        counts = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
        if counts:
            return counts[0]
    except ImportError:
        pass
    try:
        import ctypes
        libs = sorted({line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line.lower()})
        for path in libs:
            lib = ctypes.CDLL(path)
            for name in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                         "openblas_get_num_threads"):
                if hasattr(lib, name):
                    return int(getattr(lib, name)())
    except OSError:
        pass
    return None


def target_threads() -> int:
    return blas_threads() or os.cpu_count() or 1


def thread_info() -> dict:
    """Thread counts of every engine that is loaded (peers are not imported for this)."""
    import sys
    info = {"cpu_count": os.cpu_count(), "numpy_blas": blas_threads()}
    if "torch" in sys.modules:
        info["torch_intra_op"] = sys.modules["torch"].get_num_threads()
    if "jax" in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        info["jax_xla_cpu"] = (f"XLA_FLAGS={flags!r}" if "thread" in flags or "eigen" in flags
                               else f"XLA default: one intra-op thread per core ({os.cpu_count()})")
    return info


# ---------------------------------------------------------------- the ops namespaces

def _jax_ops():
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    return jax, jnp, types.SimpleNamespace(
        linear=lambda x, W, b=None: x @ W.T if b is None else x @ W.T + b,
        tanh=jnp.tanh, relu=jax.nn.relu, sigmoid=jax.nn.sigmoid, softmax=lambda t: jax.nn.softmax(t, axis=-1),
        log_softmax=lambda t: jax.nn.log_softmax(t, axis=-1), sqrt=jnp.sqrt, swap=lambda t: jnp.swapaxes(t, -1, -2),
        softplus=jax.nn.softplus, embed=lambda E, ids: E[ids],
        conv2d=lambda x, W, b: jax.lax.conv_general_dilated(      # one sample (C, H, W), PyTorch's layout
            x[None], W, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))[0] + b[:, None, None],
        max_pool2d=lambda h: jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2), (1, 2, 2), "VALID"))


def _torch_ops():
    import torch
    torch.set_num_threads(target_threads())
    return torch, types.SimpleNamespace(
        linear=lambda x, W, b=None: x @ W.T if b is None else x @ W.T + b,
        tanh=torch.tanh, relu=torch.relu, sigmoid=torch.sigmoid, softmax=lambda t: torch.softmax(t, dim=-1),
        log_softmax=lambda t: torch.log_softmax(t, dim=-1), sqrt=torch.sqrt, swap=lambda t: torch.transpose(t, -1, -2),
        softplus=torch.nn.functional.softplus, embed=lambda E, ids: torch.nn.functional.embedding(ids, E),
        conv2d=torch.nn.functional.conv2d, max_pool2d=lambda h: torch.nn.functional.max_pool2d(h, 2))


# ---------------------------------------------------------------- implementations

def _basis_elements(problem, inputs: dict, outputs: dict, mode: str) -> int:
    """Basis vectors per sample: input elements of every wrt (jacfwd) or output elements (jacrev)."""
    if mode == "jacfwd":
        total = 0
        for w in problem.wrt:
            shape = np.shape(inputs[w])
            total += math.prod(shape[1:] if w in problem.peer_batched else shape)
        return total
    ref = outputs[problem.wrt[0]]   # (*per-sample out, *in) -> out elements from the toolkit's layout
    in_shape = np.shape(inputs[problem.wrt[0]])
    in_shape = in_shape[1:] if problem.wrt[0] in problem.peer_batched else in_shape
    n_in = len(in_shape)
    per = ref.shape[1:] if problem.per_sample else ref.shape
    return math.prod(per[:len(per) - n_in])


def _array(v) -> np.ndarray:
    """float64, except integer arrays (token ids) which stay integers."""
    v = np.asarray(v)
    return np.array(v, dtype=None if np.issubdtype(v.dtype, np.integer) else np.float64, order="C")  # 0-d stays 0-d


def _label(framework: str, mode: str, per_sample: bool) -> str:
    if framework == "jax":
        return f"jax jit(vmap({mode}))" if per_sample else f"jax jit({mode})"
    return f"torch vmap({mode})" if per_sample else f"torch {mode}"


def plan_rows(problem, inputs: dict, outputs: dict, frameworks=FRAMEWORKS) -> tuple[list[tuple], list[str]]:
    """The peer rows to run, ``(id, framework, mode, label)``, and notes for the ones skipped."""
    rows, notes = [], []
    for fw in frameworks:
        ver = available(fw)
        if ver is None:
            hint = "pip install 'jax[cpu]'" if fw == "jax" else "pip install torch (a CPU build)"
            notes.append(f"{fw}: not installed, its rows are skipped ({hint})")
            continue
        if problem.kind == "hessian":  # jax.hessian = jit(jacfwd(jacrev)); torch.func.hessian likewise
            rows.append((f"{fw}-hessian", fw, "hessian", _label(fw, "hessian", problem.per_sample)))
            continue
        for mode in MODES:
            if f"{fw}-{mode}" in problem.skip_peers:
                notes.append(f"{_label(fw, mode, problem.per_sample)}: skipped, {problem.skip_peers[f'{fw}-{mode}']}")
                continue
            n = _basis_elements(problem, inputs, outputs, mode)
            if n * n * 8 > BASIS_LIMIT:
                notes.append(f"{_label(fw, mode, problem.per_sample)}: skipped, its standard basis has {n} "
                             f"vectors per {'sample' if problem.per_sample else 'call'} "
                             f"({n * n * 8 / 2**30:.1f} GiB as an n x n identity)")
                continue
            rows.append((f"{fw}-{mode}", fw, mode, _label(fw, mode, problem.per_sample)))
    return rows, notes


def make(problem, inputs: dict, framework: str, mode: str) -> Impl:
    """Build one peer implementation (imports the framework)."""
    peer_in = problem.peer_inputs(inputs)
    names = list(peer_in)
    argnums = tuple(names.index(w) for w in problem.wrt)
    label = _label(framework, mode, problem.per_sample)
    if framework == "jax":
        jax, jnp, ops = _jax_ops()

        def f(*args):
            return problem.peer_fn(ops, **dict(zip(names, args)))
        d = {"jacrev": jax.jacrev, "jacfwd": jax.jacfwd, "hessian": jax.hessian}[mode](f, argnums=argnums)
        if problem.per_sample:
            d = jax.vmap(d, in_axes=tuple(0 if n in problem.peer_batched else None for n in names))
        g = jax.jit(d)
        args = [jax.device_put(jnp.asarray(_array(peer_in[n]))) for n in names]

        def call():
            return jax.block_until_ready(g(*args))

        def to_numpy(out):
            if mode == "hessian":  # nested per argnum pair: the diagonal blocks
                return {w: np.asarray(out[k][k]) for k, w in enumerate(problem.wrt)}
            return {w: np.asarray(o) for w, o in zip(problem.wrt, out)}
        return Impl(f"jax-{mode}", label, "jax", call, to_numpy)
    if framework == "torch":
        torch, ops = _torch_ops()
        from torch.func import hessian, jacfwd, jacrev, vmap

        def f(*args):
            return problem.peer_fn(ops, **dict(zip(names, args)))
        d = {"jacrev": jacrev, "jacfwd": jacfwd, "hessian": hessian}[mode](f, argnums=argnums)
        if problem.per_sample:
            d = vmap(d, in_dims=tuple(0 if n in problem.peer_batched else None for n in names))
        args = [torch.from_numpy(_array(peer_in[n])) for n in names]

        def call():
            return d(*args)

        def to_numpy(out):
            if mode == "hessian":
                return {w: out[k][k].detach().numpy() for k, w in enumerate(problem.wrt)}
            return {w: o.detach().numpy() for w, o in zip(problem.wrt, out)}
        return Impl(f"torch-{mode}", label, "torch", call, to_numpy)
    raise ValueError(f"unknown framework {framework!r}")


def versions() -> dict:
    return {fw: available(fw) for fw in FRAMEWORKS}
