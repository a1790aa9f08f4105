"""Runs' ``metrics.jsonl`` as pyarrow tables: complete lines only (a torn last line is not a row),
parsed in batches by pyarrow's C++ JSON reader, run by run where it refuses a batch; tables whose
columns differ unified into one."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

from scaling.store import RunDir, read_jsonl

BATCH_BYTES = 64 << 20  # JSONL parsed at once by the C++ reader when building the index


def _parse_jsonl(data: bytes) -> pa.Table | None:
    """Complete JSON lines as a table, by pyarrow's C++ reader; ``None`` where it cannot (a corrupt
    line, a type that changes, nested values): the caller goes line by line."""
    if not data:
        return pa.table({})
    try:
        opts = pa_json.ReadOptions(block_size=max(len(data) + 1, 1 << 20))
        table = pa_json.read_json(io.BytesIO(data), read_options=opts)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    if any(pa.types.is_nested(t) for t in table.schema.types):
        return None
    return table


def _complete_lines(path: str) -> bytes:
    """The file up to its last newline (a torn last line, a kill mid-write, is not a row)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return b""
    return data[: data.rfind(b"\n") + 1]


def _with_heads(table: pa.Table, ids: list[str], names: list[Any], budgets: list[Any], counts: list[int]) -> pa.Table:
    """``run_id, name, budget`` columns before the metrics, ``counts[i]`` rows for run ``i``."""
    take = pa.array(np.repeat(np.arange(len(ids), dtype=np.int32), counts))
    heads = {"run_id": pa.array(ids, pa.string()).take(take),
             "name": pa.array([None if n is None else str(n) for n in names], pa.string()).take(take),
             "budget": pa.array(budgets, pa.float64()).take(take)}
    rest = {c: table[c] for c in table.column_names if c not in heads}
    return pa.table({**heads, **rest})


def _read_one(folder: str, rid: str, name: Any, budget: Any) -> pa.Table:
    data = _complete_lines(f"{folder}/{RunDir.METRICS}")
    table = _parse_jsonl(data) if b"\n\n" not in data else None
    if table is None:  # line by line: corrupt lines skipped, nested values as JSON text
        rows = read_jsonl(f"{folder}/{RunDir.METRICS}")
        table = pa.Table.from_pylist([{k: (json.dumps(v) if isinstance(v, (dict, list)) else v)
                                       for k, v in r.items()} for r in rows])
    return _with_heads(table, [rid], [name], [budget], [table.num_rows])


def read_steps(items: list[tuple[str, str, Any, Any]]) -> list[pa.Table]:
    """The logged steps of runs ``(folder, run_id, name, budget)``: their complete JSONL lines
    parsed ~64 MB at a time by pyarrow's C++ reader; a batch it refuses goes run by run."""
    out: list[pa.Table] = []
    batch: list[tuple[tuple[str, str, Any, Any], bytes]] = []
    size = 0

    def flush() -> None:
        nonlocal size
        if not batch:
            return
        counts = [d.count(b"\n") for _, d in batch]
        table = _parse_jsonl(b"".join(d for _, d in batch))
        if table is not None and table.num_rows == sum(counts):
            out.append(_with_heads(table, [i[1] for i, _ in batch], [i[2] for i, _ in batch],
                                   [i[3] for i, _ in batch], counts))
        else:
            out.extend(_read_one(*item) for item, _ in batch)
        batch.clear()
        size = 0

    for item in items:
        data = _complete_lines(f"{item[0]}/{RunDir.METRICS}")
        if b"\n\n" in data or data.startswith(b"\n"):
            out.append(_read_one(*item))  # blank lines: the line count would not match the rows
            continue
        batch.append((item, data))
        size += len(data)
        if size >= BATCH_BYTES:
            flush()
    flush()
    return out


def unify_steps(tables: list[pa.Table]) -> pa.Table:
    """One table from runs' step tables whose columns may differ (missing: null; int and float:
    float; anything else mixed: text)."""
    tables = [t for t in tables if t.num_columns]
    if not tables:
        return pa.table({"run_id": pa.array([], pa.string())})
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    types: dict[str, set[pa.DataType]] = {}
    for t in tables:
        for f in t.schema:
            if not pa.types.is_null(f.type):
                types.setdefault(f.name, set()).add(f.type)
    target = {c: pa.float64() if all(pa.types.is_integer(x) or pa.types.is_floating(x) for x in ts) else pa.string()
              for c, ts in types.items() if len(ts) > 1}
    fixed = []
    for t in tables:
        for c, ty in target.items():
            if c in t.column_names:
                t = t.set_column(t.column_names.index(c), c, t[c].cast(ty))
        fixed.append(t)
    return pa.concat_tables(fixed, promote_options="permissive")
