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

Pre-emption and time limits: the sweep engine's task is a ``submitit.helpers.Checkpointable``;
on SIGUSR2/timeout submitit requeues it, the backend writes the same config again, and the
config's ``resume_checkpoint_path`` (the run's ``checkpoints/``, whose ``latest.txt`` Nanotron
updates at every checkpoint) makes Nanotron resume from its newest checkpoint; the entry point
drops the metrics rows logged after that checkpoint (:func:`~.entry.begin_attempt`).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

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
    """Run this node's torchrun, its output in ``RUN/nanotron/logs/node<R>.log``; return its exit code.

    When Slurm stops the job (pre-emption, a controller requeue, the time limit, scancel), it
    sends SIGTERM to every process of the job, torchrun included, and SIGKILL ``KillWait``
    seconds later. A run training in this process would simply be killed then, and the sweep
    engine sees the job requeued; so when torchrun fails after this task got SIGTERM inside
    Slurm, this waits up to ``slurm_stop_wait_s`` for that SIGKILL instead of returning a
    failure that would end the run before its requeue.
    """
    where = node_environment(env)
    cmd = torchrun_command(run_dir, opts, where)
    log_dir = Path(run_dir) / "nanotron" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"node{where['node_rank']}.log"
    with open(log, "a", encoding="utf-8") as f, noting_sigterm() as stopped:
        f.write(f"# {socket.gethostname()} job {where['job_id']}: {shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, env=launch_environment(env, opts), stdout=f, stderr=subprocess.STDOUT)
        if proc.returncode != 0 and stopped and where["in_slurm"]:
            f.write(f"# torchrun exited {proc.returncode} after SIGTERM: Slurm is stopping the job; waiting for it\n")
            f.flush()
            time.sleep(opts.slurm_stop_wait_s)
    return proc.returncode


@contextlib.contextmanager
def noting_sigterm() -> Iterator[list[float]]:
    """Within the block, record when SIGTERM arrives (then handle it as before: a handler that
    was installed, such as submitit's, is called; the default action still ends the process)."""
    got: list[float] = []
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield got
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        got.append(time.time())
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield got
    finally:
        signal.signal(signal.SIGTERM, previous)


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
