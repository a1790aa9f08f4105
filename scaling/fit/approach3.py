"""Approach 3: the parametric law ``L(N, D) = E + A / N^alpha + B / D^beta``.

Fitted in log space as ``log L = LSE(a - alpha log N, b - beta log D, e)`` with ``A = e^a``,
``B = e^b``, ``E = e^e`` (Hoffmann et al. 2022, App. D.2), with two estimators:

* ``grid``: minimise ``sum_i w_i Huber_delta(LSE_i - log L_i)``, delta = 1e-3, **summed** over
  points (a mean stops L-BFGS early; Besiroglu et al. 2024, sec. 3). Hoffmann's 4,500-start grid
  (alpha, beta in {0, .5, ..., 2}, e in {-1, ..., 1}, a, b in {0, 5, ..., 25}) is searched by
  variable projection: for fixed exponents the coefficients enter linearly in loss space, so each
  exponent pair starts at its linear least-squares coefficients instead of 216 arbitrary ones;
  ``search="projected"`` (default) runs the exponent pairs of that grid at step 0.25, all at once,
  and polishes the best with Levenberg-Marquardt run to a standstill; ``search="hoffmann"`` runs all 4,500 starts (batched).
  On Besiroglu et al.'s 240 points both reach objective 1.01827e-3 (tests, benchmark).
* ``mle``: Huber-likelihood maximum likelihood with a free scale sigma (Besiroglu et al. 2024,
  eq. 4): ``-log p(r) = Huber_delta(r / sigma) + log sigma + log Z(delta)``,
  ``Z = sqrt(2 pi) (1 - 2 Phi(-delta)) + 2 exp(-delta^2 / 2) / delta``, started from Hoffmann's
  unrounded estimates with BFGS, as they did.

The bootstrap refits the Huber objective on each resample, as Besiroglu et al. did for their
standard errors (for both estimators), warm-started at the full-data estimate.

With a measured run-to-run noise (:class:`scaling.fit.noise.NoiseEstimate`, ``fit(noise=)``) the
residuals are scaled by it: ``sum_i Huber_k(r_i / s_i)`` with ``s_i = sigma_b / L_i`` the noise
of point i in log space and ``k = 1.345`` (Huber's 95%-efficiency threshold, in units of the
noise); since ``Huber_k(r / s) = Huber_{k s}(r) / s^2`` this is the same solver with weights
``1 / s_i^2`` and a threshold per point. The bootstrap is then parametric: each replicate keeps
every run and redraws its loss around the fitted law, ``L_hat_i + f s_r sigma_b eps_i`` (eps
standard normal), where ``s_r^2 = nu / X_r`` with ``X_r ~ chi2_nu`` carries the uncertainty of a
noise measured on ``nu`` degrees of freedom (the scaled-inverse-chi-square posterior of sigma^2),
and ``f = sqrt(max(1, chi2 / dof))`` widens it by the lack of fit of the point means against the
noise (the Birge ratio: a law that misses by more than the noise is not trusted to the noise).
Redrawing the observed losses *and* resampling the runs counts the noise twice (the resampled
runs already carry it): on synthetic IsoFLOP grids with known noise that made the 95% interval
of ``a`` 1.8x the realised spread of the estimates (``benchmarks/interval_calibration.py``).
``info["noise"]`` holds the lack of fit (with the three points that weigh most in its chi-square)
and the widening used. The widening is the plain chi-square's, not a robust scale: a few points
far off the law also bias the estimate, and a robust width would then be confidently wrong
(``benchmarks/interval_calibration.py --outliers 2``: coverage 0.00 with a MAD-based widening,
0.50 with this one); the worst points name where the law misses.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from scaling.convention import Convention
from scaling.fit import optim
from scaling.fit.bootstrap import MAX_BOOTSTRAP, counts_from_indices, resample_counts
from scaling.fit.data import Columns, FitData, FitRefusal, FitWarning, budget_groups, normalise
from scaling.fit.noise import NoiseEstimate, birge_widening, lack_of_fit, point_means
from scaling.fit.results import LawFit

NOISE_HUBER_K = 1.345
"""Huber threshold in units of the noise when the residuals are scaled by it (Huber 1964: 95%
efficiency at the normal)."""

# Hoffmann et al. (2022) approach-3 estimates, unrounded (from the paper's LaTeX source, as
# quoted by Besiroglu et al. 2024): A = 406.401018, B = 410.722827, E = 1.69337368,
# alpha = 0.33917084, beta = 0.2849083; in theta = (log A, log B, log E, alpha, beta).
HOFFMANN_THETA = np.array([math.log(406.401018), math.log(410.722827), math.log(1.69337368), 0.33917084, 0.2849083])
_NAME_TO_THETA = {"A": 0, "B": 1, "E": 2, "alpha": 3, "beta": 4}
MAX_LOG_COEFFICIENT = 300.0  # log A, log B or log E above this: no float holds the law (e^709 overflows)


def theta_to_params(theta: np.ndarray) -> dict[str, float]:
    a, b, e, alpha, beta = (float(x) for x in theta)
    return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta}


def theta_draws_to_params(theta: np.ndarray) -> np.ndarray:
    """``(B, 5)`` theta rows to columns in :data:`CHINCHILLA` order (E, A, B, alpha, beta)."""
    return np.column_stack([np.exp(theta[:, 2]), np.exp(theta[:, 0]), np.exp(theta[:, 1]), theta[:, 3], theta[:, 4]])


def huber_log_normaliser(delta: float) -> float:
    """``log Z(delta)`` of the Huber density ``exp(-Huber_delta(x)) / Z`` (Besiroglu et al. 2024)."""
    z = math.sqrt(2 * math.pi) * math.erf(delta / math.sqrt(2))  # 1 - 2 Phi(-delta) = erf(delta / sqrt 2) + 2 * math.exp(-0.5 * delta * delta) / delta
    return math.log(z)


@dataclass(frozen=True)
class Approach3:
    """Fit ``E + A/N^alpha + B/D^beta``. Hyperparameters only; :meth:`fit` validates the data.

    ``fixed`` pins parameters by name (``{"alpha": 0.34}``); ``loss`` is ``huber`` or ``mse``;
    ``bootstrap`` resamples (0: none) seeded by ``seed``. ``start`` (theta, see
    :data:`HOFFMANN_THETA`) replaces the grid by one start: the optimum of that start's basin.
    """

    estimator: str = "grid"
    loss: str = "huber"
    delta: float = 1e-3
    fixed: Mapping[str, float] = field(default_factory=dict)
    bootstrap: int = 0
    seed: int | None = 0
    search: str = "projected"
    columns: Columns = field(default_factory=Columns)
    start: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.estimator not in ("grid", "mle"):
            raise FitRefusal(f"estimator: {self.estimator!r} is not 'grid' or 'mle'")
        if self.loss not in ("huber", "mse"):
            raise FitRefusal(f"loss: {self.loss!r} is not 'huber' or 'mse'")
        if self.search not in ("projected", "hoffmann"):
            raise FitRefusal(f"search: {self.search!r} is not 'projected' or 'hoffmann'")
        unknown = set(self.fixed) - set(_NAME_TO_THETA)
        if unknown:
            raise FitRefusal(f"fixed: unknown parameter(s) {sorted(unknown)}; use E, A, B, alpha, beta")
        for k, v in self.fixed.items():
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise FitRefusal(f"fixed (--fix): {k}={v}: must be a positive finite number (e.g. alpha=0.34, E=1.69)")
        if not 0 <= self.bootstrap <= MAX_BOOTSTRAP:
            raise FitRefusal(
                f"bootstrap={self.bootstrap}: must be 0 to {MAX_BOOTSTRAP:,} resamples "
                "(1,000-2,000 suffice for percentile intervals, Efron & Tibshirani 1993)"
            )
        if self.delta <= 0:
            raise FitRefusal("delta: must be > 0")
        if self.start is not None and len(self.start) != 5:
            raise FitRefusal("start: give theta = (log A, log B, log E, alpha, beta)")

    # ---- public ------------------------------------------------------------------------------------

    def fit(
        self,
        frame: pd.DataFrame | FitData,
        weights: np.ndarray | None = None,
        resample_indices: np.ndarray | None = None,
        noise: NoiseEstimate | None = None,
    ) -> LawFit:
        """Fit to rows with ``params, tokens, loss`` (column names from ``columns``).

        ``resample_indices`` (B, n) replays a given bootstrap instead of drawing ``bootstrap``;
        ``noise`` scales the residuals by the measured noise (see the module docstring).
        """
        fd = normalise(frame, self.columns)
        data = fd.frame
        n = len(data)
        problem = self._problem(data, weights)
        sigma = None
        if noise is not None:
            if self.estimator != "grid":
                raise FitRefusal("noise: scaling residuals by the measured noise needs estimator 'grid'")
            sigma = noise.run_sd(data)
            problem = self._scaled(problem, sigma / data["loss"].to_numpy())
        if len(budget_groups(data)) == 1:
            warnings.warn(FitWarning(
                f"DATA: every point has one compute budget ({data['flops'].median():.3g} FLOPs): one IsoFLOP curve "
                "pins the law only weakly and never shows how the optimum moves with C; add runs at other budgets"
            ), stacklevel=2)
        theta, extra = self._estimate(problem, data["loss"].to_numpy())
        if not np.all(theta[:3] < MAX_LOG_COEFFICIENT):
            raise FitRefusal("DATA: the best fit runs off to infinity (a coefficient and its exponent growing "
                             "together): these points do not pin L = E + A/N^alpha + B/D^beta; add sizes or "
                             "token counts, or fix a parameter")
        objective = float(problem.objective(theta[None])[0])
        if noise is None:
            draws, n_failed = self._bootstrap(problem, theta, resample_indices)
        else:
            if resample_indices is not None:
                raise FitRefusal("resample_indices replays a resampling of runs; with noise= the bootstrap "
                                 "redraws the losses around the fit instead: pass one or the other")
            extra["noise"] = self._noise_info(data, theta, noise, int(problem.free.sum()))
            draws, n_failed = self._redraw(problem, theta, sigma, noise.dof, extra["noise"]["widening"])
        resid = optim.predict_log(theta, problem.logn, problem.logd)[0] - problem.logl
        info = {
            "loss": self.loss,
            "delta": self.delta,
            "fixed": dict(self.fixed),
            "search": self.search,
            "residual_scale": float(1.4826 * np.median(np.abs(resid))),
            "bootstrap": {"n": 0 if draws is None else len(draws), "seed": self.seed, "failed": n_failed,
                          "kind": "runs resampled" if noise is None else "losses redrawn around the fit with the noise"},
            "max_flops": float(data["flops"].max()),
            **extra,
        }
        return LawFit(
            approach="3",
            form="chinchilla",
            params=theta_to_params(theta),
            n_points=n,
            estimator=self.estimator,
            objective=objective,
            draws=draws,
            # eq. 4's allocation solves C = 6 N D with N as counted here, whatever the data's C
            convention=Convention.six_nd(fd.convention.params),
            info=info,
        )

    def local_optima(self, frame: pd.DataFrame, k: int = 3, tol: float = 1e-3) -> list[tuple[np.ndarray, float]]:
        """The ``k`` lowest distinct local optima ``(theta, objective)`` the grid search reaches.

        Every start descends (300 Levenberg-Marquardt iterations); from the lowest up, a point is a
        new basin when its log-loss predictions differ from every basin's by more than ``tol`` on
        the data or ``10 tol`` at 10x its largest N and D: starts that drift to E = 0 (or A = 0)
        are one basin whatever their log E (or alpha), since they predict the same. The ``k``
        basins found are polished (Levenberg-Marquardt to a standstill); any that then coincide are kept once.
        """
        data = normalise(frame, self.columns).frame
        problem = self._problem(data, None)
        theta, f = self._descend(problem, data["loss"].to_numpy(), max_iter=300)
        n = len(problem.logn)
        logn = np.append(problem.logn, problem.logn.max() + math.log(10.0))
        logd = np.append(problem.logd, problem.logd.max() + math.log(10.0))
        scale = np.append(np.full(n, tol), 10 * tol)

        def distinct(t: np.ndarray, keys: list[np.ndarray]) -> tuple[bool, np.ndarray]:
            key = optim.predict_log(t, logn, logd)[0]
            return all((np.abs(key - other) > scale).any() for other in keys), key

        picked: list[np.ndarray] = []
        keys: list[np.ndarray] = []
        for i in np.argsort(f):
            if not np.isfinite(f[i]) or len(picked) == k:
                break
            new, key = distinct(theta[i], keys)
            if new:
                picked.append(theta[i])
                keys.append(key)
        found: list[np.ndarray] = []
        keys = []
        for t in (self._polish(problem, t) for t in picked):
            new, key = distinct(t, keys)
            if new:
                found.append(t)
                keys.append(key)
        return sorted(((t, float(problem.objective(t[None])[0])) for t in found), key=lambda x: x[1])

    # ---- internals ----------------------------------------------------------------------------------

    def _scaled(self, problem: optim.Problem, s: np.ndarray) -> optim.Problem:
        """Residuals in units of the noise ``s`` (log space, per point): weights ``1 / s^2``,
        Huber threshold ``k s`` (``Huber_k(r / s) = Huber_{k s}(r) / s^2``)."""
        delta = NOISE_HUBER_K * s if self.loss == "huber" else self.delta
        return optim.Problem(problem.logn, problem.logd, problem.logl, problem.weights / (s * s),
                             optim.Robust(self.loss, delta), problem.free)

    @staticmethod
    def _noise_info(data: pd.DataFrame, theta: np.ndarray, noise: NoiseEstimate, n_free: int) -> dict[str, Any]:
        """The noise used and the lack of fit of the point means (repeats averaged) against it."""
        pts = point_means(data)
        pred = np.exp(optim.predict_log(theta, np.log(pts["params"].to_numpy()), np.log(pts["tokens"].to_numpy()))[0])
        se = noise.point_se(pts, pooled=True)
        lof = lack_of_fit(pts["loss"].to_numpy(), pred, se, n_free, noise.dof)
        z = (pts["loss"].to_numpy() - pred) / se
        worst = np.argsort(-z * z)[:3]
        lof["worst_points"] = [{"params": float(pts["params"].iloc[i]), "tokens": float(pts["tokens"].iloc[i]),
                                "loss": float(pts["loss"].iloc[i]), "predicted": float(pred[i]),
                                "z": float(z[i]), "share_of_chi2": float(z[i] ** 2 / max(lof["chi2"], 1e-300))}
                               for i in worst]
        return {**noise.summary(), "huber_k": NOISE_HUBER_K, "lack_of_fit": lof,
                "widening": birge_widening(lof)}

    def _problem(self, data: pd.DataFrame, weights: np.ndarray | None) -> optim.Problem:
        n = len(data)
        w = np.ones(n) if weights is None else np.asarray(weights, float)
        if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any():
            raise FitRefusal("weights: need one finite, non-negative weight per row")
        free = np.array([k not in self.fixed for k in ("A", "B", "E", "alpha", "beta")])
        self._check_identifiable(data, int(free.sum()))
        return optim.Problem(
            np.log(data["params"].to_numpy()),
            np.log(data["tokens"].to_numpy()),
            np.log(data["loss"].to_numpy()),
            w,
            optim.Robust(self.loss, self.delta),
            free,
        )

    def _check_identifiable(self, data: pd.DataFrame, n_free: int) -> None:
        n = len(data)
        if n <= n_free:
            raise FitRefusal(
                f"DATA: {n} point(s) for {n_free} free parameters; approach 3 needs more points than "
                "parameters (add runs or fix parameters with fixed=)"
            )
        for col in ("params", "tokens"):
            if data[col].nunique() < 2:
                raise FitRefusal(f"{col}: every row has the same value; approach 3 needs at least 2 distinct values")

    def _theta_fixed(self, theta: np.ndarray) -> np.ndarray:
        theta = np.array(theta, dtype=float, copy=True)
        for k, v in self.fixed.items():
            i = _NAME_TO_THETA[k]
            theta[..., i] = math.log(v) if i < 3 else v
        return theta

    def _estimate(self, problem: optim.Problem, loss: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        if self.estimator == "grid":
            return self._grid_search(problem, loss), {}
        theta, sigma, nll = self._mle(problem, HOFFMANN_THETA)
        start = "hoffmann_unrounded"
        if not np.isfinite(nll):  # far from Hoffmann's scale: start from the Huber optimum instead
            theta, sigma, nll = self._mle(problem, self._grid_search(problem, loss))
            start = "huber_grid"
        return theta, {"sigma": sigma, "neg_log_likelihood": nll, "start": start}

    def _descend(self, problem: optim.Problem, loss: np.ndarray, max_iter: int = 150) -> tuple[np.ndarray, np.ndarray]:
        """Every start after ``max_iter`` Levenberg-Marquardt iterations: ``(theta, objective)``."""
        if self.start is not None:
            starts = np.asarray(self.start, float)[None]
        elif self.search == "hoffmann":
            starts = optim.huber_grid()
        else:
            v = np.arange(0.0, 2.0001, 0.25)
            exps = np.array(np.meshgrid(v, v, indexing="ij")).reshape(2, -1).T
            w = problem.weights if problem.weights.ndim == 1 else np.ones(len(loss))
            starts = optim.linear_starts(exps, problem.logn, problem.logd, loss, w)
            starts = np.vstack([starts, HOFFMANN_THETA])
        starts = self._theta_fixed(starts)
        # 150 iterations bring every start that can win near its optimum; the polish finishes it
        theta, f, _ = optim.levenberg_marquardt(problem, starts, rtol=1e-10, max_iter=max_iter)
        return theta, f

    def _grid_search(self, problem: optim.Problem, loss: np.ndarray) -> np.ndarray:
        theta, f = self._descend(problem, loss)
        if not np.isfinite(f).any():
            raise FitRefusal("DATA: no start reached a finite objective; check the losses and sizes")
        best = theta[int(np.nanargmin(f))]
        return self._polish(problem, best)

    def _polish(self, problem: optim.Problem, theta0: np.ndarray) -> np.ndarray:
        """Levenberg-Marquardt from the best start until no step lowers the objective: the
        stationary point itself (on Besiroglu et al.'s 240 points it ends at or below the
        objective L-BFGS-B reaches, without importing scipy.optimize). A valley that runs off to
        infinity (a coefficient and its exponent growing together) is not followed past where the
        coefficients still exist as floats: the start is kept instead."""
        theta, _, _ = optim.levenberg_marquardt(problem, theta0[None], rtol=0.0, max_iter=2000)
        return theta[0] if np.all(theta[0, :3] < MAX_LOG_COEFFICIENT) else theta0

    def _mle(self, problem: optim.Problem, start: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Maximise the Huber likelihood over theta and log sigma (BFGS, exact gradient)."""
        from scipy import optimize

        free = problem.free
        w = problem.weights
        delta = self.delta
        log_z = huber_log_normaliser(delta)
        base = self._theta_fixed(start)
        huber = optim.Robust("huber", delta)

        def nll(x: np.ndarray) -> tuple[float, np.ndarray]:
            theta = base.copy()
            theta[free] = x[:-1]
            log_sigma = x[-1]
            sigma = math.exp(log_sigma)
            pred, jac = optim.predict_log_with_jacobian(theta, problem.logn, problem.logd)
            u = (pred - problem.logl) / sigma
            value = float(np.sum(w * (huber.rho(u) + log_sigma + log_z)))
            psi = w * huber.psi(u)
            g_theta = (psi / sigma) @ jac
            g_sigma = float(np.sum(w - psi * u))
            return value, np.append(g_theta[free], g_sigma)

        x0 = np.append(base[free], 0.0)
        res = optimize.minimize(nll, x0, jac=True, method="BFGS", options={"gtol": 1e-8, "maxiter": 5000})
        theta = base.copy()
        theta[free] = res.x[:-1]
        return theta, math.exp(res.x[-1]), float(res.fun)

    def _bootstrap(
        self, problem: optim.Problem, theta: np.ndarray, resample_indices: np.ndarray | None,
    ) -> tuple[np.ndarray | None, int]:
        """Refits on resampled runs (counts of each run as weights), warm-started at ``theta``."""
        n = len(problem.logl)
        if resample_indices is not None:
            counts = counts_from_indices(resample_indices, n)
        elif self.bootstrap > 0:
            counts = resample_counts(n, self.bootstrap, self.seed)
        else:
            return None, 0
        return self._refit_all(problem, theta, counts * problem.weights[None, :], problem.logl)

    def _redraw(
        self, problem: optim.Problem, theta: np.ndarray, sigma: np.ndarray, noise_dof: int, widening: float,
    ) -> tuple[np.ndarray | None, int]:
        """Refits on losses redrawn around the fit, ``L_hat + widening s_r sigma eps`` with
        ``s_r^2 = nu / chi2_nu`` (see the module docstring), every run kept, one seed."""
        if self.bootstrap <= 0:
            return None, 0
        rng = np.random.default_rng(None if self.seed is None else [self.seed, 1])
        fitted = np.exp(optim.predict_log(theta, problem.logn, problem.logd)[0])
        scale = np.sqrt(noise_dof / rng.chisquare(noise_dof, size=(self.bootstrap, 1))) if noise_dof > 0 else 1.0
        eps = rng.standard_normal((self.bootstrap, len(fitted)))
        loss = fitted + widening * scale * sigma * eps
        logl = np.log(np.maximum(loss, 1e-3 * fitted))
        return self._refit_all(problem, theta, np.tile(problem.weights, (self.bootstrap, 1)), logl)

    @staticmethod
    def _refit_all(
        problem: optim.Problem, theta: np.ndarray, weights: np.ndarray, logl: np.ndarray,
    ) -> tuple[np.ndarray, int]:
        """One refit per row of ``weights`` (and of ``logl`` where it has rows), in chunks on threads."""

        def refit(chunk: np.ndarray) -> tuple[np.ndarray, int]:
            sub = optim.Problem(
                problem.logn, problem.logd, logl if logl.ndim == 1 else logl[chunk], weights[chunk],
                problem.robust, problem.free,
            )
            th, _, conv = optim.levenberg_marquardt(sub, np.tile(theta, (len(chunk), 1)), rtol=1e-8)
            return th, int((~conv).sum())

        # numpy's array arithmetic releases the GIL: chunks of 500 resamples on threads use every core
        chunks = np.array_split(np.arange(len(weights)), max(1, len(weights) // 500))
        workers = max(1, min(len(chunks), os.cpu_count() or 1, 8))
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(refit, chunks))
        thetas = [th for th, _ in results]
        failed = sum(f for _, f in results)
        return theta_draws_to_params(np.vstack(thetas)), failed

