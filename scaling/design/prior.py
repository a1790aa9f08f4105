"""The prior a design is simulated under: a loss law ``L(N, D)`` and a run-to-run noise level.

Losses are drawn as ``log L_obs = log L(N, D) + sigma eps``, ``eps ~ N(0, 1)`` independent per run,
with N counted as the law counts it (``param_convention``). The law is a published one
(:func:`scaling.laws.get_law`) or a pilot fit (``fit:STUDY/fit/approach3_<count>.json``); sigma is
given, or read from a pilot study: its measured noise (``fit/noise.json``, the spread of repeated
seeds, as a share of the loss) where it has one, else its approach-3 fit's robust residual scale
(``1.4826 median |r|``), which also holds any lack of fit and so errs wide.

Where the pilot's repeats showed a trend in tokens per parameter (:class:`scaling.fit.noise.NoiseTrend`,
an sd of the loss), the prior keeps it: each run's sd of log loss is then ``sd(r) / L(N, D)``
with ``r = 6 D^2 / C`` (``d log L = dL / L``), and ``sigma`` is its value at the optimum.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scaling.errors import UsageError
from scaling.fit.noise import NoiseEstimate, NoiseTrend
from scaling.laws import FIT_PREFIX, Law, UnknownLawError, get_law
from scaling.laws.base import has_loss

BRANCH_SHARE = 0.5
"""Assumed share of the noise variance that the WSD branches of one trunk have in common (they
share its initialisation and data order up to their branch point; not measured here)."""


@dataclass(frozen=True)
class Prior:
    """A loss law, the count of N it takes, and the noise sd of ``log L`` per run (``sigma``, or
    with ``trend`` the pilot's sd of the loss in tokens per parameter, over the law's loss);
    ``branch_share`` of that variance is common to the cooldown branches of one WSD trunk
    (``eps_i = sqrt(1 - s) z_i + sqrt(s) z_trunk``)."""

    law: Law
    sigma: float
    name: str
    sigma_source: str
    branch_share: float = BRANCH_SHARE
    trend: NoiseTrend | None = None

    @property
    def param_convention(self) -> str:
        return str(getattr(self.law, "param_convention", "total"))

    def log_loss(self, params: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """``log L(N, D)`` with ``params`` counted as :attr:`param_convention`."""
        return np.log(np.asarray(self.law.loss(np.asarray(params, float), np.asarray(tokens, float)), float))

    def log_sd(self, params: np.ndarray, tokens: np.ndarray, flops: np.ndarray) -> np.ndarray:
        """The sd of ``log L`` of one run at each point: ``sigma``, or ``trend.sd_at(6 D^2 / C) /
        L(N, D)`` (``params`` counted as :attr:`param_convention`)."""
        if self.trend is None:
            return np.full(len(np.asarray(tokens)), self.sigma)
        tokens = np.asarray(tokens, float)
        r = 6.0 * tokens**2 / np.asarray(flops, float)
        return self.trend.sd_at(r) / np.exp(self.log_loss(params, tokens))

    def describe(self) -> dict[str, Any]:
        return {"law": self.name, "param_convention": self.param_convention, "sigma": self.sigma,
                "sigma_source": self.sigma_source, "branch_share": self.branch_share,
                "trend": None if self.trend is None else self.trend.to_dict()}


def _fit_noise(path: Path, law: Law) -> tuple[float, str, NoiseTrend | None] | None:
    """The noise of a pilot study as an sd of log loss: ``fit/noise.json``'s pooled sd of the
    final loss across repeated seeds (:mod:`scaling.fit.noise`) over the law's loss at the
    compute-optimal point of the largest budget fitted (``d log L = dL / L``), or its trend in
    tokens per parameter, with its value there; else the approach-3 fit's residual scale."""
    d = json.loads(path.read_text())
    info = d.get("info") or {}
    noise = path.parent / "noise.json" if path.parent.name == "fit" else None
    if noise is not None and noise.is_file():
        measured = json.loads(noise.read_text()) or {}
        std = measured.get("pooled_std")
        c = info.get("max_flops")
        if isinstance(std, (int, float)) and std > 0 and isinstance(c, (int, float)) and c > 0:
            a = law.optimal_allocation(float(c))
            level = float(law.loss(a.params, a.tokens))
            how, trend = "pooled", None
            if measured.get("trend"):  # the noise at the optimum's tokens per parameter, not the pooled mix
                estimate = NoiseEstimate.from_dict(measured)
                at = pd.DataFrame({"tokens": [a.tokens], "flops": [float(c)]})
                std, how, trend = float(estimate.run_sd(at)[0]), "its trend in D/N, here at the optimum's", estimate.trend
            if math.isfinite(level) and level > 0:
                return float(std) / level, (f"measured from repeated seeds ({noise}, {how}: sd {std:.3g} at loss "
                                            f"{level:.3g})"), trend
    scale = info.get("residual_scale")
    if isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0:
        return float(scale), f"residual scale of the pilot fit {path} (includes lack of fit)", None
    return None


def load_prior(name: str, sigma: float | None = None) -> Prior:
    """``name``: a published law or ``fit:PATH``; ``sigma``: the noise sd of log L, one constant
    (None: from the pilot study, with its trend if it measured one; a published law has none)."""
    try:
        law = get_law(name)
    except (UnknownLawError, FileNotFoundError, ValueError) as e:
        raise UsageError(f"--prior: {e}") from None
    if not has_loss(law):
        raise UsageError(f"--prior {name}: the law gives an allocation only, no loss to simulate; "
                         "use a parametric law (e.g. chinchilla) or fit:STUDY/fit/approach3_<count>.json")
    if sigma is not None:
        if not (math.isfinite(sigma) and sigma > 0):
            raise UsageError(f"--noise {sigma}: give the sd of log loss between runs, a positive number (e.g. 0.005)")
        return Prior(law, float(sigma), name, "assumed (--noise)")
    if name.startswith(FIT_PREFIX):
        found = _fit_noise(Path(name[len(FIT_PREFIX):]), law)
        if found is not None:
            return Prior(law, found[0], name, found[1], trend=found[2])
    raise UsageError(f"--noise: the prior {name} carries no noise level; give --noise SIGMA "
                     "(the sd of log loss between runs, e.g. 0.005)")
