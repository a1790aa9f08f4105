"""Nanotron sweeps launched by ``scaling sweep launch`` on a real single-node Slurm with fake GPUs.

There is no CUDA here, so a stand-in program takes torchrun's place (``backend_options.torchrun``).
It plays only Nanotron's part, read from the config our backend wrote: resume from
``latest.txt`` under ``checkpoints.resume_checkpoint_path``, train ``tokens.train_steps`` steps,
write ``latest.txt`` every ``checkpoints.checkpoint_interval`` steps. The rest is ours and real:
the sweep engine's Slurm jobs (submitit, sbatch arrays, gres GPUs, requeue on pre-emption), the
backend's config and torchrun command, and the entry point's own pieces that the stand-in calls
where the entry point would (:func:`begin_attempt` at the start of each attempt, the metrics rows,
``result.json``).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from scaling.backends.nanotron import launch
from tests.slurm_harness import unavailable_reason

pytestmark = [pytest.mark.slurm, pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))]

ROOT = Path(__file__).resolve().parents[1]

STAND_IN = textwrap.dedent('''
    """Stands in for torchrun and Nanotron (no CUDA here); the entry point's own pieces are real."""
    import json, os, sys, time
    from pathlib import Path
    import yaml
    from scaling.backends.nanotron.entry import CONFIG_NAME, MetricsRecorder, begin_attempt, build_result
    from scaling.runspec import RunSpec
    from scaling.store import RunDir

    argv = sys.argv[1:]
    rd = RunDir(argv[argv.index("--run-dir") + 1])
    attempt = len(list(rd.path.glob("standin-*.json")))
    keys = ["CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_NODEID", "SLURM_JOB_NUM_NODES",
            "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID", "CUDA_DEVICE_MAX_CONNECTIONS", "OMP_NUM_THREADS"]
    (rd.path / f"standin-{attempt}.json").write_text(json.dumps({"argv": argv, "env": {k: os.environ.get(k) for k in keys}}))
    begin_attempt(rd)                                   # the entry point, rank 0, before Nanotron starts
    cfg = yaml.safe_load((rd.path / CONFIG_NAME).read_text())
    ck = cfg["checkpoints"]                             # Nanotron's part from here
    latest = Path(ck["resume_checkpoint_path"] or "/nonexistent") / "latest.txt"
    start = int(latest.read_text()) if latest.exists() else 0
    spec = RunSpec.from_json_dict(rd.read_spec())
    rec = MetricsRecorder(rd, spec, gpus=1, peak_flops=None)
    preempt_after = int(os.environ.get("STANDIN_PREEMPT_AFTER") or 0)
    for step in range(start + 1, cfg["tokens"]["train_steps"] + 1):
        rec.append({**rec.row(step=step, loss=10.0 / step, lr=1e-3, step_s=0.01), "attempt": attempt})
        if step % ck["checkpoint_interval"] == 0:
            (Path(ck["checkpoints_path"]) / str(step)).mkdir(parents=True, exist_ok=True)
            (Path(ck["checkpoints_path"]) / "latest.txt").write_text(str(step))
        if attempt == 0 and step == preempt_after:
            time.sleep(120)                             # "training" on until the job is pre-empted
    rd.write_result(build_result(spec, rd.read_metrics(), eval_loss_value=None, wall_time=1.0,
                                 train_tokens_available=10**6, extra={"stand_in": True}))
''')


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))  # jobs import scaling
    p = tmp_path / "torchrun_stand_in.py"
    p.write_text(STAND_IN)
    return f"{sys.executable} {p}"


def _sweep(tmp_path: Path, stand_in: str, sizes: list[int], **backend_options) -> Path:
    corpus = tmp_path / "corpus.txt"
    words = ["the", "king", "and", "lord", "spake", "unto", "thee", "thou", "said", "of"]
    corpus.write_text("\n".join(" ".join(words[(i * 7 + j) % 10] for j in range(12)) for i in range(800)))
    path = tmp_path / "nanotron_sweep.yaml"
    path.write_text(yaml.safe_dump({
        "name": "nanotron-slurm-test", "backend": "nanotron",
        "backend_options": {"gpus_per_node": 2, "torchrun": stand_in, **backend_options},
        "data": {"source": str(corpus), "tokenizer": "bpe", "val_frac": 0.1},
        "model": {"vocab": 296, "seq_len": 32},
        "train": {"batch": {"rule": "fixed", "tokens": 256}, "lr": {"rule": "fixed", "value": 1e-3}},
        "grid": {"kind": "runs", "runs": [{"size": {"layers": 2, "hidden": h, "heads": 4}, "tokens": 5120} for h in sizes]},
        "executor": {"kind": "slurm", "retries": 0, "slurm": {"time_min": 5, "gpus_per_node": 2}},
    }))  # fmt: skip
    return path


def _launch(spec_path: Path, out: Path) -> dict:
    from scaling.sweep.launcher import launch as sweep_launch
    from scaling.sweep.spec import load_spec

    return sweep_launch(load_spec(spec_path), out, progress=None)


def test_sweep_of_nanotron_runs_on_slurm(slurm_cluster, tmp_path, stand_in):
    """The sweep engine asks the backend for its Slurm shape (one task per node with its GPUs),
    prepares the data once, and each run's task gets the torchrun command and environment."""
    from scaling.store import load_runs

    out = tmp_path / "study"
    summary = _launch(_sweep(tmp_path, stand_in, [64, 128]), out)
    assert summary["done"] == 2 and summary["failed"] == 0, summary
    df = load_runs(out)
    assert set(df["status"]) == {"done"} and df["stand_in"].all()
    for rd in (out / "runs").iterdir():
        rec = json.loads((rd / "standin-0.json").read_text())
        argv, env = rec["argv"], rec["env"]
        assert argv[:2] == ["--nnodes=1", "--nproc_per_node=2"] and "--rdzv_backend=c10d" in argv
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}" if env["SLURM_ARRAY_JOB_ID"] else env["SLURM_JOB_ID"]
        assert f"--rdzv_id={job}" in argv  # unique per run, the same on every node of one
        assert any(a.endswith(f":{launch.rdzv_port(29500, job)}") for a in argv if a.startswith("--rdzv_endpoint="))
        assert argv[-4:] == ["-m", "scaling.backends.nanotron.entry", "--run-dir", str(rd.resolve())]
        assert env["CUDA_DEVICE_MAX_CONNECTIONS"] == "1" and env["SLURM_GPUS_ON_NODE"] == "2"
        assert len(env["CUDA_VISIBLE_DEVICES"].split(",")) == 2  # two of the node's four fake GPUs
        cfg = yaml.safe_load((rd / "nanotron" / "config.yaml").read_text())
        assert cfg["parallelism"]["dp"] * cfg["parallelism"]["tp"] * cfg["parallelism"]["pp"] == 2
        folder = Path(cfg["data_stages"][0]["data"]["dataset"]["dataset_folder"][0])
        assert folder.is_relative_to((out / "data").resolve()) and (folder / "train.ds").exists()
        assert "scaling.backends.nanotron.entry" in (rd / "nanotron" / "logs" / "node0.log").read_text()
    sbatch = "\n".join(p.read_text() for p in out.rglob("*_submission.sh"))
    assert "#SBATCH --ntasks-per-node=1" in sbatch and "#SBATCH --gpus-per-node=2" in sbatch


@pytest.mark.parametrize("how", ["controller-requeue", pytest.param("usr2", marks=pytest.mark.slow)])
def test_preempted_run_resumes_from_its_checkpoint_and_loses_no_metric(slurm_cluster, tmp_path, stand_in, monkeypatch, how):
    """Pre-empted at step 7 with a checkpoint at step 5, by the controller (SIGTERM to every
    process, then SIGKILL; queued again) or by Slurm's warning signal (USR2: submitit checkpoints
    the sweep's task and requeues it): the backend relaunches, Nanotron resumes at step 6 from the
    config's resume path, and the entry point drops the first attempt's rows of steps 6-7, so
    every step is logged exactly once."""
    c = slurm_cluster
    monkeypatch.setenv("STANDIN_PREEMPT_AFTER", "7")
    out = tmp_path / "study"
    spec_path = _sweep(tmp_path, stand_in, [64], checkpoint_interval=5)
    summary: dict = {}
    thread = threading.Thread(target=lambda: summary.update(_launch(spec_path, out)), daemon=True)
    thread.start()
    end = time.monotonic() + 90
    rd = None
    while rd is None or not (rd / "checkpoints" / "latest.txt").exists() or len((rd / "metrics.jsonl").read_text().splitlines()) < 7:
        assert time.monotonic() < end and thread.is_alive(), (c.squeue(), summary)
        rd = next(iter((out / "runs").glob("*/")), None) if (out / "runs").exists() else None
        time.sleep(0.3)
    job_id = json.loads((rd / "status.json").read_text())["job_id"]
    with c.releasing_requeued() as released:
        if how == "usr2":
            c.cmd("scancel", "--signal=USR2", job_id)
        else:
            c.cmd("scontrol", "requeue", job_id)
        thread.join(timeout=120)
    assert not thread.is_alive(), c.squeue()
    assert released == [job_id]  # it really went back to the queue
    assert summary["done"] == 1 and summary["failed"] == 0, summary
    rows = [json.loads(line) for line in (rd / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows]
    assert steps == list(range(1, 21)), steps  # nothing lost, nothing twice
    assert {r["attempt"] for r in rows if r["step"] <= 5} == {0}  # kept from before the pre-emption
    assert {r["attempt"] for r in rows if r["step"] > 5} == {1}  # logged again after resuming at step 6
    status = json.loads((rd / "status.json").read_text())
    assert status["state"] == "done" and (how != "usr2" or status["requeues"] == 1)  # RunTask.checkpoint counts it
    first, second = (json.loads((rd / f"standin-{i}.json").read_text()) for i in (0, 1))
    assert second["argv"] == first["argv"]  # the same launch: Nanotron finds latest.txt itself
