"""Elementwise rows: second derivatives, domains, stable forms, erf's two paths, numpy names, Black-Scholes.

First derivatives of every row go through ``check_jacobian`` in tests/test_ops.py's table.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import jacobians as jac
from jacobians import fn, ops
from jacobians.ops import elementwise
from jacobians.ops.elementwise import ROWS

# sample points inside each row's domain, away from kinks and infinite slopes
INPUTS = {"log": (0.3, 3), "log1p": (-0.7, 3), "log2": (0.3, 3), "log10": (0.3, 3), "sqrt": (0.3, 3),
          "arcsin": (-0.9, 0.9), "arccos": (-0.9, 0.9), "arctanh": (-0.9, 0.9), "tan": (-1.2, 1.2),
          "arccosh": (1.1, 4), "power": (0.3, 3)}
PARAMS = {"power": [{"p": 2.0}, {"p": 3.0}, {"p": 0.5}, {"p": -1.5}, {"p": 0.0}, {"p": 1.0}],
          "leaky_relu": [{"alpha": 0.2}], "gelu": [{"approximate": "none"}, {"approximate": "tanh"}]}


def points(name, n=41):
    lo, hi = INPUTS.get(name, (-4, 4))
    x = np.linspace(lo, hi, n)
    if name in ("relu", "leaky_relu", "sign", "cbrt", "reciprocal"):
        x = x[np.abs(x) > 0.05]                    # the kink / pole at 0
    return x


def unary_cases():
    for name, row in ROWS.items():
        if row.arity == 1:
            for p in PARAMS.get(name, [{}]):
                yield pytest.param(name, p, id=f"{name}{p or ''}")


def as_array(v, x):
    return np.broadcast_to(np.asarray(v(x) if callable(v) else v, dtype=np.float64), np.shape(x))


@pytest.mark.parametrize("name, p", list(unary_cases()))
def test_unary_row_second_derivative_is_the_slope_of_the_first(name, p):
    row = ROWS[name]
    x, h = points(name), 1e-5
    d1 = lambda x: as_array(lambda x: row.d1(x, row.f(x, **p), **p) if callable(row.d1) else row.d1, x)
    d2 = as_array(lambda x: row.d2(x, row.f(x, **p), **p) if callable(row.d2) else row.d2, x)
    numeric = (d1(x + h) - d1(x - h)) / (2 * h)
    np.testing.assert_allclose(d2, numeric, rtol=1e-6, atol=1e-6, err_msg=name)
    # and f' against f, on the same grid (the table checks it through the op as well)
    numeric1 = (row.f(x + h, **p) - row.f(x - h, **p)) / (2 * h)
    np.testing.assert_allclose(d1(x), numeric1, rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("name", [n for n, r in ROWS.items() if r.arity == 2])
def test_binary_row_second_derivatives_are_the_slopes_of_the_first(name):
    row = ROWS[name]
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.3, 2.0, 30) * rng.choice([-1, 1], 30), rng.uniform(0.3, 2.0, 30) * rng.choice([-1, 1], 30)
    h = 1e-5

    def d1(a, b):
        v = row.d1(a, b, row.f(a, b)) if callable(row.d1) else row.d1
        return [np.broadcast_to(np.asarray(t, dtype=np.float64), a.shape) for t in v]

    d2 = row.d2(a, b, row.f(a, b)) if callable(row.d2) else row.d2
    faa, fab, fbb = [np.broadcast_to(np.asarray(t, dtype=np.float64), a.shape) for t in d2]
    da = [(u - d) / (2 * h) for u, d in zip(d1(a + h, b), d1(a - h, b))]     # d/da of (f_a, f_b)
    db = [(u - d) / (2 * h) for u, d in zip(d1(a, b + h), d1(a, b - h))]     # d/db of (f_a, f_b)
    for got, want in ((faa, da[0]), (fab, da[1]), (fab, db[0]), (fbb, db[1])):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=name)
    fa, fb = d1(a, b)
    np.testing.assert_allclose(fa, (row.f(a + h, b) - row.f(a - h, b)) / (2 * h), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fb, (row.f(a, b + h) - row.f(a, b - h)) / (2 * h), rtol=1e-6, atol=1e-6)


def test_every_elementwise_op_has_a_row():
    for name, op in ops.OPS.items():
        if op.family == "elementwise":
            assert op.row is ROWS[name] and op.row.name == name
            assert op.formula and "\n" not in op.formula


# ---------------------------------------------------------------- values against numpy / math

@pytest.mark.parametrize("name", ["sin", "cos", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
                                  "arcsinh", "arccosh", "arctanh", "log1p", "expm1", "log2", "log10", "exp2",
                                  "cbrt", "reciprocal", "sign"])
def test_values_are_numpys(name):
    x = points(name)
    np.testing.assert_array_equal(ops.get(name)(x)[0], getattr(np, name)(x))


def test_erf_values_and_both_implementations(monkeypatch):
    x = np.linspace(-6, 6, 241)
    want = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(ops.erf(x)[0], want, rtol=2e-16, atol=0)
    np.testing.assert_allclose(ops.erfc(x)[0], [math.erfc(v) for v in x], rtol=1e-14, atol=0)
    pytest.importorskip("scipy")
    from scipy.special import erf as sp_erf
    monkeypatch.setattr(elementwise, "_ERF", None)
    assert elementwise._erf_pair()[0] is sp_erf
    # without scipy: math.erf elementwise, the same values; float32 stays float32
    monkeypatch.setattr(elementwise, "_ERF", tuple(elementwise._elementwise_math(g) for g in (math.erf, math.erfc)))
    np.testing.assert_allclose(ops.erf(x)[0], want, rtol=2e-16, atol=0)
    v32, (j32,) = ops.erf(x.astype(np.float32))
    assert v32.dtype == j32.dtype == np.float32
    assert ops.erf(np.float64(0.5), batch=False)[0] == pytest.approx(math.erf(0.5), rel=1e-16)


def test_gelu_and_silu_values():
    x = np.linspace(-8, 8, 161)
    Phi = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
    np.testing.assert_allclose(ops.gelu(x)[0], x * Phi, rtol=1e-14, atol=0)
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(ops.gelu(x, approximate="tanh")[0], tanh_form, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ops.silu(x)[0], x / (1 + np.exp(-x)), rtol=1e-15)
    np.testing.assert_array_equal(ops.swish(x)[0], ops.silu(x)[0])
    np.testing.assert_array_equal(ops.swish(x)[1][0], ops.silu(x)[1][0])


def test_gelu_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.linspace(-10, 10, 201)
    for approximate in ("none", "tanh"):
        t = torch.tensor(x, requires_grad=True)
        y = torch.nn.functional.gelu(t, approximate=approximate)
        y.sum().backward()
        value, (J,) = ops.gelu(x, approximate=approximate)
        np.testing.assert_allclose(value, y.detach().numpy(), rtol=1e-12, atol=1e-15)
        # torch's slope loses digits in the far left tail (|J| < 1e-9); ours agrees with mpmath there
        np.testing.assert_allclose(J, t.grad.numpy(), rtol=1e-12, atol=1e-13)


def test_gelu_slope_in_the_tail_against_mpmath():
    mpmath = pytest.importorskip("mpmath")
    x = np.linspace(-9, -3, 61)
    with mpmath.workdps(40):
        want = [float(mpmath.ncdf(v) + v * mpmath.npdf(v)) for v in map(mpmath.mpf, x)]
    np.testing.assert_allclose(ops.gelu(x)[1][0], want, rtol=1e-13, atol=0)


def test_stable_forms_at_extremes():
    x = np.array([-1e6, -800.0, -40.0, 0.0, 40.0, 800.0, 1e6])
    with np.errstate(all="ignore"):   # underflow to 0 is right here; the results must be finite
        for name in ("sigmoid", "softplus", "log_sigmoid", "silu", "gelu"):
            for p in PARAMS.get(name, [{}]):
                value, (J,) = ops.get(name)(x, **p)
                assert np.isfinite(value).all() and np.isfinite(J).all(), (name, p)
                row = ROWS[name]
                assert np.isfinite(row.d2(x, value, **p)).all(), (name, p)
    assert ops.softplus(x)[0][-1] == 1e6 and ops.log_sigmoid(x)[0][0] == -1e6
    ds = ops.silu(x)[1][0]                          # s(x) (1 + x s(-x)), relative accuracy at -40 too
    s40 = math.exp(-40) / (1 + math.exp(-40))
    assert ds[2] == pytest.approx(s40 * (1 - 40 * (1 - s40)), rel=1e-14)
    np.testing.assert_allclose(ds[3:], [0.5, 1.0, 1.0, 1.0], rtol=1e-15, atol=0)
    big = np.array([[1000.0, -1000.0, 3.0]])
    z, (da, db) = ops.logaddexp(big, np.array([1000.0]))
    np.testing.assert_allclose(z, [[1000 + math.log(2), 1000.0, 1000.0]])
    np.testing.assert_allclose(np.diagonal(da[0]), [0.5, 0.0, math.exp(3 - 1000)])
    np.testing.assert_allclose(db[0, :, 0], [0.5, 1.0, 1.0])
    h, (dha, dhb) = ops.hypot(np.array([3e200]), np.array([4e200]), batch=False)
    assert h[0] == pytest.approx(5e200) and dha[0, 0] == pytest.approx(0.6) and dhb[0, 0] == pytest.approx(0.8)


def test_sign_is_not_differentiable_and_its_jacobian_is_zero():
    x = np.array([[-2.0, 0.0, 3.0]])
    s, (J,) = ops.sign(x)
    np.testing.assert_array_equal(s, [[-1.0, 0.0, 1.0]])
    np.testing.assert_array_equal(J, np.zeros((1, 3, 3)))
    Jc = jac.jacobian(lambda x: fn.sign(x) * x, wrt="x", batched="x")(x)   # d(sign(x) x)/dx = sign(x)
    np.testing.assert_array_equal(Jc, np.diag([-1.0, 0.0, 1.0])[None])


# ---------------------------------------------------------------- domains: one line, op, value, index

def msg(text: str) -> str:
    return "^" + re.escape(text)


@pytest.mark.parametrize("name, bad, what", [
    ("arcsin", 1.5, "in [-1, 1]"), ("arccos", -1.01, "in [-1, 1]"), ("arccosh", 0.5, "at least 1"),
    ("arctanh", 1.0, "in (-1, 1)"), ("log1p", -1.0, "greater than -1"), ("reciprocal", 0.0, "nonzero"),
    ("log2", 0.0, "positive"), ("log10", -2.0, "positive"),
])
def test_value_outside_the_domain(name, bad, what):
    x = np.array([[0.5 if name != "arccosh" else 2.0, 1.1 if name == "arccosh" else 0.25], [0.75 if name != "arccosh" else 3.0, bad]])
    with pytest.raises(ValueError, match=msg(f"{name}: argument x must be {what}; got {bad!r} at flat index 3 "
                                             f"(shape (2, 2))")):
        ops.get(name)(x)


@pytest.mark.parametrize("name, at, where", [
    ("arcsin", 1.0, "|x| < 1"), ("arcsin", -1.0, "|x| < 1"), ("arccos", 1.0, "|x| < 1"),
    ("arccosh", 1.0, "x > 1"), ("cbrt", 0.0, "x != 0"),
])
def test_infinite_slope_refuses_the_jacobian_not_the_value(name, at, where):
    x = np.array([0.5 if name != "arccosh" else 2.0, at])
    value = getattr(fn, name)(x)                     # the value exists
    assert value[1] == getattr(np, name)(at)
    with pytest.raises(ValueError, match=msg(f"{name}: the Jacobian w.r.t. x does not exist at x = {at!r} (flat "
                                             f"index 1, shape (2,)): the slope is infinite or undefined there; "
                                             f"it exists for {where}")):
        ops.get(name)(x)


@pytest.mark.parametrize("name", ["arctan2", "hypot"])
def test_binary_origin(name):
    a, b = np.array([[1.0, 0.0]]), np.array([[2.0, 0.0]])
    assert np.isfinite(getattr(fn, name)(a, b)).all()
    with pytest.raises(ValueError, match=msg(f"{name}: the Jacobian does not exist at a = 0.0, b = 0.0 (flat index 1 "
                                             f"of the broadcast shape (1, 2)); it exists for a and b not both 0")):
        ops.get(name)(a, b)


def test_gelu_approximate_must_be_named():
    with pytest.raises(ValueError, match=msg("gelu: argument approximate must be one of 'none', 'tanh'; got 'erf'")):
        ops.gelu(np.ones((2, 2)), approximate="erf")


# ---------------------------------------------------------------- tracing: numpy names

def test_numpy_ufuncs_of_the_rows_are_traced():
    rng = np.random.default_rng(5)
    x, W = rng.normal(size=(3, 4)), 0.3 * rng.normal(size=(2, 4))

    def f(x, W):
        z = fn.linear(x, W)
        return np.sin(z) * np.cosh(z) + np.arctan2(z, 2.0) + np.logaddexp(z, -z) + np.hypot(z, 1.0) + np.expm1(z)

    def g(x, W):
        z = x @ W.T
        return np.sin(z) * np.cosh(z) + np.arctan2(z, 2.0) + np.logaddexp(z, -z) + np.hypot(z, 1.0) + np.expm1(z)

    J = jac.jacobian(f, wrt="x", batched="x")(x, W)
    from jacobians.testing import numerical_jacobian
    for b in range(3):
        num = numerical_jacobian(lambda xb: g(xb[None], W)[0], x[b])
        np.testing.assert_allclose(J[b], num, rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------- Black-Scholes Greeks

def black_scholes(S, K, T, r, sigma):
    """The call price, written with erf, exp, log and sqrt."""
    vol = sigma * fn.sqrt(T)
    d1 = (fn.log(S / K) + (r + 0.5 * sigma * sigma) * T) / vol
    d2 = d1 - vol
    N = lambda z: 0.5 * (1.0 + fn.erf(z / math.sqrt(2.0)))
    return S * N(d1) - K * fn.exp(-r * T) * N(d2)


def closed_form_greeks(S, K, T, r, sigma):
    N = np.vectorize(lambda z: 0.5 * math.erfc(-z / math.sqrt(2.0)))
    phi = lambda z: np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    d1 = (np.log(S / K) + (r + 0.5 * sigma ** 2) * T) / (sigma * np.sqrt(T))
    d2 = d1 - sigma * np.sqrt(T)
    disc = np.exp(-r * T)
    return {
        "S": N(d1),                                                               # delta
        "K": -disc * N(d2),                                                       # dual delta
        "T": S * phi(d1) * sigma / (2 * np.sqrt(T)) + r * K * disc * N(d2),       # -theta
        "r": K * T * disc * N(d2),                                                # rho
        "sigma": S * phi(d1) * np.sqrt(T),                                        # vega
    }


def _options():
    rng = np.random.default_rng(11)
    n = 16
    return dict(S=rng.uniform(50, 150, n), K=rng.uniform(60, 140, n), T=rng.uniform(0.1, 3.0, n),
                r=rng.uniform(0.0, 0.08, n), sigma=rng.uniform(0.1, 0.6, n))


def test_black_scholes_greeks_match_the_closed_forms():
    args = _options()
    wrt = ("S", "K", "T", "r", "sigma")
    J = jac.jacobian(black_scholes, wrt=wrt, batched="S")(**args)
    want = closed_form_greeks(**args)
    for name in wrt:
        # each option depends on its own inputs only: (B, B) with the Greeks on the diagonal
        G = J[name] if J[name].ndim == 1 else np.diagonal(J[name])
        if J[name].ndim == 2:
            np.testing.assert_array_equal(J[name] - np.diag(G), 0)
        np.testing.assert_allclose(G, want[name], rtol=1e-12, atol=1e-12, err_msg=name)


def test_black_scholes_matches_jax():
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    from jax.scipy.special import erf as jerf
    args = _options()
    wrt = ("S", "K", "T", "r", "sigma")
    J = jac.jacobian(black_scholes, wrt=wrt, batched="S")(**args)

    def price(S, K, T, r, sigma):
        vol = sigma * jnp.sqrt(T)
        d1 = (jnp.log(S / K) + (r + 0.5 * sigma * sigma) * T) / vol
        N = lambda z: 0.5 * (1.0 + jerf(z / math.sqrt(2.0)))
        return S * N(d1) - K * jnp.exp(-r * T) * N(d1 - vol)

    with jax.enable_x64(True):
        ref = jax.jacfwd(price, argnums=tuple(range(5)))(*(jnp.asarray(args[k]) for k in wrt))
        for name, R in zip(wrt, ref):
            R = np.asarray(R)
            full = J[name] if J[name].ndim == 2 else np.diag(J[name])
            np.testing.assert_allclose(full, R, rtol=1e-12, atol=1e-12, err_msg=name)
