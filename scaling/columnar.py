"""The store's columnar read path: a derived index of parquet files, refreshed incrementally.

The run folders stay the source of truth (``metrics.jsonl`` appended line by line, ``result.json``
written atomically). ``SWEEP/.index/`` holds what is derived from them and can be deleted at any
time (the next read rebuilds it):

* ``runs.parquet``: the one-row-per-run frame of :func:`scaling.store.load_runs`, plus, per run,
  the stat fingerprint of its files when it was read (``_fp``), its raw ``status.json`` (``_status``)
  and which curve segment holds its steps (``_segment``, ``_curves_fp``);
* ``curves-<id>.parquet``: segments of the one-row-per-step frame of ended runs (done, failed or
  cancelled: :data:`SETTLED`). A read writes one new segment with the runs that ended (or changed)
  since the last one; past
  :data:`MAX_SEGMENTS` the live rows are compacted into one.

A read stats each run's folder, and, unless the index holds the run as done with that folder
mtime, its ``result.json`` and ``metrics.jsonl`` (the store writes ``spec.json``, ``status.json``
and ``result.json`` by rename, which changes the folder's mtime, and only a new attempt, which
rewrites ``status.json`` first, appends to a done run's metrics; a file edited in place by hand
is seen once its folder changes, or after ``rm -r .index``); a run whose fingerprint matches the
index is not opened. A fingerprint younger than :data:`RACY_NS` before
the index was scanned is not trusted (a write within the file system's timestamp granularity
could hide behind it), as in git's index. Runs that have not ended are read from their
``metrics.jsonl`` every time (a torn last line is skipped) and never written to a segment. Reading
is pyarrow's: its JSON reader parses the runs' JSONL in C++ (a file with a corrupt line falls back
to the line-by-line reader), parquet holds the index, and the frames come out through
``Table.to_pandas`` (the steps' ``run_id`` and ``name`` as categoricals: a code per row, read
from the segments' dictionaries, not ten million strings). A study that cannot be written
(another user's, read-only), or any study while ``SCALING_STORE_READ_ONLY=1``, is read the same
way without persisting the index. The changed runs' rows are made by :mod:`scaling.run_rows`.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scaling.errors import ScalingWarning
from scaling.metrics_tables import read_steps, rows_of_runs, steps_frame, unify_steps
from scaling.run_rows import export_safe, run_row
from scaling.store import RunDir, SweepStore, atomic_writer

INDEX = ".index"
RUNS_FILE = "runs.parquet"
SEGMENT_PREFIX = "curves-"
MAX_SEGMENTS = 16
RACY_NS = 2_000_000_000  # timestamps this close to the index's scan are re-checked next time
READ_ONLY_ENV = "SCALING_STORE_READ_ONLY"  # "1": read studies without writing their .index/
ORPHAN_AGE_S = 600.0  # an unreferenced segment older than this is a crashed writer's: removed
# A run in one of these states writes no more steps until it is retried, and a retry changes its
# files' fingerprint (and its state) before it writes: its steps can live in a segment.
SETTLED = ("done", "failed", "cancelled")
_BOOK = ("_fp", "_mtime_ns", "_status", "_segment", "_curves_fp")


class CorruptRunWarning(ScalingWarning):
    """A run folder holds a file that does not parse; the run is reported as ``corrupt``."""


@dataclass
class ReadStats:
    """What one read cost: runs listed, runs whose files were opened, curve rows re-parsed, and
    the seconds of each phase (``index``: the index's run table read; ``list``: the run folders
    listed and stat-ed; ``rows``: the run table made, changed runs' JSON read and the table
    written; ``segments``: the index's steps read; ``metrics``: JSONL parsed, of running runs and
    of runs that ended; ``persist``: a new segment written; ``frame``: the pandas frame made)."""

    runs: int = 0
    runs_read: int = 0
    curves_read: int = 0
    live_curves: int = 0
    segments: int = 0
    compacted: bool = False
    persisted: bool = False
    corrupt: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        """Adds the block's wall time to ``seconds[phase]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


# ---- locating the runs and their fingerprints ----------------------------------------------------------


def _layout(path: Path) -> tuple[Path | None, Path | None]:
    """``(folder holding run folders, index folder)``; a single run folder has no index."""
    if (path / RunDir.SPEC).exists():
        return None, None
    if (path / SweepStore.RUNS).is_dir():
        return path / SweepStore.RUNS, path / INDEX
    if path.is_dir():
        return path, path / INDEX
    return None, None


class Known(NamedTuple):
    """What the index holds of a run: its fingerprint, newest mtime, and whether it is sealed
    (done, and its files older than the guard when the index was scanned)."""

    fp: str
    mtime_ns: int
    sealed: bool


def _fingerprint(run: str, known: Known | None = None) -> tuple[str, int] | None:
    """``("mtime|mtime:size|mtime:size" of the folder, result.json and metrics.jsonl, newest
    mtime)``; ``None`` when the folder holds no spec.json. The store writes spec.json, status.json
    and result.json by rename, which changes the folder's mtime: spec.json needs no stat while the
    folder's mtime matches the index's, and a sealed run's files none at all (after result.json
    nothing appends to metrics.jsonl but a new attempt, which first rewrites status.json); a
    metrics.jsonl appended in place is seen by its own stat in every other state (a cancelled
    run's process may log a last step after the cancel)."""
    try:
        d = os.stat(run)
    except (FileNotFoundError, NotADirectoryError):
        return None
    head = str(d.st_mtime_ns)
    if known is not None and known.fp.split("|", 1)[0] == head:
        if known.sealed:
            return known.fp, known.mtime_ns
    else:
        try:
            os.stat(f"{run}/{RunDir.SPEC}")
        except FileNotFoundError:
            return None
    parts = [head]
    newest = d.st_mtime_ns
    for name in (RunDir.RESULT, RunDir.METRICS):
        try:
            st = os.stat(f"{run}/{name}")
        except FileNotFoundError:
            parts.append("-")
            continue
        parts.append(f"{st.st_mtime_ns}:{st.st_size}")
        newest = max(newest, st.st_mtime_ns)
    return "|".join(parts), newest


def _metrics_part(fp: str) -> str:
    """The result and metrics parts of a fingerprint: what a run's curves depend on."""
    return "|".join(fp.split("|")[1:])


def list_runs(path: str | Path, known: Mapping[str, Known] | None = None
              ) -> tuple[dict[str, tuple[str, str, int]], Path | None]:
    """``{run_id: (folder, fingerprint, newest mtime)}`` in run-id order, and the index folder;
    ``known``: what the index holds, which spares the stats :func:`_fingerprint` says."""
    p = Path(path)
    runs_dir, index = _layout(p)
    if runs_dir is None:
        fp = _fingerprint(str(p))
        return ({p.name: (str(p), *fp)} if fp else {}), None
    known = known or {}
    out: dict[str, tuple[str, str, int]] = {}
    base = str(runs_dir)
    with os.scandir(base) as it:
        names = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    for name in names:
        folder = f"{base}/{name}"
        fp = _fingerprint(folder, known.get(name))
        if fp is not None:
            out[name] = (folder, *fp)
    return out, index


# ---- the index ------------------------------------------------------------------------------------------


HEADS = ("run_id", "name")  # read as dictionaries (a segment written before they were one included)


def _read_parquet(path: Path, columns: Sequence[str] | None = None, heads: bool = False) -> pa.Table:
    """The file's table; with ``columns``, only those of them it has (read from disk alone); with
    ``heads`` (a segment), ``run_id`` and ``name`` dictionary-encoded: a code per row, not a string."""
    f = pq.ParquetFile(path, memory_map=True, read_dictionary=HEADS if heads else None)
    return f.read(columns=None if columns is None else [c for c in f.schema_arrow.names if c in columns])


def _select(tables: list[pa.Table], columns: Sequence[str] | None) -> list[pa.Table]:
    if columns is None:
        return tables
    return [t.select([c for c in t.column_names if c in columns]) for t in tables]


def _write_parquet(path: Path, table: pa.Table) -> None:
    with atomic_writer(path) as f:
        pq.write_table(table, f)


def _plain_heads(table: pa.Table) -> pa.Table:
    """``run_id`` and ``name`` as text, for parquet to dictionary-encode per row group (written
    from arrow dictionaries instead, which differ chunk by chunk, a segment reads ~3x slower;
    from one dictionary unified over the segment, its codes map ~1.3x slower)."""
    for c in HEADS:
        if c in table.column_names and pa.types.is_dictionary(table.schema.field(c).type):
            table = table.set_column(table.column_names.index(c), c, table[c].cast(pa.string()))
    return table


class StudyReader:
    """One read of a study: lists its runs, loads the index, re-reads what changed, persists."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.scan_ns = time.time_ns()
        self.index = _layout(self.path)[1]
        self.stats = ReadStats()
        with self.stats.timing("index"):
            self.cached, self.cached_scan = self._cached()
        with self.stats.timing("list"):
            self.runs, _ = list_runs(self.path, self._known())
        self.stats.runs = len(self.runs)
        self._book: pd.DataFrame | None = None

    # -- runs
    def _known(self) -> dict[str, Known] | None:
        if self.cached is None or "_fp" not in self.cached:
            return None
        trusted = self.cached_scan - RACY_NS
        return {rid: Known(fp, int(mt), state == "done" and int(mt) < trusted)
                for rid, fp, mt, state in zip(*_lists(self.cached, "run_id", "_fp", "_mtime_ns", "status"), strict=True)}

    def _cached(self) -> tuple[pd.DataFrame | None, int]:
        if self.index is None:
            return None, 0
        try:
            t = _read_parquet(self.index / RUNS_FILE)
            scan = int((t.schema.metadata or {}).get(b"scan_ns", b"0"))
            return t.to_pandas(), scan
        except (OSError, pa.ArrowException, ValueError):
            return None, 0  # no index yet, or a damaged one: rebuilt from the run folders

    def runs_frame(self) -> pd.DataFrame:
        """One row per run, with the bookkeeping columns (``_fp``...)."""
        if self._book is not None:
            return self._book
        with self.stats.timing("rows"):
            return self._runs_frame()

    def _runs_frame(self) -> pd.DataFrame:
        cached, cached_scan = self.cached, self.cached_scan
        keep: list[str] = []
        prior: dict[str, tuple[Any, Any]] = {}
        if cached is not None and "_fp" in cached:
            for rid, fp, mt, seg, cfp in zip(*_lists(cached, "run_id", "_fp", "_mtime_ns", "_segment", "_curves_fp"),
                                             strict=True):
                entry = self.runs.get(rid)
                if entry is not None and entry[1] == fp and int(mt) < cached_scan - RACY_NS:
                    keep.append(rid)
                elif entry is not None:
                    prior[rid] = (seg, cfp)
        kept = set(keep)
        fresh = []
        for rid, (folder, fp, mt) in self.runs.items():
            if rid in kept:
                continue
            row, status, corrupt = run_row(RunDir(folder))
            seg, cfp = prior.get(rid, (None, None))
            fresh.append({**row, "_fp": fp, "_mtime_ns": mt, "_status": json.dumps(status, default=str),
                          "_segment": seg, "_curves_fp": cfp, "_corrupt": "; ".join(corrupt) or None})
        self.stats.runs_read = len(fresh)
        changed = bool(fresh) or cached is None or len(keep) != len(cached)
        if not changed:
            self._book = cached  # nothing changed: the index as it is
            return cached
        parts = [pd.DataFrame(fresh)] if fresh else []
        if keep:
            parts.insert(0, cached[cached["run_id"].isin(kept)])
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else (parts[0] if parts else pd.DataFrame())
        if len(frame):
            frame = export_safe(frame.sort_values("run_id", kind="stable").reset_index(drop=True))
        self._book = frame
        self._persist_runs()
        return frame

    def _writable(self) -> bool:
        return self.index is not None and os.environ.get(READ_ONLY_ENV, "") in ("", "0")

    def _persist_runs(self) -> None:
        if not self._writable() or self._book is None or not len(self._book):
            return
        try:
            self.index.mkdir(exist_ok=True)
            table = pa.Table.from_pandas(self._book, preserve_index=False)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"scan_ns": str(self.scan_ns).encode()})
            _write_parquet(self.index / RUNS_FILE, table)
            self.stats.persisted = True
        except (OSError, pa.ArrowException):
            self.stats.persisted = False  # a read-only study: read, do not persist

    def corrupt(self) -> list[str]:
        frame = self.runs_frame()
        if "_corrupt" not in frame:
            return []
        return [c for c in frame["_corrupt"].dropna() if c]

    # -- curves
    def curves_table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """One row per logged step of every run (finished runs from the segments); with
        ``columns``, only those (and ``run_id``) are read from the index."""
        wanted = None if columns is None else ["run_id", *columns]
        book = self.runs_frame()
        if not len(book):
            return unify_steps([])
        segs: dict[str, list[str]] = {}
        reread: list[str] = []
        live: list[str] = []
        for rid, state, fp, mt, seg, cfp in zip(*_lists(book, "run_id", "status", "_fp", "_mtime_ns", "_segment",
                                                        "_curves_fp"), strict=True):
            if isinstance(seg, str) and state in SETTLED and cfp == _metrics_part(fp):
                segs.setdefault(seg, []).append(rid)
            elif state in SETTLED and int(mt) < self.scan_ns - RACY_NS:
                reread.append(rid)  # ended: read once, kept in a new segment
            else:
                live.append(rid)  # pending, running, or written too recently to trust its timestamps
        with self.stats.timing("segments"):
            kept = self._read_segments(segs, wanted, reread)
        ids, name_list, budget_list = _lists(book, "run_id", "name", "budget")
        names, budgets = dict(zip(ids, name_list, strict=True)), dict(zip(ids, budget_list, strict=True))

        def items(ids: list[str]) -> list[tuple[str, str, Any, Any]]:
            return [(self.runs[r][0], r, names[r], _number(budgets[r])) for r in ids]

        with self.stats.timing("metrics"):
            new = read_steps(items(reread))  # every column: persisted whole
        self.stats.curves_read = len(reread)
        self.stats.live_curves = len(live)
        if new and self._writable():
            # compacting rewrites every segment: only from whole tables, not a read of some columns
            compact = wanted is None and len(kept) + 1 > MAX_SEGMENTS
            with self.stats.timing("persist"):
                kept = self._persist_segment(kept, new, reread, replaced=list(segs), compact=compact)
        elif new:
            kept = kept + new
        self.stats.segments = len(kept)
        with self.stats.timing("metrics"):
            live_steps = read_steps(items(live))
        return unify_steps(_select(kept + live_steps, wanted))

    def _read_segments(self, segs: Mapping[str, list[str]], wanted: Sequence[str] | None,
                       reread: list[str]) -> list[pa.Table]:
        """The steps of runs ``segs`` names per segment; the runs of a segment that cannot be
        read are added to ``reread``."""
        assert self.index is not None
        kept: list[pa.Table] = []
        for seg, ids in segs.items():
            try:
                t = _read_parquet(self.index / seg, wanted, heads=True)
            except (OSError, pa.ArrowException):
                reread.extend(ids)  # removed by a concurrent compaction, or damaged: from the source
                continue
            if int((t.schema.metadata or {}).get(b"runs", b"-1")) != len(ids):
                t = rows_of_runs(t, ids)
            kept.append(t)
        return kept

    def _persist_segment(self, kept: list[pa.Table], new: list[pa.Table], ids: list[str],
                         replaced: list[str], compact: bool) -> list[pa.Table]:
        """Write the re-read runs as one new segment (or, with ``compact``, everything as one)."""
        assert self._book is not None and self.index is not None
        table = unify_steps(kept + new) if compact else unify_steps(new)
        name = f"{SEGMENT_PREFIX}{uuid.uuid4().hex[:12]}.parquet"
        book = self._book
        members = set(book.loc[book["status"].isin(SETTLED), "run_id"]) if compact else set(ids)
        table = table.replace_schema_metadata({b"runs": str(len(members)).encode()})
        try:
            self.index.mkdir(exist_ok=True)
            _write_parquet(self.index / name, _plain_heads(table))
        except (OSError, pa.ArrowException):
            return kept + new
        mask = book["run_id"].isin(members)
        book.loc[mask, "_segment"] = name
        book.loc[mask, "_curves_fp"] = book.loc[mask, "_fp"].map(_metrics_part)
        self._persist_runs()
        self.stats.compacted = compact
        if compact:
            self._remove_orphans(live={name}, replaced=set(replaced))
            return [table]
        return kept + [table]

    def _remove_orphans(self, live: set[str], replaced: set[str]) -> None:
        """Delete the segments a compaction replaced, and unreferenced ones old enough to be a
        crashed writer's (a younger one may be a concurrent reader's, about to be referenced)."""
        assert self.index is not None
        now = time.time()
        for p in self.index.glob(f"{SEGMENT_PREFIX}*.parquet"):
            with contextlib.suppress(OSError):
                if p.name not in live and (p.name in replaced or now - p.stat().st_mtime > ORPHAN_AGE_S):
                    p.unlink()


def _lists(frame: pd.DataFrame, *columns: str) -> list[list[Any]]:
    """The columns as Python lists (``None`` throughout for one the frame lacks): a column's
    ``tolist`` is one conversion, where iterating an arrow-backed column costs a call a value."""
    return [frame[c].tolist() if c in frame else [None] * len(frame) for c in columns]


def _number(v: Any) -> float | None:
    try:
        return None if v is None or v != v else float(v)
    except (TypeError, ValueError):
        return None


# ---- the frames ------------------------------------------------------------------------------------------


STATUS_COLUMNS = ("run_id", "name", "budget", "status", "tokens", "params", "planned_flops", "final_loss",
                  "eval_loss", "wall_time", "added")


def status_records(path: str | Path) -> list[dict[str, Any]]:
    """Per run, through the index: the columns ``sweep status`` shows (missing values ``None``)
    and ``status.json`` as written (``_status``: pid, host, job ids, error...)."""
    book = StudyReader(path).runs_frame()
    if not len(book):
        return []
    frame = book.reindex(columns=[*STATUS_COLUMNS, "_status"])
    out = []
    for rec in frame.to_dict("records"):
        rec = {k: (None if isinstance(v, float) and v != v else v) for k, v in rec.items()}
        rec["_status"] = json.loads(rec["_status"]) if isinstance(rec["_status"], str) else {}
        out.append(rec)
    return out


def read_frames(path: str | Path, curves: bool = False,
                columns: Sequence[str] | None = None) -> tuple[pd.DataFrame, ReadStats]:  # fmt: skip
    """``load_runs``'s frame (one row per run, or per step with ``curves``: only ``columns`` of
    them, and ``run_id``, where given) and what it cost."""
    reader = StudyReader(path)
    book = reader.runs_frame()
    for c in reader.corrupt():
        warnings.warn(CorruptRunWarning(f"{c}: not valid JSON; the study is read without it (restore or delete "
                                        "it; `scaling sweep resume` reruns a run without a valid result.json)"),
                      stacklevel=3)
    reader.stats.corrupt = reader.corrupt()
    if curves:
        table = reader.curves_table(columns)
        with reader.stats.timing("frame"):
            frame = steps_frame(table)
    else:
        frame = book.drop(columns=[c for c in (*_BOOK, "_corrupt") if c in book])
    return frame, reader.stats
