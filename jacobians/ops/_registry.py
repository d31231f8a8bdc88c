"""The op registry: ``Op``, the one registration path (``register``, and ``defop`` over it),
``OPS``/``get``, and the helpers the op families share (broadcast labels, argument checks).

The shape rule and the form of a rule are documented once, in :mod:`jacobians.ops`.
"""

from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np

from ..errors import all_finite, as_float_array, as_int_array, fail
from ..factored import Factored
from ..limits import check_bytes

__all__ = ["Op", "OPS", "get", "register", "defop", "J", "rule"]


class J(NamedTuple):
    """A rule's answer: ``out`` and ``inp`` labels and the operands."""

    out: str
    inp: str
    operands: tuple = ()


def rule(out: str, inp: str, *operands: tuple[str, np.ndarray]) -> J:
    return J(out, inp, operands)


@dataclass(eq=False)
class Op:
    """One op: its forward, which returns the value and one rule per array argument.

    ``row`` is the op's elementwise row (``jacobians.ops.elementwise.Row``: f, f', f'') for the
    elementwise family, ``None`` for the others.
    """

    name: str
    forward: Callable
    arrays: tuple[str, ...]                 # array arguments, in signature order
    data: tuple[str, ...] = ()              # arrays that carry the batch axis when batch=True
    core: dict = field(default_factory=dict)  # rank of each array without leading axes
    nondiff: tuple[str, ...] = ()           # array arguments that get no Jacobian (labels)
    signature: inspect.Signature = None
    family: str = ""                        # the module of jacobians.ops that defines it
    formula: str = ""                       # its Jacobian in one line
    numpy: tuple[str, ...] = ()             # numpy functions with exactly its meaning (same positional args)
    row: object = None                      # elementwise ops: their row (f, f', f'')

    def __post_init__(self) -> None:
        self._binder = _binder(self.signature)

    @property
    def diff_arrays(self) -> tuple[str, ...]:
        return tuple(a for a in self.arrays if a not in self.nondiff)

    def arguments(self, args: tuple, kwargs: dict) -> dict:
        """``signature.bind(*args, **kwargs)`` with defaults applied, as a dict in signature order.

        Precompiled: the common call costs a dict build; a mistake goes through
        ``inspect`` for its message, named by the op.
        """
        bound = self._binder(args, kwargs)
        if bound is None:
            try:
                b = self.signature.bind(*args, **kwargs)
            except TypeError as e:
                fail(self.name, f"{e}; signature is {self.name}{self.signature}", TypeError)
            b.apply_defaults()
            bound = dict(b.arguments)
        return bound

    def bind(self, args, kwargs) -> tuple[dict, dict]:
        """Split a call into validated arrays and static parameters."""
        arrays, params, weak = {}, {}, None
        for name, value in self.arguments(args, kwargs).items():
            if name not in self.arrays:
                params[name] = value
            elif value is None:
                arrays[name] = None
            elif name in self.nondiff:  # labels: integers or target probabilities
                arrays[name] = np.asarray(value)
                if not (np.issubdtype(arrays[name].dtype, np.integer)
                        or np.issubdtype(arrays[name].dtype, np.floating)):
                    as_int_array(self.name, name, value)
            else:
                arrays[name] = as_float_array(self.name, name, value)
                if isinstance(value, numbers.Real) and not isinstance(value, np.generic):
                    weak = (weak or []) + [name]
        if weak:  # a Python number takes the arrays' dtype, as in numpy (float32 stays float32)
            floats = [a for n, a in arrays.items() if a is not None and n not in weak and n not in self.nondiff]
            if floats:
                dtype = np.result_type(*floats)
                for name in weak:
                    arrays[name] = arrays[name].astype(dtype)
        return arrays, params

    def evaluate(self, arrays: dict, params: dict):
        """Value and a tuple of lazy Factored builders (None for absent/nondiff arrays)."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            value, rules = self.forward(**arrays, **params)
        value = np.asarray(value)
        if not all_finite(value):
            shapes = ", ".join(f"{k} {np.shape(v)}" for k, v in arrays.items() if v is not None)
            fail(self.name, f"the value is not finite (overflow or a value outside the domain) for {shapes}")
        builders = []
        for name, r in zip(self.arrays, rules):
            if r is None or arrays.get(name) is None or name in self.nondiff:
                builders.append(None)
            else:
                builders.append(_builder(r, value.shape, arrays[name].shape, value.dtype, self.name, name, arrays))
        return value, tuple(builders)

    def factored(self, *args, **kwargs) -> tuple[np.ndarray, tuple[Factored, ...]]:
        """The value and the factored Jacobians (subscripts, operands, deltas)."""
        arrays, params = self.bind(args, kwargs)
        value, builders = self.evaluate(arrays, params)
        return value, tuple(b() for b in builders if b is not None)

    def __call__(self, *args, batch: bool = True, **kwargs) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """The value and one explicit Jacobian per array argument, every one a fresh array.

        Every Jacobian is sized (shape and the dtype it will have) before any is
        built: each must fit under the memory limit, and so must all of them
        together.  None shares memory with an argument or with another result.
        """
        arrays, params = self.bind(args, kwargs)
        if batch:
            self._check_batch(arrays)
        value, builders = self.evaluate(arrays, params)
        forms = [(name, b()) for name, b in zip(self.arrays, builders) if b is not None]
        total = 0
        for name, f in forms:
            shape = f.dense_shape(batch)
            nbytes = math.prod(shape) * _dense_dtype(f).itemsize
            check_bytes(nbytes, f"{self.name}: the Jacobian w.r.t. {name}", shape)
            total += nbytes
        if len(forms) > 1:
            check_bytes(total, f"{self.name}: the Jacobians w.r.t. {', '.join(n for n, _ in forms)} together")
        taken = [a for a in arrays.values() if a is not None]
        value = _fresh(value, taken)
        taken.append(value)
        jacs = []
        for name, f in forms:
            J = _fresh(f.dense(collapse_batch=batch, what=f"{self.name}: the Jacobian w.r.t. {name}"), taken)
            taken.append(J)
            jacs.append(J)
        return value, tuple(jacs)

    def _check_batch(self, arrays: dict) -> None:
        sizes = {}
        for name in self.data:
            a = arrays.get(name)
            if a is None:
                continue
            need = self.core.get(name, 0) + 1
            if a.ndim < need:
                fail(self.name, f"argument {name} needs a leading batch axis with batch=True: expected "
                                f"at least {need} dimensions, got shape {a.shape} (pass batch=False for one sample)")
            sizes[name] = a.shape[0]
        if len(set(sizes.values())) > 1:
            txt = ", ".join(f"{k} has {v}" for k, v in sizes.items())
            fail(self.name, f"batch sizes differ along axis 0: {txt}")

    def __repr__(self) -> str:
        return f"<op {self.name}{self.signature}>"


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _binder(sig: inspect.Signature | None) -> Callable:
    """A binder for a signature of plain parameters: ``(args, kwargs) -> dict``, or None to defer to inspect."""
    if sig is None or any(p.kind not in _POSITIONAL + (inspect.Parameter.KEYWORD_ONLY,)
                          for p in sig.parameters.values()):
        return lambda args, kwargs: None
    params = list(sig.parameters.values())
    positional = tuple(p.name for p in params if p.kind in _POSITIONAL)
    keyword = frozenset(p.name for p in params if p.kind != inspect.Parameter.POSITIONAL_ONLY)
    defaults = tuple((p.name, p.default) for p in params)
    empty = inspect.Parameter.empty

    def bind(args, kwargs):
        if len(args) > len(positional):
            return None
        given = dict(zip(positional, args))
        for k, v in kwargs.items():
            if k not in keyword or k in given:
                return None
            given[k] = v
        out = {}
        for name, default in defaults:
            v = given.get(name, default)
            if v is empty:
                return None
            out[name] = v
        return out
    return bind


def _dense_dtype(f: Factored) -> np.dtype:
    """The dtype ``f.dense()`` will have (the operands' result type; the form's dtype without operands)."""
    if f.operands:
        return np.result_type(*[a for _, a in f.operands])
    return np.dtype(np.float64 if f.dtype is None else f.dtype)


def _fresh(a: np.ndarray, taken: list) -> np.ndarray:
    """``a``, or a copy of it if it may share memory with an argument or another result."""
    for t in taken:
        if np.may_share_memory(a, t):
            return a.copy()
    return a


def _builder(r, out_shape, in_shape, dtype, op, name, arrays):
    def build(check: bool = True) -> Factored:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            j = r()
        # a finite value can have an infinite slope; the op's own inputs were checked already
        for _, a in j.operands:
            if not (any(a is v for v in arrays.values()) or all_finite(np.asarray(a))):
                fail(op, f"the Jacobian w.r.t. {name} is not finite (a derivative overflows) "
                         f"for {name} {tuple(in_shape)}")
        return Factored(j.out, j.inp, out_shape, in_shape, tuple(j.operands), dtype, check)
    return build


OPS: dict[str, Op] = {}


def register(name: str, forward: Callable, *, arrays: str, data: str = "", core: dict | None = None,
             nondiff: str = "", signature: inspect.Signature | None = None, family: str, formula: str,
             numpy: tuple[str, ...] = (), row=None) -> Op:
    """The one way into ``OPS``: ``forward`` returns ``(value, (rule per array argument))``."""
    if name in OPS:
        raise ValueError(f"op {name!r} is registered twice")
    op = Op(name, forward, tuple(arrays.split()), tuple(data.split()), core or {}, tuple(nondiff.split()),
            signature or inspect.signature(forward), family, formula, tuple(numpy), row)
    op.__doc__ = forward.__doc__
    OPS[name] = op
    return op


def defop(arrays: str, data: str = "", core: dict | None = None, nondiff: str = "", *,
          formula: str, numpy: tuple[str, ...] = ()):
    """Decorator: register ``forward`` under its name, in the family of the module that defines it."""
    def deco(forward: Callable) -> Op:
        return register(forward.__name__.strip("_"), forward, arrays=arrays, data=data, core=core,
                        nondiff=nondiff, family=forward.__module__.rsplit(".", 1)[-1],
                        formula=formula, numpy=numpy)
    return deco


def get(name: str) -> Op:
    try:
        return OPS[name]
    except KeyError:
        raise NotImplementedError(f"no op named {name!r}; the ops are: {', '.join(sorted(OPS))}") from None


# ---------------------------------------------------------------- helpers

def _aligned(shape: tuple, out_shape: tuple, out: str, fresh) -> str:
    """Labels of an argument broadcast to ``out``: shared where sizes agree, fresh where broadcast."""
    off = len(out_shape) - len(shape)
    return "".join(out[off + k] if n == out_shape[off + k] else next(fresh) for k, n in enumerate(shape))


def _broadcast(op: str, *named) -> tuple:
    try:
        return np.broadcast_shapes(*[np.shape(a) for _, a in named])
    except ValueError:
        txt = ", ".join(f"{n} {np.shape(a)}" for n, a in named)
        fail(op, f"shapes do not broadcast: {txt}")


def _need(op: str, name: str, arr: np.ndarray, ndim_min: int, what: str, nonempty: bool = False) -> None:
    if arr.ndim < ndim_min:
        fail(op, f"argument {name} must have at least {ndim_min} dimensions ({what}); got shape {arr.shape}")
    if nonempty and arr.shape[-1] == 0:
        fail(op, f"argument {name} must have at least one entry along its last axis ({what}); got shape {arr.shape}")


def _real(op: str, name: str, value) -> float:
    """A static parameter that must be a finite real number."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        fail(op, f"argument {name} must be a real number; got {value!r}", TypeError)
    if not math.isfinite(value):
        fail(op, f"argument {name} must be finite; got {value!r}")
    return float(value)


def _guard(op: str, name: str, shape: tuple, dtype) -> None:
    """Refuse a dense factor of a Jacobian before allocating it (the dense result is at least as large)."""
    check_bytes(math.prod(shape) * np.dtype(dtype).itemsize, f"{op}: a factor of the Jacobian w.r.t. {name}", shape)


def _axes(op: str, axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
            fail(op, f"axis must be an integer or a tuple of integers; got {axis!r}", TypeError)
        if not -ndim <= a < ndim:
            fail(op, f"axis {a} is out of range for an array of {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        fail(op, f"repeated axis in {axis}")
    return tuple(sorted(out))
