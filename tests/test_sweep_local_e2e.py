"""The sweep engine with the real local trainer: tiny Llama models on real text, in separate processes.

A run process is SIGKILLed mid-training; ``resume`` then finishes it from its checkpoint, the run
that had finished is not run again, and no metric line is lost or repeated.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import scaling
import scaling.sweep
from scaling.store import SweepStore
from scaling.sweep import resume, status
from tests.sweep_backends import wait_for

pytest.importorskip("torch")
pytest.importorskip("submitit")
ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
name: local-e2e
backend: local
backend_options: {save_model: false}
data: {source: "builtin:shakespeare", max_chars: 200000}
model: {vocab: 384, seq_len: 64}
train: {batch: 1024, lr: 0.01, checkpoint_every: 10, eval_tokens: 4096, flops_convention: 6N_non_embedding}
grid:
  kind: kaplan_n
  tokens: %d
  sizes: [{layers: 1, hidden: 16, heads: 2}, {layers: 1, hidden: 32, heads: 2}]
executor: {kind: local, retries: 0, poll_s: 0.1}
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # the tokenized corpus, shared by the tests here




@pytest.mark.slow
def test_sigkill_of_a_run_then_resume(tmp_path, cache):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC % 51_200)  # 50 steps each; the wider run does more work per step
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "scaling", "sweep", "launch", str(spec), "--out", str(out), "--max-parallel", "2",
         "--cache-dir", str(cache), "--json"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = SweepStore(out)

    from scaling.backends.local.checkpoint import latest_checkpoint

    def victim():
        for rd in store.runs():
            if rd.read_spec()["name"].startswith("L1H32") and latest_checkpoint(rd.checkpoints) and not rd.is_done():
                return rd
        return None

    wait_for(lambda: victim() is not None, 180, "the larger run checkpoints")
    rd = victim()
    st = rd.read_status()
    os.kill(int(st["pid"]), signal.SIGKILL)  # the run's own process, mid-training
    before = {int(m["step"]): m["loss"] for m in rd.read_metrics()}
    stdout, stderr = launcher.communicate(timeout=180)
    assert launcher.returncode == 1, stderr  # retries: 0, so the killed run is reported failed
    summary = json.loads(stdout)
    assert summary["failed"] == 1 and summary["done"] == 1
    assert status(out)["counts"] == {**status(out)["counts"], "failed": 1, "done": 1}
    other = next(r for r in store.runs() if r.run_id != rd.run_id)
    other_result = other.read_result()
    mtime = (other.path / "result.json").stat().st_mtime_ns

    s = resume(out, executor="local", progress=False, cache_dir=cache)
    assert s["done"] == 2 and s["skipped"] == 1 and s["failed"] == 0
    assert (other.path / "result.json").stat().st_mtime_ns == mtime and other.read_result() == other_result
    result = rd.read_result()
    assert result["resumed_from_step"] is not None and result["resumed_from_step"] >= 10
    steps = [int(m["step"]) for m in rd.read_metrics()]
    assert steps == list(range(1, result["steps"] + 1))  # every step once: none lost, none repeated
    after = {int(m["step"]): m["loss"] for m in rd.read_metrics()}
    assert all(after[k] == v for k, v in before.items() if k <= result["resumed_from_step"])  # kept as written
    assert rd.read_status()["attempts"] == 2
    df = scaling.load_runs(out)
    assert set(df["status"]) == {"done"} and (df["eval_loss"] < 6.0).all()  # ln(384) = 5.95: they learned


@pytest.mark.slow
def test_wsd_branches_train_from_their_trunk(tmp_path, cache):
    """The trunk runs first; each cooldown branch starts from the trunk's checkpoint at its branch point."""
    spec = tmp_path / "wsd.yaml"
    spec.write_text("""\
name: wsd-e2e
backend: local
backend_options: {save_model: false}
data: {source: "builtin:shakespeare", max_chars: 200000}
model: {vocab: 384, seq_len: 64}
train: {batch: 1024, lr: 0.01, checkpoint_every: 10, eval_tokens: 4096, schedule: {kind: wsd, warmup_frac: 0.05, final_frac: 0.0}}
grid: {kind: wsd_branches, sizes: [{layers: 1, hidden: 16, heads: 2}], tokens: [40960, 81920], cooldown_frac: 0.25}
executor: {kind: debug, retries: 0}
""")
    s = scaling.sweep.launch(spec, tmp_path / "out", progress=False, cache_dir=cache)
    assert s["done"] == 3 and s["failed"] == 0
    df = scaling.load_runs(tmp_path / "out").sort_values("steps")
    trunk = df[df["branch_of"].isna()].iloc[0]
    branches = df[df["branch_of"].notna()]
    assert set(branches["branch_of"]) == {trunk["run_id"]} and len(branches) == 2
    long = SweepStore(tmp_path / "out").run(branches.iloc[-1]["run_id"])
    tr = SweepStore(tmp_path / "out").run(trunk["run_id"])
    start = long.read_spec()["branch_from_tokens"] // 1024
    # the branch's first steps are the trunk's, copied; the cooldown is its own
    assert [m["loss"] for m in long.read_metrics()[:start]] == [m["loss"] for m in tr.read_metrics()[:start]]
    assert branches.iloc[-1]["eval_loss"] < trunk["eval_loss"]  # more tokens, and a cooldown: lower loss
