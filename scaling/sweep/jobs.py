"""Runs in flight: what the launcher polls, asks for an error and cancels.

Three kinds of handle, one interface (``run_id``, ``job_id``, ``slurm_job``, ``done(queued)``,
``error()``, ``cancel()``):

* :class:`InlineRun`: the debug executor's run, finished in this process when submitted;
* :class:`SubmititRun`: a job of submitit's LocalExecutor or SlurmExecutor; a Slurm job adopted
  from an earlier launcher is rebuilt as submitit's own ``SlurmJob`` from its id and folder;
* :class:`AdoptedProcess`: a local run process left by a launcher that died; it holds the run's
  writer lock (or, from older versions, only its pid) until it ends.

Slurm without accounting (no ``sacct``) never tells submitit that a job which left no result
ended, so Slurm handles also watch ``squeue``: a job gone from the queue on two polls in a row
has ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from scaling.store import RunDir
from scaling.sweep.lock import RunLock, pid_alive
from scaling.sweep.task import THREAD_ENV, RunTask


def squeue_ids() -> set[str] | None:
    """Ids of this user's jobs that Slurm still knows (``ID`` and ``ID_TASK``); None if squeue fails."""
    try:
        proc = subprocess.run(["squeue", "--noheader", "--array", "--me", "--format=%i"],
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return {line.strip() for line in proc.stdout.splitlines() if line.strip()}


def in_queue(job_id: Any, queued: set[str]) -> bool:
    j = str(job_id)
    return j in queued or j.split("_")[0] in queued


def _job_error(job: Any) -> str | None:
    with contextlib.suppress(Exception):
        job.result()
        return None
    with contextlib.suppress(Exception):
        return str(job.exception())[-2000:]
    return "job ended without a result"


class InlineRun:
    """The debug executor's run: the task runs to the end when submitted, in this process."""

    slurm_job: str | None = None
    job_id = "debug"

    def __init__(self, run_id: str, task: RunTask) -> None:
        from submitit.helpers import DelayedSubmission

        self.run_id = run_id
        self._exc: BaseException | None = None
        saved = {k: os.environ.get(k) for k in THREAD_ENV}
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch is not None else None
        try:
            DelayedSubmission(task).result()
        except Exception as e:
            self._exc = e
        finally:  # the run set this process's thread counts: give the caller its own back
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            torch = sys.modules.get("torch")
            if torch is not None:
                torch.set_num_threads(threads or os.cpu_count() or 1)

    def done(self, queued: set[str] | None) -> bool:
        return True

    def error(self) -> str | None:
        return None if self._exc is None else str(self._exc)[-2000:]

    def cancel(self) -> list[tuple[int, str | None]]:
        return []  # runs in the launcher's own process


STOP_GRACE_S = 1.0  # SIGTERM, then SIGKILL what is still alive this long after (submitit waits 1 s too)


def stop_processes(procs: list[tuple[int, str | None]], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM each live ``(pid, start time)``, then SIGKILL those still alive after ``grace_s``.

    The escalation is needed: submitit's job processes ignore SIGTERM (its handler only logs it),
    and a controller started with SIGINT ignored (under nohup, or as a background job of a
    script) ignores the SIGINT that submitit's own cancel sends, so without SIGKILL a cancelled
    local run trains on. A killed run loses only the steps since its last checkpoint."""
    import time

    live = [(pid, start) for pid, start in procs if pid_alive(pid, start)]
    for pid, _ in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while live and time.monotonic() < end:
        time.sleep(0.05)
        live = [(pid, start) for pid, start in live if pid_alive(pid, start)]
    for pid, _ in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def recorded_process(st: dict[str, Any]) -> tuple[int, str | None] | None:
    """(pid, start time) of the run process a run's status ``st`` names, if it is alive on this host."""
    if st.get("host") != socket.gethostname() or not pid_alive(st.get("pid"), st.get("pid_start")):
        return None
    return int(st["pid"]), st.get("pid_start")


class SubmititRun:
    """A submitit job (LocalJob or SlurmJob) running one :class:`RunTask`."""

    def __init__(self, run_id: str, job: Any, slurm: bool) -> None:
        self.run_id, self.job = run_id, job
        self.slurm_job: str | None = str(job.job_id) if slurm else None
        self._missing_polls = 0

    @property
    def job_id(self) -> str:
        return str(self.job.job_id)

    def done(self, queued: set[str] | None) -> bool:
        if self.slurm_job is None:
            return bool(self.job.done())
        if self.job.paths.result_pickle.exists():
            return True
        if queued is None:  # squeue failed: ask again next time
            return False
        if in_queue(self.slurm_job, queued):
            self._missing_polls = 0
            return False
        self._missing_polls += 1  # gone from the queue twice in a row: ended (or lost)
        return self._missing_polls >= 2

    def error(self) -> str | None:
        if self.slurm_job is not None and not self.job.paths.result_pickle.exists():
            # no result: asking submitit would wait for one forever where sacct does not answer
            return (f"Slurm job {self.slurm_job} ended without a result (cancelled, out of time or memory?); "
                    f"see {self.job.paths.stderr}")
        if self.slurm_job is None and not self.job.paths.result_pickle.exists():
            # a killed process leaves none; submitit would wait 15 s for it, twice, stalling the sweep
            return f"the run process (job {self.job_id}) ended without a result (killed?); see {self.job.paths.stderr}"
        return _job_error(self.job)

    def cancel(self) -> list[tuple[int, str | None]]:
        """Cancel the job; the local run process to stop too (:func:`stop_processes`), found first:
        LocalJob.cancel signals the controller only, and once it exits the run is no longer its child."""
        pid = _local_task_pid(self.job) if self.slurm_job is None else None
        with contextlib.suppress(Exception):
            self.job.cancel(check=False)
        return [(pid, None)] if pid else []


class AdoptedProcess:
    """A local run process from an earlier launcher, followed until it lets go of its run."""

    slurm_job: str | None = None

    def __init__(self, rd: RunDir, pid: int | None, pid_start: str | None) -> None:
        self.run_id, self._lock = rd.run_id, RunLock(rd.path)
        self.pid, self.pid_start = pid, pid_start

    @property
    def job_id(self) -> str | None:
        return str(self.pid) if self.pid else None

    def done(self, queued: set[str] | None) -> bool:
        return not self._lock.busy() and not pid_alive(self.pid, self.pid_start)

    def error(self) -> str | None:
        return None

    def cancel(self) -> list[tuple[int, str | None]]:
        return [(int(self.pid), self.pid_start)] if self.pid else []


Handle = InlineRun | SubmititRun | AdoptedProcess


def _local_task_pid(job: Any) -> int | None:
    proc = getattr(job, "_process", None)
    if proc is None:
        return None
    with contextlib.suppress(Exception):
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        return int(children[0]) if children else None
    return None


def adopt(rd: RunDir, queued: set[str] | None, slurm_folder: Path) -> Handle | None:
    """A handle on a run an earlier launcher left alive: its Slurm job still queued, or its local
    process still writing it. None when nothing of it runs."""
    st = rd.read_status()
    if st.get("state") not in ("running", "pending"):
        return None
    sj = st.get("slurm_job")
    if sj and queued is not None and in_queue(sj, queued):
        import submitit

        return SubmititRun(rd.run_id, submitit.SlurmJob(folder=slurm_folder, job_id=str(sj)), slurm=True)
    here = st.get("host") == socket.gethostname()
    alive = here and st.get("state") == "running" and pid_alive(st.get("pid"), st.get("pid_start"))
    if alive or RunLock(rd.path).busy():
        return AdoptedProcess(rd, st.get("pid") if alive else None, st.get("pid_start"))
    return None
