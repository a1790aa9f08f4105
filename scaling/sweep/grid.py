"""Expand a :class:`SweepSpec` into :class:`RunSpec` s, deterministically.

The same spec always gives the same runs in the same order (budgets ascending, then sizes
ascending, then seeds), and each run's ``run_id`` hashes its resolved config, so a relaunch finds
the runs it already has.

Token counts are whole batches: an IsoFLOP run gets ``D = round(C / (f B)) B`` tokens, ``f`` the
FLOPs per token under ``train.flops_convention`` and ``B`` the batch in tokens, so every run of a
budget spends ``C`` within half a batch.

Pure: imports the math modules only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from scaling.errors import UsageError
from scaling.flops import flops_per_token
from scaling.laws.deepseek import deepseek_batch_tokens, deepseek_lr
from scaling.runspec import OptimizerSpec, RunSpec, ScheduleSpec, ShapeSpec
from scaling.shapes import LadderRule, ModelShape, ShapeError, shape_for_params
from scaling.sweep.spec import (
    AroundOptimum,
    BatchRule,
    IsoflopGrid,
    KaplanDGrid,
    KaplanNGrid,
    LrRule,
    ModelSettings,
    RunsGrid,
    ShapeSize,
    SweepSpec,
    WsdGrid,
)


def deepseek_compute(shape: ModelShape, tokens: float) -> float:
    """DeepSeek's ``C = M D`` with ``M = 72 L d^2 + 6 L d T`` (eq. 2), i.e. our ``kaplan`` FLOPs per token."""
    return flops_per_token(shape, "kaplan") * float(tokens)


def ladder_rule(model: ModelSettings) -> LadderRule:
    return LadderRule(
        aspect_ratio=model.aspect_ratio,
        head_dim=model.head_dim,
        kv_ratio=model.kv_ratio,
        hidden_multiple=model.hidden_multiple,
        ffn_multiple=model.ffn_multiple,
        min_layers=model.min_layers,
        max_layers=model.max_layers,
        tied=model.tied,
    )


def resolve_size(size: float | ShapeSize, model: ModelSettings, where: str = "grid size") -> ModelShape:
    """A numeric size (parameters counted as ``model.count``) or an explicit shape -> ModelShape.

    ``where`` names the size in errors (``quickstart.yaml:21: grid.sizes.3``)."""
    try:
        if isinstance(size, ShapeSize):
            return ModelShape(**size.model_dump(), vocab=model.vocab, seq_len=model.seq_len, tied=model.tied,
                              qkv_bias=model.qkv_bias, glu=model.glu)
        s = shape_for_params(size, vocab=model.vocab, seq_len=model.seq_len, count=model.count, rule=ladder_rule(model))
        return s.replace(qkv_bias=model.qkv_bias, glu=model.glu) if (model.qkv_bias or not model.glu) else s
    except ShapeError as e:
        raise UsageError(f"{where}: {e}") from None


def centre_params(budget: float, around: AroundOptimum, model: ModelSettings, convention: str) -> float:
    """N*(C), counted as ``model.count``: from ``tokens_per_param`` or from the planner's law."""
    if around.centre == "tokens_per_param":
        # C = k N D with D = r N  =>  N = sqrt(C / (k r)), k the FLOPs per parameter per token (6)
        return math.sqrt(budget / (6.0 * float(around.tokens_per_param or 20.0)))
    return _planner_centre(budget, around.law, model)


def _planner_centre(budget: float, law: str, model: ModelSettings) -> float:
    from scaling.planner import plan

    try:
        p = plan(flops=budget, law=law, vocab=model.vocab, seq_len=model.seq_len, with_shape=False)
    except ValueError as e:
        raise UsageError(f"grid.around_optimum.law={law!r}: {e}") from None
    if p.param_convention == model.count:
        return float(p.params)
    shape = shape_for_params(p.params, vocab=model.vocab, seq_len=model.seq_len, count=p.param_convention, rule=ladder_rule(model))
    return float(shape.count(model.count))


def sizes_around(budget: float, around: AroundOptimum, model: ModelSettings, convention: str) -> list[ModelShape]:
    """``k`` shapes log-spaced over ``N* / sqrt(spread) .. N* sqrt(spread)`` (duplicates dropped)."""
    centre = centre_params(budget, around, model, convention)
    half = math.log(around.spread) / 2
    targets = [centre * math.exp(-half + 2 * half * i / (around.k - 1)) for i in range(around.k)]
    out: list[ModelShape] = []
    for t in targets:
        s = resolve_size(t, model, f"grid.around_optimum: size {t:.4g}")
        if s not in out:
            out.append(s)
    return out


def ladder_window(budget: float, around: AroundOptimum, ladder: list[ModelShape], model: ModelSettings,
                  convention: str) -> list[ModelShape]:
    """The ``k`` consecutive sizes of ``ladder`` (sorted by parameter count) centred on N*(C)."""
    centre = centre_params(budget, around, model, convention)
    ordered = sorted(set(ladder), key=lambda s: s.count(model.count))
    i = min(range(len(ordered)), key=lambda j: abs(math.log(ordered[j].count(model.count) / centre)))
    lo = max(0, min(i - around.k // 2, len(ordered) - around.k))
    return ordered[lo : lo + around.k]


def _nearest(table: dict[float, float], n: float) -> float:
    key = min(table, key=lambda k: abs(math.log(k / n)))
    return table[key]


def batch_tokens_for(rule: BatchRule, shape: ModelShape, tokens_estimate: float) -> int:
    """Tokens per step under ``rule``, a whole number of sequences."""
    seq = shape.seq_len
    if rule.rule == "fixed":
        b = float(rule.tokens or seq)
    elif rule.rule == "deepseek":
        b = deepseek_batch_tokens(deepseek_compute(shape, tokens_estimate))
    else:
        b = float(_nearest({float(k): float(v) for k, v in (rule.table or {}).items()}, shape.params))
    if rule.min_tokens:
        b = max(b, rule.min_tokens)
    if rule.max_tokens:
        b = min(b, rule.max_tokens)
    m = rule.sequences_multiple
    return max(1, round(b / seq / m)) * m * seq


def lr_for(rule: LrRule, shape: ModelShape, tokens: float, count: str) -> float:
    if rule.rule == "fixed":
        return float(rule.value or 0)
    if rule.rule == "inverse_width":
        lr = float(rule.scale or 0) / shape.hidden
        return min(lr, rule.max) if rule.max else lr
    if rule.rule == "deepseek":
        lr = deepseek_lr(deepseek_compute(shape, tokens))
        return min(lr, rule.max) if rule.max else lr
    return float(_nearest({float(k): float(v) for k, v in (rule.table or {}).items()}, shape.count(count)))


# ---- expansion ---------------------------------------------------------------------------------


def _tag(shape: ModelShape) -> str:
    return f"L{shape.layers}H{shape.hidden}"


def _g(x: float) -> str:
    return f"{x:.3g}".replace("+", "")


class _Builder:
    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec
        self.t = spec.train

    def run(self, shape: ModelShape, tokens: float, *, name: str, budget: float | None = None,
            group: str | None = None, seed: int = 0, lr: float | None = None, batch: int | None = None,
            schedule: ScheduleSpec | None = None, checkpoint_every: int | None = None,
            branch_of: str | None = None, branch_from_tokens: int | None = None,
            whole_batches: bool = True) -> RunSpec:
        t = self.t
        b = batch or batch_tokens_for(t.batch, shape, tokens)
        # a budget is spent within half a batch; tokens a spec gives are at least one batch, as `scaling train` asks
        if tokens < (b / 2 if budget is not None else b):
            what = f"budget {budget:.3g} buys {tokens:.0f} tokens," if budget is not None else f"tokens={tokens:.0f} is"
            raise UsageError(
                f"{self.spec.where('grid')}: run {name}: {what} less than one batch of {b} tokens "
                "(train.batch); raise the tokens or lower the batch"
            )
        d = max(1, round(tokens / b)) * b if whole_batches else int(tokens)
        try:
            return RunSpec(
                shape=ShapeSpec.from_shape(shape),
                tokens=d,
                batch_tokens=b,
                micro_batch=t.micro_batch,
                optimizer=OptimizerSpec(lr=lr or lr_for(t.lr, shape, d, self.spec.model.count), **t.optimizer.model_dump()),
                schedule=schedule or t.schedule,
                data=self.spec.data,
                seed=seed,
                init_std=t.init_std,
                eval_every=t.eval_every,
                eval_tokens=t.eval_tokens,
                checkpoint_every=checkpoint_every or t.checkpoint_every,
                backend=self.spec.backend,
                backend_options=dict(self.spec.backend_options),
                branch_of=branch_of,
                branch_from_tokens=branch_from_tokens,
                name=name if len(t.seeds) == 1 else f"{name}_s{seed}",
                budget=budget,
                group=group,
                flops_convention=t.flops_convention,
            )
        except ValueError as e:
            raise UsageError(f"run {name}: {e}") from None

    def seeds(self) -> Iterable[int]:
        return self.t.seeds


def _isoflop(spec: SweepSpec, g: IsoflopGrid, b: _Builder) -> list[RunSpec]:
    conv = spec.train.flops_convention
    out: list[RunSpec] = []
    for budget in sorted(g.budgets):
        if g.around_optimum is not None and g.sizes is not None:
            shapes = ladder_window(budget, g.around_optimum, [resolve_size(x, spec.model, spec.where('grid', 'sizes', i)) for i, x in enumerate(g.sizes)], spec.model, conv)
        elif g.around_optimum is not None:
            shapes = sizes_around(budget, g.around_optimum, spec.model, conv)
        else:
            sizes, path = g.sizes, ("grid", "sizes")
            if g.sizes_per_budget is not None:
                sizes = next(v for k, v in g.sizes_per_budget.items() if math.isclose(k, budget, rel_tol=1e-9))
                path = ("grid", "sizes_per_budget")
            shapes = [resolve_size(s, spec.model, spec.where(*path, i)) for i, s in enumerate(sizes or [])]
        for shape in sorted(set(shapes), key=lambda s: (s.count(spec.model.count), s.layers)):
            out.extend(isoflop_run(spec, budget, shape, seed, builder=b) for seed in b.seeds())
    return out


def isoflop_run(spec: SweepSpec, budget: float, shape: ModelShape, seed: int, *, added: str | None = None,
                builder: _Builder | None = None) -> RunSpec:
    """The run of ``shape`` at ``budget`` (``D = C / (FLOPs per token)``, whole batches), as the
    grid makes it; ``added`` labels a run the sweep added after its grid (its name then ends in
    ``_s<seed>`` when the seed is not one of ``train.seeds``)."""
    b = builder or _Builder(spec)
    d = budget / flops_per_token(shape, spec.train.flops_convention)
    batch = batch_tokens_for(spec.train.batch, shape, d)
    if d < batch / 2:
        raise UsageError(
            f"grid.budgets: budget {budget:.3g} buys {d:.0f} tokens on {_tag(shape)} "
            f"({shape.params} params), less than one batch of {batch}: raise the budget or drop the size"
        )
    name = f"C{_g(budget)}_{_tag(shape)}"
    if len(spec.train.seeds) == 1 and seed not in spec.train.seeds:
        name = f"{name}_s{seed}"  # with several train.seeds every name already ends in its seed
    run = b.run(shape, d, name=name, budget=budget, group=f"C={_g(budget)}", seed=seed, batch=batch)
    return run.model_copy(update={"added": added}) if added else run


def _kaplan_n(spec: SweepSpec, g: KaplanNGrid, b: _Builder) -> list[RunSpec]:
    shapes = sorted({resolve_size(s, spec.model, spec.where('grid', 'sizes', i)) for i, s in enumerate(g.sizes)}, key=lambda s: s.params)
    return [b.run(s, g.tokens, name=f"{_tag(s)}_D{_g(g.tokens)}", group="kaplan_n", seed=seed) for s in shapes for seed in b.seeds()]


def _kaplan_d(spec: SweepSpec, g: KaplanDGrid, b: _Builder) -> list[RunSpec]:
    s = resolve_size(g.size, spec.model, spec.where('grid', 'size'))
    return [b.run(s, d, name=f"{_tag(s)}_D{_g(d)}", group="kaplan_d", seed=seed) for d in sorted(set(g.tokens)) for seed in b.seeds()]


def _wsd(spec: SweepSpec, g: WsdGrid, b: _Builder) -> list[RunSpec]:
    """A constant-LR trunk per size that checkpoints at every branch point, then the branches.

    Branch points are whole multiples of the trunk's checkpoint interval (``train.checkpoint_every``,
    or a quarter of the earliest branch point), so each requested token count moves to the
    nearest count whose branch point the trunk has saved.
    """
    out: list[RunSpec] = []
    c = g.cooldown_frac
    base = spec.train.schedule
    for shape in sorted({resolve_size(s, spec.model, spec.where('grid', 'sizes', i)) for i, s in enumerate(g.sizes)}, key=lambda s: s.params):
        batch = batch_tokens_for(spec.train.batch, shape, max(g.tokens))
        starts = sorted({max(1, round((1 - c) * t / batch)) for t in g.tokens})  # branch points, in steps
        every = spec.train.checkpoint_every or max(1, starts[0] // 4)
        starts = sorted({max(every, round(s / every) * every) for s in starts})
        for seed in b.seeds():
            trunk_tokens = starts[-1] * batch
            trunk = b.run(
                shape, trunk_tokens, name=f"{_tag(shape)}_trunk", group="trunk", seed=seed, batch=batch,
                schedule=ScheduleSpec(kind="constant", warmup_frac=base.warmup_frac, final_frac=1.0),
                checkpoint_every=every,
            )
            out.append(trunk)
            for s in starts:
                branch_from = s * batch
                total = max(branch_from + batch, round(branch_from / (1 - c) / batch) * batch)
                out.append(
                    b.run(
                        shape, total, name=f"{_tag(shape)}_D{_g(total)}", group="branch", seed=seed, batch=batch,
                        schedule=ScheduleSpec(
                            kind="wsd",
                            warmup_frac=base.warmup_frac * trunk_tokens / total,
                            final_frac=base.final_frac,
                            decay_frac=(total - branch_from) / total,
                            decay_shape=g.decay_shape,
                        ),
                        branch_of=trunk.run_id,
                        branch_from_tokens=branch_from,
                    )
                )
    return out


def _runs(spec: SweepSpec, g: RunsGrid, b: _Builder) -> list[RunSpec]:
    out: list[RunSpec] = []
    conv = spec.train.flops_convention
    for i, r in enumerate(g.runs):
        shape = resolve_size(r.size, spec.model, spec.where('grid', 'runs', i, 'size'))
        d = r.tokens if r.tokens is not None else float(r.budget or 0) / flops_per_token(shape, conv)
        name = r.name or (f"C{_g(r.budget)}_{_tag(shape)}" if r.budget else f"{_tag(shape)}_D{_g(d)}")
        seeds = [r.seed] if r.seed is not None else list(b.seeds())
        for seed in seeds:
            out.append(b.run(shape, d, name=name, budget=r.budget, group="runs", seed=seed, lr=r.lr, batch=r.batch_tokens))
    return out


def expand(spec: SweepSpec) -> list[RunSpec]:
    """Every run of the sweep, in a fixed order; duplicate configs appear once."""
    b = _Builder(spec)
    g = spec.grid
    if isinstance(g, IsoflopGrid):
        runs = _isoflop(spec, g, b)
    elif isinstance(g, KaplanNGrid):
        runs = _kaplan_n(spec, g, b)
    elif isinstance(g, KaplanDGrid):
        runs = _kaplan_d(spec, g, b)
    elif isinstance(g, WsdGrid):
        runs = _wsd(spec, g, b)
    else:
        runs = _runs(spec, g, b)
    seen: set[str] = set()
    unique: list[RunSpec] = []
    for r in runs:
        if r.run_id not in seen:
            seen.add(r.run_id)
            unique.append(r)
    return unique
