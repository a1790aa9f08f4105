"""``scaling sweep plan`` on nanotron specs: the plan columns, and exit 2 with the reason for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
LADDER = ROOT / "sweeps" / "nanotron_chinchilla.yaml"


def test_ladder_plan_shows_parallelism_memory_and_gpu_hours():
    proc = run_cli("sweep", "plan", str(LADDER), "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    table = json.loads(proc.stdout)
    assert table["backend"] == "nanotron" and len(table["runs"]) == 15
    for col in ("parallel", "micro_batch", "accum", "recompute", "mem_gib", "gpu_hours"):
        assert col in table["describe_columns"]
    for r in table["runs"]:
        assert r["parallel"].startswith("dp") and 0 < r["mem_gib"] <= 80 * 1e9 / 2**30
        assert r["gpu_hours"] > 0 and r["steps"] > 0


def _spec(tmp_path: Path, **changes) -> Path:
    spec = yaml.safe_load(LADDER.read_text())
    spec["grid"] = {"kind": "runs", "runs": [{"size": {"layers": 12, "hidden": 768, "heads": 12}, "tokens": 1_000_000_000}]}
    for key, value in changes.items():
        spec[key] = {**spec.get(key, {}), **value}
    p = tmp_path / "nanotron.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


@pytest.mark.parametrize(
    "changes,reason",
    [
        ({"backend_options": {"tp": 8}}, "backend_options.tp=8: Nanotron cannot shard heads=12"),
        ({"backend_options": {"tp": 2, "pp": 3}}, "not a multiple of tp x pp = 2 x 3"),
        ({"train": {"micro_batch": 3}}, "micro_batch=3: 32 sequences per replica"),
        ({"backend_options": {"nodes": 1, "gpus_per_node": 8, "dp": 3}}, "backend_options.dp=3"),
        ({"backend_options": {"model": "llama", "attention": "sdpa"}}, "backend_options.attention=sdpa: Nanotron's Llama"),
        ({"backend_options": {"attention": "flex_attention"}}, "backend_options: attention"),
    ],
)
def test_bad_input_exits_2_with_the_reason(tmp_path, changes, reason):
    proc = run_cli("sweep", "plan", str(_spec(tmp_path, **changes)), timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert reason in proc.stderr
