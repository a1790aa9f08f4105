"""Shared fixtures. Tests run the CLI as a real process with ``python -m scaling``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def run_cli(*args: str, check: bool = False, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m scaling ARGS`` in a subprocess from the repository root."""
    e = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if env:
        e.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "scaling", *args], cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"scaling {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    return run_cli


# A real single-node Slurm for tests marked `slurm` (tests/slurm_harness.py).
from tests.slurm_harness import slurm_cluster  # noqa: E402,F401
