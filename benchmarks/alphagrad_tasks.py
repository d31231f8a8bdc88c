"""The ten AlphaGrad task programs, written once for two array namespaces.

Re-implemented from their published definitions (jamielohoff/graphax
``src/graphax/examples/*.py``; inputs from jamielohoff/alphagrad
``src/alphagrad/experiments.py``).  Each function takes ``xp`` last: :data:`NUMPY`
(numpy functions, which the toolkit traces) or :func:`jax_namespace` (``jax.numpy``),
so the toolkit and JAX differentiate the same program.  Every function is written per
sample and also accepts a leading batch axis (``...`` in every reduction, slice and
contraction), so one definition serves the per-sample graph (the published counts) and
the batch of 512 (the runtime).

Where the published program is not well defined here, the difference is stated at the
task (:data:`TASKS`, ``notes``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

import numpy as np

import jacobians as jac

__all__ = ["TASKS", "Task", "NUMPY", "jax_namespace", "get"]


def _numpy_namespace() -> SimpleNamespace:
    ns = SimpleNamespace(**{k: getattr(np, k) for k in (
        "sqrt", "abs", "exp", "log", "sin", "cos", "tan", "tanh", "sinh", "cosh", "arctan", "arctan2",
        "arccos", "arcsin", "arcsinh", "arctanh", "power", "square", "sum", "mean", "max", "min", "einsum",
        "concatenate", "swapaxes", "zeros")})
    ns.erf = jac.fn.erf          # numpy has no erf; the toolkit's op (traced or plain arrays)
    ns.sigmoid = jac.fn.sigmoid
    ns.name = "numpy"
    return ns


NUMPY = _numpy_namespace()


def jax_namespace() -> SimpleNamespace:
    """The same names over ``jax.numpy`` (imported here, lazily)."""
    import jax
    import jax.numpy as jnp
    import jax.scipy.special as jss
    ns = SimpleNamespace(**{k: getattr(jnp, k) for k in vars(NUMPY) if k not in ("erf", "sigmoid", "name")})
    ns.erf, ns.sigmoid, ns.name = jss.erf, jax.nn.sigmoid, "jax"
    return ns


# ---------------------------------------------------------------- RoeFlux (roe.py)

GAMMA = 0.5


def _pressure_1d(u0, u1, u2):
    return (GAMMA - 1.0) * (u2 - 0.5 * u1 ** 2 / u0)


def _enthalpy(u0, u4, p):
    return (u4 + p) / u0


def _flux_1d(u0, u1, u2, p):
    v = u1 / u0
    return u1, p + u1 * v, v * (p + u2)


def roe_flux_1d(ul0, ul1, ul2, ur0, ur1, ur2, xp=NUMPY):
    """Roe's approximate Riemann flux (Roe 1981), 1-D Euler equations: 6 scalars in, 3 out."""
    du0 = ur0 - ul0
    ulr0 = xp.sqrt(ul0 * ur0)
    w1 = xp.sqrt(ul0) + xp.sqrt(ur0)
    vl, pl = ul1 / ul0, _pressure_1d(ul0, ul1, ul2)
    hl = _enthalpy(ul0, ul2, pl)
    vr, pr = ur1 / ur0, _pressure_1d(ur0, ur1, ur2)
    hr = _enthalpy(ur0, ur2, pr)
    dp, dv = pr - pl, vr - vl
    u = (xp.sqrt(ul0) * vl + xp.sqrt(ur0) * vr) / w1        # Roe averages
    h = (xp.sqrt(ul0) * hl + xp.sqrt(ur0) * hr) / w1
    q2 = u ** 2
    a2 = (GAMMA - 1.0) * (h - 0.5 * q2)
    a = xp.sqrt(a2)
    lp, l, ln = xp.abs(u + a), xp.abs(u), xp.abs(u)
    n = a * ulr0
    c0 = (du0 - dp / a2) * l
    c1 = (dv + dp / n) * lp
    c2 = (dv - dp / n) * ln
    FL0, FL1, FL2 = _flux_1d(ul0, ul1, ul2, pl)
    FR0, FR1, FR2 = _flux_1d(ur0, ur1, ur2, pr)
    F0, F1, F2 = FL0 + FR0, FL1 + FR1, FL2 + FR2
    c = 0.5 * ulr0 / a
    dF0 = c0 + c * c1 - c * c2
    dF1 = c0 * u + c * c1 * (u + a) - c * c2 * (u - a)
    dF2 = c0 * 0.5 * q2 + c * c1 * (h + u * a) - c * c2 * (h - u * a)
    return 0.5 * (F0 - dF0), 0.5 * (F1 - dF1), 0.5 * (F2 - dF2)


def _pressure_3d(u0, u, u4, xp):
    return (GAMMA - 1.0) * (u4 - 0.5 * xp.sum(u ** 2, axis=-1, keepdims=True) / u0)


def _flux_3d(u0, u, v, u4, p, xp):
    zeros = np.zeros(np.shape(p)[:-1] + (2,))
    return u[..., 0:1], xp.concatenate([p, zeros], axis=-1) + u * v, v[..., 0:1] * (p + u4)


def roe_flux_3d(ul0, ul, ul4, ur0, ur, ur4, xp=NUMPY):
    """Roe's flux for the 3-D Euler equations: densities and energies (1,), momenta (3,)."""
    du0, du, du4 = ur0 - ul0, ur - ul, ur4 - ul4
    du1, du2, du3 = du[..., 0:1], du[..., 1:2], du[..., 2:]
    vl, vr = ul / ul0, ur / ur0
    w1 = xp.sqrt(ul0) + xp.sqrt(ur0)
    uvw = (xp.sqrt(ul0) * vl + xp.sqrt(ur0) * vr) / w1
    u, v, w = uvw[..., 0:1], uvw[..., 1:2], uvw[..., 2:]
    pl = _pressure_3d(ul0, ul, ul4, xp)
    hl = _enthalpy(ul0, ul4, pl)
    pr = _pressure_3d(ur0, ur, ur4, xp)
    hr = _enthalpy(ur0, ur4, pr)
    h = (xp.sqrt(ul0) * hl + xp.sqrt(ur0) * hr) / w1
    q2 = xp.sum(uvw ** 2, axis=-1, keepdims=True)
    a2 = (GAMMA - 1.0) * (h - 0.5 * q2)
    a = xp.sqrt(a2)
    lp, l, lm = u + a, u, u - a
    c3 = ((GAMMA - 1.0) / a2 * ((h - q2) * du0 + xp.sum(uvw * du, axis=-1, keepdims=True) - du4)) * l
    c2 = (du3 / w - du1) * l
    c1 = (du2 / v - du0) * l
    k1 = du0 - c3
    k2 = (du1 - u * du0) / a
    c0 = 0.5 * (k1 - k2) * lm
    c4 = 0.5 * (k1 + k2) * lp
    FL0, FL, FL4 = _flux_3d(ul0, ul, vl, ul4, pl, xp)
    FR0, FR, FR4 = _flux_3d(ur0, ur, vr, ur4, pr, xp)
    F0, F, F4 = FL0 + FR0, FL + FR, FL4 + FR4
    dF0 = c0 + c3 + c4 * lp
    dF1 = c0 * lm + c3 * u + c4 * lp
    dF2 = c0 * v + c1 * v + c3 * v + c4 * v
    dF3 = c0 * w + c2 * w + c3 * w + c4 * w
    dF4 = c0 * (h - u * a) + c1 * v ** 2 + c2 * w ** 2 + c3 * 0.5 * q2 + c4 * (h + u * a)
    dF = xp.concatenate([dF1, dF2, dF3], axis=-1)
    return 0.5 * (F0 - dF0), 0.5 * (F - dF), 0.5 * (F4 - dF4)


# ---------------------------------------------------------------- RobotArm_6DOF (differential_kinematics.py)

def robot_arm_6dof(t1, t2, t3, t4, t5, t6, xp=NUMPY):
    """Forward kinematics of a 6-axis arm: position and Tait-Bryan angles of the tool (6 in, 6 out)."""
    a1, a2, a3, d1, d4, d6 = 175.0, 890.0, 50.0, 575.0, 1035.0, 185.0
    c1, c2, c4, c5, c6 = xp.cos(t1), xp.cos(t2), xp.cos(t4), xp.cos(t5), xp.cos(t6)
    s1, s2, s4, s5, s6 = xp.sin(t1), xp.sin(t2), xp.sin(t4), xp.sin(t5), xp.sin(t6)
    c23 = xp.cos(t2) * xp.cos(t3) - xp.sin(t2) * xp.sin(t3)
    s23 = xp.cos(t2) * xp.sin(t3) + xp.sin(t2) * xp.cos(t3)
    ax = s5 * (c1 * c23 * c4 + s1 * s4) + c1 * s23 * c5
    ay = s5 * (s1 * c23 * c4 - c1 * s4) + s1 * s23 * c5
    az = s23 * c4 * s5 - c23 * c5
    nz = c6 * (c23 * s5 + s23 * c4 * c5) - s23 * s4 * s6
    oz = -s6 * (c23 * s5 + s23 * c4 * c5) - s23 * s4 * c6
    z = xp.arctan2(ay, ax)
    y_ = xp.arctan2(xp.sqrt(1.0 - az ** 2), az)
    z__ = xp.arctan2(oz, -nz)
    x1 = d6 * (s5 * (c1 * c23 * c4 + s1 * s4) + c1 * s23 * c5)
    x2 = c1 * (a1 + a2 * c2 + a3 * c23 + d4 * s23)
    y1 = d6 * (s5 * (s1 * c23 * c4 + c1 * s4) + s1 * s23 * c5)
    y2 = s1 * (a1 + a2 * c2 + a3 * c23 + d4 * s23)
    pz = a2 * s2 + d1 + a3 * s23 - d4 * c23 + d6 * (s23 * c4 * s5 - c23 * c5)
    return x1 + x2, y1 + y2, pz, z, y_, z__


# ---------------------------------------------------------------- minpack.py

def human_heart_dipole(x1, x2, x3, x4, x5, x6, x7, x8, xp=NUMPY):
    """MINPACK-2's human heart dipole residuals (every sigma = 1): 8 in, 8 out."""
    f1 = x1 + x2 - 1.0
    f2 = x3 + x4 - 1.0
    f3 = x5 * x1 + x6 * x2 - x7 * x3 - x8 * x4 - 1.0
    f4 = x7 * x1 + x8 * x2 + x5 * x3 + x6 * x4 - 1.0
    x57 = x5 ** 2 - x7 ** 2
    x68 = x6 ** 2 - x8 ** 2
    f5 = x1 * x57 - 2 * x3 * x5 * x7 + x2 * x68 - 2 * x4 * x6 * x8 - 1.0
    f6 = x3 * x57 - 2 * x1 * x5 * x7 + x4 * x68 - 2 * x2 * x6 * x8 - 1.0
    x557 = x5 * (x5 ** 2 - 3 * x7 ** 2)
    x775 = x7 * (x7 ** 2 - 3 * x5 ** 2)
    x668 = x6 * (x6 ** 2 - 3 * x8 ** 2)
    x886 = x8 * (x8 ** 2 - 3 * x6 ** 2)
    f7 = x1 * x557 + x3 * x775 + x2 * x668 + x4 * x886 - 1.0
    f8 = x3 * x557 - x1 * x775 + x4 * x668 - x2 * x886 - 1.0
    return f1, f2, f3, f4, f5, f6, f7, f8


def propane_combustion(x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, xp=NUMPY):
    """MINPACK-2's propane combustion, full formulation (p = 40, R = 10): 11 in, 11 out."""
    p, R = 40.0, 10.0
    px11 = xp.sqrt(p / x11)
    f1 = x1 + x4 - 3.0
    f2 = 2 * x1 + x2 + x4 + x7 + x8 + x9 + 2 * x10 - R
    f3 = 2 * x2 + 2 * x5 + x6 + x7 - 8.0
    f4 = 2 * x3 + x9 - 4 * R
    f5 = x2 * x4 - x1 * x5
    f6 = xp.sqrt(x2 * x4) - xp.sqrt(x1) * px11 * x6
    f7 = xp.sqrt(x1 * x2) - xp.sqrt(x4) * x7 * px11
    f8 = x1 - x4 * x8 * p / x11
    f9 = x1 * xp.sqrt(x3) - x4 * x9 * px11
    f10 = x1 ** 2 - x4 ** 2 * x10 * p / x11
    f11 = x11 - x1 - x2 - x3 - x4 - x5 - x6 - x7 - x8 - x9 - x10
    return f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11


# ---------------------------------------------------------------- economics.py

def black_scholes(S, K, r, sigma, T, xp=NUMPY):
    """The Black-Scholes price through Black-76 on the forward price (the task's inner function)."""
    F = xp.exp(r * T) * S
    d1 = (xp.log(F / K) + sigma ** 2 / 2.0 * T) / (sigma * xp.sqrt(T))
    d2 = d1 - sigma * xp.sqrt(T)
    Phi = lambda z: (1.0 + xp.erf(z / math.sqrt(2.0))) / 2
    return xp.exp(-r * T) * (F * Phi(d1) - K * Phi(d2))


def black_scholes_jacobian(S, K, r, sigma, T, xp=NUMPY):
    """The five first-order greeks, as the program a reverse sweep over :func:`black_scholes` writes
    (graphax builds it with its own reverse mode; here the adjoints are written out by hand).
    Its Jacobian is the matrix of second-order greeks."""
    pdf = lambda z: xp.exp(-0.5 * z ** 2) / math.sqrt(2.0 * math.pi)
    Phi = lambda z: (1.0 + xp.erf(z / math.sqrt(2.0))) / 2
    # forward sweep
    E = xp.exp(r * T)
    F = E * S
    sT = xp.sqrt(T)
    sst = sigma * sT
    num = xp.log(F / K) + sigma ** 2 / 2.0 * T
    d1 = num / sst
    d2 = d1 - sst
    disc = xp.exp(-r * T)
    P1, P2 = Phi(d1), Phi(d2)
    inner = F * P1 - K * P2
    # reverse sweep: adjoints of the price
    a_F = disc * P1
    a_d2 = -disc * K * pdf(d2)
    a_d1 = disc * F * pdf(d1) + a_d2
    a_num = a_d1 / sst
    a_sst = -a_d2 - a_d1 * d1 / sst
    a_E = a_F * S
    a_T_disc = -inner * r * disc
    dS = a_F * E
    dK = -disc * P2 - a_num / K
    dr = -inner * T * disc + a_E * E * T
    dsigma = a_num * sigma * T + a_sst * sT
    dT = a_num * sigma ** 2 / 2.0 + a_sst * sigma / (2.0 * sT) + a_T_disc + a_E * E * r
    return dS, dK, dr, dsigma, dT


# ---------------------------------------------------------------- deep_learning.py

def _softmax(a, xp):
    e = xp.exp(a)
    return e / xp.sum(e, axis=-1, keepdims=True)


def _softmax_cross_entropy(logits, labels, xp):
    return -xp.sum(labels * xp.log(_softmax(logits, xp)), axis=-1)


def _layer_norm(x, gamma, beta, sample_ndim, xp):
    """graphax's layer norm: mean and variance over the last axis, subtracted with numpy's
    broadcasting of a per-sample ``(n,)`` mean against ``(m, n)`` (along rows, as published)."""
    n = np.shape(x)[-1]
    expand = (lambda t: t[..., None]) if sample_ndim == 1 else (lambda t: t[..., None, :])
    mu = expand(xp.mean(x, axis=-1))
    sigma = expand(xp.sum((x - mu) ** 2, axis=-1) / n)
    return (x - mu) / xp.sqrt(sigma + 1e-6) * gamma + beta


def perceptron(x, y, W1, b1, W2, b2, gamma, beta, xp=NUMPY):
    """A two-layer tanh perceptron with layer norm and a softmax cross-entropy (x, y: (4,))."""
    out = xp.tanh(x @ W1.T + b1)
    out = _layer_norm(out, gamma, beta, 1, xp)
    out = xp.tanh(out @ W2.T + b2)
    return _softmax_cross_entropy(out, y, xp)


def _encoder_block(x, WQ, WK, WV, W, b, gamma, beta, xp):
    q, k, v = WQ @ x, WK @ x, WV @ x
    a = x + _softmax(xp.swapaxes(q, -1, -2) @ k, xp) @ v
    c = _layer_norm(a, gamma, beta, 2, xp)
    z = W @ c + b
    return z * xp.sigmoid(z)


def encoder(x, y, WQ1, WQ2, WK1, WK2, WV1, WV2, W1, W2, b1, b2, gamma0, beta0, gamma1, beta1, xp=NUMPY):
    """Two attention blocks (x: (4, 4) tokens) and a softmax cross-entropy per output row."""
    z1 = _encoder_block(x, WQ1, WK1, WV1, W1, b1, gamma0, beta0, xp)
    z2 = _encoder_block(z1, WQ2, WK2, WV2, W2, b2, gamma1, beta1, xp)
    return _softmax_cross_entropy(z2, y, xp)


# ---------------------------------------------------------------- randoms.py

def random_f(v0, v1, v2, v4, v47, xp=NUMPY):
    """The random program ``f`` (a: (4,), b: (2, 3), c: (4, 4), d: (4, 1)); ``v47`` is the published
    ``stop_gradient(v41)``: the value of ``sinh(v36)[3:4, 3:4]``, passed in as a constant
    (:func:`random_f_stopped` computes it)."""
    es = xp.einsum
    v5 = v2 ** 3
    v6 = es("...ia,...ib->...ab", v4, v5)
    v7 = es("...ij,...ai->...ja", v5, v6)
    v8 = v6 ** 2
    v9 = es("...i,...ai->...a", v0, v8)
    v10 = xp.sqrt(v0)
    v11 = xp.arccos(v7)
    v13 = v11 @ v8
    v15 = (v11 + v9[..., None]) - v9[..., None]
    v16 = xp.cos(v9)
    v18 = xp.arcsinh(v10[..., None] + v13)
    v19 = v15 + v16[..., None]
    v20 = -v1
    v21 = xp.sqrt(v10)
    v22 = es("...j,...ij->...i", v21, v18)
    v23 = xp.tanh(v1)
    v24 = xp.arctan(v19)
    v25 = xp.square(v24)
    v26 = xp.cos(v22)
    v27 = v16[..., None] - v25
    v28 = xp.cosh(v23)
    v29 = xp.sum(v20, axis=-2)
    v30 = xp.swapaxes(v28, -1, -2)
    v31 = xp.sum(v16, axis=-1)
    v33 = v29[..., None] - v30
    v34 = v31[..., None, None] / v33
    v37 = v26 ** 2
    v38 = xp.max(v34, axis=-1)
    v40 = xp.exp(v27)
    v42 = xp.sum(v37, axis=-1)
    v43 = v42[..., None] + v38
    v44 = es("...i,...ia->...a", v26, v40)
    v45 = xp.arcsinh(v43)
    v46 = es("...ia,...ja->...ij", v24, v15)
    v48 = xp.sigmoid(v45)
    v49 = es("...i,...i->...", v29, v48)
    v50 = es("...i,...i->...", v22, v21)
    v51 = es("...a,...ba->...b", v44, v47)
    v52 = es("...ia,...ib->...ab", v30, v33)
    v53 = v46 * v50[..., None, None]
    v54 = xp.sqrt(v37)
    v55 = xp.sqrt(xp.abs(v51))
    v56 = v52 - v49[..., None, None]
    v57 = xp.cosh(v54)
    v59 = v57[..., None] + v53
    v60 = xp.square(v57)
    v61 = xp.sin(-v37)
    v62 = xp.arctan(v59)
    v64 = xp.min(xp.sum(v62, axis=-2), axis=-1)
    v65 = v64[..., None] - v55
    v67 = xp.sum(v56, axis=-1)
    v68 = v61[..., None] - xp.sqrt(v2)
    v69 = es("...i,...i->...", v60, v61)
    v70 = es("...ia,...ib->...ab", v68, v62)
    v71 = v22[..., None] + v2
    v72 = xp.sigmoid(v70)
    v73 = es("...ia,...ib->...ab", v72, v71)
    v74 = v6 / v37[..., None, :]
    return v74, v65, v67, v69, v73


def random_f_stopped(v0, v2, v4) -> np.ndarray:
    """``stop_gradient(v41)`` of ``f``, computed from the plain values (numpy, no trace)."""
    v0, v2, v4 = (np.asarray(a, dtype=np.float64) for a in (v0, v2, v4))
    v5 = v2 ** 3
    v6 = np.einsum("...ia,...ib->...ab", v4, v5)
    v7 = np.einsum("...ij,...ai->...ja", v5, v6)
    v8 = v6 ** 2
    v10 = np.sqrt(v0)
    v13 = np.arccos(v7) @ v8
    v18 = np.arcsinh(v10[..., None] + v13)
    v26 = np.cos(np.einsum("...j,...ij->...i", np.sqrt(v10), v18))
    v36 = v26[..., None] * (v13 + v10[..., None])
    return np.sinh(v36)[..., 3:4, 3:4]


def random_g(v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, xp=NUMPY):
    """The random scalar program ``g``: 15 scalars in, 20 out (``v15 = v16 = 1`` are constants)."""
    one = 1.0
    _power = lambda xp, x, y: xp.exp(y * xp.log(xp.abs(x)))   # |x| ** y: a traced exponent
    v17 = xp.arctan2(one, v3)
    v18 = _power(xp, one, v14)
    v19 = xp.arctan2(v13, v17)
    v20 = _power(xp, v17, v5)
    v21 = v9 - v8
    v22 = xp.arctan(v10)
    v23 = v21 * v0
    v24 = v22 - v18
    v25 = _power(xp, v24, v11)
    v26 = v21 + v12
    v27 = xp.exp(v2)
    v28 = v21 + v26
    v29 = _power(xp, one, v17)
    v30 = xp.sin(v3)
    v31 = v2 / v23
    v32 = xp.arctan2(v24, v26)
    v33 = v29 - v25
    v34 = xp.arctan(v33)
    v35 = v7 * v27
    v36 = xp.tan(v13)
    v37 = v27 + v19
    v38 = v7 / v6
    v39 = v25 - v34
    v40 = v29 - v6
    v41 = _power(xp, v35, v4)
    v42 = xp.cos(v0)
    v43 = v40 - v19
    v44 = v41 / v7
    v45 = v40 - v8
    v46 = xp.arctan2(one, v43)
    v47 = v8 / v30
    v48 = _power(xp, v37, v36)
    v49 = _power(xp, v47, v44)
    v50 = xp.arctan2(v45, v40)
    v51 = xp.arctan2(v44, v13)
    v52 = v4 / v34
    v53 = xp.arctan2(v41, v1)
    v54 = xp.arctan2(v25, v53)
    v55 = v12 + v51
    v56 = _power(xp, v3, v48)
    v57 = v24 - v32
    v58 = xp.arctanh(v48)
    v59 = xp.arctanh(v54)
    v60 = xp.arctan2(v2, v26)
    v61 = v52 - v18
    v62 = xp.cos(v38)
    v63 = v8 / v32
    v64 = xp.arctan2(v42, v46)
    v65 = xp.sinh(v36)
    v66 = v61 - v50
    v67 = _power(xp, v13, v39)
    v68 = _power(xp, v37, v26)
    v69 = v68 - v43
    v70 = xp.log(v65)
    v71 = _power(xp, v23, v58)
    v72 = xp.arctan2(v50, v69)
    v73 = v20 / v72
    v74 = v41 * v56
    v75 = v39 * v33
    v76 = v61 * one
    v77 = _power(xp, v66, v64)
    v78 = xp.arctan2(v53, v25)
    v79 = v59 - v60
    v80 = xp.arctan2(v73, v41)
    v81 = v74 * v46
    v82 = xp.square(v5)
    v83 = xp.arctan2(v28, v62)
    v84 = xp.arctan2(v39, v9)
    v85 = v4 * v12
    v86 = v57 / v56
    v87 = xp.arctan2(v61, v63)
    v88 = xp.arcsinh(v14)
    v89 = _power(xp, v86, v83)
    v90 = xp.arcsin(v66)
    v91 = v70 - v79
    v92 = xp.arctan2(v37, v65)
    v93 = v67 * v77
    v94 = _power(xp, v87, v55)
    v95 = xp.square(v49)
    v96 = v92 / v94
    v97 = one + v95
    v98 = v91 / v76
    v99 = xp.arctanh(v46)
    v100 = v75 * v45
    v101 = v100 / v28
    v102 = v90 + v29
    v103 = xp.arctan2(v80, v84)
    v104 = v20 - v91
    v105 = v82 + v90
    v106 = v102 / v103
    v107 = _power(xp, v75, v42)
    v108 = v68 * v62
    v109 = v102 / v1
    v110 = _power(xp, v98, v101)
    v111 = -v100
    v112 = v31 / v89
    v113 = v105 / v108
    v114 = v22 - v70
    v115 = v106 * v44
    v116 = v107 - v81
    v117 = _power(xp, v58, v115)
    v118 = v78 - v108
    v119 = xp.tan(v87)
    v120 = _power(xp, v87, v48)
    v121 = v105 + v38
    return (v121, v71, v85, v88, v93, v96, v97, v99, v104, v109, v110, v111, v112, v113, v114, v116, v117,
            v118, v119, v120)


# ---------------------------------------------------------------- the table of tasks

@dataclass(frozen=True)
class Task:
    """One AlphaGrad task: the program, its arguments and the published numbers.

    ``published``: graph (inputs, vertices, outputs) and the multiplication counts of
    forward, reverse, minimal Markowitz and AlphaGrad, per sample (issue 13's table).
    ``sample_args(batch)`` gives the arguments (``batch=None``: one sample, the published
    inputs); ``batched``: the arguments with a per-sample axis; ``wrt``: the differentiated
    ones (every argument but a constant such as ``f``'s stopped gradient)."""

    name: str
    source: str
    fn: Callable
    published: tuple
    make_args: Callable[[int | None], dict]
    batched: tuple[str, ...]
    notes: str = ""
    constants: tuple[str, ...] = field(default=())

    @property
    def wrt(self) -> tuple[str, ...]:
        return tuple(n for n in self.make_args(None) if n not in self.constants)

    def sample_args(self, batch: int | None = None) -> dict:
        return self.make_args(batch)


def _scalars(names, values):
    def make(batch):
        return {n: (np.float64(v) if batch is None else np.full(batch, v, dtype=np.float64))
                for n, v in zip(names, values)}
    return make


def _tile(batch, a):
    a = np.asarray(a, dtype=np.float64)
    return a if batch is None else np.ascontiguousarray(np.broadcast_to(a, (batch,) + a.shape))


def _roe3d_args(batch):
    vals = dict(ul0=[0.1], ul=[0.1, 0.2, 0.3], ul4=[0.5], ur0=[0.2], ur=[0.2, 0.2, 0.4], ur4=[0.6])
    return {k: _tile(batch, v) for k, v in vals.items()}


def _perceptron_args(batch):
    r = np.random.default_rng(1234)   # normal weights, as published (numpy's generator, not JAX's)
    x, y = np.ones(4), r.normal(size=4)
    shared = dict(W1=r.normal(size=(8, 4)), b1=r.normal(size=8), W2=r.normal(size=(4, 8)), b2=r.normal(size=4),
                  gamma=np.float64(0.0), beta=np.float64(1.0))
    return {"x": _tile(batch, x), "y": _tile(batch, y), **shared}


def _encoder_args(batch):
    r = np.random.default_rng(250197)
    x, y = np.ones((4, 4)), r.normal(size=(2, 4))
    w = {k: r.normal(size=(4, 4)) for k in ("WQ1", "WQ2", "WK1", "WK2", "WV1", "WV2", "W1")}
    w.update(W2=r.normal(size=(2, 4)), b1=r.normal(size=4), b2=r.normal(size=(2, 1)))
    order = ("WQ1", "WQ2", "WK1", "WK2", "WV1", "WV2", "W1", "W2", "b1", "b2")
    return {"x": _tile(batch, x), "y": _tile(batch, y), **{k: w[k] for k in order},
            "gamma0": np.float64(0.0), "beta0": np.float64(1.0), "gamma1": np.float64(0.0), "beta1": np.float64(1.0)}


def _f_args(batch):
    r = np.random.default_rng(250197)
    args = {"v0": r.uniform(0.1, 1.0, 4), "v1": r.uniform(0.0, 1.0, (2, 3)),
            "v2": r.uniform(0.0, 0.5, (4, 4)), "v4": r.uniform(0.0, 0.5, (4, 1))}
    args = {k: _tile(batch, v) for k, v in args.items()}
    args["v47"] = random_f_stopped(args["v0"], args["v2"], args["v4"])
    return args


# the published point (every input 0.15) makes 15 of g's 20 outputs NaN (v9 - v8 = 0 divides, arctanh
# past 1, ...); at this point (drawn uniformly in (-2, 2), rounded) every op is inside its domain
G_POINT = (1.27, 0.43, -1.13, 0.78, 1.61, 1.07, 0.1, 0.55, -0.23, 1.32, 0.73, 1.73, 0.39, -1.79, 1.25)


def _g_args(batch):
    return _scalars([f"v{i}" for i in range(15)], G_POINT)(batch)


_ROE1 = ("ul0", "ul1", "ul2", "ur0", "ur1", "ur2")
_CONV = ("counts in the toolkit's convention: a Jacobian of +-1 (add, subtract, negate, a sum) is a delta, "
         "never multiplied; Graphax multiplies every edge")

TASKS: dict[str, Task] = {t.name: t for t in [
    Task("RoeFlux_1d", "roe.py", roe_flux_1d, ((6, 101, 3), 620, 364, 407, 320),
         _scalars(_ROE1, [0.01, 0.02, 0.02, 0.01, 0.03, 0.03]), _ROE1),
    Task("RoeFlux_3d", "roe.py", roe_flux_3d, ((6, 146, 3), 1556, 979, 956, 811), _roe3d_args,
         ("ul0", "ul", "ul4", "ur0", "ur", "ur4"),
         "the dot product and the sums of squares are multiply + sum (jnp.dot, jnp.sum in graphax)"),
    Task("RobotArm_6DOF", "differential_kinematics.py", robot_arm_6dof, ((6, 114, 6), 397, 301, 288, 231),
         _scalars([f"t{i}" for i in range(1, 7)], [0.02] * 6), tuple(f"t{i}" for i in range(1, 7))),
    Task("HumanHeartDipole", "minpack.py", human_heart_dipole, ((8, 86, 8), 240, 172, 194, 148),
         _scalars([f"x{i}" for i in range(1, 9)], [0.15] * 8), tuple(f"x{i}" for i in range(1, 9))),
    Task("PropaneCombustion", "minpack.py", propane_combustion, ((11, 62, 11), 151, 90, 111, 88),
         _scalars([f"x{i}" for i in range(1, 12)], [0.15] * 11), tuple(f"x{i}" for i in range(1, 12))),
    Task("BlackScholes_Jacobian", "economics.py", black_scholes_jacobian, ((5, 139, 5), 545, 572, 350, 312),
         _scalars(("S", "K", "r", "sigma", "T"), [1.0] * 5), ("S", "K", "r", "sigma", "T"),
         "the greeks program is a hand-written reverse sweep of the price (graphax generates one with jacve)"),
    Task("Perceptron", "deep_learning.py", perceptron, ((8, 40, 1), 11012, 392, 4796, 389), _perceptron_args,
         ("x", "y"), "weights drawn with numpy's generator (published: JAX's PRNGKey(1234)); gamma 0, beta 1"),
    Task("Encoder", "deep_learning.py", encoder, ((16, 94, 1), 135956, 4688, 51896, 4656), _encoder_args,
         ("x", "y"), "softmax without the max shift; weights from numpy's generator; gammas 0, betas 1"),
    Task("f", "randoms.py", random_f, ((4, 80, 5), 17728, 9333, 12257, 6374), _f_args,
         ("v0", "v1", "v2", "v4", "v47"),
         "inputs uniform in (0.1, 1), (0, 1), (0, 0.5), (0, 0.5) so that arccos stays in its domain; "
         "stop_gradient(v41) is a constant argument", ("v47",)),
    Task("g", "randoms.py", random_g, ((15, 105, 20), 632, 566, 451, 417), _g_args,
         tuple(f"v{i}" for i in range(15)),
         "x ** y with a traced y is exp(y log|x|) (jnp.power: NaN for x < 0; the toolkit refuses log of a "
         "negative); inputs at G_POINT, not 0.15 (most outputs NaN there)"),
]}


def get(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown AlphaGrad task {name!r}; valid options are {', '.join(map(repr, TASKS))}") from None
