"""The report's sections, in page order, from a loaded study; the page rendered from templates.

Each section is a :class:`~scaling.report.blocks.Section` of blocks; the markup lives in
``templates/`` (``section.html.j2`` draws any section, ``sections/<id>.html.j2`` one that needs
more). To add a section: write a builder ``(study, figures) -> Section | None`` (None when the
study has no data for it) and put it in :data:`SECTIONS` where it belongs in page order; give it
its own template only when blocks do not say it.

plotly.js is embedded once, nothing is fetched. The page records script errors into the
``data-script-errors`` attribute of ``<html>`` (and shows them in a banner), and states how many
figures it holds in ``data-figures``, so a headless browser can check that it drew.
"""

from __future__ import annotations

import importlib.metadata
import math
import platform
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from markupsafe import Markup

from scaling.report import figures as F
from scaling.report.adaptive import extension_blocks, noise_blocks
from scaling.report.alignment import alignment_section
from scaling.report.blocks import (
    Block,
    Card,
    Cards,
    Details,
    Section,
    Table,
    Text,
    any_blocks,
    environment,
    fmt,
    kv_table,
    records,
    records_table,
    static,
)
from scaling.report.data import CONVENTION_LABEL, CONVENTIONS, Study, exponent_card

RUN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "name"), ("run_id", "run id"), ("status", "status"), ("budget", "budget C"),
    ("shape.layers", "layers"), ("shape.hidden", "hidden"), ("non_embedding_params", "N non-emb."),
    ("params", "N total"), ("tokens", "tokens D"), ("flops", "FLOPs"), ("final_loss", "final loss"),
    ("eval_loss", "eval loss"), ("optimizer.lr", "lr"), ("seed", "seed"), ("wall_time", "wall (s)"),
    ("tokens_per_s", "tokens/s"), ("attempts", "attempts"), ("added", "added because"),
)
MAX_TABLE_ROWS = 1000  # a page of 10,000 table rows takes seconds to draw and sort; the frame has them all
PROVENANCE_KEYS = ("versions", "packages", "git_commit", "git", "hardware", "device", "seed", "seeds", "python",
                   "platform", "command", "started", "host")
PACKAGES = ("numpy", "scipy", "pandas", "statsmodels", "torch", "transformers", "trl", "plotly", "submitit",
            "jinja2")



# ---- sections -------------------------------------------------------------------------------------


def glance(study: Study) -> Cards:
    runs = study.runs
    counts = runs["status"].value_counts().to_dict() if "status" in runs else {}
    budgets = sorted(runs["budget"].dropna().unique()) if "budget" in runs else []
    cards = [Card("runs", f"{counts.get('done', 0)} done / {len(runs)}",
                  ", ".join(f"{v} {k}" for k, v in counts.items() if k != "done") or "none failed")]
    if budgets:
        cards.append(Card("IsoFLOP budgets", str(len(budgets)), ", ".join(F.fmt_sci(b) for b in budgets) + " FLOPs"))
    target = study.target_flops()
    if target:
        cards.append(Card("target budget", F.fmt_sci(target) + " FLOPs"))
    sel = study.select
    if isinstance(sel, dict):
        who = sel.get("name") or sel.get("run_id") or sel.get("model") or "?"
        cards.append(Card("chosen model", str(who), str(sel.get("reason", ""))[:160]))
    summ = study.summary if isinstance(study.summary, dict) else {}
    if isinstance(summ.get("minutes"), (int, float)):
        stages = summ.get("stage_minutes") if isinstance(summ.get("stage_minutes"), dict) else {}
        cards.append(Card("study time", f"{summ['minutes']:.1f} min",
                          ", ".join(f"{k} {v:.1f}" for k, v in stages.items() if isinstance(v, (int, float)))))
    bt = study.backtest
    if isinstance(bt, dict) and bt.get("predicted_loss") is not None and bt.get("achieved_loss") is not None:
        err = bt.get("error")
        err = err if isinstance(err, (int, float)) else (bt["predicted_loss"] - bt["achieved_loss"]) / bt["achieved_loss"]
        cards.append(Card("backtest: predicted vs achieved", f"{bt['predicted_loss']:.4f} vs {bt['achieved_loss']:.4f}",
                          f"error {100 * err:+.2f}% at the held-out budget"))
    for row in study.exponents:  # the summary's exponents, read from the same fit files
        cards.append(Card(*exponent_card(row)))
    return Cards(cards)


def run_table(study: Study) -> list[Block]:
    """Every run by budget and size, up to :data:`MAX_TABLE_ROWS` (runs not done first, then the
    smallest budgets), with a note saying where the rest are read."""
    runs = study.runs
    cols = [(c, h) for c, h in RUN_COLUMNS if c in runs]
    rows = runs.sort_values([c for c in ("budget", "params") if c in runs]) if len(runs) else runs
    note = f"Click a column to sort. Loss in nats/token; FLOPs counted as {study.run_flops}."
    if len(rows) > MAX_TABLE_ROWS:
        if "status" in rows:
            rows = rows.iloc[rows["status"].eq("done").to_numpy().argsort(kind="stable")]  # not done first
        rows = rows.head(MAX_TABLE_ROWS)
        note += (f" The first {MAX_TABLE_ROWS:,} of {len(runs):,} runs (those not done first); every run: "
                 f"scaling.load_runs(study) or `scaling sweep status STUDY --json`.")
    body = [[r.get(c) for c, _ in cols] for r in rows.to_dict("records")]
    return [Text("note", note), Table([h for _, h in cols], body, text_cols=3, sortable=True, scroll=True)]


def isoflop_table(study: Study) -> Table | Text:
    rows = []
    for conv in CONVENTIONS:
        for v in study.valleys(conv):
            se = v.log_n_se
            rows.append((CONVENTION_LABEL[conv], v.budget, v.n_opt,
                         f"×/÷ {math.exp(se):.2f}" if math.isfinite(se) else "n/a", v.tokens_opt,
                         v.tokens_opt / v.n_opt, v.loss_opt, "yes" if v.interior else "NO: best run at the edge"))
    if not rows:
        return Text("note", "No IsoFLOP minima: they come from the fit stage (fit/approach2_<count>.json, or its "
                            ".refused.json); run `scaling run` on the spec, or `scaling fit STUDY --approach 2 "
                            "--out STUDY/fit/approach2_total.json`.")
    return Table(["N convention", "budget C", "N*", "N* ±1σ", "D*", "tokens per param", "loss at N*", "interior"],
                 rows)


def conventions(study: Study) -> Section | None:
    """Both parameter counts side by side, from the fit stage's exponents (approaches 2 and 3) and
    N* at the target; ``sections/conventions.html.j2`` adds the literature."""
    by = {(r["approach"], r.get("param_convention")): r for r in study.exponents}
    counts = [c for c in CONVENTIONS if ("2", c) in by or ("3", c) in by]
    if not counts:
        return None
    rows = []
    for conv in counts:
        a2, a3, fd = by.get(("2", conv), {}), by.get(("3", conv), {}), F.frontier_data(study, conv)
        at_target = fd["law"]["coef"] * fd["target"] ** fd["law"]["exponent"] if fd else None
        rows.append((CONVENTION_LABEL[conv], a2.get("a"), _interval(a2), a2.get("file", ""), a3.get("a"),
                     _interval(a3), a3.get("file", ""), at_target, fd["source"] if fd else ""))
    tab = Table(["N convention", "a, approach 2 (IsoFLOP)", "interval", "from", "a, approach 3 (parametric)",
                 "interval", "from", f"N* at the target C = {F.fmt_sci(study.target_flops() or math.nan)}",
                 "N* line from"], rows)
    done = study.done
    share = ""
    if {"params", "non_embedding_params"} <= set(done.columns) and len(done):
        emb = 1 - done["non_embedding_params"] / done["params"]
        share = (f" embeddings are {100 * emb.max():.0f}% of the parameters of the smallest model and "
                 f"{100 * emb.min():.0f}% of the largest.")
    verdict = ""
    ne, t = by.get(("2", "non_embedding"), {}).get("a"), by.get(("2", "total"), {}).get("a")
    if ne is not None and t is not None:
        verdict = (f" By approach 2 the non-embedding exponent is {ne:.3f} and the total one {t:.3f}: "
                   + ("counting without embeddings gives the steeper law, as Kaplan found." if ne > t
                      else "here the non-embedding exponent is not the steeper one."))
    return Section("conventions", "Two parameter conventions: non-embedding (Kaplan) vs total (Chinchilla)", [tab],
                   template="sections/conventions.html.j2", context={"share": share, "verdict": verdict})


def _interval(row: dict[str, Any]) -> str:
    if row.get("a") is None:
        return f"refused: {row['refused']}" if row.get("refused") else ""
    return f"{row['interval']} [{row['ci'][0]:.3f}, {row['ci'][1]:.3f}]" if row.get("ci") else ""


def parametric_table(study: Study) -> list[Block]:
    rows = []
    for conv in CONVENTIONS:
        f = study.fit("3", conv)
        if not f or not f.loss_params:
            continue
        for k in ("E", "A", "B", "alpha", "beta", "a", "b", "G"):
            v = f.get(k)
            if v is None:
                continue
            se = (f.get("se") or {}).get(k) if isinstance(f.get("se"), dict) else None
            ci = f.ci(k)
            rows.append((CONVENTION_LABEL[conv], k, v, se, f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci else ""))
    return [Table(["N convention", "parameter", "value", "std. error", "95% CI"], rows, text_cols=2)] if rows else []


def backtest_table(study: Study) -> list[Block]:
    bt = study.backtest
    if not isinstance(bt, dict):
        return []
    ach = bt.get("achieved_loss")
    rows = [("law fitted without the largest budget", bt.get("predicted_loss"), bt.get("error"))]
    for k, v in (bt.get("baselines") or {}).items():
        p = v.get("predicted_loss", v.get("loss")) if isinstance(v, dict) else v
        err = v.get("error") if isinstance(v, dict) else None
        if err is None and isinstance(p, (int, float)) and isinstance(ach, (int, float)):
            err = (p - ach) / ach
        rows.append((f"baseline: {k.replace('_', ' ')}", p, err))
    body = [(n, p, ach, f"{100 * err:+.2f}%" if isinstance(err, (int, float)) else "") for n, p, err in rows]
    out: list[Block] = [Table(["predictor", "predicted loss", "achieved loss", "error"], body)]
    cands = bt.get("candidates")
    if records(cands):
        out += [Text("heading", "every candidate law (the headline form was chosen one budget down)"), records_table(cands)]
    skip = ("predicted_loss", "achieved_loss", "error", "baselines", "candidates", "law")
    extra = {k: v for k, v in bt.items() if k not in skip}
    if extra:
        out.append(Details("the backtest's other fields", [kv_table(extra)]))
    return out


def predict_table(study: Study) -> list[Block]:
    """Every candidate law with its held-out error on each level left out, and the one that predicts
    (``fit/predict.json``, written by ``scaling fit --predict`` or the run's predict stage)."""
    fv = study.fits.get("predict")
    d = fv.raw if fv is not None else None
    if not isinstance(d, dict) or not records(d.get("candidates")):
        return []
    design = d.get("design") or {}
    folds = [f for f in design.get("folds") or [] if isinstance(f, dict)]
    freq = d.get("choice_frequency") or {}
    head = ["candidate", *(f"error, {f.get('axis', design.get('axis'))} {fmt(f.get('left_out'))} left out" for f in folds),
            "mean error", "weight", "chosen in bootstrap", "note"]
    rows = []
    for r in d["candidates"]:
        errs = list(r.get("errors") or [])
        errs += [None] * (len(folds) - len(errs))
        pct = [f"{100 * e:.2f}%" if isinstance(e, (int, float)) else "" for e in [*errs, r.get("score")]]
        share = freq.get(r.get("name"))
        note = "chosen" if r.get("chosen") else (r.get("refused") or "")
        rows.append((r.get("name"), *pct, r.get("weight"), f"{100 * share:.0f}%" if isinstance(share, (int, float)) else "", note))
    how = {"select": "the lowest mean error is selected", "stack": "candidates are weighted by stacking",
           "bag": "candidates are weighted by how often the bootstrap's resampled choice selects each"}.get(
        str(d.get("combine")), "candidates are weighted")
    counted = f" ({fv.convention.label})" if fv.convention else ""
    return [
        Text("note", f"{design.get('design', '')} design{counted}, cross-validated over {design.get('axis', '')}: each error is "
                     "the mean |log L_hat - log L| on a level the candidate was fitted without; "
                     f"{how}; the law that predicts is {d.get('chosen')}, refitted on every level."),
        Table(head, rows, text_cols=1),
    ]


def provenance(study: Study) -> list[Block]:
    out: list[Block] = []
    summ = study.summary if isinstance(study.summary, dict) else {}
    prov = summ.get("provenance") if isinstance(summ.get("provenance"), dict) else {
        k: v for k, v in summ.items() if k in PROVENANCE_KEYS}
    if prov:
        out += [Text("heading", "recorded by the study"), kv_table(prov)]
    runs = study.runs
    facts: dict[str, Any] = {}
    if "seed" in runs:
        facts["seeds"] = ", ".join(str(v) for v in sorted(runs["seed"].dropna().unique()))
    hosts = sorted({str(s.get("host")) for s in study.statuses.values() if s.get("host")})
    if hosts:
        facts["hosts"] = ", ".join(hosts)
    for key in ("backend", "data.source", "data.tokenizer", "shape.vocab", "shape.seq_len", "batch_tokens",
                "schedule.kind", "optimizer.name", "flops_convention"):
        if key in runs and runs[key].notna().any():
            facts[key] = ", ".join(str(v) for v in runs[key].dropna().unique()[:10])
    if facts:
        out += [Text("heading", "the runs"), kv_table(facts)]
    out += [Text("heading", "environment that built this report"), kv_table(_environment())]
    if study.sweep_yaml:
        out += [Text("heading", "resolved sweep spec (sweep.yaml)"), Text("pre", study.sweep_yaml)]
    first = study.runs.iloc[0].to_dict() if len(study.runs) else None
    if first:
        spec = {k: v for k, v in first.items() if "." in k or k in ("tokens", "batch_tokens", "seed", "backend")}
        out += [Text("heading", "resolved run spec (first run)"), kv_table(spec)]
    return out


def _environment() -> dict[str, Any]:
    import scaling

    env = {"scaling": scaling.__version__, "python": platform.python_version(), "platform": platform.platform(),
           "machine": platform.machine()}
    for p in PACKAGES:
        try:
            env[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            continue
    env["scaling git commit"] = _git_commit() or "unknown"
    return env


def _git_commit() -> str | None:
    import subprocess
    from pathlib import Path

    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# ---- the page ---------------------------------------------------------------------------------------

SectionBuilder = Callable[[Study, Mapping[str, Any]], Section | None]


def _figure_section(sid: str, title: str, blocks: Callable[[Study], Sequence[Block]]) -> SectionBuilder:
    """A section shown when its figure exists, with the figure and ``blocks(study)`` under it."""
    def build(study: Study, figs: Mapping[str, Any]) -> Section | None:
        return Section(sid, title, list(blocks(study)), figure=sid) if sid in figs else None
    return build


def _glance(study: Study, figs: Mapping[str, Any]) -> Section:
    return Section("glance", "The study at a glance", [glance(study)])


def _plan(study: Study, figs: Mapping[str, Any]) -> Section | None:
    return Section("plan", "Plan", any_blocks(study.plan)) if study.plan is not None else None


def _runs(study: Study, figs: Mapping[str, Any]) -> Section | None:
    return Section("runs", "Runs", run_table(study)) if len(study.runs) else None


def _backtest(study: Study, figs: Mapping[str, Any]) -> Section | None:
    if "backtest" not in figs and study.backtest is None:
        return None
    return Section("backtest", "Backtest at the largest budget", backtest_table(study),
                   figure="backtest" if "backtest" in figs else None)


def _predict(study: Study, figs: Mapping[str, Any]) -> Section | None:
    blocks = predict_table(study)
    return Section("predict", "Which law predicts: candidates scored out of sample", blocks) if blocks else None


# Page order. Each builder returns its section, or None when the study has no data for it.
SECTIONS: tuple[SectionBuilder, ...] = (
    _glance,
    _plan,
    _runs,
    _figure_section("curves", "Training curves", lambda study: []),
    _figure_section("isoflop", "IsoFLOP curves",
                    lambda study: [isoflop_table(study), *extension_blocks(study), *noise_blocks(study)]),
    _figure_section("frontier", "Compute-optimal frontier", lambda study: []),
    lambda study, figs: conventions(study),
    _figure_section("parametric", "Parametric fit", parametric_table),
    _backtest,
    _predict,
    alignment_section,
    lambda study, figs: Section("provenance", "Provenance", provenance(study)),
)


def sections(study: Study, figs: Mapping[str, Any]) -> list[Section]:
    """Every section with data, in page order."""
    return [s for build in SECTIONS if (s := build(study, figs)) is not None]


def render(study: Study, figs: Mapping[str, Any], title: str | None = None) -> str:
    """The whole page as a string. plotly.js is embedded with the first figure only."""
    secs = sections(study, figs)
    figure_html: dict[str, Markup] = {}
    for s in secs:
        if s.figure:
            figure_html[s.id] = Markup(figs[s.figure].to_html(  # plotly's own markup and JSON
                full_html=False, include_plotlyjs=not figure_html, div_id=f"fig-{s.id}",
                config={"displaylogo": False, "responsive": True, "toImageButtonOptions": {"filename": s.id}},
            ))
    return environment().get_template("page.html.j2").render(
        title=title or f"Scaling study: {study.path.name}", study_path=str(study.path), sections=secs,
        figures=figure_html, n_figures=len(figure_html), static=static(),
    )
