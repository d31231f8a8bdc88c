"""Hessians of whole functions (issue 11), table-driven over the op specs of ``test_ops``.

Every op with a second-order rule: its Hessian blocks (every pair of arguments) against central
differences of its first-order Jacobian (``check_jacobian(..., order=2)``), batched and unbatched,
and against ``jax.hessian`` to 1e-10 when JAX is installed; composed networks (chains, fan-out,
skip connections), x^T A x, a logistic-regression loss and CS224n's one-layer network.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import jacobians as jac
from jacobians.ops import OPS
from jacobians.second import SECOND
from jacobians.testing import check_hessian, check_jacobian
from test_ops import SPECS, Spec, make_args


def _lean(specs):
    """Every spec, except that an elementwise op keeps its first two shapes per parameter set
    (the others differ only in shape, which the first-order table covers)."""
    kept, count = [], {}
    for s in specs:
        key = (s.op, repr(sorted(s.params.items(), key=str)), len(s.args))
        count[key] = count.get(key, 0) + 1
        if OPS[s.op].row is None or OPS[s.op].row.arity == 2 or count[key] <= 2:
            kept.append(s)
    return kept


RULED = _lean([s for s in SPECS if s.op in SECOND])
CASES = [pytest.param(s, True, id=s.id + "-batch") for s in RULED if s.batched is not None] \
    + [pytest.param(s, False, id=s.id + "-nobatch") for s in RULED if s.unbatched is not None]


def op_function(spec: Spec, args: list):
    """The op as a traced function of its differentiable array arguments, and their values."""
    op = OPS[spec.op]
    arrays, params = op.bind(args, spec.params)
    names = [n for n in op.diff_arrays if arrays.get(n) is not None]
    fixed = {n: a for n, a in arrays.items() if n not in names}
    traced = getattr(jac.fn, spec.op)

    def f(*values):
        return traced(**fixed, **dict(zip(names, values)), **params)
    f.__name__ = spec.op
    f.__signature__ = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                         for n in names])
    return f, names, [arrays[n] for n in names], arrays, params


def test_every_op_has_a_second_order_rule():
    missing = sorted(set(OPS) - set(SECOND))
    assert not missing, f"ops without a second-order rule: {missing}"


def test_an_op_without_a_rule_says_so(monkeypatch):
    spec = next(s for s in SPECS if s.op == "layer_norm" and s.unbatched is not None)
    f, names, values, _, _ = op_function(spec, make_args(spec))
    monkeypatch.delitem(SECOND, "layer_norm")
    with pytest.raises(NotImplementedError, match="^layer_norm: no second-order rule"):
        jac.hessian(f, wrt=names[0])(*values)


@pytest.mark.parametrize("spec, batch", CASES)
def test_hessian_against_differences(spec: Spec, batch: bool):
    args = make_args(spec)
    f, names, values, arrays, _ = op_function(spec, args)
    results = check_jacobian(spec.op, *args, batch=batch, order=2, **spec.params)   # eps= is the op's own
    assert len(results) == len(names) ** 2
    for r in results:
        assert r.max_rel_error < 1e-6, str(r)


# ---------------------------------------------------------------- every op inside a network

def composed(spec: Spec, args: list):
    """``sin(op(u + u**3 / 5, ...))`` of the op's differentiable arguments: the op's first-order forms
    (index maps included) applied to the Hessians of its arguments, its second derivative to their
    Jacobians, and its Jacobian under the output's Hessian.  The inner map keeps each argument's
    domain (positive stays positive, SPD stays SPD by Schur's product theorem, signs away from 0 keep, (-0.8, 0.8) stays inside (-1, 1))."""
    f, names, values, arrays, params = op_function(spec, args)

    def g(*v):
        return jac.fn.sin(f(*[u + 0.2 * u * u * u for u in v]))
    g.__name__ = f"sin({spec.op}(u + u^3 / 5))"
    g.__signature__ = f.__signature__
    op = OPS[spec.op]
    batched = next((n for n in op.data if n in names and arrays[n].ndim > op.core.get(n, 0)), None)
    return g, names, values, batched


def _has_0d(spec: Spec) -> bool:
    return any(a is not None and not isinstance(a, str) and a.shape == () and a.kind != "mask" for a in spec.args)


# 0-d arguments are left out: the first-order jacobian of e.g. abs(x * x) at a 0-d x fails in
# execute.py ("output array is read-only", a numpy scalar's read-only 0-d array added into), which
# check_hessian's differences call
COMPOSED = []   # the first spec of each op in each mode (the op alone is swept over every spec above);
for _s in RULED:   # elementwise rows through three of them (differences of exp(u + u^3/5) lose digits)
    if OPS[_s.op].row is not None and _s.op not in ("tanh", "multiply", "divide"):
        continue
    for _b, _mode in ((True, _s.batched), (False, _s.unbatched)):
        if _mode is not None and not _has_0d(_s) and (_s.op, _b) not in {(c.values[0].op, c.values[1]) for c in COMPOSED}:
            COMPOSED.append(pytest.param(_s, _b, id=_s.id + ("-batch" if _b else "-nobatch")))


@pytest.mark.parametrize("spec, batch", COMPOSED)
def test_composed_hessian_against_differences(spec: Spec, batch: bool):
    g, names, values, batched = composed(spec, make_args(spec))
    results = check_hessian(g, *values, wrt=tuple(names), batched=batched if batch else None)
    assert len(results) == len(names) ** 2
    for r in results:
        assert r.max_rel_error < 1e-6, str(r)


# ---------------------------------------------------------------- JAX, op by op

def _jax_ops(jax, jnp):
    nn, sp = jax.nn, jax.scipy.special
    table = {n: getattr(jnp, n) for n in (
        "exp", "expm1", "exp2", "log", "log1p", "log2", "log10", "sqrt", "cbrt", "square", "reciprocal",
        "negative", "sign", "sin", "cos", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
        "arcsinh", "arccosh", "arctanh", "add", "subtract", "multiply", "divide", "arctan2", "logaddexp",
        "hypot", "matmul", "kron", "einsum", "trace", "diagonal", "reshape", "transpose", "sum", "mean")}
    table.update(
        erf=sp.erf, erfc=sp.erfc, sigmoid=nn.sigmoid, log_sigmoid=nn.log_sigmoid, softplus=nn.softplus,
        silu=nn.silu, swish=nn.silu, relu=nn.relu,
        power=lambda x, p: jnp.power(x, p),
        gelu=lambda x, approximate="none": nn.gelu(x, approximate=approximate == "tanh"),
        leaky_relu=lambda x, alpha=0.01: nn.leaky_relu(x, negative_slope=alpha),
        linear=lambda x, W, b=None: x @ W.T + (0 if b is None else b),
        dot=lambda a, b: jnp.sum(a * b, axis=-1),
        outer=lambda a, b: a[..., :, None] * b[..., None, :],
        softmax=lambda x: nn.softmax(x, axis=-1), log_softmax=lambda x: nn.log_softmax(x, axis=-1),
        logsumexp=lambda x: sp.logsumexp(x, axis=-1),
        mse=lambda yhat, y: 0.5 * jnp.sum((yhat - y) ** 2, axis=-1),
        cross_entropy=lambda phat, p: -jnp.sum(p * jnp.log(phat), axis=-1),
        maximum=jnp.maximum, minimum=jnp.minimum, abs=jnp.abs,
        where=lambda c, x, y: jnp.where(c != 0, x, y),
        clip=lambda x, lo=None, hi=None: jnp.clip(x, lo, hi),
        amax=lambda x, axis=None, keepdims=False: jnp.max(x, axis=axis, keepdims=keepdims),
        amin=lambda x, axis=None, keepdims=False: jnp.min(x, axis=axis, keepdims=keepdims),
    )
    lax = jax.lax

    def key_of(key):
        return tuple(np.asarray(k) if isinstance(k, list) else k for k in key) if isinstance(key, tuple) else key

    def conv(x, W, b=None, stride=1, padding=0, dilation=1):
        nd = W.ndim - 2
        tup = lambda v: (v,) * nd if isinstance(v, int) else tuple(v)
        xb = x if x.ndim == nd + 2 else x[None]
        spec = ("NCH", "OIH", "NCH") if nd == 1 else ("NCHW", "OIHW", "NCHW")
        y = lax.conv_general_dilated(xb, W, tup(stride), [(p, p) for p in tup(padding)], rhs_dilation=tup(dilation),
                                     dimension_numbers=spec)
        y = y if b is None else y + b.reshape((-1,) + (1,) * nd)
        return y if x.ndim == nd + 2 else y[0]

    def pool(x, kernel_size, stride=None, padding=0, kind="max", count_include_pad=True):
        two = lambda v: (v, v) if isinstance(v, int) else tuple(v)
        k, p = two(kernel_size), two(padding)
        s = k if stride is None else two(stride)
        pads = ((0, 0), (0, 0)) + tuple((q, q) for q in p)
        if kind == "max":
            return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1) + k, (1, 1) + s, pads)
        total = lax.reduce_window(x, 0.0, lax.add, (1, 1) + k, (1, 1) + s, pads)
        div = k[0] * k[1] if count_include_pad else \
            lax.reduce_window(jnp.ones(x.shape[2:]), 0.0, lax.add, k, s, pads[2:])
        return total / div

    def normalize(x, gamma, beta, eps, axis):
        mu = x.mean(axis=axis, keepdims=True)
        v = ((x - mu) ** 2).mean(axis=axis, keepdims=True)
        y = (x - mu) / jnp.sqrt(v + eps)
        return (y if gamma is None else y * gamma) + (0 if beta is None else beta)

    def solve(a, b):
        return jnp.linalg.solve(a, b[..., None])[..., 0] if b.ndim == 1 else jnp.linalg.solve(a, b)

    def cholesky(a, upper=False):
        L = jnp.linalg.cholesky((a + jnp.swapaxes(a, -1, -2)) / 2)
        return jnp.swapaxes(L, -1, -2) if upper else L
    table.update(
        getitem=lambda x, key: x[key_of(key)],
        take=lambda a, indices, axis=None: jnp.take(a, indices, axis=axis),
        embedding=lambda ids, E: E[ids],
        pad=lambda x, pad_width: jnp.pad(x, pad_width),
        flip=lambda x, axis=None: jnp.flip(x, axis=axis),
        roll=lambda x, shift, axis=None: jnp.roll(x, shift, axis=axis),
        tile=lambda x, reps: jnp.tile(x, reps),
        repeat=lambda x, repeats, axis=None: jnp.repeat(x, np.asarray(repeats), axis=axis),
        broadcast_to=lambda x, shape: jnp.broadcast_to(x, shape),
        expand_dims=lambda x, axis: jnp.expand_dims(x, axis),
        squeeze=lambda x, axis=None: jnp.squeeze(x, axis=axis),
        swapaxes=lambda x, axis1, axis2: jnp.swapaxes(x, axis1, axis2),
        moveaxis=lambda x, source, destination: jnp.moveaxis(x, source, destination),
        conv1d=conv, conv2d=conv,
        max_pool2d=lambda x, kernel_size, stride=None, padding=0: pool(x, kernel_size, stride, padding),
        avg_pool2d=lambda x, kernel_size, stride=None, padding=0, count_include_pad=True:
            pool(x, kernel_size, stride, padding, "avg", count_include_pad),
        inv=jnp.linalg.inv, det=jnp.linalg.det, slogdet=lambda a: jnp.linalg.slogdet(a)[1], solve=solve,
        cholesky=cholesky,
        norm=lambda x, ord=None, axis=None, keepdims=False: jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims),
        layer_norm=lambda x, gamma=None, beta=None, eps=1e-5: normalize(x, gamma, beta, eps, -1),
        batch_norm=lambda x, gamma=None, beta=None, eps=1e-5: normalize(x, gamma, beta, eps, 0),
    )
    return table


def _jax_function(spec: Spec, arrays: dict, params: dict, names: list[str], jax, jnp):
    op = OPS[spec.op]
    if spec.op == "softmax_cross_entropy":
        t = arrays["target"]
        y = np.eye(arrays["logits"].shape[-1])[t] if np.issubdtype(t.dtype, np.integer) else t
        return lambda x: -jnp.sum(y * jax.nn.log_softmax(x, axis=-1), axis=-1)
    g = _jax_ops(jax, jnp)[spec.op]
    if spec.op == "einsum":
        return lambda *v: g(params["subscripts"], *v)

    def f(*values):
        a = {**arrays, **dict(zip(names, values))}
        return g(*[a[n] for n in op.arrays if a.get(n) is not None or spec.op in ("layer_norm", "batch_norm")],
                 **{k: v for k, v in params.items() if k in spec.params})
    return f


def per_sample(full: np.ndarray, out_ndim: int, p_ndim: int, per: tuple[bool, bool]) -> np.ndarray:
    """The per-sample blocks ``(B, *O, *P, *Q)`` of a full Hessian block ``(B, *O, [B], *P, [B], *Q)``."""
    ar = np.arange(full.shape[0])
    idx = [ar] + [slice(None)] * (out_ndim - 1) + ([ar] if per[0] else []) + [slice(None)] * (p_ndim - per[0])
    idx += [ar] if per[1] else []
    idx += [slice(None)] * (full.ndim - len(idx))
    return full[tuple(idx)]


JAX_CASES = []
for _s in RULED:   # one spec per op with both modes (JAX runs once per spec: it is slow to dispatch)
    if _s.op not in {c.op for c in JAX_CASES} and _s.batched is not None and _s.unbatched is not None:
        JAX_CASES.append(_s)


def test_every_op_with_a_rule_meets_jax():
    assert {s.op for s in JAX_CASES} == set(SECOND)


@pytest.mark.parametrize("spec", [pytest.param(s, id=s.id) for s in JAX_CASES])
def test_hessian_against_jax(spec: Spec):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    args = make_args(spec)
    f, names, values, arrays, params = op_function(spec, args)
    g = _jax_function(spec, arrays, params, names, jax, jnp)
    HJ = jax.jit(jax.hessian(g, argnums=tuple(range(len(names)))))(*values)
    y = np.asarray(g(*values))
    op = OPS[spec.op]
    for batched in (None, next((n for n in op.data if n in names and arrays[n].ndim > op.core.get(n, 0)), None)):
        _compare_jax(spec, jac.hessian(f, wrt=tuple(names), batched=batched)(*values), HJ, y, names, values, batched)


def _compare_jax(spec, H, HJ, y, names, values, batched):
    for i, p in enumerate(names):
        for k, q in enumerate(names):
            ref = np.asarray(HJ[i][k])
            ours = H[p, q]
            if ours.shape != ref.shape:
                per = (p == batched, q == batched)
                ref = per_sample(ref, y.ndim, values[i].ndim, per)
            np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10, err_msg=f"{spec.id} ({p}, {q})")


# ---------------------------------------------------------------- composed networks

rng = np.random.default_rng(11)


def mlp_loss(x, W1, b1, W2, b2, y):              # a chain
    h = jac.fn.tanh(jac.fn.linear(x, W1, b1))
    return jac.fn.mean(jac.fn.softmax_cross_entropy(jac.fn.linear(h, W2, b2), y))


def fanout(x, W):                                # one value used three times
    z = x @ W.T
    return jac.fn.sum(jac.fn.sigmoid(z) * z + jac.fn.exp(z * 0.3), axis=-1)


def skip(x, W1, W2):                             # a residual block and a skip connection
    h = x + jac.fn.tanh(x @ W1.T)
    g = h + jac.fn.softplus(h @ W2.T)
    return jac.fn.logsumexp(g * x)


NETWORKS = {
    "chain": (mlp_loss, lambda: [rng.normal(size=(4, 3)), rng.normal(size=(5, 3)), rng.normal(size=5),
                                 rng.normal(size=(2, 5)), rng.normal(size=2), np.array([0, 1, 1, 0])],
              ("x", "W1", "b1", "W2")),
    "fanout": (fanout, lambda: [rng.normal(size=(3, 4)), rng.normal(size=(2, 4))], ("x", "W")),
    "skip": (skip, lambda: [rng.normal(size=(3, 4)), rng.normal(size=(4, 4)), rng.normal(size=(4, 4))],
             ("x", "W1", "W2")),
}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_networks_against_differences(name):
    f, make, wrt = NETWORKS[name]
    results = check_hessian(f, *make(), wrt=wrt)
    assert len(results) == len(wrt) ** 2
    assert all(r.max_rel_error < 1e-6 for r in results)


@pytest.mark.parametrize("name", ["fanout", "skip"])
def test_networks_per_sample_against_differences(name):
    f, make, _ = NETWORKS[name]
    args = make()
    if name == "skip":   # a per-sample output: logsumexp over the features only
        def f(x, W1, W2):
            h = x + jac.fn.tanh(x @ W1.T)
            return jac.fn.logsumexp(h + jac.fn.softplus(h @ W2.T))
    results = check_hessian(f, *args, wrt=("x", "W1") if name == "skip" else ("x", "W"), batched="x")
    assert results[0].shape == (3, 4, 4)          # (B, *I, *I): the batch kept once
    assert all(r.max_rel_error < 1e-6 for r in results)


def test_networks_against_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def jskip(x, W1, W2):
        h = x + jnp.tanh(x @ W1.T)
        g = h + jax.nn.softplus(h @ W2.T)
        return jax.scipy.special.logsumexp(g * x, axis=-1)

    def jfanout(x, W):
        z = x @ W.T
        return jnp.sum(jax.nn.sigmoid(z) * z + jnp.exp(z * 0.3), axis=-1)
    for name, g in (("skip", jskip),):
        f, make, wrt = NETWORKS[name]
        args = make()
        H = jac.hessian(f, wrt=wrt)(*args)
        HJ = jax.jit(jax.hessian(g, argnums=tuple(range(len(wrt)))))(*args)
        for i, p in enumerate(wrt):
            for k, q in enumerate(wrt):
                np.testing.assert_allclose(H[p, q], HJ[i][k], rtol=1e-10, atol=1e-10, err_msg=f"{name} {p} {q}")


def test_per_sample_mlp_matches_jax_vmap():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    B, D, Hd = 5, 4, 6
    x, W1, W2, w3 = rng.normal(size=(B, D)), rng.normal(size=(Hd, D)), rng.normal(size=(Hd, Hd)), rng.normal(size=(1, Hd))

    def net(x, W1, W2, w3):
        return jac.fn.tanh(jac.fn.tanh(x @ W1.T) @ W2.T) @ w3.T

    def one(x):
        return jnp.tanh(jnp.tanh(x @ W1.T) @ W2.T) @ w3.T
    H = jac.hessian(net, wrt="x", batched="x")(x, W1, W2, w3)
    assert H.shape == (B, 1, D, D)
    np.testing.assert_allclose(H, jax.jit(jax.vmap(jax.hessian(one)))(x), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- the examples

def test_quadratic_form_is_a_plus_a_transpose_exactly():
    n = 50
    A, x = rng.normal(size=(n, n)), rng.normal(size=n)
    H = jac.hessian(lambda x, A: jac.fn.dot(x, A @ x), wrt="x")(x, A)
    np.testing.assert_array_equal(H, A + A.T)


def test_logistic_regression_is_the_closed_form():
    N, D = 200, 7
    X, t, w = rng.normal(size=(N, D)), rng.choice([-1.0, 1.0], size=N), rng.normal(size=D)

    def loss(w, X, t):
        return jac.fn.mean(jac.fn.softplus(-t * (X @ w)))
    H = jac.hessian(loss, wrt="w")(w, X, t)
    p = 1.0 / (1.0 + np.exp(-(X @ w)))
    np.testing.assert_allclose(H, X.T @ (X * (p * (1 - p))[:, None]) / N, rtol=1e-12, atol=1e-14)


def cs224n_loss(x, W, b1, U, b2, y):
    """CS224n's one-layer network: h = sigmoid(x W + b1), yhat = softmax(h U + b2), J = CE(y, yhat)."""
    h = jac.fn.sigmoid(x @ W + b1)
    return jac.fn.cross_entropy(jac.fn.softmax(h @ U + b2), y)


def test_cs224n_one_layer_network_hessian_wrt_W():
    Dx, Dh, Dy = 4, 5, 3
    x, W, b1 = rng.normal(size=Dx), rng.normal(size=(Dx, Dh)), rng.normal(size=Dh)
    U, b2, y = rng.normal(size=(Dh, Dy)), rng.normal(size=Dy), np.eye(Dy)[1]
    H = jac.hessian(cs224n_loss, wrt="W")(x, W, b1, U, b2, y)
    assert H.shape == (Dx, Dh, Dx, Dh)
    np.testing.assert_allclose(H, np.swapaxes(np.swapaxes(H, 0, 2), 1, 3), atol=1e-14)  # symmetric
    (r,) = check_hessian(cs224n_loss, x, W, b1, U, b2, y, wrt="W")
    assert r.max_rel_error < 1e-6
    # by hand: with g = U (softmax(z) - y) and s = sigmoid(x W + b1), d2J/dW dW = (x x^T) kron
    # (diag(s') U diag(softmax') U^T diag(s') + diag(g s''))
    s = 1 / (1 + np.exp(-(x @ W + b1)))
    z = s @ U + b2
    q = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    ds, d2s = s * (1 - s), s * (1 - s) * (1 - 2 * s)
    inner = (ds[:, None] * U) @ (np.diag(q) - np.outer(q, q)) @ (U.T * ds[None, :]) + np.diag(U @ (q - y) * d2s)
    np.testing.assert_allclose(H, np.einsum("a,c,bd->abcd", x, x, inner), rtol=1e-10, atol=1e-12)


def test_several_wrt_gives_every_block():
    x, W = rng.normal(size=(3, 2)), rng.normal(size=(4, 2))
    H = jac.hessian(fanout, wrt=("x", "W"))(x, W)
    assert set(H) == {("x", "x"), ("x", "W"), ("W", "x"), ("W", "W")}
    assert H["x", "W"].shape == (3, 3, 2, 4, 2)
    np.testing.assert_allclose(H["x", "W"], np.moveaxis(H["W", "x"], (1, 2, 3, 4), (3, 4, 1, 2)), atol=1e-14)


def test_output_independent_of_wrt_is_zeros():
    H = jac.hessian(lambda x, w: jac.fn.tanh(w).sum(), wrt="x")(np.ones(3), np.ones(2))
    np.testing.assert_array_equal(H, np.zeros((3, 3)))


def test_hessian_is_sized_before_allocating():
    n = 300
    with jac.limits.limited_memory(100_000):
        with pytest.raises(jac.JacobianTooLarge, match="hessian"):
            jac.hessian(lambda x: jac.fn.sum(jac.fn.tanh(x)), wrt="x")(np.ones(n))


def test_errors_name_the_transform():
    with pytest.raises(ValueError, match="^hessian: wrt='z' is not an argument"):
        jac.hessian(lambda x: x, wrt="z")


def test_deep_residual_network_terms_are_merged():
    """Eight residual blocks: the paths double at every block; terms of one delta pattern are added
    into one array, so the Hessian stays cheap, and equals differences of the Jacobian."""
    Ws = [rng.normal(size=(3, 3)) * 0.4 for _ in range(8)]

    def res(x):
        h = x
        for W in Ws:
            h = h + jac.fn.tanh(h @ W.T)
        return jac.fn.sum(h * h, axis=-1)
    (r,) = check_hessian(res, rng.normal(size=(2, 3)), wrt="x", batched="x")
    assert r.shape == (2, 3, 3) and r.max_rel_error < 1e-6


# ---------------------------------------------------------------- every op inside a network, against JAX

def jax_composed(spec: Spec, args: list, jax, jnp):
    """The JAX twin of :func:`composed`: ``sin(op(u + u**3 / 5, ...))``."""
    _, names, _, arrays, params = op_function(spec, args)
    g = _jax_function(spec, arrays, params, names, jax, jnp)
    return lambda *v: jnp.sin(g(*[u + 0.2 * u * u * u for u in v]))


COMPOSED_JAX = [s for s in JAX_CASES if not _has_0d(s)]


def test_every_op_meets_jax_inside_a_network():
    assert {s.op for s in COMPOSED_JAX} == set(OPS)


@pytest.mark.parametrize("spec", [pytest.param(s, id=s.id) for s in COMPOSED_JAX])
def test_composed_hessian_against_jax(spec: Spec):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    args = make_args(spec)
    g, names, values, batched = composed(spec, args)
    gj = jax_composed(spec, args, jax, jnp)
    HJ = jax.jit(jax.hessian(gj, argnums=tuple(range(len(names)))))(*values)
    y = np.asarray(gj(*values))
    for b in (None, batched):
        _compare_jax(spec, jac.hessian(g, wrt=tuple(names), batched=b)(*values), HJ, y, names, values, b)
