"""Shared fixtures. Tests run the CLI as a real process with ``python -m scaling``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the test backends' entry points (tests/plugins/README.md), for this process and every child
PLUGINS = str(ROOT / "tests" / "plugins")
if PLUGINS not in sys.path:
    sys.path.append(PLUGINS)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH", ""), PLUGINS) if p)


def run_cli(*args: str, check: bool = False, timeout: float = 600, env: dict | None = None,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """``python -m scaling ARGS`` in a subprocess (from the repository root unless ``cwd``)."""
    e = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if env:
        e.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "scaling", *args], cwd=cwd or ROOT, env=e, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"scaling {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    return run_cli


# A real single-node Slurm for tests marked `slurm` (tests/slurm_harness.py).
from tests.slurm_harness import slurm_cluster  # noqa: E402,F401

TINY_SPEC = ROOT / "tests" / "specs" / "pipeline_tiny.yaml"


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """`scaling run` on the reduced quickstart (16 tiny runs, fits, SFT, DPO, report), once per session.

    Returns ``(study_dir, report_path, summary, cpu_seconds)``: ``cpu_seconds`` the user + system time
    of the study's processes (its runs are reaped children of its own), which another pytest-xdist
    worker on the same cores does not inflate as it does the wall time. Tests must not modify the
    folder: copy it.
    """
    import json
    import resource

    root = tmp_path_factory.mktemp("tiny_study")
    out, report = root / "study", root / "study.html"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = run_cli("run", str(TINY_SPEC), "--out", str(out), "--report", str(report), "--json", timeout=900)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out, report, json.loads(proc.stdout), cpu


# Fixtures that hold one costly thing per session: every module using one runs on the same
# pytest-xdist worker, so each is built once (a Slurm cluster, the tiny study).
SHARED_FIXTURES = ("tiny_study", "slurm_cluster")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup``, one xdist group per module (its module fixtures are built once),
    and one group for all the modules that share a session fixture of :data:`SHARED_FIXTURES`."""
    modules = [item.nodeid.split("::")[0] for item in items]
    group = {module: module for module in modules}
    for item, module in zip(items, modules, strict=True):
        for fixture in SHARED_FIXTURES:
            if fixture in getattr(item, "fixturenames", ()):
                group[module] = fixture
    for item, module in zip(items, modules, strict=True):
        item.add_marker(pytest.mark.xdist_group(group[module]))
