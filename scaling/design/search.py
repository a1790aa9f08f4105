"""Choose a design: the best of each family, then the family whose best is narrower.

* IsoFLOP (:mod:`scaling.design.space`; with or without repeated seeds at each budget's optimum,
  or at its optimum and its largest size):
  ranked by predicted approach-2 widths (batched simulations); the best few, and the best without
  repeats, simulated with approach 3 too.
* WSD branches (:mod:`scaling.design.wsd`): fitted by approach 3 only (no IsoFLOP budgets),
  ranked by linearised approach-3 widths (:mod:`scaling.design.linear`), the best few simulated.

Finalists, within a family and between the families, are judged by the widest interval their study
will report (:func:`study_score`: the wider of approaches 2 and 3 for an IsoFLOP design, approach 3
for a WSD one). ``sims3 = 0`` simulates no approach 3: the IsoFLOP family's approach-2 ranking
decides alone and the WSD family is not considered. The plain grid of the same allowance is
simulated beside the choice.

Criteria (smaller is better, each a predicted 95% width (geometric mean over simulations), or the width a calibrated interval
would need where the estimates scatter more than the study's intervals say: :meth:`Widths.honest`):

* ``n_opt``: ``ln N*`` at the target budget, N counted as the spec counts it (``model.count``);
* ``exponent``: the allocation exponent ``a``, the wider of the two counts of N;
* ``loss``: the compute-optimal loss at the target (approach 3).

An IsoFLOP design is eligible only if every budget came out interior in at least ``min_interior``
of the simulations (a refused budget costs the study its approach-2 fit). Repeats are kept only
where they win at their cost: their runs are priced in, so a repeated design has a lower top
budget; the study then knows its noise (approach 2's intervals come from it, approach 3 resamples
its losses with it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from scaling.design.linear import linear_widths
from scaling.design.prior import Prior
from scaling.design.simulate import Widths, predict_widths
from scaling.design.space import Allowance, DesignPoints, Pricing, candidate_designs, plain_design
from scaling.design.wsd import candidate_wsd_designs
from scaling.errors import UsageError
from scaling.sweep.spec import SweepSpec

CRITERIA = ("n_opt", "exponent", "loss")
FAMILIES = ("isoflop", "wsd")


@dataclass(frozen=True, eq=False)
class DesignChoice:
    """The chosen design and the plain grid, each with its predicted widths; ``families``: the
    best of each family considered (``isoflop``, ``wsd``) with its widths, the chosen among them."""

    chosen: DesignPoints
    chosen_widths: list[Widths]
    plain: DesignPoints
    plain_widths: list[Widths]
    criterion: str
    considered: int
    families: dict[str, tuple[DesignPoints, list[Widths]]] = field(default_factory=dict)

    def widths(self, which: str, approach: str, count: str) -> Widths:
        rows = self.chosen_widths if which == "chosen" else self.plain_widths
        return next(w for w in rows if w.approach == approach and w.count == count)


def score(widths: list[Widths], criterion: str, count: str, min_interior: float) -> float:
    a2 = {w.count: w for w in widths if w.approach == "2"}
    if any(w.interior < min_interior for w in a2.values()):
        return math.inf
    if criterion == "n_opt":
        return a2[count].honest("log_n_opt")
    if criterion == "exponent":
        return max(w.honest("exponent") for w in a2.values())
    a3 = [w for w in widths if w.approach == "3" and w.count == count]
    return a3[0].loss if a3 and math.isfinite(a3[0].loss) else math.inf


def study_score(widths: list[Widths], criterion: str, count: str, min_interior: float) -> float:
    """``criterion`` on the widest interval the design's study will report: over every approach
    simulated (approach 2 where it has budgets, approach 3 where ``sims3 > 0``), ``ln N*`` and
    ``L*`` for ``count``, the exponent over both counts; ``inf`` where approach 2 is refused in
    more than ``1 - min_interior`` of the simulations or approach 3 fails in half."""
    if any(w.interior < (min_interior if w.approach == "2" else 0.5) for w in widths):
        return math.inf
    key = {"n_opt": "log_n_opt", "exponent": "exponent", "loss": "loss"}[criterion]
    rows = [w for w in widths if (criterion == "exponent" or w.count == count) and math.isfinite(getattr(w, key))]
    return max((w.honest(key) if key != "loss" else w.loss for w in rows), default=math.inf)


def _rising(prior: Prior) -> str:
    """How the prior's noise grows toward few tokens per parameter, in words (empty without a trend)."""
    t = prior.trend
    if t is None:
        return ""
    return (f"; the pilot's trend: sd of the loss {t.sd_at(t.r_hi):.3g} at D/N = {t.r_hi:.3g}, "
            f"{t.sd_at(t.r_lo):.3g} at D/N = {t.r_lo:.3g}")


def _best_isoflop(base: SweepSpec, prior: Prior, allowance: Allowance, pricing: Pricing, target: float, criterion: str,
                  sims: int, sims3: int, bootstrap: int, seed: int, min_interior: float, finalists: int,
                  family: dict[str, Any]) -> tuple[DesignPoints, list[Widths], int]:
    """The IsoFLOP family's choice: ranked by approach 2 (``loss``: by ``n_opt``); with approach 3
    simulated (``sims3 > 0``), the best few and the best without repeats are, and the one whose
    widest interval is narrowest (:func:`study_score`) wins."""
    count = base.model.count
    cands = candidate_designs(base, prior, allowance, pricing, target, **family)
    rank_by = "n_opt" if criterion == "loss" else criterion
    predicted = [predict_widths(p, prior, target, sims=sims, seed=seed) for p in cands]
    scored = [(score(w, rank_by, count, min_interior), i, p) for i, (p, w) in enumerate(zip(cands, predicted, strict=True))]
    scored = sorted((s for s in scored if math.isfinite(s[0])), key=lambda s: (s[0], s[1]))
    if not scored:
        best = max((min(w.interior for w in ws if w.approach == "2") for ws in predicted), default=0.0)
        raise UsageError(f"--allowance {allowance.describe()}: no design of the family has every budget interior in "
                         f"{min_interior:.0%} of simulations (the best of {len(cands)}: {best:.0%}, under a "
                         f"noise sd of log L {prior.sigma:.3g} at the optimum{_rising(prior)}); raise the "
                         "allowance or widen the ladder (grid.sizes)")
    top = [p for _, _, p in scored[:max(1, finalists) if sims3 > 0 else 1]]
    plain_best = next((p for _, _, p in scored if not p.design.repeats), None)
    if sims3 > 0 and plain_best is not None and plain_best not in top:
        top.append(plain_best)  # repeats stay only where they pay on every fit the study makes
    full = [(p, predict_widths(p, prior, target, sims=sims, sims3=sims3, bootstrap=bootstrap, seed=seed)) for p in top]
    if sims3 > 0:
        full.sort(key=lambda pw: study_score(pw[1], criterion, count, min_interior))
    return full[0][0], full[0][1], len(cands)


def _best_wsd(base: SweepSpec, prior: Prior, allowance: Allowance, pricing: Pricing, target: float, criterion: str,
              sims3: int, bootstrap: int, seed: int, finalists: int, min_interior: float,
              family: dict[str, Any]) -> tuple[DesignPoints, list[Widths], int] | None:
    """The WSD family's choice: ranked by linearised approach-3 widths, the best few simulated."""
    count = base.model.count
    keep = {k: v for k, v in family.items() if k in ("min_steps", "cooldown_frac")} | family.get("wsd", {})
    cands = candidate_wsd_designs(base, prior, allowance, pricing, target, **keep)
    key = {"n_opt": "log_n_opt", "exponent": "exponent", "loss": "loss"}[criterion]
    lin = [(linear_widths(p, prior, target, count)[key], i, p) for i, p in enumerate(cands)]
    lin = sorted((x for x in lin if math.isfinite(x[0])), key=lambda x: (x[0], x[1]))
    if not lin:
        return None
    full = [(p, predict_widths(p, prior, target, sims=1, sims3=sims3, bootstrap=bootstrap, seed=seed))
            for _, _, p in lin[:max(1, finalists)]]
    full.sort(key=lambda pw: study_score(pw[1], criterion, count, min_interior))
    return full[0][0], full[0][1], len(cands)


def choose_design(base: SweepSpec, prior: Prior, allowance: Allowance, pricing: Pricing, target: float, *,
                  criterion: str = "n_opt", sims: int = 200, sims3: int = 12, bootstrap: int = 200, seed: int = 0,
                  min_interior: float = 0.9, finalists: int = 3, family: dict[str, Any] | None = None,
                  families: tuple[str, ...] = FAMILIES) -> DesignChoice:
    """The design that minimises ``criterion`` under ``allowance`` (module docstring)."""
    if criterion not in CRITERIA:
        raise UsageError(f"--criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")
    unknown = set(families) - set(FAMILIES)
    if unknown or not families:
        raise UsageError(f"--families {','.join(families)}: choose from {', '.join(FAMILIES)}")
    fam = dict(family or {})
    count = base.model.count
    plain = plain_design(base, prior, allowance, pricing, target, fam.get("min_steps", 0.0))
    best: dict[str, tuple[DesignPoints, list[Widths]]] = {}
    considered = 0
    iso_keys = ("n_budgets", "ratios", "ks", "strides", "min_steps", "repeats")
    if "isoflop" in families:
        p, w, n = _best_isoflop(base, prior, allowance, pricing, target, criterion, sims, sims3, bootstrap, seed,
                                min_interior, finalists, {k: v for k, v in fam.items() if k in iso_keys})
        best["isoflop"], considered = (p, w), considered + n
    if "wsd" in families and sims3 > 0:  # a WSD design is judged by approach 3's simulations only
        got = _best_wsd(base, prior, allowance, pricing, target, criterion, sims3, bootstrap, seed, finalists,
                        min_interior, fam)
        if got is not None:
            best["wsd"], considered = (got[0], got[1]), considered + got[2]
    if not best:
        raise UsageError(f"--allowance {allowance.describe()}: no WSD design fits it on this ladder "
                         "(and --sims3 0 leaves the WSD family out); raise the allowance or include isoflop")
    name = min(best, key=lambda f: (study_score(best[f][1], criterion, count, min_interior) if len(best) > 1 else 0.0,
                                    f != "isoflop"))
    chosen, chosen_w = best[name]
    plain_w = predict_widths(plain, prior, target, sims=sims, sims3=sims3, bootstrap=bootstrap, seed=seed)
    return DesignChoice(chosen, chosen_w, plain, plain_w, criterion, considered, best)
