"""The HTML report of a study: one self-contained offline page (plotly.js embedded once).

``build_report(study_dir)`` reads the store and the stages' JSON artifacts (never runs anything)
and writes ``reports/<study name>.html`` unless ``out_path`` is given. ``export_figures`` writes
PNG/SVG copies of the figures where kaleido and a Chromium are installed; the HTML never needs it.
"""

from __future__ import annotations

from pathlib import Path


class ExportUnavailable(RuntimeError):
    """PNG/SVG export needs the optional ``kaleido`` package (and a Chromium)."""


def build_report(
    study_dir: str | Path, out_path: str | Path | None = None, fit_paths: list[str | Path] | None = None
) -> Path:
    """Write the report of ``study_dir`` and return its path."""
    from scaling.report.data import load_study
    from scaling.report.figures import all_figures
    from scaling.report.page import render
    from scaling.store import atomic_write_text

    study = load_study(study_dir, fit_paths)
    out = Path(out_path) if out_path else Path("reports") / f"{Path(study_dir).resolve().name}.html"
    atomic_write_text(out, render(study, all_figures(study)))  # the umask's mode: a page to share
    return out


def export_figures(
    study_dir: str | Path, out_dir: str | Path, formats: tuple[str, ...] = ("png", "svg"),
    fit_paths: list[str | Path] | None = None,
) -> list[Path]:
    """Each figure as ``out_dir/<section>.<fmt>``; raises :class:`ExportUnavailable` without kaleido."""
    try:
        import kaleido  # noqa: F401
    except ImportError as exc:
        raise ExportUnavailable(
            "PNG/SVG export needs kaleido and a Chromium: `pip install kaleido` "
            "(the HTML report does not need it)"
        ) from exc
    from scaling.report.data import load_study
    from scaling.report.figures import all_figures

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in all_figures(load_study(study_dir, fit_paths)).items():
        for fmt in formats:
            p = out / f"{name}.{fmt}"
            fig.write_image(str(p), format=fmt, width=1300, height=int(fig.layout.height or 450))
            written.append(p)
    return written


__all__ = ["ExportUnavailable", "build_report", "export_figures"]
