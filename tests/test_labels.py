"""The one label allocator (``jacobians.labels``) and the op metadata that rides on the registry.

Labels never run out: ops on arrays of 30 dimensions (more than the 26 letters of either
case, and more than half of numpy's 64-dimension limit once ``out + in`` axes are counted)
give correct Jacobians, checked against central differences.
"""

from __future__ import annotations

import functools
import string

import numpy as np
import pytest

import jacobians as jac
from jacobians import labels
from jacobians.factored import Factored
from jacobians.ops import OPS
from jacobians.testing import check_jacobian


# ---------------------------------------------------------------- the allocator

def test_small_counts_are_the_ascii_letters():
    assert labels.lead(3) == "ABC" and labels.core(4) == "abcd"
    assert labels.lead(26) == string.ascii_uppercase and labels.core(26) == string.ascii_lowercase
    assert labels.core(2, start=13) == "no"                      # reshape's input labels
    assert "".join(next(g) for g in [labels.fresh("nmp")] * 1 for _ in range(3)) == "abc"


def test_lead_and_core_never_run_out_and_never_meet():
    L, C = labels.lead(300), labels.core(300)
    assert len(set(L)) == len(set(C)) == 300                     # one character per label, all distinct
    assert not set(L) & set(C)
    assert labels.lead(10, start=290) == L[290:] and labels.core(10, start=290) == C[290:]
    assert not set(L) & set(",->. ")                             # nothing einsum parses as syntax


def test_fresh_skips_what_is_taken_and_stays_in_the_core_sequence():
    taken = labels.core(40)
    gen = labels.fresh(taken)
    got = [next(gen) for _ in range(50)]
    assert got == list(labels.core(50, start=40))
    assert not set(got) & set(labels.lead(200))


def test_prime_swaps_ascii_case_only():
    assert labels.prime("h") == "H" and labels.prime("A") == "a"
    beyond = labels.core(1, start=40)
    assert labels.prime(beyond) == beyond                        # the caller then takes a fresh label


def test_factored_display_past_the_letters():
    """A delta on a label with no ASCII partner gets a fresh primed label in the display."""
    out = labels.lead(30)
    f = Factored(out, out, (1,) * 30, (1,) * 30, (), np.float64)
    sub = f.subscripts()
    terms, result = sub.split("->")
    assert len(result) == 60 and len(set(result)) == 60
    assert all(len(t) == 2 for t in terms.split(","))
    assert np.array_equal(f.dense(), np.ones((1,) * 60))


# ---------------------------------------------------------------- ops on 30 dimensions

RANK = 30


def _arr(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


def _x30():
    return _arr((2,) + (1,) * (RANK - 2) + (3,))                 # 30 dims, 6 entries


@pytest.mark.parametrize("batch", [True, False])
def test_add_30_dims_with_broadcasting(batch):
    a = _x30()
    b = _arr((1,) * (RANK - 2) + (3,), seed=1)                   # 29 dims, broadcast along axis 0 of a
    results = check_jacobian("add", a, b, batch=batch)
    assert [r.argument for r in results] == ["a", "b"] and all(r.mode == "full" for r in results)


@pytest.mark.parametrize("batch", [True, False])
def test_tanh_30_dims(batch):
    check_jacobian("tanh", _x30(), batch=batch)


@pytest.mark.parametrize("axis, keepdims", [(None, False), ((1, 5, 29), True), ((3, 29), False), (0, True)])
def test_sum_30_dims(axis, keepdims):
    check_jacobian("sum", _x30(), axis=axis, keepdims=keepdims)


@pytest.mark.parametrize("shape", [
    (2,) + (1,) * (RANK - 2) + (3,) + (1,),                      # ties all 30 axes of x (the old cap was 13)
    (6,) + (1,) * (RANK - 1),                                    # nothing tied: 30 output and 30 input core labels
    (2, 3) + (1,) * (RANK - 2),
])
def test_reshape_30_dims(shape):
    check_jacobian("reshape", _x30(), shape=shape, batch=False)
    if shape[0] == 2:
        check_jacobian("reshape", _x30(), shape=shape)


def test_reshape_ties_every_shared_leading_axis():
    x = _arr((2,) + (1,) * 27 + (2, 3))
    _, (f,) = jac.ops.reshape.factored(x, (2,) + (1,) * 27 + (3, 2))
    assert len(f.deltas) == 28                                   # was capped at 13 tied axes


@pytest.mark.parametrize("axes", [None, tuple(range(1, RANK)) + (0,), (0,) + tuple(reversed(range(1, RANK)))])
def test_transpose_30_dims(axes):
    check_jacobian("transpose", _x30(), axes=axes, batch=False)
    if axes is not None and axes[0] == 0:
        check_jacobian("transpose", _x30(), axes=axes)


@pytest.mark.parametrize("batch", [True, False])
def test_matmul_30_dims(batch):
    X = _arr((2,) + (1,) * (RANK - 3) + (2, 3))
    Y = _arr((1,) * (RANK - 2) + (3, 2), seed=1)                 # broadcast along X's axis 0: a fresh label
    check_jacobian("matmul", X, Y, batch=batch)


def test_jacobian_of_a_function_on_30_dims():
    x = _x30()
    J = jac.jacobian(lambda x: jac.fn.sum(jac.fn.tanh(x), axis=RANK - 1), wrt="x")(x)
    expected = np.zeros(x.shape[:-1] + x.shape)
    d = 1 - np.tanh(x) ** 2
    for i in range(2):
        for k in range(3):
            expected[(i,) + (0,) * (RANK - 2) + (i,) + (0,) * (RANK - 2) + (k,)] = d[(i,) + (0,) * (RANK - 2) + (k,)]
    np.testing.assert_allclose(J, expected, rtol=1e-12, atol=0)


# ---------------------------------------------------------------- op metadata

FAMILIES = {
    "linalg": {"linear", "matmul", "dot", "norm", "outer", "kron", "trace", "diagonal", "inv", "det", "slogdet",
               "solve", "cholesky"},
    "contractions": {"einsum"},
    "elementwise": {"add", "subtract", "multiply", "divide", "negative", "exp", "log", "sigmoid", "tanh", "relu",
                    "leaky_relu", "softplus", "square", "sqrt", "power", "arctan2", "logaddexp", "hypot", "sign",
                    "cbrt", "reciprocal", "expm1", "exp2", "log1p", "log2", "log10", "sin", "cos", "tan", "arcsin",
                    "arccos", "arctan", "sinh", "cosh", "arcsinh", "arccosh", "arctanh", "erf", "erfc",
                    "log_sigmoid", "silu", "swish", "gelu"},
    "reductions": {"sum", "mean"},
    "shape": {"reshape", "transpose"},
    "normalization": {"softmax", "log_softmax", "logsumexp", "layer_norm", "batch_norm"},
    "losses": {"mse", "cross_entropy", "softmax_cross_entropy"},
}

NUMPY = {"add": ("add",), "subtract": ("subtract",), "multiply": ("multiply",), "divide": ("divide", "true_divide"),
         "negative": ("negative",), "exp": ("exp",), "log": ("log",), "tanh": ("tanh",), "square": ("square",),
         "sqrt": ("sqrt",), "matmul": ("matmul",), "dot": ("vecdot",),
         "einsum": ("einsum",), "kron": ("kron",), "trace": ("trace",), "diagonal": ("diagonal",),
         "inv": ("linalg.inv",), "det": ("linalg.det",), "solve": ("linalg.solve",), "norm": ("linalg.norm",)}
_UNARY_UFUNCS = ("sign cbrt reciprocal expm1 exp2 log1p log2 log10 sin cos tan arcsin arccos arctan sinh cosh "
                 "arcsinh arccosh arctanh").split()
NUMPY.update({n: (n,) for n in _UNARY_UFUNCS + ["arctan2", "logaddexp", "hypot"]})


def test_every_op_has_a_family_module_and_a_formula():
    assert {n for names in FAMILIES.values() for n in names} == set(OPS)
    for family, names in FAMILIES.items():
        module = getattr(jac.ops, family)
        for name in names:
            op = OPS[name]
            assert op.family == family and getattr(module, name) is op and getattr(jac.ops, name) is op
            assert op.formula and "\n" not in op.formula, name


def test_numpy_names_are_exactly_these():
    assert {n: op.numpy for n, op in OPS.items() if op.numpy} == NUMPY


# shapes numpy accepts positionally, for each op with numpy names: 1-D matmul factors included
NUMPY_CASES = {
    "add": [((2, 3), (3,)), ((4, 1, 3), (2, 1)), ((), (2,))],
    "subtract": [((2, 3), (2, 1)), ((3,), ())],
    "multiply": [((2, 3), (3,)), ((1, 3), (2, 1))],
    "divide": [((2, 3), (3,)), ((3,), (2, 3))],
    "negative": [((2, 3),), ((),)],
    "exp": [((2, 3),), ((),)],
    "log": [((2, 3),), ((4,),)],
    "tanh": [((2, 3),), ((),)],
    "square": [((2, 3),)],
    "sqrt": [((2, 3),), ((),)],
    "matmul": [((2, 3), (3, 4)), ((3,), (3,)), ((3,), (2, 3, 4)), ((5, 2, 3), (3,)), ((5, 1, 2, 3), (4, 3, 2))],
    "dot": [((2, 3), (3,)), ((3,), (3,)), ((4, 1, 3), (2, 3))],
    "kron": [((2, 3), (3,)), ((2,), (2, 2)), ((2, 1, 2), (3, 2))],
    "trace": [((3, 3),), ((2, 3, 4),)],
    "diagonal": [((3, 3),), ((2, 3, 4),)],
    "inv": [((3, 3),), ((2, 3, 3),)],
    "det": [((3, 3),), ((2, 3, 3),)],
    "solve": [((3, 3), (3,)), ((2, 3, 3), (3,)), ((2, 3, 3), (2, 3, 2)), ((3, 3), (4, 3, 1))],
    "norm": [((3,),), ((2, 3),), ((2, 3, 4),)],
}
NUMPY_CASES.update({n: [((2, 3),), ((),)] for n in _UNARY_UFUNCS})
NUMPY_CASES.update({n: [((2, 3), (3,)), ((1, 3), (2, 1))] for n in ("arctan2", "logaddexp", "hypot")})
RANGES = {"arcsin": (-0.9, 0.9), "arccos": (-0.9, 0.9), "arctanh": (-0.9, 0.9), "tan": (-1.0, 1.0),
          "arccosh": (1.5, 3.0)}   # default (0.5, 2.0)

# the subscripts numpy's einsum takes first, before the operands
NUMPY_LEADING = {"einsum": [("ij,jk->ik", (2, 3), (3, 4)), ("...ii->...i", (2, 3, 3)), ("i,i", (3,), (3,))]}


@pytest.mark.parametrize("name", sorted(NUMPY))
def test_numpy_names_have_the_same_values(name):
    op = OPS[name]
    assert set(NUMPY_CASES) | set(NUMPY_LEADING) == set(NUMPY)
    rng = np.random.default_rng(7)
    for case in NUMPY_CASES.get(name, NUMPY_LEADING.get(name)):
        lead, shapes = (case[:1], case[1:]) if name in NUMPY_LEADING else ((), case)
        args = [*lead, *(rng.uniform(*RANGES.get(name, (0.5, 2.0)), size=s) for s in shapes)]   # inside every op's domain
        value, _ = op(*args, batch=False)
        for np_name in op.numpy:
            ref = functools.reduce(getattr, np_name.split("."), np)(*args)
            assert value.shape == np.shape(ref), (name, np_name, shapes)
            np.testing.assert_allclose(value, ref, rtol=1e-14, atol=0, err_msg=f"{name} vs np.{np_name} {shapes}")
