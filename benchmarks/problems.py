"""The benchmark problems: one Jacobian each, computed four ways.

A :class:`Problem` holds

* ``build(quick)`` — its inputs (float64, fixed seed), in the order of the
  traced function's arguments; ``quick`` gives a small variant for tests;
* ``fn`` — the function of :data:`jacobians.fn` ops the toolkit traces, with
  ``wrt`` and ``batched`` as passed to :func:`jacobians.jacobian`;
* ``closed_form(inputs)`` — a hand-written numpy closed form of the same
  Jacobians (batched GEMMs, broadcasting, no Python loop over samples), in the
  toolkit's layout (section 1 of DESIGN.md);
* ``peer_fn(ops, **args)`` — the same model for JAX / PyTorch, written once
  against a tiny namespace ``ops`` (``linear``, ``tanh``, ``relu``,
  ``sigmoid``, ``softmax``, ``log_softmax``, ``sqrt``, ``swap`` of the last
  two axes) that :mod:`benchmarks.peers` fills in.  For a
  per-sample problem it is the model of ONE sample (the peers ``vmap`` it over
  the names in ``peer_batched``); otherwise it is the whole function.
  Integer labels reach the peers one-hot (``peer_inputs``): the same math,
  and no data-dependent indexing under ``vmap``.

Groups: the main table (``group="main"``), the "small models" table
(:data:`SMALL_MODELS`: three ``group="small"`` problems and the main table's
softmax classifier), the real models of issue 9 (``group="models"``: a CNN, an
embedding classifier, an unrolled LSTM), the Hessians of issue 11
(``group="hessians"``, ``kind="hessian"``: ``jac.hessian`` against
``jax.hessian`` and ``torch.func.hessian``), the fixed-overhead problem
:data:`TINY`, and the planning-time chains of :func:`mlp_chain`.

The models and Hessians use toolkit features that land in other branches
(index maps inside the composer, several batched arguments, ``jac.hessian``):
until then the toolkit's row reads "not supported yet" and the numpy closed
form is the reference the peers are checked against.  Each problem's
``goals`` (the issues' targets) are printed as met / missed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import jacobians as jac

fn = jac.fn

__all__ = ["Problem", "PROBLEMS", "SMALL_MODELS", "MODELS", "HESSIANS", "TINY", "get", "mlp_chain"]


@dataclass
class Problem:
    name: str
    title: str
    build: Callable[[bool], dict]
    fn: Callable
    wrt: tuple[str, ...]
    batched: str | tuple[str, ...] | None
    closed_form: Callable[[dict], dict]
    peer_fn: Callable
    peer_batched: tuple[str, ...] = ()          # vmapped on axis 0 by the peers (empty: unbatched)
    peer_inputs: Callable[[dict], dict] = lambda inputs: dict(inputs)
    orders: tuple[str, ...] = ("optimal",)      # toolkit orders timed
    backends: tuple[str, ...] = ()              # toolkit array backends timed too (order optimal): "jax", "torch"
    notes: str = ""
    group: str = "main"                         # "main", "small", "models", "hessians": the table it belongs to
    kind: str = "jacobian"                      # "hessian": jac.hessian (out + in + in) vs jax / torch hessian
    goals: tuple = ()                           # (text, test, ref, factor): see benchmarks.run.evaluate_goals
    skip_peers: dict = field(default_factory=dict)  # peer row id -> why it is not run (a note in the table)

    @property
    def per_sample(self) -> bool:
        return bool(self.peer_batched)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _layers(r: np.random.Generator, dims, bias: bool = True) -> dict:
    """Weights W_k (dims[k], dims[k-1]) scaled 1/sqrt(fan-in) (tanh stays off saturation), biases 0.1 N(0,1)."""
    out = {}
    for k in range(1, len(dims)):
        out[f"W{k}"] = r.standard_normal((dims[k], dims[k - 1])) / np.sqrt(dims[k - 1])
        if bias:
            out[f"b{k}"] = 0.1 * r.standard_normal(dims[k])
    return out


def _onehot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes)[labels]


# ---------------------------------------------------------------- 1, 2: tanh MLP

def mlp3(x, W1, b1, W2, b2, W3, b3):
    h1 = fn.tanh(fn.linear(x, W1, b1))
    h2 = fn.tanh(fn.linear(h1, W2, b2))
    return fn.linear(h2, W3, b3)


def mlp3_peer(ops, x, W1, b1, W2, b2, W3, b3):
    h1 = ops.tanh(ops.linear(x, W1, b1))
    h2 = ops.tanh(ops.linear(h1, W2, b2))
    return ops.linear(h2, W3, b3)


def _mlp_forward(a):
    h1 = np.tanh(a["x"] @ a["W1"].T + a["b1"])
    h2 = np.tanh(h1 @ a["W2"].T + a["b2"])
    return h1, h2


def mlp_input_build(quick: bool) -> dict:
    r = _rng(1)
    dims, B = ([50, 64, 64, 10], 16) if quick else ([784, 1024, 1024, 10], 256)
    return {"x": r.standard_normal((B, dims[0])), **_layers(r, dims)}


def mlp_input_closed(a: dict) -> dict:
    """J_b = W3 diag(d2_b) W2 diag(d1_b) W1, from the output end: two big 2-D GEMMs over (B*10) rows."""
    h1, h2 = _mlp_forward(a)
    W1, W2, W3 = a["W1"], a["W2"], a["W3"]
    B, O = h1.shape[0], W3.shape[0]
    G = W3[None, :, :] * (1.0 - h2 * h2)[:, None, :]                 # (B, O, H2)
    G = (G.reshape(B * O, -1) @ W2).reshape(B, O, -1)                # (B, O, H1)
    G *= (1.0 - h1 * h1)[:, None, :]
    return {"x": (G.reshape(B * O, -1) @ W1).reshape(B, O, -1)}      # (B, O, D)


def mlp_params_build(quick: bool) -> dict:
    r = _rng(2)
    dims, B = ([16, 32, 32, 10], 8) if quick else ([64, 128, 128, 10], 32)
    return {"x": r.standard_normal((B, dims[0])), **_layers(r, dims)}


def mlp_params_closed(a: dict) -> dict:
    """Per-sample d out / d W_k = G_k[b,o,j] h_{k-1}[b,l] (an outer product), d out / d b_k = G_k."""
    x = a["x"]
    h1, h2 = _mlp_forward(a)
    W2, W3 = a["W2"], a["W3"]
    B, O = x.shape[0], W3.shape[0]
    eye = np.broadcast_to(np.eye(O), (B, O, O))
    J_W3 = np.zeros((B, O, O, h2.shape[1]))
    idx = np.arange(O)
    J_W3[:, idx, idx, :] = h2[:, None, :]                            # delta_op h2[b,q]
    G2 = W3[None, :, :] * (1.0 - h2 * h2)[:, None, :]                # (B, O, H2)
    G1 = (G2.reshape(B * O, -1) @ W2).reshape(B, O, -1) * (1.0 - h1 * h1)[:, None, :]
    return {
        "W1": G1[:, :, :, None] * x[:, None, None, :],
        "b1": G1,
        "W2": G2[:, :, :, None] * h1[:, None, None, :],
        "b2": G2,
        "W3": J_W3,
        "b3": eye.copy(),
    }


# ---------------------------------------------------------------- 3: bottleneck

def bottleneck(x, W1, b1, W2, b2, W3, b3, W4, b4):
    h1 = fn.tanh(fn.linear(x, W1, b1))
    h2 = fn.tanh(fn.linear(h1, W2, b2))
    h3 = fn.tanh(fn.linear(h2, W3, b3))
    return fn.linear(h3, W4, b4)


def bottleneck_peer(ops, x, W1, b1, W2, b2, W3, b3, W4, b4):
    h1 = ops.tanh(ops.linear(x, W1, b1))
    h2 = ops.tanh(ops.linear(h1, W2, b2))
    h3 = ops.tanh(ops.linear(h2, W3, b3))
    return ops.linear(h3, W4, b4)


def bottleneck_build(quick: bool) -> dict:
    r = _rng(3)
    dims = [200, 200, 16, 200, 200] if quick else [2000, 2000, 16, 2000, 2000]
    return {"x": r.standard_normal(dims[0]), **_layers(r, dims)}


def bottleneck_closed(a: dict) -> dict:
    """(J4 J3)(J2 J1): each diagonal scales the small (16-wide) neighbour, then one rank-16 outer GEMM."""
    h1 = np.tanh(a["W1"] @ a["x"] + a["b1"])
    h2 = np.tanh(a["W2"] @ h1 + a["b2"])
    h3 = np.tanh(a["W3"] @ h2 + a["b3"])
    left = a["W4"] @ ((1.0 - h3 * h3)[:, None] * a["W3"])            # (O, 16) = J4 J3
    left *= (1.0 - h2 * h2)[None, :]
    right = (a["W2"] * (1.0 - h1 * h1)[None, :]) @ a["W1"]            # (16, D) = diag J2 J1 (d2 went left)
    return {"x": left @ right}


# ---------------------------------------------------------------- 4: residual block

def residual(x, W1, b1, W2, b2):
    return fn.linear(fn.relu(fn.linear(x, W1, b1)), W2, b2) + x


def residual_peer(ops, x, W1, b1, W2, b2):
    return ops.linear(ops.relu(ops.linear(x, W1, b1)), W2, b2) + x


def residual_build(quick: bool) -> dict:
    r = _rng(4)
    B, D, H = (16, 32, 64) if quick else (128, 256, 512)
    return {"x": r.standard_normal((B, D)), **{k: v for k, v in _layers(r, [D, H, D]).items()}}


def residual_closed(a: dict) -> dict:
    """J_b = W2 diag(relu'(z_b)) W1 + I: the mask scales W2's columns, one (B*D, H) x (H, D) GEMM, then + I."""
    z = a["x"] @ a["W1"].T + a["b1"]
    mask = (z > 0).astype(z.dtype)                                    # (B, H)
    B, D = a["x"].shape
    A = a["W2"][None, :, :] * mask[:, None, :]                       # (B, D, H): W2 diag(mask_b)
    J = (A.reshape(B * D, -1) @ a["W1"]).reshape(B, D, -1)           # one 2-D GEMM, W1 shared
    idx = np.arange(J.shape[1])
    J[:, idx, idx] += 1.0
    return {"x": J}


# ---------------------------------------------------------------- 5: batch norm (samples interact)

def batchnorm(x):
    return fn.batch_norm(x)


def batchnorm_peer(ops, x):
    m = x.mean(0)
    c = x - m
    return c / ops.sqrt((c * c).mean(0) + 1e-5)


def batchnorm_build(quick: bool) -> dict:
    r = _rng(5)
    B, F = (16, 8) if quick else (64, 32)
    return {"x": 1.5 + 2.0 * r.standard_normal((B, F))}


def batchnorm_closed(a: dict) -> dict:
    """J[b,f,c,g] = delta_fg (delta_bc - 1/B - xhat_bf xhat_cf / B) / sigma_f: a (B,B,F) block on the f=g diagonal."""
    x = a["x"]
    B, F = x.shape
    sigma = np.sqrt(x.var(axis=0) + 1e-5)
    xhat = (x - x.mean(axis=0)) / sigma
    K = (np.eye(B)[:, :, None] - 1.0 / B - xhat[:, None, :] * xhat[None, :, :] / B) / sigma   # (B, B, F)
    J = np.zeros((B, F, B, F))
    idx = np.arange(F)
    J[:, idx, :, idx] = K.transpose(2, 0, 1)                          # advanced indices first: (F, B, B)
    return {"x": J}


# ---------------------------------------------------------------- 6: Clark's one-layer network

def clark(x, y, W, b1, U, b2):
    h = fn.relu(fn.linear(x, W, b1))                                  # z = W x + b1, h = relu(z)
    return fn.softmax_cross_entropy(fn.linear(h, U, b2), y)          # theta = U h + b2, CE(y, softmax(theta))


def clark_peer(ops, x, y, W, b1, U, b2):
    theta = ops.linear(ops.relu(ops.linear(x, W, b1)), U, b2)
    return -(y * ops.log_softmax(theta)).sum(-1)


def clark_build(quick: bool) -> dict:
    r = _rng(6)
    B, Dx, Dh, Nc = (16, 20, 30, 5) if quick else (128, 100, 200, 10)
    return {"x": r.standard_normal((B, Dx)), "y": r.integers(0, Nc, B),
            "W": r.standard_normal((Dh, Dx)) / np.sqrt(Dx), "b1": 0.1 * r.standard_normal(Dh),
            "U": r.standard_normal((Nc, Dh)) / np.sqrt(Dh), "b2": 0.1 * r.standard_normal(Nc)}


def _softmax(t: np.ndarray) -> np.ndarray:
    e = np.exp(t - t.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def clark_closed(a: dict) -> dict:
    """Clark's backprop: delta1 = yhat - y, delta2 = (delta1 U) * relu'(z); outer products for W and U."""
    x, W, U = a["x"], a["W"], a["U"]
    z = x @ W.T + a["b1"]
    h = np.maximum(z, 0.0)
    d1 = _softmax(h @ U.T + a["b2"])
    d1[np.arange(len(x)), a["y"]] -= 1.0                              # yhat - y
    d2 = (d1 @ U) * (z > 0)
    return {"x": d2 @ W, "W": d2[:, :, None] * x[:, None, :], "b1": d2,
            "U": d1[:, :, None] * h[:, None, :], "b2": d1}


def clark_peer_inputs(a: dict) -> dict:
    return {**a, "y": _onehot(a["y"], a["U"].shape[0])}


# ---------------------------------------------------------------- 7: softmax classifier (mean loss)

def softmax_classifier(X, y, W, b):
    return fn.mean(fn.softmax_cross_entropy(fn.linear(X, W, b), y))


def softmax_classifier_peer(ops, X, y, W, b):
    return -(y * ops.log_softmax(ops.linear(X, W, b))).sum(-1).mean()


def softmax_classifier_build(quick: bool) -> dict:
    r = _rng(7)
    N, D, C = (32, 40, 5) if quick else (256, 512, 10)
    return {"X": r.standard_normal((N, D)), "y": r.integers(0, C, N),
            "W": r.standard_normal((C, D)) / np.sqrt(D), "b": 0.1 * r.standard_normal(C)}


def softmax_classifier_closed(a: dict) -> dict:
    """G = (softmax(X W^T + b) - Y) / N; dL/dW = G^T X, dL/db = sum G, dL/dX = G W."""
    X, W = a["X"], a["W"]
    G = _softmax(X @ W.T + a["b"])
    G[np.arange(len(X)), a["y"]] -= 1.0
    G /= len(X)
    return {"X": G @ W, "W": G.T @ X, "b": G.sum(axis=0)}


def softmax_classifier_peer_inputs(a: dict) -> dict:
    return {**a, "y": _onehot(a["y"], a["W"].shape[0])}


# ---------------------------------------------------------------- small models (issue 8 item 9)
# Millisecond-sized problems where a fixed per-call cost shows: repeat-call time against JAX and torch.

def cs224n(x, W, b, u):
    return fn.matmul(fn.sigmoid(fn.linear(x, W, b)), u)              # z = W x + b, h = sigmoid(z), s = u^T h


def cs224n_peer(ops, x, W, b, u):
    return ops.sigmoid(ops.linear(x, W, b)) @ u


def cs224n_build(quick: bool) -> dict:
    """CS224n's window classifier: a window of 5 words of 4-dim vectors (Dx = 20), 8 hidden units, as in the lecture."""
    r = _rng(8)
    B, Dx, Dh = (4, 6, 3) if quick else (16, 20, 8)
    return {"x": r.standard_normal((B, Dx)), "W": r.standard_normal((Dh, Dx)) / np.sqrt(Dx),
            "b": 0.1 * r.standard_normal(Dh), "u": r.standard_normal(Dh)}


def cs224n_closed(a: dict) -> dict:
    """delta = u * sigmoid'(z) (B, Dh); ds/dx = delta W, ds/dW = delta x^T per sample (Clark's identities 1, 4, 5)."""
    h = 1.0 / (1.0 + np.exp(-(a["x"] @ a["W"].T + a["b"])))
    delta = a["u"] * h * (1.0 - h)
    return {"x": delta @ a["W"], "W": delta[:, :, None] * a["x"][:, None, :]}


RNN_STEPS = 5


def rnn5(h0, x1, x2, x3, x4, x5, W, U, b):
    h = h0
    for x in (x1, x2, x3, x4, x5):
        h = fn.tanh(fn.linear(h, W) + fn.linear(x, U, b))            # h_t = tanh(W h_{t-1} + U x_t + b)
    return h


def rnn5_peer(ops, h0, x1, x2, x3, x4, x5, W, U, b):
    h = h0
    for x in (x1, x2, x3, x4, x5):
        h = ops.tanh(ops.linear(h, W) + ops.linear(x, U, b))
    return h


def rnn5_build(quick: bool) -> dict:
    r = _rng(9)
    B, H, D = (3, 4, 3) if quick else (16, 32, 16)
    return {"h0": r.standard_normal((B, H)), **{f"x{t}": r.standard_normal((B, D)) for t in range(1, RNN_STEPS + 1)},
            "W": r.standard_normal((H, H)) / np.sqrt(H), "U": r.standard_normal((H, D)) / np.sqrt(D),
            "b": 0.1 * r.standard_normal(H)}


def rnn5_closed(a: dict) -> dict:
    """Backprop through time: G_t = dh_5/dz_t = (G_{t+1} W) diag(1 - h_t^2); dh_5/dU = sum_t G_t x_t^T; dh_5/dh_0 = G_1 W."""
    W, U, b = a["W"], a["U"], a["b"]
    xs = [a[f"x{t}"] for t in range(1, RNN_STEPS + 1)]
    hs = [a["h0"]]
    for x in xs:
        hs.append(np.tanh(hs[-1] @ W.T + x @ U.T + b))
    B, H = hs[0].shape
    G = np.broadcast_to(np.eye(H), (B, H, H)) * (1.0 - hs[-1] ** 2)[:, None, :]
    Gs = []
    for t in range(RNN_STEPS, 0, -1):                                # t = 5 .. 1: Gs[k] goes with x_{5-k}
        Gs.append(G)
        G = G @ W                                                    # dh_5 / dh_{t-1}
        if t > 1:
            G = G * (1.0 - hs[t - 1] ** 2)[:, None, :]
    dU = np.einsum("tbij,tbk->bijk", np.stack(Gs), np.stack(xs[::-1]))
    return {"h0": G, "U": dU}


def attention(x, Wq, Wk, Wv):
    q, k, v = fn.matmul(x, Wq), fn.matmul(x, Wk), fn.matmul(x, Wv)
    s = fn.matmul(q, fn.transpose(k, (0, 2, 1))) * (1.0 / np.sqrt(Wq.shape[1]))
    return fn.matmul(fn.softmax(s), v)                               # softmax(Q K^T / sqrt(d)) V


def attention_peer(ops, x, Wq, Wk, Wv):
    q, k, v = x @ Wq, x @ Wk, x @ Wv
    return ops.softmax(q @ ops.swap(k) * (1.0 / np.sqrt(Wq.shape[1]))) @ v


def attention_build(quick: bool) -> dict:
    r = _rng(10)
    B, T, d = (2, 3, 4) if quick else (8, 16, 32)
    return {"x": r.standard_normal((B, T, d)),
            **{n: r.standard_normal((d, d)) / np.sqrt(d) for n in ("Wq", "Wk", "Wv")}}


def attention_closed(a: dict) -> dict:
    """d out[t,e] / d x[s,c] = A[t,s] Wv[c,e] + sum_u A[t,u] (V[u,e] - out[t,e]) dS[t,u]/dx[s,c], with
    dS[t,u]/dx[s,c] = (delta_ts (Wq K^T)[c,u] + delta_us (Q Wk^T)[t,c]) / sqrt(d)."""
    x, Wq, Wk, Wv = a["x"], a["Wq"], a["Wk"], a["Wv"]
    B, T, d = x.shape
    n = 1.0 / np.sqrt(Wq.shape[1])
    Q, K, V = x @ Wq, x @ Wk, x @ Wv
    A = _softmax(n * Q @ K.transpose(0, 2, 1))                       # (B, T, T)
    O = A @ V
    P = A[..., None] * (V[:, None, :, :] - O[:, :, None, :])         # (B, t, u, e)
    J = A[:, :, None, :, None] * Wv.T[None, None, :, None, :]        # value path: (B, t, e, s, c)
    J += n * P.transpose(0, 1, 3, 2)[..., None] * (Q @ Wk.T)[:, :, None, None, :]      # key path, u = s
    diag = n * np.einsum("btue,buc->btec", P, K @ Wq.T)              # (Wq K^T)[c,u] = (K Wq^T)[u,c]
    idx = np.arange(T)
    J[:, idx, :, idx, :] += diag.transpose(1, 0, 2, 3)               # query path, s = t (advanced axes first)
    return {"x": J}


TINY_TITLE = "tanh(x W^T + b), x (2, 3), W (3, 3): per-sample d y / d x (2, 3, 3)"


def tiny(x, W, b):
    return fn.tanh(fn.linear(x, W, b))


def tiny_peer(ops, x, W, b):
    return ops.tanh(ops.linear(x, W, b))


def tiny_build(quick: bool) -> dict:
    r = _rng(11)
    return {"x": r.standard_normal((2, 3)), "W": r.standard_normal((3, 3)), "b": r.standard_normal(3)}


def tiny_closed(a: dict) -> dict:
    h = np.tanh(a["x"] @ a["W"].T + a["b"])
    return {"x": (1.0 - h * h)[:, :, None] * a["W"]}



# ---------------------------------------------------------------- real models (issue 9)

def _conv_np(x: np.ndarray, W: np.ndarray, b: np.ndarray):
    """Valid, stride-1 cross-correlation (PyTorch's conv2d): im2col patches (B, H', W', C, k, k) and one GEMM."""
    k = W.shape[-1]
    P = np.ascontiguousarray(sliding_window_view(x, (k, k), axis=(2, 3)).transpose(0, 2, 3, 1, 4, 5))
    B, Ho, Wo = P.shape[:3]
    y = (P.reshape(B * Ho * Wo, -1) @ W.reshape(W.shape[0], -1).T).reshape(B, Ho, Wo, -1)
    return y.transpose(0, 3, 1, 2) + b[:, None, None], P


def _pool_np(h: np.ndarray):
    """2x2 max pooling, stride 2: values and each window's argmax in 0..3 (first maximal element, as PyTorch)."""
    B, C, H, W = h.shape
    v = h.reshape(B, C, H // 2, 2, W // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(B, C, H // 2, W // 2, 4)
    arg = v.argmax(axis=-1)
    return np.take_along_axis(v, arg[..., None], axis=-1)[..., 0], arg


def _unpool_np(G: np.ndarray, arg: np.ndarray) -> np.ndarray:
    """G (B, K, C, P, Q) sent back to each window's argmax: (B, K, C, 2P, 2Q)."""
    B, K, C, P, Q = G.shape
    U = G[..., None] * (arg[:, None, ..., None] == np.arange(4))
    return U.reshape(B, K, C, P, Q, 2, 2).transpose(0, 1, 2, 3, 5, 4, 6).reshape(B, K, C, 2 * P, 2 * Q)


def _conv_t_np(G: np.ndarray, W: np.ndarray) -> np.ndarray:
    """The transpose of :func:`_conv_np` w.r.t. its input for K rows at once: G (B, K, O, H', W') -> (B, K, C, H, W)."""
    B, K, O, Ho, Wo = G.shape
    k = W.shape[-1]
    Gt = np.ascontiguousarray(G.transpose(0, 1, 3, 4, 2))            # (B, K, H', W', O)
    out = np.zeros((B, K, Ho + k - 1, Wo + k - 1, W.shape[1]))
    for i in range(k):                                                # k*k shifted GEMMs, no loop over samples
        for j in range(k):
            out[:, :, i:i + Ho, j:j + Wo, :] += Gt @ W[:, :, i, j]
    return np.ascontiguousarray(out.transpose(0, 1, 4, 2, 3))


def _onehot_bytes(shapes: dict) -> int:
    """Bytes of the float64 (B, T, V) one-hot that a dense E[ids] Jacobian would need."""
    (B, T), V = shapes["ids"], shapes["E"][0]
    return 8 * B * T * V


def cnn(x, W1, b1, W2, b2, W3, b3, W4, b4, W5, b5):
    h = fn.max_pool2d(fn.relu(fn.conv2d(x, W1, b1)), 2)
    h = fn.max_pool2d(fn.relu(fn.conv2d(h, W2, b2)), 2)
    h = fn.reshape(h, (h.shape[0], -1))
    h = fn.relu(fn.linear(h, W3, b3))
    h = fn.relu(fn.linear(h, W4, b4))
    return fn.linear(h, W5, b5)


def cnn_peer(ops, x, W1, b1, W2, b2, W3, b3, W4, b4, W5, b5):
    h = ops.max_pool2d(ops.relu(ops.conv2d(x, W1, b1)))
    h = ops.max_pool2d(ops.relu(ops.conv2d(h, W2, b2)))
    h = ops.relu(ops.linear(h.reshape(-1), W3, b3))
    return ops.linear(ops.relu(ops.linear(h, W4, b4)), W5, b5)


def cnn_build(quick: bool) -> dict:
    """PyTorch's "Training a classifier" net; quick: 3x16x16 images, 2 and 4 channels, kernels 5 and 3."""
    r = _rng(13)
    B, S, (c1, c2), (k1, k2), fc = (2, 16, (2, 4), (5, 3), (8, 6, 3)) if quick else \
        (64, 32, (6, 16), (5, 5), (120, 84, 10))
    side = ((S - k1 + 1) // 2 - k2 + 1) // 2
    out = {"x": r.standard_normal((B, 3, S, S))}
    for n, (o, c, k) in (("1", (c1, 3, k1)), ("2", (c2, c1, k2))):
        out["W" + n] = r.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)
        out["b" + n] = 0.1 * r.standard_normal(o)
    dense = _layers(r, [c2 * side * side, *fc])
    out.update({f"{w}{int(k) + 2}": v for key, v in dense.items() for w, k in [(key[0], key[1:])]})
    return out


def cnn_closed(a: dict) -> dict:
    """Backprop of the 10 logits at once: the dense layers as GEMMs, pooling as a scatter to the argmax,
    conv2 transposed as 25 shifted GEMMs; d/dx the same through conv1, d/dW1 = G1 against the im2col patches."""
    x = a["x"]
    c1, P1 = _conv_np(x, a["W1"], a["b1"])
    p1, arg1 = _pool_np(np.maximum(c1, 0.0))
    c2, _ = _conv_np(p1, a["W2"], a["b2"])
    p2, arg2 = _pool_np(np.maximum(c2, 0.0))
    B = x.shape[0]
    a3 = p2.reshape(B, -1) @ a["W3"].T + a["b3"]
    a4 = np.maximum(a3, 0.0) @ a["W4"].T + a["b4"]
    K = a["W5"].shape[0]
    G = a["W5"][None] * (a4 > 0)[:, None, :]                        # (B, K, 84)
    G = (G @ a["W4"]) * (a3 > 0)[:, None, :]                        # (B, K, 120)
    G = (G @ a["W3"]).reshape((B, K) + p2.shape[1:])                # (B, K, 16, 5, 5)
    G = _unpool_np(G, arg2) * (c2 > 0)[:, None]                     # d logits / d c2
    G = _unpool_np(_conv_t_np(G, a["W2"]), arg1) * (c1 > 0)[:, None]  # d logits / d c1 (B, K, 6, 28, 28)
    O = G.shape[2]
    HW = G.shape[3] * G.shape[4]
    dW1 = G.reshape(B, K * O, HW) @ P1.reshape(B, HW, -1)           # (B, K*O, C*k*k)
    return {"x": _conv_t_np(G, a["W1"]), "W1": dW1.reshape((B, K) + a["W1"].shape)}


def embed_classifier(ids, E, Wc, bc):
    return fn.linear(fn.mean(fn.embedding(ids, E), axis=1), Wc, bc)


def embed_classifier_peer(ops, ids, E, Wc, bc):
    return ops.linear(ops.embed(E, ids).mean(0), Wc, bc)


def embed_build(quick: bool) -> dict:
    r = _rng(14)
    B, T, V, d, C = (3, 6, 50, 4, 5) if quick else (32, 32, 20_000, 64, 5)
    return {"ids": r.integers(0, V, (B, T)), "E": r.standard_normal((V, d)),
            "Wc": r.standard_normal((C, d)) / np.sqrt(d), "bc": 0.1 * r.standard_normal(C)}


def embed_closed(a: dict) -> dict:
    """d logits[b,k] / d E[v,j] = Wc[k,j] count_b(v) / T: token counts (a bincount, never a (B,T,V) one-hot)."""
    ids, E, Wc = a["ids"], a["E"], a["Wc"]
    B, T = ids.shape
    V = E.shape[0]
    counts = np.bincount((ids + V * np.arange(B)[:, None]).ravel(), minlength=B * V).reshape(B, V) / T
    return {"E": counts[:, None, :, None] * Wc[None, :, None, :]}


def lstm(X, h0, c0, W, U, b):
    H = U.shape[1]
    h, c = h0, c0
    for t in range(X.shape[1]):
        z = fn.linear(X[:, t], W, b) + fn.linear(h, U)             # (B, 4H): gates i, f, g, o
        i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
        c = fn.sigmoid(f) * c + fn.sigmoid(i) * fn.tanh(g)
        h = fn.sigmoid(o) * fn.tanh(c)
    return h


def lstm_peer(ops, X, h0, c0, W, U, b):
    H = U.shape[1]
    h, c = h0, c0
    for t in range(X.shape[0]):
        z = ops.linear(X[t], W, b) + ops.linear(h, U)
        i, f, g, o = (z[k * H:(k + 1) * H] for k in range(4))
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
        h = ops.sigmoid(o) * ops.tanh(c)
    return h


def lstm_build(quick: bool) -> dict:
    r = _rng(15)
    B, T, D, H = (2, 3, 3, 4) if quick else (32, 20, 64, 128)
    return {"X": r.standard_normal((B, T, D)), "h0": 0.5 * r.standard_normal((B, H)),
            "c0": 0.5 * r.standard_normal((B, H)), "W": r.standard_normal((4 * H, D)) / np.sqrt(D),
            "U": r.standard_normal((4 * H, H)) / np.sqrt(H), "b": 0.1 * r.standard_normal(4 * H)}


def lstm_closed(a: dict) -> dict:
    """Backprop through time with (B, H, .) blocks: A_h = dh_T/dh_t, A_c = dh_T/dc_t (total), per step
    G_z = [A_c g i', A_c c_{t-1} f', A_c i g', A_h tanh(c_t) o'] (B, H, 4H); dh_T/dx_t = G_z W,
    dh_T/dh_{t-1} = G_z U, and A_c picks up f_t and the path through h_{t-1}."""
    X, W, U, b = a["X"], a["W"], a["U"], a["b"]
    B, T, _ = X.shape
    H = U.shape[1]
    hs, cs, gates = [a["h0"]], [a["c0"]], []
    for t in range(T):
        z = X[:, t] @ W.T + b + hs[-1] @ U.T
        i, f, o = (1.0 / (1.0 + np.exp(-z[:, k * H:(k + 1) * H])) for k in (0, 1, 3))
        g = np.tanh(z[:, 2 * H:3 * H])
        cs.append(f * cs[-1] + i * g)
        hs.append(o * np.tanh(cs[-1]))
        gates.append((i, f, g, o))
    eye = np.broadcast_to(np.eye(H), (B, H, H))
    A_h = eye.copy()
    A_c = A_h * (gates[-1][3] * (1.0 - np.tanh(cs[-1]) ** 2))[:, None, :]
    dX = np.empty((B, H, T, X.shape[2]))
    for t in range(T, 0, -1):                                        # step t uses x_{t-1}, h_{t-1}, c_{t-1}
        i, f, g, o = gates[t - 1]
        Gz = np.concatenate([A_c * (g * i * (1 - i))[:, None], A_c * (cs[t - 1] * f * (1 - f))[:, None],
                             A_c * (i * (1 - g * g))[:, None], A_h * (np.tanh(cs[t]) * o * (1 - o))[:, None]],
                            axis=2)
        dX[:, :, t - 1] = Gz @ W
        A_h = Gz @ U
        if t > 1:
            o_prev = gates[t - 2][3]
            A_c = A_c * f[:, None] + A_h * (o_prev * (1.0 - np.tanh(cs[t - 1]) ** 2))[:, None]
    return {"X": dX, "h0": A_h}


# ---------------------------------------------------------------- Hessians (issue 11)

def quadratic(x, A):
    return fn.matmul(x, fn.matmul(A, x))                              # x^T A x


def quadratic_peer(ops, x, A):
    return x @ (A @ x)


def quadratic_build(quick: bool) -> dict:
    r = _rng(16)
    n = 30 if quick else 2000
    return {"x": r.standard_normal(n), "A": r.standard_normal((n, n))}


def quadratic_closed(a: dict) -> dict:
    return {"x": a["A"] + a["A"].T}


def logreg(w, X, y):
    z = fn.matmul(X, w)
    return fn.mean(fn.softplus(z) - y * z)                            # mean binary cross-entropy of sigmoid(X w)


def logreg_peer(ops, w, X, y):
    z = X @ w
    return (ops.softplus(z) - y * z).mean()


def logreg_build(quick: bool) -> dict:
    r = _rng(17)
    N, D = (50, 6) if quick else (10_000, 500)
    return {"w": r.standard_normal(D) / np.sqrt(D), "X": r.standard_normal((N, D)),
            "y": r.integers(0, 2, N).astype(np.float64)}


def logreg_closed(a: dict) -> dict:
    X = a["X"]
    p = 1.0 / (1.0 + np.exp(-(X @ a["w"])))
    return {"w": (X.T * (p * (1.0 - p) / len(X))) @ X}              # X^T diag(p(1-p)) X / N


def mlp_scalar(x, W1, b1, W2, b2, w3, b3):
    h = fn.tanh(fn.linear(fn.tanh(fn.linear(x, W1, b1)), W2, b2))
    return fn.matmul(h, w3) + b3                                      # one score per sample


def mlp_scalar_peer(ops, x, W1, b1, W2, b2, w3, b3):
    return ops.tanh(ops.linear(ops.tanh(ops.linear(x, W1, b1)), W2, b2)) @ w3 + b3


def mlp_scalar_build(quick: bool) -> dict:
    r = _rng(18)
    B, dims = (3, [5, 7, 7]) if quick else (64, [100, 256, 256])
    return {"x": r.standard_normal((B, dims[0])), **_layers(r, dims),
            "w3": r.standard_normal(dims[2]) / np.sqrt(dims[2]), "b3": np.array(0.1)}


def mlp_scalar_closed(a: dict) -> dict:
    """H_b = M^T diag(w3 tanh''(a2)) M + W1^T diag((W2^T g2) tanh''(a1)) W1, M = W2 diag(tanh'(a1)) W1,
    g2 = w3 tanh'(a2), tanh'' = -2 tanh tanh'."""
    W1, W2, w3 = a["W1"], a["W2"], a["w3"]
    h1 = np.tanh(a["x"] @ W1.T + a["b1"])
    h2 = np.tanh(h1 @ W2.T + a["b2"])
    d1, d2 = 1.0 - h1 * h1, 1.0 - h2 * h2
    M = (W2[None] * d1[:, None, :]) @ W1                              # (B, H2, D) = d a2 / d x
    s2 = w3 * (-2.0 * h2 * d2)                                        # (B, H2)
    s1 = ((w3 * d2) @ W2) * (-2.0 * h1 * d1)                          # (B, H1)
    return {"x": M.transpose(0, 2, 1) @ (M * s2[:, :, None]) + (W1.T * s1[:, None, :]) @ W1}


# ---------------------------------------------------------------- the table

PROBLEMS: dict[str, Problem] = {p.name: p for p in [
    Problem("mlp_input", "tanh MLP 784-1024-1024-10, B=256: per-sample d out / d x (256, 10, 784)",
            mlp_input_build, mlp3, ("x",), "x", mlp_input_closed, mlp3_peer, ("x",), backends=("jax", "torch")),
    Problem("mlp_params", "tanh MLP 64-128-128-10, B=32: per-sample d out / d (W1, b1, W2, b2, W3, b3)",
            mlp_params_build, mlp3, ("W1", "b1", "W2", "b2", "W3", "b3"), "x", mlp_params_closed, mlp3_peer,
            ("x",), backends=("jax", "torch")),
    Problem("bottleneck", "x(2000) -> 2000 tanh -> 16 tanh -> 2000 tanh -> 2000, biases: full d out / d x (2000, 2000)",
            bottleneck_build, bottleneck, ("x",), None, bottleneck_closed, bottleneck_peer, (),
            orders=("optimal", "forward", "reverse"),
            notes="Bracketing matters here: (J4 J3)(J2 J1) is rank-16 work; pure forward or reverse "
                  "multiplies 2000x2000 matrices."),
    Problem("residual", "y = W2 relu(W1 x + b1) + b2 + x, B=128, D=256, H=512: per-sample d y / d x (128, 256, 256)",
            residual_build, residual, ("x",), "x", residual_closed, residual_peer, ("x",), backends=("jax", "torch")),
    Problem("batchnorm", "batch_norm of x (64, 32), no gamma/beta, eps 1e-5: full d y / d x (64, 32, 64, 32)",
            batchnorm_build, batchnorm, ("x",), "x", batchnorm_closed, batchnorm_peer, ()),
    Problem("clark_one_layer", "Clark's one-layer net, B=128, Dx=100, Dh=200, Nc=10: per-sample dJ / d (x, W, b1, U, b2)",
            clark_build, clark, ("x", "W", "b1", "U", "b2"), "x", clark_closed, clark_peer, ("x", "y"),
            peer_inputs=clark_peer_inputs),
    Problem("softmax_classifier", "mean softmax CE of X W^T + b, N=256, D=512, C=10: dL / d (W, b, X)",
            softmax_classifier_build, softmax_classifier, ("X", "W", "b"), "X", softmax_classifier_closed,
            softmax_classifier_peer, (), peer_inputs=softmax_classifier_peer_inputs,
            notes="X's Jacobian (N, D) is an unbatched output of a batched input."),
    Problem("cs224n_window", "CS224n one-layer net s = u^T sigmoid(W x + b), B=16, Dx=20, Dh=8: per-sample ds / d (x, W)",
            cs224n_build, cs224n, ("x", "W"), "x", cs224n_closed, cs224n_peer, ("x",), group="small",
            notes="The lecture's window classifier (5 words x 4 dims); s is one score per sample."),
    Problem("rnn_5step", "5-step tanh RNN h_t = tanh(W h_{t-1} + U x_t + b), B=16, H=32, D=16: per-sample "
            "d h_5 / d (h_0, U)",
            rnn5_build, rnn5, ("h0", "U"), "h0", rnn5_closed, rnn5_peer, ("h0",) + tuple(f"x{t}" for t in range(1, 6)),
            group="small",
            notes="The five x_t are five arguments (the toolkit has no indexing yet); every implementation gets "
                  "the same five arrays, so no slicing is timed anywhere."),
    Problem("attention", "one attention block softmax(Q K^T / sqrt(d)) V, Q, K, V = x Wq, x Wk, x Wv, B=8, T=16, "
            "d=32: per-sample d out / d x (8, 16, 32, 16, 32)",
            attention_build, attention, ("x",), "x", attention_closed, attention_peer, ("x",), group="small",
            notes="Written with matmul, transpose and softmax (no fused attention op anywhere)."),
    Problem("cnn", "PyTorch tutorial CNN (conv 3->6 5x5, relu, maxpool 2, conv 6->16 5x5, relu, maxpool 2, "
            "linear 400-120-84-10), B=64: per-sample d logits / d (image, conv1 weight) (64, 10, 3, 32, 32), "
            "(64, 10, 6, 3, 5, 5)",
            cnn_build, cnn, ("x", "W1"), "x", cnn_closed, cnn_peer, ("x",), group="models",
            skip_peers={"jax-jacfwd": "forward mode pushes 3,522 tangents per sample (image + conv1 weight) "
                                      "through every activation: XLA asked for 25.6 GB here and failed",
                        "torch-jacfwd": "forward mode, as for JAX (3,522 tangents per sample through every "
                                        "activation; not run at this size)"},
            goals=(("time at or below jax jit(vmap(jacrev))", "time_vs", "jax-jacrev", 1.0),
                   ("peak memory at most 2x result + inputs", "memory", None, 2.0)),
            notes="Written with jac.fn.conv2d / max_pool2d (PyTorch's NCHW conventions), reshape, linear, relu."),
    Problem("embedding", "embedding classifier E[ids] (V=20,000, d=64, T=32, B=32), mean over T, linear to 5 "
            "classes: per-sample d logits / d E (32, 5, 20000, 64)",
            embed_build, embed_classifier, ("E",), "ids", embed_closed, embed_classifier_peer, ("ids",),
            group="models",
            goals=(("peak memory minus the result below the (B, T, V) one-hot (never allocated)", "memory_excess",
                    _onehot_bytes, 1.0),),
            notes="The toolkit's peak memory is the measurement asked for; jacfwd's basis (V*d per sample) is "
                  "far too large and is skipped."),
    Problem("lstm", "LSTM unrolled 20 steps (H=128, D=64, B=32) written with X[:, t] and gate slicing: per-sample "
            "d h_T / d (X, h_0) (32, 128, 20, 64), (32, 128, 128)",
            lstm_build, lstm, ("X", "h0"), ("X", "h0", "c0"), lstm_closed, lstm_peer, ("X", "h0", "c0"),
            group="models", notes="Every sample's X, h_0 and c_0 are batched (several batched arguments)."),
    Problem("quadratic", "f(x) = x^T A x, n = 2,000: Hessian A + A^T (2000, 2000)",
            quadratic_build, quadratic, ("x",), None, quadratic_closed, quadratic_peer, (), group="hessians",
            kind="hessian",
            goals=(("time within 2x of writing the n x n result", "time_vs_write", None, 2.0),
                   ("at least 10x faster than jax.hessian", "time_vs", "jax-hessian", 0.1),
                   ("peak memory under 2x Hessian + inputs", "memory", None, 2.0))),
    Problem("logreg", "logistic-regression mean loss, N = 10,000, D = 500: Hessian w.r.t. w (500, 500) = "
            "X^T diag(p(1-p)) X / N",
            logreg_build, logreg, ("w",), None, logreg_closed, logreg_peer, (), group="hessians", kind="hessian",
            goals=(("time within 1.2x the numpy closed form", "time_vs", "numpy", 1.2),
                   ("peak memory under 2x Hessian + inputs", "memory", None, 2.0))),
    Problem("mlp_hessian", "tanh MLP 100-256-256-1, B = 64: per-sample input Hessian (64, 100, 100)",
            mlp_scalar_build, mlp_scalar, ("x",), "x", mlp_scalar_closed, mlp_scalar_peer, ("x",),
            group="hessians", kind="hessian",
            goals=(("time at or below jax jit(vmap(hessian))", "time_vs", "jax-hessian", 1.0),
                   ("peak memory under 2x Hessian + inputs", "memory", None, 2.0))),
]}

MODELS = ("cnn", "embedding", "lstm")
"""The real models of issue 9: the toolkit against jit(vmap(jacrev)) and torch.func per sample."""

HESSIANS = ("quadratic", "logreg", "mlp_hessian")
"""The Hessians of issue 11: ``jac.hessian`` against jax.hessian, torch.func.hessian and numpy closed forms."""

SMALL_MODELS = ("cs224n_window", "softmax_classifier", "rnn_5step", "attention")
"""The "small models" table: repeat-call time against JAX and torch where a fixed per-call cost shows."""

TINY = Problem("tiny", TINY_TITLE, tiny_build, tiny, ("x",), "x", tiny_closed, tiny_peer, ("x",), group="overhead")
"""The fixed per-call overhead: this problem's time per call minus the same math in plain numpy."""


def mlp_chain(layers: int, width: int, batch: int, seed: int = 12):
    """A tanh MLP of ``layers`` layers (weights captured by the closure) and its input x (batch, width).

    Its per-sample d out / d x is the planning-time benchmark: one chain of ``2 * layers`` links.
    """
    r = _rng(seed)
    Ws = [r.standard_normal((width, width)) / np.sqrt(width) for _ in range(layers)]
    bs = [0.1 * r.standard_normal(width) for _ in range(layers)]

    def chain(x):
        h = x
        for W, b in zip(Ws, bs):
            h = fn.tanh(fn.linear(h, W, b))
        return h
    return chain, r.standard_normal((batch, width))


def get(name: str) -> Problem:
    try:
        return PROBLEMS[name]
    except KeyError:
        raise SystemExit(f"unknown problem {name!r}; valid: {', '.join(PROBLEMS)}") from None
