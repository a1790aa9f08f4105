"""From a compute budget to a training plan: N*, D*, loss, shape, batch size, LR, hours and cost.

A budget is FLOPs, or GPU-hours on a GPU type, or dollars at a price per GPU-hour; at most one
is given. ``GPU-hours = C / (peak x MFU x 3600)`` (:mod:`scaling.hardware`, MFU 0.40 by default).
The law (:mod:`scaling.laws`) turns the budget into ``N*`` and ``D*`` under ``C = 6 N D``; a
ladder rule (:func:`scaling.shapes.shape_for_params`) turns ``N*`` into a concrete shape, counting
parameters the way the law does (Kaplan: non-embedding; Chinchilla: total). Batch size and peak
learning rate follow DeepSeek LLM's laws (arXiv:2401.02954, eq. 1) evaluated at the plan's
``C = M D`` (M: non-embedding FLOPs per token with attention, :func:`scaling.flops.flops_per_token`
``"kaplan"``); ``extrapolated`` says when that C lies outside the budgets they were fitted and
checked on (1e17 to 1e20 FLOPs).

Modes, chosen by what is given:

* ``compute_optimal``: a budget only.
* ``fixed_params`` / ``fixed_tokens``: N (or D) with a budget spends the budget (``D = C / 6N``);
  without one, D (or N) is the compute-optimal partner, found by inverting ``N*(C)`` (``D*(C)``).
* ``fixed``: N and D, the budget follows (``C = 6 N D``).
* ``target_loss``: the cheapest compute whose optimal loss reaches the target (with N fixed: the
  tokens that reach it).
* ``data_constrained``: a budget and ``unique_tokens``; repeated tokens count as
  ``D' = U + U R* (1 - e^(-R/R*))`` (Muennighoff et al. 2023, eq. 5) and N minimises ``L(N, D')``.
* ``inference_aware``: ``inference_tokens`` (Sardana et al. 2023, arXiv:2401.00448): at the loss
  the budget's compute-optimal model reaches (or ``target_loss``), minimise
  ``6 N D_train + 2 N D_inference``.

Pure Python plus :mod:`math`; no numpy, pandas or scipy on this path (``scaling plan`` starts fast).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scaling import hardware
from scaling.laws import LAW_NAMES, Law, get_law
from scaling.laws.base import bisect, effective_repeated_tokens, golden_min, has_loss, numeric_allocation
from scaling.laws.deepseek import deepseek_batch_tokens, deepseek_lr, hyperparams_extrapolated
from scaling.laws.muennighoff import R_D_STAR
from scaling.shapes import LadderRule, ModelShape, shape_for_params

__all__ = [
    "Plan", "PlanError", "Unanswerable", "budget_flops", "deepseek_batch_tokens", "deepseek_lr",
    "hyperparams_extrapolated", "plan", "plan_all",
]

DEFAULT_VOCAB = 32000
DEFAULT_SEQ_LEN = 2048
_LN_C_RANGE = (math.log(1e6), math.log(1e40))  # budgets the inverse searches span


class PlanError(ValueError):
    """Bad planning input; the message names the field and the fix."""


class Unanswerable(PlanError):
    """Valid input that this law cannot answer (no loss, or a target it never reaches)."""


@dataclass(frozen=True)
class Plan:
    """One law's answer. ``to_dict()`` gives the JSON that ``scaling plan --json`` prints."""

    law: str
    citation: str
    mode: str
    param_convention: str
    flops: float
    params: float
    tokens: float
    loss: float | None
    shape: ModelShape | None
    batch_tokens: float | None
    lr: float | None
    extrapolated: bool | None
    gpu: str
    mfu: float
    gpu_hours: float
    gpus: int | None = None
    price: float | None = None
    wall_clock_days: float | None = None
    cost_usd: float | None = None
    budget_flops: float | None = None
    target_loss: float | None = None
    unique_tokens: float | None = None
    inference_tokens: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params

    @property
    def epochs(self) -> float | None:
        return None if self.unique_tokens is None else self.tokens / self.unique_tokens

    @property
    def inference_flops(self) -> float | None:
        return None if self.inference_tokens is None else 2.0 * self.params * self.inference_tokens

    @property
    def batch_size(self) -> int | None:
        """Sequences per step: the DeepSeek batch in tokens over the sequence length, at least 1."""
        if self.batch_tokens is None or self.shape is None:
            return None
        return max(1, round(self.batch_tokens / self.shape.seq_len))

    @property
    def shape_flops(self) -> float | None:
        """``6 N_total D`` of the concrete shape on the planned tokens (what the GPUs will do, in
        the 6N convention); differs from ``flops`` when the law counts non-embedding N."""
        return None if self.shape is None else 6.0 * self.shape.params * self.tokens

    def to_dict(self) -> dict[str, Any]:
        s = self.shape
        shape = None
        if s is not None:
            shape = {"layers": s.layers, "hidden": s.hidden, "heads": s.heads, "kv_heads": s.n_kv_heads,
                     "ffn": s.d_ffn, "vocab": s.vocab, "seq_len": s.seq_len, "tied": s.tied, "params": s.params,
                     "non_embedding_params": s.non_embedding_params}
        inf = self.inference_flops
        return {
            "law": self.law,
            "citation": self.citation,
            "mode": self.mode,
            "param_convention": self.param_convention,
            "flops": self.flops,
            "params": self.params,
            "tokens": self.tokens,
            "tokens_per_param": self.tokens_per_param,
            "loss": self.loss,
            "shape": shape,
            "shape_flops": self.shape_flops,
            "batch_tokens": self.batch_tokens,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "extrapolated": self.extrapolated,
            "gpu": self.gpu,
            "mfu": self.mfu,
            "gpus": self.gpus,
            "price": self.price,
            "gpu_hours": self.gpu_hours,
            "wall_clock_days": self.wall_clock_days,
            "cost_usd": self.cost_usd,
            "budget_flops": self.budget_flops,
            "target_loss": self.target_loss,
            "unique_tokens": self.unique_tokens,
            "epochs": self.epochs,
            "inference_tokens": self.inference_tokens,
            "inference_flops": inf,
            "total_flops": None if inf is None else self.flops + inf,
            "notes": list(self.notes),
        }


# ---- input checks --------------------------------------------------------------------------


def _positive(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PlanError(f"{name}={value!r}: must be a number") from None
    if not (v > 0 and math.isfinite(v)):
        raise PlanError(f"{name}={value!r}: must be a positive finite number")
    return v


def budget_flops(
    flops: float | None = None,
    gpu_hours: float | None = None,
    budget_usd: float | None = None,
    *,
    gpu: str = "h100",
    mfu: float = hardware.DEFAULT_MFU,
    price: float | None = None,
) -> float | None:
    """The budget in FLOPs from whichever of FLOPs, GPU-hours or dollars was given (None if none)."""
    flops = _positive("flops", flops)
    gpu_hours = _positive("gpu_hours", gpu_hours)
    budget_usd = _positive("budget_usd", budget_usd)
    given = [n for n, v in (("flops", flops), ("gpu_hours", gpu_hours), ("budget_usd", budget_usd)) if v]
    if len(given) > 1:
        raise PlanError(f"budget: give one of flops, gpu_hours, budget_usd (got {', '.join(given)})")
    if flops is not None:
        return _in_range("flops", flops, flops)
    if gpu_hours is not None:
        return _in_range("gpu_hours", gpu_hours, hardware.flops_from_gpu_hours(gpu_hours, gpu, mfu))
    if budget_usd is not None:
        if price is None:
            raise PlanError("budget_usd: needs price (USD per GPU-hour), e.g. --price 2.0")
        return _in_range("budget_usd", budget_usd, hardware.flops_from_gpu_hours(budget_usd / price, gpu, mfu))
    return None


def _in_range(name: str, given: float, c: float) -> float:
    """``c`` if it lies in the budgets the planner spans (``_LN_C_RANGE``, as for params and tokens)."""
    lo, hi = (math.exp(x) for x in _LN_C_RANGE)
    if not lo <= c <= hi * (1 + 1e-9):
        what = "" if name == "flops" else f" ({c:.3g} FLOPs)"
        span = f"1e{round(math.log10(lo))}-1e{round(math.log10(hi))}"
        raise PlanError(f"{name}={given:g}{what}: outside the {span} FLOPs the planner spans; give a budget in that range")
    return c


def _resolve_law(law: str | Law) -> Law:
    if not isinstance(law, str):
        return law
    try:
        return get_law(law)
    except (ValueError, OSError) as e:
        msg = str(e)
        raise PlanError(msg if msg.startswith("law=") else f"law={law!r}: {msg}") from None


# ---- the modes -----------------------------------------------------------------------------


def _optimal_loss(law: Law, c: float) -> float:
    al = law.optimal_allocation(c)
    return law.loss(al.params, al.tokens)


def _invert(law: Law, attr: str, value: float) -> float:
    """The budget C at which the law's optimal ``attr`` (params or tokens) equals ``value``."""

    def f(ln_c: float) -> float:
        return math.log(getattr(law.optimal_allocation(math.exp(ln_c)), attr)) - math.log(value)

    try:
        return math.exp(bisect(f, *_LN_C_RANGE))
    except ValueError:
        raise Unanswerable(
            f"{attr}={value:g}: outside what law {law.name!r} allocates for 1e6-1e40 FLOPs"
        ) from None


def _require_loss(law: Law, what: str) -> None:
    if not has_loss(law):
        raise Unanswerable(f"law={law.name!r}: gives an allocation only, no loss, so it cannot plan {what}")


def _cheapest_flops_for_loss(law: Law, target: float) -> float:
    _require_loss(law, "a target loss")
    lo, hi = _LN_C_RANGE
    if _optimal_loss(law, math.exp(hi)) > target:
        raise Unanswerable(
            f"target_loss={target:g}: below what law {law.name!r} reaches with 1e40 FLOPs "
            f"(its irreducible loss); choose a higher target"
        )
    if _optimal_loss(law, math.exp(lo)) <= target:
        return math.exp(lo)
    return math.exp(bisect(lambda x: _optimal_loss(law, math.exp(x)) - target, lo, hi))


def _tokens_for_loss(law: Law, params: float, target: float) -> float:
    """D with ``L(params, D) = target`` (bisection on ln D); inf when out of reach."""
    if law.loss(params, 1e30) > target:
        return math.inf
    if law.loss(params, 1.0) <= target:  # a target this loose needs no training to speak of
        return 1.0
    return math.exp(bisect(lambda x: law.loss(params, math.exp(x)) - target, math.log(1.0), math.log(1e30)))


def _data_constrained(law: Law, c: float, unique: float) -> tuple[float, float, float]:
    """(N, D, loss) minimising the loss at budget C with ``unique`` tokens, repeats discounted."""
    repeated = getattr(law, "loss_repeated", None)
    if repeated is None:

        def repeated(n: float, d: float, u: float) -> float:
            return law.loss(n, effective_repeated_tokens(d, u, R_D_STAR))

    al = numeric_allocation(lambda n, d: repeated(n, d, unique), c)
    return al.params, al.tokens, repeated(al.params, al.tokens, unique)


def _inference_aware(law: Law, target: float, d_inf: float) -> tuple[float, float]:
    """(N, D_train) minimising ``6 N D + 2 N D_inf`` subject to ``L(N, D) = target`` (Sardana et al.)."""
    _require_loss(law, "for inference demand")

    def cost(ln_n: float) -> float:
        n = math.exp(ln_n)
        d = _tokens_for_loss(law, n, target)
        return math.log(6.0 * n * d + 2.0 * n * d_inf) if math.isfinite(d) else 1e300

    # smallest N that can reach the target at all: L(N, inf) < target
    def gap(ln_n: float) -> float:
        return law.loss(math.exp(ln_n), 1e30) - target

    if gap(math.log(1e16)) >= 0:
        raise Unanswerable(
            f"target_loss={target:g}: below what law {law.name!r} reaches at any size; choose a higher target"
        )
    ln_min = bisect(gap, math.log(1.0), math.log(1e16)) if gap(math.log(1.0)) > 0 else 0.0
    n = math.exp(golden_min(cost, ln_min + 1e-9, math.log(1e16), tol=1e-12))
    return n, _tokens_for_loss(law, n, target)


# ---- the planner -----------------------------------------------------------------------------


def plan(
    flops: float | None = None,
    gpu_hours: float | None = None,
    budget_usd: float | None = None,
    *,
    law: str | Law = "epoch",
    gpu: str = "h100",
    mfu: float = hardware.DEFAULT_MFU,
    gpus: int | None = None,
    price: float | None = None,
    params: float | None = None,
    tokens: float | None = None,
    target_loss: float | None = None,
    unique_tokens: float | None = None,
    inference_tokens: float | None = None,
    vocab: int = DEFAULT_VOCAB,
    seq_len: int = DEFAULT_SEQ_LEN,
    rule: LadderRule | None = None,
    with_shape: bool = True,
) -> Plan:
    """Plan one training run under ``law``. See the module docstring for the modes."""
    try:
        gpu_spec = hardware.get_gpu(gpu)
        mfu = hardware.check_mfu(mfu)
    except ValueError as e:
        raise PlanError(str(e)) from None
    if gpus is not None and (not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1):
        raise PlanError(f"gpus={gpus!r}: must be a positive integer")
    price, params, tokens, target_loss, unique_tokens, inference_tokens = (
        _positive(k, v) for k, v in (("price", price), ("params", params), ("tokens", tokens),
                                     ("target_loss", target_loss), ("unique_tokens", unique_tokens),
                                     ("inference_tokens", inference_tokens)))
    for name, v in (("vocab", vocab), ("seq_len", seq_len)):
        if not isinstance(v, int) or v < 1:
            raise PlanError(f"{name}={v!r}: must be a positive integer")
    budget = budget_flops(flops, gpu_hours, budget_usd, gpu=gpu, mfu=mfu, price=price)
    lw = _resolve_law(law)
    notes: list[str] = []

    n, d, c, mode, loss = _allocate(
        lw, budget, params, tokens, target_loss, unique_tokens, inference_tokens, notes
    )
    if not all(x > 0 and math.isfinite(x) for x in (n, d, c)):
        raise Unanswerable(f"law={lw.name!r}: gives no finite allocation here (N={n:g}, D={d:g}, C={c:g})")
    if loss is None:
        loss = lw.loss(n, d)
    loss_out = loss if math.isfinite(loss) else None

    convention = "non_embedding" if lw.param_convention == "non_embedding" else "total"
    shape = _shape(n, vocab, seq_len, convention, rule, notes) if with_shape else None
    batch, lr, extrap = _hyperparams(shape, d) if shape is not None else (None, None, None)
    hours = hardware.gpu_hours(c, gpu_spec, mfu)
    if inference_tokens is not None:
        notes.append("gpu_hours, wall_clock_days and cost_usd count training only")
    return Plan(
        law=lw.name,
        citation=lw.citation,
        mode=mode,
        param_convention=convention,
        flops=c,
        params=n,
        tokens=d,
        loss=loss_out,
        shape=shape,
        batch_tokens=batch,
        lr=lr,
        extrapolated=extrap,
        gpu=gpu_spec.name,
        mfu=mfu,
        gpu_hours=hours,
        gpus=gpus,
        price=price,
        wall_clock_days=None if gpus is None else hardware.wall_clock_days(hours, gpus),
        cost_usd=None if price is None else hardware.cost_usd(hours, price),
        budget_flops=budget,
        target_loss=target_loss,
        unique_tokens=unique_tokens,
        inference_tokens=inference_tokens,
        notes=tuple(notes),
    )


def _shape(n: float, vocab: int, seq_len: int, convention: str, rule: LadderRule | None,
           notes: list[str]) -> ModelShape | None:
    """The ladder shape of ``n`` parameters (counted as ``convention``), or None with a note."""
    try:
        return shape_for_params(n, vocab=vocab, seq_len=seq_len, count=convention, rule=rule)
    except ValueError as e:
        notes.append(f"no shape: {e}")
        return None


def _hyperparams(shape: ModelShape, tokens: float) -> tuple[float, float, bool]:
    """DeepSeek's batch size and LR at ``C = M D`` (``M`` our ``kaplan`` FLOPs per token), and
    whether C lies outside the range they were fitted on (DeepSeek-AI 2024, eq. 1)."""
    from scaling.flops import flops_per_token

    c_deepseek = flops_per_token(shape, "kaplan") * tokens
    return deepseek_batch_tokens(c_deepseek), deepseek_lr(c_deepseek), hyperparams_extrapolated(c_deepseek)


def _allocate(
    law: Law,
    budget: float | None,
    params: float | None,
    tokens: float | None,
    target: float | None,
    unique: float | None,
    d_inf: float | None,
    notes: list[str],
) -> tuple[float, float, float, str, float | None]:
    """(N, D, C, mode, loss or None) for the given inputs."""
    if params is not None and tokens is not None:
        if budget is not None or target is not None:
            raise PlanError(
                "params and tokens: with both given the budget is 6 N D; drop the budget or target_loss"
            )
        return params, tokens, 6.0 * params * tokens, "fixed", None
    if d_inf is not None:
        if params is not None or tokens is not None or unique is not None:
            raise PlanError("inference_tokens: combine with a budget or target_loss only")
        if target is None:
            if budget is None:
                raise PlanError(
                    "inference_tokens: needs a budget (flops, gpu_hours, budget_usd) or target_loss"
                )
            _require_loss(law, "for inference demand")
            target = _optimal_loss(law, budget)
            notes.append(
                "loss held at the budget's compute-optimal loss; training compute exceeds the budget"
            )
        elif budget is not None:
            raise PlanError("target_loss: give a budget or a target loss, not both")
        n, d = _inference_aware(law, target, d_inf)
        return n, d, 6.0 * n * d, "inference_aware", target
    if target is not None:
        if budget is not None:
            raise PlanError("target_loss: give a budget or a target loss, not both")
        if unique is not None:
            raise PlanError("unique_tokens: combine with a budget, not with target_loss")
        if params is not None:
            _require_loss(law, "a target loss")
            d = _tokens_for_loss(law, params, target)
            if not math.isfinite(d):
                raise Unanswerable(
                    f"target_loss={target:g}: a model of {params:g} params never reaches it under {law.name!r}"
                )
            return params, d, 6.0 * params * d, "target_loss", target
        if tokens is not None:
            raise PlanError("target_loss: combine with params (how many tokens), not tokens")
        c = _cheapest_flops_for_loss(law, target)
        al = law.optimal_allocation(c)
        return al.params, al.tokens, c, "target_loss", None
    if unique is not None:
        if budget is None:
            raise PlanError("unique_tokens: needs a budget (flops, gpu_hours or budget_usd)")
        if params is not None or tokens is not None:
            raise PlanError("unique_tokens: combine with a budget only")
        if not has_loss(law):
            al = law.optimal_allocation(budget)
            notes.append(f"law {law.name!r} has no loss: allocation ignores repetition")
            return al.params, al.tokens, budget, "data_constrained", None
        n, d, loss = _data_constrained(law, budget, unique)
        if not hasattr(law, "loss_repeated"):
            notes.append("repeated tokens discounted with Muennighoff's R_D* = 15.39")
        return n, d, budget, "data_constrained", loss
    if params is not None:
        c = budget if budget is not None else _invert(law, "params", params)
        return params, c / (6.0 * params), c, "fixed_params", None
    if tokens is not None:
        c = budget if budget is not None else _invert(law, "tokens", tokens)
        return c / (6.0 * tokens), tokens, c, "fixed_tokens", None
    if budget is None:
        raise PlanError("budget: give flops, gpu_hours or budget_usd (or params, tokens, or target_loss)")
    al = law.optimal_allocation(budget)
    return al.params, al.tokens, budget, "compute_optimal", None


def plan_all(
    laws: Sequence[str] | None = None, *, skipped: dict[str, str] | None = None, **kwargs: Any
) -> list[Plan]:
    """:func:`plan` under every law in ``laws`` (default: all published ones, :data:`LAW_NAMES`).

    Laws that cannot answer the question (an allocation-only law asked for a target loss) are left
    out; pass a dict as ``skipped`` to receive their names and the reason.
    """
    plans: list[Plan] = []
    for name in laws or LAW_NAMES:
        try:
            plans.append(plan(law=name, **kwargs))
        except Unanswerable as e:
            if skipped is not None:
                skipped[name] = str(e)
    return plans
