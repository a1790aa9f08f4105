"""One self-contained HTML page: plotly.js embedded once, no network, every store string escaped.

Figures come from :mod:`scaling.report.figures`; tables and text are built here with
:func:`html.escape` on every value. The page records script errors into the ``data-script-errors``
attribute of ``<html>`` (and shows them in a banner), and states how many figures it holds in
``data-figures``, so a headless browser can check that it drew.
"""

from __future__ import annotations

import html
import importlib.metadata
import json
import math
import platform
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from scaling.report import figures as F
from scaling.report.data import CONVENTION_LABEL, CONVENTIONS, N_COLUMN, Study

RUN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "name"), ("run_id", "run id"), ("status", "status"), ("budget", "budget C"),
    ("shape.layers", "layers"), ("shape.hidden", "hidden"), ("non_embedding_params", "N non-emb."),
    ("params", "N total"), ("tokens", "tokens D"), ("flops", "FLOPs (6ND)"), ("final_loss", "final loss"),
    ("eval_loss", "eval loss"), ("optimizer.lr", "lr"), ("seed", "seed"), ("wall_time", "wall (s)"),
    ("tokens_per_s", "tokens/s"), ("attempts", "attempts"),
)
PROVENANCE_KEYS = ("versions", "packages", "git_commit", "git", "hardware", "device", "seed", "seeds", "python",
                   "platform", "command", "started", "host")
PACKAGES = ("numpy", "scipy", "pandas", "statsmodels", "torch", "transformers", "trl", "plotly", "submitit")

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f2d3d;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header .sub{opacity:.8;font-size:13px;margin-top:4px}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:8px 32px;z-index:10;font-size:13px}
nav a{margin-right:14px;color:#1f5fa8;text-decoration:none}
main{padding:8px 32px 40px;max-width:1400px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:14px 20px;margin:16px 0}
h2{font-size:18px;margin:4px 0 10px}h3{font-size:14px;margin:14px 0 4px}p{line-height:1.5;max-width:1000px}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0}
th,td{border-bottom:1px solid #eee;padding:4px 10px;text-align:right;vertical-align:top}
th{background:#f3f5f8}td.s,th.s{text-align:left}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:after{content:' \\2195';opacity:.35}
.scroll{max-height:520px;overflow:auto;border:1px solid #eee}.scroll th{position:sticky;top:0}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #e3e3e3;border-radius:6px;padding:10px 14px;min-width:170px}
.card .k{font-size:12px;color:#666}.card .v{font-size:20px;font-weight:600;margin-top:2px}
.card .n{font-size:12px;color:#444;margin-top:2px}
pre{background:#f6f8fa;padding:10px;overflow:auto;max-height:400px;font-size:12px}
.ok{color:#1a7f37}.bad{color:#b42318}.note{font-size:12.5px;color:#555}
#script-errors{display:none;background:#fde8e8;color:#8a1c1c;padding:8px 32px;white-space:pre-wrap}
"""

# Before plotly.js: record any script error on <html data-script-errors> and show it.
ERROR_HOOK = """<script>
(function(){
  function record(msg){
    var el=document.documentElement;
    el.setAttribute('data-script-errors',(el.getAttribute('data-script-errors')||'')+msg+'\\n');
    var b=document.getElementById('script-errors');
    if(b){b.style.display='block';b.textContent='Script error (a figure may be missing): '+el.getAttribute('data-script-errors');}
  }
  window.addEventListener('error',function(e){record((e.message||'error')+' at '+(e.filename||'?')+':'+(e.lineno||0));});
  window.addEventListener('unhandledrejection',function(e){record('unhandled rejection: '+String(e.reason));});
})();
</script>"""

SORT_JS = """<script>
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows),asc=th.getAttribute('data-asc')!=='1';
      t.querySelectorAll('th').forEach(function(h){h.removeAttribute('data-asc');});
      th.setAttribute('data-asc',asc?'1':'0');
      function key(r){var c=r.cells[i],v=c.getAttribute('data-v');var x=parseFloat(v);return isNaN(x)?(v||c.textContent):x;}
      rows.sort(function(a,b){var x=key(a),y=key(b);if(typeof x!==typeof y){x=String(x);y=String(y);}return (x<y?-1:x>y?1:0)*(asc?1:-1);});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
</script>"""


def e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def fmt(v: Any) -> str:
    """A table cell's text: integers with thousands separators, floats to 4-5 significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}" if abs(int(v)) < 10**9 else F.fmt_sci(float(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return F.fmt_sci(v, 4)
        if v == int(v) and abs(v) < 1e6:
            return f"{int(v):,}"
        return f"{v:.5g}"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=str)[:300]
    return str(v)


def _sort_value(v: Any) -> str:
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return repr(float(v)) if math.isfinite(float(v)) else ""
    return str(v) if v is not None else ""


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, sortable: bool = False, text_cols: int = 1,
          cls: str = "") -> str:
    """An escaped HTML table; the first ``text_cols`` columns align left."""
    head = "".join(f'<th class="{"s" if i < text_cols else ""}">{e(h)}</th>' for i, h in enumerate(header))
    body = []
    for r in rows:
        cells = "".join(
            f'<td class="{"s" if i < text_cols else ""}" data-v="{e(_sort_value(v))}">{e(fmt(v))}</td>' for i, v in enumerate(r)
        )
        body.append(f"<tr>{cells}</tr>")
    classes = " ".join(c for c in ("sortable" if sortable else "", cls) if c)
    return f'<table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def kv_table(d: Mapping[str, Any]) -> str:
    return table(["key", "value"], [(k, v) for k, v in _flat(d).items()], text_cols=2)


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def records_table(recs: Sequence[Mapping[str, Any]]) -> str:
    cols: list[str] = []
    flats = [_flat(r) for r in recs]
    for f in flats:
        cols += [k for k in f if k not in cols]
    return table(cols, [[f.get(c) for c in cols] for f in flats], text_cols=1)


def any_table(obj: Any) -> str:
    """A dict as key/value rows, a list of dicts as a table, anything else as escaped JSON."""
    if isinstance(obj, Mapping):
        lists = {k: v for k, v in obj.items() if isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v)}
        rest = {k: v for k, v in obj.items() if k not in lists}
        return (kv_table(rest) if rest else "") + "".join(f"<h3>{e(k)}</h3>{records_table(v)}" for k, v in lists.items())
    if isinstance(obj, list) and obj and all(isinstance(x, Mapping) for x in obj):
        return records_table(obj)
    return f"<pre>{e(json.dumps(obj, indent=2, default=str))}</pre>"


# ---- sections -------------------------------------------------------------------------------------


def _card(k: str, v: str, note: str = "") -> str:
    return f'<div class="card"><div class="k">{e(k)}</div><div class="v">{e(v)}</div><div class="n">{e(note)}</div></div>'


def glance(study: Study) -> str:
    runs = study.runs
    counts = runs["status"].value_counts().to_dict() if "status" in runs else {}
    budgets = sorted(runs["budget"].dropna().unique()) if "budget" in runs else []
    cards = [_card("runs", f"{counts.get('done', 0)} done / {len(runs)}",
                   ", ".join(f"{v} {k}" for k, v in counts.items() if k != "done") or "none failed")]
    if budgets:
        cards.append(_card("IsoFLOP budgets", str(len(budgets)), ", ".join(F.fmt_sci(b) for b in budgets) + " FLOPs"))
    target = study.target_flops()
    if target:
        cards.append(_card("target budget", F.fmt_sci(target) + " FLOPs"))
    sel = study.select
    if isinstance(sel, dict):
        who = sel.get("name") or sel.get("run_id") or sel.get("model") or "?"
        cards.append(_card("chosen model", str(who), str(sel.get("reason", ""))[:160]))
    summ = study.summary if isinstance(study.summary, dict) else {}
    if isinstance(summ.get("minutes"), (int, float)):
        stages = summ.get("stage_minutes") if isinstance(summ.get("stage_minutes"), dict) else {}
        cards.append(_card("study time", f"{summ['minutes']:.1f} min",
                           ", ".join(f"{k} {v:.1f}" for k, v in stages.items() if isinstance(v, (int, float)))))
    bt = study.backtest
    if isinstance(bt, dict) and bt.get("predicted_loss") is not None and bt.get("achieved_loss") is not None:
        err = bt.get("error")
        err = err if isinstance(err, (int, float)) else (bt["predicted_loss"] - bt["achieved_loss"]) / bt["achieved_loss"]
        cards.append(_card("backtest: predicted vs achieved", f"{bt['predicted_loss']:.4f} vs {bt['achieved_loss']:.4f}",
                           f"error {100 * err:+.2f}% at the held-out budget"))
    for conv in CONVENTIONS:
        fd = F.frontier_data(study, conv)
        if fd:
            cards.append(_card(f"N* exponent, {CONVENTION_LABEL[conv]}", f"{fd['law']['exponent']:.3f}", _ci_text(fd)))
    return f'<div class="cards">{"".join(cards)}</div>'


def _ci_text(fd: dict[str, Any]) -> str:
    ci = fd["law"].get("ci")
    if ci:
        return f"95% CI [{ci[0]:.3f}, {ci[1]:.3f}]"
    band = fd.get("band")
    if band is not None and "exponents" in band:
        lo, hi = np.percentile(band["exponents"], [2.5, 97.5])
        return f"95% bootstrap CI [{lo:.3f}, {hi:.3f}]"
    return ""


def run_table(study: Study) -> str:
    runs = study.runs
    cols = [(c, h) for c, h in RUN_COLUMNS if c in runs]
    rows = runs.sort_values([c for c in ("budget", "params") if c in runs]) if len(runs) else runs
    body = [[r.get(c) for c, _ in cols] for r in rows.to_dict("records")]
    return ('<p class="note">Click a column to sort. Loss in nats/token; FLOPs counted as 6ND with N total.</p>'
            f'<div class="scroll">{table([h for _, h in cols], body, sortable=True, text_cols=3)}</div>')


def isoflop_table(study: Study) -> str:
    rows = []
    for conv in CONVENTIONS:
        if N_COLUMN[conv] not in study.done:
            continue
        for v in study.valleys(N_COLUMN[conv]):
            se = v.log_n_se
            rows.append((CONVENTION_LABEL[conv], v.budget, v.n_opt,
                         f"×/÷ {math.exp(se):.2f}" if math.isfinite(se) else "n/a", v.tokens_opt,
                         v.tokens_opt / v.n_opt, v.loss_opt, "yes" if v.interior else "NO: best run at the edge"))
    return table(["N convention", "budget C", "N*", "N* ±1σ", "D*", "tokens per param", "loss at N*", "interior"],
                 rows, text_cols=1)


CONVENTION_TEXT = (
    "Kaplan et al. (2020) counted parameters without the embeddings and found N* ∝ C<sup>0.73</sup>; Hoffmann et al. "
    "(2022, Chinchilla) counted all parameters and found N* ∝ C<sup>0.50</sup>, so the two prescribe very different "
    "models at the same budget. Pearce &amp; Song (2024, <i>Reconciling Kaplan and Chinchilla Scaling Laws</i>) "
    "show that most of the gap comes from counting: at small scale the embeddings are a large share of the "
    "parameters, that share falls as models grow, so the non-embedding N* rises faster with compute than the "
    "total N*, and a law fitted on small models in Kaplan's convention shows a steeper local exponent. Porian et al. "
    "(2024, <i>Resolving Discrepancies in Compute-Optimal Scaling of Language Models</i>) trace the remaining "
    "difference to how the last layer's FLOPs are counted, to warmup too long for small models, and to optimizer "
    "settings (AdamW β2, learning rate, batch size) not tuned per scale; corrected, Kaplan's setup yields "
    "Chinchilla's exponent. Here both conventions are fitted to the same runs: "
)


def conventions(study: Study) -> str | None:
    fds = {conv: fd for conv in CONVENTIONS if (fd := F.frontier_data(study, conv))}
    if not fds:
        return None
    rows = []
    for conv, fd in fds.items():
        a3 = study.fit("3", conv)
        a3_exp = a3.get("a") if a3 else None
        a3_ci = a3.ci("a") if a3 else None
        at_target = fd["law"]["coef"] * fd["target"] ** fd["law"]["exponent"]
        rows.append((CONVENTION_LABEL[conv], fd["law"]["exponent"], _ci_text(fd), fd["source"], a3_exp,
                     f"[{a3_ci[0]:.3f}, {a3_ci[1]:.3f}]" if a3_ci else "", at_target))
    tab = table(["N convention", "N* exponent a (IsoFLOP)", "interval", "from", "a (parametric fit)", "interval",
                 f"N* at the target C = {F.fmt_sci(fd['target'])}"], rows, text_cols=1)
    done = study.done
    share = ""
    if {"params", "non_embedding_params"} <= set(done.columns) and len(done):
        emb = 1 - done["non_embedding_params"] / done["params"]
        share = (f" embeddings are {100 * emb.max():.0f}% of the parameters of the smallest model and "
                 f"{100 * emb.min():.0f}% of the largest.")
    verdict = ""
    if len(fds) == 2:
        ne, t = fds["non_embedding"]["law"]["exponent"], fds["total"]["law"]["exponent"]
        verdict = (f" The non-embedding exponent is {ne:.3f} and the total one {t:.3f}: "
                   + ("counting without embeddings gives the steeper law, as Kaplan found." if ne > t
                      else "here the non-embedding exponent is not the steeper one."))
    return f"{tab}<p>{CONVENTION_TEXT}{e(share)}{e(verdict)}</p>"


def parametric_table(study: Study) -> str:
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
    if not rows:
        return ""
    return table(["N convention", "parameter", "value", "std. error", "95% CI"], rows, text_cols=2)


def backtest_table(study: Study) -> str:
    bt = study.backtest
    if not isinstance(bt, dict):
        return ""
    ach = bt.get("achieved_loss")
    rows = [("law fitted without the largest budget", bt.get("predicted_loss"), bt.get("error"))]
    for k, v in (bt.get("baselines") or {}).items():
        p = v.get("predicted_loss", v.get("loss")) if isinstance(v, dict) else v
        err = v.get("error") if isinstance(v, dict) else None
        if err is None and isinstance(p, (int, float)) and isinstance(ach, (int, float)):
            err = (p - ach) / ach
        rows.append((f"baseline: {k.replace('_', ' ')}", p, err))
    body = [(n, p, ach, f"{100 * err:+.2f}%" if isinstance(err, (int, float)) else "") for n, p, err in rows]
    skip = ("predicted_loss", "achieved_loss", "error", "baselines", "candidates", "law")
    extra = {k: v for k, v in bt.items() if k not in skip}
    folded = f"<details><summary>the backtest's other fields</summary>{kv_table(extra)}</details>" if extra else ""
    cands = bt.get("candidates")
    cand = ("<h3>every candidate law (the headline form was chosen one budget down)</h3>" + records_table(cands)
            if isinstance(cands, list) and cands and all(isinstance(c, Mapping) for c in cands) else "")
    return table(["predictor", "predicted loss", "achieved loss", "error"], body, text_cols=1) + cand + folded


def provenance(study: Study) -> str:
    parts = []
    summ = study.summary if isinstance(study.summary, dict) else {}
    prov = summ.get("provenance") if isinstance(summ.get("provenance"), dict) else {
        k: v for k, v in summ.items() if k in PROVENANCE_KEYS}
    if prov:
        parts.append("<h3>recorded by the study</h3>" + kv_table(prov))
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
        parts.append("<h3>the runs</h3>" + kv_table(facts))
    import scaling

    env = {"scaling": scaling.__version__, "python": platform.python_version(), "platform": platform.platform(),
           "machine": platform.machine()}
    for p in PACKAGES:
        try:
            env[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            continue
    env["scaling git commit"] = _git_commit() or "unknown"
    parts.append("<h3>environment that built this report</h3>" + kv_table(env))
    if study.sweep_yaml:
        parts.append(f"<h3>resolved sweep spec (sweep.yaml)</h3><pre>{e(study.sweep_yaml)}</pre>")
    first = study.runs.iloc[0].to_dict() if len(study.runs) else None
    if first:
        spec = {k: v for k, v in first.items() if "." in k or k in ("tokens", "batch_tokens", "seed", "backend")}
        parts.append("<h3>resolved run spec (first run)</h3>" + kv_table(spec))
    return "".join(parts)


def _git_commit() -> str | None:
    import subprocess
    from pathlib import Path

    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def alignment_table(study: Study) -> str:
    """The base -> SFT -> DPO table first, every other recorded setting folded below it."""
    summ = study.align_summary
    if summ is None:
        return ""
    if isinstance(summ, Mapping) and isinstance(summ.get("table"), list):
        rest = {k: v for k, v in summ.items() if k != "table"}
        table_html = records_table([r for r in summ["table"] if isinstance(r, Mapping)])
        folded = f"<details><summary>settings and data</summary>{any_table(rest)}</details>" if rest else ""
        return f"<h3>held-out evaluation, base → SFT → DPO</h3>{table_html}{folded}"
    return any_table(summ)


# ---- the page ---------------------------------------------------------------------------------------

def sections(study: Study, figs: dict[str, Any]) -> list[tuple[str, str, str | None, str]]:
    """(id, title, figure key or None, html) for every section with data, in page order."""
    out: list[tuple[str, str, str | None, str]] = [("glance", "The study at a glance", None, glance(study))]
    if study.plan is not None:
        out.append(("plan", "Plan", None, any_table(study.plan)))
    if len(study.runs):
        out.append(("runs", "Runs", None, run_table(study)))
    if "curves" in figs:
        out.append(("curves", "Training curves", "curves", ""))
    if "isoflop" in figs:
        out.append(("isoflop", "IsoFLOP curves", "isoflop", isoflop_table(study)))
    if "frontier" in figs:
        out.append(("frontier", "Compute-optimal frontier", "frontier", ""))
    conv = conventions(study)
    if conv:
        out.append(("conventions", "Two parameter conventions: non-embedding (Kaplan) vs total (Chinchilla)", None, conv))
    if "parametric" in figs:
        out.append(("parametric", "Parametric fit", "parametric", parametric_table(study)))
    if "backtest" in figs or study.backtest is not None:
        out.append(("backtest", "Backtest at the largest budget", "backtest" if "backtest" in figs else None, backtest_table(study)))
    if "alignment" in figs or study.align_summary is not None:
        out.append(("alignment", "Alignment: base → SFT → DPO", "alignment" if "alignment" in figs else None, alignment_table(study)))
    out.append(("provenance", "Provenance", None, provenance(study)))
    return out


def render(study: Study, figs: dict[str, Any], title: str | None = None) -> str:
    """The whole page as a string. plotly.js is embedded with the first figure only."""
    title = title or f"Scaling study: {study.path.name}"
    secs = sections(study, figs)
    nav = "".join(f'<a href="#{sid}">{e(t.split(":")[0])}</a>' for sid, t, _, _ in secs)
    body, first = [], True
    for sid, t, fkey, content in secs:
        fig_html = ""
        if fkey:
            fig_html = figs[fkey].to_html(
                full_html=False, include_plotlyjs=first, div_id=f"fig-{sid}",
                config={"displaylogo": False, "responsive": True, "toImageButtonOptions": {"filename": sid}},
            )
            first = False
        body.append(f'<section id="{sid}"><h2>{e(t)}</h2>{fig_html}{content}</section>')
    n_figs = sum(1 for _, _, fkey, _ in secs if fkey)
    return (
        f'<!DOCTYPE html><html lang="en" data-figures="{n_figs}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{e(title)}</title>'
        f"<style>{CSS}</style>{ERROR_HOOK}</head><body>"
        f'<header><h1>{e(title)}</h1><div class="sub">{e(str(study.path))} · built by scaling report</div></header>'
        f'<div id="script-errors"></div><nav>{nav}</nav><main>{"".join(body)}</main>{SORT_JS}</body></html>'
    )
