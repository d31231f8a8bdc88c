"""Indexing ops: numpy's values for every kind of key, Jacobians by central differences, maps not masks."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import jacobians as jac
from jacobians.ops.indexing import concatenate_in, split_in, stack_in
from jacobians.testing import check_jacobian

RNG = np.random.default_rng(21)
X = RNG.normal(size=(3, 5, 4))

KEYS = [
    (slice(None), slice(1, 4)), (Ellipsis, slice(None, None, 2)), (slice(None), None), 1, (-1, 2), -2,
    (slice(None, None, -1),), (slice(None), slice(4, 0, -2), slice(None)), (slice(None), [0, 2, 2]),
    (slice(None), np.array([[0, 1], [4, 3]]), slice(1, 3)), ([0, 2], slice(None), [1, 3]),
    (slice(None), 2, [1, 3]), ([[0, 1]], Ellipsis), (slice(None), X[0] > 0), X[:, :, 0] > 0,
    (Ellipsis, None, [True, False, True, False]), (slice(None), slice(2, 2)), (None, 0, Ellipsis, -1),
]


@pytest.mark.parametrize("key", KEYS, ids=lambda k: repr(k).replace("\n", "")[:60])
def test_getitem_is_numpy_indexing_with_exact_jacobians(key):
    y, (J,) = jac.ops.getitem(X, key, batch=False)
    np.testing.assert_array_equal(y, X[key])
    assert not np.shares_memory(y, X)
    # the Jacobian is the 0/1 selection: J[o, i] = 1 where X[key][o] is X[i]
    ref = np.zeros((y.size, X.size))
    ref[np.arange(y.size), np.arange(X.size).reshape(X.shape)[key].ravel()] = 1
    np.testing.assert_array_equal(J.reshape(y.size, X.size), ref)
    check_jacobian("getitem", X, batch=False, key=key)
    check_jacobian("getitem", X, batch=True, key=key)


def test_a_slice_keeps_the_batch_delta_and_stores_no_mask():
    _, (f,) = jac.ops.getitem.factored(X, (slice(None), slice(1, 4)))
    assert f.per_sample and f.terms == ()
    (m,) = f.maps
    assert m.index.tolist() == [1, 2, 3] and m.in_shape == (5,)     # O(output axis), not O(out x in)


def test_bad_keys_name_the_op():
    with pytest.raises(IndexError, match="getitem: index 5 is out of range for axis 1 of size 5"):
        jac.ops.getitem(X, (0, 5))
    with pytest.raises(IndexError, match="getitem: too many indices"):
        jac.ops.getitem(X, (0, 0, 0, 0))
    with pytest.raises(IndexError, match="getitem: boolean index of shape"):
        jac.ops.getitem(X, np.ones(4, dtype=bool))
    with pytest.raises(TypeError, match="getitem: index entries must be"):
        jac.ops.getitem(X, 1.5)
    with pytest.raises(IndexError, match="getitem: index out of range"):
        jac.ops.getitem(X, (slice(None), [0, 7]))


def test_take_and_embedding_are_numpys():
    a = RNG.normal(size=(3, 4))
    for kw in (dict(axis=1), dict(axis=0), dict()):
        idx = np.array([[0, -1], [2, 1]])
        y, _ = jac.ops.take(a, idx, **kw)
        np.testing.assert_array_equal(y, np.take(a, idx, **kw))
        check_jacobian("take", a, idx, **kw)
    E, ids = RNG.normal(size=(7, 3)), RNG.integers(0, 7, size=(2, 5))
    y, (J,) = jac.ops.embedding(ids, E)
    np.testing.assert_array_equal(y, E[ids])
    assert J.shape == (2, 5, 3, 7, 3)
    check_jacobian("embedding", ids, E)
    with pytest.raises(IndexError, match=r"embedding: ids must lie in \[0, 7\)"):
        jac.ops.embedding(np.array([7]), E)


def test_embedding_jacobian_products_never_build_the_one_hot():
    V, d, B, T = 20000, 64, 32, 32
    E = RNG.normal(size=(V, d))
    ids = RNG.integers(0, V, size=(B, T))
    tracemalloc.start()
    _, (f,) = jac.ops.embedding.factored(ids, E)
    g = RNG.normal(size=(B, T, d, 1))
    back, _, _ = f.product(g, "out")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    one_hot = B * T * V * 8
    print(f"embedding V={V}: peak {peak / 2**20:.1f} MiB for the VJP; a (B,T,V) one-hot is {one_hot / 2**20:.0f} MiB")
    assert peak < one_hot / 5
    ref = np.zeros((V, d))
    np.add.at(ref, ids.ravel(), g[..., 0].reshape(-1, d))
    np.testing.assert_allclose(back[..., 0], ref, atol=1e-12)


SHAPE_OPS = [
    ("pad", dict(pad_width=((0, 0), (2, 1), (0, 3)))), ("pad", dict(pad_width=1, constant_values=2.5)),
    ("flip", dict()), ("flip", dict(axis=(1, -1))), ("roll", dict(shift=3)), ("roll", dict(shift=(1, -2), axis=(1, 2))),
    ("roll", dict(shift=2, axis=(1, 1))), ("tile", dict(reps=(2, 1, 3))), ("tile", dict(reps=2)),
    ("repeat", dict(repeats=2)), ("repeat", dict(repeats=[1, 0, 2, 1], axis=2)), ("repeat", dict(repeats=3, axis=-2)),
    ("broadcast_to", dict(shape=(2, 3, 5, 4))), ("expand_dims", dict(axis=(0, 3))), ("squeeze", dict()),
    ("swapaxes", dict(axis1=0, axis2=2)), ("moveaxis", dict(source=(0, 1), destination=(-1, 0))),
]


@pytest.mark.parametrize("name, params", SHAPE_OPS, ids=lambda v: str(v))
def test_shape_ops_are_numpys(name, params):
    x = X[:, :1] if name == "squeeze" else X
    y, (J,) = jac.ops.get(name)(x, batch=False, **params)
    np.testing.assert_array_equal(y, getattr(np, name)(x, **params))
    assert not np.shares_memory(y, x)
    check_jacobian(name, x, batch=False, **params)
    check_jacobian(name, x, batch=True, **params)


def test_relabelings_have_no_maps():
    for name, params in [("broadcast_to", dict(shape=(2, 3, 5, 4))), ("expand_dims", dict(axis=1)),
                         ("squeeze", dict()), ("swapaxes", dict(axis1=1, axis2=2)),
                         ("moveaxis", dict(source=0, destination=-1))]:
        _, (f,) = jac.ops.get(name).factored(X[:, :1] if name == "squeeze" else X, **params)
        assert f.maps == () and f.terms == (), name


def test_concatenate_stack_split_are_numpys():
    a, b = RNG.normal(size=(3, 2, 4)), RNG.normal(size=(3, 5, 4))
    y, (Ja, Jb) = jac.ops.concatenate([a, b], axis=1)
    np.testing.assert_array_equal(y, np.concatenate([a, b], axis=1))
    assert Ja.shape == (3, 7, 4, 2, 4) and Jb.shape == (3, 7, 4, 5, 4)    # per sample
    np.testing.assert_array_equal(Ja[:, :2], np.broadcast_to(np.einsum("ij,kl->ikjl", np.eye(2), np.eye(4)),
                                                              (3, 2, 4, 2, 4)))
    np.testing.assert_array_equal(Ja[:, 2:], 0)
    y, (J0, J1) = jac.ops.stack([a, 2 * a], axis=1)
    np.testing.assert_array_equal(y, np.stack([a, 2 * a], axis=1))
    assert J0.shape == (3, 2, 2, 4, 2, 4)
    np.testing.assert_array_equal(J0[:, 1], 0)
    pieces = jac.ops.split(b, [1, 3], axis=1)
    for (p, (J,)), ref in zip(pieces, np.split(b, [1, 3], axis=1)):
        np.testing.assert_array_equal(p, ref)
        assert J.shape == p.shape + b.shape[1:]
    with pytest.raises(ValueError, match="concatenate: array 1 has shape"):
        jac.ops.concatenate([a, b], axis=0)
    with pytest.raises(ValueError, match="split: 2 sections do not divide"):
        jac.ops.split(b, 2, axis=1)


def test_helpers_compose_over_any_namespace_of_ops():
    """concatenate_in/stack_in/split_in only call ns.pad, ns.add, ns.expand_dims, ns.getitem."""
    class Values:  # the ops' values: what jac.fn does on plain arrays
        pad = staticmethod(lambda x, w: jac.ops.pad(x, w, batch=False)[0])
        add = staticmethod(lambda x, y: x + y)
        expand_dims = staticmethod(lambda x, a: jac.ops.expand_dims(x, a, batch=False)[0])
        getitem = staticmethod(lambda x, k: jac.ops.getitem(x, k, batch=False)[0])
    a, b = RNG.normal(size=(2, 3)), RNG.normal(size=(2, 4))
    np.testing.assert_array_equal(concatenate_in(Values, [a, b], axis=-1), np.concatenate([a, b], axis=-1))
    np.testing.assert_array_equal(stack_in(Values, [a, a], axis=2), np.stack([a, a], axis=2))
    for p, q in zip(split_in(Values, b, 2, axis=1), np.split(b, 2, axis=1)):
        np.testing.assert_array_equal(p, q)
