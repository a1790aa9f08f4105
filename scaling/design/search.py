"""Choose a design: rank the affordable family by its predicted approach-2 widths, then simulate
approach 3 on the best few and on the plain grid of the same allowance.

Criteria (smaller is better, each a predicted median 95% width):

* ``n_opt``: ``ln N*`` at the target budget, N counted as the spec counts it (``model.count``);
* ``exponent``: the allocation exponent ``a``, the wider of the two counts of N;
* ``loss``: the compute-optimal loss at the target (approach 3; the best few by ``n_opt`` are
  simulated with it and ranked).

A design is eligible only if every budget came out interior in at least ``min_interior`` of the
simulations (a refused budget costs the study its approach-2 fit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scaling.design.prior import Prior
from scaling.design.simulate import Widths, predict_widths
from scaling.design.space import Allowance, DesignPoints, Pricing, candidate_designs, plain_design
from scaling.errors import UsageError
from scaling.sweep.spec import SweepSpec

CRITERIA = ("n_opt", "exponent", "loss")


@dataclass(frozen=True, eq=False)
class DesignChoice:
    """The chosen design and the plain grid, each with its predicted widths."""

    chosen: DesignPoints
    chosen_widths: list[Widths]
    plain: DesignPoints
    plain_widths: list[Widths]
    criterion: str
    considered: int

    def widths(self, which: str, approach: str, count: str) -> Widths:
        rows = self.chosen_widths if which == "chosen" else self.plain_widths
        return next(w for w in rows if w.approach == approach and w.count == count)


def score(widths: list[Widths], criterion: str, count: str, min_interior: float) -> float:
    a2 = {w.count: w for w in widths if w.approach == "2"}
    if any(w.interior < min_interior for w in a2.values()):
        return math.inf
    if criterion == "n_opt":
        return a2[count].log_n_opt
    if criterion == "exponent":
        return max(w.exponent for w in a2.values())
    a3 = [w for w in widths if w.approach == "3" and w.count == count]
    return a3[0].loss if a3 and math.isfinite(a3[0].loss) else math.inf


def choose_design(base: SweepSpec, prior: Prior, allowance: Allowance, pricing: Pricing, target: float, *,
                  criterion: str = "n_opt", sims: int = 200, sims3: int = 12, bootstrap: int = 200, seed: int = 0,
                  min_interior: float = 0.9, finalists: int = 3, family: dict[str, Any] | None = None) -> DesignChoice:
    """The design that minimises ``criterion`` under ``allowance`` (module docstring)."""
    if criterion not in CRITERIA:
        raise UsageError(f"--criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")
    count = base.model.count
    ceiling = target
    plain = plain_design(base, prior, allowance, pricing, ceiling, (family or {}).get("min_steps", 0.0))
    cands = candidate_designs(base, prior, allowance, pricing, ceiling, **(family or {}))
    rank_by = "n_opt" if criterion == "loss" else criterion
    scored = [(score(predict_widths(p, prior, target, sims=sims, seed=seed), rank_by, count, min_interior), i, p)
              for i, p in enumerate(cands)]
    scored = sorted((s for s in scored if math.isfinite(s[0])), key=lambda s: (s[0], s[1]))
    if not scored:
        raise UsageError(f"--allowance {allowance.describe()}: no design of the family has every budget interior in "
                         f"{min_interior:.0%} of simulations; raise the allowance or widen the ladder (grid.sizes)")
    top = [p for _, _, p in scored[:max(1, finalists) if criterion == "loss" else 1]]
    full = [(p, predict_widths(p, prior, target, sims=sims, sims3=sims3, bootstrap=bootstrap, seed=seed)) for p in top]
    if criterion == "loss":
        full.sort(key=lambda pw: score(pw[1], "loss", count, min_interior))
    chosen, chosen_w = full[0]
    plain_w = predict_widths(plain, prior, target, sims=sims, sims3=sims3, bootstrap=bootstrap, seed=seed)
    return DesignChoice(chosen, chosen_w, plain, plain_w, criterion, len(cands))
