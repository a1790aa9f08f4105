"""The Slurm test harness itself: a real slurmctld + slurmd, fake GPU gres, two clusters at once."""

from __future__ import annotations

import pytest

from tests.slurm_harness import running_cluster, unavailable_reason

pytestmark = [pytest.mark.slurm, pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))]


def test_gpu_job_sees_its_fake_gpus(slurm_cluster):
    c = slurm_cluster
    jid = c.sbatch(["--gpus-per-node=2", "--output=gpu-%j.out", "--wrap", "echo gpus=$CUDA_VISIBLE_DEVICES n=$SLURM_GPUS_ON_NODE"])
    c.wait_gone(jid, 30)
    out = (c.root / f"gpu-{jid}.out").read_text()
    assert "gpus=0,1" in out


def test_array_runs_tasks_side_by_side(slurm_cluster):
    c = slurm_cluster
    jid = c.sbatch(["--array=0-2", "--output=arr-%A_%a.out", "--wrap", "sleep 1; echo task=$SLURM_ARRAY_TASK_ID"])
    c.wait_gone(jid, 30)
    for i in range(3):
        assert (c.root / f"arr-{jid}_{i}.out").read_text().strip() == f"task={i}"


def test_requeue_restarts_at_once(slurm_cluster):
    c = slurm_cluster
    jid = c.sbatch(["--requeue", "--open-mode=append", "--output=rq-%j.out", "--wrap", "echo restart=$SLURM_RESTART_COUNT; sleep 3"])
    c.wait_state(jid, "RUNNING", 20)
    c.requeue(jid)
    c.wait_gone(jid, 30)  # without release() this would wait ~120 s for BeginTime
    out = (c.root / f"rq-{jid}.out").read_text()
    assert "restart=1" in out


def test_two_clusters_at_once_are_separate():
    with running_cluster(gpus=1) as a, running_cluster(gpus=0) as b:
        assert a.ctld_port != b.ctld_port and a.name != b.name and a.root != b.root
        ja = a.sbatch(["--wrap", "true"])
        assert b.squeue() == {}  # b does not see a's job
        a.wait_gone(ja, 30)
