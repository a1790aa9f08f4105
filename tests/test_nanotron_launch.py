"""The torchrun command each node runs, without Slurm (multi-node allocations simulated by env)."""

from __future__ import annotations

import subprocess
import sys

from nanotron_study import nanotron_spec

from scaling.backends.nanotron import NanotronBackend
from scaling.backends.nanotron.config import options_of
from scaling.backends.nanotron.launch import (
    first_host,
    launch_environment,
    node_environment,
    rdzv_port,
    torchrun_command,
)


def test_four_nodes_one_task_each_rendezvous_on_the_first():
    opts = options_of(nanotron_spec(nodes=4, gpus_per_node=8, torchrun="torchrun --tee 3"))
    env = {"SLURM_JOB_ID": "777", "SLURM_JOB_NODELIST": "gpu[07-10]", "SLURM_NODEID": "2", "SLURM_JOB_NUM_NODES": "4"}
    where = node_environment(env)
    assert where == {"node_rank": 2, "nodes": 4, "master": "gpu07", "job_id": "777", "in_slurm": True}
    cmd = torchrun_command("/study/runs/abc", opts, where)
    assert cmd[:3] == ["torchrun", "--tee", "3"]
    assert "--nnodes=4" in cmd and "--nproc_per_node=8" in cmd
    assert f"--rdzv_endpoint=gpu07:{rdzv_port(29500, '777')}" in cmd and "--rdzv_id=777" in cmd
    assert cmd[-4:] == ["-m", "scaling.backends.nanotron.entry", "--run-dir", "/study/runs/abc"]
    env = launch_environment({"OMP_NUM_THREADS": "64"}, opts)
    assert env["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
    assert env["OMP_NUM_THREADS"] == "4"  # 32 CPUs per task (4 per GPU by default) over 8 GPU processes


def test_outside_slurm_one_node_is_standalone():
    opts = options_of(nanotron_spec(gpus_per_node=2))
    cmd = torchrun_command("/r", opts, node_environment({}))
    assert "--standalone" in cmd and not any(a.startswith("--rdzv") for a in cmd)


def test_node_lists():
    assert first_host("node[01-04],gpu7") == "node01"
    assert first_host("a17") == "a17"
    assert first_host("n[3,5-6]") == "n3"


def test_rendezvous_ports_differ_between_jobs_and_stay_in_range():
    ports = {rdzv_port(29500, f"100_{i}") for i in range(50)}
    assert len(ports) > 40 and all(29500 <= p < 30500 for p in ports)


def test_slurm_parameters_for_the_sweep_engine():
    p = NanotronBackend().slurm_parameters(nanotron_spec(nodes=2, gpus_per_node=4))
    assert p == {"nodes": 2, "ntasks_per_node": 1, "gpus_per_node": 4, "cpus_per_task": 16}


def test_importing_the_backend_leaves_torch_and_submitit_out():
    code = ("import sys, scaling.backends.nanotron, scaling.backends.nanotron.config, scaling.backends.nanotron.parallelism;"
            "print(sorted(m for m in ('torch', 'submitit', 'transformers') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
