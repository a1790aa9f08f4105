"""The main job's code path, reduced: `scaling run` on 16 tiny runs, real training, fits, SFT, a
reward model, RLHF, DPO and the report, then a rerun that finds every stage done, and a resume after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.conftest import TINY_SPEC as SPEC

pytestmark = pytest.mark.timeout(900)
SUMMARY_KEYS = {"minutes", "stage_minutes", "budgets", "backtest", "exponents", "report"}
BACKTEST_KEYS = {"predicted_loss", "achieved_loss", "error", "baselines", "n_opt_predicted", "n_opt_observed", "n_opt_form"}


@pytest.fixture
def study(tiny_study):
    return tiny_study


def test_summary_has_every_key_the_cli_promises(study):
    out, report, s, _ = study
    assert set(s) >= SUMMARY_KEYS
    assert set(s["backtest"]) >= BACKTEST_KEYS
    assert set(s["backtest"]["baselines"]) == {"previous_budget", "power_law_on_minima"}
    rows = {(e["approach"], e["param_convention"]): e for e in s["exponents"]}
    assert {("3", "total"), ("3", "non_embedding")} <= set(rows)
    for conv in ("non_embedding", "total"):
        assert 0 < rows["3", conv]["a"] < 2
        # approach 3's allocation solves C = 6 N D with N as it counts
        assert rows["3", conv]["flops_convention"] == ("6N" if conv == "total" else "6N_non_embedding")
    assert [b["flops"] for b in s["budgets"]] == [5e8, 1e9, 2e9, 4e9]
    assert set(s["stage_minutes"]) == {"plan", "sweep", "extend", "fit", "backtest", "predict", "select", "align", "report"}
    assert s["predict"]["chosen"] in {r["name"] for r in s["predict"]["candidates"]}
    # the extension stage looked at every budget; whatever it added ran (16 runs in the grid)
    ext = s["extend"]
    assert [b["budget"] for b in ext["budgets"]] == [5e8, 1e9, 2e9, 4e9]
    assert {b["state"] for b in ext["budgets"]} <= {"bracketed", "capped", "ladder ends"}
    assert all(a["kind"] == "extend" and a["reason"].startswith("extend ") for a in ext["added"])
    assert s["runs"]["done"] == 16 + len(ext["added"]) and s["runs"]["failed"] == 0
    assert Path(s["report"]) == report and report.stat().st_size > 1_000_000


def test_every_stage_left_its_artifact(study):
    out = study[0]
    for rel in ("plan.json", "sweep.yaml", "fit/approach3_total.json", "fit/approach3_non_embedding.json",
                "fit/kaplan_total.json", "fit/kaplan_non_embedding.json", "fit/backtest.json", "fit/predict.json", "select.json",
                "align/summary.json", "summary.json"):
        assert (out / rel).exists(), rel
    bt = json.loads((out / "fit/backtest.json").read_text())
    assert len(bt["candidates"]) == 4  # two forms x two parameter conventions
    # the headline law was chosen on the budgets below the largest one only
    inner = [c for c in bt["candidates"] if c.get("inner") and c["param_convention"] == "total"]
    best = min(inner, key=lambda c: abs(c["inner"]["error"]))
    assert (best["form"], best["param_convention"]) == (bt["chosen"]["form"], bt["chosen"]["param_convention"])
    assert 4e9 not in bt["chosen"]["fit_budgets"]
    # N* at the largest budget comes from the form that located the second-largest's vertex best
    located = [c for c in inner if c["inner"].get("n_opt_error") is not None]
    if located:
        best_n = min(located, key=lambda c: abs(c["inner"]["n_opt_error"]))
        assert bt["n_opt"]["form"] == best_n["form"]
        assert bt["n_opt"]["n_opt_predicted"] == best_n["outer"]["n_opt_predicted"]
        assert study[2]["backtest"]["n_opt_form"] == best_n["form"]
        assert study[2]["backtest"]["n_opt_predicted"] == best_n["outer"]["n_opt_predicted"]
    # the law that predicts counts N and C as the spec does (model.count, train.flops_convention)
    pr = json.loads((out / "fit/predict.json").read_text())
    assert (pr["param_convention"], pr["flops_convention"]) == ("non_embedding", "6N_non_embedding")
    chosen = json.loads((out / "select.json").read_text())
    align = json.loads((out / "align/summary.json").read_text())
    assert chosen["run_id"] in {p.name for p in (out / "runs").iterdir()}
    assert [r["stage"] for r in align["table"]] == ["base", "sft", "rlhf", "dpo"]
    # the tasks are cut from the study's own corpus, as its runs read it (source, truncation, held-out part)
    assert (align["tasks"]["corpus"], align["tasks"]["max_chars"], align["tasks"]["tail_frac"]) == (
        "builtin:default", 1_500_000, 0.05)
    s = study[2]
    assert s["align_flags"] == align["flags"]
    assert set(s["align_stage_minutes"]) == {"sft", "pairs", "reward", "judge", "rlhf", "dpo"}


def test_the_reduced_study_costs_under_three_cpu_minutes(study):
    """CPU time, not wall time: the suite's other worker shares the cores (120 CPU-s, 88 s wall alone here)."""
    assert study[3] < 180 or os.environ.get("SCALING_SLOW_MACHINE"), f"took {study[3]:.0f} CPU-seconds"


def test_a_second_run_finds_every_stage_done(study, tmp_path):
    src, _, s, _ = study
    out, report = tmp_path / "study", tmp_path / "study.html"
    shutil.copytree(src, out)
    attempts = {p.name: json.loads((p / "status.json").read_text())["attempts"] for p in (out / "runs").iterdir()}
    proc = run_cli("run", str(SPEC), "--out", str(out), "--report", str(report), "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads(proc.stdout)
    assert again["backtest"] == s["backtest"]
    assert again["stage_minutes"] == s["stage_minutes"]  # recorded minutes, nothing rerun
    after = {p.name: json.loads((p / "status.json").read_text())["attempts"] for p in (out / "runs").iterdir()}
    assert after == attempts


def test_a_changed_spec_reruns_the_stages_and_keeps_the_runs(study, tmp_path):
    """Repeats added to the spec of a finished study: every stage runs again (not "already done"
    with the setting ignored), the new seeds are trained, the finished runs are not, and the fit
    measures the noise from the repeats."""
    src = study[0]
    out = tmp_path / "study"
    shutil.copytree(src, out)
    spec = tmp_path / "repeats.yaml"
    spec.write_text(SPEC.read_text().replace("  kind: isoflop\n", "  kind: isoflop\n  repeats: {seeds: [7], at: optimum}\n"))
    attempts = {p.name: json.loads((p / "status.json").read_text())["attempts"] for p in (out / "runs").iterdir()}
    proc = run_cli("run", str(spec), "--out", str(out), "--report", str(tmp_path / "r.html"), "--no-align", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "grid.repeats differ from the study's sweep.yaml" in proc.stderr
    assert "stage fit done" in proc.stderr and "stage fit already done" not in proc.stderr
    after = {p.name: json.loads((p / "status.json").read_text())["attempts"] for p in (out / "runs").iterdir()}
    assert {k: after[k] for k in attempts} == attempts  # no finished run trained again
    assert len(after) == len(attempts) + 4  # one seed at each of the 4 budgets' optima
    assert json.loads((out / "fit" / "noise.json").read_text())["pooled_dof"] == 4


def test_killed_study_resumes_where_it_stopped(study, tmp_path):
    """Kill `scaling run` (SIGKILL, whole process group) once the fit is written, then rerun."""
    src = study[0]
    out = tmp_path / "study"
    # start from the finished sweep, forget every stage after it: the rerun must redo only those
    shutil.copytree(src, out)
    for stage in ("extend", "fit", "backtest", "predict", "select", "align", "report"):
        (out / "stages" / f"{stage}.json").unlink()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "scaling", "run", str(SPEC), "--out", str(out), "--report",
                             str(tmp_path / "r.html"), "--quiet"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "stages" / "backtest.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "stages" / "backtest.json").exists()
    assert not (out / "stages" / "report.json").exists()
    res = run_cli("run", str(SPEC), "--out", str(out), "--report", str(tmp_path / "r.html"), "--json", timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "stage fit already done" in res.stderr and "stage backtest already done" in res.stderr
    assert "stage report done" in res.stderr
    assert (tmp_path / "r.html").exists()


def test_bad_pipeline_key_is_refused_with_its_name(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(SPEC.read_text().replace("bootstrap: 50", "bootstrapp: 50"))
    proc = run_cli("run", str(spec), "--out", str(tmp_path / "s"))
    assert proc.returncode == 2
    assert "pipeline.bootstrapp" in proc.stderr
