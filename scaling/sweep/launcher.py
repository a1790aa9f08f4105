"""Launch a sweep through submitit and see it through: skip, retry, requeue, resume, cancel.

One launcher owns a sweep folder at a time (``launcher.lock``: pid, host, heartbeat; a lock whose
process is gone is stale and taken over). The launcher writes ``sweep.yaml`` and every run's
``spec.json``, calls the backend's ``prepare`` once, then keeps runs in flight until each is done
or has failed ``retries + 1`` times:

* ``debug``: one at a time, in this process (submitit's DebugExecutor);
* ``local``: separate processes on this machine (submitit's LocalExecutor), ``max_parallel`` at
  once with the cores shared out (``threads_per_run`` each, set before torch is imported);
* ``slurm``: one job array per submission round (submitit's SlurmExecutor), ``array_parallelism``
  tasks at a time.

The store is the truth: a run is finished iff its ``result.json`` exists, so a relaunch skips it
and a killed launcher loses nothing. Each run is a :class:`RunTask`, a
``submitit.helpers.Checkpointable``: on pre-emption or time-out Slurm requeues it and the backend
resumes from the run's own newest checkpoint. A relaunch adopts runs whose process (local) or job
(Slurm) is still alive instead of starting them twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from scaling.errors import UsageError
from scaling.runspec import RunSpec
from scaling.store import RunDir, SweepStore, atomic_write_json, read_json
from scaling.sweep.grid import expand
from scaling.sweep.spec import ExecutorSettings, SweepSpec, load_spec
from scaling.sweep.task import THREAD_ENV, RunTask, _load_backend, _proc_start

LOCK = "launcher.lock"
CANCEL = "cancel.request"
SUBMITIT = "submitit"
STALE_HEARTBEAT_S = 600.0  # a launcher on another host that has not written its lock for this long is gone


class SweepLocked(UsageError):
    """Another live launcher owns the sweep folder."""


# ---- the lock ------------------------------------------------------------------------------------


def pid_alive(pid: int | None, start: str | None = None) -> bool:
    """Whether ``pid`` runs on this host (a zombie does not; a reused pid with another start time does not)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        fields = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True  # no procfs (macOS): trust kill(0)
    if fields[0] in ("Z", "X"):
        return False
    return start is None or fields[19] == start


class SweepLock:
    """``DIR/launcher.lock``: created exclusively, refreshed while the launcher lives."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / LOCK
        self.held = False

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    @staticmethod
    def is_stale(info: dict[str, Any] | None) -> bool:
        if not info:
            return True
        if info.get("host") == socket.gethostname():
            return not pid_alive(info.get("pid"), info.get("pid_start"))
        return time.time() - float(info.get("heartbeat", 0)) > STALE_HEARTBEAT_S

    def _info(self, executor: str) -> dict[str, Any]:
        now = time.time()
        return {"pid": os.getpid(), "pid_start": _proc_start(os.getpid()), "host": socket.gethostname(),
                "started": now, "heartbeat": now, "executor": executor}

    def acquire(self, executor: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                info = self.read()
                if not self.is_stale(info):
                    assert info is not None
                    since = time.strftime("%H:%M:%S", time.localtime(info.get("started", 0)))
                    raise SweepLocked(
                        f"--out {self.path.parent}: a launcher (pid {info.get('pid')} on {info.get('host')}, "
                        f"since {since}) is running this sweep; wait for it, watch it with `scaling sweep status`, "
                        f"or stop it with `scaling sweep cancel`"
                    ) from None
                # stale: take it over (rename first so that two takers cannot both win)
                stale = self.path.with_name(f".{LOCK}.stale.{os.getpid()}")
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.path, stale)
                    stale.unlink()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self._info(executor), f)
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return
        raise SweepLocked(f"--out {self.path.parent}: could not take {LOCK}; another launcher is starting")

    def heartbeat(self) -> None:
        if self.held:
            info = self.read() or {}
            if info.get("pid") == os.getpid():
                atomic_write_json(self.path, {**info, "heartbeat": time.time()})

    def release(self) -> None:
        if self.held:
            info = self.read() or {}
            if info.get("pid") == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            self.held = False


# ---- the task that runs in each job ------------------------------------------------------------------


def _backend_target(name: str) -> str:
    from scaling.backends.base import backend_target

    try:
        return backend_target(name)
    except ValueError as e:
        raise UsageError(str(e)) from None


# ---- handles on runs in flight ------------------------------------------------------------------------


class _Handle:
    """A run in flight: a submitit job, or an orphan process/job adopted from an earlier launcher."""

    def __init__(self, run_id: str, job: Any = None, pid: int | None = None, pid_start: str | None = None,
                 slurm_id: str | None = None) -> None:
        self.run_id, self.job, self.pid, self.pid_start, self.slurm_id = run_id, job, pid, pid_start, slurm_id
        self.missing_polls = 0

    @property
    def job_id(self) -> str | None:
        return self.slurm_id or (getattr(self.job, "job_id", None) if self.job is not None else None) or (str(self.pid) if self.pid else None)

    def done(self, queued: set[str] | None) -> bool:
        if self.slurm_id is not None:
            if self.job is not None and self.job.paths.result_pickle.exists():
                return True
            if queued is None:  # squeue failed: ask again next time
                return False
            if _in_queue(self.slurm_id, queued):
                self.missing_polls = 0
                return False
            self.missing_polls += 1  # gone from the queue twice in a row: ended (or lost)
            return self.missing_polls >= 2
        if self.job is not None:
            return bool(self.job.done())
        return not pid_alive(self.pid, self.pid_start)

    def error(self) -> str | None:
        if self.job is None:
            return None
        with contextlib.suppress(Exception):
            self.job.result()
            return None
        with contextlib.suppress(Exception):
            return str(self.job.exception())[-2000:]
        return "job ended without a result"

    def cancel(self) -> None:
        if self.slurm_id is not None:
            subprocess.run(["scancel", self.slurm_id], capture_output=True, check=False)
        elif self.job is not None:
            with contextlib.suppress(Exception):
                self.job.cancel(check=False)
            # LocalJob.cancel signals the controller only; end the run process too
            if self.pid is None:
                self.pid = _local_task_pid(self.job)
        if self.pid and pid_alive(self.pid, self.pid_start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)


class _InlineJob:
    """The debug executor's job: the task runs to the end when submitted, in this process."""

    def __init__(self, task: RunTask) -> None:
        from submitit.helpers import DelayedSubmission

        self.job_id = "debug"
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

    def done(self) -> bool:
        return True

    def result(self) -> None:
        if self._exc is not None:
            raise self._exc

    def exception(self) -> BaseException | None:
        return self._exc

    def cancel(self, check: bool = False) -> None:
        pass


def _local_task_pid(job: Any) -> int | None:
    proc = getattr(job, "_process", None)
    if proc is None:
        return None
    with contextlib.suppress(Exception):
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        return int(children[0]) if children else None
    return None


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


# ---- progress ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Progress:
    """A snapshot the launcher hands to ``progress`` callbacks about twice a second."""

    name: str
    total: int
    done: int
    running: int
    failed: int
    pending: int
    skipped: int
    retried: int
    flops_total: float
    flops_done: float
    elapsed_s: float
    eta_s: float | None
    running_names: tuple[str, ...] = ()
    finished: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _tokens_done(rd: RunDir) -> int:
    """Tokens of the newest metrics row (reads only the file's tail)."""
    p = rd.path / RunDir.METRICS
    try:
        with open(p, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        return 0
    for line in reversed(lines[:-1] if len(lines) > 1 else lines):
        with contextlib.suppress(ValueError, json.JSONDecodeError):
            row = json.loads(line)
            return int(row.get("tokens", 0))
    return 0


class RichProgress:
    """A live rich display: runs done/running/failed, FLOPs done of total, ETA."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RP

        self.console = Console(stderr=True)
        self.bar = RP(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}% FLOPs"),
                      TextColumn("{task.fields[runs]}"), TextColumn("ETA {task.fields[eta]}"), TimeElapsedColumn(),
                      console=self.console, transient=False)
        self.task = None

    def __call__(self, p: Progress) -> None:
        runs = f"{p.done}/{p.total} done, {p.running} running, {p.failed} failed"
        eta = "?" if p.eta_s is None else _fmt_s(p.eta_s)
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task(p.name, total=max(p.flops_total, 1.0), runs=runs, eta=eta)
        self.bar.update(self.task, completed=p.flops_done, runs=runs, eta=eta)
        if p.finished:
            self.bar.stop()


class LineProgress:
    """One line whenever the counts change (logs, CI, no TTY)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.last: tuple[int, ...] | None = None

    def __call__(self, p: Progress) -> None:
        key = (p.done, p.running, p.failed, p.retried, int(p.finished))
        if key == self.last:
            return
        self.last = key
        pct = 100 * p.flops_done / p.flops_total if p.flops_total else 100.0
        eta = "?" if p.eta_s is None else _fmt_s(p.eta_s)
        print(f"[{p.name}] {p.done}/{p.total} done, {p.running} running, {p.failed} failed, "
              f"{pct:.0f}% of {p.flops_total:.3g} FLOPs, elapsed {_fmt_s(p.elapsed_s)}, ETA {eta}",
              file=self.stream, flush=True)


def _fmt_s(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


ProgressArg = Callable[[Progress], None] | bool | None


def _progress_fn(progress: ProgressArg) -> Callable[[Progress], None]:
    if callable(progress):
        return progress
    if progress is False:
        return lambda p: None
    if progress is None and not sys.stderr.isatty():
        return LineProgress()
    return RichProgress()


# ---- executors --------------------------------------------------------------------------------------------


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


@contextlib.contextmanager
def _child_env(threads: int | None) -> Iterator[None]:
    """Environment the job processes inherit: this package importable, threads capped."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", *THREAD_ENV)}
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
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Executor:
    def __init__(self, kind: str, folder: Path, settings: ExecutorSettings, threads: int, backend: Any) -> None:
        import submitit

        self.kind = kind
        self.threads = threads
        self.settings = settings
        self.backend = backend
        if kind == "debug":
            self.ex = None  # in this process, one by one (submitit's DebugExecutor would open pdb on errors)
        elif kind == "local":
            self.ex = submitit.LocalExecutor(folder)
            self.ex.update_parameters(timeout_min=int(settings.timeout_min), signal_delay_s=30)
        elif kind == "slurm":
            try:
                self.ex = submitit.SlurmExecutor(folder, max_num_timeout=settings.slurm.max_num_timeout)
            except RuntimeError as e:
                raise UsageError(f"executor.kind=slurm: {e}; use --executor local here") from None
            self.ex.update_parameters(**slurm_parameters(settings))
        else:  # pragma: no cover - validated by the spec
            raise UsageError(f"executor.kind={kind!r}: choose debug, local or slurm")

    def submit(self, tasks: Sequence[tuple[str, RunTask, RunSpec]]) -> list[_Handle]:
        if self.kind == "slurm":
            return self._submit_slurm(tasks)
        if self.kind == "debug":
            return [_Handle(run_id, job=_InlineJob(task)) for run_id, task, _ in tasks]
        with _child_env(self.threads):
            return [_Handle(run_id, job=self.ex.submit(task)) for run_id, task, _ in tasks]

    def _submit_slurm(self, tasks: Sequence[tuple[str, RunTask, RunSpec]]) -> list[_Handle]:
        groups: dict[str, list[tuple[str, RunTask, RunSpec]]] = {}
        extra: dict[str, dict[str, Any]] = {}
        for t in tasks:
            params = _backend_slurm_parameters(self.backend, t[2])
            key = json.dumps(params, sort_keys=True, default=str)
            groups.setdefault(key, []).append(t)
            extra[key] = params
        out: list[_Handle] = []
        base = dict(self.ex.parameters)
        with _child_env(self.threads):
            for key, group in groups.items():
                self.ex.parameters = dict(base)
                if extra[key]:
                    self.ex.update_parameters(**extra[key])
                with self.ex.batch():
                    jobs = [self.ex.submit(task) for _, task, _ in group]
                out.extend(_Handle(run_id, job=job, slurm_id=job.job_id) for (run_id, _, _), job in zip(group, jobs, strict=True))
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


def _backend_slurm_parameters(backend: Any, spec: RunSpec) -> dict[str, Any]:
    """A backend may shape its own jobs (e.g. one torchrun task per node): ``slurm_parameters(spec)``."""
    fn = getattr(backend, "slurm_parameters", None)
    return dict(fn(spec)) if callable(fn) else {}


# ---- the launcher ----------------------------------------------------------------------------------------


def _as_spec(spec: SweepSpec | str | Path) -> SweepSpec:
    return spec if isinstance(spec, SweepSpec) else load_spec(spec)


def write_store(spec: SweepSpec, out_dir: str | Path, runs: list[RunSpec] | None = None) -> tuple[SweepStore, list[RunSpec]]:
    """``sweep.yaml`` and each run's ``spec.json`` (labels refreshed; hashed config unchanged)."""
    runs = expand(spec) if runs is None else runs
    store = SweepStore(out_dir)
    store.path.mkdir(parents=True, exist_ok=True)
    store.write_sweep(spec.to_yaml())
    for r in runs:
        rd = store.run(r.run_id)
        d = r.to_json_dict()
        if rd.read_spec() != json.loads(json.dumps(d)):
            rd.write_spec(d)
        if not (rd.path / RunDir.STATUS).exists():
            rd.update_status("pending", attempts=0)
    return store, runs


def _orphan(rd: RunDir, queued: set[str] | None) -> _Handle | None:
    """A handle on a run whose process (local) or Slurm job from an earlier launcher is still alive."""
    st = rd.read_status()
    if st.get("state") not in ("running", "pending"):
        return None
    sj = st.get("slurm_job")
    if sj and queued is not None and _in_queue(sj, queued):
        return _Handle(rd.run_id, slurm_id=str(sj))
    local = st.get("state") == "running" and st.get("executor") == "local" and st.get("host") == socket.gethostname()
    if local and pid_alive(st.get("pid"), st.get("pid_start")):
        return _Handle(rd.run_id, pid=st.get("pid"), pid_start=st.get("pid_start"))
    return None


def _in_queue(job_id: Any, queued: set[str]) -> bool:
    j = str(job_id)
    return j in queued or j.split("_")[0] in queued


def launch(
    spec: SweepSpec | str | Path,
    out_dir: str | Path,
    executor: str | None = None,
    max_parallel: int | None = None,
    progress: ProgressArg = None,
    retries: int | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Run every unfinished run of ``spec`` into ``out_dir``; block until all are done or failed.

    ``cache_dir`` is what the backend's ``prepare`` fills (default ``out_dir/data``).
    Returns the summary: counts (done, failed, skipped, retried, cancelled), FLOPs, wall time and
    the failed runs with their errors. Finished runs are never run again; a failed run is retried
    up to ``retries`` times (from its checkpoint); a second launcher on ``out_dir`` is refused.
    """
    spec = _as_spec(spec)
    settings = spec.executor
    kind = executor or settings.kind
    if kind not in ("debug", "local", "slurm"):
        raise UsageError(f"--executor {kind!r}: choose debug, local or slurm")
    retries = settings.retries if retries is None else retries
    out = Path(out_dir)
    lock = SweepLock(out)
    lock.acquire(kind)
    try:
        with contextlib.suppress(FileNotFoundError):
            (out / CANCEL).unlink()
        return _launch_locked(spec, out, kind, settings, max_parallel or settings.max_parallel,
                              threads or settings.threads_per_run, retries, _progress_fn(progress), lock,
                              Path(cache_dir) if cache_dir else out / "data")
    finally:
        lock.release()


def _launch_locked(spec: SweepSpec, out: Path, kind: str, settings: ExecutorSettings, max_parallel: int | None,
                   threads: int | None, retries: int, show: Callable[[Progress], None], lock: SweepLock,
                   cache_dir: Path) -> dict[str, Any]:
    t0 = time.time()
    store, runs = write_store(spec, out)
    by_id = {r.run_id: r for r in runs}
    flops = {r.run_id: r.flops() for r in runs}
    skipped = [r.run_id for r in runs if store.run(r.run_id).is_done()]
    todo = [r.run_id for r in runs if r.run_id not in skipped]
    if kind == "slurm":
        par = max_parallel or settings.slurm.array_parallelism
        threads = threads or settings.slurm.cpus_per_task or 1
    else:
        par, threads = share_cores(len(todo), max_parallel, threads)
        if kind == "debug":
            par = 1
    target = _backend_target(spec.backend)
    backend = _load_backend(spec.backend, target) if todo else None
    if todo and backend is not None and hasattr(backend, "prepare"):
        backend.prepare([by_id[i] for i in todo], str(cache_dir))
    ex = _Executor(kind, out / SUBMITIT / "%j", settings, threads, backend) if todo else None

    # adopt runs still alive from an earlier launcher
    inflight: dict[str, _Handle] = {}
    queued0 = squeue_ids() if any(store.run(r).read_status().get("slurm_job") for r in todo) else None
    for rid in todo:
        h = _orphan(store.run(rid), queued0)
        if h is not None:
            inflight[rid] = h
    pending = [rid for rid in todo if rid not in inflight]
    attempts = dict.fromkeys(todo, 0)
    failed: dict[str, str] = {}
    retried = 0
    cancelled = False
    flops_at_start = sum(flops[r] for r in skipped)
    last_beat = 0.0

    def ready(rid: str) -> bool:
        parent = by_id[rid].branch_of
        return parent is None or parent not in by_id or store.run(parent).is_done()

    def snapshot(finished: bool = False) -> Progress:
        done = [r for r in runs if store.run(r.run_id).is_done()]
        fl_done = sum(flops[r.run_id] for r in done)
        done_ids = {r.run_id for r in done}
        running = [rid for rid in inflight if rid not in done_ids]
        for rid in running:
            fl_done += flops[rid] * min(1.0, _tokens_done(store.run(rid)) / max(1, by_id[rid].tokens))
        elapsed = time.time() - t0
        rate = (fl_done - flops_at_start) / elapsed if elapsed > 0 else 0.0
        remaining = sum(flops.values()) - fl_done
        eta = remaining / rate if rate > 0 else None
        return Progress(
            name=spec.name, total=len(runs), done=len(done), running=len(running), failed=len(failed),
            pending=len(pending), skipped=len(skipped), retried=retried, flops_total=sum(flops.values()),
            flops_done=fl_done, elapsed_s=elapsed, eta_s=0.0 if finished else eta,
            running_names=tuple(by_id[r].name or r for r in running), finished=finished,
        )

    try:
        while pending or inflight:
            if (out / CANCEL).exists():
                cancelled = True
                for h in inflight.values():
                    h.cancel()
                break
            # dependencies that can never be met
            for rid in list(pending):
                parent = by_id[rid].branch_of
                if parent in failed:
                    pending.remove(rid)
                    failed[rid] = f"trunk {parent} failed"
                    store.run(rid).update_status("failed", error=failed[rid])
            batch = []
            for rid in list(pending):
                if len(inflight) + len(batch) >= par:
                    break
                if ready(rid):
                    pending.remove(rid)
                    attempts[rid] += 1
                    task = RunTask(str(store.run(rid).path), spec.backend, target, threads, str(cache_dir))
                    batch.append((rid, task, by_id[rid]))
            if batch and ex is not None:
                for h in ex.submit(batch):
                    inflight[h.run_id] = h
                    if h.slurm_id:
                        store.run(h.run_id).update_status(None, slurm_job=h.slurm_id, submitted=time.time())
            queued = squeue_ids() if any(h.slurm_id for h in inflight.values()) else set()
            for rid, h in list(inflight.items()):
                if not h.done(queued):
                    continue
                del inflight[rid]
                rd = store.run(rid)
                if rd.is_done():
                    continue
                err = rd.read_status().get("error") or h.error() or "the run ended without result.json"
                if attempts.get(rid, 0) <= retries:
                    retried += 1
                    pending.insert(0, rid)
                    rd.update_status("pending", error=err, retry=attempts.get(rid, 0))
                else:
                    failed[rid] = err
                    rd.update_status("failed", error=err)
            if not pending and not inflight:
                break
            show(snapshot())
            if time.time() - last_beat > 5:
                lock.heartbeat()
                last_beat = time.time()
            time.sleep(settings.poll_s if kind != "debug" else 0)
    except KeyboardInterrupt:
        for h in inflight.values():
            h.cancel()
        cancelled = True
        raise
    finally:
        if cancelled:
            for rid in todo:
                rd = store.run(rid)
                if not rd.is_done() and rid not in failed:
                    rd.update_status("cancelled", pid=None)
        show(snapshot(finished=True))
    final = snapshot(finished=True)
    return {
        "out_dir": str(out),
        "name": spec.name,
        "executor": kind,
        "max_parallel": par,
        "threads_per_run": threads,
        "runs": len(runs),
        "done": final.done,
        "failed": len(failed),
        "cancelled": cancelled,
        "skipped": len(skipped),
        "retried": retried,
        "flops_total": final.flops_total,
        "flops_done": final.flops_done,
        "wall_s": time.time() - t0,
        "failed_runs": [{"run_id": r, "name": by_id[r].name, "error": e} for r, e in failed.items()],
    }


def resume(out_dir: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Launch again from the folder's own ``sweep.yaml``: finished runs are skipped, the rest resume."""
    p = Path(out_dir) / SweepStore.SWEEP
    if not p.exists():
        raise UsageError(f"{out_dir}: no {SweepStore.SWEEP} here; give the --out folder of a launched sweep")
    return launch(load_spec(p), out_dir, **kwargs)


# ---- status and cancel -------------------------------------------------------------------------------------


def run_state(rd: RunDir, queued: set[str] | None = None) -> str:
    """The run's state as it really is: a ``running`` run whose process or job is gone is ``interrupted``."""
    st = rd.read_status()
    state = st.get("state", "pending")
    if state != "running":
        return state
    if st.get("slurm_job") or st.get("executor") == "slurm":
        if queued is None:
            return state
        return "running" if _in_queue(st.get("slurm_job") or st.get("job_id"), queued) else "interrupted"
    if st.get("host") == socket.gethostname():
        return "running" if pid_alive(st.get("pid"), st.get("pid_start")) else "interrupted"
    return state


def status(out_dir: str | Path) -> dict[str, Any]:
    """Counts, FLOPs and one row per run, as they are now (read-only)."""
    out = Path(out_dir)
    store = SweepStore(out)
    if not (out / SweepStore.SWEEP).exists() and not store.runs():
        raise UsageError(f"{out_dir}: not a sweep folder (no {SweepStore.SWEEP}, no runs/)")
    need_q = any(rd.read_status().get("slurm_job") for rd in store.runs())
    queued = squeue_ids() if need_q else None
    rows = []
    counts = {k: 0 for k in ("pending", "running", "done", "failed", "cancelled", "interrupted")}
    fl_total = fl_done = 0.0
    for rd in store.runs():
        spec = rd.read_spec() or {}
        st = rd.read_status()
        state = run_state(rd, queued)
        counts[state] = counts.get(state, 0) + 1
        res = rd.read_result_or_none() or {}
        tokens = int(spec.get("tokens", 0))
        done_tokens = tokens if state == "done" else _tokens_done(rd)
        f = float((spec.get("derived") or {}).get("flops") or 0)
        fl_total += f
        fl_done += f * min(1.0, done_tokens / tokens) if tokens else 0
        rows.append({
            "run_id": rd.run_id, "name": spec.get("name"), "budget": spec.get("budget"), "state": state,
            "attempts": st.get("attempts", 0), "requeues": st.get("requeues", 0), "tokens": tokens,
            "params": (spec.get("derived") or {}).get("params"),
            "tokens_done": done_tokens, "final_loss": res.get("final_loss"), "eval_loss": res.get("eval_loss"),
            "wall_time": res.get("wall_time"), "job_id": st.get("job_id"), "error": st.get("error") if state != "done" else None,
        })
    rows.sort(key=lambda r: (r["budget"] is None, r["budget"] or 0, r["params"] or 0, str(r["name"])))
    info = SweepLock(out).read()
    launcher = None
    if info:
        launcher = {**{k: info.get(k) for k in ("pid", "host", "started", "heartbeat", "executor")},
                    "alive": not SweepLock.is_stale(info)}
    return {"out_dir": str(out), "counts": counts, "total": len(rows), "flops_total": fl_total, "flops_done": fl_done,
            "launcher": launcher, "complete": counts["done"] == len(rows) and len(rows) > 0, "runs": rows}


def cancel(out_dir: str | Path, wait_s: float = 30.0) -> dict[str, Any]:
    """Stop a sweep: the live launcher cancels its jobs and exits; orphan runs are ended too.

    Finished runs stay finished; the rest are marked ``cancelled`` (``resume`` starts them again).
    """
    out = Path(out_dir)
    if not (out / SweepStore.SWEEP).exists():
        raise UsageError(f"{out_dir}: not a sweep folder (no {SweepStore.SWEEP})")
    atomic_write_json(out / CANCEL, {"requested": time.time(), "by": os.getpid()})
    lock = SweepLock(out)
    info = lock.read()
    if info and not SweepLock.is_stale(info):
        end = time.time() + wait_s
        while time.time() < end and lock.read() is not None and not SweepLock.is_stale(lock.read()):
            time.sleep(0.2)
    store = SweepStore(out)
    stopped = []
    slurm_ids = []
    for rd in store.runs():
        if rd.is_done():
            continue
        st = rd.read_status()
        if st.get("host") == socket.gethostname() and pid_alive(st.get("pid"), st.get("pid_start")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(st["pid"]), signal.SIGTERM)
            stopped.append(rd.run_id)
        if st.get("slurm_job") and st.get("state") in ("running", "pending"):
            slurm_ids.append(str(st["slurm_job"]))
        if st.get("state") != "cancelled":
            rd.update_status("cancelled", pid=None)
    if slurm_ids:
        with contextlib.suppress(OSError):
            subprocess.run(["scancel", *slurm_ids], capture_output=True, check=False, timeout=30)
    if lock.read() is None or SweepLock.is_stale(lock.read()):
        with contextlib.suppress(FileNotFoundError):
            (out / CANCEL).unlink()
    counts = store.counts()
    return {"out_dir": str(out), "stopped_processes": stopped, "scancelled": slurm_ids, "counts": counts}


def read_launch_lock(out_dir: str | Path) -> dict[str, Any] | None:
    return read_json(Path(out_dir) / LOCK)
