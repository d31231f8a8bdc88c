"""einsum as an op: numpy's subscripts, Jacobians per operand as einsums with deltas, chains as one network."""

from __future__ import annotations

import numpy as np
import pytest

import jacobians as jac
from jacobians.testing import check_jacobian, numerical_jacobian

fn = jac.fn
ORDERS = ("forward", "reverse", "optimal")

# (subscripts, operand shapes): every kind of subscript numpy accepts
CASES = [
    ("ij,jk->ik", (2, 3), (3, 4)),                 # matmul
    ("ij,jk", (2, 3), (3, 4)),                     # matmul, implicit output
    ("bij,bjk->bik", (2, 2, 3), (2, 3, 2)),        # batched matmul
    ("...ij,...jk->...ik", (2, 2, 3), (3, 4)),     # ellipsis, broadcast leading axes
    ("...ij,...jk", (2, 1, 2, 3), (3, 3, 2)),      # ellipsis, implicit, size-1 broadcast inside the ellipsis
    ("i,j->ij", (3,), (4,)),                       # outer
    ("bi,bj->bij", (2, 3), (2, 4)),                # batched outer
    ("ii", (3, 3)),                                # trace
    ("ii->i", (3, 3)),                             # diagonal
    ("bii->b", (2, 3, 3)),                         # batched trace
    ("...ii->...i", (2, 3, 3)),                    # batched diagonal
    ("iij->ij", (3, 3, 2)),                        # a partial diagonal
    ("ii,i->", (3, 3), (3,)),                      # a label repeated within and across operands
    ("ij->ji", (2, 3)),                            # transpose
    ("ba", (2, 3)),                                # implicit output: sorted labels, a transpose
    ("ij->", (2, 3)),                              # sum
    ("ij->j", (2, 3)),                             # column sums
    ("i,ij,j->", (3,), (3, 4), (4,)),              # bilinear form
    ("i,ij,j", (3,), (3, 3), (3,)),                # quadratic-form shape, implicit scalar output
    ("ij,ij->ij", (2, 3), (2, 3)),                 # Hadamard product
    ("i,i", (1,), (3,)),                           # a size-1 axis broadcast against 3
    ("ij,jk,kl->il", (2, 3), (3, 2), (2, 4)),      # three operands
    ("bhqd,bhkd->bhqk", (2, 2, 3, 4), (2, 2, 2, 4)),   # multi-head attention scores
    ("...", (2, 3)),                               # identity through the ellipsis
    (" i j -> j i ", (2, 3)),                      # spaces
]


def _args(shapes, seed=0):
    r = np.random.default_rng(seed)
    return [r.normal(size=s) for s in shapes]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("batch", [False, True])
def test_every_subscript_against_central_differences(case, batch):
    subscripts, *shapes = case
    args = _args(shapes)
    value, jacs = jac.ops.einsum(subscripts, *args, batch=batch)
    np.testing.assert_allclose(value, np.einsum(subscripts, *args), rtol=1e-14, atol=1e-14)
    assert len(jacs) == len(args)
    results = check_jacobian("einsum", subscripts, *args, batch=batch)
    assert [r.mode for r in results] == ["full"] * len(args)
    assert max(r.max_rel_error for r in results) < 1e-8


def test_batch_goes_with_the_operands_whose_first_label_leads_the_output():
    X, W = _args([(5, 3), (3, 4)])
    _, (dX, dW) = jac.ops.einsum("bi,ij->bj", X, W)          # X carries the batch, W is shared
    assert dX.shape == (5, 4, 3) and dW.shape == (5, 4, 3, 4)
    np.testing.assert_array_equal(dX, np.broadcast_to(W.T, (5, 4, 3)))
    _, (dX,) = jac.ops.einsum("bi->ib", X)                   # the output's first label is i: not per-sample
    assert dX.shape == (3, 5, 5, 3)


def test_the_form_is_factored():
    """Deltas for labels in the output and the operand, the other operands as they are, eye for a diagonal."""
    A, B = _args([(2, 3), (3, 4)])
    _, (fA, fB) = jac.ops.einsum.factored("ij,jk->ik", A, B)
    assert len(fA.deltas) == 1 and len(fB.deltas) == 1
    assert [a is B for _, a in fA.operands] == [True] and [a is A for _, a in fB.operands] == [True]
    X, = _args([(3, 3)])
    _, (f,) = jac.ops.einsum.factored("ii->i", X)
    assert len(f.deltas) == 1 and len(f.operands) == 1
    np.testing.assert_array_equal(f.operands[0][1], np.eye(3))
    _, (f,) = jac.ops.einsum.factored("ij->", X)               # a sum: only ones, no operand
    assert f.operands == () and f.deltas == ""
    np.testing.assert_array_equal(f.dense(), np.ones((3, 3)))
    _, (_, fy) = jac.ops.einsum.factored("ii,i->", X, X[0])    # the diagonal read once from the other operand
    np.testing.assert_array_equal(fy.operands[0][1], np.diagonal(X))


def test_labels_come_from_the_allocator():
    """The user's letters are renamed: lead labels for '...', core labels for letters (no collision)."""
    A, B = _args([(2, 2, 3), (3, 4)])
    _, (fA, _) = jac.ops.einsum.factored("...ZA,...Ab->...Zb", A, B)
    assert fA.out[0] == "A" and set(fA.out[1:]) <= set("abcdefghijklmnopqrstuvwxyz")


def test_a_chain_of_einsums_is_one_network():
    r = np.random.default_rng(1)
    x, W, V = r.normal(size=(3, 4)), r.normal(size=(5, 4)), r.normal(size=(2, 5))

    def f(x, W, V):
        return fn.einsum("bh,kh->bk", fn.einsum("bd,hd->bh", x, W), V)
    for order in ORDERS:
        jf = jac.jacobian(f, wrt="x", batched="x", order=order)
        J = jf(x, W, V)
        np.testing.assert_allclose(J, np.broadcast_to(V @ W, (3, 2, 4)), rtol=1e-12)
        assert len(jf.plan(x, W, V).networks) == 1


def test_numpy_einsum_on_traced_values():
    r = np.random.default_rng(2)
    x, W = r.normal(size=(3, 4)), r.normal(size=(4, 2))
    J = jac.jacobian(lambda x, W: np.einsum("bd,dh->bh", x, W, optimize=True), wrt="W")(x, W)
    assert J.shape == (3, 2, 4, 2)
    np.testing.assert_allclose(J, np.einsum("bd,hk->bhdk", x, np.eye(2)), rtol=1e-14)


def test_float32_stays_float32():
    A, B = (a.astype(np.float32) for a in _args([(2, 3), (3, 3)]))
    value, (dA, dB) = jac.ops.einsum("ij,jj->ij", A, B, batch=False)
    assert value.dtype == dA.dtype == dB.dtype == np.float32


@pytest.mark.parametrize("call, exc, message", [
    (lambda a: jac.ops.einsum("ij,jk", a, a), ValueError, "einsum: numpy refuses subscripts 'ij,jk' for operands "
                                                          "of shapes (2, 3), (2, 3)"),
    (lambda a: jac.ops.einsum("ij,jk", a), ValueError, "einsum: numpy refuses subscripts"),
    (lambda a: jac.ops.einsum("ij", a, out=np.empty((2, 3))), TypeError, "einsum: out= is not supported"),
    (lambda a: jac.ops.einsum("ij", a, dtype=np.int64), TypeError, "einsum: dtype must be a floating-point dtype"),
    (lambda a: jac.ops.einsum(a, [0, 1]), TypeError, "einsum: "),
    (lambda a: jac.ops.einsum("i1", a), ValueError, "einsum: "),
    (lambda a: jac.ops.einsum(",".join("i" * 17), *[a[0]] * 17), TypeError, "einsum: "),     # over 16 operands
])
def test_bad_calls_name_the_op(call, exc, message):
    with pytest.raises(exc) as e:
        call(np.ones((2, 3)))
    assert str(e.value).startswith(message)


# ---------------------------------------------------------------- attention

def _attention(Q, K, V):
    d = Q.shape[-1]
    return fn.matmul(fn.softmax(fn.einsum("bqd,bkd->bqk", Q, K) / np.sqrt(d)), V)


def _qkv(seed=3, B=2, q=3, k=4, d=3):
    r = np.random.default_rng(seed)
    return r.normal(size=(B, q, d)), r.normal(size=(B, k, d)), r.normal(size=(B, k, d))


@pytest.mark.parametrize("order", ORDERS)
def test_attention_against_central_differences(order):
    Q, K, V = _qkv()
    Js = jac.jacobian(_attention, wrt=("Q", "K", "V"), order=order)(Q, K, V)
    args = dict(Q=Q, K=K, V=V)
    for name in "QKV":
        numeric = numerical_jacobian(lambda v: _attention(**{**args, name: v}), args[name])
        assert Js[name].shape == (2, 3, 3) + args[name].shape
        np.testing.assert_allclose(Js[name], numeric, rtol=1e-6, atol=1e-8)
    per = jac.jacobian(_attention, wrt="Q", batched="Q", order=order)(Q, K, V)
    assert per.shape == (2, 3, 3, 3, 3)                       # samples independent: per-sample
    for b in range(2):
        np.testing.assert_allclose(per[b], Js["Q"][b, :, :, b], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("order", ORDERS)
def test_attention_against_jax(order):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy

    def ref(Q, K, V):
        s = jnp.einsum("bqd,bkd->bqk", Q, K) / jnp.sqrt(Q.shape[-1])
        return jax.nn.softmax(s, axis=-1) @ V
    Q, K, V = _qkv(seed=4)
    ours = jac.jacobian(_attention, wrt=("Q", "K", "V"), order=order)(Q, K, V)
    theirs = jax.jacobian(ref, argnums=(0, 1, 2))(Q, K, V)
    for name, J in zip("QKV", theirs):
        np.testing.assert_allclose(ours[name], np.asarray(J), rtol=1e-12, atol=1e-12)
