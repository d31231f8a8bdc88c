"""Convolution and pooling against a direct numpy loop (always) and PyTorch (when installed)."""

from __future__ import annotations

import numpy as np
import pytest

import jacobians as jac
from jacobians.testing import check_jacobian

RNG = np.random.default_rng(11)


def conv2d_loop(x, W, b, stride, padding, dilation):
    """The definition, one output element at a time (cross-correlation, zero padding)."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    B, C, H, Wd = x.shape
    O, _, kh, kw = W.shape
    xp = np.zeros((B, C, H + 2 * ph, Wd + 2 * pw))
    xp[:, :, ph:ph + H, pw:pw + Wd] = x
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (Wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((B, O, Ho, Wo))
    for n in range(B):
        for o in range(O):
            for p in range(Ho):
                for q in range(Wo):
                    s = 0.0
                    for c in range(C):
                        for i in range(kh):
                            for j in range(kw):
                                s += W[o, c, i, j] * xp[n, c, p * sh + i * dh, q * sw + j * dw]
                    y[n, o, p, q] = s + (0.0 if b is None else b[o])
    return y


def pool_loop(x, kernel, stride, padding, kind, count_include_pad=True):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    B, C, H, Wd = x.shape
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (Wd + 2 * pw - kw) // sw + 1
    y = np.zeros((B, C, Ho, Wo))
    for n in range(B):
        for c in range(C):
            for p in range(Ho):
                for q in range(Wo):
                    vals = [x[n, c, h, w] for h in range(p * sh - ph, p * sh - ph + kh)
                            for w in range(q * sw - pw, q * sw - pw + kw) if 0 <= h < H and 0 <= w < Wd]
                    if kind == "max":
                        y[n, c, p, q] = max(vals)
                    else:
                        y[n, c, p, q] = sum(vals) / (kh * kw if count_include_pad else len(vals))
    return y


CONV = [dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1)), dict(stride=(2, 2), padding=(1, 1), dilation=(1, 1)),
        dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2)), dict(stride=(1, 3), padding=(2, 1), dilation=(2, 1))]


@pytest.mark.parametrize("kw", CONV, ids=str)
def test_conv2d_matches_the_loop_and_central_differences(kw):
    x, W, b = RNG.normal(size=(2, 3, 6, 7)), RNG.normal(size=(4, 3, 3, 2)), RNG.normal(size=4)
    y, jacs = jac.ops.conv2d(x, W, b, **kw)
    np.testing.assert_allclose(y, conv2d_loop(x, W, b, **kw), atol=1e-12)
    assert [J.shape for J in jacs] == [y.shape + x.shape[1:], y.shape + W.shape, y.shape + b.shape]
    check_jacobian("conv2d", x, W, b, **kw)
    check_jacobian("conv2d", x[0], W, b, batch=False, **kw)      # unbatched (C, H, W), as in PyTorch
    y1, _ = jac.ops.conv2d(x[0], W, b, batch=False, **kw)
    np.testing.assert_allclose(y1, y[0], atol=1e-13)


def test_conv1d_is_conv2d_over_a_height_of_one():
    x, W, b = RNG.normal(size=(2, 3, 9)), RNG.normal(size=(4, 3, 3)), RNG.normal(size=4)
    y, _ = jac.ops.conv1d(x, W, b, stride=2, padding=1, dilation=2)
    ref = conv2d_loop(x[:, :, None], W[:, :, None], b, (1, 2), (0, 1), (1, 2))[:, :, 0]
    np.testing.assert_allclose(y, ref, atol=1e-12)
    check_jacobian("conv1d", x, W, b, stride=2, padding=1, dilation=2)


@pytest.mark.parametrize("kw", [dict(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0)),
                                dict(kernel_size=(3, 3), stride=(2, 2), padding=(1, 1)),
                                dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1))], ids=str)
def test_pools_match_the_loop_and_central_differences(kw):
    x = RNG.normal(size=(2, 3, 6, 5))
    k, s, p = kw["kernel_size"], kw["stride"], kw["padding"]
    y, _ = jac.ops.max_pool2d(x, **kw)
    np.testing.assert_array_equal(y, pool_loop(x, k, s, p, "max"))
    check_jacobian("max_pool2d", x, **kw)
    for cip in (True, False):
        y, _ = jac.ops.avg_pool2d(x, count_include_pad=cip, **kw)
        np.testing.assert_allclose(y, pool_loop(x, k, s, p, "avg", cip), atol=1e-14)
        check_jacobian("avg_pool2d", x, count_include_pad=cip, **kw)
        check_jacobian("avg_pool2d", x[0], batch=False, count_include_pad=cip, **kw)


def test_max_pool_ties_go_to_the_first_maximal_element():
    x = np.array([[[1.0, 2.0], [2.0, 0.0]]])       # (C, H, W): two maximal elements
    _, (J,) = jac.ops.max_pool2d(x, 2, batch=False)
    assert J.shape == (1, 1, 1, 1, 2, 2)
    np.testing.assert_array_equal(J[0, 0, 0], [[[0, 1], [0, 0]]])


def test_jacobian_structure_weight_patches_and_bias_delta():
    x, W = RNG.normal(size=(2, 3, 5, 5)), RNG.normal(size=(4, 3, 2, 2))
    _, (fx, fW, fb) = jac.ops.conv2d.factored(x, W, np.zeros(4))
    assert len(fx.maps) == 2 and [s for s, _ in fx.terms] == ["aBde"]     # W over (o, c, i, j)
    assert fW.maps == () and fW.terms[0][1].shape == (2, 3, 4, 4, 2, 2)    # the im2col patches
    assert fb.maps == () and fb.terms == () and fb.deltas == "a"           # a delta on the channel


def test_bad_arguments_name_the_op():
    x = np.ones((2, 3, 5, 5))
    with pytest.raises(ValueError, match="conv2d: argument W must be"):
        jac.ops.conv2d(x, np.ones((4, 2, 3, 3)))
    with pytest.raises(ValueError, match="conv2d: argument x must be"):
        jac.ops.conv2d(np.ones((5, 5)), np.ones((4, 2, 3, 3)), batch=False)
    with pytest.raises(ValueError, match=r"conv2d: the kernel \(7, 7\)"):
        jac.ops.conv2d(x, np.ones((4, 3, 7, 7)))
    with pytest.raises(ValueError, match="conv2d: stride must be"):
        jac.ops.conv2d(x, np.ones((4, 3, 3, 3)), stride=0)
    with pytest.raises(ValueError, match="max_pool2d: padding"):
        jac.ops.max_pool2d(x, 2, padding=2)


# ---------------------------------------------------------------- PyTorch's results and Jacobians

@pytest.mark.parametrize("kw", CONV, ids=str)
def test_conv2d_matches_pytorch(kw):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, W, b = RNG.normal(size=(2, 3, 6, 7)), RNG.normal(size=(4, 3, 3, 2)), RNG.normal(size=4)
    y, (Jx, JW, Jb) = jac.ops.conv2d(x, W, b, batch=False, **kw)
    tx, tW, tb = (torch.tensor(a) for a in (x, W, b))
    np.testing.assert_allclose(y, F.conv2d(tx, tW, tb, **kw).numpy(), atol=1e-12)
    ref = torch.autograd.functional.jacobian(lambda x, W, b: F.conv2d(x, W, b, **kw), (tx, tW, tb))
    for mine, theirs in zip((Jx, JW, Jb), ref):
        np.testing.assert_allclose(mine, theirs.numpy(), atol=1e-12)


def test_pools_match_pytorch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = RNG.normal(size=(2, 3, 6, 5))
    for kw in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1)):
        tx = torch.tensor(x)
        y, (J,) = jac.ops.max_pool2d(x, batch=False, **kw)
        np.testing.assert_array_equal(y, F.max_pool2d(tx, **kw).numpy())
        np.testing.assert_array_equal(J, torch.autograd.functional.jacobian(lambda t: F.max_pool2d(t, **kw), tx).numpy())
        for cip in (True, False):
            y, (J,) = jac.ops.avg_pool2d(x, batch=False, count_include_pad=cip, **kw)
            f = lambda t: F.avg_pool2d(t, count_include_pad=cip, **kw)
            np.testing.assert_allclose(y, f(tx).numpy(), atol=1e-14)
            np.testing.assert_allclose(J, torch.autograd.functional.jacobian(f, tx).numpy(), atol=1e-14)


@pytest.mark.parametrize("kw", CONV, ids=str)
def test_reverse_through_a_convolution_never_forms_the_im2col_block(kw):
    """Reverse accumulation through conv2d (and an average pool) contracts once per kernel offset into
    strided windows of the result (a WindowStep), instead of the (kernel x result)-sized block and its
    scatters; the Jacobians equal forward accumulation's and central differences."""
    x, W1, W2 = RNG.normal(size=(2, 2, 9, 8)), RNG.normal(size=(3, 2, 3, 2)), RNG.normal(size=(2, 3, 2, 2))

    def f(x, W1, W2):
        h = np.tanh(jac.fn.conv2d(x, W1, **kw))
        h = jac.fn.avg_pool2d(h, kernel_size=2, stride=1)
        h = jac.fn.conv2d(h, W2)
        return np.tanh(h).sum(axis=(2, 3))

    rev = jac.jacobian(f, wrt=("x", "W1"), batched="x", order="reverse")
    plan = rev.plan(x, W1, W2)
    windows = [s for s in plan.steps if type(s).__name__ == "WindowStep"]
    assert windows
    for s in windows:
        im2col = int(np.prod([s.network.sizes[l] for l in s.network.output]))
        assert s.cost.largest_intermediate < im2col
    J = rev(x, W1, W2)
    Jf = jac.jacobian(f, wrt=("x", "W1"), batched="x", order="forward")(x, W1, W2)
    for k in J:
        np.testing.assert_allclose(J[k], Jf[k], rtol=1e-12, atol=1e-13)
    from jacobians.testing import numerical_jacobian
    np.testing.assert_allclose(J["x"][1], numerical_jacobian(lambda x1: f(x1[None], W1, W2)[0], x[1]),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(J["W1"][0], numerical_jacobian(lambda V: f(x[:1], V, W2)[0], W1),
                               rtol=1e-6, atol=1e-8)
