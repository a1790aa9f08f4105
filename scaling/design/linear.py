"""Approach-3 interval widths of a design by linearisation: fast enough to rank a family.

At the law ``theta0`` the design's noise-free losses give (approach 3 fitted to them, N counted as
asked), the least-squares estimate of ``theta = (log A, log B, log E, alpha, beta)`` in
``log L = log(A N^-alpha + B D^-beta + E)`` has covariance ``(J^T V^-1 J)^-1`` (Gauss-Newton),
with ``J`` the Jacobian of ``log L`` at the points and ``V = sigma^2 ((1 - s) I + s T)`` the noise
covariance (``T_ij = 1`` for the branches of one WSD trunk, ``s`` the share they have in common).
The width of a quantity ``g(theta)`` is ``2 z sqrt(grad g^T cov grad g)``: the exponent
``a = beta / (alpha + beta)``, ``ln N*`` at the target and the loss there (Hoffmann et al. 2022,
eq. 4, ``C = 6 N D``). Approach 3's Huber loss and bootstrap make its real widths differ by a
factor that is much the same across designs; the simulation (:mod:`scaling.design.simulate`)
gives the numbers, this ranks the candidates.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from scaling.convention import Convention
from scaling.design.prior import Prior
from scaling.design.space import DesignPoints
from scaling.fit import optim
from scaling.fit.approach3 import Approach3
from scaling.fit.data import Columns, FitRefusal, FitWarning
from scaling.laws.base import chinchilla_allocation

Z = float(special.ndtri(0.975))


def _quantities(theta: np.ndarray, target: float) -> np.ndarray:
    """``(a, ln N*, L*)`` at ``target`` under eq. 4."""
    a_, b_, e_ = np.exp(theta[:3])
    alpha, beta = theta[3], theta[4]
    n, d = chinchilla_allocation(a_, b_, alpha, beta, target)
    return np.array([beta / (alpha + beta), math.log(n), e_ + a_ / n**alpha + b_ / d**beta])


def linear_widths(points: DesignPoints, prior: Prior, target: float, count: str) -> dict[str, Any]:
    """Linearised 95% widths of ``a``, ``ln N*`` and ``L*`` at ``target`` (module docstring)."""
    logl = prior.log_loss(points.params(prior.param_convention), points.tokens)
    n = points.params(count)
    frame = pd.DataFrame({"params": n, "tokens": points.tokens, "flops": points.flops, "loss": np.exp(logl)})
    cols = Columns(convention=Convention(count, points.spec.train.flops_convention))  # type: ignore[arg-type]
    nan = {"exponent": math.nan, "log_n_opt": math.nan, "loss": math.nan}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitWarning)
            fit = Approach3(bootstrap=0, columns=cols).fit(frame)
    except FitRefusal:
        return nan
    p = fit.params
    theta = np.array([math.log(p["A"]), math.log(p["B"]), math.log(p["E"]), p["alpha"], p["beta"]])
    _, jac = optim.predict_log_with_jacobian(theta, np.log(n), np.log(points.tokens))
    trunk = points.trunk
    same = (trunk[:, None] == trunk[None, :]) & (trunk[:, None] >= 0)
    s = prior.branch_share
    v = prior.sigma**2 * ((1 - s) * np.eye(len(n)) + s * np.where(same, 1.0, 0.0) + s * np.diag(trunk < 0))
    info = jac.T @ np.linalg.solve(v, jac)
    cov = np.linalg.pinv(info)
    h = 1e-6
    grads = np.array([(_quantities(theta + h * e, target) - _quantities(theta - h * e, target)) / (2 * h)
                      for e in np.eye(5)]).T  # (3, 5)
    var = np.einsum("qi,ij,qj->q", grads, cov, grads)
    if not np.all(np.isfinite(var)) or np.any(var < 0):
        return nan
    w = 2 * Z * np.sqrt(var)
    return {"exponent": float(w[0]), "log_n_opt": float(w[1]), "loss": float(w[2])}
