"""``sweep status`` (read-only: every run's state as it really is) and ``sweep cancel``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from scaling.errors import UsageError
from scaling.store import RunDir, SweepStore, atomic_write_json, observed_state
from scaling.sweep.jobs import in_queue, recorded_process, squeue_ids, stop_processes
from scaling.sweep.lock import SweepLock, holder_alive
from scaling.sweep.progress import tokens_done

CANCEL = "cancel.request"


def run_state(rd: RunDir, queued: set[str] | None = None) -> str:
    """The run's state as it really is: a ``running`` run whose process or job is gone is ``interrupted``."""
    return live_state(rd.read_status(), queued)


def live_state(st: dict[str, Any], queued: set[str] | None = None) -> str:
    """:func:`run_state` of a ``status.json`` already read."""
    state = st.get("state", "pending")
    if state != "running":
        return state
    if st.get("slurm_job") or st.get("executor") == "slurm":
        if queued is None:
            return state
        return "running" if in_queue(st.get("slurm_job") or st.get("job_id"), queued) else "interrupted"
    return observed_state(st)


def _row(out: Path, r: dict[str, Any], queued: set[str] | None) -> dict[str, Any]:
    """One run's status row from its index record (:func:`scaling.columnar.status_records`)."""
    st = r["_status"]
    state = r["status"] if r["status"] in ("done", "corrupt") else live_state({**st, "state": r["status"]}, queued)
    done = state == "done"
    tokens = int(r["tokens"] or 0)
    return {
        "run_id": r["run_id"], "name": r["name"], "budget": r["budget"], "state": state,
        "attempts": st.get("attempts", 0), "requeues": st.get("requeues", 0), "tokens": tokens,
        "params": r["params"], "flops": float(r["planned_flops"] or 0),
        "tokens_done": tokens if done else tokens_done(RunDir(out / SweepStore.RUNS / r["run_id"])),
        "final_loss": r["final_loss"] if done else None, "eval_loss": r["eval_loss"] if done else None,
        "wall_time": r["wall_time"] if done else None, "job_id": st.get("job_id"), "gpus": st.get("gpus"),
        "error": st.get("error") if not done else None, "added": r["added"],
    }


def status(out_dir: str | Path) -> dict[str, Any]:
    """Counts, FLOPs and one row per run, as they are now (read-only; through the store's
    columnar index, so only runs whose files changed since the last read are opened)."""
    from scaling.columnar import status_records

    out = Path(out_dir)
    records = status_records(out) if (out / SweepStore.RUNS).is_dir() else []
    if not (out / SweepStore.SWEEP).exists() and not records:
        raise UsageError(f"{out_dir}: not a sweep folder (no {SweepStore.SWEEP}, no runs/)")
    need_q = any(r["status"] == "running" and r["_status"].get("slurm_job") for r in records)
    queued = squeue_ids() if need_q else None
    counts = {k: 0 for k in ("pending", "running", "done", "failed", "cancelled", "interrupted")}
    rows = []
    for r in records:
        row = _row(out, r, queued)
        counts[row["state"]] = counts.get(row["state"], 0) + 1
        rows.append(row)
    fl_total = sum(r["flops"] for r in rows)
    fl_done = sum(r["flops"] * min(1.0, r["tokens_done"] / r["tokens"]) for r in rows if r["tokens"])
    for r in rows:
        del r["flops"]
    rows.sort(key=lambda r: (r["budget"] is None, r["budget"] or 0, r["params"] or 0, str(r["name"])))
    info = SweepLock(out).read()
    launcher = None
    if info:
        launcher = {**{k: info.get(k) for k in ("pid", "host", "started", "heartbeat", "executor")},
                    "alive": holder_alive(info)}
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
    end = time.time() + wait_s
    while time.time() < end and holder_alive(lock.read()):
        time.sleep(0.2)
    store = SweepStore(out)
    stopped, slurm_ids, procs = [], [], []
    for rd in store.runs():
        if rd.is_done():
            continue
        st = rd.read_status()
        if (proc := recorded_process(st)) is not None:
            procs.append(proc)
            stopped.append(rd.run_id)
        if st.get("slurm_job") and st.get("state") in ("running", "pending"):
            slurm_ids.append(str(st["slurm_job"]))
        if st.get("state") != "cancelled":
            rd.update_status("cancelled", pid=None)
    stop_processes(procs)
    if slurm_ids:
        with contextlib.suppress(OSError):
            subprocess.run(["scancel", *slurm_ids], capture_output=True, check=False, timeout=30)
    if not holder_alive(lock.read()):
        with contextlib.suppress(FileNotFoundError):
            (out / CANCEL).unlink()
    return {"out_dir": str(out), "stopped_processes": stopped, "scancelled": slurm_ids, "counts": store.counts()}
