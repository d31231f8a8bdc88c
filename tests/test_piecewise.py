"""Piecewise ops: the conventions where a derivative is not defined, masks instead of 0/1 tensors.

Random inputs (no ties, no kinks) go through the op table in test_ops.py; here are the ties:

* maximum/minimum at a == b: 1/2 to each side (what a central difference gives);
* clip on a bound: 1/2; abs at 0: 0;
* amax/amin with several extreme elements: slope 1 at the first (np.argmax's choice).
"""

from __future__ import annotations

import numpy as np
import pytest

import jacobians as jac
from jacobians.testing import check_jacobian, numerical_jacobian

fn = jac.fn


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_ties_give_half_to_each_side(op):
    a = np.array([[1.0, 2.0, -0.5], [0.0, 3.0, 3.0]])
    b = np.array([[1.0, 1.0, -0.5], [0.5, 3.0, 4.0]])
    value, (da, db) = getattr(jac.ops, op)(a, b, batch=False)
    np.testing.assert_array_equal(value, getattr(np, op)(a, b))
    tie = (a == b).ravel()
    pick = (a > b if op == "maximum" else a < b).ravel()
    np.testing.assert_array_equal(np.diag(da.reshape(6, 6)), np.where(tie, 0.5, pick))
    np.testing.assert_array_equal(np.diag(db.reshape(6, 6)), np.where(tie, 0.5, ~pick))
    check_jacobian(op, a, b, batch=False)        # a central difference at a tie is exactly 1/2 too


def test_maximum_of_a_value_with_itself_has_slope_one():
    x = np.array([0.3, -1.2])
    J = jac.jacobian(lambda x: np.maximum(x, x) + np.minimum(x, x), wrt="x")(x)
    np.testing.assert_array_equal(J, 2 * np.eye(2))


def test_abs_at_zero_and_clip_on_its_bounds():
    x = np.array([-1.0, 0.0, 2.0])
    _, (J,) = jac.ops.abs(x, batch=False)
    np.testing.assert_array_equal(J, np.diag([-1.0, 0.0, 1.0]))
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    y, (J,) = jac.ops.clip(x, -0.5, 0.5, batch=False)
    np.testing.assert_array_equal(y, np.clip(x, -0.5, 0.5))
    np.testing.assert_array_equal(np.diag(J), [0.0, 0.5, 1.0, 0.5, 0.0])
    check_jacobian("clip", x, batch=False, lo=-0.5, hi=0.5)    # central differences agree on the bounds
    _, (J,) = jac.ops.clip(np.array([0.2]), 0.2, 0.2, batch=False)
    assert J[0, 0] == 0.25                                      # both bounds: minimum(maximum(x, lo), hi)


def test_clip_with_array_bounds_is_numpys():
    r = np.random.default_rng(3)
    x, lo, hi = r.normal(size=(3, 4)), -0.3 * np.ones(4), r.uniform(0.2, 0.8, size=(3, 1))
    y, _ = jac.ops.clip(x, lo, hi, batch=False)
    np.testing.assert_array_equal(y, np.clip(x, lo, hi))
    check_jacobian("clip", x, batch=False, lo=lo, hi=hi)


@pytest.mark.parametrize("op, pick", [("amax", np.argmax), ("amin", np.argmin)])
def test_reductions_give_the_slope_to_the_first_extreme_element(op, pick):
    x = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [-1.0, -4.0, 5.0, -4.0]])
    for axis in (None, 0, 1):
        y, (J,) = getattr(jac.ops, op)(x, axis=axis, batch=False)
        np.testing.assert_array_equal(y, (np.max if op == "amax" else np.min)(x, axis=axis))
        expected = np.zeros(np.shape(y) + x.shape)
        if axis is None:
            expected[np.unravel_index(pick(x), x.shape)] = 1
        elif axis == 0:
            for j, i in enumerate(pick(x, axis=0)):
                expected[j, i, j] = 1
        else:
            for i, j in enumerate(pick(x, axis=1)):
                expected[i, i, j] = 1
        np.testing.assert_array_equal(J, expected, err_msg=f"{op} axis={axis}")


def test_reduction_over_several_axes_picks_the_first_in_c_order():
    x = np.zeros((2, 3, 2))
    x[0, 2, 1] = x[1, 0, 1] = x[1, 2, 0] = 1.0
    y, (J,) = jac.ops.amax(x, axis=(0, 1), keepdims=True, batch=False)
    assert y.shape == (1, 1, 2)
    # column 0: the maximum 1 sits only at (1, 2); column 1: at (0, 2) and (1, 0): (0, 2) comes first
    np.testing.assert_array_equal(np.argwhere(J[0, 0, 0]), [[1, 2, 0]])
    np.testing.assert_array_equal(np.argwhere(J[0, 0, 1]), [[0, 2, 1]])


def test_reduction_jacobians_are_masks_over_the_input():
    """The factored form holds one operand of the input's shape (O(input)), never (out x in)."""
    x = np.random.default_rng(4).normal(size=(8, 50))
    for op in (jac.ops.amax, jac.ops.amin):
        for axis, keepdims in ((None, False), (1, False), (0, True), ((0, 1), True)):
            _, (f,) = op.factored(x, axis=axis, keepdims=keepdims)
            assert [np.shape(a) for _, a in f.operands] == [x.shape]
            assert f.dense_shape() == np.shape(np.max(x, axis=axis, keepdims=keepdims)) + x.shape
    for op, args in ((jac.ops.maximum, (x, 0.0)), (jac.ops.where, (x > 0, x, -x)), (jac.ops.abs, (x,)),
                     (jac.ops.clip, (x, -0.5, 0.5))):
        _, facs = op.factored(*args)
        assert all(np.size(a) <= x.size for f in facs for _, a in f.operands)


def test_where_conditions_mean_what_they_mean_in_numpy():
    r = np.random.default_rng(5)
    x, y = r.normal(size=(3, 4)), r.normal(size=4)
    for cond in (x > 0, (x > 0).astype(np.int8), (x > 0).astype(float), np.array(True), True):
        z, (dx, dy) = jac.ops.where(cond, x, y, batch=False)
        np.testing.assert_array_equal(z, np.where(cond, x, y))
        c = np.broadcast_to(np.asarray(cond) != 0, (3, 4)).ravel()
        np.testing.assert_array_equal(np.diag(dx.reshape(12, 12)), c.astype(float))
        check_jacobian("where", cond, x, y, batch=False)
    with pytest.raises(ValueError, match=r"where: shapes do not broadcast: condition \(5,\), x \(3, 4\)"):
        jac.ops.where(np.ones(5, bool), x, y)


def test_errors_name_the_op():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="clip: give at least one of lo and hi"):
        jac.ops.clip(x)
    with pytest.raises(ValueError, match=r"clip: bounds must broadcast to x \(2, 3\)"):
        jac.ops.clip(x, np.zeros((4, 2, 3)))
    with pytest.raises(ValueError, match=r"amax: amax over an empty axis of x \(2, 0\)"):
        jac.ops.amax(np.ones((2, 0)), axis=1)
    with pytest.raises(ValueError, match="amin: axis 2 is out of range"):
        jac.ops.amin(x, axis=2)
    with pytest.raises(ValueError, match=r"maximum: shapes do not broadcast: a \(2, 3\), b \(2,\)"):
        jac.ops.maximum(x, np.ones(2))


def test_a_piecewise_network_in_every_order():
    """A leaky ReLU written with a comparison, a clipped layer and a max-pool over features."""
    r = np.random.default_rng(6)
    x, W, V = r.normal(size=(4, 5)), r.normal(size=(6, 5)), r.normal(size=(3, 6))

    def net(x, W, V):
        z = x @ W.T
        h = np.where(z > 0, z, 0.1 * z)
        g = np.clip(h @ V.T, -1.0, 1.0) + np.abs(np.minimum(z @ V.T, 0.5))
        return np.max(g, axis=1, keepdims=True) - np.min(h, axis=-1, keepdims=True)
    Js = [jac.jacobian(net, wrt=("x", "W"), batched="x", order=o)(x, W, V) for o in ("forward", "reverse", "optimal")]
    numeric = numerical_jacobian(lambda v: net(v, W, V), x)
    per_sample = np.stack([numeric[b, :, b] for b in range(4)])
    np.testing.assert_allclose(Js[0]["x"], per_sample, rtol=1e-6, atol=1e-8)
    numeric_W = numerical_jacobian(lambda v: net(x, v, V), W)
    np.testing.assert_allclose(Js[0]["W"], numeric_W, rtol=1e-6, atol=1e-8)
    for J in Js[1:]:
        for k in ("x", "W"):
            np.testing.assert_allclose(J[k], Js[0][k], rtol=1e-10, atol=1e-12)
