"""Elementwise ops, one row each: the value f, the first derivative f', the second derivative f''.

A unary row reads ``unary(name, f, f', f'', "f' in words", ...)`` where ``f(x)``, ``f'(x, y)`` and
``f''(x, y)`` take the argument ``x``, the value ``y`` and the op's parameters; a number in place
of a derivative is a constant (``negative``: -1).  Its Jacobian is the delta ``f'(x)[o] delta(o, i)``;
the second derivative is ``f''(x)`` on three tied labels (the Hessian work reads ``op.row.d2``).

A binary row (numpy broadcasting) gives the two partials ``(f_a, f_b)`` and the three second
partials ``(f_aa, f_ab, f_bb)``, each an array that broadcasts to the output or a number.

``domain`` refuses the value outside it (a one-line ValueError naming the op, the value and its
index); ``smooth`` refuses the Jacobian where the value exists but the slope is infinite or
undefined (``arcsin`` at +-1, ``cbrt`` at 0, ``arctan2``/``hypot`` at the origin).

``sign`` is not differentiable: its Jacobian is taken as zero everywhere, as JAX and PyTorch do
(the derivative is 0 away from 0; at 0 it does not exist).  ``relu``'s slope at 0 is 0.

Stable forms: ``sigmoid`` is the two-branch form (``1/(1+e^-x)`` for x >= 0, ``e^x/(1+e^x)`` below),
so it keeps full relative accuracy for negative x; its slope is ``s(x) s(-x)``, accurate on both
sides; ``softplus``, ``log_sigmoid``, ``silu`` and ``gelu`` are written through it (no overflow
for any finite x); ``logaddexp`` is numpy's stable one.  ``erf``/``erfc`` use
``scipy.special`` when scipy is importable and ``math.erf``/``math.erfc`` elementwise otherwise
(both full double precision; scipy is not a dependency).
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, NamedTuple

import numpy as np

from ..errors import fail
from ..labels import fresh, lead
from ._registry import _aligned, _broadcast, _real, register, rule

__all__ = ["Row", "ROWS"]


class Row(NamedTuple):
    """One elementwise op: ``f``, its derivatives and where they exist.

    Unary: ``f(x, **p)``, ``d1(x, y, **p)``, ``d2(x, y, **p)``.  Binary: ``f(a, b)``,
    ``d1(a, b, y) -> (f_a, f_b)``, ``d2(a, b, y) -> (f_aa, f_ab, f_bb)``.  A number is a constant.
    ``domain``/``smooth``: ``(ok(args..., **p) -> bool array, "what it must be")`` or None.
    """

    name: str
    arity: int
    f: Callable
    d1: Callable | float
    d2: Callable | float
    formula: str
    domain: tuple | None = None
    smooth: tuple | None = None
    params: tuple = ()         # (name, default, allowed) with allowed None for a real number


ROWS: dict[str, Row] = {}


def _at(mask: np.ndarray, *arrays) -> tuple:
    """The first True of ``mask``: its flat index and the values of ``arrays`` there."""
    k = int(np.flatnonzero(mask)[0])
    return k, [np.broadcast_to(a, mask.shape).flat[k].item() for a in arrays]


# ---------------------------------------------------------------- unary rows

def _param(op: str, name: str, value, allowed):
    if allowed is None:
        return _real(op, name, value)
    if not isinstance(value, str) or value not in allowed:
        fail(op, f"argument {name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def unary(name: str, f, d1, d2, formula: str, doc: str, *, domain=None, smooth=None, params=(),
          numpy: tuple[str, ...] = ()):
    """Register one unary elementwise op from its row."""
    row = Row(name, 1, f, d1, d2, formula, domain, smooth, tuple(params))
    ROWS[name] = row
    checked = [(p, allowed) for p, _, allowed in row.params]

    def forward(x, **kw):
        if checked:
            kw = {p: _param(name, p, kw[p], allowed) for p, allowed in checked}
        if domain is not None:
            ok = domain[0](x, **kw)
            if not ok.all():
                k, (v,) = _at(~ok, x)
                fail(name, f"argument x must be {domain[1]}; got {v!r} at flat index {k} (shape {x.shape})")
        y = np.asarray(f(x, **kw), dtype=x.dtype)
        L = lead(x.ndim)

        def dx():
            if smooth is not None:
                ok = smooth[0](x, **kw)
                if not ok.all():
                    k, (v,) = _at(~ok, x)
                    fail(name, f"the Jacobian w.r.t. x does not exist at x = {v!r} (flat index {k}, shape "
                               f"{x.shape}): the slope is infinite or undefined there; it exists for {smooth[1]}")
            if not callable(d1):
                return rule(L, L) if d1 == 1 else rule(L, L, ("", np.array(d1, dtype=y.dtype)))
            return rule(L, L, (L, np.asarray(d1(x, y, **kw), dtype=y.dtype)))
        return y, (dx,)

    args = [inspect.Parameter("x", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    args += [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
             for p, default, _ in row.params]
    forward.__name__ = name
    forward.__doc__ = doc
    return register(name, forward, arrays="x", data="x", signature=inspect.Signature(args), family="elementwise",
                    formula=f"dy/dx = delta {formula}", numpy=numpy, row=row)


def binary(name: str, f, d1, d2, formula: str, doc: str, *, domain=None, smooth=None,
           numpy: tuple[str, ...] = ()):
    """Register one binary elementwise op (numpy broadcasting) from its row."""
    row = Row(name, 2, f, d1, d2, formula, domain, smooth)
    ROWS[name] = row

    def forward(a, b):
        out_shape = _broadcast(name, ("a", a), ("b", b))
        if domain is not None:
            for arg, ok in zip("ab", domain[0](a, b)):
                if ok is not None and not ok.all():
                    k, (v,) = _at(~ok, a if arg == "a" else b)
                    fail(name, f"argument {arg} must be {domain[1]}; got {v!r} at flat index {k} "
                               f"(shape {(a if arg == 'a' else b).shape})")
        y = np.asarray(f(a, b), dtype=np.result_type(a, b))
        out = lead(len(out_shape))
        new = fresh()
        labels = (_aligned(a.shape, out_shape, out, new), _aligned(b.shape, out_shape, out, new))
        partials = []

        def partial(k):
            if not partials:
                if smooth is not None:
                    ok = np.broadcast_to(smooth[0](a, b), out_shape)
                    if not ok.all():
                        i, (va, vb) = _at(~ok, a, b)
                        fail(name, f"the Jacobian does not exist at a = {va!r}, b = {vb!r} (flat index {i} of "
                                   f"the broadcast shape {out_shape}); it exists for {smooth[1]}")
                partials.extend(d1(a, b, y) if callable(d1) else d1)
            d = partials[k]
            if d is a or d is b:  # an argument itself (multiply): on that argument's own labels
                return rule(out, labels[k], (labels[0] if d is a else labels[1], d))
            return _on(out, labels[k], d, out_shape, y.dtype)
        return y, (lambda: partial(0), lambda: partial(1))

    forward.__name__ = name
    forward.__doc__ = doc
    sig = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in "ab"])
    return register(name, forward, arrays="a b", signature=sig, family="elementwise",
                    formula=formula, numpy=numpy, row=row)


def _on(out: str, inp: str, d, out_shape: tuple, dtype):
    """The rule ``d[o] delta(o, i)`` for a partial ``d`` that broadcasts to the output."""
    if not isinstance(d, np.ndarray):
        return rule(out, inp) if d == 1 else rule(out, inp, ("", np.array(d, dtype=dtype)))
    off = len(out_shape) - d.ndim
    keep = [k for k, n in enumerate(d.shape) if n == out_shape[off + k]]
    if len(keep) < d.ndim:  # a broadcast (size-1) axis of the partial: constant along that output axis
        d = d.reshape([d.shape[k] for k in keep])
    if d.dtype != dtype:
        d = d.astype(dtype)
    return rule(out, inp, ("".join(out[off + k] for k in keep), d))


# ---------------------------------------------------------------- stable building blocks

def _sigmoid(x):
    """1 / (1 + e^-x) in two branches: no overflow, full relative accuracy for any sign of x."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _dsigmoid(x):
    """s(x) s(-x) = e^-|x| / (1 + e^-|x|)^2: accurate where s is near 1 as well as near 0."""
    e = np.exp(-np.abs(x))
    return e / ((1.0 + e) * (1.0 + e))


def _softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


_ERF = None


def _erf_pair():
    """(erf, erfc): scipy.special's when scipy is importable, else math.erf/math.erfc elementwise."""
    global _ERF
    if _ERF is None:
        try:
            from scipy.special import erf, erfc
            _ERF = (erf, erfc)
        except ImportError:
            _ERF = tuple(_elementwise_math(g) for g in (math.erf, math.erfc))
    return _ERF


def _elementwise_math(g):
    u = np.frompyfunc(g, 1, 1)
    return lambda x: np.asarray(u(np.asarray(x, dtype=np.float64)), dtype=np.float64)


def _erf(x):
    return _erf_pair()[0](x)


def _erfc(x):
    return _erf_pair()[1](x)


_SQRT2, _SQRT_2PI, _2_SQRTPI = math.sqrt(2.0), math.sqrt(2.0 * math.pi), 2.0 / math.sqrt(math.pi)
_LN2, _LN10 = math.log(2.0), math.log(10.0)
_C, _K = math.sqrt(2.0 / math.pi), 0.044715       # gelu's tanh approximation (as in PyTorch)


def _phi(x):
    return np.exp(-0.5 * x * x) / _SQRT_2PI


def _gelu(x, approximate):
    if approximate == "none":  # x Phi(x) with Phi(x) = erfc(-x/sqrt2)/2: accurate for negative x
        return 0.5 * x * _erfc(-x / _SQRT2)
    return x * _sigmoid(2.0 * _C * (x + _K * x ** 3))  # 0.5 x (1 + tanh(u)) = x sigmoid(2u)


def _dgelu(x, y, approximate):
    if approximate == "none":
        return 0.5 * _erfc(-x / _SQRT2) + x * _phi(x)
    u = _C * (x + _K * x ** 3)
    du = _C * (1.0 + 3.0 * _K * x * x)
    ds = _dsigmoid(2.0 * u)      # 0.5 (1 - tanh(u)^2) / 2; 0 where u overflows, and so is this term
    return _sigmoid(2.0 * u) + 2.0 * x * np.where(ds > 0, ds * du, 0.0)


def _d2gelu(x, y, approximate):
    if approximate == "none":  # phi (2 - x^2), written so that huge |x| gives 0, not inf * 0
        p = _phi(x)
        return 2.0 * p - x * (x * p)
    u = _C * (x + _K * x ** 3)
    du, d2u = _C * (1.0 + 3.0 * _K * x * x), _C * 6.0 * _K * x
    t = np.tanh(u)
    ds = _dsigmoid(2.0 * u)      # (1 - t^2) / 4
    return np.where(ds > 0, 4.0 * ds * (du + 0.5 * x * (d2u - 2.0 * t * du * du)), 0.0)


def _power(x, p):
    return np.power(x, p)


def _dpower(x, y, p):  # p x^(p-1), 0 for p = 0 (also at x = 0, where 0 * 0**-1 would be nan)
    return p * np.power(x, p - 1) if p != 0 else np.zeros_like(x)


def _d2power(x, y, p):
    return p * (p - 1) * np.power(x, p - 2) if p not in (0, 1) else np.zeros_like(x)


def _one_minus_sq(x):  # 1 - x^2 without cancellation near |x| = 1
    return (1.0 - x) * (1.0 + x)


_unit_closed = (lambda x: np.abs(x) <= 1, "in [-1, 1]")
_unit_open = (lambda x: np.abs(x) < 1, "|x| < 1")
_positive = (lambda x: x > 0, "positive")
_REAL = None

# ---------------------------------------------------------------- the rows
#      name            f                       f'(x, y)                                f''(x, y)                               f' in words

exp = unary("exp", np.exp, lambda x, y: y, lambda x, y: y, "y", "e**x elementwise.", numpy=("exp",))
expm1 = unary("expm1", np.expm1, lambda x, y: np.exp(x), lambda x, y: np.exp(x), "e**x",
              "e**x - 1 elementwise, accurate near 0.", numpy=("expm1",))
exp2 = unary("exp2", np.exp2, lambda x, y: _LN2 * y, lambda x, y: _LN2 * _LN2 * y, "ln2 y", "2**x elementwise.",
             numpy=("exp2",))
log = unary("log", np.log, lambda x, y: 1.0 / x, lambda x, y: -1.0 / (x * x), "/ x",
            "Natural log elementwise; x > 0.", domain=_positive, numpy=("log",))
log1p = unary("log1p", np.log1p, lambda x, y: 1.0 / (1.0 + x), lambda x, y: -1.0 / ((1.0 + x) * (1.0 + x)),
              "/ (1 + x)", "log(1 + x) elementwise, accurate near 0; x > -1.",
              domain=(lambda x: x > -1, "greater than -1"), numpy=("log1p",))
log2 = unary("log2", np.log2, lambda x, y: 1.0 / (_LN2 * x), lambda x, y: -1.0 / (_LN2 * x * x), "/ (x ln2)",
             "Base-2 log elementwise; x > 0.", domain=_positive, numpy=("log2",))
log10 = unary("log10", np.log10, lambda x, y: 1.0 / (_LN10 * x), lambda x, y: -1.0 / (_LN10 * x * x),
              "/ (x ln10)", "Base-10 log elementwise; x > 0.", domain=_positive, numpy=("log10",))
sqrt = unary("sqrt", np.sqrt, lambda x, y: 0.5 / y, lambda x, y: -0.25 / (x * y), "/ (2 y)",
             "Square root elementwise; x > 0 (the derivative is infinite at 0).", domain=_positive, numpy=("sqrt",))
cbrt = unary("cbrt", np.cbrt, lambda x, y: 1.0 / (3.0 * y * y), lambda x, y: -2.0 / (9.0 * y * y * y * y * y),
             "/ (3 y**2)", "Cube root elementwise, any sign (its slope is infinite at 0).",
             smooth=(lambda x: x != 0, "x != 0"), numpy=("cbrt",))
square = unary("square", np.square, lambda x, y: 2 * x, 2.0, "2 x", "x**2 elementwise.", numpy=("square",))
reciprocal = unary("reciprocal", np.reciprocal, lambda x, y: -y * y, lambda x, y: 2.0 * y * y * y, "(-y**2)",
                   "1 / x elementwise; x != 0.", domain=(lambda x: x != 0, "nonzero"), numpy=("reciprocal",))
power = unary("power", _power, _dpower, _d2power, "p x**(p - 1)",
              "x**p elementwise for a constant p; x > 0 unless p is a non-negative integer.",
              domain=(lambda x, p: (x > 0) | (float(p) == int(p) and p >= 0),
                      "positive for a non-integer or negative exponent"),
              params=[("p", inspect.Parameter.empty, _REAL)])
negative = unary("negative", np.negative, -1.0, 0.0, "(-1)", "``-x``.", numpy=("negative",))
sign = unary("sign", np.sign, 0.0, 0.0, "0 (not differentiable: taken as 0, as JAX does)",
             "The sign of x (-1, 0 or 1) elementwise; not differentiable, its Jacobian is zero.", numpy=("sign",))

sin = unary("sin", np.sin, lambda x, y: np.cos(x), lambda x, y: -y, "cos x", "Sine elementwise.", numpy=("sin",))
cos = unary("cos", np.cos, lambda x, y: -np.sin(x), lambda x, y: -y, "(-sin x)", "Cosine elementwise.",
            numpy=("cos",))
tan = unary("tan", np.tan, lambda x, y: 1.0 + y * y, lambda x, y: 2.0 * y * (1.0 + y * y), "(1 + y**2)",
            "Tangent elementwise.", numpy=("tan",))
arcsin = unary("arcsin", np.arcsin, lambda x, y: 1.0 / np.sqrt(_one_minus_sq(x)),
               lambda x, y: x / _one_minus_sq(x) ** 1.5, "/ sqrt(1 - x**2)",
               "Inverse sine elementwise; |x| <= 1 (the slope is infinite at +-1).",
               domain=_unit_closed, smooth=_unit_open, numpy=("arcsin",))
arccos = unary("arccos", np.arccos, lambda x, y: -1.0 / np.sqrt(_one_minus_sq(x)),
               lambda x, y: -x / _one_minus_sq(x) ** 1.5, "(-1 / sqrt(1 - x**2))",
               "Inverse cosine elementwise; |x| <= 1 (the slope is infinite at +-1).",
               domain=_unit_closed, smooth=_unit_open, numpy=("arccos",))
arctan = unary("arctan", np.arctan, lambda x, y: 1.0 / (1.0 + x * x),
               lambda x, y: -2.0 * x / ((1.0 + x * x) * (1.0 + x * x)), "/ (1 + x**2)",
               "Inverse tangent elementwise.", numpy=("arctan",))
sinh = unary("sinh", np.sinh, lambda x, y: np.cosh(x), lambda x, y: y, "cosh x", "Hyperbolic sine elementwise.",
             numpy=("sinh",))
cosh = unary("cosh", np.cosh, lambda x, y: np.sinh(x), lambda x, y: y, "sinh x", "Hyperbolic cosine elementwise.",
             numpy=("cosh",))
tanh = unary("tanh", np.tanh, lambda x, y: 1 - y * y, lambda x, y: -2.0 * y * (1 - y * y), "(1 - y**2)",
             "tanh elementwise.", numpy=("tanh",))
arcsinh = unary("arcsinh", np.arcsinh, lambda x, y: 1.0 / np.hypot(1.0, x), lambda x, y: -x / np.hypot(1.0, x) ** 3,
                "/ sqrt(1 + x**2)", "Inverse hyperbolic sine elementwise.", numpy=("arcsinh",))
arccosh = unary("arccosh", np.arccosh, lambda x, y: 1.0 / np.sqrt((x - 1.0) * (x + 1.0)),
                lambda x, y: -x / ((x - 1.0) * (x + 1.0)) ** 1.5, "/ sqrt(x**2 - 1)",
                "Inverse hyperbolic cosine elementwise; x >= 1 (the slope is infinite at 1).",
                domain=(lambda x: x >= 1, "at least 1"), smooth=(lambda x: x > 1, "x > 1"), numpy=("arccosh",))
arctanh = unary("arctanh", np.arctanh, lambda x, y: 1.0 / _one_minus_sq(x),
                lambda x, y: 2.0 * x / (_one_minus_sq(x) * _one_minus_sq(x)), "/ (1 - x**2)",
                "Inverse hyperbolic tangent elementwise; |x| < 1.", domain=(_unit_open[0], "in (-1, 1)"),
                numpy=("arctanh",))
erf = unary("erf", _erf, lambda x, y: _2_SQRTPI * np.exp(-x * x), lambda x, y: -2.0 * _2_SQRTPI * x * np.exp(-x * x),
            "2/sqrt(pi) e**(-x**2)", "The error function elementwise.")
erfc = unary("erfc", _erfc, lambda x, y: -_2_SQRTPI * np.exp(-x * x), lambda x, y: 2.0 * _2_SQRTPI * x * np.exp(-x * x),
             "(-2/sqrt(pi) e**(-x**2))", "1 - erf(x) elementwise, accurate for large x.")

sigmoid = unary("sigmoid", _sigmoid, lambda x, y: _dsigmoid(x), lambda x, y: _dsigmoid(x) * (_sigmoid(-x) - y),
                "s(x) s(-x)", "1 / (1 + e**-x) elementwise (stable, full relative accuracy for x < 0).")
log_sigmoid = unary("log_sigmoid", lambda x: -_softplus(-x), lambda x, y: _sigmoid(-x), lambda x, y: -_dsigmoid(x),
                    "s(-x)", "log(sigmoid(x)) = -softplus(-x) elementwise, stable for any x.")
softplus = unary("softplus", _softplus, lambda x, y: _sigmoid(x), lambda x, y: _dsigmoid(x), "sigmoid(x)",
                 "log(1 + e**x) elementwise, stable for large |x|.")
silu = unary("silu", lambda x: x * _sigmoid(x), lambda x, y: _sigmoid(x) + x * _dsigmoid(x),
             lambda x, y: _dsigmoid(x) * (2.0 + x * (_sigmoid(-x) - _sigmoid(x))), "(s(x) + x s(x) s(-x))",
             "x sigmoid(x) elementwise (SiLU, also called swish).")
gelu = unary("gelu", _gelu, _dgelu, _d2gelu, "(Phi(x) + x phi(x)) (approximate='tanh': its derivative)",
             "x Phi(x) elementwise (Phi the normal CDF, exact erf form); approximate='tanh' is PyTorch's "
             "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3))).",
             params=[("approximate", "none", ("none", "tanh"))])
relu = unary("relu", lambda x: np.maximum(x, 0), lambda x, y: (x > 0).astype(x.dtype), 0.0, "[x > 0]",
             "max(x, 0) elementwise; its derivative at 0 is taken as 0.")
leaky_relu = unary("leaky_relu", lambda x, alpha: np.where(x > 0, x, alpha * x),
                   lambda x, y, alpha: np.where(x > 0, 1.0, alpha), 0.0, "(1 if x > 0 else alpha)",
                   "x if x > 0 else alpha x, elementwise (derivative at 0: alpha).",
                   params=[("alpha", 0.01, _REAL)])

swish = unary("swish", *silu.row[2:6], "Another name of silu: x sigmoid(x) elementwise.")


# ---------------------------------------------------------------- binary rows (numpy broadcasting)

def _logaddexp_d1(a, b, y):
    return np.exp(a - y), np.exp(b - y)


def _logaddexp_d2(a, b, y):
    pq = np.exp(a - y) * np.exp(b - y)
    return pq, -pq, pq


def _hypot_d2(a, b, y):
    h3 = y * y * y
    return b * b / h3, -a * b / h3, a * a / h3


def _arctan2_d2(a, b, y):
    r4 = (a * a + b * b) ** 2
    return -2.0 * a * b / r4, (a * a - b * b) / r4, 2.0 * a * b / r4


_not_origin = (lambda a, b: (a != 0) | (b != 0), "a and b not both 0")

add = binary("add", np.add, (1.0, 1.0), (0.0, 0.0, 0.0),
             "dz/da = delta, dz/db = delta (ones on broadcast axes)",
             "``a + b`` with numpy broadcasting (a bias row added to every sample: Yeh section 6).", numpy=("add",))
subtract = binary("subtract", np.subtract, (1.0, -1.0), (0.0, 0.0, 0.0),
                  "dz/da = delta, dz/db = -delta (ones on broadcast axes)", "``a - b`` with numpy broadcasting.",
                  numpy=("subtract",))
multiply = binary("multiply", np.multiply, lambda a, b, y: (b, a), (0.0, 1.0, 0.0),
                  "dz/da = delta b, dz/db = delta a",
                  "``a * b`` (Hadamard) with numpy broadcasting (a row vector times a matrix: Yeh section 7).",
                  numpy=("multiply",))
divide = binary("divide", np.divide, lambda a, b, y: (1.0 / b, -y / b),
                lambda a, b, y: (0.0, -1.0 / (b * b), 2.0 * y / (b * b)), "dz/da = delta / b, dz/db = -delta z / b",
                "``a / b`` with numpy broadcasting; b must have no zeros.",
                domain=(lambda a, b: (None, b != 0), "nonzero"), numpy=("divide", "true_divide"))
arctan2 = binary("arctan2", np.arctan2, lambda a, b, y: (b / (a * a + b * b), -a / (a * a + b * b)), _arctan2_d2,
                 "dz/da = delta b / (a**2 + b**2), dz/db = -delta a / (a**2 + b**2)",
                 "The angle of the point (b, a): numpy's arctan2(a, b), with broadcasting; its Jacobian "
                 "does not exist at the origin.", smooth=_not_origin, numpy=("arctan2",))
logaddexp = binary("logaddexp", np.logaddexp, _logaddexp_d1, _logaddexp_d2,
                   "dz/da = delta e**(a - z), dz/db = delta e**(b - z)",
                   "log(e**a + e**b) with broadcasting, stable for any a, b.", numpy=("logaddexp",))
hypot = binary("hypot", np.hypot, lambda a, b, y: (a / y, b / y), _hypot_d2, "dz/da = delta a / z, dz/db = delta b / z",
               "sqrt(a**2 + b**2) with broadcasting, without overflow; its Jacobian does not exist at the origin.",
               smooth=_not_origin, numpy=("hypot",))
