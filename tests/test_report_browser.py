"""The report in a real browser: headless Chromium (Debian's ``chromium``) draws every figure,
raises no script error, and shows an injected run name as text; for a real sweep trained here
with the local backend, and for a synthetic study that has every section.

The DOM is read with ``--dump-dom`` after a virtual-time budget, so plotly has drawn: each figure
div must hold plotly's ``main-svg`` and traces with drawn marks (marker or bar paths, line paths).
"""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from scaling.report import build_report
from tests.report_study import INJECTED, full_study_and_page, real_study

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = (  # the flags that render headless here with no sandbox, GPU or network chatter
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (installed by .ci/run)"),
]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def chromium(page: Path, profile: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000", *args, page.as_uri()],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


class Dom(HTMLParser):
    """What a test needs from the rendered DOM: per plotly figure, its SVGs, traces and drawn marks;
    the <html> attributes; the text of every script element and table cell."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.figure: str | None = None
        self.figure_depth = 0
        self.figures: dict[str, dict[str, Any]] = {}
        self.trace: list[int] | None = None  # marks drawn in the data trace being read
        self.trace_depth = 0
        self.html_attrs: dict[str, str | None] = {}
        self.scripts: list[str] = []
        self.cells: list[str] = []
        self._in: str | None = None
        self._buf: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag == "html":
            self.html_attrs = a
        if tag == "div" and "plotly-graph-div" in cls and self.figure is None:
            self.figure, self.figure_depth = a.get("id") or f"fig{len(self.figures)}", len(self.stack)
            self.figures[self.figure] = {"main_svg": 0, "traces": 0, "marks": 0}
        if self.figure is not None:
            f = self.figures[self.figure]
            f["main_svg"] += tag == "svg" and "main-svg" in cls
            if tag == "g" and "trace" in cls and self.trace is None:  # a data trace (legend items are "traces")
                f["traces"] += 1
                self.trace, self.trace_depth = [0], len(self.stack)
                f.setdefault("marks_per_trace", []).append(self.trace)
            drawn = tag == "path" and bool(a.get("d")) and a.get("d") != "M0,0Z"
            mark = (drawn and bool({"point", "js-line", "js-fill"} & set(cls))) or (tag == "g" and "point" in cls)
            if mark and self.trace is not None:
                f["marks"] += 1
                self.trace[0] += 1
        if tag in ("script", "td"):
            self._in, self._buf = tag, []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        while self.stack:
            if self.stack.pop() == tag:
                break
        if self.trace is not None and len(self.stack) <= self.trace_depth:
            self.trace = None
        if self.figure is not None and len(self.stack) <= self.figure_depth:
            self.figure = None
        if tag == self._in:
            (self.scripts if tag == "script" else self.cells).append("".join(self._buf))
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in:
            self._buf.append(data)


def render(page: Path, profile: Path, shot: Path | None = None) -> Dom:
    args = ["--dump-dom", "--window-size=1400,2400", "--hide-scrollbars"] + ([f"--screenshot={shot}"] if shot else [])
    proc = chromium(page, profile, *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = Dom()
    dom.feed(proc.stdout)
    return dom


def assert_drew(dom: Dom) -> None:
    expected = int(dom.html_attrs["data-figures"])
    assert expected >= 2 and len(dom.figures) == expected
    for fid, f in dom.figures.items():
        assert f["main_svg"] >= 1, f"{fid}: plotly drew no SVG"
        assert f["traces"] >= 1, f"{fid}: no trace"
        assert all(m[0] >= 1 for m in f["marks_per_trace"]), f"{fid}: a trace drew no point, bar or line: {f}"
    assert "data-script-errors" not in dom.html_attrs, dom.html_attrs.get("data-script-errors")


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> tuple[Dom, Path, Path]:
    root = tmp_path_factory.mktemp("browser-real")
    study = real_study(root / "study")
    page = build_report(study, root / "report.html")
    return render(page, root / "profile"), page, study


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> tuple[Dom, Path, Path]:
    study, page = full_study_and_page(tmp_path_factory)
    shot = page.with_suffix(".png")
    return render(page, page.parent / "profile", shot), page, shot


def test_real_sweep_report_draws_in_chromium(real):
    dom, _, study = real
    assert_drew(dom)
    assert {"fig-curves", "fig-isoflop"} <= set(dom.figures)
    # the IsoFLOP figure draws a marker for every finished run (plus each budget's minimum)
    n_done = sum(1 for p in (study / "runs").iterdir() if (p / "result.json").exists())
    assert n_done == 6 and dom.figures["fig-isoflop"]["marks"] >= n_done


def test_injected_run_name_is_inert(real):
    dom, _, _ = real
    assert INJECTED in dom.cells  # shown as the text of its run-table cell
    assert not [s for s in dom.scripts if "alert(1)" in s and len(s) < 1000]  # never a script of its own


def test_every_section_figure_draws(full):
    dom, _, _ = full
    assert_drew(dom)
    assert set(dom.figures) == {"fig-curves", "fig-isoflop", "fig-frontier", "fig-parametric", "fig-backtest", "fig-alignment"}


def test_screenshot(full):
    _, _, shot = full
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_error_hook_reports_a_broken_page(tmp_path, real):
    """The no-error check can fail: a page whose script throws is caught by the same DOM attribute."""
    _, page, _ = real
    broken = tmp_path / "broken.html"
    broken.write_text(page.read_text().replace("</body>", "<script>undefinedFunction()</script></body>"))
    dom = render(broken, tmp_path / "profile")
    assert "undefinedFunction" in (dom.html_attrs.get("data-script-errors") or "")
