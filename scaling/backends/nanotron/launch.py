"""Multi-node launch: one Slurm task per node, each running torchrun with a c10d rendezvous.

A nanotron run asks Slurm (through submitit) for ``nodes`` nodes with ``gpus_per_node`` GPUs and
**one task per node**; each task runs::

    CUDA_DEVICE_MAX_CONNECTIONS=1 torchrun --nnodes=N --nproc_per_node=G \\
        --rdzv_backend=c10d --rdzv_endpoint=<first node>:<port> --rdzv_id=<job id> \\
        -m scaling.backends.nanotron.entry --run-dir RUN

torchrun starts the G processes of its node; the rendezvous on the first node of the allocation
gives them global ranks. (One task per GPU, with ``srun --ntasks-per-node=G`` and ``RANK`` taken
from ``SLURM_PROCID``, also works with Nanotron but loses torchrun's worker restarts and
per-node log files, so it is not used.)

``CUDA_DEVICE_MAX_CONNECTIONS=1`` is what Nanotron's ``run_train.py`` asks for: it orders
tensor-parallel communication kernels before the compute that depends on them.

Pre-emption and time limits: :class:`NanotronJob` is a ``submitit.helpers.Checkpointable``;
on SIGUSR2/timeout submitit requeues the same call, and the config's
``resume_checkpoint_path`` (the run's ``checkpoints/``, whose ``latest.txt`` Nanotron updates at
every checkpoint) makes Nanotron resume from its latest checkpoint; the entry point drops
metrics rows logged after that checkpoint.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import submitit

from scaling.backends.nanotron.config import NanotronOptions

ENTRY_MODULE = "scaling.backends.nanotron.entry"


def node_environment(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Where this task sits: node rank, node count, the first node's host name, the job id."""
    env = dict(os.environ if env is None else env)
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    master = first_host(nodelist) if nodelist else "127.0.0.1"
    job = env.get("SLURM_JOB_ID", "local")
    if env.get("SLURM_ARRAY_JOB_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '0')}"
    return {
        "node_rank": int(env.get("SLURM_NODEID", 0)),
        "nodes": int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1),
        "master": master,
        "job_id": job,
        "in_slurm": "SLURM_JOB_ID" in env,
    }


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list (``node[01-04],gpu7`` -> ``node01``), via scontrol
    when it answers, else parsed."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    head = nodelist.split(",")[0]
    if "[" in head:
        prefix, rest = head.split("[", 1)
        return prefix + rest.split("]")[0].split(",")[0].split("-")[0]
    return head


def rdzv_port(base: int, job_id: str) -> int:
    """The rendezvous port of a job: ``base`` plus a hash of the job id, so array tasks sharing a
    node do not collide while every node of one job computes the same port."""
    return base + zlib.crc32(str(job_id).encode()) % 1000


def torchrun_command(run_dir: str | Path, opts: NanotronOptions, where: Mapping[str, Any]) -> list[str]:
    """The command one node runs (``opts.torchrun`` may be a launcher with its own arguments)."""
    base = shlex.split(opts.torchrun)
    if opts.nodes == 1 and not where.get("in_slurm"):
        rdzv = ["--standalone"]
    else:
        rdzv = [
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={where['master']}:{rdzv_port(opts.rdzv_port, where['job_id'])}",
            f"--rdzv_id={where['job_id']}",
        ]
    return [
        *base,
        f"--nnodes={opts.nodes}",
        f"--nproc_per_node={opts.gpus_per_node}",
        *rdzv,
        "--max_restarts=0",
        "-m",
        ENTRY_MODULE,
        "--run-dir",
        str(Path(run_dir).resolve()),
    ]


def launch_environment(base: Mapping[str, str] | None = None, opts: NanotronOptions | None = None) -> dict[str, str]:
    """The node's environment plus ``CUDA_DEVICE_MAX_CONNECTIONS=1`` and the task's CPUs shared
    among its GPU processes (a launcher may have set ``OMP_NUM_THREADS`` to all of them)."""
    env = dict(os.environ if base is None else base)
    env["CUDA_DEVICE_MAX_CONNECTIONS"] = "1"
    cpus = slurm_parameters(opts)["cpus_per_task"] if opts else 1
    env["OMP_NUM_THREADS"] = str(max(1, cpus // (opts.gpus_per_node if opts else 1)))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_node(run_dir: str | Path, opts: NanotronOptions, env: Mapping[str, str] | None = None) -> int:
    """Run this node's torchrun, its output in ``RUN/nanotron/logs/node<R>.log``; return its exit code."""
    where = node_environment(env)
    cmd = torchrun_command(run_dir, opts, where)
    log_dir = Path(run_dir) / "nanotron" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"node{where['node_rank']}.log"
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"# {socket.gethostname()} job {where['job_id']}: {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, env=launch_environment(env, opts), stdout=f, stderr=subprocess.STDOUT)
    return proc.returncode


def slurm_parameters(opts: NanotronOptions) -> dict[str, Any]:
    """``submitit.SlurmExecutor`` parameters of a nanotron run: nodes x GPUs, one task per node."""
    return {
        "nodes": opts.nodes,
        "ntasks_per_node": 1,
        "gpus_per_node": opts.gpus_per_node,
        "cpus_per_task": opts.cpus_per_task or max(1, 4 * opts.gpus_per_node),
    }


def wait_for_result(run_dir: Any, timeout_s: float, poll_s: float = 2.0) -> dict[str, Any]:
    """Nodes other than the first wait for node 0's conversion, evaluation and ``result.json``,
    so no task reports the run finished (or failed) before it is."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = run_dir.read_result()
        if result is not None:
            return result
        time.sleep(poll_s)
    raise RuntimeError(f"no {run_dir.path / 'result.json'} from node 0 after {timeout_s:.0f} s")


class NanotronJob(submitit.helpers.Checkpointable):
    """The callable submitted to Slurm: train (or resume) one run. On pre-emption or timeout
    ``Checkpointable.checkpoint`` resubmits the same call, which resumes from Nanotron's latest
    checkpoint."""

    def __call__(self, spec_json: dict[str, Any], run_dir: str) -> dict[str, Any]:
        from scaling.backends.nanotron import NanotronBackend
        from scaling.runspec import RunSpec
        from scaling.store import RunDir

        return NanotronBackend().train(RunSpec.from_json_dict(spec_json), RunDir(run_dir))


def submit(runs: list[tuple[Any, Any]], folder: str | Path, *, time_min: int = 60, partition: str | None = None,
           array_parallelism: int = 16, max_num_timeout: int = 3, extra: dict | None = None) -> list[Any]:  # fmt: skip
    """Submit ``(spec, run_dir)`` pairs as Slurm job arrays, one array per (nodes, GPUs) shape.

    ``scaling sweep launch`` does the same through the sweep engine (via
    :meth:`NanotronBackend.slurm_parameters`); this is the direct path for runs outside a sweep.
    """
    from scaling.backends.nanotron.config import options_of

    groups: dict[tuple, list[tuple[Any, Any]]] = {}
    for spec, rd in runs:
        params = slurm_parameters(options_of(spec))
        groups.setdefault(tuple(sorted(params.items())), []).append((spec, rd))
    jobs = []
    for key, members in groups.items():
        ex = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=max_num_timeout)
        ex.update_parameters(time=int(time_min), array_parallelism=array_parallelism, job_name="nanotron", **dict(key))
        if partition:
            ex.update_parameters(partition=partition)
        if extra:
            ex.update_parameters(**extra)
        with ex.batch():
            for spec, rd in members:
                jobs.append(ex.submit(NanotronJob(), spec.to_json_dict(), str(Path(rd.path).resolve())))
    return jobs
