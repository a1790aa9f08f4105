"""The math and planning modules stay light: no torch, transformers, submitit or plotly, and the
``scaling plan`` path also avoids pandas, scipy, statsmodels and pydantic (slow imports); ``scaling
fit`` avoids scipy.optimize."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

HEAVY = ("torch", "transformers", "submitit", "plotly")
SLOW = ("pandas", "scipy", "statsmodels", "pydantic", "numpy")


def _modules_after(code: str, top_level: bool = True) -> set[str]:
    """The modules loaded after running ``code`` in a fresh interpreter (top-level packages only,
    or every dotted name)."""
    name = "m.split('.')[0]" if top_level else "m"
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted({name} for m in sys.modules)))"
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


def test_fit_command_path_skips_scipy_optimize(tmp_path):
    """`scaling fit points.csv` (approach 3, grid, no bootstrap) polishes with our own
    Levenberg-Marquardt: scipy.optimize alone costs about 0.7 s to import."""
    points = tmp_path / "points.csv"
    rows = ["params,tokens,loss"]
    for n in (1e6, 3e6, 1e7, 3e7, 1e8):
        for d in (2e7, 1e8, 5e8, 2e9):
            rows.append(f"{n},{d},{1.7 + 400 / n**0.34 + 2000 / d**0.28}")
    points.write_text("\n".join(rows) + "\n")
    loaded = _modules_after(
        "import contextlib, io\n"
        "from scaling.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['fit', {str(points)!r}]) == 0",
        top_level=False,
    )
    assert "scaling.fit.approach3" in loaded
    assert "scipy.optimize" not in loaded
    assert not {m.split(".")[0] for m in loaded} & set(HEAVY)
