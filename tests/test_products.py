"""Matrix-free products of whole functions: jvp, vjp, hvp (issue 11).

J v and u^T J equal the contractions of ``jac.jacobian``'s explicit tensor for one spec of every
op; H v equals the contraction of ``jac.hessian`` for every op; every op inside a network
(``sin(op(u + u**3 / 5))``) and composed networks agree with ``jax.jvp`` / ``jax.vjp`` / JAX's
forward-over-reverse HVP to 1e-10.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import jacobians as jac
from jacobians.ops import OPS
from jacobians.second import SECOND
from test_hessian import COMPOSED_JAX, NETWORKS, composed, jax_composed, op_function
from test_ops import SPECS, make_args

ONE_PER_OP = []
for _s in SPECS:
    if _s.unbatched is not None and _s.op not in {s.op for s in ONE_PER_OP}:
        ONE_PER_OP.append(_s)

rng = np.random.default_rng(5)


def _contract(J, v, ndim):
    return np.tensordot(J, v, axes=ndim)


@pytest.mark.parametrize("spec", [pytest.param(s, id=s.id) for s in ONE_PER_OP])
def test_jvp_and_vjp_equal_contractions_of_the_jacobian(spec):
    f, names, values, _, _ = op_function(spec, make_args(spec))
    J = jac.jacobian(f, wrt=tuple(names))(*values)
    tangents = {n: rng.normal(size=v.shape) for n, v in zip(names, values)}
    y, Jv = jac.jvp(f, wrt=tuple(names))(*values, tangent=tangents)
    np.testing.assert_allclose(y, f(*values), rtol=0, atol=0)
    expected = sum(_contract(J[n], tangents[n], np.ndim(tangents[n])) for n in names)
    np.testing.assert_allclose(Jv, expected, rtol=1e-12, atol=1e-12)
    u = rng.normal(size=np.shape(y))
    _, uJ = jac.vjp(f, wrt=tuple(names))(*values, cotangent=u)
    assert set(uJ) == set(names)
    for n, v in zip(names, values):
        expected = np.tensordot(u, J[n], axes=np.ndim(u))
        np.testing.assert_allclose(uJ[n], expected, rtol=1e-12, atol=1e-12)
        assert uJ[n].shape == v.shape


@pytest.mark.parametrize("spec", [pytest.param(s, id=s.id) for s in ONE_PER_OP if s.op in SECOND])
def test_hvp_equals_the_hessian_contracted(spec):
    f, names, values, _, _ = op_function(spec, make_args(spec))
    w = rng.normal(size=np.shape(f(*values)))

    def scalar(*v):
        return jac.fn.sum(f(*v) * w)
    scalar.__signature__ = inspect.signature(f)
    H = jac.hessian(scalar, wrt=tuple(names))(*values)
    tangents = {n: rng.normal(size=v.shape) for n, v in zip(names, values)}
    y, Hv = jac.hvp(scalar, wrt=tuple(names))(*values, tangent=tangents)
    for i, p in enumerate(names):
        expected = sum(np.tensordot(H[p, q], tangents[q], axes=values[k].ndim) for k, q in enumerate(names))
        np.testing.assert_allclose(Hv[p], expected, rtol=1e-11, atol=1e-11, err_msg=f"{spec.id} {p}")


@pytest.mark.parametrize("spec", [pytest.param(s, id=s.id) for s in COMPOSED_JAX])
def test_composed_products_against_jax(spec):
    """jvp, vjp and hvp of ``sin(op(u + u**3 / 5))`` for every op agree with jax.jvp, jax.vjp and JAX's
    forward-over-reverse HVP (of ``sum(w * .)``) to 1e-10, batched and unbatched."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    args = make_args(spec)
    g, names, values, batched = composed(spec, args)
    gj = jax_composed(spec, args, jax, jnp)
    tangents = {n: rng.normal(size=v.shape) for n, v in zip(names, values)}
    yj, Jvj = jax.jvp(gj, tuple(values), tuple(tangents[n] for n in names))
    u = rng.normal(size=np.shape(yj))
    uJj = jax.vjp(gj, *values)[1](u)
    w = rng.normal(size=np.shape(yj))

    def scalar(*v):
        return jac.fn.sum(g(*v) * w)
    scalar.__signature__ = inspect.signature(g)
    Hvj = jax.jvp(jax.grad(lambda *v: jnp.sum(gj(*v) * w), argnums=tuple(range(len(names)))),
                  tuple(values), tuple(tangents[n] for n in names))[1]
    for b in {None, batched}:
        y, Jv = jac.jvp(g, wrt=tuple(names), batched=b)(*values, tangent=tangents)
        np.testing.assert_allclose(y, yj, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(Jv, Jvj, rtol=1e-10, atol=1e-10, err_msg=f"{spec.id} jvp")
        _, uJ = jac.vjp(g, wrt=tuple(names), batched=b)(*values, cotangent=u)
        for n, ref in zip(names, uJj):
            np.testing.assert_allclose(uJ[n], ref, rtol=1e-10, atol=1e-10, err_msg=f"{spec.id} vjp {n}")
        _, Hv = jac.hvp(scalar, wrt=tuple(names), batched=b)(*values, tangent=tangents)
        for n, ref in zip(names, Hvj):
            np.testing.assert_allclose(Hv[n], ref, rtol=1e-10, atol=1e-10, err_msg=f"{spec.id} hvp {n}")


def test_single_wrt_gives_arrays():
    x, W = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    f = lambda x, W: jac.fn.tanh(x @ W.T)
    J = jac.jacobian(f, wrt="x", batched="x")(x, W)
    v, u = rng.normal(size=x.shape), rng.normal(size=(3, 2))
    y, Jv = jac.jvp(f, wrt="x", batched="x")(x, W, tangent=v)
    np.testing.assert_allclose(Jv, np.einsum("boi,bi->bo", J.reshape(3, 2, 4), v), rtol=1e-12)
    _, uJ = jac.vjp(f, wrt="x")(x, W, cotangent=u)
    np.testing.assert_allclose(uJ, np.einsum("bo,boi->bi", u, J), rtol=1e-12)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_network_hvp_equals_the_hessian_contracted(name):
    f, make, wrt = NETWORKS[name]
    args = make()
    if np.ndim(f(*args)) != 0:
        g = f
        f = lambda *a: jac.fn.sum(g(*a))
        f.__signature__ = inspect.signature(g)
    H = jac.hessian(f, wrt=wrt)(*args)
    pos = list(inspect.signature(f).parameters)
    tangents = {n: rng.normal(size=args[pos.index(n)].shape) for n in wrt}
    _, Hv = jac.hvp(f, wrt=wrt)(*args, tangent=tangents)
    for p in wrt:
        expected = sum(np.tensordot(H[p, q], tangents[q], axes=tangents[q].ndim) for q in wrt)
        np.testing.assert_allclose(Hv[p], expected, rtol=1e-11, atol=1e-11)


def test_networks_against_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def skip(x, W1, W2):
        h = x + jnp.tanh(x @ W1.T)
        g = h + jax.nn.softplus(h @ W2.T)
        return jax.scipy.special.logsumexp(g * x, axis=-1)
    f, make, wrt = NETWORKS["skip"]
    x, W1, W2 = make()
    v = {n: rng.normal(size=a.shape) for n, a in zip(wrt, (x, W1, W2))}
    y, Jv = jac.jvp(f, wrt=wrt)(x, W1, W2, tangent=v)
    yj, Jvj = jax.jvp(skip, (x, W1, W2), (v["x"], v["W1"], v["W2"]))
    np.testing.assert_allclose(y, yj, rtol=1e-12)
    np.testing.assert_allclose(Jv, Jvj, rtol=1e-10, atol=1e-10)
    u = rng.normal(size=np.shape(y))
    _, uJ = jac.vjp(f, wrt=wrt)(x, W1, W2, cotangent=u)
    for n, ref in zip(wrt, jax.vjp(skip, x, W1, W2)[1](u)):
        np.testing.assert_allclose(uJ[n], ref, rtol=1e-10, atol=1e-10)

    def total(x, W1, W2):
        return jnp.sum(skip(x, W1, W2))
    g = lambda x, W1, W2: jac.fn.sum(f(x, W1, W2))
    _, Hv = jac.hvp(g, wrt=wrt)(x, W1, W2, tangent=v)
    ref = jax.jvp(jax.grad(total, argnums=(0, 1, 2)), (x, W1, W2), (v["x"], v["W1"], v["W2"]))[1]
    for n, r in zip(wrt, ref):
        np.testing.assert_allclose(Hv[n], r, rtol=1e-10, atol=1e-10)


def test_quadratic_form_hvp():
    n = 30
    A, x, v = rng.normal(size=(n, n)), rng.normal(size=n), rng.normal(size=n)
    y, Hv = jac.hvp(lambda x, A: jac.fn.dot(x, A @ x))(x, A, tangent=v)
    np.testing.assert_allclose(y, x @ A @ x, rtol=1e-12)
    np.testing.assert_allclose(Hv, (A + A.T) @ v, rtol=1e-12)


# ---------------------------------------------------------------- errors: one line, named

def f2(x, W):
    return jac.fn.tanh(x @ W.T)


def test_tangent_shape_error():
    x, W = np.ones((3, 4)), np.ones((2, 4))
    with pytest.raises(ValueError, match=r"^jvp: tangent for x: expected shape \(3, 4\), got \(4,\)$"):
        jac.jvp(f2, wrt="x")(x, W, tangent=np.ones(4))
    with pytest.raises(ValueError, match=r"^vjp: cotangent for the output: expected shape \(3, 2\), got \(3,\)$"):
        jac.vjp(f2, wrt="x")(x, W, cotangent=np.ones(3))


def test_missing_and_misnamed_tangents():
    x, W = np.ones((3, 4)), np.ones((2, 4))
    with pytest.raises(TypeError, match="^jvp: pass the tangent as tangent="):
        jac.jvp(f2, wrt="x")(x, W)
    with pytest.raises(TypeError, match="^jvp: with several wrt the tangent is a dict"):
        jac.jvp(f2, wrt=("x", "W"))(x, W, tangent={"x": np.ones((3, 4))})


def test_hvp_needs_a_scalar():
    with pytest.raises(ValueError, match=r"^hvp: f must return a scalar .* got shape \(3, 2\)$"):
        jac.hvp(f2, wrt="x")(np.ones((3, 4)), np.ones((2, 4)), tangent=np.ones((3, 4)))


def test_hvp_through_an_op_without_a_rule_names_it(monkeypatch):
    monkeypatch.delitem(SECOND, "layer_norm")
    g = lambda x: jac.fn.sum(jac.fn.layer_norm(x))
    with pytest.raises(NotImplementedError, match="^layer_norm: no second-order rule"):
        jac.hvp(g)(rng.normal(size=(2, 3)), tangent=np.ones((2, 3)))
    # first order through it is fine
    y, Jv = jac.jvp(g)(rng.normal(size=(2, 3)), tangent=np.ones((2, 3)))
    assert np.shape(Jv) == ()


def test_products_of_an_output_independent_of_wrt_are_zeros():
    g = lambda x, w: jac.fn.tanh(w)
    y, Jv = jac.jvp(g, wrt="x")(np.ones(3), np.ones(2), tangent=np.ones(3))
    np.testing.assert_array_equal(Jv, np.zeros(2))
    _, uJ = jac.vjp(g, wrt="x")(np.ones(3), np.ones(2), cotangent=np.ones(2))
    np.testing.assert_array_equal(uJ, np.zeros(3))
