"""``scaling plan``: a compute budget -> N*, D*, loss, shape, batch size, LR, GPU-hours, days, cost.

Examples::

    scaling plan --flops 5.76e23 --law epoch --gpus 1024 --price 2.0
    scaling plan --gpu-hours 2000 --gpu h100 --mfu 0.4 --law all
    scaling plan --budget-usd 500000 --price 2.5 --law chinchilla --json
    scaling plan --params 7B --law chinchilla          # how many tokens for a 7B model
    scaling plan --target-loss 2.1 --law epoch         # cheapest compute that reaches it
"""

from __future__ import annotations

from typing import Any

from scaling.commands import add_json_flag, emit_json
from scaling.commands._args import accept_negative_numbers, integer, number
from scaling.errors import UsageError


def add_arguments(parser: Any) -> None:
    accept_negative_numbers(parser)
    b = parser.add_argument_group("budget (at most one)")
    b.add_argument("--flops", metavar="C", help="training compute in FLOPs, e.g. 1e22")
    b.add_argument("--gpu-hours", metavar="H", help="GPU-hours on --gpu at --mfu")
    b.add_argument("--budget-usd", metavar="USD", help="dollars at --price per GPU-hour")
    parser.add_argument(
        "--law",
        default="epoch",
        help="a published law, 'all', or fit:PATH (a fitted law's JSON); default epoch",
    )
    h = parser.add_argument_group("hardware")
    h.add_argument(
        "--gpu", default="h100", help="accelerator (h100, h100-pcie, h200, a100, b200, mi300x, l40s)"
    )
    h.add_argument("--mfu", default="0.4", help="model FLOPs utilisation in (0, 1]; default 0.4")
    h.add_argument("--gpus", metavar="G", help="GPUs in the job, for the wall clock")
    h.add_argument("--price", metavar="USD", help="price per GPU-hour, for the cost")
    m = parser.add_argument_group("modes")
    m.add_argument("--params", metavar="N", help="fix the model size (e.g. 7B): how many tokens")
    m.add_argument("--tokens", metavar="D", help="fix the training tokens (e.g. 2T): how big a model")
    m.add_argument("--target-loss", metavar="L", help="cheapest compute that reaches this loss")
    m.add_argument("--unique-tokens", metavar="U", help="unique tokens available: plan with repetition")
    m.add_argument("--inference-tokens", metavar="T", help="tokens to serve: minimise training + inference")
    s = parser.add_argument_group("shape")
    s.add_argument("--vocab", default="32000", help="vocabulary size (default 32000)")
    s.add_argument("--seq-len", default="2048", help="sequence length (default 2048)")
    s.add_argument("--aspect-ratio", default="64", help="hidden / layers of the ladder (default 64)")
    s.add_argument("--head-dim", default="64", help="channels per attention head (default 64)")
    s.add_argument("--kv-ratio", default="1", help="query heads per key/value head, GQA (default 1)")
    s.add_argument("--tied", action="store_true", help="tie input and output embeddings")
    add_json_flag(parser)


def _kwargs(args: Any) -> dict[str, Any]:
    from scaling.shapes import LadderRule

    aspect = number("aspect_ratio", args.aspect_ratio)
    head_dim = integer("head_dim", args.head_dim)
    kv_ratio = integer("kv_ratio", args.kv_ratio)
    for name, v in (("aspect_ratio", aspect), ("head_dim", head_dim), ("kv_ratio", kv_ratio)):
        if v is None or v <= 0:
            raise UsageError(f"{name}={v!r}: must be positive")
    rule = LadderRule(aspect_ratio=aspect, head_dim=head_dim, kv_ratio=kv_ratio, tied=bool(args.tied))
    return {
        "flops": number("flops", args.flops),
        "gpu_hours": number("gpu_hours", args.gpu_hours),
        "budget_usd": number("budget_usd", args.budget_usd),
        "gpu": args.gpu,
        "mfu": number("mfu", args.mfu),
        "gpus": integer("gpus", args.gpus),
        "price": number("price", args.price),
        "params": number("params", args.params),
        "tokens": number("tokens", args.tokens),
        "target_loss": number("target_loss", args.target_loss),
        "unique_tokens": number("unique_tokens", args.unique_tokens),
        "inference_tokens": number("inference_tokens", args.inference_tokens),
        "vocab": integer("vocab", args.vocab),
        "seq_len": integer("seq_len", args.seq_len),
        "rule": rule,
    }


def _law_names(text: str) -> list[str]:
    """``epoch``, ``all``, or a comma-separated list such as ``all,fit:study/fit/approach3_total.json``."""
    from scaling.laws import LAW_NAMES

    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        names.extend(LAW_NAMES if part.lower() == "all" else [part])
    if not names:
        raise UsageError("law: give a law name, 'all', or fit:PATH")
    return names


def run(args: Any) -> int:
    from scaling.planner import PlanError, plan, plan_all

    kwargs = _kwargs(args)
    names = _law_names(args.law)
    skipped: dict[str, str] = {}
    try:
        if len(names) > 1:
            plans = plan_all(names, skipped=skipped, **kwargs)
            if not plans:
                raise UsageError(
                    f"law={args.law}: no law answers this question ({next(iter(skipped.values()))})"
                )
        else:
            plans = [plan(law=names[0], **kwargs)]
    except PlanError as e:
        raise UsageError(str(e)) from None
    if args.json:
        out = [p.to_dict() for p in plans]
        emit_json(out if len(names) > 1 else out[0])
        return 0
    from scaling.commands._plan_table import render

    render(plans, skipped)
    return 0
