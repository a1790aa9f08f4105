"""The IsoFLOP section's account of the adaptive sweep and the noise: which runs the sweep added
and why (``extend.json``), each budget's last decision, the run-to-run noise (``fit/noise.json``)
and each fit's lack of fit against it (``info.noise`` of the fit files). Read only; nothing refit."""

from __future__ import annotations

from typing import Any

from scaling.bends import significant_bend
from scaling.report.blocks import Block, Table, Text
from scaling.report.data import Study


def extension_blocks(study: Study) -> list[Block]:
    log = study.extend
    if not isinstance(log, dict):
        return []
    out: list[Block] = [Text("heading", "adaptive sweep: runs added after the grid (extend.json)")]
    added = log.get("added") or []
    if added:
        out.append(Table(["run", "budget C", "kind", "round", "why"],
                         [(a.get("name"), a.get("budget"), a.get("kind"), a.get("round"), a.get("reason"))
                          for a in added], text_cols=1))
    else:
        out.append(Text("note", "No run was added: every budget was bracketed, or a cap or the ladder's end stopped it."))
    if log.get("budgets"):
        out.append(Table(["budget C", "state", "runs added", "why"],
                         [(b.get("budget"), b.get("state"), b.get("added"), b.get("reason")) for b in log["budgets"]],
                         text_cols=0))
    return out


def _lack_of_fit_rows(study: Study) -> list[tuple[Any, ...]]:
    rows = []
    for view in study.fits.values():
        info = view.raw.get("info") if isinstance(view.raw.get("info"), dict) else {}
        lof = (info.get("noise") or {}).get("lack_of_fit") if isinstance(info.get("noise"), dict) else None
        if not lof:
            continue
        p = lof.get("p_value")
        verdict = "" if p is None else ("misses the data by more than the noise" if p < 0.01 else "consistent with the noise")
        worst = lof.get("worst_points") or []
        where = "; ".join(f"N={w['params']:.3g}, D={w['tokens']:.3g}: {w['z']:+.1f} se ({100 * w['share_of_chi2']:.0f}%)"
                          for w in worst[:2] if w.get("share_of_chi2", 0) >= 0.1)
        rows.append((view.name, lof.get("chi2_per_dof"), lof.get("dof"), lof.get("noise_dof"), p, verdict,
                     _widening((info.get("noise") or {}).get("widening")), where))
    return rows


def _widening(w: Any) -> str:
    """Approach 3: one factor on the noise; approach 2: the N* line's scatter over the vertices'
    noise spread (its resamples' deviations are scaled by about its square root where above 1)."""
    if isinstance(w, (int, float)):
        return f"{w:.2g}x"
    test = w.get("power_law_n") if isinstance(w, dict) else None
    per = test.get("chi2_per_dof") if isinstance(test, dict) else None
    if not isinstance(per, (int, float)):
        return ""
    bend = significant_bend(test)
    bends = "" if bend is None else (f"; it bends (p = {bend['p_value']:.2g}): local a "
                                     f"{bend['local_exponents'][0]:.2f} to {bend['local_exponents'][-1]:.2f}")
    return (f"about {per ** 0.5:.2g}x (N* line)" if per > 1 else "1x (N* line within the noise)") + bends


def noise_blocks(study: Study) -> list[Block]:
    nz = study.noise
    if not isinstance(nz, dict):
        return []
    per = ", ".join(f"{b['flops']:.3g}: {b['used_std']:.4f}" + ("" if b.get("std") is not None else " (pooled)")
                    for b in nz.get("budgets", []))
    trend = nz.get("trend")
    how = "" if not trend else (
        f" It depends on the run's tokens per parameter r = D/N: sd^2 = {trend['floor']:.3g}^2 + "
        f"{trend['rise']:.3g}^2 (r / {trend['r_ref']:.3g})^{2 * trend['slope']:.2f} (likelihood-ratio p = "
        f"{trend['p_value']:.2g} against one value; r clamped to the repeats' {trend['r_lo']:.3g}..{trend['r_hi']:.3g}); "
        "every point's noise comes from this.")
    out: list[Block] = [
        Text("heading", "run-to-run noise (fit/noise.json)"),
        Text("note", f"Std of the final loss across repeated seeds, pooled: {nz['pooled_std']:.4f} on "
                     f"{nz['pooled_dof']} dof; per budget: {per}.{how} The fits weight by it (approach 2's parabolas by "
                     "inverse variance, approach 3's residuals scaled by it) and redraw the losses with it in their "
                     "intervals, widened where a law misses by more than the noise (approach 3: by the square root "
                     "of chi2 / dof below; approach 2: by the scatter of the vertices about the power law); the "
                     "band on the IsoFLOP curves is ±1σ of one run."),
    ]
    rows = _lack_of_fit_rows(study)
    if rows:
        out.append(Table(["fit", "chi2 / dof", "dof", "noise dof", "p (F test)", "verdict", "interval widened",
                          "points that weigh most (share of chi2)"], rows, text_cols=1))
    return out
