"""Bad input: either a correct, stable result or a clear error naming the op and the argument.

Errors are ValueError/TypeError (JacobianTooLarge for memory) whose message
starts with the op's name and states what was expected and what was given --
never a raw numpy error from deep inside.
"""

from __future__ import annotations

import math
import re
import time
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jacobians as jac
from jacobians import ops
from jacobians.limits import JacobianTooLarge, limited_memory, memory_limit, set_memory_limit


def msg(text: str) -> str:
    """A literal message fragment for pytest.raises(match=...)."""
    return re.escape(text)


# ---------------------------------------------------------------- shapes

def test_linear_inner_size_mismatch():
    with pytest.raises(ValueError, match=msg("linear: expected x (..., D) and W (H, D) with the same D; "
                                             "got x (2, 3), W (4, 5)")):
        ops.linear(np.ones((2, 3)), np.ones((4, 5)))


def test_linear_bias_shape():
    with pytest.raises(ValueError, match=msg("linear: argument b: expected shape (4,) to match W (4, 3); got (3,)")):
        ops.linear(np.ones((2, 3)), np.ones((4, 3)), np.ones(3))
    with pytest.raises(ValueError, match=msg("argument b: expected shape (4,) to match W (4, 3); got (1, 4)")):
        ops.linear(np.ones((2, 3)), np.ones((4, 3)), np.ones((1, 4)))


def test_linear_weight_must_be_a_matrix():
    with pytest.raises(ValueError, match=msg("linear: expected x (..., D) and W (H, D) with the same D; got x (2, 3), W (3,)")):
        ops.linear(np.ones((2, 3)), np.ones(3))


def test_matmul_inner_mismatch():
    with pytest.raises(ValueError, match=msg("matmul: contracted sizes differ: X (2, 3) has 3 columns, "
                                             "Y (4, 5) has 4 rows")):
        ops.matmul(np.ones((2, 3)), np.ones((4, 5)), batch=False)
    with pytest.raises(ValueError, match=msg("matmul: contracted sizes differ: X (3,) has 3 columns, Y (2,) has 2 rows")):
        ops.matmul(np.ones(3), np.ones(2), batch=False)


def test_matmul_leading_axes_do_not_broadcast():
    with pytest.raises(ValueError, match=msg("matmul: leading (batch) axes do not broadcast: X (2, 3, 4), Y (3, 4, 5)")):
        ops.matmul(np.ones((2, 3, 4)), np.ones((3, 4, 5)))


def test_matmul_scalar_factor():
    with pytest.raises(ValueError, match=msg("matmul: arguments must have at least 1 dimension; got X (), Y (3,)")):
        ops.matmul(2.0, np.ones(3), batch=False)


@pytest.mark.parametrize("name", ["add", "subtract", "multiply", "divide"])
def test_binary_ops_do_not_broadcast(name):
    with pytest.raises(ValueError, match=msg(f"{name}: shapes do not broadcast: a (2, 3), b (4,)")):
        ops.get(name)(np.ones((2, 3)), np.ones(4))


def test_dot_shapes():
    with pytest.raises(ValueError, match=msg("dot: expected a (..., n) and b (..., n) with the same n; got a (2, 3), b (2, 4)")):
        ops.dot(np.ones((2, 3)), np.ones((2, 4)))
    # the leading axes are reported with the full shapes
    with pytest.raises(ValueError, match=msg("dot: shapes do not broadcast: a (4, 3), b (5, 3)")):
        ops.dot(np.ones((4, 3)), np.ones((5, 3)))


def test_mse_shape_mismatch():
    with pytest.raises(ValueError, match=msg("mse: arguments yhat and y must have the same shape; got (4, 3) and (4, 2)")):
        ops.mse(np.ones((4, 3)), np.ones((4, 2)))


def test_batch_size_mismatch():
    with pytest.raises(ValueError, match=msg("mse: batch sizes differ along axis 0: yhat has 4, y has 5")):
        ops.mse(np.ones((4, 3)), np.ones((5, 3)))
    with pytest.raises(ValueError, match=msg("mse: arguments yhat and y must have the same shape; got (4, 3) and (5, 3)")):
        ops.mse(np.ones((4, 3)), np.ones((5, 3)), batch=False)
    with pytest.raises(ValueError, match=msg("cross_entropy: batch sizes differ along axis 0: phat has 2, p has 3")):
        ops.cross_entropy(np.full((2, 3), 1 / 3), np.full((3, 3), 1 / 3))


def test_missing_batch_axis():
    with pytest.raises(ValueError, match=msg("linear: argument x needs a leading batch axis with batch=True: expected "
                                             "at least 2 dimensions, got shape (3,) (pass batch=False for one sample)")):
        ops.linear(np.ones(3), np.ones((4, 3)))
    z, (dx, dW) = ops.linear(np.ones(3), np.ones((4, 3)), batch=False)   # one sample is fine
    assert z.shape == (4,) and dx.shape == (4, 3) and dW.shape == (4, 4, 3)
    with pytest.raises(ValueError, match=msg("softmax: argument x needs a leading batch axis with batch=True: "
                                             "expected at least 2 dimensions, got shape (3,)")):
        ops.softmax(np.ones(3))
    with pytest.raises(ValueError, match=msg("exp: argument x needs a leading batch axis with batch=True: "
                                             "expected at least 1 dimensions, got shape ()")):
        ops.exp(1.0)


def test_layer_norm_and_batch_norm_parameter_shapes():
    with pytest.raises(ValueError, match=msg("layer_norm: argument gamma: expected shape (4,) to match x (2, 4); got (3,)")):
        ops.layer_norm(np.ones((2, 4)), np.ones(3))
    with pytest.raises(ValueError, match=msg("batch_norm: argument beta: expected shape (4,) to match x (2, 4); got (2, 4)")):
        ops.batch_norm(np.ones((2, 4)), None, np.ones((2, 4)))


def test_reshape_and_transpose_and_axes():
    with pytest.raises(ValueError, match=msg("reshape: cannot reshape x of shape (2, 3) to (4,)")):
        ops.reshape(np.ones((2, 3)), (4,))
    with pytest.raises(ValueError, match=msg("transpose: axis 5 is out of range for an array of 2 dimensions")):
        ops.transpose(np.ones((2, 3)), axes=(0, 5))
    with pytest.raises(ValueError, match=msg("transpose: axes (0,) is not a permutation of the 2 axes of x (2, 3)")):
        ops.transpose(np.ones((2, 3)), axes=(0,))
    with pytest.raises(ValueError, match=msg("transpose: repeated axis in (1, 1)")):
        ops.transpose(np.ones((2, 3)), axes=(1, 1))
    with pytest.raises(ValueError, match=msg("sum: axis 2 is out of range for an array of 2 dimensions")):
        ops.sum(np.ones((2, 3)), axis=2)
    with pytest.raises(ValueError, match=msg("mean: repeated axis in (0, -2)")):
        ops.mean(np.ones((2, 3)), axis=(0, -2))
    with pytest.raises(TypeError, match=msg("sum: axis must be an integer or a tuple of integers; got 1.5")):
        ops.sum(np.ones((2, 3)), axis=1.5)
    with pytest.raises(ValueError, match=msg("mean: mean over an empty axis of shape (2, 0)")):
        ops.mean(np.ones((2, 0)), axis=1)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_empty_class_axis(name):
    with pytest.raises(ValueError, match=msg(f"{name}: argument x must have at least one entry along its last axis")):
        ops.get(name)(np.ones((2, 0)))


def test_normalizations_need_data():
    with pytest.raises(ValueError, match=msg("layer_norm: argument x must have at least one entry along its last axis "
                                             "(the normalized axis); got shape (2, 0)")):
        ops.layer_norm(np.ones((2, 0)))
    with pytest.raises(ValueError, match=msg("batch_norm: argument x needs at least one sample along axis 0 "
                                             "(the batch statistics); got shape (0, 3)")):
        ops.batch_norm(np.ones((0, 3)))


def test_empty_arrays_are_fine_where_defined():
    y, (dy,) = ops.reshape(np.ones((1, 0, 2)), (1, -1))        # the zero-size axis does not tie the rest
    assert y.shape == (1, 0) and dy.shape == (1, 0, 0, 2)
    y, (dy,) = ops.exp(np.ones((0, 3)))
    assert y.shape == (0, 3) and dy.shape == (0, 3, 3)
    s, (ds,) = ops.sum(np.ones((2, 0)))
    assert s == 0.0 and ds.shape == (2, 0)


# ---------------------------------------------------------------- dtypes and non-finite input

@pytest.mark.parametrize("value, dtype", [(np.ones((2, 3), dtype=np.int64), "int64"),
                                          (np.ones((2, 3), dtype=np.int32), "int32"),
                                          (np.ones((2, 3), dtype=bool), "bool"),
                                          (np.ones((2, 3), dtype=complex), "complex128"),
                                          ([[1, 2, 3], [4, 5, 6]], "int64")])
def test_non_float_dtype_is_a_type_error(value, dtype):
    with pytest.raises(TypeError, match=msg(f"exp: argument x must be a floating-point array (float32 or float64); "
                                            f"got dtype {dtype} with shape (2, 3)")):
        ops.exp(value)


def test_non_float_parameter_is_named():
    with pytest.raises(TypeError, match=msg("linear: argument W must be a floating-point array (float32 or float64); "
                                            "got dtype int64 with shape (4, 3)")):
        ops.linear(np.ones((2, 3)), np.ones((4, 3), dtype=np.int64))
    with pytest.raises(TypeError, match=msg("add: argument b must be a floating-point array; got a bool")):
        ops.add(np.ones((2, 3)), True)
    with pytest.raises(TypeError, match=msg("multiply: argument b must be a floating-point array (float32 or float64); "
                                            "got dtype <U1 with shape ()")):
        ops.multiply(np.ones((2, 3)), "a")
    with pytest.raises(TypeError, match=msg("softmax_cross_entropy: argument target must be an integer array; got dtype bool")):
        ops.softmax_cross_entropy(np.ones((2, 3)), np.array([True, False]))


def test_python_number_is_a_constant():
    y, (da, db) = ops.add(np.ones((2, 3)), 2)
    np.testing.assert_array_equal(y, np.full((2, 3), 3.0))
    assert da.shape == (2, 3, 3) and db.shape == (2, 3)
    np.testing.assert_array_equal(db, np.ones((2, 3)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(bad):
    x = np.ones((2, 3))
    x[1, 2] = bad
    with pytest.raises(ValueError, match=msg("tanh: argument x contains NaN or inf (shape (2, 3))")):
        ops.tanh(x)
    with pytest.raises(ValueError, match=msg("linear: argument W contains NaN or inf (shape (2, 3))")):
        ops.linear(np.ones((4, 3)), x)
    with pytest.raises(ValueError, match=msg("softmax_cross_entropy: argument target contains NaN or inf (shape (2, 3))")):
        ops.softmax_cross_entropy(np.ones((2, 3)), x)


# ---------------------------------------------------------------- stability and domains

E = math.exp(-1.0)
Z = 1.0 + E   # sum of exp(logits - max) for logits [1000, 999, -1000]


def test_softmax_of_huge_logits_is_finite_and_correct():
    x = np.array([[1000.0, 999.0, -1000.0], [1000.0, 0.0, -1000.0]])
    q, (dq,) = ops.softmax(x)
    expected = np.array([[1 / Z, E / Z, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(q, expected, atol=1e-300)
    np.testing.assert_allclose(dq, np.einsum("bi,ij->bij", expected, np.eye(3))
                               - expected[:, :, None] * expected[:, None, :], atol=1e-300)
    assert np.isfinite(dq).all()


def test_log_softmax_and_logsumexp_of_huge_logits():
    x = np.array([[1000.0, 999.0, -1000.0]])
    y, (dy,) = ops.log_softmax(x)
    # x - logsumexp(x) cancels 1000.31...: the error is a few ulps of 1000, not of the result
    np.testing.assert_allclose(y, [[-math.log(Z), -1 - math.log(Z), -2000 - math.log(Z)]], rtol=1e-15, atol=1e-12)
    q = np.array([1 / Z, E / Z, 0.0])
    np.testing.assert_allclose(dy[0], np.eye(3) - q[None, :], atol=1e-300)
    s, (ds,) = ops.logsumexp(x)
    np.testing.assert_allclose(s, [1000 + math.log(Z)], rtol=1e-15)
    np.testing.assert_allclose(ds, [q], atol=1e-300)


def test_softmax_cross_entropy_of_huge_logits():
    x = np.array([[1000.0, 999.0, -1000.0]] * 3)
    labels = np.array([0, 1, 2])
    loss, (dl,) = ops.softmax_cross_entropy(x, labels)
    np.testing.assert_allclose(loss, [math.log(Z), 1 + math.log(Z), 2000 + math.log(Z)], rtol=1e-15, atol=1e-12)
    q = np.array([1 / Z, E / Z, 0.0])
    np.testing.assert_allclose(dl, q[None, :] - np.eye(3), atol=1e-300)
    loss1, (dl1,) = ops.softmax_cross_entropy(x, np.eye(3))
    np.testing.assert_allclose(loss1, loss)
    np.testing.assert_allclose(dl1, dl)


def test_other_stable_ops_at_extremes():
    x = np.array([[-1000.0, 0.0, 1000.0]])
    s, (ds,) = ops.sigmoid(x)
    np.testing.assert_allclose(s, [[0.0, 0.5, 1.0]])
    np.testing.assert_allclose(np.diagonal(ds[0]), [0.0, 0.25, 0.0])
    p, (dp,) = ops.softplus(x)
    np.testing.assert_allclose(p, [[0.0, math.log(2.0), 1000.0]])
    np.testing.assert_allclose(np.diagonal(dp[0]), [0.0, 0.5, 1.0])


def test_overflowing_value_is_an_error():
    with pytest.raises(ValueError, match=msg("exp: the value is not finite (overflow or a value outside the domain) "
                                             "for x (1, 1)")):
        ops.exp(np.array([[1000.0]]))
    with pytest.raises(ValueError, match=msg("square: the value is not finite")):
        ops.square(np.array([[1e200]]))


def test_overflowing_derivative_is_an_error():
    # the value 1e300 is finite, its slope -1.5e500 is not
    with pytest.raises(ValueError, match=msg("power: the Jacobian w.r.t. x is not finite (a derivative overflows) for x (1, 1)")):
        ops.power(np.array([[1e-200]]), p=-1.5)
    with pytest.raises(ValueError, match=msg("log: the Jacobian w.r.t. x is not finite")):
        ops.log(np.array([[1e-320]]))


@pytest.mark.parametrize("name", ["log", "sqrt"])
@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_log_and_sqrt_of_non_positive(name, bad):
    x = np.array([[1.0, 2.0], [3.0, bad]])
    with pytest.raises(ValueError, match=msg(f"{name}: argument x must be positive; got {bad!r} at flat index 3 (shape (2, 2))")):
        ops.get(name)(x)


def test_power_domain():
    with pytest.raises(ValueError, match=msg("power: argument x must be positive for a non-integer or negative exponent; "
                                             "got -1.0 at flat index 0")):
        ops.power(np.array([[-1.0]]), p=0.5)
    y, (dy,) = ops.power(np.array([[-2.0]]), p=2)       # integer powers allow any sign
    assert y[0, 0] == 4.0 and dy[0, 0, 0] == -4.0


def test_cross_entropy_needs_positive_phat():
    with pytest.raises(ValueError, match=msg("cross_entropy: argument phat must be positive (predicted probabilities); got min 0.0")):
        ops.cross_entropy(np.array([[0.0, 1.0]]), np.array([[0.0, 1.0]]))


def test_norm_of_a_zero_row():
    with pytest.raises(ValueError, match=msg("norm: the Jacobian is undefined where the norm is 0 (x is zero along "
                                             "axis -1 at index (1, 0); x (2, 2))")):
        ops.norm(np.array([[3.0, 4.0], [0.0, 0.0]]), axis=-1)
    n, (dn,) = ops.norm(np.array([[3.0, 4.0]]), axis=-1)
    assert n[0] == 5.0
    np.testing.assert_allclose(dn, [[0.6, 0.8]])


def test_divide_by_zero():
    with pytest.raises(ValueError, match=msg("divide: argument b must be nonzero; got 0.0 at flat index 1 (shape (2,))")):
        ops.divide(np.ones((3, 2)), np.array([1.0, 0.0]))


def test_labels():
    logits = np.zeros((2, 3))
    with pytest.raises(ValueError, match=msg("softmax_cross_entropy: labels must lie in [0, 3); got min 0, max 3")):
        ops.softmax_cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(ValueError, match=msg("softmax_cross_entropy: labels must lie in [0, 3); got min -1, max 2")):
        ops.softmax_cross_entropy(logits, np.array([-1, 2]))
    with pytest.raises(ValueError, match=msg("softmax_cross_entropy: integer labels must have shape (2,) "
                                             "(logits (2, 3) without the class axis); got (2, 1)")):
        ops.softmax_cross_entropy(logits, np.array([[0], [1]]))
    with pytest.raises(ValueError, match=msg("softmax_cross_entropy: arguments logits and target must have the same shape; "
                                             "got (2, 3) and (2,)")):
        ops.softmax_cross_entropy(logits, np.array([0.0, 1.0]))   # float targets are probabilities


def test_static_parameters():
    with pytest.raises(TypeError, match=msg("power: argument p must be a real number; got 'a'")):
        ops.power(np.ones((2, 2)), p="a")
    with pytest.raises(ValueError, match=msg("power: argument p must be finite; got inf")):
        ops.power(np.ones((2, 2)), p=float("inf"))
    with pytest.raises(TypeError, match=msg("leaky_relu: argument alpha must be a real number; got None")):
        ops.leaky_relu(np.ones((2, 2)), alpha=None)
    with pytest.raises(TypeError, match=msg("layer_norm: argument eps must be a real number; got 'x'")):
        ops.layer_norm(np.ones((2, 2)), eps="x")


# ---------------------------------------------------------------- names and signatures

def test_unknown_op_lists_the_ops():
    with pytest.raises(NotImplementedError, match=msg("no op named 'conv2d'; the ops are: add, ")) as e:
        ops.get("conv2d")
    for name in ops.OPS:
        assert name in str(e.value)


def test_wrong_keyword_arguments():
    x, W = np.ones((2, 3)), np.ones((4, 3))
    with pytest.raises(TypeError, match=msg("linear: got an unexpected keyword argument 'bias'; "
                                            "signature is linear(x, W, b=None)")):
        ops.linear(x, W, bias=np.ones(4))
    with pytest.raises(TypeError, match=msg("linear: missing a required argument: 'W'; signature is linear(x, W, b=None)")):
        ops.linear(x)
    with pytest.raises(TypeError, match=msg("linear: too many positional arguments; signature is linear(x, W, b=None)")):
        ops.linear(x, W, np.ones(4), np.ones(4))
    with pytest.raises(TypeError, match=msg("power: missing a required argument: 'p'; signature is power(x, p)")):
        ops.power(x)
    with pytest.raises(TypeError, match=msg("sum: got an unexpected keyword argument 'axes'; "
                                            "signature is sum(x, axis=None, keepdims=False)")):
        ops.sum(x, axes=0)
    with pytest.raises(TypeError, match=msg("leaky_relu: got an unexpected keyword argument 'slope'; "
                                            "signature is leaky_relu(x, alpha=0.01)")):
        ops.leaky_relu(x, slope=0.1)


# ---------------------------------------------------------------- the memory guard

def peak_bytes(f) -> tuple[int, Exception | None]:
    """Peak memory traced while ``f`` runs (numpy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        f()
        err = None
    except Exception as e:  # handed back to the caller
        err = e
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, err


def test_guard_names_op_argument_shape_and_size():
    x, W = np.ones((2, 64)), np.ones((64, 64))
    with limited_memory(1 << 20):
        with pytest.raises(JacobianTooLarge, match=msg("linear: the Jacobian w.r.t. W of shape (2, 64, 64, 64) needs "
                                                       "4.0 MiB, over the memory limit of 1.0 MiB")):
            ops.linear(x, W)
        _, (dx, dW) = ops.linear(x[:, :8], W[:8, :8])   # small Jacobians still pass
        assert dx.shape == (2, 8, 8) and dW.shape == (2, 8, 8, 8)
    assert memory_limit() > 1 << 20                     # restored


def test_guard_refuses_before_allocating():
    X = np.ones((2000, 2000))    # (2000,2000,2000,2000) float64 would be 116 TiB
    with limited_memory(1 << 20):
        peak, err = peak_bytes(lambda: ops.matmul(X, X, batch=False))
    assert isinstance(err, JacobianTooLarge), err
    assert re.search(msg("matmul: the Jacobian w.r.t. X of shape (2000, 2000, 2000, 2000) needs 116.4 TiB"), str(err))
    assert peak < 100 * 2**20, f"{peak} bytes traced"   # the 32 MB value, not the Jacobian


def test_guard_with_default_limit_is_quick():
    X = np.ones((2000, 2000))
    assert memory_limit() < 116 * 2**40
    t = time.perf_counter()
    with pytest.raises(JacobianTooLarge, match=msg("matmul: the Jacobian w.r.t. X of shape (2000, 2000, 2000, 2000)")):
        ops.matmul(X, X, batch=False)
    assert time.perf_counter() - t < 10.0


@pytest.mark.parametrize("name, x, params, shape", [
    ("softmax", (1, 1000), {}, (1, 1000, 1000)),
    ("log_softmax", (1, 1000), {}, (1, 1000, 1000)),
    ("layer_norm", (1, 1000), {}, (1, 1000, 1000)),
    ("batch_norm", (1000, 1), {}, (1000, 1000, 1)),
    ("reshape", (1, 1000), {"shape": (1000,)}, (1000, 1, 1000)),
])
def test_guard_on_dense_factors(name, x, params, shape):
    """Rules that build a dense block are refused before the block exists."""
    x = np.linspace(-1.0, 1.0, math.prod(x)).reshape(x)
    with limited_memory(1 << 20):
        peak, err = peak_bytes(lambda: ops.get(name)(x, **params))
    assert isinstance(err, JacobianTooLarge), err
    assert re.search(msg(f"{name}: a factor of the Jacobian w.r.t. x of shape {shape} needs 7.6 MiB"), str(err)), err
    assert peak < 1 << 20, f"{peak} bytes traced"


def test_set_memory_limit_validates():
    with pytest.raises(ValueError, match=msg("set_memory_limit: nbytes must be positive; got 0")):
        set_memory_limit(0)
    previous = set_memory_limit(12345)
    try:
        assert memory_limit() == 12345
    finally:
        set_memory_limit(previous)
    assert jac.memory_limit() == previous


# ---------------------------------------------------------------- fuzz: no raw numpy errors

PARAMS = {
    "sum": st.fixed_dictionaries({"axis": st.sampled_from([None, 0, 1, -1, 2, (0, 1), (0, 0)]),
                                  "keepdims": st.booleans()}),
    "mean": st.fixed_dictionaries({"axis": st.sampled_from([None, 0, 1, -1, 2, (0, 1)]),
                                   "keepdims": st.booleans()}),
    "reshape": st.fixed_dictionaries({"shape": st.sampled_from([(-1,), (1, -1), (2, -1), (6,), (3, 2), (-1, -1)])}),
    "transpose": st.fixed_dictionaries({"axes": st.sampled_from([None, (1, 0), (0, 2, 1), (0,), (0, 5), (1, 1)])}),
    "power": st.fixed_dictionaries({"p": st.sampled_from([2, 3, 0.5, -1.5])}),
    "leaky_relu": st.fixed_dictionaries({"alpha": st.sampled_from([0.01, 0.2])}),
    "gelu": st.fixed_dictionaries({"approximate": st.sampled_from(["none", "tanh"])}),
}

shapes = st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple)


@st.composite
def op_call(draw, name):
    op = ops.get(name)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    args = []
    for arg in op.arrays:
        shape = draw(shapes)
        if name == "softmax_cross_entropy" and arg == "target" and draw(st.booleans()):
            args.append(rng.integers(0, 3, size=shape))
        elif op.signature.parameters[arg].default is None and draw(st.booleans()):   # optional
            args.append(None)
        else:
            sign = -1.0 if draw(st.booleans()) and draw(st.booleans()) else 1.0
            args.append(sign * rng.uniform(0.1, 2.0, size=shape))
    params = draw(PARAMS.get(name, st.just({})))
    return args, params, draw(st.booleans())


@pytest.mark.parametrize("name", sorted(ops.OPS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_shapes_give_a_result_or_a_clear_error(name, data):
    args, params, batch = data.draw(op_call(name))
    op = ops.get(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # no numpy RuntimeWarning either
        try:
            value, jacs = op(*args, batch=batch, **params)
        except (ValueError, TypeError) as e:
            assert str(e).startswith(f"{name}: "), f"{type(e).__name__} without the op's name: {e}"
            return
    arrays = [a for n, a in zip(op.arrays, args) if a is not None and n not in op.nondiff]
    assert len(jacs) == len(arrays)
    for a, J in zip(arrays, jacs):
        full = value.shape + a.shape
        per_sample = value.shape + a.shape[1:]
        assert J.shape == full or (batch and J.shape == per_sample and value.shape[:1] == a.shape[:1]), \
            (name, value.shape, a.shape, J.shape)
        assert np.isfinite(J).all()
