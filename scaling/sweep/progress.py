"""What a launch has done so far, and how it is shown: :class:`Progress` snapshots, the
:class:`ProgressMeter` that takes them from the store, and two displays (a live rich bar on a
terminal, one line per change elsewhere).

FLOPs done counts finished runs whole and running runs by the tokens of their newest metrics
row; the ETA is the FLOPs left over the FLOP rate of this launch (finished runs skipped at the
start do not count towards the rate).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from scaling.runspec import RunSpec
from scaling.store import RunDir, SweepStore


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


def tokens_done(rd: RunDir) -> int:
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


class ProgressMeter:
    """Snapshots of one launch: the runs of the sweep, read from the store each time."""

    def __init__(self, name: str, runs: Sequence[RunSpec], store: SweepStore, skipped: Collection[str]) -> None:
        self.name, self.store = name, store
        self.by_id = {r.run_id: r for r in runs}
        self.flops = {r.run_id: r.flops() for r in runs}
        self.skipped = len(skipped)
        self.flops_at_start = sum(self.flops[r] for r in skipped)
        self.t0 = time.time()

    def snapshot(self, running: Collection[str], pending: int, failed: int, retried: int,
                 finished: bool = False) -> Progress:
        done_ids = {rid for rid in self.by_id if self.store.run(rid).is_done()}
        fl_done = sum(self.flops[r] for r in done_ids)
        live = [rid for rid in running if rid not in done_ids]
        for rid in live:
            frac = tokens_done(self.store.run(rid)) / max(1, self.by_id[rid].tokens)
            fl_done += self.flops[rid] * min(1.0, frac)
        elapsed = time.time() - self.t0
        rate = (fl_done - self.flops_at_start) / elapsed if elapsed > 0 else 0.0
        total = sum(self.flops.values())
        eta = (total - fl_done) / rate if rate > 0 else None
        return Progress(
            name=self.name, total=len(self.by_id), done=len(done_ids), running=len(live), failed=failed,
            pending=pending, skipped=self.skipped, retried=retried, flops_total=total, flops_done=fl_done,
            elapsed_s=elapsed, eta_s=0.0 if finished else eta,
            running_names=tuple(self.by_id[r].name or r for r in live), finished=finished,
        )


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
        self.task: Any = None

    def __call__(self, p: Progress) -> None:
        runs = f"{p.done}/{p.total} done, {p.running} running, {p.failed} failed"
        eta = "?" if p.eta_s is None else fmt_s(p.eta_s)
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
        eta = "?" if p.eta_s is None else fmt_s(p.eta_s)
        print(f"[{p.name}] {p.done}/{p.total} done, {p.running} running, {p.failed} failed, "
              f"{pct:.0f}% of {p.flops_total:.3g} FLOPs, elapsed {fmt_s(p.elapsed_s)}, ETA {eta}",
              file=self.stream, flush=True)


def fmt_s(s: float) -> str:
    """``M:SS`` or ``H:MM:SS``."""
    s = max(0, int(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


ProgressArg = Callable[[Progress], None] | bool | None


def progress_fn(progress: ProgressArg) -> Callable[[Progress], None]:
    """A callback as given; ``False``: none; ``None``: the rich bar on a terminal, lines elsewhere."""
    if callable(progress):
        return progress
    if progress is False:
        return lambda p: None
    if progress is None and not sys.stderr.isatty():
        return LineProgress()
    return RichProgress()
