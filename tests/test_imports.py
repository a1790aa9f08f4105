"""The math and planning modules stay light: no torch, transformers, submitit or plotly, and the
``scaling plan`` path also avoids pandas, scipy, statsmodels and pydantic (slow imports)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

HEAVY = ("torch", "transformers", "submitit", "plotly")
SLOW = ("pandas", "scipy", "statsmodels", "pydantic", "numpy")


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    return set(json.loads(out.strip().splitlines()[-1]))


def test_math_modules_import_no_heavy_packages():
    loaded = _modules_after(
        "import scaling.planner, scaling.laws, scaling.shapes, scaling.flops, scaling.hardware\n"
        "from scaling.laws import LAW_NAMES, get_law\n"
        "[get_law(n) for n in LAW_NAMES]"
    )
    assert "scaling" in loaded
    assert not loaded & set(HEAVY)
    assert not loaded & set(SLOW)


def test_plan_command_path_stays_light():
    loaded = _modules_after(
        "import contextlib, io\n"
        "from scaling.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['plan', '--law', 'all', '--flops', '1e22']) == 0\n"
        "    assert main(['plan', '--law', 'all', '--flops', '1e22', '--json']) == 0\n"
        "    assert main(['params', '--target', '1B', '--json']) == 0"
    )
    assert not loaded & set(HEAVY)
    assert not loaded & set(SLOW)
