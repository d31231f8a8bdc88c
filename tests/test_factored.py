"""The factored Jacobian itself: labels, deltas, operands, and the one materializer."""

from __future__ import annotations

import numpy as np
import pytest

import jacobians as jac
from jacobians import Factored
from jacobians.limits import JacobianTooLarge, limited_memory

B, D, H = 3, 4, 2


@pytest.fixture
def xWb():
    rng = np.random.default_rng(0)
    return rng.normal(size=(B, D)), rng.normal(size=(H, D)), rng.normal(size=H)


def eyes(f: Factored) -> list[np.ndarray]:
    """The identity matrices ``subscripts()`` writes for the deltas, in its order."""
    return [np.eye(f.sizes[label]) for label in f.deltas]


# ---------------------------------------------------------------- linear, as the op builds it

def test_linear_forms(xWb):
    x, W, b = xWb
    z, (fx, fW, fb) = jac.ops.linear.factored(x, W, b)
    np.testing.assert_allclose(z, x @ W.T + b)

    # dz/dx: delta on the batch axis, W as the only operand
    assert (fx.out, fx.inp, fx.deltas, fx.per_sample) == ("Ah", "Ad", "A", True)
    assert fx.subscripts() == "hd,Aa->Ahad"
    assert [s for s, _ in fx.operands] == ["hd"] and fx.operands[0][1] is W

    # dz/dW: delta on h, x as the operand; the batch axis belongs to the output only
    assert (fW.out, fW.inp, fW.deltas, fW.per_sample) == ("Ah", "hd", "h", False)
    assert fW.subscripts() == "Ad,hH->AhHd"

    # dz/db: a delta on h, no operand at all; A is a factor of ones
    assert (fb.out, fb.inp, fb.deltas, fb.per_sample, fb.operands) == ("Ah", "h", "h", False, ())
    assert fb.subscripts() == "hH->AhH"

    assert fx.sizes == {"A": B, "h": H, "d": D}
    assert fx.out_shape == fW.out_shape == fb.out_shape == (B, H)
    assert (fx.in_shape, fW.in_shape, fb.in_shape) == ((B, D), (H, D), (H,))


def test_linear_dense_with_and_without_collapse(xWb):
    x, W, b = xWb
    _, (fx, fW, fb) = jac.ops.linear.factored(x, W, b)

    full = fx.dense()
    assert full.shape == fx.dense_shape() == (B, H, B, D)
    np.testing.assert_array_equal(full, np.einsum("ac,hd->ahcd", np.eye(B), W))
    per = fx.dense(collapse_batch=True)
    assert per.shape == fx.dense_shape(collapse_batch=True) == (B, H, D)
    np.testing.assert_array_equal(per, np.broadcast_to(W, (B, H, D)))

    # not per-sample: collapse_batch changes nothing
    for f, shape in ((fW, (B, H, H, D)), (fb, (B, H, H))):
        assert f.dense_shape() == f.dense_shape(collapse_batch=True) == shape
        np.testing.assert_array_equal(f.dense(), f.dense(collapse_batch=True))
    np.testing.assert_array_equal(fW.dense(), np.einsum("ij,bk->bijk", np.eye(H), x))
    np.testing.assert_array_equal(fb.dense(), np.broadcast_to(np.eye(H), (B, H, H)))


def test_subscripts_reproduce_dense(xWb):
    """``subscripts()`` is a valid einsum over the operands and one eye per delta."""
    x, W, b = xWb
    _, (fx, fW, _) = jac.ops.linear.factored(x, W, b)
    for f in (fx, fW):
        out = np.einsum(f.subscripts(), *[a for _, a in f.operands], *eyes(f))
        np.testing.assert_allclose(out, f.dense())


def test_subscripts_avoid_label_clashes():
    # a (1, D) row times X (B, D): the row's broadcast axis is labelled "a", so the
    # primed batch label cannot be "a" as well
    rng = np.random.default_rng(1)
    row, X = rng.normal(size=(1, D)), rng.normal(size=(B, D))
    _, (frow, fX) = jac.ops.multiply.factored(row, X)
    assert (fX.out, fX.inp, fX.deltas) == ("AB", "AB", "AB")
    assert fX.operands[0][0] == "aB"
    sub = fX.subscripts()
    assert sub == "aB,Ab,Bc->ABbc"
    out = np.einsum(sub, row, np.eye(B), np.eye(D))
    np.testing.assert_allclose(out, fX.dense())
    np.testing.assert_allclose(fX.dense(collapse_batch=True), np.broadcast_to(np.diag(row[0]), (B, D, D)))
    assert frow.subscripts() == "AB,Bb->ABab" and not frow.per_sample


# ---------------------------------------------------------------- built by hand

def test_docstring_examples():
    rng = np.random.default_rng(2)
    x, W = rng.normal(size=(B, D)), rng.normal(size=(H, D))
    s = rng.uniform(0.1, 0.9, size=(B, H))
    fx = Factored("bh", "bd", (B, H), (B, D), (("hd", W),))
    fW = Factored("bh", "hd", (B, H), (H, D), (("bd", x),))
    fs = Factored("bh", "bh", (B, H), (B, H), (("bh", s * (1 - s)),))
    assert (fx.deltas, fW.deltas, fs.deltas) == ("b", "h", "bh")
    assert (fx.per_sample, fW.per_sample, fs.per_sample) == (True, False, True)
    assert fs.subscripts() == "bh,bB,hH->bhBH"
    np.testing.assert_allclose(fs.dense(collapse_batch=True), np.einsum("bi,ij->bij", s * (1 - s), np.eye(H)))
    np.testing.assert_allclose(fs.dense(), np.einsum("bi,bc,ij->bicj", s * (1 - s), np.eye(B), np.eye(H)))


def test_factors_of_ones():
    # a broadcast: every output row depends on the bias the same way (no operand carries b)
    f = Factored("bh", "h", (B, H), (H,))
    assert f.operands == () and f.deltas == "h"
    np.testing.assert_array_equal(f.dense(), np.broadcast_to(np.eye(H), (B, H, H)))
    # a sum over everything: no delta, no operand -- all ones
    g = Factored("", "bd", (), (B, D))
    assert g.deltas == "" and not g.per_sample
    np.testing.assert_array_equal(g.dense(), np.ones((B, D)))
    assert g.subscripts() == "->bd"
    # a sum over one axis: the summed axis is a ones factor, the kept one a delta
    k = Factored("b", "bd", (B,), (B, D))
    np.testing.assert_array_equal(k.dense(collapse_batch=True), np.ones((B, D)))
    np.testing.assert_array_equal(k.dense(), np.einsum("bc,d->bcd", np.eye(B), np.ones(D)))
    # nothing at all: d x / d x for a scalar
    e = Factored("", "", (), ())
    assert e.dense().shape == () and e.dense() == 1.0


def test_scalar_operands():
    f = Factored("bh", "bh", (B, H), (B, H), (("", np.array(-2.0)),))
    assert f.subscripts() == ",bB,hH->bhBH"
    np.testing.assert_array_equal(f.dense(collapse_batch=True), np.broadcast_to(-2 * np.eye(H), (B, H, H)))
    np.testing.assert_array_equal(f.dense(), -2 * np.einsum("bc,ij->bicj", np.eye(B), np.eye(H)))
    # a scalar operand times a vector operand
    v = np.arange(1.0, D + 1)
    g = Factored("", "d", (), (D,), (("", np.array(0.5)), ("d", v)))
    np.testing.assert_array_equal(g.dense(), 0.5 * v)


def test_internal_summed_label():
    rng = np.random.default_rng(3)
    A, C = rng.normal(size=(2, 5)), rng.normal(size=(5, 3))
    f = Factored("i", "j", (2,), (3,), (("ik", A), ("kj", C)))
    assert f.sizes == {"i": 2, "j": 3, "k": 5}
    np.testing.assert_allclose(f.dense(), A @ C)


def test_dtype():
    f32 = np.ones((H, D), dtype=np.float32)
    assert Factored("bh", "bd", (B, H), (B, D), (("hd", f32),)).dense().dtype == np.float32
    assert Factored("bh", "h", (B, H), (H,)).dense().dtype == np.float64            # nothing says otherwise
    f = Factored("bh", "h", (B, H), (H,), (), np.dtype(np.float32))                 # deltas and ones only
    assert f.dense().dtype == np.float32 and f.dense(collapse_batch=True).dtype == np.float32


# ---------------------------------------------------------------- consistency is asserted

def test_inconsistent_sizes_are_assertions():
    with pytest.raises(AssertionError, match="label 'h' is 4 in operand 'hd', 3 elsewhere"):
        Factored("bh", "bd", (2, 3), (2, 4), (("hd", np.ones((4, 4))),))
    with pytest.raises(AssertionError, match="delta on 'b' joins sizes 2 and 5"):
        Factored("bh", "bd", (2, 3), (5, 4))
    with pytest.raises(AssertionError, match=r"operand 'hd' has shape \(3,\)"):
        Factored("bh", "bd", (2, 3), (2, 4), (("hd", np.ones(3)),))
    with pytest.raises(AssertionError, match=r"operand 'hh' has shape \(3, 3\)"):
        Factored("bh", "bd", (2, 3), (2, 4), (("hh", np.ones((3, 3))),))
    with pytest.raises(AssertionError, match=r"bad out labels 'bb' for shape \(2, 2\)"):
        Factored("bb", "d", (2, 2), (4,))
    with pytest.raises(AssertionError, match=r"bad inp labels 'd' for shape \(4, 1\)"):
        Factored("b", "d", (2,), (4, 1))
    # an internal label used with two sizes
    with pytest.raises(AssertionError, match="label 'k' is 6 in operand 'kj', 5 elsewhere"):
        Factored("i", "j", (2,), (3,), (("ik", np.ones((2, 5))), ("kj", np.ones((6, 3)))))


def test_dense_is_guarded():
    f = Factored("bh", "hd", (64, 64), (64, 64), (("bd", np.ones((64, 64))),))
    with limited_memory(1 << 20):
        with pytest.raises(JacobianTooLarge, match=r"dz/dW of shape \(64, 64, 64, 64\) needs 128\.0 MiB"):
            f.dense(what="dz/dW")
        with pytest.raises(JacobianTooLarge, match=r"^Jacobian of shape"):
            f.dense()
