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
softmax classifier), the fixed-overhead problem :data:`TINY`, and the
planning-time chains of :func:`mlp_chain`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import jacobians as jac

fn = jac.fn

__all__ = ["Problem", "PROBLEMS", "SMALL_MODELS", "TINY", "get", "mlp_chain"]


@dataclass
class Problem:
    name: str
    title: str
    build: Callable[[bool], dict]
    fn: Callable
    wrt: tuple[str, ...]
    batched: str | None
    closed_form: Callable[[dict], dict]
    peer_fn: Callable
    peer_batched: tuple[str, ...] = ()          # vmapped on axis 0 by the peers (empty: unbatched)
    peer_inputs: Callable[[dict], dict] = lambda inputs: dict(inputs)
    orders: tuple[str, ...] = ("optimal",)      # toolkit orders timed
    notes: str = ""
    group: str = "main"                         # "main": the main table; "small": the small-models table only

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


# ---------------------------------------------------------------- the table

PROBLEMS: dict[str, Problem] = {p.name: p for p in [
    Problem("mlp_input", "tanh MLP 784-1024-1024-10, B=256: per-sample d out / d x (256, 10, 784)",
            mlp_input_build, mlp3, ("x",), "x", mlp_input_closed, mlp3_peer, ("x",)),
    Problem("mlp_params", "tanh MLP 64-128-128-10, B=32: per-sample d out / d (W1, b1, W2, b2, W3, b3)",
            mlp_params_build, mlp3, ("W1", "b1", "W2", "b2", "W3", "b3"), "x", mlp_params_closed, mlp3_peer,
            ("x",)),
    Problem("bottleneck", "x(2000) -> 2000 tanh -> 16 tanh -> 2000 tanh -> 2000, biases: full d out / d x (2000, 2000)",
            bottleneck_build, bottleneck, ("x",), None, bottleneck_closed, bottleneck_peer, (),
            orders=("optimal", "forward", "reverse"),
            notes="Bracketing matters here: (J4 J3)(J2 J1) is rank-16 work; pure forward or reverse "
                  "multiplies 2000x2000 matrices."),
    Problem("residual", "y = W2 relu(W1 x + b1) + b2 + x, B=128, D=256, H=512: per-sample d y / d x (128, 256, 256)",
            residual_build, residual, ("x",), "x", residual_closed, residual_peer, ("x",)),
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
]}

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
