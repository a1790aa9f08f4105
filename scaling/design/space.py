"""Designs of an IsoFLOP sweep, their runs and cost, and the family a search ranges over.

A :class:`Design` is a set of budgets and, for each, a window of sizes from the spec's ladder
(``grid.sizes``), written as an ``isoflop`` grid with ``sizes_per_budget``. Its runs are exactly
those :func:`scaling.sweep.grid.expand` gives that spec (whole batches, the spec's batch and LR
rules), so its cost is the sweep planner's: FLOPs under ``train.flops_convention``; seconds on this
machine from a :class:`~scaling.timing.TimingModel` packed onto the sweep's parallel slots
(:func:`scaling.timing.pack`, as ``scaling sweep plan`` estimates); or GPU-hours at a GPU's peak and
an MFU (:func:`scaling.hardware.gpu_hours` of the runs' matmul FLOPs).

The family: ``n`` budgets spaced ``ratio`` apart, for each the ``k`` ladder sizes (every
``stride``-th) centred on the ladder size the prior puts lowest at that budget, and the largest top
budget (on a grid of quarter-octaves below the target) whose cost fits the allowance; with or
without ``repeats`` extra seeds at chosen points of each budget (``grid.repeats``: its optimum, or
its optimum and its largest size, where runs have the fewest tokens per parameter and the most
noise), whose runs are priced in, so a repeated design has a lower top budget than the same design
without. The WSD-branch family is :mod:`scaling.design.wsd`.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from scaling.design.prior import Prior
from scaling.errors import UsageError
from scaling.flops import flops_per_token
from scaling.hardware import DEFAULT_MFU, get_gpu, gpu_hours
from scaling.runspec import RunSpec
from scaling.shapes import ModelShape
from scaling.sweep.grid import batch_tokens_for, expand, isoflop_run, resolve_size
from scaling.sweep.spec import ShapeSize, SweepSpec
from scaling.timing import TimingModel, pack, waits_for

UNITS = {"flops": "FLOPs", "seconds": "s", "gpu_hours": "GPU-hours"}
REPEAT_AT: tuple[tuple[str, ...], ...] = (("optimum",), ("optimum", "largest"))
"""Where a repeated design repeats in each budget: the optimum (the quietest runs), or the optimum
and the largest size (the fewest tokens per parameter: the noisiest, and with the optimum a span
of tokens per parameter that the noise's trend is fitted on)."""


@dataclass(frozen=True)
class Allowance:
    """What the sweep may spend: ``value`` in ``kind`` (``flops``, ``seconds`` on this machine, ``gpu_hours``)."""

    kind: str
    value: float

    def describe(self) -> str:
        if self.kind == "seconds":
            return f"{self.value / 60:.3g} min on this machine"
        return f"{self.value:.3g} {UNITS[self.kind]}"


_ALLOWANCE = re.compile(r"^\s*([0-9.]+(?:e[+-]?[0-9]+)?)\s*(flops?|min|m|s|h|gpuh|gpu-hours?)?\s*$", re.IGNORECASE)


def parse_allowance(text: str) -> Allowance:
    """``4e12`` or ``4e12flops`` (FLOPs), ``12min`` / ``90s`` / ``1h`` (wall time here), ``200gpuh``."""
    m = _ALLOWANCE.match(str(text))
    value = float(m.group(1)) if m else math.nan
    if not m or not (math.isfinite(value) and value > 0):
        raise UsageError(f"--allowance {text!r}: give FLOPs (4e12), minutes on this machine (12min) or GPU-hours (200gpuh)")
    unit = (m.group(2) or "flops").lower()
    if unit.startswith("flop"):
        return Allowance("flops", value)
    if unit.startswith("gpu"):
        return Allowance("gpu_hours", value)
    return Allowance("seconds", value * {"min": 60.0, "m": 60.0, "s": 1.0, "h": 3600.0}[unit])


@dataclass(frozen=True)
class Pricing:
    """How a design's runs are costed: the timing model and parallel slots for wall time here,
    the GPU and MFU for GPU-hours."""

    timing: TimingModel | None = None
    slots: int = 1
    gpu: str = "h100"
    mfu: float = DEFAULT_MFU

    def cost(self, runs: Sequence[RunSpec]) -> dict[str, float | None]:
        """What ``runs`` spend, as the sweep planner counts it: the steps each trains (a WSD
        branch its cooldown, from its trunk's checkpoint; :attr:`RunSpec.trained_steps`)."""
        flops = float(sum(r.trained_flops() for r in runs))
        matmul = float(sum(r.trained_steps * r.batch_tokens * flops_per_token(r.model_shape, "matmul") for r in runs))
        seconds = (pack([self.timing.run_seconds(r) for r in runs], self.slots, after=waits_for(runs))
                   if self.timing is not None else None)
        return {"flops": flops, "seconds": seconds, "gpu_hours": gpu_hours(matmul, get_gpu(self.gpu), self.mfu)}

    def spent(self, runs: Sequence[RunSpec], allowance: Allowance) -> float:
        value = self.cost(runs)[allowance.kind]
        if value is None:
            raise UsageError("--allowance in minutes needs this machine's timing model; give FLOPs or GPU-hours instead")
        return float(value)


@dataclass(frozen=True)
class Design:
    """Budgets (ascending) and, for each, the ladder indices of its sizes; ``repeats`` extra seeds
    at the points ``repeat_at`` names in each budget (``grid.repeats: {seeds, at}``; 0: none)."""

    budgets: tuple[float, ...]
    sizes: tuple[tuple[int, ...], ...]
    label: str = ""
    repeats: int = 0
    family: str = "isoflop"
    repeat_at: tuple[str, ...] = ("optimum",)

    @property
    def where_repeated(self) -> str:
        """``repeat_at`` in words: "each optimum", "each optimum and largest size"."""
        names = {"optimum": "optimum", "largest": "largest size", "smallest": "smallest size"}
        return "every size" if self.repeat_at == ("all",) else "each " + " and ".join(names[a] for a in self.repeat_at)

    def describe(self) -> str:
        k = sorted({len(s) for s in self.sizes})
        span = self.budgets[-1] / self.budgets[0]
        rep = f", {self.repeats} repeat seed(s) at {self.where_repeated}" if self.repeats else ""
        return (f"{len(self.budgets)} budgets {self.budgets[0]:.3g}..{self.budgets[-1]:.3g} ({span:.3g}x), "
                f"{'/'.join(map(str, k))} sizes each, {sum(len(s) for s in self.sizes)} runs{rep}")


@dataclass(frozen=True, eq=False)
class DesignPoints:
    """A design's runs and cost, and the points its fits see as arrays: budget (0 for a run
    without one), N (total and non-embedding), D, C, and the trunk each point shares (-1: none).

    ``runs`` are what the written spec expands to; ``added`` the runs the sweep adds after them
    (the repeated seeds), priced and fitted too; a WSD trunk is priced but not fitted (its loss
    is at a constant LR, no cooldown)."""

    design: Any  # Design or scaling.design.wsd.WsdDesign
    spec: SweepSpec
    runs: tuple[RunSpec, ...]
    cost: dict[str, float | None] = field(default_factory=dict)
    added: tuple[RunSpec, ...] = ()

    @property
    def priced(self) -> tuple[RunSpec, ...]:
        """Every run the design spends on: the spec's and the ones the sweep adds."""
        return (*self.runs, *self.added)

    @property
    def fitted(self) -> tuple[RunSpec, ...]:
        trunks = {r.branch_of for r in self.runs if r.branch_of is not None}
        return tuple(r for r in (*self.runs, *self.added) if r.run_id not in trunks)

    @property
    def budget(self) -> np.ndarray:
        return np.array([float(r.budget or 0.0) for r in self.fitted])

    def params(self, count: str) -> np.ndarray:
        return np.array([float(r.non_embedding_params if count == "non_embedding" else r.params) for r in self.fitted])

    @property
    def tokens(self) -> np.ndarray:
        return np.array([float(r.steps * r.batch_tokens) for r in self.fitted])

    @property
    def flops(self) -> np.ndarray:
        return np.array([r.flops() for r in self.fitted])

    @property
    def trunk(self) -> np.ndarray:
        """The index of the trunk each point branches from (-1: its own run)."""
        ids = sorted({r.branch_of for r in self.fitted if r.branch_of is not None})
        return np.array([ids.index(r.branch_of) if r.branch_of is not None else -1 for r in self.fitted])

    @property
    def has_repeats(self) -> bool:
        return bool(self.added)


def ladder(base: SweepSpec) -> list[ModelShape]:
    """The sizes the spec names (an isoflop grid's ``sizes``, or every size of its
    ``sizes_per_budget``; a ``wsd_branches`` grid's ``sizes``) as shapes, ascending in N as
    ``model.count`` counts it."""
    g = base.grid
    named: list[tuple[Any, str]] = []
    if g.kind == "isoflop" and g.sizes:
        named = [(x, base.where("grid", "sizes", i)) for i, x in enumerate(g.sizes)]
    elif g.kind == "isoflop" and g.sizes_per_budget:
        named = [(x, base.where("grid", "sizes_per_budget", c, i)) for c, xs in g.sizes_per_budget.items() for i, x in enumerate(xs)]
    elif g.kind == "wsd_branches":
        named = [(x, base.where("grid", "sizes", i)) for i, x in enumerate(g.sizes)]
    shapes = {resolve_size(x, base.model, where) for x, where in named}
    if len(shapes) < 3:
        raise UsageError(f"{base.where('grid')}: a design needs an isoflop (or wsd_branches) grid whose grid.sizes lists "
                         "a ladder of 3 or more sizes to choose from (e.g. sweeps/quickstart.yaml)")
    return sorted(shapes, key=lambda s: (s.count(base.model.count), s.layers))


def design_mapping(base: SweepSpec, design: Design, shapes: Sequence[ModelShape], name: str | None = None) -> dict[str, Any]:
    """The spec as written: ``base`` as its file gave it, the grid replaced by the design
    (``isoflop`` with ``sizes_per_budget``; each shape one object, so YAML writes it once and
    aliases it after), keeping the base grid's ``extend``; ``repeats`` are the design's (priced),
    not the base's."""
    d = base.model_dump(mode="json", exclude_unset=True)
    objs = {i: ShapeSize(layers=shapes[i].layers, hidden=shapes[i].hidden, heads=shapes[i].heads,
                         kv_heads=shapes[i].kv_heads, ffn=shapes[i].ffn).model_dump(mode="json", exclude_none=True)
            for idx in design.sizes for i in idx}
    per_budget = {float(c): [objs[i] for i in idx] for c, idx in zip(design.budgets, design.sizes, strict=True)}
    kept = {k: v for k, v in d.get("grid", {}).items() if k == "extend"}  # the base's own adaptive settings
    if design.repeats:
        at = list(design.repeat_at)
        kept["repeats"] = {"seeds": repeat_seeds(base, design.repeats), "at": at[0] if len(at) == 1 else at}
    d["grid"] = {"kind": "isoflop", "budgets": [float(c) for c in design.budgets], "sizes_per_budget": per_budget, **kept}
    if name:
        d["name"] = name
    return d


def design_spec(base: SweepSpec, design: Design, shapes: Sequence[ModelShape], name: str | None = None) -> SweepSpec:
    """``base`` with its grid replaced by the design (:func:`design_mapping`), validated."""
    return SweepSpec.model_validate(design_mapping(base, design, shapes, name))


def repeat_seeds(base: SweepSpec, n: int) -> list[int]:
    """``n`` seeds beside ``train.seeds``: the next integers after the largest."""
    top = max(base.train.seeds)
    return [top + 1 + i for i in range(n)]


def repeated_indices(idx: Sequence[int], best: int, at: Sequence[str]) -> list[int]:
    """The ladder indices of one budget that ``grid.repeats.at`` names, each once, ascending, with
    ``best`` standing for the optimum (the sweep's own choice: :func:`scaling.sweep.extend._repeated_points`)."""
    if list(at) == ["all"]:
        return sorted(idx)
    pick = {"optimum": best, "largest": max(idx), "smallest": min(idx)}
    return sorted({pick[a] for a in at})


def repeat_runs(spec: SweepSpec, design: Design, shapes: Sequence[ModelShape], prior: Prior | None) -> tuple[RunSpec, ...]:
    """The runs ``grid.repeats`` will add: its seeds at the points it names in each budget, the
    optimum priced at the size the prior puts lowest there (the sweep repeats the observed best;
    at one budget every size costs the same FLOPs)."""
    if not design.repeats or prior is None:
        return ()
    rep = spec.grid.repeats  # type: ignore[union-attr]
    conv = spec.train.flops_convention
    out = []
    for c, idx in zip(design.budgets, design.sizes, strict=True):
        best = min(idx, key=lambda i: float(prior.log_loss(np.array([shapes[i].count(prior.param_convention)], float),
                                                         np.array([c / flops_per_token(shapes[i], conv)]))[0]))
        out += [isoflop_run(spec, c, shapes[i], seed, added="repeat")
                for i in repeated_indices(idx, best, rep.points) for seed in rep.seeds]
    return tuple(out)


def points(base: SweepSpec, design: Design, shapes: Sequence[ModelShape], pricing: Pricing,
           prior: Prior | None = None) -> DesignPoints:
    """The design's runs (and, with ``prior``, the repeats it adds) and their cost."""
    spec = design_spec(base, design, shapes)
    runs = tuple(expand(spec))
    added = repeat_runs(spec, design, shapes, prior)
    return DesignPoints(design, spec, runs, pricing.cost(runs + added), added)


def prior_best(prior: Prior, shapes: Sequence[ModelShape], budget: float, convention: str) -> int:
    """The ladder index with the lowest prior loss at ``budget`` (D = C / FLOPs per token)."""
    n = np.array([s.count(prior.param_convention) for s in shapes], float)
    d = np.array([budget / flops_per_token(s, convention) for s in shapes])
    return int(np.argmin(prior.log_loss(n, d)))


def window(centre: int, k: int, stride: int, size: int) -> tuple[int, ...] | None:
    """``k`` ladder indices ``stride`` apart around ``centre``, moved inward to fit the ladder;
    None when ``centre`` would be at the window's edge (no interior minimum to find)."""
    span = (k - 1) * stride
    lo = centre - (k // 2) * stride
    lo = max(0, min(lo, size - 1 - span))
    idx = tuple(range(lo, lo + span + 1, stride))
    if lo < 0 or idx[-1] >= size or not (idx[0] < centre < idx[-1]):
        return None
    return idx


def _steps(base: SweepSpec, shape: ModelShape, budget: float) -> float:
    """Optimizer steps of a run of ``shape`` at ``budget`` (as :func:`~scaling.sweep.grid.expand` counts them)."""
    tokens = budget / flops_per_token(shape, base.train.flops_convention)
    return tokens / batch_tokens_for(base.train.batch, shape, tokens)


def _design(base: SweepSpec, prior: Prior, shapes: Sequence[ModelShape], top: float, n: int, ratio: float,
            k: int, stride: int, min_steps: float = 0.0, repeats: int = 0,
            repeat_at: tuple[str, ...] = ("optimum",)) -> Design | None:
    """``n`` budgets up to ``top``; each the window of ``k`` sizes around the prior's best, less
    the sizes whose runs would take fewer than ``min_steps`` steps (None if that leaves fewer than
    ``min(k, 5)`` sizes or the best at an edge)."""
    budgets = tuple(top / ratio ** (n - 1 - i) for i in range(n))
    conv = base.train.flops_convention
    sizes = []
    for c in budgets:
        best = prior_best(prior, shapes, c, conv)
        idx = window(best, k, stride, len(shapes))
        if idx is None:
            return None
        idx = tuple(i for i in idx if _steps(base, shapes[i], c) >= min_steps)
        if len(idx) < min(k, 5) or not idx[0] < best < idx[-1]:
            return None
        sizes.append(idx)
    label = f"{n}x{k} ratio {ratio:g} stride {stride}" + (f" min {min_steps:g} steps" if min_steps else "")
    design = Design(budgets, tuple(sizes), label, repeats, repeat_at=repeat_at)
    return replace(design, label=label + (f" +{repeats} seeds at {design.where_repeated}" if repeats else ""))


def _affordable(base: SweepSpec, prior: Prior, shapes: Sequence[ModelShape], allowance: Allowance, pricing: Pricing,
                ceiling: float, n: int, ratio: float, k: int, stride: int, min_steps: float = 0.0,
                repeats: int = 0, repeat_at: tuple[str, ...] = ("optimum",),
                start: int = 0) -> tuple[DesignPoints, int] | None:
    """The design of this shape with the largest top budget ``ceiling / 2^(j/4)``, ``j >= start``,
    that fits, and its ``j``."""
    for j in range(start, 81):  # down 20 octaves at most; cost falls with the top budget
        d = _design(base, prior, shapes, ceiling * 2 ** (-j / 4), n, ratio, k, stride, min_steps, repeats, repeat_at)
        if d is None:
            continue
        try:
            p = points(base, d, shapes, pricing, prior)
        except UsageError:  # a run below one batch: smaller budgets only get worse
            break
        if pricing.spent(p.priced, allowance) <= allowance.value:
            return p, j
    return None


def candidate_designs(base: SweepSpec, prior: Prior, allowance: Allowance, pricing: Pricing, ceiling: float, *,
                      n_budgets: Sequence[int] = (3, 4, 5, 6, 7, 8), ratios: Sequence[float] = (2.0, 4.0),
                      ks: Sequence[int] = (3, 5, 7), strides: Sequence[int] = (1, 2),
                      min_steps: float = 0.0, repeats: Sequence[int] = (0, 1, 2),
                      repeat_at: Sequence[tuple[str, ...]] = REPEAT_AT) -> list[DesignPoints]:
    """Every affordable member of the family (module docstring), top budget at most ``ceiling``;
    each with ``repeats`` extra seeds (0: none) at each choice of ``repeat_at`` in every budget,
    its runs priced in. A variant that adds runs to another (more seeds, or more points repeated)
    costs at least as much, so its search for a top budget starts where that one's ended."""
    shapes = ladder(base)
    out = []
    for n, ratio, k, stride in itertools.product(n_budgets, ratios, ks, strides):
        found: dict[tuple[int, frozenset[str]], int] = {}
        for r in sorted(repeats):
            for at in repeat_at if r else [("optimum",)]:
                key = (r, frozenset(at) if r else frozenset())
                start = max((j for (r0, at0), j in found.items() if r0 <= r and at0 <= key[1]), default=0)
                got = _affordable(base, prior, shapes, allowance, pricing, ceiling, n, ratio, k, stride, min_steps,
                                  r, at, start)
                if got is not None:
                    out.append(got[0])
                    found[key] = got[1]
    return out


def plain_design(base: SweepSpec, prior: Prior, allowance: Allowance, pricing: Pricing, ceiling: float,
                 min_steps: float = 0.0) -> DesignPoints:
    """The standard grid of the same allowance: 4 budgets 2x apart, 5 consecutive ladder sizes each."""
    got = _affordable(base, prior, ladder(base), allowance, pricing, ceiling, 4, 2.0, 5, 1, min_steps)
    if got is None:
        raise UsageError(f"--allowance {allowance.describe()}: not even a 4x5 grid fits it on this ladder; "
                         "raise the allowance or add sizes to grid.sizes")
    return got[0]


def spec_points(spec: SweepSpec, pricing: Pricing) -> DesignPoints:
    """A spec's own IsoFLOP grid as a design (e.g. a finished study's ``sweep.yaml``), to predict
    its widths beside what its fits gave."""
    shapes = ladder(spec)
    runs = tuple(r for r in expand(spec) if r.budget is not None)
    budgets = tuple(sorted({float(r.budget) for r in runs if r.budget is not None}))
    def key(s: ModelShape) -> tuple[int, ...]:
        return (s.layers, s.hidden, s.heads, s.n_kv_heads, s.d_ffn)

    index = {key(s): i for i, s in enumerate(shapes)}
    sizes = tuple(tuple(sorted({index[key(r.model_shape)] for r in runs if r.budget == c})) for c in budgets)
    return DesignPoints(Design(budgets, sizes, f"the grid of {spec.name}"), spec, runs, pricing.cost(runs))


def design_points(base: SweepSpec, design: Design, pricing: Pricing, prior: Prior | None = None) -> DesignPoints:
    """The runs and cost of a given design on ``base``'s ladder (its repeats with ``prior``)."""
    return points(base, design, ladder(base), pricing, prior)
