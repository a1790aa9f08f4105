"""A report that succeeds prints nothing but its result: no numpy RuntimeWarnings from thin data
(a budget of two runs, a study without fits), and a killed run shown as interrupted."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
from report_study import read, small_study

from scaling.report import build_report
from scaling.store import RunDir


@pytest.mark.parametrize("n_runs", [2, 5])
def test_thin_studies_build_without_runtime_warnings(tmp_path, n_runs):
    from benchmarks.report_build import make_study

    study = make_study(tmp_path / "s", n_runs=n_runs, sizes_per_budget=min(n_runs, 3), steps_logged=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        build_report(study, tmp_path / "s.html")


def test_killed_run_shown_interrupted(tmp_path):
    study = small_study(tmp_path / "bare", artifacts=False)
    rd = next(RunDir(p) for p in sorted((study / "runs").iterdir()))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (rd.path / "result.json").unlink()
    rd.mark_running()
    rd.update_status("running", pid=int(dead.stdout), pid_start=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        page = read(build_report(study, tmp_path / "bare.html"))
    runs = page[page.index('<section id="runs">'):]
    runs = runs[: runs.index("</section>")]
    assert "interrupted" in runs and ">running<" not in runs
