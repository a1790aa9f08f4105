"""The report page: sections follow the data, strings are escaped, plotly.js is embedded once."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scaling.report import ExportUnavailable, build_report, export_figures
from scaling.report.data import load_study
from scaling.report.figures import all_figures
from tests.report_study import INJECTED, full_study_and_page, read, small_study

PLOTLY_BANNER = re.compile(r"plotly\.js v\d+\.\d+\.\d+")


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    return full_study_and_page(tmp_path_factory)[0]


@pytest.fixture(scope="module")
def full_html(tmp_path_factory) -> str:
    return read(full_study_and_page(tmp_path_factory)[1])


def html_text(s: str) -> str:
    import html

    return html.escape(s)


def section_ids(page: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)">', page)


def test_every_section_with_its_data(full_html):
    assert section_ids(full_html) == [
        "glance", "plan", "runs", "curves", "isoflop", "frontier", "conventions", "parametric", "backtest",
        "alignment", "provenance",
    ]
    # one plotly div per figure section, the page says how many figures it holds
    figs = re.findall(r'<div id="(fig-[a-z]+)" class="plotly-graph-div"', full_html)
    assert figs == ["fig-curves", "fig-isoflop", "fig-frontier", "fig-parametric", "fig-backtest", "fig-alignment"]
    assert f'data-figures="{len(figs)}"' in full_html


def test_plotly_js_embedded_once_and_no_network(full_html):
    assert len(PLOTLY_BANNER.findall(full_html)) == 1
    # no element loads anything: no script src, no stylesheet link, no CDN reference in a tag
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", full_html)
    assert tags and not [t for t in tags if "src=" in t or "href=" in t]


def test_injected_strings_are_escaped(full_html):
    raw = INJECTED in full_html  # (a bool: pytest would otherwise diff a 5 MB page)
    assert not raw
    shown = "&lt;script&gt;alert(1)&lt;/script&gt;" in full_html  # run table and provenance show it as text
    assert shown
    # inside plotly's JSON the name is escaped too (no '</' can close the script element)
    for script in re.findall(r"<script[^>]*>(.*?)</script>", full_html, flags=re.S):
        assert "alert(1)" not in script or "<script>alert" not in script


def test_sections_absent_without_their_data(tmp_path):
    study = small_study(tmp_path / "bare", artifacts=False)
    page = read(build_report(study, tmp_path / "bare.html"))
    ids = section_ids(page)
    assert {"glance", "runs", "curves", "isoflop", "provenance"} <= set(ids)
    assert not {"plan", "parametric", "backtest", "alignment"} & set(ids)
    # without fit artifacts the report refits nothing: no minima, no frontier, and it says why
    assert not {"frontier", "conventions"} & set(ids)
    assert "fit/approach2_" in page[page.index('<section id="isoflop">'):]


def test_runs_only_no_budget_still_builds(tmp_path):
    from benchmarks.report_build import make_study

    study = make_study(tmp_path / "one", n_runs=2, sizes_per_budget=2, steps_logged=10)
    page = read(build_report(study, tmp_path / "one.html"))
    assert section_ids(page) == ["glance", "runs", "curves", "provenance"]


def test_fit_numbers_reach_the_page(full, full_html):
    a2 = json.loads((full / "fit" / "approach2_non_embedding.json").read_text())
    a3 = json.loads((full / "fit" / "approach3_non_embedding.json").read_text())
    conv = full_html[full_html.index('<section id="conventions">'):]
    conv = conv[: conv.index("</section>")]
    assert f"{a2['n_opt']['exponent']:.5g}" in conv and f"{a3['a']:.5g}" in conv  # IsoFLOP and parametric a
    assert "Pearce" in conv and "Porian" in conv
    assert "fit/approach2_non_embedding.json" in conv  # the N* line comes from the fit, not the report
    bt = json.loads((full / "fit" / "backtest.json").read_text())
    assert f"{100 * bt['error']:+.2f}%" in full_html


def test_valleys_are_the_fit_stages_minima(full):
    study = load_study(full)
    vs = study.valleys("non_embedding")
    assert len(vs) == 3 and all(v.interior for v in vs)
    assert [v.n_opt for v in vs] == sorted(v.n_opt for v in vs)
    a2 = json.loads((full / "fit" / "approach2_non_embedding.json").read_text())
    assert [v.n_opt for v in vs] == [m["n_opt"] for m in a2["minima"]]  # read, not refitted
    v = vs[0]  # the drawn parabola is the fit's: its minimum sits at the fit's vertex
    import numpy as np

    x = np.log(v.n_opt) + np.array([-0.01, 0.0, 0.01])
    assert v.loss_at(x)[1] == pytest.approx(v.loss_opt) and v.loss_at(x)[1] < v.loss_at(x).min() + 1e-12


def test_headline_exponents_are_the_summarys_with_their_conventions(full, full_html):
    from scaling.fit.artifacts import exponent_rows, exponent_where

    glance = full_html[full_html.index('<section id="glance">'):]
    glance = glance[: glance.index("</section>")]
    rows = exponent_rows(full)
    assert {(r["approach"], r["param_convention"]) for r in rows} >= {("3", "total"), ("3", "non_embedding")}
    by = {(r["approach"], r["param_convention"]): r for r in rows}
    # approach 3 solves C = 6 N D in its own count; approach 2's C is the budgets' (non-embedding)
    assert by["3", "total"]["flops_convention"] == "6N"
    assert by["3", "non_embedding"]["flops_convention"] == "6N_non_embedding"
    assert by["2", "non_embedding"]["flops_convention"] == "6N_non_embedding"
    for r in rows:
        assert html_text(exponent_where(r)) in glance
        if r["a"] is not None:
            assert f"{r['a']:.3f}" in glance


def test_figures_have_log_axes_and_units(full):
    figs = all_figures(load_study(full))
    curves = figs["curves"]
    assert curves.layout.xaxis.type == "log" and curves.layout.yaxis.type == "log"
    assert "nats/token" in curves.layout.yaxis.title.text
    assert "FLOPs" in curves.layout.xaxis2.title.text
    assert figs["frontier"].layout.xaxis.type == "log"


def test_export_skips_clearly_without_kaleido(full, tmp_path):
    pytest.importorskip("plotly")
    try:
        import kaleido  # noqa: F401
    except ImportError:
        with pytest.raises(ExportUnavailable, match="kaleido"):
            export_figures(full, tmp_path / "png")
    else:  # pragma: no cover - only where kaleido is installed
        assert export_figures(full, tmp_path / "png")


@pytest.mark.slow
def test_cli_report_and_bad_input(full, tmp_path, cli):
    out = tmp_path / "cli.html"
    proc = cli("report", str(full), "-o", str(out), "--json", "--export", str(tmp_path / "figs"), check=True)
    payload = json.loads(proc.stdout)
    assert payload["report"] == str(out) and out.stat().st_size == payload["bytes"]
    try:
        import kaleido  # noqa: F401
    except ImportError:
        assert "figure export skipped" in proc.stderr and "kaleido" in proc.stderr
    bad = cli("report", str(tmp_path / "missing"))
    assert bad.returncode == 2 and "study:" in bad.stderr
    bad_fit = cli("report", str(full), "--fit", str(tmp_path / "nope.json"))
    assert bad_fit.returncode == 2 and "--fit" in bad_fit.stderr
    (tmp_path / "torn.json").write_text('{"approach": "3", "E": 1.')
    torn = cli("report", str(full), "--fit", str(tmp_path / "torn.json"))
    assert torn.returncode == 2 and "not a JSON object" in torn.stderr


def test_fit_option_adds_a_fit(full, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(full, bare, ignore=shutil.ignore_patterns("fit"))
    no_fit = read(build_report(bare, tmp_path / "a.html"))
    assert '<section id="parametric">' not in no_fit
    with_fit = read(build_report(bare, tmp_path / "b.html", fit_paths=[full / "fit" / "approach3_non_embedding.json"]))
    assert '<section id="parametric">' in with_fit


def test_every_block_kind_escapes_its_text():
    """Autoescape covers each block the templates draw, nested ones included."""
    from scaling.report.blocks import Card, Cards, Details, Section, Table, Text, environment

    blocks = [Table([INJECTED], [[INJECTED]]), Cards([Card(INJECTED, INJECTED, INJECTED)]), Text("heading", INJECTED),
              Text("note", INJECTED), Text("pre", INJECTED), Details(INJECTED, [Text("note", INJECTED)])]
    section = Section("x", INJECTED, blocks)
    out = environment().get_template("section.html.j2").render(s=section, figures={})
    assert INJECTED not in out
    assert out.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 12  # title; header, cell and its data-v; 3 card fields; 5 more


def test_alignment_section_tells_the_story_escaped(full_html):
    """The side-by-side table, the flag of a stage that did not learn, and the held-out panel: each
    reply in its own cell as escaped text (no JSON list in a cell), the correct answer beside it."""
    sec = full_html[full_html.index('<section id="alignment">'):]
    sec = sec[: sec.index("</section>")]
    assert "format-following rate" in sec and "[0.360, 0.460]" in sec and "trivial baseline" in sec
    assert "Did not learn — DPO: held-out accuracy 0.400 not above SFT" in sec
    assert "reward model (RLHF optimizes it)" in sec
    assert INJECTED not in sec and "&lt;script&gt;alert(1)&lt;/script&gt;" in sec
    import re

    assert '<td class="s reply ok">A</td>' in sec and not re.search(r"<td[^>]*>\s*\[\{", sec)
    assert "after SFT, 97%" in sec
