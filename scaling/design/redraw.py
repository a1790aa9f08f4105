"""Approach 2's parametric resamples, simulated: every simulation's study, redrawn at once.

With a measured noise the study's interval on the allocation exponent is a percentile interval
of its resamples (:func:`scaling.fit.approach2.allocation_draws`): each size's mean loss redrawn as
``mean + s se eps`` with ``s = sqrt(nu / chi2_nu)`` per resample, every budget's weighted parabola
refitted (its vertex nan where it does not curve upward), the OLS line through the vertices, and,
where the vertices miss that line by more than their noise explains, each resample's deviation
from it scaled by ``sqrt(chi2_v / chi2_df)``. A normal approximation with delta-method vertex
variances misses what the percentiles see where a budget's valley is shallow in its noise: a
vertex whose resamples run far to one side. Here the same resamples are drawn for all
simulations as arrays (simulations x resamples x sizes), so a design's predicted width is the
study's own, in distribution.
"""

from __future__ import annotations

import warnings

import numpy as np

Z_LEVEL = 0.975  # two-sided 95% intervals


def redrawn_vertices(x: np.ndarray, means: np.ndarray, w: np.ndarray, se: np.ndarray, scale: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """(S, B) vertices in ``x`` of the parabolas refitted, with weights ``w`` ((P,) or (S, P)), to
    ``means + scale se eps`` (``means``, ``se``: (S, P); ``scale``: (S, B)); nan where one does not
    curve upward."""
    u = x - x.mean()
    design = np.column_stack([np.ones_like(u), u, u * u])
    ww = np.broadcast_to(w, means.shape)
    inv = np.linalg.pinv(np.einsum("sp,pi,pj->sij", ww, design, design))
    eps = rng.standard_normal((*scale.shape, len(x)))
    ys = means[:, None, :] + scale[:, :, None] * se[:, None, :] * eps
    coef = np.einsum("sij,sbj->sbi", inv, (ww[:, None, :] * ys) @ design)
    c1, c2 = coef[..., 1], coef[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(c2 > 0, -c1 / (2 * c2), np.nan) + x.mean()


def percentile_widths(vertices: np.ndarray, observed_coef: np.ndarray, lin: np.ndarray, x0: np.ndarray,
                      widen: np.ndarray, df: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Widths of the 95% percentile intervals of ``a`` and of ``ln N*`` at the target, per simulation.

    ``vertices`` (S, B, budgets) of ln N*; ``observed_coef`` (S, 2) the OLS line through each
    simulation's own vertices; ``lin`` (budgets, 2) the OLS map; ``widen`` (S,) ``chi2_v`` where
    the line misses by more than the noise (above its ``df``), else 0: those resamples' deviations
    are scaled by ``sqrt(chi2_v / chi2_df)``."""
    with np.errstate(invalid="ignore"):
        c = vertices @ lin  # (S, B, 2)
    dev = c - observed_coef[:, None, :]
    factor = np.where(widen[:, None] > 0, np.sqrt(widen[:, None] / rng.chisquare(max(df, 1), c.shape[:2])), 1.0)
    c = observed_coef[:, None, :] + dev * factor[:, :, None]
    q = [100 * (1 - Z_LEVEL), 100 * Z_LEVEL]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a simulation whose resamples all failed: nan
        a_lo, a_hi = np.nanpercentile(c[..., 1], q, axis=1)
        n_lo, n_hi = np.nanpercentile(c @ x0, q, axis=1)
    return a_hi - a_lo, n_hi - n_lo


def noise_scales(nu: float, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``sqrt(nu / chi2_nu)`` per resample (a noise measured on ``nu`` dof), or 1 where ``nu <= 0``."""
    if nu <= 0:
        return np.ones(shape)
    return np.sqrt(nu / rng.chisquare(nu, shape))

