"""``scaling params``: exact parameter counts and FLOPs per token of a shape.

Examples::

    scaling params --hf-config path/to/config.json --seq-len 4096 --json
    scaling params --layers 32 --hidden 4096 --heads 32 --ffn 11008 --vocab 32000
    scaling params --target 7B                          # the ladder's shape nearest 7B parameters
"""

from __future__ import annotations

from typing import Any

from scaling.commands import add_json_flag, emit_json
from scaling.commands._args import accept_negative_numbers, integer, number
from scaling.errors import UsageError


def add_arguments(parser: Any) -> None:
    accept_negative_numbers(parser)
    parser.add_argument("--hf-config", metavar="PATH", help="a Hugging Face config.json (or its folder)")
    parser.add_argument("--target", metavar="N", help="the ladder's shape nearest N parameters (e.g. 7B)")
    parser.add_argument(
        "--count", default="total", choices=("total", "non_embedding"), help="what --target counts"
    )
    g = parser.add_argument_group("shape (when no --hf-config)")
    g.add_argument("--layers")
    g.add_argument("--hidden")
    g.add_argument("--heads")
    g.add_argument("--kv-heads")
    g.add_argument("--ffn", help="MLP width (default: Llama's 8/3 hidden rounded up)")
    g.add_argument("--vocab", help="vocabulary size (default 32000)")
    g.add_argument("--head-dim")
    g.add_argument("--tied", action="store_true", help="tied input/output embeddings")
    g.add_argument("--qkv-bias", action="store_true", help="q/k/v projections with bias (Qwen2)")
    g.add_argument("--no-glu", action="store_true", help="2-matrix MLP (GPT-2, Chinchilla) instead of SwiGLU")
    parser.add_argument("--seq-len", help="sequence length for the context-dependent FLOP terms")
    add_json_flag(parser)


def _shape(args: Any) -> Any:
    from scaling.shapes import ModelShape, ShapeError, shape_for_params

    seq = integer("seq_len", args.seq_len)
    if seq is not None and seq < 1:
        raise UsageError(f"seq_len={seq}: must be a positive integer")
    try:
        if args.hf_config:
            return ModelShape.from_hf_config(args.hf_config, seq_len=seq)
        vocab = integer("vocab", args.vocab) or 32000
        if args.target:
            return shape_for_params(
                number("target", args.target) or 0.0, vocab=vocab, seq_len=seq or 2048, count=args.count
            )
        fields = {"layers": args.layers, "hidden": args.hidden, "heads": args.heads}
        missing = [f"--{k}" for k, v in fields.items() if v is None]
        if missing:
            raise UsageError(
                f"shape: give --hf-config, --target, or all of --layers --hidden --heads (missing {', '.join(missing)})"
            )
        return ModelShape(
            layers=integer("layers", args.layers),
            hidden=integer("hidden", args.hidden),
            heads=integer("heads", args.heads),
            kv_heads=integer("kv_heads", args.kv_heads),
            ffn=integer("ffn", args.ffn),
            vocab=vocab,
            seq_len=seq or 2048,
            tied=bool(args.tied),
            qkv_bias=bool(args.qkv_bias),
            head_dim=integer("head_dim", args.head_dim),
            glu=not args.no_glu,
        )
    except ShapeError as e:
        raise UsageError(str(e)) from None


def describe(shape: Any) -> dict[str, Any]:
    """The JSON ``scaling params --json`` prints."""
    from scaling.flops import all_flops_per_token

    return {
        "params": shape.params,
        "non_embedding_params": shape.non_embedding_params,
        "embedding_params": shape.embedding_params,
        "flops_per_token": all_flops_per_token(shape),
        "shape": shape.to_dict(),
    }


def run(args: Any) -> int:
    shape = _shape(args)
    info = describe(shape)
    if args.json:
        emit_json(info)
        return 0
    from rich.console import Console
    from rich.table import Table

    s = shape
    title = f"{s.layers} layers x {s.hidden} hidden, {s.heads}/{s.n_kv_heads} heads, ffn {s.d_ffn}, vocab {s.vocab}, seq {s.seq_len}"
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row("params (total)", f"{s.params:,}")
    table.add_row("non-embedding params", f"{s.non_embedding_params:,}")
    table.add_row("embedding params", f"{s.embedding_params:,}" + (" (tied)" if s.tied else ""))
    for conv, f in info["flops_per_token"].items():
        table.add_row(f"FLOPs/token: {conv}", f"{f:.4g}")
    Console().print(table)
    return 0
