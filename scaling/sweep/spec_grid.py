"""The grid section of a sweep spec (and the sizes it names): IsoFLOP budgets x sizes, Kaplan's N-
and D-sweeps, WSD trunks with cooldown branches, an explicit list of runs, with the adaptive
extension's caps and the repeated seeds of an IsoFLOP grid. :mod:`scaling.sweep.spec` assembles
them into a :class:`~scaling.sweep.spec.SweepSpec`.

Pure: pydantic only.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, model_validator

from scaling.runspec import StrictModel

# ---- sizes and the model family ------------------------------------------------------------------


class ShapeSize(StrictModel):
    """An explicit shape; fields left out come from ``model`` (vocab, seq_len, tied...)."""

    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int | None = Field(default=None, gt=0)
    ffn: int | None = Field(default=None, gt=0)
    head_dim: int | None = Field(default=None, gt=0)


Size = Annotated[float, Field(gt=0)] | ShapeSize


# ---- grids ---------------------------------------------------------------------------------------


class AroundOptimum(StrictModel):
    """``k`` sizes spread evenly in log space over ``[N*/sqrt(spread), N* sqrt(spread)]``; or, when
    the grid also lists ``sizes`` (a ladder), the ``k`` consecutive ladder sizes centred on N*.

    ``centre``: where N*(C) comes from: ``planner`` (``scaling.planner`` with ``law``) or
    ``tokens_per_param`` (``N* = sqrt(C / (6 r))``, i.e. D/N = r at the optimum; counted as
    ``model.count`` says).
    """

    k: int = Field(default=5, ge=2)
    spread: float = Field(default=8.0, gt=1)
    centre: Literal["planner", "tokens_per_param"] = "planner"
    law: str = "chinchilla"
    tokens_per_param: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> AroundOptimum:
        if self.centre == "tokens_per_param" and self.tokens_per_param is None:
            raise ValueError("centre 'tokens_per_param' needs tokens_per_param: e.g. 20 (Chinchilla)")
        return self


class Extend(StrictModel):
    """Adaptive IsoFLOP sweeps: sizes added where a budget's minimum is not bracketed.

    A budget is extended toward a side when its lowest loss is at that edge of the sizes run, the
    parabola's vertex lies beyond that edge, or the vertex lies within one ladder step of it (only
    one size on that side of the minimum). The next size of the ladder beyond the edge is run, the
    budget refitted, and so on, until every budget is bracketed or a cap is reached:
    ``per_budget`` runs added at one budget, ``max_added`` in the whole study (0 turns it off).
    The ladder is ``grid.sizes`` (with ``sizes_per_budget``: every size listed); a grid built
    from ``around_optimum`` alone continues its own log spacing. ``scaling run`` extends with
    these defaults when ``extend`` is absent; ``extend: {max_added: 0}`` turns it off.
    """

    max_added: int = Field(default=8, ge=0)
    per_budget: int = Field(default=2, ge=0)


class Repeats(StrictModel):
    """Repeated seeds, to measure run-to-run noise: each chosen point is run again once per seed
    in ``seeds`` (beside the runs of ``train.seeds``).

    ``at``: ``optimum``, each budget's best size once the sweep (and its extension) is done;
    ``largest`` or ``smallest``, each budget's largest or smallest size (its shortest and its
    longest run); a list of these, their union (``[optimum, largest]``: runs with few tokens per
    parameter can be far noisier than the optimum, and a noise measured at both fits its trend in
    tokens per parameter); or ``all``, every size of every budget. The spread of the final losses
    across seeds is the noise the fits weight by (``fit/noise.json``).
    """

    seeds: list[int] = Field(min_length=1)
    at: Literal["optimum", "largest", "smallest", "all"] | list[Literal["optimum", "largest", "smallest"]] = "optimum"

    @property
    def points(self) -> list[str]:
        """``at`` as a list of the points chosen at each budget (``["all"]`` for every size)."""
        return [self.at] if isinstance(self.at, str) else list(dict.fromkeys(self.at))

    @model_validator(mode="after")
    def _some_point(self) -> Repeats:
        if not self.points:
            raise ValueError("at: name at least one of optimum, largest, smallest (or all)")
        return self


class IsoflopGrid(StrictModel):
    """Budgets x sizes; each run gets ``D = C / (FLOPs per token)`` under ``train.flops_convention``.

    ``extend`` (:class:`Extend`) and ``repeats`` (:class:`Repeats`) make the sweep add runs once
    the grid's own runs are done."""

    kind: Literal["isoflop"]
    budgets: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(min_length=1)
    sizes: list[Size] | None = None
    sizes_per_budget: dict[float, list[Size]] | None = None
    around_optimum: AroundOptimum | None = None
    extend: Extend = Extend()
    repeats: Repeats | None = None

    @model_validator(mode="after")
    def _one_source(self) -> IsoflopGrid:
        given = [n for n in ("sizes", "sizes_per_budget", "around_optimum") if getattr(self, n) is not None]
        ladder = given == ["sizes", "around_optimum"]
        if len(given) != 1 and not ladder:
            raise ValueError(
                "give one of sizes, sizes_per_budget or around_optimum (or sizes as a ladder with around_optimum)"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if ladder and self.around_optimum is not None and len(self.sizes or []) < self.around_optimum.k:
            raise ValueError(f"sizes: the ladder has {len(self.sizes or [])} sizes, fewer than around_optimum.k={self.around_optimum.k}")
        if self.sizes_per_budget is not None:
            missing = [b for b in self.budgets if not any(math.isclose(b, k, rel_tol=1e-9) for k in self.sizes_per_budget)]
            if missing:
                raise ValueError(f"sizes_per_budget has no entry for budget(s) {missing}")
        return self


class KaplanNGrid(StrictModel):
    """Sizes at a fixed token count (Kaplan et al. 2020, fig. 1 middle: L(N) at large D)."""

    kind: Literal["kaplan_n"]
    sizes: list[Size] = Field(min_length=1)
    tokens: int = Field(gt=0)


class KaplanDGrid(StrictModel):
    """Token counts at a fixed size (Kaplan et al. 2020, L(D))."""

    kind: Literal["kaplan_d"]
    size: Size
    tokens: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)


class WsdGrid(StrictModel):
    """One constant-LR trunk per size, with a cooldown branch ending at each token count.

    Branch ``T`` starts from the trunk's checkpoint at ``(1 - cooldown_frac) T`` and decays the
    LR over its last ``cooldown_frac T`` tokens (Hägele et al. 2024, "Scaling Laws and
    Compute-Optimal Training Beyond Fixed Training Durations"): one trunk gives a whole L(D)
    curve for the price of one run plus the cooldowns.
    """

    kind: Literal["wsd_branches"]
    sizes: list[Size] = Field(min_length=1)
    tokens: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)
    cooldown_frac: float = Field(default=0.2, gt=0, lt=1)
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = "1-sqrt"


class RunEntry(StrictModel):
    """One explicit run: a size and either ``tokens`` or a FLOP ``budget``; optional overrides."""

    size: Size
    tokens: int | None = Field(default=None, gt=0)
    budget: float | None = Field(default=None, gt=0)
    name: str | None = None
    lr: float | None = Field(default=None, gt=0)
    batch_tokens: int | None = Field(default=None, gt=0)
    seed: int | None = None

    @model_validator(mode="after")
    def _one(self) -> RunEntry:
        if (self.tokens is None) == (self.budget is None):
            raise ValueError("give exactly one of tokens or budget")
        return self


class RunsGrid(StrictModel):
    kind: Literal["runs"]
    runs: list[RunEntry] = Field(min_length=1)


Grid = Annotated[IsoflopGrid | KaplanNGrid | KaplanDGrid | WsdGrid | RunsGrid, Field(discriminator="kind")]
GRID_KINDS = ("isoflop", "kaplan_n", "kaplan_d", "wsd_branches", "runs")
