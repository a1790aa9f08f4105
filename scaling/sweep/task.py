"""The callable each job runs: train one run into its folder (imported in every job process, so light).

Kept apart from the launcher so that a job imports only the store, the run config and its backend.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
import traceback
from typing import Any

from scaling.backends.base import load_target
from scaling.store import RunDir
from scaling.sweep.lock import RunLock, proc_start

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "SCALING_THREADS")


def set_threads(threads: int) -> None:
    """Threads for BLAS/OpenMP/torch in this process; set before torch is imported to count."""
    for k in THREAD_ENV:
        os.environ[k] = str(threads)
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        with contextlib.suppress(Exception):
            torch.set_num_threads(threads)


try:  # submitit is an optional dependency of the package (the ``train`` extra)
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - a clear error at launch instead
    _Checkpointable = object  # type: ignore[assignment,misc]


class RunTask(_Checkpointable):  # type: ignore[misc,valid-type]
    """Train one run into its folder; idempotent (a finished run returns its result).

    ``target`` is the backend's ``"module:Class"`` as the launcher's registry resolved it, so a job
    process imports only what the launcher chose. The task holds the run's writer lock while it
    trains: a second task on the same run waits for the first, then finds it done or resumes it.

    Pre-emption and time-outs call :meth:`checkpoint`, which records the requeue and resubmits
    this same task; the backend then resumes from the run's newest checkpoint.
    """

    def __init__(self, run_dir: str, backend: str, target: str, threads: int | None = None,
                 cache_dir: str | None = None) -> None:
        self.run_dir = str(run_dir)
        self.backend = backend
        self.target = target
        self.threads = threads
        self.cache_dir = cache_dir

    def __call__(self) -> dict[str, Any]:
        if self.threads:
            set_threads(self.threads)
        rd = RunDir(self.run_dir)
        lock = RunLock(rd.path)
        lock.wait()
        try:
            if rd.is_done():
                return rd.read_result() or {}
            return self._train(rd)
        finally:
            lock.release()

    def _train(self, rd: RunDir) -> dict[str, Any]:
        from scaling.runspec import RunSpec

        spec = RunSpec.from_json_dict(rd.read_spec() or {})
        job_id = os.environ.get("SLURM_ARRAY_JOB_ID") and f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
        job_id = job_id or os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")
        try:
            backend = load_target(self.target)()
            if self.threads:
                set_threads(self.threads)  # again, now that the backend may have imported torch
            rd.update_status("running", host=socket.gethostname(), pid=os.getpid(), pid_start=proc_start(os.getpid()),
                             job_id=job_id, executor=os.environ.get("SUBMITIT_EXECUTOR") or "debug",
                             threads=self.threads, started=time.time(), error=None, traceback=None)
            if self.cache_dir is not None:
                # the sweep's shared cache (tokenized corpus...): prepared by the launcher, so this is a lookup
                backend.prepare([spec], self.cache_dir)
            result = backend.train(spec, rd)
        except BaseException as e:
            # a cancelled run stays cancelled: its process is being stopped on purpose
            if not rd.is_done() and rd.read_status().get("state") != "cancelled":
                rd.update_status("failed", error=f"{type(e).__name__}: {e}"[:2000],
                                 traceback=traceback.format_exc()[-4000:], pid=None)
            raise
        if not rd.is_done():
            raise RuntimeError(f"backend {self.backend!r} returned without writing {rd.path / RunDir.RESULT}")
        return result

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        rd = RunDir(self.run_dir)
        if not rd.is_done():
            st = rd.read_status()
            rd.update_status("pending", requeues=int(st.get("requeues", 0)) + 1, pid=None, requeued=time.time())
        return DelayedSubmission(self, *args, **kwargs)


