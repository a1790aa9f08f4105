"""The launcher against a real single-node Slurm (tests/slurm_harness.py): a job array runs to the
end, a failed run is retried, a pre-empted run is requeued and resumes from its checkpoint, and a
cancel stops everything. Runs use the fast backend of tests/sweep_backends.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from scaling.store import SweepStore
from scaling.sweep import cancel, launch, status
from tests.slurm_harness import unavailable_reason
from tests.sweep_backends import wait_for
from tests.test_sweep_launch import attempts, steps_logged, toy_spec

pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # job processes import the test backend from here




def test_array_runs_to_completion_and_retries_a_failure(slurm_cluster, tmp_path):
    spec = toy_spec(tmp_path, extra_opts=", fail_attempts: {C1e10_L2H32: 1}")
    s = launch(spec, tmp_path / "out", executor="slurm", progress=False)
    assert (s["done"], s["failed"], s["retried"]) == (4, 0, 1)
    assert attempts(tmp_path / "out")["C1e10_L2H32"] == 2
    jobs = {rd.read_spec()["name"]: rd.read_status()["slurm_job"] for rd in SweepStore(tmp_path / "out").runs()}
    first = {j.split("_")[0] for n, j in jobs.items() if n != "C1e10_L2H32"}
    assert len(first) == 1 and all("_" in jobs[n] for n in jobs if n != "C1e10_L2H32")  # one array for the first round
    assert {m.get("host") for ms in [rd.read_metrics() for rd in SweepStore(tmp_path / "out").runs()] for m in ms}
    assert status(tmp_path / "out")["complete"]


def test_preempted_runs_requeue_and_resume_from_checkpoint(slurm_cluster, tmp_path):
    """One run gets Slurm's pre-emption warning (USR2: submitit checkpoints and requeues it); the
    other is requeued by the controller (killed, then started again). Both resume from their own
    newest checkpoint and log every step once."""
    c = slurm_cluster
    spec = toy_spec(tmp_path, step_s=0.1, budgets=(2e10,), ckpt=5)
    out = tmp_path / "out"
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(launch(spec, out, executor="slurm", progress=False)))
    with c.releasing_requeued() as released:
        t.start()
        store = SweepStore(out)
        wait_for(lambda: len(store.runs()) == 2 and all(len(rd.read_metrics()) >= 10 for rd in store.runs()), 60, "runs start")
        a, b = store.runs()
        ja, jb = a.read_status()["slurm_job"], b.read_status()["slurm_job"]
        subprocess.run(["scancel", "--signal=USR2", ja], check=True, env=c.env)  # submitit: checkpoint + requeue
        c.cmd("scontrol", "requeue", jb)  # the controller requeues: the job is killed and queued again
        t.join(timeout=120)
    assert not t.is_alive()
    assert result["done"] == 2 and result["failed"] == 0 and result["retried"] == 0
    assert set(released) == {ja, jb}  # both waited on BeginTime and were let go at once
    assert a.read_status().get("requeues") == 1  # RunTask.checkpoint recorded it
    for name, steps in steps_logged(out).items():
        assert steps == list(range(1, len(steps) + 1)), name
    assert set(attempts(out).values()) == {2}  # each run started twice and resumed, not restarted from scratch
    for rd in store.runs():
        assert rd.read_result()["steps"] == rd.read_metrics()[-1]["step"]


def test_cancel_stops_the_array(slurm_cluster, tmp_path):
    c = slurm_cluster
    spec = toy_spec(tmp_path, step_s=0.2, budgets=(1e10,))
    out = tmp_path / "out"
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(launch(spec, out, executor="slurm", progress=False)))
    t.start()
    store = SweepStore(out)
    wait_for(lambda: len(store.runs()) == 2 and all(len(rd.read_metrics()) >= 2 for rd in store.runs()), 60, "runs start")
    out_c = cancel(out)
    t.join(timeout=60)
    assert result["cancelled"] is True and result["done"] == 0
    wait_for(lambda: not c.squeue(), 30, "queue empty")
    st = status(out)
    assert st["counts"]["cancelled"] == 2 and st["counts"]["running"] == 0
    assert out_c["counts"]["cancelled"] == 2


def test_relaunch_follows_the_jobs_of_a_killed_launcher(slurm_cluster, tmp_path):
    """SIGKILL the launcher while its array runs: the jobs carry on in Slurm, and a relaunch follows
    them as submitit jobs rebuilt from their ids instead of submitting the runs again."""
    spec = toy_spec(tmp_path, step_s=0.05, budgets=(1e10,))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ['PYTHONPATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "scaling", "sweep", "launch", str(spec), "--out", str(out),
                             "--executor", "slurm", "--quiet"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = SweepStore(out)
    wait_for(lambda: len(store.runs()) == 2 and all(len(rd.read_metrics()) >= 3 for rd in store.runs()), 60, "runs start")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    jobs = {rd.run_id: rd.read_status()["slurm_job"] for rd in store.runs()}
    assert not any(rd.is_done() for rd in store.runs())
    s = launch(spec, out, executor="slurm", progress=False)
    assert (s["done"], s["failed"], s["retried"], s["skipped"]) == (2, 0, 0, 0)
    assert set(attempts(out).values()) == {1}  # followed to the end, never submitted twice
    assert {rd.run_id: rd.read_status()["slurm_job"] for rd in store.runs()} == jobs
    for name, steps in steps_logged(out).items():
        assert steps == list(range(1, len(steps) + 1)), name
