"""Sweep specs: validation errors name the key and its line; every shipped spec expands."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaling.errors import UsageError
from scaling.sweep.grid import expand
from scaling.sweep.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
name: t
model: {vocab: 1024, seq_len: 128}
train:
  batch: 2048
  lr: {rule: inverse_width, scale: 0.32, max: 0.01}
grid:
  kind: isoflop
  budgets: [1e11, 2e11]
  sizes:
    - {layers: 1, hidden: 32, heads: 2}
    - {layers: 2, hidden: 48, heads: 3}
"""


def _err(text: str) -> str:
    with pytest.raises(UsageError) as e:
        parse_spec(text, source="s.yaml")
    return str(e.value)


def test_good_spec_parses_with_shorthands():
    s = parse_spec(GOOD)
    assert s.train.batch.rule == "fixed" and s.train.batch.tokens == 2048
    assert s.train.lr.rule == "inverse_width"
    assert s.grid.budgets == [1e11, 2e11]  # YAML reads "1e11" as a string; pydantic makes it a float


def test_typo_names_key_line_and_suggestion():
    msg = _err(GOOD.replace("    - {layers: 1, hidden: 32", "    - {layers: 1, hiden: 32"))
    assert "s.yaml:10:" in msg and "grid.sizes.0.hiden" in msg and "did you mean 'hidden'" in msg
    msg = _err(GOOD.replace("  batch: 2048", "  bach: 2048"))
    assert "s.yaml:4:" in msg and "train.bach" in msg and "'batch'" in msg


def test_negative_budget_names_item_and_line():
    msg = _err(GOOD.replace("[1e11, 2e11]", "[1e11, -2e11]"))
    assert "s.yaml:8:" in msg and "grid.budgets.1" in msg and "greater than 0" in msg


def test_unknown_grid_kind_lists_kinds():
    msg = _err(GOOD.replace("kind: isoflop", "kind: isoflops"))
    assert "s.yaml:7:" in msg and "grid.kind" in msg and "'isoflops'" in msg and "kaplan_n" in msg


def test_missing_and_conflicting_fields():
    assert "grid" in _err("name: t\n")
    msg = _err(GOOD.replace("  budgets: [1e11, 2e11]\n", "  budgets: [1e11]\n  around_optimum: {k: 3}\n"))
    assert "fewer than around_optimum.k=3" in msg  # sizes with around_optimum is a ladder: too short here
    msg = _err(GOOD.replace("  sizes:\n", "  sizes_per_budget: {1e11: [1e4]}\n  sizes:\n"))
    assert "give one of sizes, sizes_per_budget or around_optimum" in msg
    assert "backend" in _err(GOOD + "backend: nope\n") and "local" in _err(GOOD + "backend: nope\n")
    assert "not valid YAML" in _err("name: [t\n")


def test_cli_bad_spec_exits_2_naming_field(tmp_path, cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("kind: isoflop", "kind: isoflopp"))
    p = cli("sweep", "plan", str(bad))
    assert p.returncode == 2, p.stderr
    assert "bad.yaml:7: grid.kind" in p.stderr and p.stderr.count("\n") == 1
    bad.write_text(GOOD.replace("[1e11, 2e11]", "[-1e11, 2e11]"))
    p = cli("sweep", "launch", str(bad), "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and "grid.budgets.0" in p.stderr
    assert not (tmp_path / "o").exists()  # nothing written for a bad spec


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_specs_expand(path):
    spec = load_spec(path)
    runs = expand(spec)
    assert runs and len({r.run_id for r in runs}) == len(runs)
    assert [r.run_id for r in expand(load_spec(path))] == [r.run_id for r in runs]  # deterministic


def test_shipped_specs_cover_the_grid_kinds():
    kinds = {load_spec(p).grid.kind for p in (ROOT / "sweeps").glob("*.yaml")}
    assert {"isoflop", "kaplan_n", "wsd_branches"} <= kinds
    backends = {load_spec(p).backend for p in (ROOT / "sweeps").glob("*.yaml")}
    assert {"local", "nanotron"} <= backends


def test_extend_and_repeats_fields():
    s = parse_spec(GOOD)
    assert (s.grid.extend.max_added, s.grid.extend.per_budget) == (8, 2) and s.grid.repeats is None  # the defaults
    s = parse_spec(GOOD + "  extend: {max_added: 0}\n  repeats: {seeds: [1, 2], at: all}\n")
    assert s.grid.extend.max_added == 0 and s.grid.repeats.seeds == [1, 2] and s.grid.repeats.at == "all"
    assert "grid.extend.per_budget" in _err(GOOD + "  extend: {per_budget: -1}\n")
    assert "s.yaml:12: grid.repeats.at" in _err(GOOD + "  repeats: {seeds: [1], at: everywhere}\n")
    s = parse_spec(GOOD + "  repeats: {seeds: [1], at: [optimum, largest, optimum]}\n")
    assert s.grid.repeats.points == ["optimum", "largest"]
    assert "grid.repeats.at" in _err(GOOD + "  repeats: {seeds: [1], at: [optimum, all]}\n")  # all is not a point
    assert "grid.repeats" in _err(GOOD + "  repeats: {seeds: [1], at: []}\n")
    assert "already in train.seeds" in _err(GOOD.replace("  batch: 2048", "  batch: 2048\n  seeds: [0, 1]")
                                            + "  repeats: {seeds: [1]}\n")
    assert "did you mean 'max_added'" in _err(GOOD + "  extend: {max_add: 3}\n")
