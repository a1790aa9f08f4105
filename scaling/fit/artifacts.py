"""The fit stage's files in a study folder, and the headline numbers read back from them.

``STUDY/fit/<kind>_<count>.json`` holds ``LawFit.to_dict()`` for each kind (``approach3``,
``approach2``, ``kaplan``) and parameter count (``total``, ``non_embedding``). When approach 2
refuses (a budget without an interior minimum), ``approach2_<count>.refused.json`` holds the
reason, the convention and every budget's minimum instead. ``fit/noise.json`` holds the
run-to-run noise measured from repeated seeds (:class:`~scaling.fit.noise.NoiseEstimate`), when
the sweep repeated any point. The CLI summary and the report read these files and never refit:
:func:`exponent_rows` is the one table of N* exponents both show.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scaling.convention import PARAM_COUNTS, Convention
from scaling.fit.noise import NoiseEstimate
from scaling.fit.results import LawFit
from scaling.store import atomic_write_json, read_json

KINDS: tuple[str, ...] = ("approach2", "approach3", "kaplan")
METHOD = {
    "approach2": "approach 2 (IsoFLOP parabolas)",
    "approach3": "approach 3 (parametric L(N, D))",
    "kaplan": "Kaplan's joint form (local slope)",
}


def fit_path(study: str | Path, kind: str, count: str) -> Path:
    """``STUDY/fit/<kind>_<count>.json``."""
    if kind not in KINDS or count not in PARAM_COUNTS:
        raise ValueError(f"fit artifact {kind}_{count}: kind is one of {KINDS}, count one of {PARAM_COUNTS}")
    return Path(study) / "fit" / f"{kind}_{count}.json"


def refused_path(study: str | Path, count: str) -> Path:
    return fit_path(study, "approach2", count).with_suffix(".refused.json")


def noise_path(study: str | Path) -> Path:
    return Path(study) / "fit" / "noise.json"


def write_noise(study: str | Path, noise: NoiseEstimate | None) -> None:
    """``fit/noise.json`` (removed when no point was repeated: the fits are then unweighted)."""
    if noise is None:
        noise_path(study).unlink(missing_ok=True)
    else:
        atomic_write_json(noise_path(study), noise.to_dict())


def read_noise(study: str | Path) -> NoiseEstimate | None:
    d = read_json(noise_path(study))
    return NoiseEstimate.from_dict(d) if d else None


def read_fit(study: str | Path, kind: str, count: str) -> LawFit | None:
    """The saved fit, or None where the stage wrote none."""
    from scaling.fit import load_law

    p = fit_path(study, kind, count)
    return load_law(p, field="fit") if p.exists() else None


def write_approach2(study: str | Path, count: str, fit: LawFit | None, refusal: dict[str, Any] | None) -> None:
    """Write the approach-2 fit or its refusal, and remove the other: one of the two is current."""
    ok, refused = fit_path(study, "approach2", count), refused_path(study, count)
    if fit is not None:
        atomic_write_json(ok, fit.to_dict())
        refused.unlink(missing_ok=True)
    else:
        atomic_write_json(refused, refusal)
        ok.unlink(missing_ok=True)


def read_minima(study: str | Path, count: str) -> tuple[list[dict[str, Any]], Convention | None, str | None]:
    """Every budget's IsoFLOP minimum under ``count``, their convention, and approach 2's refusal."""
    fit = read_fit(study, "approach2", count)
    if fit is not None:
        return list(fit.info.get("minima", [])), fit.convention, None
    d = read_json(refused_path(study, count))
    if not isinstance(d, dict):
        return [], None, None
    conv = Convention.from_dict(d, where=str(refused_path(study, count))) if d.get("flops_convention") else None
    return list(d.get("minima") or []), conv, d.get("reason")


def exponent_rows(study: str | Path) -> list[dict[str, Any]]:
    """The N* exponent ``a`` of every fit the stage wrote, each naming its method, convention,
    interval and file: approach 2 and 3 per parameter count, and Kaplan's form's local slope
    between the smallest and largest budgets. A refused approach 2 gives ``a = None`` and why."""
    rows: list[dict[str, Any]] = []
    for count in PARAM_COUNTS:
        minima, conv, refusal = read_minima(study, count)
        budgets = sorted(float(m["flops"]) for m in minima)
        for kind in KINDS:
            fit = read_fit(study, kind, count)
            if fit is None and kind == "approach2" and refusal:
                rows.append({"method": METHOD[kind], "approach": "2", "a": None, "ci": None, "refused": refusal,
                             "file": f"fit/{refused_path(study, count).name}", **(conv.to_dict() if conv else {})})
            if fit is None:
                continue
            between = (budgets[0], budgets[-1]) if len(budgets) >= 2 else None
            row = fit.n_exponent(between=between)
            if row["a"] is not None:
                rows.append({"method": METHOD[kind], **row, "file": f"fit/{fit_path(study, kind, count).name}"})
    return rows


def exponent_where(row: dict[str, Any]) -> str:
    """Where an exponent comes from: ``approach 3 (parametric L(N, D)), N total, C 6N``."""
    count = str(row.get("param_convention", "?")).replace("_", "-")
    return f"{row['method']}, N {count}, C {row.get('flops_convention', '?')}"


def exponent_value(row: dict[str, Any]) -> str:
    """``a = 0.535 [0.083, 0.751] (95% bootstrap percentiles)``, or why there is none."""
    if row.get("a") is None:
        return f"refused: {row.get('refused')}"
    ci = f" [{row['ci'][0]:.3f}, {row['ci'][1]:.3f}] ({row['interval']})" if row.get("ci") else ""
    between = row.get("between")
    span = f" between C = {between[0]:.3g} and {between[1]:.3g}" if between else ""
    return f"a = {row['a']:.3f}{ci}{span}"
