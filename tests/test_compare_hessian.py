"""compare_hessian: the symbolic Hessian and n forward-over-reverse HVPs, timed and checked (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest

import jacobians as jac
from jacobians.comparison import HESSIAN_ORDERS, Report, compare_hessian

rng = np.random.default_rng(3)


def quadratic(x, A):
    return jac.fn.dot(x, A @ x)


def per_sample(x, W):
    return jac.fn.sum(jac.fn.tanh(x @ W.T), axis=-1)


def test_rows_agree_with_the_symbolic_hessian():
    A = rng.normal(size=(5, 5))
    report = compare_hessian(quadratic, rng.normal(size=5), A, wrt="x", repeats=1, min_time=0)
    assert isinstance(report, Report)
    assert [r.order for r in report.rows] == list(HESSIAN_ORDERS)
    assert report.jacobian_shape == (5, 5)
    assert report.row("hvp").how.startswith("5 forward-over-reverse HVPs")
    assert all(r.max_abs_diff < 1e-12 and r.repeats >= 1 and r.seconds > 0 for r in report.rows)
    assert all(r.largest_bytes == 25 * 8 for r in report.rows)
    assert "FLOPs not counted" in str(report)


def test_per_sample_rows():
    x, W = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    report = compare_hessian(per_sample, x, W, wrt="x", batched="x", repeats=1, min_time=0)
    assert report.per_sample and report.jacobian_shape == (3, 4, 4)
    assert report.row("hvp").max_abs_diff < 1e-12


def test_unknown_order_lists_the_valid_ones():
    with pytest.raises(ValueError, match="^compare_hessian: unknown order 'jvp'; valid options are 'symbolic', 'hvp'$"):
        compare_hessian(quadratic, np.ones(2), np.eye(2), wrt="x", orders=("jvp",))
