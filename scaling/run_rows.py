"""One run folder as a row of the one-row-per-run frame, and frames made to export: the rows the
columnar index (:mod:`scaling.columnar`) holds for the runs whose files changed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from scaling.store import CorruptFileError, RunDir

# ---- one run's row ------------------------------------------------------------------------------------


def _flatten(prefix: str, d: Mapping[str, Any], out: dict[str, Any]) -> None:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            _flatten(key + ".", v, out)
        elif isinstance(v, Mapping):
            continue  # an empty mapping has no settings to show
        else:
            out[key] = v


def run_row(rd: RunDir) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """``(frame row, raw status, corrupt files)``. The row: run_id, status, attempts, the flattened
    spec (``shape.hidden``, ``backend_options.threads``...), params, non_embedding_params,
    planned_flops, the scalars of ``result.json``, and ``error`` (a failed run's error, or which
    file is corrupt)."""
    corrupt: list[str] = []
    errors: list[str] = []
    try:
        spec = rd.read_spec() or {}
        if not isinstance(spec, dict):
            raise CorruptFileError(rd.path / RunDir.SPEC, "not a JSON object")
    except CorruptFileError as e:
        spec = {}
        corrupt.append(str(e.path))
        errors.append(str(e))
    status, result = rd.read_status_and_result()
    if status.get("corrupt"):
        corrupt.append(str(status["corrupt"]))
    if status.get("error"):
        errors.append(str(status["error"]))
    state = "corrupt" if corrupt and not spec else status.get("state")
    row: dict[str, Any] = {"run_id": rd.run_id, "status": state, "attempts": status.get("attempts", 0)}
    flat: dict[str, Any] = {}
    _flatten("", {k: v for k, v in spec.items() if k not in ("run_id", "derived")}, flat)
    row.update(flat)
    derived = spec.get("derived") or {}
    row.update({"params": derived.get("params"), "non_embedding_params": derived.get("non_embedding_params"),
                "planned_flops": derived.get("flops")})
    if result:
        row.update({k: v for k, v in result.items() if not isinstance(v, (dict, list))})
    if errors:
        row["error"] = "; ".join(dict.fromkeys(errors))
    return row, status, corrupt


# ---- types that export ---------------------------------------------------------------------------------


def export_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Every column one parquet/CSV type: lists and mappings as JSON text; a column mixing text
    with numbers or booleans as text; ints mixed with floats as floats. In place; returns it."""
    for c in frame.columns:
        col = frame[c]
        if col.dtype != object:
            continue
        kinds = {type(v) for v in col.dropna()}
        if not kinds or len(kinds) == 1 and kinds <= {str, bool, int, float}:
            continue
        if kinds <= {int, float}:
            frame[c] = pd.to_numeric(col, errors="coerce").astype(float)
        else:
            frame[c] = col.map(lambda v: v if v is None or isinstance(v, str) or v != v else
                               json.dumps(v) if isinstance(v, (dict, list, tuple, bool)) else str(v))
    return frame
