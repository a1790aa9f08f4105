"""Nanotron GPU-hours: from the assumed MFU until runs of the study finish, then from the MFU they
measured. No GPU here: the finished runs are recorded ones, their ``result.json`` written by the
entry point's own :func:`~scaling.backends.nanotron.entry.build_result` from per-step rows of the
tokens/s an 8 x H100 node would log (the test says which)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from scaling.backends.nanotron import NanotronBackend
from scaling.backends.nanotron.entry import build_result
from scaling.flops import flops_per_token, training_flops
from scaling.hardware import fit_mfu
from scaling.store import SweepStore
from scaling.sweep import expand, load_spec
from scaling.sweep.launcher import write_store
from scaling.sweep.plan import finished_runs
from scaling.timing import run_estimates

ROOT = Path(__file__).resolve().parents[1]
LADDER = ROOT / "sweeps" / "nanotron_chinchilla.yaml"
H100 = 989.4e12  # dense BF16 FLOP/s (scaling.hardware)
FIXED_S = 900.0  # recorded: start, data, evaluation, checkpoints and conversion outside the steps


def _spec(tmp_path: Path) -> Path:
    spec = yaml.safe_load(LADDER.read_text())
    spec["grid"]["budgets"] = [1.0e19]  # 5 sizes, 135M-551M parameters
    p = tmp_path / "ladder.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _finish(study: Path, spec, mfu: float) -> None:
    """Record a finished run that trained at ``mfu`` on its 8 GPUs (matmul FLOPs), FIXED_S outside its steps."""
    tps = mfu * 8 * H100 / flops_per_token(spec.model_shape, "matmul")
    rows = [{"step": s, "loss": 3.0, "tokens_per_s": tps * (1 + 0.01 * (s % 3 - 1)), "mfu": None} for s in range(1, 50)]
    wall = spec.steps * spec.batch_tokens / tps + FIXED_S
    result = build_result(spec, rows, eval_loss_value=3.1, wall_time=wall, train_tokens_available=10**12)
    SweepStore(study).run(spec.run_id).write_result(result)


def test_gpu_hours_come_from_the_assumed_mfu_then_from_the_measured_one(tmp_path):
    path = _spec(tmp_path)
    runs = sorted(expand(load_spec(path)), key=lambda r: r.params)
    write_store(load_spec(path), tmp_path / "study")
    backend = NanotronBackend()
    assumed = [backend.details(r) for r in runs]
    for r, d in zip(runs, assumed, strict=True):  # matmul FLOPs / (peak x 0.35): the ladder's assumed_mfu
        assert d["mfu_source"] == "assumed" and d["gpu_hours"] == pytest.approx(
            training_flops(r.model_shape, r.tokens, "matmul") / (H100 * 0.35) / 3600)
    assert "assumed MFU" in backend.estimate_basis

    _finish(tmp_path / "study", runs[0], mfu=0.20)  # the smallest ran at 20%, the largest at 40%
    _finish(tmp_path / "study", runs[-1], mfu=0.40)
    finished = finished_runs(tmp_path / "study")
    assert len(finished) == 2
    seconds, _ = run_estimates(backend, runs, 1, finished)  # what the launcher does before its first run
    measured = [backend.details(r) for r in runs]
    for r, d, est in zip(runs, measured, seconds, strict=True):
        work = training_flops(r.model_shape, r.tokens, "matmul")
        assert d["mfu_source"] == "measured" and 0.199 < d["mfu"] < 0.401
        assert d["gpu_hours"] == pytest.approx(work / (H100 * d["mfu"]) / 3600 + FIXED_S * 8 / 3600, rel=0.02)
        assert est == pytest.approx(d["hours"] * 3600)
    assert measured[0]["mfu"] == pytest.approx(0.20, rel=0.02) and measured[-1]["mfu"] == pytest.approx(0.40, rel=0.02)
    mid = fit_mfu([(runs[0].params, 0.20), (runs[-1].params, 0.40)]).at(runs[2].params)
    assert measured[2]["mfu"] == pytest.approx(mid, rel=0.02)  # in between, by size (log-log)
    assert "measured MFU 0.20-0.40 by size (2 finished runs)" in backend.estimate_basis


def test_sweep_plan_says_which_mfu_it_used(tmp_path):
    path = _spec(tmp_path)
    runs = sorted(expand(load_spec(path)), key=lambda r: r.params)
    write_store(load_spec(path), tmp_path / "study")
    before = json.loads(run_cli("sweep", "plan", str(path), "--json", timeout=120).stdout)
    _finish(tmp_path / "study", runs[0], mfu=0.50)
    proc = run_cli("sweep", "plan", str(path), "--study", str(tmp_path / "study"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "GPU-hours at the measured MFU 0.50 (1 finished run)" in " ".join(proc.stdout.split())
    after = json.loads(run_cli("sweep", "plan", str(path), "--study", str(tmp_path / "study"), "--json",
                               timeout=120).stdout)
    assert after["calibrated_on"] == 1 and before["calibrated_on"] == 0
    assert after["est_wall_seconds"] < before["est_wall_seconds"]  # 50% measured beats 35% assumed
    assert {r["mfu"] for r in after["runs"]} == {"0.50 measured"}
    bad = run_cli("sweep", "plan", str(path), "--study", str(tmp_path / "nothing"), timeout=120)
    assert bad.returncode == 2 and "study:" in bad.stderr and "runs/" in bad.stderr


def test_the_progress_line_says_what_the_eta_came_from():
    import io

    from scaling.sweep.progress import LineProgress, Progress

    basis = "GPU-hours at the measured MFU 0.20-0.40 by size (2 finished runs) + 15.0 min a run outside its steps"
    out = io.StringIO()
    show = LineProgress(out)
    for done in (2, 3):
        show(Progress(name="ladder", total=5, done=done, running=1, failed=0, pending=5 - done - 1, skipped=2,
                      retried=0, flops_total=5e19, flops_done=done * 1e19, elapsed_s=60.0, eta_s=7200.0,
                      estimate_basis=basis))
    first, second = out.getvalue().splitlines()
    assert first.endswith(f"ETA 2:00:00 ({basis})") and second.endswith("ETA 2:00:00")
