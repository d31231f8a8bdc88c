"""Elementwise ops: the binary ones with numpy broadcasting, then one row per unary op."""

from __future__ import annotations

import inspect

import numpy as np

from ..errors import fail
from ..labels import fresh, lead
from ._registry import _aligned, _broadcast, _real, defop, register, rule


def _elementwise_binary(op: str, a, b):
    out_shape = _broadcast(op, ("a", a), ("b", b))
    out = lead(len(out_shape))
    new = fresh()
    return out_shape, out, _aligned(a.shape, out_shape, out, new), _aligned(b.shape, out_shape, out, new)


@defop("a b", formula="dz/da = delta, dz/db = delta (ones on broadcast axes)", numpy=("add",))
def add(a, b):
    """``a + b`` with numpy broadcasting (a bias row added to every sample: Yeh section 6)."""
    _, out, as_, bs = _elementwise_binary("add", a, b)
    return a + b, (lambda: rule(out, as_), lambda: rule(out, bs))


@defop("a b", formula="dz/da = delta, dz/db = -delta (ones on broadcast axes)", numpy=("subtract",))
def subtract(a, b):
    """``a - b`` with numpy broadcasting."""
    _, out, as_, bs = _elementwise_binary("subtract", a, b)
    minus = np.array(-1.0, dtype=np.result_type(a, b))
    return a - b, (lambda: rule(out, as_), lambda: rule(out, bs, ("", minus)))


@defop("a b", formula="dz/da = delta b, dz/db = delta a", numpy=("multiply",))
def multiply(a, b):
    """``a * b`` (Hadamard) with numpy broadcasting (a row vector times a matrix: Yeh section 7)."""
    _, out, as_, bs = _elementwise_binary("multiply", a, b)
    return a * b, (lambda: rule(out, as_, (bs, b)), lambda: rule(out, bs, (as_, a)))


@defop("a b", formula="dz/da = delta / b, dz/db = -delta z / b", numpy=("divide", "true_divide"))
def divide(a, b):
    """``a / b`` with numpy broadcasting; b must have no zeros."""
    if (b == 0).any():
        fail("divide", f"argument b contains zeros (shape {b.shape})")
    _, out, as_, bs = _elementwise_binary("divide", a, b)
    y = a / b
    return y, (lambda: rule(out, as_, (bs, 1.0 / b)), lambda: rule(out, bs, (out, -y / b)))


@defop("x", data="x", formula="dy/dx = -delta", numpy=("negative",))
def negative(x):
    """``-x``."""
    L = lead(x.ndim)
    return -x, (lambda: rule(L, L, ("", np.array(-1.0, dtype=x.dtype))),)


# ---------------------------------------------------------------- unary rows
# one row per op: name, doc, forward f(x, **kw), derivative f'(x, y, **kw) (its formula), domain check

def _elementwise(name: str, doc: str, f, df, formula: str, domain=None, params: str = "",
                 numpy: tuple[str, ...] = ()):
    def forward(x, **kw):
        kw = {k: _real(name, k, v) for k, v in kw.items()}
        if domain is not None:
            ok, what = domain
            bad = ~ok(x, **kw)
            if bad.any():
                fail(name, f"argument x must be {what}; got {x.flat[np.flatnonzero(bad)[0]]} "
                           f"at flat index {np.flatnonzero(bad)[0]} (shape {x.shape})")
        y = f(x, **kw)
        L = lead(x.ndim)
        return y, (lambda: rule(L, L, (L, np.asarray(df(x, y, **kw), dtype=y.dtype))),)

    args = [inspect.Parameter("x", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for p in params.split():
        pname, default = p.split("=") if "=" in p else (p, inspect.Parameter.empty)
        args.append(inspect.Parameter(pname, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                      default=default if default is inspect.Parameter.empty else float(default)))
    forward.__name__ = name
    forward.__doc__ = doc
    return register(name, forward, arrays="x", data="x", signature=inspect.Signature(args),
                    family="elementwise", formula=f"dy/dx = delta {formula}", numpy=numpy)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for any x


exp = _elementwise("exp", "e**x elementwise.", lambda x: np.exp(x), lambda x, y: y, "y", numpy=("exp",))
log = _elementwise("log", "Natural log elementwise; x > 0.", lambda x: np.log(x), lambda x, y: 1.0 / x, "/ x",
                   domain=(lambda x: x > 0, "positive"), numpy=("log",))
sigmoid = _elementwise("sigmoid", "1 / (1 + e**-x) elementwise.", _sigmoid, lambda x, y: y * (1 - y), "y (1 - y)")
tanh = _elementwise("tanh", "tanh elementwise.", np.tanh, lambda x, y: 1 - y * y, "(1 - y**2)", numpy=("tanh",))
relu = _elementwise("relu", "max(x, 0) elementwise; its derivative at 0 is taken as 0.",
                    lambda x: np.maximum(x, 0), lambda x, y: (x > 0).astype(x.dtype), "[x > 0]")
leaky_relu = _elementwise("leaky_relu", "x if x > 0 else alpha x, elementwise (derivative at 0: alpha).",
                          lambda x, alpha: np.where(x > 0, x, alpha * x),
                          lambda x, y, alpha: np.where(x > 0, 1.0, alpha), "(1 if x > 0 else alpha)",
                          params="alpha=0.01")
softplus = _elementwise("softplus", "log(1 + e**x) elementwise, stable for large |x|.",
                        lambda x: np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))),
                        lambda x, y: _sigmoid(x), "sigmoid(x)")
square = _elementwise("square", "x**2 elementwise.", np.square, lambda x, y: 2 * x, "2 x", numpy=("square",))
sqrt = _elementwise("sqrt", "Square root elementwise; x > 0 (the derivative is infinite at 0).",
                    np.sqrt, lambda x, y: 0.5 / y, "/ (2 y)", domain=(lambda x: x > 0, "positive"),
                    numpy=("sqrt",))
power = _elementwise("power", "x**p elementwise for a constant p; x > 0 unless p is a non-negative integer.",
                     lambda x, p: np.power(x, p), lambda x, y, p: p * np.power(x, p - 1), "p x**(p - 1)",
                     domain=(lambda x, p: (x > 0) | (float(p) == int(p) and p >= 0),
                             "positive for a non-integer or negative exponent"),
                     params="p")
