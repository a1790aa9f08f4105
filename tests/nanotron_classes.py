"""Test helper: Nanotron's own config classes, or the reason they cannot be loaded here.

In CI (``CI`` set) the pinned Nanotron wheel is installed by ``.ci/setup``, so a missing
Nanotron fails the tests that need it; on a user's machine without it they skip with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = "pip install --no-deps ../shared/wheels/nanotron-0.4-py3-none-any.whl dacite (as .ci/setup does)"


def require_nanotron() -> None:
    """Skip (or, in CI, fail) when Nanotron's config package cannot be imported."""
    missing = [m for m in ("nanotron", "dacite") if importlib.util.find_spec(m) is None]
    if not missing:
        return
    reason = f"{' and '.join(missing)} not installed: {INSTALL}"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the Nanotron config tests; {reason}")
    pytest.skip(reason)


def load_with_nanotron(paths: list[Path]) -> dict[str, dict]:
    """``{str(path): {"model_class", "config"} | {"error"}}`` from ``tests/nanotron_load.py``."""
    require_nanotron()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "nanotron_load.py"), *map(str, paths)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
