"""Nanotron runs launched through submitit on a real single-node Slurm with fake GPU gres.

There is no CUDA here, so a stand-in program takes torchrun's place (``backend_options.torchrun``):
it records the command line, environment and files it was started with, simulates Nanotron's
checkpoint/resume bookkeeping (``checkpoints/latest.txt``), and writes a ``result.json`` marked
``stand_in``. Everything else is real: submitit's SlurmExecutor, sbatch job arrays, gres GPU
allocation, srun task placement, our NanotronJob, config generation and torchrun command.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from nanotron_study import make_study, nanotron_spec

from scaling.backends.nanotron import launch
from scaling.runspec import RunSpec
from tests.slurm_harness import unavailable_reason

pytestmark = [pytest.mark.slurm, pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))]

ROOT = Path(__file__).resolve().parents[1]

STAND_IN = textwrap.dedent('''
    """Stands in for torchrun (no CUDA here): records what it was given, then plays Nanotron's part."""
    import json, os, sys, time
    from pathlib import Path
    from scaling.store import RunDir

    argv = sys.argv[1:]
    run = Path(argv[argv.index("--run-dir") + 1])
    keys = ["CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_NODEID", "SLURM_JOB_NUM_NODES",
            "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_JOB_ID", "SLURM_RESTART_COUNT", "CUDA_DEVICE_MAX_CONNECTIONS", "OMP_NUM_THREADS"]
    ckpt = run / "checkpoints"
    latest = ckpt / "latest.txt"
    resumed_from = int(latest.read_text()) if latest.exists() else None
    record = {"argv": argv, "env": {k: os.environ.get(k) for k in keys},
              "config": (run / "nanotron" / "config.yaml").exists(), "resumed_from": resumed_from}
    attempt = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    (run / f"standin-{attempt}.json").write_text(json.dumps(record))
    if os.environ.get("STANDIN_PREEMPT") and resumed_from is None:
        ckpt.mkdir(exist_ok=True)
        latest.write_text("5")   # Nanotron writes latest.txt at each checkpoint
        time.sleep(120)          # "training" until the job is pre-empted
    RunDir(run).write_result({"stand_in": True, "resumed_from": resumed_from, "steps": 10})
''')


@pytest.fixture
def stand_in(tmp_path):
    p = tmp_path / "torchrun_stand_in.py"
    p.write_text(STAND_IN)
    return f"{sys.executable} {p}"


@pytest.fixture
def job_env(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))  # jobs import scaling


def _specs(stand_in: str, n: int) -> list[RunSpec]:
    return [nanotron_spec(torchrun=stand_in, gpus_per_node=2).model_copy(update={"seed": i}) for i in range(n)]


def test_array_of_runs_each_sees_its_gpus_and_gets_the_torchrun_command(slurm_cluster, tmp_path, stand_in, job_env):
    c = slurm_cluster
    specs = _specs(stand_in, 2)
    store, _ = make_study(tmp_path / "study", specs[0])
    runs = []
    for s in specs:
        s = RunSpec.from_json_dict(s.to_json_dict())
        rd = store.run(s.run_id)
        rd.write_spec(s.to_json_dict())
        runs.append((s, rd))
    assert len({rd.path for _, rd in runs}) == 2
    jobs = launch.submit(runs, tmp_path / "submitit", time_min=5)
    assert len(jobs) == 2 and len({j.job_id.split("_")[0] for j in jobs}) == 1  # one job array
    c.wait_gone(jobs[0].job_id.split("_")[0], timeout=90)
    seen_gpus = []
    for (spec, rd), job in zip(runs, jobs, strict=True):
        result = job.result()
        assert result["stand_in"] is True and rd.is_done()
        rec = json.loads((rd.path / "standin-0.json").read_text())
        argv, env = rec["argv"], rec["env"]
        assert argv[:2] == ["--nnodes=1", "--nproc_per_node=2"]
        assert "--rdzv_backend=c10d" in argv
        port = launch.rdzv_port(spec.backend_options.get("rdzv_port", 29500), job.job_id)
        assert any(a.startswith("--rdzv_endpoint=") and a.endswith(f":{port}") for a in argv)
        assert f"--rdzv_id={job.job_id}" in argv  # array job id _ task id: unique per run
        assert argv[-4:] == ["-m", "scaling.backends.nanotron.entry", "--run-dir", str(rd.path.resolve())]
        assert env["CUDA_DEVICE_MAX_CONNECTIONS"] == "1" and env["OMP_NUM_THREADS"] == "4"  # 8 CPUs / 2 GPUs
        assert len(env["CUDA_VISIBLE_DEVICES"].split(",")) == 2  # two of the node's four fake GPUs
        assert env["SLURM_GPUS_ON_NODE"] == "2" and env["SLURM_NODEID"] == "0" and env["SLURM_JOB_NUM_NODES"] == "1"
        assert env["SLURM_ARRAY_TASK_ID"] is not None
        assert rec["config"] is True
        cfg = yaml.safe_load((rd.path / "nanotron" / "config.yaml").read_text())
        assert cfg["parallelism"]["dp"] * cfg["parallelism"]["tp"] * cfg["parallelism"]["pp"] == 2
        assert cfg["checkpoints"]["resume_checkpoint_path"] == str((rd.path / "checkpoints").resolve())
        log = (rd.path / "nanotron" / "logs" / "node0.log").read_text()
        assert "scaling.backends.nanotron.entry" in log
        seen_gpus.append(env["SLURM_JOB_GPUS"] or env["CUDA_VISIBLE_DEVICES"])
    sbatch = next((tmp_path / "submitit").glob("*_submission.sh")).read_text()
    assert "#SBATCH --gpus-per-node=2" in sbatch and "#SBATCH --ntasks-per-node=1" in sbatch


def test_preempted_run_is_requeued_and_resumes_from_the_latest_checkpoint(slurm_cluster, tmp_path, stand_in, job_env, monkeypatch):
    c = slurm_cluster
    monkeypatch.setenv("STANDIN_PREEMPT", "1")
    spec = _specs(stand_in, 1)[0]
    store, _ = make_study(tmp_path / "study", spec)
    rd = store.run(spec.run_id)
    (job,) = launch.submit([(spec, rd)], tmp_path / "submitit", time_min=5)
    end = time.monotonic() + 60
    while not (rd.path / "checkpoints" / "latest.txt").exists():  # the first attempt "trains" to step 5
        assert time.monotonic() < end, c.squeue()
        time.sleep(0.3)
    c.requeue(job.job_id)  # as a pre-emption would
    c.wait_gone(job.job_id, timeout=90)
    first = json.loads((rd.path / "standin-0.json").read_text())
    # the last attempt (Slurm may count the requeue twice when the job is signalled as it stops)
    later = sorted(rd.path.glob("standin-*.json"), key=lambda p: int(p.stem.split("-")[1]))[1:]
    assert later, f"no attempt after the requeue: {sorted(p.name for p in rd.path.iterdir())}"
    second = json.loads(later[-1].read_text())
    assert first["resumed_from"] is None and second["resumed_from"] == 5
    assert second["argv"] == first["argv"]  # the same launch; Nanotron finds latest.txt itself
    assert rd.read_result()["resumed_from"] == 5


@pytest.mark.slow
def test_sweep_launch_of_a_nanotron_spec_on_slurm(slurm_cluster, tmp_path, stand_in, job_env):
    """``scaling sweep launch`` with backend nanotron: the sweep engine asks the backend for its
    Slurm shape (one task per node, the GPUs), prepares the data once, and records the results."""
    from scaling.store import load_runs
    from scaling.sweep.launcher import launch as sweep_launch
    from scaling.sweep.spec import load_spec

    corpus = tmp_path / "corpus.txt"
    words = ["the", "king", "and", "lord", "spake", "unto", "thee", "thou", "said", "of"]
    corpus.write_text("\n".join(" ".join(words[(i * 7 + j) % 10] for j in range(12)) for i in range(800)))
    spec_path = tmp_path / "nanotron_sweep.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "nanotron-slurm-test", "backend": "nanotron",
        "backend_options": {"gpus_per_node": 2, "torchrun": stand_in},
        "data": {"source": str(corpus), "tokenizer": "bpe", "val_frac": 0.1},
        "model": {"vocab": 320, "seq_len": 32},
        "train": {"batch": {"rule": "fixed", "tokens": 256}, "lr": {"rule": "fixed", "value": 1e-3}},
        "grid": {"kind": "runs", "runs": [{"size": {"layers": 2, "hidden": 64, "heads": 4}, "tokens": 5120},
                                          {"size": {"layers": 2, "hidden": 128, "heads": 4}, "tokens": 5120}]},
        "executor": {"kind": "slurm", "retries": 0, "slurm": {"time_min": 5, "gpus_per_node": 2}},
    }))  # fmt: skip
    out = tmp_path / "study"
    summary = sweep_launch(load_spec(spec_path), out, progress=None)
    assert summary["done"] == 2 and summary["failed"] == 0, summary
    df = load_runs(out)
    assert set(df["status"]) == {"done"} and df["stand_in"].all()
    for rd in (out / "runs").iterdir():
        rec = json.loads((rd / "standin-0.json").read_text())
        assert rec["env"]["SLURM_GPUS_ON_NODE"] == "2" and rec["env"]["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
        cfg = yaml.safe_load((rd / "nanotron" / "config.yaml").read_text())
        folder = Path(cfg["data_stages"][0]["data"]["dataset"]["dataset_folder"][0])
        assert folder.is_relative_to((out / "data").resolve()) and (folder / "train.ds").exists()
    sbatch = "\n".join(p.read_text() for p in (out).rglob("*_submission.sh"))
    assert "#SBATCH --ntasks-per-node=1" in sbatch and "#SBATCH --gpus-per-node=2" in sbatch
