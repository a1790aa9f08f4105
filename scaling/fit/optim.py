"""Batched robust least squares for ``log L = LSE(a - alpha log N, b - beta log D, e)``.

One Levenberg-Marquardt loop runs many problems at once: many starts on the same data (the
4,500-start grid of Hoffmann et al. 2022) or many bootstrap resamples (each a weight vector of
resample counts). Huber's loss is handled by iteratively reweighted least squares: the
Gauss-Newton matrix is ``J^T diag(w * omega(r)) J`` with ``omega = psi(r) / r = min(1, delta/|r|)``,
the curvature of the quadratic that majorises Huber's loss at ``r``; the gradient is exact,
``J^T (w * psi(r))``. A step is kept only if the objective falls, so every problem descends
monotonically to a stationary point; problems leave the batch as they converge.

Parameters are ``theta = (a, b, e, alpha, beta)`` with ``A = e^a, B = e^b, E = e^e``
(Besiroglu et al. 2024, sec. 3). Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THETA = ("a", "b", "e", "alpha", "beta")


@dataclass(frozen=True)
class Robust:
    """``rho``: Huber with threshold ``delta`` (Hoffmann et al. 2022 use 1e-3), or ``mse``."""

    kind: str = "huber"
    delta: float = 1e-3

    def rho(self, r: np.ndarray) -> np.ndarray:
        if self.kind == "mse":
            return 0.5 * r * r
        ar = np.abs(r)
        d = self.delta
        return np.where(ar <= d, 0.5 * r * r, d * (ar - 0.5 * d))

    def psi(self, r: np.ndarray) -> np.ndarray:
        return r if self.kind == "mse" else np.clip(r, -self.delta, self.delta)

    def omega(self, r: np.ndarray) -> np.ndarray:
        if self.kind == "mse":
            return np.ones_like(r)
        return np.minimum(1.0, self.delta / np.maximum(np.abs(r), 1e-300))


def predict_log(theta: np.ndarray, logn: np.ndarray, logd: np.ndarray) -> np.ndarray:
    """``LSE(a - alpha log N, b - beta log D, e)`` for each row of ``theta`` (S, 5): (S, n)."""
    return _terms(np.atleast_2d(theta), logn, logd)[0]


def predict_log_with_jacobian(
    theta: np.ndarray, logn: np.ndarray, logd: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """For one ``theta`` (5,): ``log L`` at each point (n,) and ``d log L / d theta`` (n, 5)."""
    pred, p1, p2, p3 = _terms(np.asarray(theta)[None], logn, logd)
    return pred[0], _jacobian(p1[0], p2[0], p3[0], logn, logd)


def _terms(theta: np.ndarray, logn: np.ndarray, logd: np.ndarray):
    """LSE and the softmax weights of its three terms, factored by the constant term ``e``.

    ``exp`` is the cost here, so the per-row constant ``e`` is the pivot (two exponentials per
    point, not three); rows where another term exceeds it by more than 300 nats are recomputed
    with the per-point maximum as the pivot, so nothing overflows.
    """
    t1 = theta[:, 0, None] - theta[:, 3, None] * logn
    t2 = theta[:, 1, None] - theta[:, 4, None] * logd
    e = theta[:, 2, None]
    x1, x2 = t1 - e, t2 - e
    big = (x1.max(axis=1) > 300.0) | (x2.max(axis=1) > 300.0)
    if big.any():
        out = _terms_safe(t1, t2, np.broadcast_to(e, t1.shape).copy())
        if big.all():
            return out
    # exp(-60) is below double precision next to 1; the clip avoids slow subnormal arithmetic
    e1 = np.exp(np.maximum(np.minimum(x1, 300.0), -60.0))
    e2 = np.exp(np.maximum(np.minimum(x2, 300.0), -60.0))
    s = 1.0 + e1 + e2
    inv = 1.0 / s
    res = [e + np.log(s), e1 * inv, e2 * inv, inv]
    if big.any():
        for r, o in zip(res, out, strict=True):
            r[big] = o[big]
    return tuple(res)


def _terms_safe(t1: np.ndarray, t2: np.ndarray, t3: np.ndarray):
    m = np.maximum(np.maximum(t1, t2), t3)
    e1 = np.exp(np.maximum(t1 - m, -60.0))
    e2 = np.exp(np.maximum(t2 - m, -60.0))
    e3 = np.exp(np.maximum(t3 - m, -60.0))
    s = e1 + e2 + e3
    return m + np.log(s), e1 / s, e2 / s, e3 / s


def _jacobian(p1, p2, p3, logn, logd) -> np.ndarray:
    """d pred / d theta: softmax weights of the three terms, times -log N or -log D for exponents."""
    return np.stack([p1, p2, p3, -p1 * logn, -p2 * logd], axis=-1)


@dataclass(frozen=True)
class Problem:
    """Data for one batch: log N, log D (n,), log L and weights (n,) or (S, n) (one row per problem:
    resampled losses, resample counts), the loss (its ``delta`` a scalar or one per point) and
    the free mask."""

    logn: np.ndarray
    logd: np.ndarray
    logl: np.ndarray
    weights: np.ndarray
    robust: Robust
    free: np.ndarray  # (5,) bool

    def objective(self, theta: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        r = predict_log(theta, self.logn, self.logd) - self._logl(rows)
        return (self._w(rows, len(theta)) * self.robust.rho(r)).sum(axis=1)

    def _logl(self, rows: np.ndarray | None) -> np.ndarray:
        return self.logl if self.logl.ndim == 1 or rows is None else self.logl[rows]

    def _w(self, rows: np.ndarray | None, s: int) -> np.ndarray:
        w = self.weights
        if w.ndim == 1:
            return np.broadcast_to(w, (s, w.shape[0]))
        return w if rows is None else w[rows]

    def evaluate(self, theta: np.ndarray, rows: np.ndarray | None):
        """Objective, gradient and IRLS Gauss-Newton matrix for each row of ``theta``.

        The matrix entries are sums over points of products of the terms' softmax weights times
        1, log N, log D or their products: six matrix products against a shared (n, k) basis.
        """
        pred, p1, p2, p3 = _terms(theta, self.logn, self.logd)
        r = pred - self._logl(rows)
        w = self._w(rows, len(theta))
        f = (w * self.robust.rho(r)).sum(axis=1)
        v = w * self.robust.psi(r)
        u = w * self.robust.omega(r)
        ln, ld = self.logn, self.logd
        one = np.ones_like(ln)
        g1 = (v * p1) @ np.stack([one, ln], 1)
        g2 = (v * p2) @ np.stack([one, ld], 1)
        g3 = (v * p3).sum(axis=1)
        g = np.stack([g1[:, 0], g2[:, 0], g3, -g1[:, 1], -g2[:, 1]], axis=1)
        up1, up2 = u * p1, u * p2
        s11 = (up1 * p1) @ np.stack([one, ln, ln * ln], 1)
        s12 = (up1 * p2) @ np.stack([one, ln, ld, ln * ld], 1)
        s13 = (up1 * p3) @ np.stack([one, ln], 1)
        s22 = (up2 * p2) @ np.stack([one, ld, ld * ld], 1)
        s23 = (up2 * p3) @ np.stack([one, ld], 1)
        s33 = (u * p3 * p3).sum(axis=1)
        h = np.empty((len(theta), 5, 5))
        entries = {
            (0, 0): s11[:, 0], (0, 1): s12[:, 0], (0, 2): s13[:, 0], (0, 3): -s11[:, 1], (0, 4): -s12[:, 2],
            (1, 1): s22[:, 0], (1, 2): s23[:, 0], (1, 3): -s12[:, 1], (1, 4): -s22[:, 1],
            (2, 2): s33, (2, 3): -s13[:, 1], (2, 4): -s23[:, 1],
            (3, 3): s11[:, 2], (3, 4): s12[:, 3], (4, 4): s22[:, 2],
        }
        for (i, j), val in entries.items():
            h[:, i, j] = val
            h[:, j, i] = val
        return f, g, h


def levenberg_marquardt(
    problem: Problem, theta0: np.ndarray, *, max_iter: int = 500, rtol: float = 1e-12
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimise ``sum w rho(r)`` from every row of ``theta0`` at once.

    Returns ``(theta, objective, converged)``. A problem stops when a kept step improves the
    objective by less than ``rtol`` (relative) or the damping grows past 1e12 (no descent left).
    """
    theta = np.array(theta0, dtype=float, copy=True)
    s, p = theta.shape
    fixed = ~problem.free
    f, g, h = problem.evaluate(theta, None)
    lam = np.full(s, 1e-3)
    active = np.isfinite(f)
    converged = np.zeros(s, dtype=bool)
    eye = np.eye(p)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        hs, gs = h[idx], g[idx].copy()
        diag = np.einsum("sii->si", hs)
        a = hs + lam[idx, None, None] * (diag[:, :, None] * eye + 1e-9 * eye)
        if fixed.any():  # a fixed parameter gets no step: identity row/column, zero gradient
            a[:, fixed, :] = 0.0
            a[:, :, fixed] = 0.0
            a[:, fixed, fixed] = 1.0
            gs[:, fixed] = 0.0
        try:
            step = -np.linalg.solve(a, gs[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = -np.stack([np.linalg.lstsq(ai, gi, rcond=None)[0] for ai, gi in zip(a, gs, strict=True)])
        trial = theta[idx] + step
        ft, gt, ht = problem.evaluate(trial, idx)
        ok = np.isfinite(ft) & (ft <= f[idx])
        gain = f[idx] - ft
        keep = idx[ok]
        theta[keep], g[keep], h[keep] = trial[ok], gt[ok], ht[ok]
        f_old = f[idx]
        f[keep] = ft[ok]
        lam[idx] = np.clip(np.where(ok, lam[idx] / 3.0, lam[idx] * 4.0), 1e-12, 1e13)
        small = ok & (gain <= rtol * np.abs(f_old) + 1e-300)
        stuck = ~ok & (lam[idx] >= 1e12)
        done = small | stuck
        converged[idx[done]] = True
        active[idx[done]] = False
    return theta, f, converged


def huber_grid(
    alphas=(0.0, 0.5, 1.0, 1.5, 2.0),
    betas=(0.0, 0.5, 1.0, 1.5, 2.0),
    es=(-1.0, -0.5, 0.0, 0.5, 1.0),
    as_=(0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    bs=(0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
) -> np.ndarray:
    """Hoffmann et al. (2022, App. D.2) start grid, as Besiroglu et al. (2024) ran it: 4,500
    starts ``(a, b, e, alpha, beta)`` with alpha, beta in {0, .5, ..., 2}, e in {-1, -.5, ..., 1},
    a, b in {0, 5, ..., 25}."""
    mesh = np.meshgrid(as_, bs, es, alphas, betas, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def linear_starts(
    exponents: np.ndarray, logn: np.ndarray, logd: np.ndarray, loss: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Starts ``(a, b, e, alpha, beta)`` for given exponent pairs (P, 2) by variable projection.

    For fixed exponents, ``L = E + A N^-alpha + B D^-beta`` is linear in ``(A, B, E)``; the
    non-negative least-squares solution of the relative errors ``(L_hat - L) / L`` (about the
    log-space residual) is found for each pair by trying every support of the three terms.
    A term the solution drops starts at 1e-6 of the mean loss (its log must exist).
    """
    alpha, beta = exponents[:, 0], exponents[:, 1]
    x = np.exp(-alpha[:, None] * logn) / loss
    z = np.exp(-beta[:, None] * logd) / loss
    one = np.broadcast_to(1.0 / loss, x.shape)
    f = np.stack([x, z, one], axis=-1) * np.sqrt(weights)[:, None]  # (P, n, 3)
    t = np.sqrt(weights)
    gram = f.transpose(0, 2, 1) @ f
    rhs = (f.transpose(0, 2, 1) @ t)[..., None]
    best_cost = np.full(len(exponents), np.inf)
    best = np.full((len(exponents), 3), np.nan)
    for mask in range(1, 8):
        support = np.array([(mask >> k) & 1 for k in range(3)], dtype=bool)
        g = gram[:, support][:, :, support] + 1e-12 * np.eye(support.sum())
        try:
            coef = np.linalg.solve(g, rhs[:, support])[..., 0]
        except np.linalg.LinAlgError:
            continue
        full = np.zeros((len(exponents), 3))
        full[:, support] = coef
        resid = (f @ full[..., None])[..., 0] - t
        cost = (resid**2).sum(axis=1)
        ok = (coef > 0).all(axis=1) & (cost < best_cost)
        best_cost = np.where(ok, cost, best_cost)
        best[ok] = full[ok]
    floor = 1e-6 * float(np.mean(loss))
    coefs = np.log(np.maximum(np.nan_to_num(best, nan=floor), floor))
    return np.column_stack([coefs, exponents])
