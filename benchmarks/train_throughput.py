"""Training throughput of the local backend's loop against Hugging Face ``Trainer``.

CPU (default): three shapes (hidden x layers 64x2, 128x4, 256x6; vocabulary 1024, sequence 256,
fp32), the same initial weights, the same random tokens, the same batch and precision for both.
Each contender runs in a process of its own (so nothing one sets, such as our loop's allocator
thresholds, reaches another), and they take turns in seven rounds. Our loop attends through
:mod:`scaling.backends.local.causal_attention` (the header says if it fell back to PyTorch's
kernels); ``Trainer`` and the plain loop through transformers' SDPA.
Prints tokens/s of our loop, of ``transformers.Trainer`` (AdamW fused, no logging or saving) and
of a plain transformers loop (``LlamaForCausalLM`` + ``torch.optim.AdamW``), their ratios (of the
medians, and "paired": the median over rounds of the ratio within a round, with its range, which a
drift in the machine's speed between rounds does not bias), and our
achieved matmul FLOP/s (``scaling.flops.flops_per_token(shape, "matmul")`` = 6 (N_non-embedding +
V d) + 6 L T d per token) as a fraction of this machine's fp32 matmul peak measured in the same
run with the same threads.

CUDA (``--device cuda``): a ~125M Llama (12 x 768, 12 heads, vocabulary 32000, sequence 1024) in
bf16 autocast on random tokens, our loop (optionally ``--compile``) against ``Trainer`` (bf16),
with MFU against the card's dense bf16 peak. Finishes in well under two minutes on an H100/H200.

    python benchmarks/train_throughput.py                   # CPU, all cores
    python benchmarks/train_throughput.py --threads 1       # one core
    python benchmarks/train_throughput.py --threads 1 --clock cpu   # on a busy machine
    python benchmarks/train_throughput.py --device cuda --compile
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from scaling.backends.local import causal_attention  # noqa: E402
from scaling.backends.local.memory import tune_malloc  # noqa: E402
from scaling.backends.local.model import build_model, to_hf_model  # noqa: E402
from scaling.backends.local.optim import AdamW  # noqa: E402
from scaling.backends.local.train import _param_groups, gpu_peak_flops, train_step  # noqa: E402
from scaling.flops import flops_per_token  # noqa: E402
from scaling.shapes import ModelShape  # noqa: E402

LR = 1e-3
CLOCK = time.perf_counter  # --clock cpu: process CPU time, steadier on a shared machine (1 thread)


@dataclass
class Case:
    shape: ModelShape
    batch: int  # sequences per step
    steps: int  # timed steps
    warmup: int = 2


def cpu_cases(seq: int, vocab: int, quick: bool) -> list[Case]:
    out = []
    for hidden, layers, steps in ((64, 2, 28), (128, 4, 21), (256, 6, 14)):
        s = ModelShape(layers=layers, hidden=hidden, heads=max(1, hidden // 64), vocab=vocab, seq_len=seq)
        out.append(Case(s, batch=16, steps=max(3, steps // 2) if quick else steps))
    return out


def matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 1.5) -> float:
    """Best FLOP/s of square matmuls (sizes 256-2048 on the CPU, 8192 on a GPU)."""
    sizes = (8192,) if device.type == "cuda" else (256, 512, 1024, 2048)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        end = time.perf_counter() + seconds / len(sizes)
        while time.perf_counter() < end:
            _sync(device)
            t = CLOCK()
            for _ in range(4):
                a @ b
            _sync(device)
            best = max(best, 4 * 2 * n**3 / max(CLOCK() - t, 1e-9))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _tokens(case: Case, n_steps: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, case.shape.vocab, (n_steps, case.batch, case.shape.seq_len + 1), generator=g).to(
        device
    )


Stepper = Callable[[int], list[float]]  # run n steps, return each step's seconds


def ours_stepper(case: Case, device: torch.device, amp: torch.dtype | None, compile_: bool) -> Stepper:
    """:func:`scaling.backends.local.train.train_step`, the loop's own step (with the loop's
    allocator setting on the CPU, :func:`scaling.backends.local.memory.tune_malloc`)."""
    if device.type == "cpu":
        tune_malloc()
    model = build_model(case.shape, seed=0).to(device)
    opt = AdamW(_param_groups(model, 0.1), lr=LR, betas=(0.9, 0.95))
    loss_fn = torch.compile(model.loss) if compile_ else model.loss
    data = _tokens(case, 4, device)

    def run(n: int) -> list[float]:
        times = []
        for i in range(n):
            x = data[i % len(data)]
            _sync(device)
            t = CLOCK()
            loss, _ = train_step(model, opt, loss_fn, x[:, :-1], x[:, 1:], 1, 1.0, amp)
            float(loss)  # the loop syncs once per logged step
            times.append(CLOCK() - t)
        return times

    return run


def plain_hf_stepper(case: Case, device: torch.device, amp: torch.dtype | None) -> Stepper:
    """A plain loop over transformers' ``LlamaForCausalLM`` (labels -> its own loss)."""
    hf = to_hf_model(build_model(case.shape, seed=0)).to(device)
    opt = torch.optim.AdamW(hf.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    data = _tokens(case, 4, device)

    def run(n: int) -> list[float]:
        times = []
        for i in range(n):
            x = data[i % len(data), :, :-1]
            _sync(device)
            t = CLOCK()
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = hf(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            float(loss.detach())
            times.append(CLOCK() - t)
        return times

    return run


def trainer_stepper(case: Case, device: torch.device, amp: torch.dtype | None) -> Stepper:
    """``transformers.Trainer`` on the same model, tokens, batch and precision (a new Trainer
    per call, continuing the same model; only its training steps are timed)."""
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf = to_hf_model(build_model(case.shape, seed=0))
    data = _tokens(case, 4, torch.device("cpu")).reshape(4 * case.batch, -1)[:, :-1]
    rows = [{"input_ids": r, "labels": r} for r in data]

    def run(n: int) -> list[float]:
        times: list[float] = []

        class Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001, ANN201
                _sync(device)
                self.t = CLOCK()

            def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN201
                _sync(device)
                times.append(CLOCK() - self.t)

        with tempfile.TemporaryDirectory() as out:
            args = TrainingArguments(
                output_dir=out,
                per_device_train_batch_size=case.batch,
                max_steps=n,
                learning_rate=LR,
                adam_beta2=0.95,
                weight_decay=0.1,
                max_grad_norm=1.0,
                optim="adamw_torch_fused",
                lr_scheduler_type="constant",
                logging_strategy="no",
                save_strategy="no",
                report_to="none",
                use_cpu=device.type == "cpu",
                bf16=amp is torch.bfloat16,
                dataloader_num_workers=0,
                disable_tqdm=True,
                seed=0,
            )
            trainer = Trainer(model=hf, args=args, train_dataset=rows * (1 + n // 4), callbacks=[Timer()])
            trainer.remove_callback(PrinterCallback)
            trainer.train()
        return times

    return run


def interleaved(
    steppers: dict[str, Stepper], case: Case, rounds: int = 7
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Each stepper's tokens/s (its median step) and, per round, its median step time: warm-up
    steps, then ``rounds`` rounds taking turns, so that a change of machine load hits every
    contender alike and a ratio taken within a round compares steps run seconds apart."""
    times: dict[str, list[float]] = {k: [] for k in steppers}
    per_round_s: dict[str, list[float]] = {k: [] for k in steppers}
    for run in steppers.values():
        run(case.warmup)
    per_round = max(1, math.ceil(case.steps / rounds))
    for _ in range(rounds):
        for k, run in steppers.items():
            t = run(per_round)
            times[k] += t
            per_round_s[k].append(_median(t))
    return {k: case.batch * case.shape.seq_len / _median(v) for k, v in times.items()}, per_round_s


def paired_ratio(
    per_round_s: dict[str, list[float]], base: str, ours: str = "ours"
) -> tuple[float, float, float]:
    """Median, min and max over rounds of ``base``'s step time over ours in the same round."""
    r = [b / o for b, o in zip(per_round_s[base], per_round_s[ours], strict=True)]
    return _median(r), min(r), max(r)


def _paired(r: tuple[float, float, float]) -> str:
    return f"{r[0]:>6.2f}x ({r[1]:.2f}-{r[2]:.2f})"


CONTENDERS = ("ours", "trainer", "plain")
RESULT = "@@ "  # a worker's answer line (libraries may print other lines)


def _cpu_stepper(kind: str, case: Case, compile_: bool) -> Stepper:
    cpu = torch.device("cpu")
    if kind == "ours":
        return ours_stepper(case, cpu, None, compile_)
    return trainer_stepper(case, cpu, None) if kind == "trainer" else plain_hf_stepper(case, cpu, None)


def worker(args: argparse.Namespace) -> None:
    """One contender in its own process: read a step count per line, answer its step times."""
    torch.set_num_threads(args.threads)
    case = next(c for c in cpu_cases(args.seq, args.vocab, args.quick) if c.shape.hidden == args.hidden)
    run = _cpu_stepper(args.worker, case, args.compile)
    print(RESULT + "ready", flush=True)
    for line in sys.stdin:
        print(RESULT + json.dumps(run(int(line))), flush=True)


def process_stepper(kind: str, case: Case, args: argparse.Namespace) -> tuple[Stepper, Callable[[], None]]:
    """A stepper whose steps run in a child process of its own: each contender gets a fresh
    process (its own allocator state and caches, nothing set by another contender leaks in)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--clock", args.clock]
    cmd += ["--hidden", str(case.shape.hidden), "--threads", str(args.threads)]
    cmd += ["--seq", str(args.seq), "--vocab", str(args.vocab)]
    cmd += ["--quick"] if args.quick else []
    cmd += ["--compile"] if args.compile else []
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def answer() -> str:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(RESULT):
                return line[len(RESULT) :]
        raise RuntimeError(f"benchmark worker {kind} exited with {proc.wait()}")

    answer()

    def run(n: int) -> list[float]:
        assert proc.stdin is not None
        proc.stdin.write(f"{n}\n")
        proc.stdin.flush()
        return [float(t) for t in json.loads(answer())]

    def close() -> None:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()

    return run, close


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]


def run_cpu(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    peak = matmul_peak(device, torch.float32)
    # built here once, before any worker starts; ours falls back to PyTorch's kernels without it
    attention = "compiled causal op" if causal_attention.available() else "PyTorch flash kernels (no op)"
    print(
        f"CPU, {args.threads} thread(s), {args.clock} clock; fp32 matmul peak measured now: {peak / 1e9:.1f} GFLOP/s; "
        f"our attention: {attention}"
    )
    print(
        f"{'shape':>6} {'ours tok/s':>10} {'Trainer':>8} {'x Trainer':>9} {'paired (min-max)':>17} "
        f"{'plain HF':>8} {'x plain':>7} {'paired (min-max)':>17} {'GFLOP/s':>8} {'of peak':>7}"
    )
    rows = []
    for case in cpu_cases(args.seq, args.vocab, args.quick):
        workers = {k: process_stepper(k, case, args) for k in CONTENDERS}
        try:
            tps, per_round = interleaved({k: w[0] for k, w in workers.items()}, case)
        finally:
            for _, close in workers.values():
                close()
        ours, trainer, plain = tps["ours"], tps["trainer"], tps["plain"]
        vs_trainer, vs_plain = paired_ratio(per_round, "trainer"), paired_ratio(per_round, "plain")
        fl = ours * flops_per_token(case.shape, "matmul")
        s = case.shape
        row = {
            "shape": f"{s.hidden}x{s.layers}",
            "ours_tokens_per_s": ours,
            "trainer_tokens_per_s": trainer,
            "ratio_vs_trainer": ours / trainer,
            "paired_ratio_vs_trainer": vs_trainer[0],
            "paired_ratio_vs_trainer_range": vs_trainer[1:],
            "plain_hf_tokens_per_s": plain,
            "ratio_vs_plain": ours / plain,
            "paired_ratio_vs_plain": vs_plain[0],
            "paired_ratio_vs_plain_range": vs_plain[1:],
            "rounds": len(per_round["ours"]),
            "flops_per_s": fl,
            "fraction_of_peak": fl / peak,
            "plain_fraction_of_peak": plain * flops_per_token(s, "matmul") / peak,
        }
        rows.append(row)
        print(
            f"{row['shape']:>6} {ours:>10.0f} {trainer:>8.0f} {ours / trainer:>8.2f}x "
            f"{_paired(vs_trainer)} {plain:>8.0f} {ours / plain:>6.2f}x "
            f"{_paired(vs_plain)} {fl / 1e9:>8.1f} {fl / peak:>7.1%}"
        )
        sys.stdout.flush()
    return {
        "device": "cpu",
        "threads": args.threads,
        "peak_flops": peak,
        "attention": attention,
        "rows": rows,
    }


def run_cuda(args: argparse.Namespace) -> dict:
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    peak = gpu_peak_flops(name, torch.bfloat16)
    measured = matmul_peak(device, torch.bfloat16, seconds=3)
    shape = ModelShape(layers=12, hidden=768, heads=12, vocab=32000, seq_len=1024)
    case = Case(shape, batch=args.batch, steps=20, warmup=5 if args.compile else 3)
    print(
        f"{name}: datasheet dense bf16 peak {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s, "
        f"measured bf16 matmul {measured / 1e12:.0f} TFLOP/s"
    )
    print(
        f"model {shape.params / 1e6:.0f}M params, seq {shape.seq_len}, batch {case.batch} x {shape.seq_len} tokens, bf16"
    )
    t = time.perf_counter()
    run = ours_stepper(case, device, torch.bfloat16, args.compile)
    run(case.warmup)
    ours = case.batch * shape.seq_len / _median(run(case.steps))
    t_ours = time.perf_counter() - t
    fpt = flops_per_token(shape, "matmul")
    mfu = ours * fpt / peak if peak else None
    out = {
        "device": name,
        "params": shape.params,
        "ours_tokens_per_s": ours,
        "mfu": mfu,
        "mfu_vs_measured_matmul": ours * fpt / measured,
        "compile": args.compile,
        "seconds_ours": t_ours,
    }
    print(
        f"ours{' (compiled)' if args.compile else ''}: {ours:,.0f} tok/s, MFU {mfu:.1%} of datasheet peak, "
        f"{ours * fpt / measured:.1%} of measured matmul peak ({t_ours:.0f}s incl. warmup)"
    )
    if not args.no_baseline:
        torch.cuda.empty_cache()
        run = trainer_stepper(case, device, torch.bfloat16)
        run(3)
        trainer = case.batch * shape.seq_len / _median(run(10))
        out |= {"trainer_tokens_per_s": trainer, "ratio_vs_trainer": ours / trainer}
        print(f"HF Trainer (bf16): {trainer:,.0f} tok/s; ours / Trainer = {ours / trainer:.2f}x")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=16, help="sequences per step on CUDA")
    ap.add_argument("--compile", action="store_true", help="torch.compile our loss (CUDA: recommended)")
    ap.add_argument("--no-baseline", action="store_true", help="CUDA: skip the Trainer baseline")
    ap.add_argument("--quick", action="store_true", help="fewer timed steps (noisier)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    ap.add_argument("--hidden", type=int, help=argparse.SUPPRESS)
    ap.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: time by process CPU time (use with --threads 1 on a busy machine)",
    )
    args = ap.parse_args()
    if args.clock == "cpu":
        global CLOCK
        CLOCK = time.process_time
    if args.worker:
        worker(args)
        return
    res = run_cuda(args) if args.device == "cuda" else run_cpu(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    assert all(math.isfinite(v) for r in res.get("rows", []) for v in r.values() if isinstance(v, float))


if __name__ == "__main__":
    main()
