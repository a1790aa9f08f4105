"""WSD-branch designs: a ladder of sizes, each one constant-LR trunk with a cooldown branch ending
at each of a list of token counts (``grid.kind: wsd_branches``; Hägele et al. 2024, "Scaling Laws
and Compute-Optimal Training Beyond Fixed Training Durations").

A branch's final loss is that of a run trained to its own D with a decaying LR: Hägele et al.
(figs. 3-5) find a 20% cooldown matches a cosine schedule of that length, so each branch is a point
``(N, D)`` on the same law as the IsoFLOP runs, fitted by approach 3 (the trunk itself, at a
constant LR, is not a point). Branches of one trunk share its initialisation and data order up to
their branch point, so part of their noise is shared: :attr:`scaling.design.prior.Prior.branch_share`.

Cost, as the sweep planner counts it (:attr:`scaling.runspec.RunSpec.trained_steps`): each trunk
once, to the last branch point, plus each branch's cooldown; so ``k`` sizes x ``m`` token counts
cost about ``k`` runs at the largest D times ``1 - c + c sum_j T_j / T_max`` (``c`` the cooldown
share), against ``k m`` separate runs.

The family: the sizes run from ``margin`` ladder steps (``stride`` apart) below the best size the
prior puts at the smallest of ``n`` budgets ``ratio`` apart to ``margin`` above the best at the
top budget; the branches end at ``m`` token counts spaced evenly in log D over ``span``x up to
the D the prior puts at the optimum of the top budget (``C / FLOPs per token`` of its best size;
counts under ``min_steps`` steps dropped); the largest top budget (on a grid of quarter-octaves
below the target) whose cost fits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scaling.design.prior import Prior
from scaling.design.space import Allowance, DesignPoints, Pricing, ladder, prior_best
from scaling.errors import UsageError
from scaling.flops import flops_per_token
from scaling.shapes import ModelShape
from scaling.sweep.grid import batch_tokens_for, expand
from scaling.sweep.spec import ShapeSize, SweepSpec

COOLDOWN_FRAC = 0.2  # Hägele et al. 2024: a 20% cooldown matches a cosine run of the same length


@dataclass(frozen=True)
class WsdDesign:
    """Ladder indices of the trunks' sizes and the branches' token counts (ascending)."""

    sizes: tuple[int, ...]
    tokens: tuple[int, ...]
    cooldown_frac: float = COOLDOWN_FRAC
    label: str = ""
    family: str = "wsd"
    repeats: int = 0

    def describe(self) -> str:
        span = self.tokens[-1] / self.tokens[0]
        return (f"{len(self.sizes)} WSD trunks x {len(self.tokens)} cooldown branches (D {self.tokens[0]:.3g}.."
                f"{self.tokens[-1]:.3g}, {span:.3g}x; cooldown {self.cooldown_frac:g}), "
                f"{len(self.sizes) * len(self.tokens)} points")


def wsd_mapping(base: SweepSpec, design: WsdDesign, shapes: Sequence[ModelShape], name: str | None = None) -> dict[str, Any]:
    """``base`` as its file gave it with a ``wsd_branches`` grid of the design. The trunks
    checkpoint at every branch point (``train.checkpoint_every`` left to the grid: a quarter of
    the earliest branch point), so each branch ends where the design put it."""
    d = base.model_dump(mode="json", exclude_unset=True)
    sizes = [ShapeSize(layers=s.layers, hidden=s.hidden, heads=s.heads, kv_heads=s.kv_heads, ffn=s.ffn)
             .model_dump(mode="json", exclude_none=True) for s in (shapes[i] for i in design.sizes)]
    decay = getattr(base.grid, "decay_shape", "1-sqrt")
    d["grid"] = {"kind": "wsd_branches", "sizes": sizes, "tokens": [int(t) for t in design.tokens],
                 "cooldown_frac": design.cooldown_frac, "decay_shape": decay}
    d["train"] = {k: v for k, v in d.get("train", {}).items() if k != "checkpoint_every"}
    if name:
        d["name"] = name
    return d


def wsd_points(base: SweepSpec, design: WsdDesign, shapes: Sequence[ModelShape], pricing: Pricing) -> DesignPoints:
    """The design's trunks and branches (what its spec expands to) and their cost."""
    spec = SweepSpec.model_validate(wsd_mapping(base, design, shapes))
    runs = tuple(expand(spec))
    return DesignPoints(design, spec, runs, pricing.cost(runs))


def _wsd_design(base: SweepSpec, prior: Prior, shapes: Sequence[ModelShape], top: float, n: int, ratio: float,
                margin: int, stride: int, span: float, m: int, min_steps: float, cooldown: float) -> WsdDesign | None:
    """The member of the family with top budget ``top`` (module docstring); None with fewer than
    3 sizes, 3 token counts or 12 points."""
    conv = base.train.flops_convention
    budgets = [top / ratio ** (n - 1 - i) for i in range(n)]
    best = [prior_best(prior, shapes, c, conv) for c in budgets]
    lo, hi = max(0, best[0] - margin * stride), min(len(shapes) - 1, best[-1] + margin * stride)
    sizes = tuple(range(hi, lo - 1, -stride))[::-1]
    d_top = top / flops_per_token(shapes[best[-1]], conv)
    batch = batch_tokens_for(base.train.batch, shapes[best[-1]], d_top)
    steps = {round(d_top / span ** (1 - j / (m - 1)) / batch) for j in range(m)}
    tokens = tuple(sorted(s * batch for s in steps if s >= max(min_steps, 1)))
    if len(sizes) < 3 or len(tokens) < 3 or len(sizes) * len(tokens) < 12:
        return None
    label = f"WSD sizes of {n} budgets {ratio:g}x apart, margin {margin} stride {stride}; {m} horizons over {span:g}x"
    return WsdDesign(sizes, tokens, cooldown, label)


def _affordable_wsd(base: SweepSpec, prior: Prior, shapes: Sequence[ModelShape], allowance: Allowance,
                    pricing: Pricing, ceiling: float, shape: tuple[int, float, int, int, float, int],
                    min_steps: float, cooldown: float) -> DesignPoints | None:
    """The design of this ``shape`` (n, ratio, margin, stride, span, m) with the largest top
    budget ``ceiling / 2^(j/4)`` that fits; the first try's cost tells where to start (cost grows
    about linearly with the top budget)."""
    j = 0
    while j <= 80:
        d = _wsd_design(base, prior, shapes, ceiling * 2 ** (-j / 4), *shape, min_steps, cooldown)
        if d is None:
            j += 1
            continue
        try:
            p = wsd_points(base, d, shapes, pricing)
        except UsageError:  # a branch below one batch: smaller budgets only get worse
            return None
        spent = pricing.spent(p.priced, allowance)
        if spent <= allowance.value:
            return p
        j += max(1, int(4 * math.log2(spent / allowance.value)) - 1)
    return None


def candidate_wsd_designs(base: SweepSpec, prior: Prior, allowance: Allowance, pricing: Pricing, ceiling: float, *,
                          n_budgets: Sequence[int] = (3, 4), ratios: Sequence[float] = (4.0,),
                          margins: Sequence[int] = (1, 2), strides: Sequence[int] = (1, 2),
                          spans: Sequence[float] = (8.0, 16.0), horizons: Sequence[int] = (5,),
                          min_steps: float = 0.0, cooldown_frac: float | None = None) -> list[DesignPoints]:
    """Every affordable member of the WSD family (module docstring), top budget at most
    ``ceiling``; the cooldown share is the base grid's where it is a ``wsd_branches`` grid."""
    shapes = ladder(base)
    cooldown = cooldown_frac or float(getattr(base.grid, "cooldown_frac", COOLDOWN_FRAC))
    out, seen = [], set()
    for shape in itertools.product(n_budgets, ratios, margins, strides, spans, horizons):
        p = _affordable_wsd(base, prior, shapes, allowance, pricing, ceiling, shape, min_steps, cooldown)
        if p is not None and (p.design.sizes, p.design.tokens) not in seen:
            seen.add((p.design.sizes, p.design.tokens))
            out.append(p)
    return out
