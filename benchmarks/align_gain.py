"""What SFT and DPO change, on held-out data: the base -> SFT -> DPO table and the two targets.

    python benchmarks/align_gain.py                      # trains a tiny model first (local backend)
    python benchmarks/align_gain.py STUDY_DIR            # the study's chosen model (select.json)
    python benchmarks/align_gain.py --model MODEL_DIR

Targets: SFT lowers the held-out completion loss (printed as the ratio SFT / base, < 1), and DPO
lifts the held-out preference accuracy of its implicit reward ``beta * log(pi / pi_ref)`` to at
least 0.75 from 0.5 (at DPO's step 0 the policy is its reference and every reward is 0; ratio
DPO / 0.5), beside the SFT model's plain log-likelihood accuracy on the same pairs. Baselines come
from the same run. The curves (held-out loss per SFT eval step, held-out reward accuracy per DPO eval
step, from the stages' metrics.jsonl) are printed so a missed target shows how far it got.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train_tiny_model(out: Path, threads: int) -> Path:
    """A small model pretrained with the local backend on the built-in corpus (about a minute)."""
    from scaling.backends.base import get_backend
    from scaling.runspec import DataSpec, OptimizerSpec, RunSpec, ShapeSpec
    from scaling.store import RunDir

    # the size the quickstart's law picks at its largest budget (8e11 FLOPs, ~200 tokens per
    # non-embedding parameter): 2 layers of width 32
    hidden = 32
    spec = RunSpec(
        shape=ShapeSpec(layers=2, hidden=hidden, heads=2, vocab=1024, seq_len=128, ffn=3 * hidden),
        tokens=2_048 * 1_500,
        batch_tokens=2_048,
        optimizer=OptimizerSpec(lr=min(1e-2, 0.32 / hidden)),
        data=DataSpec(source="builtin:default"),
        name="align-bench",
        backend_options={"threads": threads},
    )
    backend = get_backend("local")
    backend.prepare([spec], str(out / "data"))
    rd = RunDir(out / "runs" / spec.run_id)
    if not rd.is_done():
        rd.write_spec(spec.to_json_dict())
        backend.train(spec, rd)
    return rd.path / "model"


def curves(out: Path) -> dict[str, list[tuple[int, float]]]:
    from scaling.store import read_jsonl

    sft = [(r["step"], r["eval_loss"]) for r in read_jsonl(out / "sft" / "metrics.jsonl")
           if "eval_loss" in r]
    dpo = [(r["step"], r["eval_rewards/accuracies"]) for r in read_jsonl(out / "dpo" / "metrics.jsonl")
           if "eval_rewards/accuracies" in r]
    return {"sft_eval_loss": sft, "dpo_eval_reward_accuracy": dpo}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", nargs="?", help="a study folder or a model folder")
    ap.add_argument("--model", help="a model folder (save_pretrained + tokenizer)")
    ap.add_argument("--out", help="where align/ goes (default: a temporary folder)")
    ap.add_argument("--sft-steps", type=int, default=60)
    ap.add_argument("--dpo-steps", type=int, default=40)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--loss-type", default="sigmoid")
    ap.add_argument("--demo-train", type=int, default=512)
    ap.add_argument("--demo-eval", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from scaling.align.dpo import DPOOptions
    from scaling.align.run import DemoOptions, align, format_table
    from scaling.align.sft import SFTOptions

    torch.set_num_threads(args.threads)
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="align_gain_"))
    t0 = time.perf_counter()
    model = args.model or args.target
    if model is None:
        print("no model given: pretraining a tiny one with the local backend", file=sys.stderr)
        model = str(train_tiny_model(work / "pretrain", args.threads))
    pretrain_s = time.perf_counter() - t0
    summary = align(
        model,
        work / "align",
        beta=args.beta,
        loss_type=args.loss_type,
        sft=SFTOptions(steps=args.sft_steps, eval_every=max(1, args.sft_steps // 5)),
        dpo=DPOOptions(steps=args.dpo_steps, eval_every=max(1, args.dpo_steps // 5)),
        demo=DemoOptions(n_train=args.demo_train, n_eval=args.demo_eval),
        threads=args.threads,
    )
    table = {r["stage"]: r for r in summary["table"]}
    base, sft, dpo = table["base"], table["sft"], table["dpo"]
    result = {
        "model": summary["base_model"],
        "table": summary["table"],
        "curves": curves(work / "align"),
        "sft_loss_ratio": sft["completion_loss"] / base["completion_loss"],
        "sft_lowers_loss": sft["completion_loss"] < base["completion_loss"],
        "dpo_reward_acc": dpo["pref_acc_reward"],
        # at DPO's step 0 the policy is its reference: every implicit reward is 0, accuracy 0.5
        "dpo_reward_acc_baseline": 0.5,
        "dpo_reward_acc_ratio": dpo["pref_acc_reward"] / 0.5,
        "sft_loglik_acc": sft["pref_acc_loglik"],
        "dpo_reaches_075": dpo["pref_acc_reward"] >= 0.75,
        "pretrain_s": pretrain_s,
        "align_s": summary["minutes"] * 60,
    }
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "table"} | {"table": [
            {k: v for k, v in r.items() if k != "samples"} for r in summary["table"]]}, indent=2))
        return 0
    for row in format_table(summary):
        print("  ".join(f"{c:>28}" if i else f"{c:<6}" for i, c in enumerate(row)))
    print(f"\nSFT held-out completion loss: {sft['completion_loss']:.4f} vs base {base['completion_loss']:.4f} "
          f"(ratio {result['sft_loss_ratio']:.3f}; target < 1: {'met' if result['sft_lowers_loss'] else 'MISSED'})")
    print(f"DPO held-out implicit-reward accuracy: {dpo['pref_acc_reward']:.3f} vs 0.500 at step 0, policy = "
          f"reference (ratio {result['dpo_reward_acc_ratio']:.2f}; target >= 0.75: "
          f"{'met' if result['dpo_reaches_075'] else 'MISSED'}); the SFT model's own log-likelihood ranks "
          f"{sft['pref_acc_loglik']:.3f} of the pairs right")
    print(f"log-likelihood preference accuracy: base {base['pref_acc_loglik']:.3f}, SFT {sft['pref_acc_loglik']:.3f}, "
          f"DPO {dpo['pref_acc_loglik']:.3f}")
    c = result["curves"]
    print("SFT held-out loss by step: " + ", ".join(f"{s}: {v:.4f}" for s, v in c["sft_eval_loss"]))
    print("DPO held-out reward accuracy by step: " + ", ".join(f"{s}: {v:.3f}" for s, v in c["dpo_eval_reward_accuracy"]))
    for r in summary["table"]:
        s = r["samples"][0]
        print(f"{r['stage']:>5}: ...{s['prompt'][-50:]!r} -> {s['generation']!r}")
    print(f"pretrain {pretrain_s:.0f}s, align {result['align_s']:.0f}s; outputs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
