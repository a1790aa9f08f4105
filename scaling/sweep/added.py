"""Runs a sweep added after its grid, and the log that keeps them: ``STUDY/extend.json``.

An adaptive sweep (:mod:`scaling.sweep.extend`) adds IsoFLOP sizes beyond an edge and repeated
seeds. Each addition is written to the log *before* it is launched, so that a launcher killed in
the middle of a round loses nothing: the next ``launch``, ``resume``, ``sweep extend`` or
``scaling run`` rebuilds the same runs from the log (:func:`added_runs`) and carries on; finished
runs are skipped as always. A logged run is rebuilt from its budget, shape and seed with the
folder's own spec (:func:`scaling.sweep.grid.isoflop_run`), so its id is the one the grid would give.

Log layout::

    {"added": [{"run_id", "name", "budget", "params", "shape", "seed", "kind", "side", "reason", "round"}],
     "budgets": [{"budget", "state", "reason", "added"}],   # the latest decision per budget
     "rounds": 2, "settings": {"max_added", "per_budget", "repeats"}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scaling.runspec import RunSpec, ShapeSpec
from scaling.store import atomic_write_json, read_json
from scaling.sweep.grid import isoflop_run
from scaling.sweep.spec import IsoflopGrid, SweepSpec

LOG = "extend.json"


def read_log(study: str | Path) -> dict[str, Any]:
    """The study's ``extend.json`` (an empty log when there is none)."""
    return read_json(Path(study) / LOG) or {"added": [], "budgets": [], "rounds": 0}


def write_log(study: str | Path, log: dict[str, Any]) -> None:
    atomic_write_json(Path(study) / LOG, log)


def entry(run: RunSpec, count: str, kind: str, reason: str, side: str | None, round_: int) -> dict[str, Any]:
    """The log line of an added run: what rebuilds it (budget, shape, seed) and why it was added."""
    return {"run_id": run.run_id, "name": run.name, "budget": run.budget, "params": run.model_shape.count(count),
            "shape": run.shape.model_dump(mode="json"), "seed": run.seed, "kind": kind, "side": side,
            "reason": reason, "round": round_}


def rebuild(spec: SweepSpec, e: dict[str, Any]) -> RunSpec:
    """The run of a log line, under ``spec`` (labelled with its reason)."""
    shape = ShapeSpec.model_validate(e["shape"]).to_shape()
    return isoflop_run(spec, float(e["budget"]), shape, int(e["seed"]), added=str(e["reason"]))


def added_runs(spec: SweepSpec, study: str | Path) -> list[RunSpec]:
    """Every run the log of ``study`` holds, rebuilt under ``spec``; none for a grid that is not
    IsoFLOP or a folder without a log."""
    if not isinstance(spec.grid, IsoflopGrid) or not (Path(study) / LOG).exists():
        return []
    return [rebuild(spec, e) for e in read_log(study)["added"]]
