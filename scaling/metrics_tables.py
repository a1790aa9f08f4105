"""Runs' ``metrics.jsonl`` as pyarrow tables: complete lines only (a torn last line is not a row),
parsed in batches by pyarrow's C++ JSON reader, run by run where it refuses a batch; tables whose
columns differ unified into one."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
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


HEAD_TYPE = pa.dictionary(pa.int32(), pa.string())  # run_id and name: one entry per run, codes per row


def _with_heads(table: pa.Table, ids: list[str], names: list[Any], budgets: list[Any], counts: list[int]) -> pa.Table:
    """``run_id, name, budget`` columns before the metrics, ``counts[i]`` rows for run ``i``;
    ``run_id`` and ``name`` dictionary-encoded (:data:`HEAD_TYPE`: categorical in pandas)."""
    has_rows = [i for i, c in enumerate(counts) if c]  # a run without steps is no category
    ids, names, budgets, counts = ([v[i] for i in has_rows] for v in (ids, names, budgets, counts))
    take = pa.array(np.repeat(np.arange(len(ids), dtype=np.int32), counts))
    per_run = pa.array([n if isinstance(n, str) else None if n is None or n != n else str(n) for n in names],
                       pa.string()).dictionary_encode()
    heads = {"run_id": pa.DictionaryArray.from_arrays(take, pa.array(ids, pa.string())),
             "name": pa.DictionaryArray.from_arrays(per_run.indices.take(take), per_run.dictionary),
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
        return pa.table({"run_id": pa.array([], HEAD_TYPE)})
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    types: dict[str, set[pa.DataType]] = {}
    for t in tables:
        for f in t.schema:
            if not pa.types.is_null(f.type):
                types.setdefault(f.name, set()).add(f.type)
    target = {c: pa.float64() if all(pa.types.is_integer(x) or pa.types.is_floating(x) for x in ts)
              else HEAD_TYPE if c in ("run_id", "name") else pa.string() for c, ts in types.items() if len(ts) > 1}
    fixed = []
    for t in tables:
        for c, ty in target.items():
            if c in t.column_names:
                t = t.set_column(t.column_names.index(c), c, t[c].cast(ty))
        fixed.append(t)
    return pa.concat_tables(fixed, promote_options="permissive")


def rows_of_runs(table: pa.Table, ids: list[str]) -> pa.Table:
    """The rows of runs ``ids`` as slices of ``table`` (a run's rows are contiguous in a segment, so
    they are few), not a copy of every column; ``run_id`` and ``name`` re-encoded in the chunks
    whose dictionaries hold a value no longer used, so that a run left out is not a category."""
    wanted = pa.array(ids, pa.string())
    run = table["run_id"].cast(HEAD_TYPE)
    keep = np.concatenate([np.append(pc.is_in(ch.dictionary, value_set=wanted).to_numpy(zero_copy_only=False), False)
                           [pc.fill_null(ch.indices, len(ch.dictionary)).to_numpy()] for ch in run.chunks]
                          or [np.zeros(0, bool)])  # per chunk, through its dictionary (a null id: not kept)
    edges = np.flatnonzero(np.diff(np.r_[False, keep, False]))  # where each kept stretch starts and ends
    parts = [table.slice(a, b - a) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    out = pa.concat_tables(parts) if parts else table.slice(0, 0)
    for c in ("run_id", "name"):
        if c in out.column_names and pa.types.is_dictionary(out.schema.field(c).type):
            chunks = [ch if pc.count_distinct(ch.indices).as_py() == len(ch.dictionary)
                      else ch.dictionary_decode().dictionary_encode() for ch in out[c].chunks]
            out = out.set_column(out.column_names.index(c), c, pa.chunked_array(chunks, HEAD_TYPE))
    return out


def _categorical(col: pa.ChunkedArray) -> pd.Categorical:
    """A dictionary column as a pandas categorical whose categories are in text order, the codes
    mapped chunk by chunk in one pass (``to_pandas`` unifies the chunks' dictionaries in one pass,
    and sorting its categories after costs another)."""
    values = pc.drop_null(pc.unique(pa.concat_arrays([c.dictionary for c in col.chunks]))).sort() \
        if col.num_chunks else pa.array([], pa.string())
    kind = np.int16 if len(values) < np.iinfo(np.int16).max else np.int32
    codes = np.empty(len(col), dtype=kind)
    pos = 0
    for chunk in col.chunks:
        to_sorted = pc.fill_null(pc.index_in(chunk.dictionary, value_set=values), -1).to_numpy()
        to_sorted = np.append(to_sorted.astype(kind), kind(-1))  # a null row: code -1
        idx = pc.fill_null(chunk.indices, len(to_sorted) - 1) if chunk.null_count else chunk.indices
        # indices lie in [0, len(to_sorted)): "clip" checks nothing and writes in place (~3x faster)
        np.take(to_sorted, idx.to_numpy(), out=codes[pos: pos + len(chunk)], mode="clip")
        pos += len(chunk)
    return pd.Categorical.from_codes(codes, pd.Index(values.to_pylist(), dtype="str"), validate=False)


def steps_frame(table: pa.Table) -> pd.DataFrame:
    """The steps as a pandas frame: ``run_id`` and ``name`` categorical (categories in text order),
    a block per other column (no consolidating copy), the arrow buffers freed as they convert."""
    heads = {c: _categorical(table[c].cast(HEAD_TYPE)) for c in ("run_id", "name") if c in table.column_names}
    order = table.column_names
    frame = table.drop_columns(list(heads)).to_pandas(split_blocks=True, self_destruct=True)
    for c, values in heads.items():
        frame.insert(order.index(c), c, values)
    return frame
