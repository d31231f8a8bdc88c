"""Index maps: the record, its dense form, gathers and scatters, and products through maps."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import jacobians as jac
from jacobians.factored import Factored, IndexMapsPending
from jacobians.indexmaps import IndexMap, apply_map, axis_map, gather, map_cost, scatter, window_map


def dense_apply(m, array, labels, direction, keep=""):
    """The reference: the map's 0/1 tensor through einsum."""
    M = m.dense()
    if direction == "gather":
        out = "".join(l for l in m.out if l in labels) + "".join(l for l in labels if l not in m.inp and l not in m.out) \
            + "".join(l for l in m.out if l not in labels)
    else:
        out = keep + "".join(l for l in labels if l not in m.out) + m.inp
    extra = "".join(l for l in m.out if l not in labels) if direction == "scatter" else ""
    arrays = [array, M] + ([np.ones([m.sizes[l] for l in extra])] if extra else [])
    terms = [labels, m.labels] + ([extra] if extra else [])
    return np.einsum(",".join(terms) + "->" + out, *arrays), out


RNG = np.random.default_rng(0)
MAPS = [
    axis_map("a", "h", [1, 2, 3, 4], 6),                                  # a slice
    axis_map("a", "h", [5, 4, 3, 2, 1, 0], 6),                             # a flip
    axis_map("a", "h", [-1, 0, 1, 2, 3, 4, 5, -1], 6),                     # a pad
    axis_map("a", "h", [0, 0, 2, 2, 5], 6),                                # a repeat: not injective
    window_map("p", "i", "h", 3, 2, 6, stride=2, dilation=1, padding=1),   # a conv window with padding
    IndexMap("ab", "hw", RNG.integers(0, 12, size=(3, 2)), (3, 4)),        # a gather over two axes
    IndexMap("", "h", np.array(2), (6,)),                                  # an integer index
]


@pytest.mark.parametrize("m", MAPS, ids=repr)
def test_gather_and_scatter_equal_the_dense_map(m):
    labels = "z" + m.inp + "y"
    array = RNG.normal(size=(2,) + m.in_shape + (3,))
    got, got_labels = apply_map(m, array, labels, "gather")
    ref, ref_labels = dense_apply(m, array, labels, "gather")
    assert got_labels == ref_labels
    np.testing.assert_allclose(got, ref, atol=1e-14)
    assert map_cost(m, labels, dict(zip(labels, array.shape)), "gather") == got.size
    back = RNG.normal(size=got.shape)
    got, got_labels = apply_map(m, back, got_labels, "scatter")
    ref, ref_labels = dense_apply(m, back, ref_labels, "scatter")
    assert got_labels == ref_labels
    np.testing.assert_allclose(got, ref, atol=1e-13)


@pytest.mark.parametrize("m", MAPS, ids=repr)
@pytest.mark.parametrize("keep", ["", "k"])
def test_a_scatter_writes_any_requested_layout_directly(m, keep):
    """``order=`` gives the natural result transposed, written in place (the planner's final layout)."""
    if keep and not m.out:
        pytest.skip("an integer index has no output label to keep")
    mm = m.relabel({m.out[0]: "k"}) if keep else m
    labels = "z" + mm.out + "y"
    sizes = {"z": 2, "y": 3, **mm.sizes}
    g = RNG.normal(size=[sizes[l] for l in labels])
    natural, nat_labels = scatter(mm, g, labels, keep)
    for order in {nat_labels[::-1], nat_labels[1:] + nat_labels[:1]}:
        got, got_labels = scatter(mm, g, labels, keep, order=order)
        assert got_labels == order and got.flags.c_contiguous
        np.testing.assert_allclose(got, natural.transpose([nat_labels.index(l) for l in order]), atol=1e-14)
    with pytest.raises(ValueError, match="permutation"):
        scatter(mm, g, labels, keep, order=nat_labels[:-1])


def test_diagonal_labels_gather_per_sample_and_stay_on_scatter():
    # a max pool's map (b, p) -> h: the index depends on the sample b, which passes through
    idx = np.array([[0, 3], [1, 2], [3, 3]])
    m = IndexMap("bp", "h", idx, (4,))
    x = RNG.normal(size=(3, 4, 2))
    got, labels = gather(m, x, "bhk")
    assert labels == "bkp"
    np.testing.assert_array_equal(got, np.stack([x[b][idx[b]].T for b in range(3)]))
    g = RNG.normal(size=(3, 2, 2))  # b, k, p
    back, labels = scatter(m, g, "bkp", keep="b")
    assert labels == "bkh"
    ref = np.zeros((3, 2, 4))
    for b in range(3):
        for p in range(2):
            ref[b, :, idx[b, p]] += g[b, :, p]
    np.testing.assert_allclose(back, ref)


def test_scatter_broadcasts_map_labels_the_array_lacks():
    m = window_map("p", "i", "h", 3, 2, 4)        # an average pool's window: offsets i carry nothing
    g = RNG.normal(size=(3,))
    got, labels = scatter(m, g, "p")
    ref = np.einsum("p,pih->h", g, m.dense())
    np.testing.assert_allclose(got, ref)


def test_record_fields_and_errors():
    m = window_map("p", "i", "h", 3, 2, 5, stride=2, padding=1)
    assert (m.out, m.inp, m.in_shape, m.out_shape) == ("pi", "h", (5,), (3, 2))
    assert m.index.tolist() == [[-1, 0], [1, 2], [3, 4]] and m.padded and m.injective
    labels, index = m                                  # travels in an operand list as (labels, index)
    assert labels == "pih" and index is m.index
    assert m.relabel({"p": "q"}).out == "qi"
    with pytest.raises(ValueError, match="index values must lie in"):
        IndexMap("a", "h", [0, 5], (5,))
    with pytest.raises(ValueError, match="do not fit"):
        IndexMap("ab", "h", [0, 1], (5,))
    with pytest.raises(TypeError, match="integer"):
        IndexMap("a", "h", [0.5], (5,))
    with pytest.raises(ValueError, match="valid options are 'gather', 'scatter'"):
        apply_map(m, np.ones(5), "h", "push")
    with pytest.raises(AttributeError):
        m.index = None


# ---------------------------------------------------------------- Factored with maps

def sliced():
    """d x[:, 1:5] / dx for x (B, D): a delta on the batch and the map a -> B."""
    return Factored("Aa", "AB", (3, 4), (3, 6), (axis_map("a", "B", [1, 2, 3, 4], 6),), np.dtype(np.float64))


def conv_input():
    """d conv1d / dx: sum_i W[o, c, i] M[p, i, h], delta on the batch."""
    W = RNG.normal(size=(2, 3, 3))
    m = window_map("p", "i", "h", 4, 3, 7, stride=2, dilation=1, padding=1)
    return Factored("Aop", "Ach", (2, 2, 4), (2, 3, 7), (("oci", W), m))


def pooled():
    """A max pool's form: the map (A, B, p) -> h, deltas on A and B."""
    idx = RNG.integers(0, 6, size=(2, 3, 2))
    return Factored("ABp", "ABh", (2, 3, 2), (2, 3, 6), (IndexMap("ABp", "h", idx, (6,)),), np.dtype(np.float64))


def averaged():
    """An average pool's form: a scalar times the window map (offsets carried by the map only)."""
    m = window_map("p", "i", "h", 3, 2, 6, stride=2)
    return Factored("Ap", "Ah", (2, 3), (2, 6), (("", np.array(0.5)), m))


FORMS = [sliced, conv_input, pooled, averaged]


@pytest.mark.parametrize("make", FORMS)
def test_products_through_maps_equal_dense_products(make):
    f = make()
    J = f.dense()
    n_in, n_out = int(np.prod(f.in_shape)), int(np.prod(f.out_shape))
    Jm = J.reshape(n_out, n_in)
    v = RNG.normal(size=f.in_shape + (3,))
    jv, eq, shapes = f.product(v, "in")
    np.testing.assert_allclose(jv.reshape(n_out, 3), Jm @ v.reshape(n_in, 3), atol=1e-12)
    u = RNG.normal(size=f.out_shape + (2,))
    uj, _, _ = f.product(u, "out")
    np.testing.assert_allclose(uj.reshape(n_in, 2), Jm.T @ u.reshape(n_out, 2), atol=1e-12)
    g = f.without_maps()
    assert g.maps == () and len(g.operands) == len(f.terms) + len(f.maps)
    np.testing.assert_allclose(g.dense(), J, atol=1e-14)
    np.testing.assert_allclose(g.product(v, "in")[0], jv, atol=1e-12)


def test_dense_of_a_slice_is_the_selection():
    f = sliced()
    J = f.dense(collapse_batch=True)
    assert J.shape == (3, 4, 6)
    np.testing.assert_array_equal(J, np.broadcast_to(np.eye(6)[1:5], (3, 4, 6)))
    assert f.subscripts() == "aB,Ab->AabB"     # the map, the batch delta (A, b)


def test_a_map_form_refuses_the_map_free_reader():
    f = sliced()
    with pytest.raises(IndexMapsPending, match="holds index maps"):
        f.operands
    assert f.terms == () and len(f.maps) == 1 and f.sizes == {"A": 3, "a": 4, "B": 6}
    assert isinstance(IndexMapsPending("x"), NotImplementedError)
    assert sliced().without_maps().operands[0][0] == "aB"
    # the map-free forms of every existing op read as before
    _, (fx, _) = jac.ops.linear.factored(np.ones((2, 3)), np.ones((4, 3)))
    assert fx.operands == fx.terms and fx.maps == ()


def test_maps_must_read_untouched_argument_axes():
    with pytest.raises(AssertionError, match="must read argument axes"):
        Factored("Aa", "AB", (3, 4), (3, 6), (axis_map("a", "A", [0, 1, 2, 0], 3),))
    with pytest.raises(AssertionError, match="is 5 in"):
        Factored("Aa", "AB", (3, 4), (3, 6), (axis_map("a", "B", [0, 1, 2, 0, 1], 6),))


def test_product_through_a_gather_never_allocates_out_x_in():
    # E[ids] for a table of V = 20000 rows: J is (B, T, d, V, d); a product must stay O(B T d k)
    V, d, B, T = 20000, 64, 32, 32
    E = RNG.normal(size=(V, d))
    ids = RNG.integers(0, V, size=(B, T))
    _, (f,) = jac.ops.embedding.factored(ids, E)
    u = RNG.normal(size=(B, T, d, 1))
    tracemalloc.start()
    back, _, _ = f.product(u, "out")                      # the VJP: a scatter-add into (V, d)
    fwd, _, _ = f.product(back, "in")                      # the JVP: a gather
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    ref = np.zeros((V, d))
    np.add.at(ref, ids.ravel(), u.reshape(-1, d))
    np.testing.assert_allclose(back[..., 0], ref, atol=1e-12)
    np.testing.assert_allclose(fwd[..., 0], ref[ids], atol=1e-12)
    one_hot = B * T * V * 8                                 # a float (B, T, V) one-hot: 164 MB
    assert peak < 2.5 * V * d * 8, peak                     # the (V, d) result and little else
    assert peak < one_hot / 5, peak


def test_product_through_a_conv_map_never_allocates_out_x_in():
    B, C, O, H, k = 4, 3, 5, 32, 5
    x = RNG.normal(size=(B, C, H, H))
    W = RNG.normal(size=(O, C, k, k))
    _, (fx, _) = jac.ops.conv2d.factored(x, W)
    out_x_in = B * O * (H - k + 1) ** 2 * C * H * H * 8      # the dense per-batch Jacobian: 330 MB
    v = RNG.normal(size=fx.in_shape + (2,))
    tracemalloc.start()
    jv, _, _ = fx.product(v, "in")
    vj, _, _ = fx.product(jv, "out")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    im2col = B * C * (H - k + 1) ** 2 * k * k * 2 * 8        # the tangent's patches, as any im2col conv reads them
    print(f"conv2d products: peak {peak / 2**20:.1f} MiB, im2col {im2col / 2**20:.1f} MiB, out x in {out_x_in / 2**20:.0f} MiB")
    assert peak < 3 * im2col and peak < out_x_in / 10, (peak, im2col, out_x_in)   # measured 2.05x im2col
    for s in range(2):
        np.testing.assert_allclose(jv[..., s], jac.ops.conv2d(v[..., s], W)[0], atol=1e-10)


# ---------------------------------------------------------------- every map-bearing op: products = dense J @ v

def _map_specs():
    from test_ops import SPECS
    return [s for s in SPECS if jac.ops.get(s.op).family in ("indexing", "conv")]


@pytest.mark.parametrize("spec", _map_specs(), ids=lambda s: s.id)
def test_every_indexing_op_products_equal_dense_products(spec):
    from test_ops import make_args
    args = make_args(spec)
    _, forms = jac.ops.get(spec.op).factored(*args, **spec.params)
    for f in forms:
        Jm = f.dense().reshape(int(np.prod(f.out_shape)), int(np.prod(f.in_shape)))
        v = RNG.normal(size=f.in_shape + (2,))
        u = RNG.normal(size=f.out_shape + (2,))
        np.testing.assert_allclose(f.product(v, "in")[0].reshape(-1, 2), Jm @ v.reshape(-1, 2), atol=1e-12)
        np.testing.assert_allclose(f.product(u, "out")[0].reshape(-1, 2), Jm.T @ u.reshape(-1, 2), atol=1e-12)
        v32 = v.astype(np.float32)
        assert f.product(v32, "in")[0].dtype == np.result_type(v32, *[a for _, a in f.terms])


def test_progressions_are_basic_slices():
    """Slices, strided slices and flips run as basic slicing (a strided copy or assignment);
    repeats, pads and gathers keep their index arithmetic."""
    assert axis_map("a", "h", [1, 2, 3, 4], 6).as_slice == slice(1, 5, 1)
    assert axis_map("a", "h", [0, 2, 4], 6).as_slice == slice(0, 6, 2)
    assert axis_map("a", "h", [5, 4, 3, 2, 1, 0], 6).as_slice == slice(5, None, -1)
    assert axis_map("a", "h", [3], 6).as_slice == slice(3, 4, 1)
    for m in (axis_map("a", "h", [0, 0, 2, 2, 5], 6), axis_map("a", "h", [-1, 0, 1, -1], 6),
              IndexMap("ab", "hw", RNG.integers(0, 12, size=(3, 2)), (3, 4))):
        assert m.as_slice is None
    x = RNG.normal(size=(2, 6, 3))
    for m in (axis_map("a", "h", [5, 3, 1], 6), axis_map("a", "h", [1, 2, 3, 4], 6)):
        got, labels = gather(m, x, "zhy")
        assert labels == "zya"
        np.testing.assert_array_equal(got, x[:, m.as_slice].transpose(0, 2, 1))
        back, labels = scatter(m, got, "zya")
        ref = np.zeros_like(x.transpose(0, 2, 1))
        ref[..., m.as_slice] = got
        assert labels == "zyh"
        np.testing.assert_array_equal(back, ref)
