"""Base, SFT, RLHF and DPO side by side on held-out built-in tasks, with the targets and the curves.

    python benchmarks/align_gain.py STUDY_DIR            # the study's chosen model (select.json), aligned
                                                         # with the settings of its spec's pipeline section
    python benchmarks/align_gain.py --model MODEL_DIR    # a model folder (its run's spec.json names the corpus)
    python benchmarks/align_gain.py STUDY_DIR --out DIR  # where align/ goes (default: a temporary folder)
    python benchmarks/align_gain.py STUDY_DIR --sft-sweep 60,600,2000 [--n-sft 2400]
                                                         # SFT alone at each step count: the trade-off

The table (every number from one run of ``scaling.align.align``): format-following rate, exact-match
accuracy with a bootstrap 95% interval, reward under the judge (a second reward model trained on
pairs disjoint from the first's), KL from the SFT model, training seconds; beside the trivial
baseline (each task kind's answer that ignores the passage, from the SFT training split).

Targets, each printed with its baseline from the same run and the ratio:

* format-following rate below 0.2 for the base model and at least 0.9 after SFT;
* SFT accuracy above the trivial baseline's (met only where the paired bootstrap 95% interval of
  the gain, task by task on the same held-out prompts, lies above 0; the same for the next two);
* reward model held-out pairwise accuracy at least 0.8 (chance 0.5);
* RLHF and DPO each above SFT's held-out accuracy.

SFT's headroom for RL: on the held-out prompts SFT gets wrong, the share where one of 8 replies
sampled at the RL temperature is right. RL can turn a wrong answer right only where the policy
samples the right one; where that share is near 0, the RLHF target is out of the policy's reach.

``--sft-sweep`` fine-tunes the same model with SFT alone at each step count and prints, per count,
its accuracy on the tasks it was fine-tuned on beside its held-out accuracy and the trivial
baseline: where a missed target comes from (a model that fits what it saw and does not carry the
rule over, or one that fits neither).

The curves (SFT held-out loss, reward model held-out accuracy, RL reward and KL, DPO held-out loss
and reward accuracy, per logged step, from each stage's metrics.jsonl) are printed so a missed
target shows how far the stage got.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CURVES = {
    "sft": ("eval_loss",),
    "reward": ("eval_accuracy",),
    "judge": ("eval_accuracy",),
    "rlhf": ("reward", "kl"),
    "dpo": ("eval_loss", "eval_rewards/accuracies"),
}


def curves(out: Path) -> dict[str, list[tuple[int, float]]]:
    from scaling.store import read_jsonl

    got = {}
    for stage, keys in CURVES.items():
        rows = read_jsonl(out / stage / "metrics.jsonl") if (out / stage / "metrics.jsonl").exists() else []
        for k in keys:
            got[f"{stage} {k}"] = [(r["step"], r[k]) for r in rows if k in r]
    return got


def targets(summary: dict[str, Any]) -> list[tuple[str, float | None, float | None, bool | None]]:
    """(target, value, baseline, met) rows."""
    t = {r["stage"]: r for r in summary["table"]}
    triv = (summary.get("trivial") or {}).get("accuracy")
    rm = summary.get("reward_models", {}).get("reward", {}).get("eval_accuracy")

    def acc(stage: str) -> float | None:
        return t.get(stage, {}).get("accuracy")

    def above(stage: str, other: float | None) -> bool:
        """Above ``other``, and (where the table has it) with the paired 95% interval of the gain above 0."""
        gain = t.get(stage, {}).get("gain")
        point = acc(stage) is not None and other is not None and acc(stage) > other
        return point and (gain is None or gain["ci"][0] > 0)

    rows = [
        ("base format-following rate < 0.2", t["base"].get("format_rate"), 0.2,
         t["base"].get("format_rate") is not None and t["base"]["format_rate"] < 0.2),
        ("SFT format-following rate >= 0.9", t.get("sft", {}).get("format_rate"), 0.9,
         (t.get("sft", {}).get("format_rate") or 0) >= 0.9),
        ("SFT accuracy > trivial baseline (paired CI)", acc("sft"), triv, above("sft", triv)),
        ("reward model held-out accuracy >= 0.8", rm, 0.5, rm is not None and rm >= 0.8),
    ]
    for stage in ("rlhf", "dpo"):
        rows.append((f"{stage.upper()} accuracy > SFT's (paired CI)", acc(stage), acc("sft"), above(stage, acc("sft"))))
    return rows


def sft_sweep(model_dir: Path, work: Path, steps: list[int], n_sft: int | None, threads: int | None,
              settings: Any, tasks: Any) -> int:
    """SFT alone at each step count: training-task accuracy, held-out accuracy, the trivial baseline."""
    from dataclasses import replace

    from scaling.align import align

    tasks = tasks if n_sft is None else replace(tasks, n_sft=n_sft)
    print(f"{'SFT steps':>9}  {'tasks':>5}  {'on its training tasks':>22}  {'held out':>20}  {'trivial':>7}  "
          f"{'held out / trivial':>18}  minutes")
    for n in steps:
        sft = replace(settings.sft, steps=n, eval_every=max(1, n // 4))
        s = align(model_dir, work / f"sft_{n}", settings=replace(settings, sft=sft),
                  tasks=tasks, skip_rlhf=True, skip_dpo=True, threads=threads, log=lambda _m: None)
        row = next(r for r in s["table"] if r["stage"] == "sft")
        triv = s["trivial"]["accuracy"]
        lo, hi = row["train_accuracy_ci"]
        hlo, hhi = row["accuracy_ci"]
        print(f"{n:>9}  {tasks.n_sft:>5}  {row['train_accuracy']:.3f} [{lo:.3f}, {hi:.3f}]  "
              f"{row['accuracy']:.3f} [{hlo:.3f}, {hhi:.3f}]  {triv:>7.3f}  {row['accuracy'] / triv:>18.2f}  "
              f"{s['stage_minutes']['sft']:.2f}")
        for f in s["flags"]:
            print(f"           flag: {f['stage']}: {f['reason']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", nargs="?", help="a study folder (select.json) or a model folder")
    ap.add_argument("--model", help="a model folder (save_pretrained + tokenizer)")
    ap.add_argument("--out", help="where align/ goes (default: a temporary folder)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--sft-sweep", help="comma-separated SFT step counts: SFT alone at each, the trade-off")
    ap.add_argument("--n-sft", type=int, help="SFT training tasks for --sft-sweep (default: the built-in count)")
    args = ap.parse_args(argv)
    model = args.model or args.target
    if model is None:
        ap.error("give a study folder or --model MODEL_DIR (e.g. a copy of studies/quickstart)")

    from scaling.align import align
    from scaling.align.compare import format_table
    from scaling.align.run import resolve_model

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="align_gain_"))
    model_dir, study = resolve_model(model)
    if study is not None and (study / "sweep.yaml").exists():  # the settings `scaling run` aligned it with
        from scaling.pipeline import study_align_settings

        settings, tasks = study_align_settings(study)
        print(f"settings: the pipeline section of {study / 'sweep.yaml'}", file=sys.stderr)
    else:
        from scaling.align.run import StageSettings
        from scaling.align.tasks import TaskOptions

        settings, tasks = StageSettings(), TaskOptions()
    if args.sft_sweep:
        return sft_sweep(model_dir, work, [int(x) for x in args.sft_sweep.split(",")], args.n_sft, args.threads,
                         settings, tasks)
    if args.n_sft is not None:
        ap.error("--n-sft goes with --sft-sweep")
    summary = align(model_dir, work / "align", settings=settings, tasks=tasks, threads=args.threads)
    result = {"model": str(model_dir), "targets": targets(summary), "curves": curves(work / "align"),
              "minutes": summary["minutes"], "stage_minutes": summary["stage_minutes"]}
    if args.json:
        print(json.dumps({**result, "table": summary["table"], "trivial": summary["trivial"],
                          "flags": summary["flags"]}, indent=2, default=str))
        return 0
    for row in format_table(summary):
        print("  ".join(f"{c:>22}" if i else f"{c:<8}" for i, c in enumerate(row)))
    rm = summary["reward_models"]
    for name, r in rm.items():
        lo, hi = r["eval_accuracy_ci"]
        print(f"{name} model: held-out pairwise accuracy {r['eval_accuracy']:.3f} [{lo:.3f}, {hi:.3f}] vs chance "
              f"0.500 (ratio {r['eval_accuracy'] / 0.5:.2f}), margin {r['eval_margin']:+.3f}")
    print("\naccuracy by task kind:")
    for r in summary["table"] + [summary["trivial"]]:
        print(f"  {r['stage']:<8} " + ", ".join(f"{k} {v:.3f}" for k, v in r["by_kind"].items()))
    sft = next((r for r in summary["table"] if r["stage"] == "sft"), {})
    if (h := sft.get("headroom") or {}).get("covered") is not None:
        print(f"\nSFT's headroom for RL: of the {h['wrong']} held-out prompts SFT answers wrongly (greedy), "
              f"{h['covered']:.3f} have the right answer among {h['k']} replies sampled at temperature "
              f"{h['temperature']:g} ({h['sampled_accuracy']:.3f} of those replies right; greedy there: 0)")
    print("\ntargets:")
    for name, value, base, met in result["targets"]:
        ratio = f"ratio {value / base:.2f}" if value is not None and base else "ratio -"
        v = "-" if value is None else f"{value:.3f}"
        b = "-" if base is None else f"{base:.3f}"
        print(f"  {name:<40} {v} vs {b} ({ratio}): {'met' if met else 'MISSED'}")
    for f in summary["flags"]:
        print(f"flag: {f['stage']} did not learn: {f['reason']}")
    print("\ncurves (step: value):")
    for k, pts in result["curves"].items():
        if pts:
            step = max(1, len(pts) // 10)
            print(f"  {k}: " + ", ".join(f"{s}: {v:.3f}" for s, v in pts[::step] + ([pts[-1]] if (len(pts) - 1) % step else [])))
    print("\nheld-out examples:")
    for e in summary["examples"][:4]:
        print(f"  [{e['kind']}] ...{e['prompt'][-70:]!r} answer {e['answer']!r}: "
              + ", ".join(f"{s} {r!r}" for s, r in e["replies"].items()))
    print(f"\nalign {summary['minutes']:.1f} min (" + ", ".join(f"{k} {v:.2f}" for k, v in summary["stage_minutes"].items())
          + f"); outputs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
