"""Data files for the fitters: CSV, JSONL, JSON and parquet read into a frame, bad files refused.

Each reader returns a frame whose ``attrs["source_lines"]`` gives the file line of every row (CSV:
the header is line 1; JSONL: one object a line), so a refusal names the line a user opens in an
editor, and whose ``attrs["source"]`` is the file's name. A file that cannot be read (empty,
binary, a broken line, a corrupt parquet footer) raises :class:`UsageError` naming the file, the
line and column where there is one, and the fix.

Pure: pandas (pyarrow for parquet).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from scaling.errors import UsageError
from scaling.jsonl import objects

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
            ".json": "json"}


def read_file(path: Path) -> pd.DataFrame:
    """Rows of a CSV, parquet, JSONL or JSON file (by suffix), each with its file line."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UsageError(f"DATA: unknown file type {path.suffix!r}; use .csv, .parquet or .jsonl")
    if kind == "parquet":
        frame = _parquet(path)
    else:
        text = _text(path)
        frame = {"csv": _csv, "jsonl": _jsonl, "json": _json}[kind](text, path)
    frame.attrs["source"] = path.name
    return frame


def where(frame: pd.DataFrame, positions: list[int]) -> str:
    """``lines 5, 7 of data.csv`` where the rows came from a file, else ``rows 3, 4`` (0-based)."""
    lines = frame.attrs.get("source_lines")
    if lines is not None and len(lines) == len(frame):
        return f"line{'s' if len(positions) > 1 else ''} {', '.join(str(lines[i]) for i in positions)} of {frame.attrs.get('source', 'DATA')}"
    if "run_id" in frame:
        return f"run{'s' if len(positions) > 1 else ''} {', '.join(str(frame['run_id'].iloc[i]) for i in positions)}"
    return f"row{'s' if len(positions) > 1 else ''} {', '.join(str(i) for i in positions)}"


def _text(path: Path) -> str:
    raw = path.read_bytes()
    if not raw.strip():
        raise UsageError(f"DATA {path}: the file is empty; give a header (params,tokens,loss) and one row per run")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise UsageError(f"DATA {path}:{line}: byte {e.start} is not UTF-8 text; is this a {path.suffix} file?") from None


def _csv(text: str, path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(io.StringIO(text))
    except pd.errors.ParserError as e:
        raise UsageError(f"DATA {path}: not a valid CSV ({' '.join(str(e).split())}); fix that line") from None
    except pd.errors.EmptyDataError:
        raise UsageError(f"DATA {path}: no header line; the first line names the columns: params,tokens,loss") from None
    # pandas skips blank lines: the rows are the non-blank lines after the header
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if line.strip()][1:]
    frame.attrs["source_lines"] = lines if len(lines) == len(frame) else None  # quoted newlines: no map
    return frame


def _jsonl(text: str, path: Path) -> pd.DataFrame:
    rows = list(objects(text.splitlines(), f"DATA {path}"))
    frame = pd.DataFrame.from_records([row for _, row in rows])
    frame.attrs["source_lines"] = [i for i, _ in rows]
    return frame


def _json(text: str, path: Path) -> pd.DataFrame:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"DATA {path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg}); fix the file") from None
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return pd.DataFrame.from_records(data)
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        try:
            return pd.DataFrame(data)
        except ValueError as e:
            raise UsageError(f"DATA {path}: columns of different lengths ({e}); give equal-length lists") from None
    raise UsageError(f"DATA {path}: give a list of row objects or an object of column lists (or use .jsonl)")


def _parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow raises OSError, ArrowInvalid or others on a damaged file
        raise UsageError(
            f"DATA {path}: not a readable parquet file ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
            "write it again (pandas.DataFrame.to_parquet) or give a CSV"
        ) from None
