"""Property tests of the composer: random chains and DAGs of ops, every order, central differences.

Each example draws a small program (batch 1..3, widths 1..4) of ops applied to an
input ``x`` and to weights made along the way, a random subset of the inputs to
differentiate, and whether ``x`` is batched.  The composed Jacobians of every
order must equal each other (1e-10) and central differences, and have the
shapes of the convention: per-sample ``(B, *out, *in)`` for a batched ``x``
unless an op mixes samples, ``(*out, *P)`` for every weight.

``derandomize=True``: the same examples on every run (CI is deterministic).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jacobians as jac
from jacobians.testing import expand_batch, numerical_jacobian

fn = jac.fn
ORDERS = ("forward", "reverse", "optimal")
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

UNARY = ("tanh", "sigmoid", "softplus", "square", "exp", "leaky_relu", "softmax", "log_softmax", "layer_norm")


@dataclass
class Program:
    """Steps over values: value 0 is ``x``; each step appends one value."""

    batch: int | None                  # the leading batch size of x, or None for a 1-D x
    width: int
    steps: list = field(default_factory=list)    # (op, input value indices, weight names)
    widths: list = field(default_factory=list)   # last-axis width of every value
    weights: dict = field(default_factory=dict)  # name -> shape
    mixes: bool = False                # some op mixes samples (batch norm, a mean over the batch)

    def weight(self, shape: tuple) -> str:
        name = f"w{len(self.weights)}"
        self.weights[name] = shape
        return name

    def run(self, values: dict):
        """Run on traced or plain values (``fn`` ops are plain numpy on arrays)."""
        v = [values["x"]]
        for op, ins, ws in self.steps:
            a = [v[i] for i in ins]
            w = [values[n] for n in ws]
            if op == "linear":
                y = fn.linear(a[0], *w)
            elif op == "leaky_relu":
                y = fn.leaky_relu(a[0], alpha=0.2)
            elif op == "square":
                y = 0.5 * fn.square(a[0])
            elif op == "exp":
                y = fn.exp(0.5 * a[0])
            elif op == "layer_norm":
                y = fn.layer_norm(a[0], *w)
            elif op == "batch_norm":
                y = fn.batch_norm(a[0], *w)
            elif op == "add":
                y = a[0] + a[1]
            elif op == "multiply":
                y = a[0] * a[1]
            elif op == "add_projected":
                y = a[0] + fn.linear(a[1], w[0])      # a skip connection across a width change
            elif op == "multiply_projected":
                y = a[0] * fn.tanh(fn.linear(a[1], w[0]))
            elif op == "scale":
                y = a[0] * w[0]                      # a weight broadcast over the batch
            elif op == "sum":
                y = fn.sum(a[0], axis=-1)
            elif op == "batch_mean":
                y = fn.mean(a[0], axis=0)
            else:
                y = getattr(fn, op)(a[0])
            v.append(y)
        return v[-1]

    def function(self):
        names = ["x"] + list(self.weights)

        def f(*args, **kwargs):
            return self.run({**dict(zip(names, args)), **kwargs})
        f.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
        f.__name__ = "program"
        return f


@st.composite
def programs(draw, dag: bool):
    batched = draw(st.booleans())
    batch = draw(st.integers(1, 3)) if batched or draw(st.booleans()) else None
    p = Program(batch, draw(st.integers(1, 4)))
    p.widths.append(p.width)
    for _ in range(draw(st.integers(1, 5))):
        last = len(p.widths) - 1
        i = draw(st.integers(0, last)) if dag else last   # a DAG reuses any earlier value: fan-out
        d = p.widths[i]
        choices = ["linear", "linear", *UNARY, "scale"]
        same = [j for j in range(last + 1) if p.widths[j] == d and j != i]
        if dag:                                              # fan-in of two earlier values
            choices += ["add_projected", "multiply_projected"] * 2 + ["add", "multiply"] * (2 * bool(same))
        if batch is not None:
            choices.append("batch_norm")
        op = draw(st.sampled_from(choices))
        ins, ws = (i,), ()
        if op == "linear":
            h = draw(st.integers(1, 4))
            ws = (p.weight((h, d)),) + ((p.weight((h,)),) if draw(st.booleans()) else ())
            d = h
        elif op in ("add", "multiply"):
            ins = (i, draw(st.sampled_from(same)))
        elif op in ("add_projected", "multiply_projected"):
            j = draw(st.integers(0, last))
            ins, ws = (i, j), (p.weight((d, p.widths[j])),)
        elif op == "scale":
            ws = (p.weight((d,)),)
        elif op in ("layer_norm", "batch_norm"):
            ws = (p.weight((d,)), p.weight((d,))) if draw(st.booleans()) else ()
            p.mixes |= op == "batch_norm"
        p.steps.append((op, ins, ws))
        p.widths.append(d)
    if draw(st.booleans()):
        p.steps.append(("sum", (len(p.widths) - 1,), ()))
        p.widths.append(None)
    elif batch is not None and draw(st.integers(0, 3)) == 0:
        p.steps.append(("batch_mean", (len(p.widths) - 1,), ()))
        p.widths.append(None)
        p.mixes = True
    names = ["x"] + list(p.weights)
    how = draw(st.sampled_from(["all", "some", "one"]))         # several wrt: several networks
    picked = names if how == "all" else [n for n in names if how == "some" and draw(st.booleans())]
    wrt = picked or [draw(st.sampled_from(names))]
    seed = draw(st.integers(0, 2**32 - 1))
    return p, tuple(wrt), "x" if batched else None, seed


def arguments(p: Program, seed: int) -> dict:
    r = np.random.default_rng(seed)
    args = {"x": r.normal(size=(p.width,) if p.batch is None else (p.batch, p.width))}
    for name, shape in p.weights.items():
        scale = 0.8 / np.sqrt(shape[-1]) if len(shape) == 2 else 0.5
        args[name] = (1.0 if len(shape) == 1 and r.random() < 0.5 else 0.0) + scale * r.normal(size=shape)
    return args


def check_program(p: Program, wrt: tuple, batched, seed: int) -> None:
    f = p.function()
    args = arguments(p, seed)
    out = np.asarray(f(**args))
    results = {o: jac.jacobian(f, wrt=wrt, batched=batched, order=o)(**args) for o in ORDERS}
    for name in wrt:
        J = results["optimal"][name]
        full_shape = out.shape + args[name].shape
        per_sample = name == batched and not p.mixes
        expected = out.shape + args[name].shape[1:] if per_sample else full_shape
        assert J.shape == expected, (name, J.shape, expected, p)
        scale = max(1.0, float(np.abs(J).max(initial=0.0)))
        for o in ORDERS:
            np.testing.assert_allclose(results[o][name], J, rtol=1e-10, atol=1e-10 * scale,
                                       err_msg=f"d/d{name}: {o} vs optimal\n{p}")
        full = expand_batch(J, out.ndim) if per_sample else J

        def of(v, name=name):
            return np.asarray(f(**{**args, name: v}), dtype=np.float64)
        np.testing.assert_allclose(full, numerical_jacobian(of, args[name]), rtol=1e-5, atol=1e-7 * scale,
                                   err_msg=f"d/d{name} vs central differences\n{p}")


@SETTINGS
@given(programs(dag=False))
def test_random_chains_match_central_differences_in_every_order(case):
    check_program(*case)


@SETTINGS
@given(programs(dag=True))
def test_random_dags_match_central_differences_in_every_order(case):
    check_program(*case)
