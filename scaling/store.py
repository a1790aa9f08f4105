"""The results store: one folder per sweep, one folder per run, every write crash-safe.

Layout::

    SWEEP/
      sweep.yaml                 the resolved sweep spec
      runs/<run_id>/
        spec.json                resolved RunSpec (written once, atomically)
        status.json              {"state": pending|running|done|failed, "attempts", "host", "job_id", ...}
        metrics.jsonl            one JSON object per step, appended line by line (fsync'd)
        result.json              written last, atomically: the run is done iff this exists
        checkpoints/

Atomic writes: temp file in the same folder, fsync, ``os.replace``, fsync of the folder. Every file
and folder the store writes gets the mode the process umask gives (0644/0755 under the usual
022), not the temp file's private 0600, so teammates can read a study on a shared filesystem.
A file that does not parse raises :class:`CorruptFileError` naming its path; readers report that
run as ``corrupt`` and read the rest.
Metrics: each line is written with one ``write`` and fsync'd; a torn last line (a kill mid-write)
is skipped on read, and :meth:`RunDir.append_metrics` first truncates such a tail so the next line
starts clean. ``load_runs(path)`` is the one reader for fits and reports.

Pure: imports the standard library, plus pandas in :func:`load_runs`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import pandas as pd

State = Literal["pending", "running", "done", "failed", "cancelled"]
STATES: tuple[str, ...] = ("pending", "running", "done", "failed", "cancelled")


# ---- modes and atomic primitives ------------------------------------------------------------------


def current_umask() -> int:
    """The process umask, read without changing it where procfs has it (no race with threads)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """``0o666 & ~umask``: the mode ``open()`` gives a new file."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """``0o777 & ~umask``: the mode ``mkdir`` gives a new folder."""
    return 0o777 & ~current_umask()


def make_temp_dir(parent: str | Path, prefix: str = ".tmp-") -> Path:
    """A fresh folder in ``parent`` (to fill, then rename into place) with the umask's mode,
    not ``mkdtemp``'s private 0700."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    tmp.chmod(dir_mode())
    return tmp


def apply_umask(path: str | Path) -> None:
    """Give ``path`` (a file, or a folder and everything in it) the umask's modes: for files
    written by libraries that create them private (safetensors' ``save_file`` makes 0600)."""
    p = Path(path)
    fm, dm = file_mode(), dir_mode()
    if p.is_file():
        p.chmod(fm)
        return
    for root, _dirs, files in os.walk(p):
        os.chmod(root, dm)
        for name in files:
            os.chmod(os.path.join(root, name), fm)



def proc_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


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


def observed_state(status: dict[str, Any]) -> str:
    """``status.json``'s state as it is now: a ``running`` run of this host whose process is gone
    is ``interrupted`` (a Slurm run needs the queue to tell: :func:`scaling.sweep.control.live_state`)."""
    state = status.get("state", "pending")
    slurm = status.get("slurm_job") or status.get("executor") == "slurm"
    if state == "running" and not slurm and status.get("host") == socket.gethostname() \
            and not pid_alive(status.get("pid"), status.get("pid_start")):
        return "interrupted"
    return state


class CorruptFileError(json.JSONDecodeError):
    """A store file that is not valid JSON (or not UTF-8); the message names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(reason, "", 0)
        self.path = Path(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: not valid JSON ({self.reason}); delete or restore it (resume reruns a run without a valid result.json)"

    def __reduce__(self) -> tuple[Any, ...]:
        return (CorruptFileError, (self.path, self.reason))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[Any]:
    """A binary file that replaces ``path`` in one rename when the block ends (fsync'd first,
    with the umask's mode); on an error or a kill ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a mix."""
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(obj: Any, indent: int | None = 2) -> str:
    """JSON with numpy values converted; NaN/inf written as null (strict JSON)."""
    return json.dumps(_clean(obj), indent=indent, default=_json_default, allow_nan=False)


def _clean(o: Any) -> Any:
    if isinstance(o, float):
        return o if o == o and o not in (float("inf"), float("-inf")) else None
    if isinstance(o, Mapping):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "item") and not hasattr(o, "__len__"):
        return _clean(o.item())
    return o


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, dumps(obj) + "\n")


def read_json(path: str | Path, default: Any = None) -> Any:
    """The parsed file, ``default`` when it does not exist; :class:`CorruptFileError` (naming the
    file) when it is not valid UTF-8 JSON."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return default
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CorruptFileError(path, f"not UTF-8 at byte {e.start}") from None
    except json.JSONDecodeError as e:
        raise CorruptFileError(path, f"{e.msg}: line {e.lineno} column {e.colno}") from None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every complete JSON line; a torn or corrupt line (a kill mid-write) is skipped."""
    out: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # torn tail
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return out


# ---- run folders ----------------------------------------------------------------------------------


class RunDir:
    """One run's folder. Backends write through this; nothing else writes run files."""

    SPEC = "spec.json"
    STATUS = "status.json"
    METRICS = "metrics.jsonl"
    RESULT = "result.json"
    CHECKPOINTS = "checkpoints"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    # -- spec / status / result
    def write_spec(self, spec: Mapping[str, Any]) -> None:
        atomic_write_json(self.path / self.SPEC, spec)

    def read_spec(self) -> dict[str, Any] | None:
        return read_json(self.path / self.SPEC)

    def _stored_status(self) -> dict[str, Any]:
        """``status.json`` as written; a corrupt one reads as a fresh status (it is advisory:
        ``result.json`` is the truth, and the next update rewrites it)."""
        try:
            st = read_json(self.path / self.STATUS)
        except CorruptFileError:
            st = None
        return st if isinstance(st, dict) else {"state": "pending", "attempts": 0}

    def read_status(self) -> dict[str, Any]:
        """``status.json``, with ``state`` ``done`` when a valid ``result.json`` exists and
        ``corrupt`` (``error`` and ``corrupt`` naming the file) when ``result.json`` or
        ``status.json`` is garbage."""
        return self.read_status_and_result()[0]

    def read_status_and_result(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """:meth:`read_status` and the valid ``result.json`` (``None``: absent or corrupt), each
        file read once."""
        try:
            st = read_json(self.path / self.STATUS)
            if st is not None and not isinstance(st, dict):
                raise CorruptFileError(self.path / self.STATUS, "not a JSON object")
        except CorruptFileError as e:
            st = {"state": "corrupt", "attempts": 0, "error": str(e), "corrupt": str(e.path)}
        st = st or {"state": "pending", "attempts": 0}
        try:
            result = self.read_result()
        except CorruptFileError as e:
            return {**st, "state": "corrupt", "error": str(e), "corrupt": str(e.path)}, None
        if result is not None and st.get("state") != "done":
            st = {**st, "state": "done"}  # result.json is the truth
        return st, result

    def update_status(self, state: State | None = None, **fields: Any) -> dict[str, Any]:
        st = self._stored_status()
        if state is not None:
            if state not in STATES:
                raise ValueError(f"state={state!r}: one of {STATES}")
            st["state"] = state
        st.update(fields)
        st["updated"] = time.time()
        atomic_write_json(self.path / self.STATUS, st)
        return st

    def mark_running(self, job_id: str | None = None) -> dict[str, Any]:
        st = self._stored_status()
        return self.update_status(
            "running",
            attempts=int(st.get("attempts", 0)) + 1,
            host=socket.gethostname(),
            pid=os.getpid(),
            job_id=job_id or os.environ.get("SLURM_JOB_ID"),
            started=time.time(),
        )

    def is_done(self) -> bool:
        """Whether ``result.json`` exists and is a valid JSON object (a corrupt one is not done:
        ``resume`` reruns that run from its checkpoint)."""
        try:
            return self.read_result() is not None
        except CorruptFileError:
            return False

    def write_result(self, result: Mapping[str, Any]) -> None:
        """Written last: its presence means the run finished."""
        atomic_write_json(self.path / self.RESULT, result)
        self.update_status("done", finished=time.time())

    def read_result(self) -> dict[str, Any] | None:
        """``result.json``; ``None`` when absent; :class:`CorruptFileError` when it is garbage."""
        result = read_json(self.path / self.RESULT)
        if result is not None and not isinstance(result, dict):
            raise CorruptFileError(self.path / self.RESULT, "not a JSON object")
        return result

    def read_result_or_none(self) -> dict[str, Any] | None:
        """``result.json``, or ``None`` when it is absent or corrupt (the run is then not done)."""
        try:
            return self.read_result()
        except CorruptFileError:
            return None

    # -- metrics
    def _repair_metrics_tail(self) -> None:
        p = self.path / self.METRICS
        if not p.exists():
            return
        with open(p, "rb+") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            # find the last newline and cut the torn line
            pos = size - 1
            chunk = 4096
            while pos > 0:
                start = max(0, pos - chunk)
                f.seek(start)
                buf = f.read(pos - start)
                i = buf.rfind(b"\n")
                if i >= 0:
                    f.truncate(start + i + 1)
                    return
                pos = start
            f.truncate(0)

    def append_metrics(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows, one JSON line each, with one write and an fsync."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._repair_metrics_tail()
        data = "".join(dumps(r, indent=None) + "\n" for r in rows)
        if not data:
            return
        with open(self.path / self.METRICS, "a", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / self.METRICS)

    def truncate_metrics_after(self, step: int) -> None:
        """On resume from a checkpoint at ``step``: drop rows logged after it, atomically,
        so the resumed run's rows do not repeat steps."""
        rows = [r for r in self.read_metrics() if int(r.get("step", 0)) <= step]
        atomic_write_text(self.path / self.METRICS, "".join(dumps(r, indent=None) + "\n" for r in rows))


class SweepStore:
    """A sweep folder: ``sweep.yaml`` and ``runs/<run_id>/``."""

    SWEEP = "sweep.yaml"
    RUNS = "runs"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def run(self, run_id: str) -> RunDir:
        return RunDir(self.path / self.RUNS / run_id)

    def runs(self) -> list[RunDir]:
        d = self.path / self.RUNS
        if not d.is_dir():
            return []
        return [RunDir(p) for p in sorted(d.iterdir()) if p.is_dir() and (p / RunDir.SPEC).exists()]

    def write_sweep(self, text: str) -> None:
        atomic_write_text(self.path / self.SWEEP, text)

    def read_sweep(self) -> str | None:
        p = self.path / self.SWEEP
        return p.read_text() if p.exists() else None

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for r in self.runs():
            out[r.read_status().get("state", "pending")] += 1
        return out


# ---- the one reader ---------------------------------------------------------------------------------


def load_runs(path: str | Path, curves: bool = False, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per run: run_id, status (``corrupt`` when a file of the run does not parse, with
    ``error`` naming it), attempts, config columns (``shape.hidden``, ``backend_options.threads``...),
    params, non_embedding_params, planned_flops, tokens, flops, final_loss, eval_loss, wall_time and
    the rest of ``result.json``. With ``curves=True``, one row per logged step instead (``run_id``,
    ``name``, ``budget`` plus the metrics columns; ``run_id`` and ``name`` categorical, categories
    in text order), for approach 1 and training-curve plots; ``columns`` keeps only those of them
    (and ``run_id``), read from disk alone.

    A ``running`` run whose process on this host is gone reads ``interrupted`` (as ``sweep status``).
    Read through the study's derived columnar index (:mod:`scaling.columnar`): only runs whose
    files changed since the last read are opened. Every column has one type, so the frame writes
    to parquet and CSV as it is.
    """
    from scaling.columnar import read_frames

    if columns is not None and not curves:
        raise ValueError("columns: only with curves=True (the one-row-per-run frame is read whole)")
    frame = read_frames(path, curves=curves, columns=columns)[0]
    if not curves and "status" in frame:
        # the index holds status.json as written; a run whose process is gone is interrupted, as
        # `sweep status` says (only running runs are looked at again)
        running = frame.index[frame["status"] == "running"]
        runs = Path(path) / SweepStore.RUNS
        for i in running:
            frame.loc[i, "status"] = observed_state(RunDir(runs / str(frame.at[i, "run_id"])).read_status())
    return frame
