"""``scaling train``: one run outside any sweep, on the local backend.

Either a run file (``scaling train RUN.yaml``; a RunSpec as YAML or JSON) or flags
(``scaling train --params 2e6 --tokens 4e7``). Flags given with a run file override its fields.
The model shape comes from ``--layers/--hidden/--heads`` or from ``--params`` (the ladder rule of
:func:`scaling.shapes.shape_for_params`); the learning rate defaults to ``min(1e-2, 0.32/hidden)``
(a pilot on 1-2 layer models at vocabulary 1024).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from scaling.commands import add_json_flag, emit_json
from scaling.errors import UsageError


def add_arguments(p: Any) -> None:
    p.add_argument("spec", nargs="?", help="a run file (RunSpec as YAML or JSON)")
    g = p.add_argument_group("model")
    g.add_argument("--params", type=float, help="target parameter count (picks a Llama shape)")
    g.add_argument(
        "--count", choices=["total", "non_embedding"], default="total", help="what --params counts"
    )
    g.add_argument("--layers", type=int)
    g.add_argument("--hidden", type=int)
    g.add_argument("--heads", type=int)
    g.add_argument("--vocab", type=int, help="vocabulary size (default 1024)")
    g.add_argument("--seq-len", type=int, help="sequence length (default 128)")
    g = p.add_argument_group("training")
    g.add_argument("--tokens", type=float, help="training tokens D")
    g.add_argument("--batch-tokens", type=float, help="tokens per optimizer step (default 16 sequences)")
    g.add_argument("--micro-batch", type=int, help="sequences per forward pass (gradient accumulation)")
    g.add_argument("--lr", type=float, help="peak learning rate (default min(1e-2, 0.32/hidden))")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--schedule", choices=["cosine", "wsd", "constant"])
    g.add_argument("--warmup-frac", type=float)
    g.add_argument("--decay-frac", type=float, help="WSD: fraction of the steps spent decaying")
    g.add_argument("--final-frac", type=float, help="final LR as a fraction of the peak")
    g.add_argument("--seed", type=int)
    g.add_argument("--eval-every", type=int)
    g.add_argument("--checkpoint-every", type=int)
    g = p.add_argument_group("data")
    g.add_argument("--corpus", help="builtin:default | builtin:shakespeare | builtin:bible | PATH | hf:NAME")
    g.add_argument("--text-column")
    g.add_argument("--tokenizer", help="'bpe' (trained on the corpus) or a tokenizer folder")
    g.add_argument("--max-chars", type=int)
    g = p.add_argument_group("backend")
    g.add_argument("--threads", type=int)
    g.add_argument("--device", choices=["auto", "cpu", "cuda"])
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16"])
    g.add_argument("--token-dtype", choices=["auto", "uint16", "uint32"])
    g.add_argument("--cache-dir", help="prepared-data cache (default $SCALING_CACHE or ~/.cache/scaling)")
    p.add_argument("--out", help="run folder (default runs/<run_id>)")
    p.add_argument("--replace", action="store_true",
                   help="--out holds a run of another spec: delete it and train this one")
    p.add_argument("--no-progress", action="store_true")
    add_json_flag(p)


def _load_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(
            f"spec={path!r}: no such file; give a RunSpec YAML/JSON file or use --params/--tokens"
        )
    text = p.read_text()
    if p.suffix == ".json":
        return json.loads(text)
    import yaml

    d = yaml.safe_load(text)
    if not isinstance(d, dict):
        raise UsageError(f"spec={path!r}: expected a mapping of RunSpec fields")
    return d


def build_spec(args: Any) -> Any:
    """A validated RunSpec from a run file and/or flags."""
    from scaling.runspec import RunSpec
    from scaling.shapes import ModelShape, ShapeError, shape_for_params

    d: dict[str, Any] = _load_file(args.spec) if args.spec else {}
    d.pop("run_id", None)
    d.pop("derived", None)
    shape = dict(d.get("shape") or {})
    vocab = args.vocab or shape.get("vocab") or 1024
    seq = args.seq_len or shape.get("seq_len") or 128
    try:
        if args.params is not None:
            if args.params <= 0 or not math.isfinite(args.params):
                raise UsageError(f"--params={args.params}: a positive number such as 2e6")
            shape = shape_for_params(args.params, vocab=vocab, seq_len=seq, count=args.count).to_dict()
        for k in ("layers", "hidden", "heads"):
            if getattr(args, k) is not None:
                shape[k] = getattr(args, k)
        shape["vocab"], shape["seq_len"] = vocab, seq
        if not {"layers", "hidden", "heads"} <= set(shape):
            raise UsageError(
                "shape: give --params, or --layers, --hidden and --heads, or a run file with a shape"
            )
        if args.heads is not None or args.hidden is not None:
            shape.pop("head_dim", None)
            if shape.get("kv_heads") and shape["heads"] % shape["kv_heads"]:
                shape.pop("kv_heads")
        ModelShape.from_dict(shape)
    except ShapeError as e:
        raise UsageError(str(e)) from None
    d["shape"] = shape
    if args.tokens is not None:
        d["tokens"] = args.tokens
    if "tokens" not in d:
        raise UsageError("tokens: give --tokens (e.g. 4e7) or a run file with tokens")
    if args.batch_tokens is not None:
        d["batch_tokens"] = args.batch_tokens
    d.setdefault("batch_tokens", 16 * seq)
    opt = dict(d.get("optimizer") or {})
    if args.lr is not None:
        opt["lr"] = args.lr
    opt.setdefault("lr", min(1e-2, 0.32 / shape["hidden"]))
    if args.weight_decay is not None:
        opt["weight_decay"] = args.weight_decay
    d["optimizer"] = opt
    d["schedule"] = _override(
        d.get("schedule"), args, schedule="kind", warmup_frac=0, decay_frac=0, final_frac=0
    )
    d["data"] = _override(d.get("data"), args, corpus="source", text_column=0, tokenizer=0, max_chars=0)
    for flag in ("seed", "eval_every", "checkpoint_every", "micro_batch"):
        if getattr(args, flag) is not None:
            d[flag] = getattr(args, flag)
    bo = dict(d.get("backend_options") or {})
    for flag in ("threads", "device", "compile", "dtype", "token_dtype"):
        if getattr(args, flag) is not None:
            bo[flag] = getattr(args, flag)
    d["backend_options"] = bo
    d.setdefault("backend", "local")
    spec = RunSpec.model_validate(d)
    from scaling.backends.local.options import validate_spec

    validate_spec(spec)
    return spec


def _override(section: Any, args: Any, **flags: str | int) -> dict[str, Any]:
    """``section`` with each given flag set; a flag maps to its field name (0: the same name)."""
    out = dict(section or {})
    for flag, key in flags.items():
        if getattr(args, flag) is not None:
            out[key or flag] = getattr(args, flag)
    return out


class _Progress:
    """A rich progress bar: tokens, loss, tokens/s, ETA."""

    def __init__(self, spec: Any) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.p = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[tokens]} tok"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.task = self.p.add_task(spec.name or spec.run_id, total=spec.steps, tokens="0", loss="-", tps="-")

    def __call__(self, row: dict[str, Any]) -> None:
        self.p.update(
            self.task,
            completed=row["step"],
            tokens=f"{row['tokens']:.3g}",
            loss=f"{row['loss']:.4f}",
            tps=f"{row['tokens_per_s']:.0f}",
        )


def claim_run_folder(out: Path, spec: Any, replace: bool = False) -> None:
    """``out`` may hold this spec's run (to resume or reuse) or nothing; a run of another spec is
    refused naming both, or deleted with ``replace``. Call with the run's writer lock held."""
    import shutil

    from scaling.runspec import RunSpec
    from scaling.store import CorruptFileError, RunDir
    from scaling.sweep.lock import WRITER_GUARD

    rd = RunDir(out)
    try:
        held = rd.read_spec()
        held_id = RunSpec.from_json_dict(held).run_id if held else None  # today's identity of an older folder too
    except (CorruptFileError, ValueError) as e:
        held, held_id = {}, f"unreadable ({str(e)[:120]})"
    if held is None or held_id == spec.run_id:
        if held and held.get("run_id") != spec.run_id:
            rd.write_spec(spec.to_json_dict())  # named by an older identity: same run
        return
    if not replace:
        what = "finished run" if rd.is_done() else "run"
        raise UsageError(
            f"--out {out}: holds the {what} {held_id} ({_describe(held)}), not this spec's run {spec.run_id} "
            f"({_describe(spec.to_json_dict())}); choose another --out, or add --replace to delete that run and train this one")
    for p in out.iterdir():
        if p.name == WRITER_GUARD:
            continue  # held by this process
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _describe(d: dict[str, Any]) -> str:
    s = d.get("shape") or {}
    return f"L{s.get('layers')} d{s.get('hidden')} h{s.get('heads')}, {d.get('tokens')} tokens, seed {d.get('seed', 0)}"


def run(args: Any) -> int:
    from scaling.sweep.lock import RunBusy, RunLock

    spec = build_spec(args)
    out = Path(args.out) if args.out else Path("runs") / spec.run_id
    lock = RunLock(out)
    if not lock.take():
        raise RunBusy(f"--out {out}: another process is training this run folder; wait for it or choose another --out")
    try:
        claim_run_folder(out, spec, args.replace)
        return _train(args, spec, out)
    finally:
        lock.release()


def _train(args: Any, spec: Any, out: Path) -> int:
    from scaling.backends.local import LocalBackend

    progress = None if (args.no_progress or args.json or not sys.stderr.isatty()) else _Progress(spec)
    t = time.perf_counter()
    backend = LocalBackend(args.cache_dir)
    if progress is not None:
        with progress.p:
            result = backend.train(spec, out, progress=progress)
    else:
        result = backend.train(spec, out)
    if args.json:
        emit_json({**result, "run_dir": str(out)})
        return 0
    print(
        f"run {spec.run_id} done in {time.perf_counter() - t:.1f}s: {result['params']:,} params "
        f"({result['non_embedding_params']:,} non-embedding), {result['tokens']:,} tokens, "
        f"final loss {result['final_loss']:.4f}, eval loss {result['eval_loss']:.4f}, "
        f"{result['tokens_per_s']:.0f} tok/s -> {out}"
    )
    return 0
