"""What a launch has done so far, and how it is shown: :class:`Progress` snapshots, the
:class:`ProgressMeter` that takes them from the store, and two displays (a live rich bar on a
terminal, one line per change elsewhere).

FLOPs done counts finished runs whole and running runs by the tokens of their newest metrics
row. The ETA, from the first snapshot on, comes from the runs' estimated seconds (the backend's
measured :class:`scaling.timing.TimingModel`, or its ``estimate_seconds``): the pending runs'
seconds and what is left of the running ones (by their tokens done), times the live factor of
:class:`scaling.timing.Refiner` (measured over predicted seconds of this launch's finished and
running runs), packed onto the launch's parallel slots. A backend without estimates falls back to
the FLOPs left over the FLOP rate of this launch (finished runs skipped at the start do not count
towards the rate).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from scaling.runspec import RunSpec
from scaling.store import RunDir, SweepStore
from scaling.timing import Refiner, eta_seconds


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
    estimate_basis: str | None = None  # what the run estimates behind the ETA came from, in words

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
    """Snapshots of one launch: the runs of the sweep, read from the store each time (a run
    once seen finished is not read again)."""

    def __init__(self, name: str, runs: Sequence[RunSpec], store: SweepStore, skipped: Collection[str]) -> None:
        self.name, self.store = name, store
        self.by_id = {r.run_id: r for r in runs}
        self.flops = {r.run_id: r.flops() for r in runs}
        self.skipped = len(skipped)
        self.flops_at_start = sum(self.flops[r] for r in skipped)
        self.t0 = time.time()
        self.done_ids: set[str] = set(skipped)
        self.seconds: dict[str, float] | None = None
        self.startup_s = 0.0
        self.slots = 1
        self.refiner = Refiner()
        self.basis: str | None = None

    def use_estimates(self, seconds: Mapping[str, float | None], startup_s: float, slots: int,
                      basis: str | None = None) -> None:  # fmt: skip
        """ETAs from each run's estimated seconds (``startup_s`` of them before its process
        reports running) on ``slots`` parallel runs, estimated from ``basis`` (in words); a run
        without an estimate: the FLOP-rate ETA."""
        if seconds and all(v is not None and v > 0 for v in seconds.values()):
            self.seconds = {k: float(v) for k, v in seconds.items() if v is not None}
            self.basis = basis
        self.startup_s, self.slots = max(0.0, startup_s), max(1, slots)

    def _predicted(self, rid: str, frac: float = 1.0) -> float:
        """Predicted seconds of a run's process, from its start, for its first ``frac`` of its work."""
        assert self.seconds is not None
        return max(0.0, self.seconds[rid] - self.startup_s) * frac

    def _newly_done(self, rid: str) -> None:
        st = self.store.run(rid).read_status()
        if self.seconds is not None and rid in self.seconds and st.get("started") and st.get("finished"):
            self.refiner.finish(float(st["finished"]) - float(st["started"]), self._predicted(rid), float(st["finished"]))

    def snapshot(self, running: Collection[str], pending: Collection[str], failed: int, retried: int,
                 finished: bool = False) -> Progress:
        for rid in self.by_id:
            if rid not in self.done_ids and self.store.run(rid).is_done():
                self.done_ids.add(rid)
                self._newly_done(rid)
        done_ids = self.done_ids
        fl_done = sum(self.flops[r] for r in done_ids)
        live = [rid for rid in running if rid not in done_ids]
        fracs = {}
        for rid in live:
            fracs[rid] = min(1.0, tokens_done(self.store.run(rid)) / max(1, self.by_id[rid].tokens))
            fl_done += self.flops[rid] * fracs[rid]
        now = time.time()
        elapsed = now - self.t0
        total = sum(self.flops.values())
        if finished:
            eta: float | None = 0.0
        elif self.seconds is not None:
            eta = self._estimated_eta(live, fracs, [r for r in pending if r not in done_ids], now)
        else:
            rate = (fl_done - self.flops_at_start) / elapsed if elapsed > 0 else 0.0
            eta = (total - fl_done) / rate if rate > 0 else None
        return Progress(
            name=self.name, total=len(self.by_id), done=len(done_ids), running=len(live), failed=failed,
            pending=len(pending), skipped=self.skipped, retried=retried, flops_total=total, flops_done=fl_done,
            elapsed_s=elapsed, eta_s=eta,
            running_names=tuple(self.by_id[r].name or r for r in live), finished=finished,
            estimate_basis=self.basis,
        )

    def _estimated_eta(self, live: Sequence[str], fracs: dict[str, float], pending: Sequence[str], now: float) -> float:
        assert self.seconds is not None
        evidence, left = [], []
        for rid in live:
            started = self.store.run(rid).read_status().get("started")
            if started and fracs[rid] > 0:
                evidence.append((now - float(started), self._predicted(rid, fracs[rid])))
            left.append(self._predicted(rid) * (1.0 - fracs[rid]))
        factor = self.refiner.factor(now, evidence)
        return eta_seconds([self.seconds[r] for r in pending], left, self.slots, factor)


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
        first, self.last = self.last is None, key
        pct = 100 * p.flops_done / p.flops_total if p.flops_total else 100.0
        eta = "?" if p.eta_s is None else fmt_s(p.eta_s)
        basis = f" ({p.estimate_basis})" if p.estimate_basis and first else ""
        print(f"[{p.name}] {p.done}/{p.total} done, {p.running} running, {p.failed} failed, "
              f"{pct:.0f}% of {p.flops_total:.3g} FLOPs, elapsed {fmt_s(p.elapsed_s)}, ETA {eta}{basis}",
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
