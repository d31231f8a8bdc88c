"""Convolution and pooling, PyTorch's conventions (NCHW, cross-correlation, zero padding).

Forward passes are ``sliding_window_view`` + one GEMM (im2col), never a Python loop over
positions.  Jacobians (see :mod:`jacobians.indexmaps`):

* w.r.t. the input: the weight as an operand over (out channel, in channel, kernel offsets),
  and per spatial axis the window map ``(output position p, kernel offset i) -> input position
  p*stride + i*dilation - padding`` (nothing read in the padding);
* w.r.t. the weight: the im2col patches as an operand, a delta on the output channel;
* w.r.t. the bias: a delta on the channel, ones on the batch and the positions;
* max pooling: the map ``(b, c, p, q) -> (h, w)`` of each window's argmax (ties: the first
  maximal element in row-major window order, as ``np.argmax`` and PyTorch's CPU kernel pick);
* average pooling: the window maps times ``1 / divisor`` (``count_include_pad`` as in PyTorch).
"""

from __future__ import annotations

import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import fail
from ..indexmaps import IndexMap, window_map
from ..labels import fresh, lead
from ._registry import defop, rule


def _ints(op: str, name: str, value, n: int, minimum: int) -> tuple[int, ...]:
    vals = (value,) * n if isinstance(value, (numbers.Integral, np.integer)) else value
    try:
        vals = tuple(vals)
    except TypeError:
        vals = None
    if vals is None or len(vals) != n or any(isinstance(v, (bool, np.bool_)) or not isinstance(
            v, (numbers.Integral, np.integer)) or v < minimum for v in vals):
        fail(op, f"{name} must be an integer >= {minimum} or a tuple of {n} of them; got {value!r}",
             TypeError if vals is None else ValueError)
    return tuple(int(v) for v in vals)


def _spatial(op: str, x: np.ndarray, nd: int, what: str) -> bool:
    """True when x has a batch axis; x is (B, C, *S) or (C, *S)."""
    if x.ndim not in (nd + 1, nd + 2):
        fail(op, f"argument x must be {what}; got shape {x.shape}")
    return x.ndim == nd + 2


def _windows(op, xb, kernel, stride, dilation, padding, pad_value=0.0):
    """Padded input, the (B, C, *P, *K) patch view, and the output sizes P."""
    nd = len(kernel)
    S = xb.shape[2:]
    ext = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    P = tuple((s + 2 * p - e) // st + 1 for s, p, e, st in zip(S, padding, ext, stride))
    if any(s + 2 * p < e for s, p, e in zip(S, padding, ext)):
        fail(op, f"the kernel {kernel} (dilation {dilation}) is larger than the padded input "
                 f"{tuple(s + 2 * p for s, p in zip(S, padding))} of x {xb.shape}")
    xp = np.pad(xb, [(0, 0), (0, 0)] + [(p, p) for p in padding], constant_values=pad_value) if any(padding) else xb
    win = sliding_window_view(xp, ext, axis=tuple(range(2, 2 + nd)))
    sl = (slice(None),) * 2 + tuple(slice(None, st * n, st) for st, n in zip(stride, P)) \
        + tuple(slice(None, None, d) for d in dilation)
    return win[sl], P


def _conv(op, nd, x, W, b, stride, padding, dilation):
    what = f"(B, C, {', '.join('HW'[:nd] if nd == 2 else 'L')}) or unbatched (C, ...) with {nd} spatial axes"
    batched = _spatial(op, x, nd, what)
    if W.ndim != nd + 2 or W.shape[1] != x.shape[1 if batched else 0]:
        fail(op, f"argument W must be (O, C, {', '.join(['k'] * nd)}) with C = {x.shape[1 if batched else 0]} "
                 f"input channels of x {x.shape}; got W {W.shape}")
    O, K = W.shape[0], W.shape[2:]
    if b is not None and b.shape != (O,):
        fail(op, f"argument b: expected shape ({O},) to match W {W.shape}; got {b.shape}")
    stride = _ints(op, "stride", stride, nd, 1)
    padding = _ints(op, "padding", padding, nd, 0)
    dilation = _ints(op, "dilation", dilation, nd, 1)
    xb = x if batched else x[None]
    patches, P = _windows(op, xb, K, stride, dilation, padding)
    k_axes = list(range(2 + nd, 2 + 2 * nd))
    y = np.tensordot(patches, W, axes=([1] + k_axes, [1] + list(range(2, 2 + nd))))   # (B, *P, O): the GEMM
    y = np.moveaxis(y, -1, 1)
    if b is not None:
        y = y + b.reshape((O,) + (1,) * nd)
    y = np.ascontiguousarray(y if batched else y[0])
    L = lead(x.ndim)
    Bl, c, S = (L[0], L[1], L[2:]) if batched else ("", L[0], L[1:])
    new = fresh(L)
    o = next(new)
    ps = "".join(next(new) for _ in range(nd))
    ks = "".join(next(new) for _ in range(nd))
    out = Bl + o + ps
    xs = x.shape[2:] if batched else x.shape[1:]
    maps = [window_map(ps[j], ks[j], S[j], P[j], K[j], xs[j], stride[j], dilation[j], padding[j]) for j in range(nd)]
    cols = patches if batched else patches[0]
    return y, (
        lambda: rule(out, L, (o + c + ks, W), *maps),
        lambda: rule(out, o + c + ks, (Bl + c + ps + ks, cols)),
        lambda: rule(out, o),
    )


@defop("x W b", data="x", core={"x": 2},
       formula="dy/dx = W[o,c,i] and the window map (p, i) -> p*stride + i*dilation - padding; "
               "dy/dW = im2col patches (delta on o); dy/db = delta on o")
def conv1d(x, W, b=None, stride=1, padding=0, dilation=1):
    """PyTorch's conv1d: x (B, C, L) or (C, L), W (O, C, k), b (O,) -> (B, O, L_out)."""
    return _conv("conv1d", 1, x, W, b, stride, padding, dilation)


@defop("x W b", data="x", core={"x": 3},
       formula="dy/dx = W[o,c,i,j] and one window map per spatial axis; dy/dW = im2col patches (delta on o); "
               "dy/db = delta on o")
def conv2d(x, W, b=None, stride=1, padding=0, dilation=1):
    """PyTorch's conv2d: x (B, C, H, W) or (C, H, W), W (O, C, kh, kw), b (O,) -> (B, O, H_out, W_out)."""
    return _conv("conv2d", 2, x, W, b, stride, padding, dilation)


def _pool_params(op, x, kernel_size, stride, padding):
    _spatial(op, x, 2, "(B, C, H, W) or unbatched (C, H, W)")
    kernel = _ints(op, "kernel_size", kernel_size, 2, 1)
    stride = kernel if stride is None else _ints(op, "stride", stride, 2, 1)
    padding = _ints(op, "padding", padding, 2, 0)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        fail(op, f"padding {padding} must be at most half the kernel {kernel} (as in PyTorch)")
    return kernel, stride, padding


@defop("x", data="x", core={"x": 3},
       formula="dy/dx = the map (b, c, p, q) -> each window's argmax (first maximal element on ties)")
def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1):
    """PyTorch's max_pool2d (padding reads -inf; ties: the first maximal element in window order)."""
    kernel, stride, padding = _pool_params("max_pool2d", x, kernel_size, stride, padding)
    dilation = _ints("max_pool2d", "dilation", dilation, 2, 1)
    batched = x.ndim == 4
    xb = x if batched else x[None]
    win, P = _windows("max_pool2d", xb, kernel, stride, dilation, padding, pad_value=-np.inf)
    flat = win.reshape(win.shape[:4] + (-1,))
    arg = np.argmax(flat, axis=-1)
    y = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    i, j = np.divmod(arg, kernel[1])
    h = np.arange(P[0])[:, None] * stride[0] + i * dilation[0] - padding[0]
    w = np.arange(P[1])[None, :] * stride[1] + j * dilation[1] - padding[1]
    H, Wd = xb.shape[2:]
    index = h * Wd + w
    L = lead(x.ndim)
    new = fresh(L)
    pq = next(new) + next(new)
    keep = L[:2] if batched else L[:1]
    if not batched:
        y, index = y[0], index[0]
    m = IndexMap(keep + pq, L[-2:], index, (H, Wd))
    return np.ascontiguousarray(y), (lambda: rule(keep + pq, L, m),)


@defop("x", data="x", core={"x": 3},
       formula="dy/dx = the window maps (p, i) -> h and (q, j) -> w times 1/divisor")
def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """PyTorch's avg_pool2d (zero padding; ``count_include_pad`` as in PyTorch)."""
    kernel, stride, padding = _pool_params("avg_pool2d", x, kernel_size, stride, padding)
    batched = x.ndim == 4
    xb = x if batched else x[None]
    win, P = _windows("avg_pool2d", xb, kernel, stride, (1, 1), padding)
    H, Wd = xb.shape[2:]
    L = lead(x.ndim)
    new = fresh(L)
    p, q, i, j = (next(new) for _ in range(4))
    mh = window_map(p, i, L[-2], P[0], kernel[0], H, stride[0], 1, padding[0])
    mw = window_map(q, j, L[-1], P[1], kernel[1], Wd, stride[1], 1, padding[1])
    if count_include_pad:
        scale = ("", np.array(1.0 / (kernel[0] * kernel[1]), dtype=x.dtype))
        div = kernel[0] * kernel[1]
    else:
        div = np.outer((mh.index >= 0).sum(1), (mw.index >= 0).sum(1))
        scale = (p + q, (1.0 / div).astype(x.dtype))
    y = win.sum(axis=(-2, -1)) / div
    if not batched:
        y = y[0]
    out = L[:-2] + p + q
    return np.ascontiguousarray(y, dtype=x.dtype), (lambda: rule(out, L, scale, mh, mw),)
