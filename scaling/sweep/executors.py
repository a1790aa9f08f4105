"""Where runs go, and how many at once: submitit's executors and the parallelism policy.

* ``debug``: one at a time, in this process (submitit's DebugExecutor would open pdb on errors,
  so the task is called directly through ``DelayedSubmission``);
* ``local``: separate processes on this machine (submitit's LocalExecutor), the cores shared out
  (``threads_per_run`` each, set in the environment before torch is imported); on a machine with
  GPUs each process sees only the GPU the launcher placed it on (:mod:`scaling.sweep.gpus`);
* ``slurm``: one job array per submission round (submitit's SlurmExecutor), ``array_parallelism``
  tasks at a time; a backend may shape its own jobs with ``slurm_parameters(spec)``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from scaling.errors import UsageError
from scaling.runspec import RunSpec
from scaling.sweep.gpus import GpuPlan
from scaling.sweep.jobs import Handle, InlineRun, SubmititRun
from scaling.sweep.spec import ExecutorSettings
from scaling.sweep.task import THREAD_ENV, RunTask

KINDS = ("debug", "local", "slurm")


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def share_cores(n_runs: int, max_parallel: int | None, threads: int | None) -> tuple[int, int]:
    """(runs at once, threads each): by default one run per core, one thread each.

    Two one-thread runs beat one two-thread run on small models (1.2-1.45x the tokens/s on two
    cores, ``benchmarks/sweep_overhead.py``): small matrices do not scale across threads.
    """
    c = cores()
    par = max_parallel or (max(1, c // threads) if threads else c)
    par = max(1, min(par, max(1, n_runs)))
    return par, threads or max(1, c // par)


def parallelism(kind: str, settings: ExecutorSettings, n_runs: int, max_parallel: int | None = None,
                threads: int | None = None, gpus: GpuPlan | None = None) -> tuple[int, int]:
    """(runs at once, threads each) for ``kind``; flags override the spec's ``executor`` settings.

    Slurm: ``array_parallelism`` tasks, ``cpus_per_task`` threads (1 if unset). Debug: one run at
    a time. Local: :func:`share_cores`, at most ``runs_per_gpu`` a GPU where ``gpus`` places runs.
    """
    max_parallel = max_parallel or settings.max_parallel
    threads = threads or settings.threads_per_run
    if kind == "slurm":
        return max_parallel or settings.slurm.array_parallelism, threads or settings.slurm.cpus_per_task or 1
    if kind == "local" and gpus is not None:
        max_parallel = min(max_parallel or gpus.slots, gpus.slots)
    par, threads = share_cores(n_runs, max_parallel, threads)
    return (1 if kind == "debug" else par), threads


GPU_ORDER = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}  # CUDA's device i is nvidia-smi's GPU i


@contextlib.contextmanager
def child_env(threads: int | None, extra: Mapping[str, str] | None = None) -> Iterator[None]:
    """Environment the job processes inherit: this package importable, threads capped, ``extra``."""
    extra = dict(extra or {})
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", *THREAD_ENV, *extra)}
    root = str(Path(__file__).resolve().parents[2])
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    cwd = os.getcwd()
    for p in (root, cwd):  # cwd: backends registered from the caller's own modules
        if p not in paths:
            paths.append(p)
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    if threads:
        for k in THREAD_ENV:
            os.environ[k] = str(threads)
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


Submission = tuple[str, RunTask, RunSpec]  # (run_id, task, the run's config)


class Executor:
    """Submits :class:`RunTask` batches to one of :data:`KINDS` and returns their handles."""

    def __init__(self, kind: str, folder: Path, settings: ExecutorSettings, threads: int, backend: Any) -> None:
        import submitit

        self.kind, self.threads, self.backend = kind, threads, backend
        self.ex: Any = None  # debug: in this process, one by one
        if kind == "local":
            self.ex = submitit.LocalExecutor(folder)
            self.ex.update_parameters(timeout_min=int(settings.timeout_min), signal_delay_s=30)
        elif kind == "slurm":
            try:
                self.ex = submitit.SlurmExecutor(folder, max_num_timeout=settings.slurm.max_num_timeout)
            except RuntimeError as e:
                raise UsageError(f"executor.kind=slurm: {e}; use --executor local here") from None
            self.ex.update_parameters(**slurm_parameters(settings))
        elif kind != "debug":
            raise UsageError(f"--executor {kind!r}: choose {', '.join(KINDS)}")

    def submit(self, tasks: Sequence[Submission], gpu_of: Mapping[str, Sequence[int]] | None = None) -> list[Handle]:
        """Start ``tasks``; a local run in ``gpu_of`` sees its GPUs alone (submitit's ``visible_gpus``)."""
        if self.kind == "slurm":
            return self._submit_slurm(tasks)
        if self.kind == "debug":
            return [InlineRun(run_id, task) for run_id, task, _ in tasks]
        gpu_of = gpu_of or {}
        out: list[Handle] = []
        with child_env(self.threads, GPU_ORDER if gpu_of else None):
            for run_id, task, _ in tasks:
                gpus = tuple(gpu_of.get(run_id, ()))
                # no GPU: submitit's default, CUDA_VISIBLE_DEVICES="" (the CPU path as it always was)
                self.ex.update_parameters(gpus_per_node=len(gpus), visible_gpus=gpus)
                out.append(SubmititRun(run_id, self.ex.submit(task), slurm=False))
        return out

    def _submit_slurm(self, tasks: Sequence[Submission]) -> list[Handle]:
        groups: dict[str, list[Submission]] = {}
        extra: dict[str, dict[str, Any]] = {}
        for t in tasks:  # one array per distinct job shape
            params = backend_slurm_parameters(self.backend, t[2])
            key = json.dumps(params, sort_keys=True, default=str)
            groups.setdefault(key, []).append(t)
            extra[key] = params
        out: list[Handle] = []
        base = dict(self.ex.parameters)
        with child_env(self.threads):
            for key, group in groups.items():
                self.ex.parameters = dict(base)
                if extra[key]:
                    self.ex.update_parameters(**extra[key])
                with self.ex.batch():
                    jobs = [self.ex.submit(task) for _, task, _ in group]
                out.extend(SubmititRun(run_id, job, slurm=True) for (run_id, _, _), job in zip(group, jobs, strict=True))
        self.ex.parameters = base
        return out


def slurm_parameters(settings: ExecutorSettings) -> dict[str, Any]:
    """submitit SlurmExecutor parameters from the spec's ``executor.slurm``."""
    s = settings.slurm
    p: dict[str, Any] = {
        "time": int(s.time_min),
        "nodes": s.nodes,
        "ntasks_per_node": s.tasks_per_node,
        "array_parallelism": s.array_parallelism,
        "signal_delay_s": s.signal_delay_s,
        "job_name": "scaling",
    }
    for k, v in (("partition", s.partition), ("account", s.account), ("qos", s.qos), ("constraint", s.constraint),
                 ("exclude", s.exclude), ("cpus_per_task", s.cpus_per_task)):
        if v is not None:
            p[k] = v
    if s.gpus_per_node:
        p["gpus_per_node"] = s.gpus_per_node
    if s.mem_gb is not None:
        p["mem"] = f"{int(s.mem_gb * 1024)}MB"
    if s.setup:
        p["setup"] = list(s.setup)
    if s.additional:
        p["additional_parameters"] = {k: v for k, v in s.additional.items()}
    return p


def backend_slurm_parameters(backend: Any, spec: RunSpec) -> dict[str, Any]:
    """A backend may shape its own jobs (e.g. one torchrun task per node): ``slurm_parameters(spec)``."""
    fn = getattr(backend, "slurm_parameters", None)
    return dict(fn(spec)) if callable(fn) else {}
