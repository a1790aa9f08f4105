"""Launch a sweep through submitit and see it through: skip, retry, requeue, resume, cancel.

One launcher owns a sweep folder at a time (:class:`~scaling.sweep.lock.SweepLock`). The launcher
writes ``sweep.yaml`` and every run's ``spec.json``, calls the backend's ``prepare`` once, then
keeps runs in flight (:mod:`scaling.sweep.executors`) until each is done or has failed
``retries + 1`` times.

The store is the truth: a run is finished iff its ``result.json`` exists, so a relaunch skips it
and a killed launcher loses nothing. Each run is a :class:`~scaling.sweep.task.RunTask`, a
``submitit.helpers.Checkpointable``: on pre-emption or time-out Slurm requeues it and the backend
resumes from the run's own newest checkpoint. A relaunch adopts runs whose process (local) or job
(Slurm) is still alive instead of starting them twice (:func:`~scaling.sweep.jobs.adopt`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from scaling.backends.base import backend_class, backend_target
from scaling.errors import UsageError
from scaling.runspec import RunSpec
from scaling.store import CorruptFileError, RunDir, SweepStore, atomic_write_json
from scaling.sweep.added import added_runs
from scaling.sweep.control import CANCEL
from scaling.sweep.executors import KINDS, Executor, cores, parallelism
from scaling.sweep.gpus import Placement, check_needs, gpu_estimates, gpu_plan, gpus_per_run
from scaling.sweep.grid import expand
from scaling.sweep.jobs import Handle, adopt, recorded_process, squeue_ids, stop_processes
from scaling.sweep.lock import RunLock, SweepLock, pid_alive
from scaling.sweep.plan import finished_runs
from scaling.sweep.progress import Progress, ProgressArg, ProgressMeter, progress_fn
from scaling.sweep.spec import SweepSpec, load_spec
from scaling.sweep.task import RunTask

SUBMITIT = "submitit"


def sweep_runs(spec: SweepSpec, out_dir: str | Path) -> list[RunSpec]:
    """The grid's runs, then those the folder's ``extend.json`` added (:mod:`scaling.sweep.added`)."""
    runs = expand(spec)
    ids = {r.run_id for r in runs}
    return runs + [r for r in added_runs(spec, out_dir) if r.run_id not in ids]


def write_store(spec: SweepSpec, out_dir: str | Path, runs: list[RunSpec] | None = None) -> tuple[SweepStore, list[RunSpec]]:
    """``sweep.yaml`` and each run's ``spec.json`` (default: :func:`sweep_runs`): labels and
    execution options refreshed, the hashed config unchanged; a finished run keeps the execution
    options it ran with."""
    runs = sweep_runs(spec, out_dir) if runs is None else runs
    store = SweepStore(out_dir)
    store.path.mkdir(parents=True, exist_ok=True)
    store.write_sweep(spec.to_yaml())
    _rename_legacy_folders(store, {r.run_id for r in runs})
    for r in runs:
        rd = store.run(r.run_id)
        old = _stored_spec(rd)
        if old is not None and rd.is_done():
            r = r.model_copy(update={"execution_options": old.execution_options})
        d = r.to_json_dict()
        if old is None or rd.read_spec() != json.loads(json.dumps(d)):
            rd.write_spec(d)
        if not (rd.path / RunDir.STATUS).exists():
            rd.update_status("pending", attempts=0)
    return store, runs


def check_same_sweep(spec: SweepSpec, out_dir: str | Path, add: bool = False) -> None:
    """A folder holds one sweep: launching a spec whose runs differ from those of the folder's
    ``sweep.yaml`` exits 2 naming both, unless ``add`` (its runs join the folder's; ``sweep.yaml``
    becomes this spec, the one ``resume`` relaunches)."""
    stored_path = Path(out_dir) / SweepStore.SWEEP
    if add or not stored_path.exists():
        return
    fix = "add --add to add its runs to this folder, or choose another --out"
    try:
        stored = load_spec(stored_path)
    except UsageError as e:
        raise UsageError(f"--out {out_dir}: holds a sweep whose {SweepStore.SWEEP} does not load ({e}); {fix}") from None
    new, old = {r.run_id for r in expand(spec)}, {r.run_id for r in expand(stored)}
    if new == old:
        return
    raise UsageError(
        f"--out {out_dir}: holds sweep {stored.name!r} ({len(old)} runs, {stored_path}), not spec {spec.name!r} "
        f"({len(new)} runs, {len(new - old)} of them not in the folder, {len(old - new)} of the folder's not in it); {fix}")


def _stored_spec(rd: RunDir) -> RunSpec | None:
    try:
        d = rd.read_spec()
        return RunSpec.from_json_dict(d) if d else None
    except (CorruptFileError, ValueError):
        return None  # rewritten from the sweep's own spec


def _rename_legacy_folders(store: SweepStore, planned: set[str]) -> None:
    """Run folders named by an older identity (execution options once hashed): renamed to the run
    id their config has now, unless a process still writes them, so a relaunch finds them."""
    for rd in store.runs():
        if rd.run_id in planned:
            continue
        old = _stored_spec(rd)
        new = store.run(old.run_id) if old is not None else None
        if new is None or new.run_id not in planned or new.path.exists():
            continue
        st = rd.read_status()
        if RunLock(rd.path).busy() or (st.get("state") == "running" and pid_alive(st.get("pid"), st.get("pid_start"))):
            continue
        rd.path.rename(new.path)
        result = new.read_result_or_none()
        if result is not None and result.get("run_id") == rd.run_id:
            atomic_write_json(new.path / RunDir.RESULT, {**result, "run_id": new.run_id})


def _backend_target(name: str) -> str:
    try:
        return backend_target(name)
    except ValueError as e:
        raise UsageError(str(e)) from None


class _Launch:
    """One launch of a sweep folder by the launcher that holds its lock."""

    def __init__(self, spec: SweepSpec, out: Path, kind: str, max_parallel: int | None, threads: int | None,
                 retries: int, show: Callable[[Progress], None], lock: SweepLock, cache_dir: Path,
                 gpus: Sequence[int] | None = None, runs_per_gpu: int | str | None = None) -> None:
        self.spec, self.out, self.kind, self.retries, self.show, self.lock = spec, out, kind, retries, show, lock
        self.settings = spec.executor
        runs = sweep_runs(spec, out)  # the grid and the runs an adaptive sweep added
        # before anything is written: a GPU that is not here is bad input
        where = "--gpus" if gpus is not None else spec.where("executor", "gpus")
        self.gpu = gpu_plan(kind, self.settings, runs, cores(), gpus, runs_per_gpu, where=where)
        self.needs: dict[str, int] = {}
        if self.gpu is not None:
            backend = backend_class(spec.backend)()
            self.needs = {r.run_id: gpus_per_run(backend, r) for r in runs}
            check_needs(self.gpu, runs, list(self.needs.values()), where)
        self.store, self.runs = write_store(spec, out, runs)
        self.by_id = {r.run_id: r for r in self.runs}
        self.skipped = [r.run_id for r in self.runs if self.store.run(r.run_id).is_done()]
        self.todo = [r.run_id for r in self.runs if r.run_id not in self.skipped]
        self.placement = Placement(self.gpu) if self.gpu is not None else None
        self.par, self.threads = parallelism(kind, self.settings, len(self.todo), max_parallel, threads, self.gpu)
        self.cache_dir = cache_dir
        self.target = _backend_target(spec.backend)
        self.meter = ProgressMeter(spec.name, self.runs, self.store, self.skipped)
        self.inflight: dict[str, Handle] = {}
        self.pending: list[str] = []
        self.attempts = dict.fromkeys(self.todo, 0)
        self.failed: dict[str, str] = {}
        self.retried = 0
        self.cancelled = False
        self.ex: Executor | None = None

    def start(self) -> None:
        """Prepare the backend's data, adopt runs an earlier launcher left alive, queue the rest."""
        if not self.todo:
            return
        backend = backend_class(self.spec.backend)()
        if hasattr(backend, "prepare"):
            backend.prepare([self.by_id[i] for i in self.todo], str(self.cache_dir))
        # a backend that learns from finished runs (Nanotron: their measured MFU) reads this study's
        finished = finished_runs(self.out) if hasattr(backend, "calibrate") else []
        ests, model = gpu_estimates(backend, [self.by_id[i] for i in self.todo], self.threads, self.gpu, finished)
        basis = model.source if model is not None else getattr(backend, "estimate_basis", None)
        self.meter.use_estimates(dict(zip(self.todo, ests, strict=True)), model.startup_s if model else 0.0, self.par,
                                 basis)
        self.ex = Executor(self.kind, self.out / SUBMITIT / "%j", self.settings, self.threads, backend)
        slurm = any(self.store.run(r).read_status().get("slurm_job") for r in self.todo)
        queued = squeue_ids() if slurm else None
        for rid in self.todo:
            h = adopt(self.store.run(rid), queued, self.out / SUBMITIT / "%j")
            if h is not None:
                self.inflight[rid] = h
                if self.placement is not None:  # it keeps the GPU it was placed on
                    self.placement.hold(rid, self.store.run(rid).read_status().get("gpus"))
        self.pending = [rid for rid in self.todo if rid not in self.inflight]

    def _ready(self, rid: str) -> bool:
        parent = self.by_id[rid].branch_of
        return parent is None or parent not in self.by_id or self.store.run(parent).is_done()

    def fail_orphaned_branches(self) -> None:
        """A branch whose trunk failed can never start."""
        for rid in list(self.pending):
            parent = self.by_id[rid].branch_of
            if parent in self.failed:
                self.pending.remove(rid)
                self.failed[rid] = f"trunk {parent} failed"
                self.store.run(rid).update_status("failed", error=self.failed[rid])

    def submit_ready(self) -> None:
        batch = []
        for rid in list(self.pending):
            if len(self.inflight) + len(batch) >= self.par:
                break
            if self._ready(rid):
                if self.placement is not None:
                    gpus = self.placement.take(rid, self.needs.get(rid, 1))
                    if gpus is None:
                        break  # in launch order: a run waits for its GPUs, the next ones wait behind it
                    self.store.run(rid).update_status(None, gpus=list(gpus))  # before the run writes its status
                self.pending.remove(rid)
                self.attempts[rid] += 1
                task = RunTask(str(self.store.run(rid).path), self.spec.backend, self.target, self.threads,
                               str(self.cache_dir))
                batch.append((rid, task, self.by_id[rid]))
        if batch and self.ex is not None:
            for h in self.ex.submit(batch, self.placement.held if self.placement is not None else None):
                self.inflight[h.run_id] = h
                if h.slurm_job:
                    self.store.run(h.run_id).update_status(None, slurm_job=h.slurm_job, submitted=time.time())

    def collect_finished(self) -> None:
        """Runs that ended: done, queued again for a retry, or failed for good."""
        queued = squeue_ids() if any(h.slurm_job for h in self.inflight.values()) else set()
        for rid, h in list(self.inflight.items()):
            if not h.done(queued):
                continue
            del self.inflight[rid]
            if self.placement is not None:
                self.placement.release(rid)  # done, failed or killed: its GPU takes the next run
            rd = self.store.run(rid)
            if rd.is_done():
                continue
            err = rd.read_status().get("error") or h.error() or "the run ended without result.json"
            if self.attempts.get(rid, 0) <= self.retries:
                self.retried += 1
                self.pending.insert(0, rid)
                rd.update_status("pending", error=err, retry=self.attempts.get(rid, 0))
            else:
                self.failed[rid] = err
                rd.update_status("failed", error=err)

    def cancel_all(self) -> None:
        self.cancelled = True
        stop_processes([p for h in self.inflight.values() for p in h.cancel()])

    def snapshot(self, finished: bool = False) -> Progress:
        return self.meter.snapshot(self.inflight, self.pending, len(self.failed), self.retried, finished)

    def loop(self) -> None:
        last_beat = 0.0
        try:
            while self.pending or self.inflight:
                if (self.out / CANCEL).exists():
                    self.cancel_all()
                    break
                self.fail_orphaned_branches()
                self.submit_ready()
                self.collect_finished()
                if not self.pending and not self.inflight:
                    break
                self.show(self.snapshot())
                if time.time() - last_beat > 5:
                    self.lock.heartbeat()
                    last_beat = time.time()
                time.sleep(self.settings.poll_s if self.kind != "debug" else 0)
        except KeyboardInterrupt:
            self.cancel_all()
            raise
        finally:
            if self.cancelled:
                left = [rd for rd in map(self.store.run, self.todo) if not rd.is_done() and rd.run_id not in self.failed]
                # in case a job handle's cancel missed its process
                stop_processes([p for rd in left if (p := recorded_process(rd.read_status())) is not None])
                for rd in left:
                    rd.update_status("cancelled", pid=None)
            self.show(self.snapshot(finished=True))

    def summary(self) -> dict[str, Any]:
        final = self.snapshot(finished=True)
        return {
            "out_dir": str(self.out), "name": self.spec.name, "executor": self.kind, "max_parallel": self.par,
            "threads_per_run": self.threads, "gpus": self.gpu.to_dict() if self.gpu else None, "runs": len(self.runs), "done": final.done, "failed": len(self.failed),
            "cancelled": self.cancelled, "skipped": len(self.skipped), "retried": self.retried,
            "flops_total": final.flops_total, "flops_done": final.flops_done, "wall_s": time.time() - self.meter.t0,
            "estimate_basis": final.estimate_basis,
            "failed_runs": [{"run_id": r, "name": self.by_id[r].name, "error": e} for r, e in self.failed.items()],
        }


def launch(
    spec: SweepSpec | str | Path,
    out_dir: str | Path,
    executor: str | None = None,
    max_parallel: int | None = None,
    progress: ProgressArg = None,
    retries: int | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    lock: SweepLock | None = None,
    add: bool = False,
    gpus: Sequence[int] | None = None,
    runs_per_gpu: int | str | None = None,
) -> dict[str, Any]:
    """Run every unfinished run of ``spec`` into ``out_dir``; block until all are done or failed.

    ``cache_dir`` is what the backend's ``prepare`` fills (default ``out_dir/data``).
    Returns the summary: counts (done, failed, skipped, retried, cancelled), FLOPs, wall time and
    the failed runs with their errors. Finished runs are never run again; a failed run is retried
    up to ``retries`` times (from its checkpoint); a second launcher on ``out_dir`` is refused.
    ``lock``: the folder's lock, already held by the caller (``scaling run`` holds it for the
    whole study); otherwise it is taken here for the launch. A folder holding another sweep is
    refused unless ``add`` (:func:`check_same_sweep`). ``gpus``/``runs_per_gpu`` override the spec's
    ``executor.gpus``/``executor.runs_per_gpu`` (local: one GPU a run process, :mod:`scaling.sweep.gpus`).
    """
    spec = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    kind = executor or spec.executor.kind
    if kind not in KINDS:
        raise UsageError(f"--executor {kind!r}: choose {', '.join(KINDS)}")
    out = Path(out_dir)
    own = lock is None
    held = SweepLock(out) if lock is None else lock
    if own:
        held.acquire(kind)
    try:
        check_same_sweep(spec, out, add)
        with contextlib.suppress(FileNotFoundError):
            (out / CANCEL).unlink()
        run = _Launch(spec, out, kind, max_parallel, threads, spec.executor.retries if retries is None else retries,
                      progress_fn(progress), held, Path(cache_dir) if cache_dir else out / "data", gpus, runs_per_gpu)
        run.start()
        run.loop()
        return run.summary()
    finally:
        if own:
            held.release()


def resume(out_dir: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Launch again from the folder's own ``sweep.yaml``: finished runs are skipped, the rest resume."""
    p = Path(out_dir) / SweepStore.SWEEP
    if not p.exists():
        raise UsageError(f"{out_dir}: no {SweepStore.SWEEP} here; give the --out folder of a launched sweep")
    return launch(load_spec(p), out_dir, **kwargs)
