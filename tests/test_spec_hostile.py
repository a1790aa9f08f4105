"""Hostile specs: an alias bomb, a recursive alias, huge, binary or deeply nested files are refused
with one line (exit 2) before anything is expanded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scaling.errors import UsageError
from scaling.sweep.spec import load_spec, parse_spec

MAX_SPEC_BYTES = 4 << 20  # the loader's limit (scaling.sweep.spec.MAX_SPEC_BYTES)

ROOT = Path(__file__).resolve().parents[1]


def alias_bomb(depth: int, width: int = 9, under: str = "") -> str:
    """A "billion laughs" spec: each level lists the previous one ``width`` times."""
    lines = ["name: bomb", "grid: {kind: runs, runs: [{size: 1.0e6, tokens: 1000}]}"]
    indent = ""
    if under:
        lines.append(f"{under}:")
        indent = "  "
    lines.append(f'{indent}l0: &l0 [{", ".join(["lol"] * width)}]')
    for i in range(1, depth + 1):
        lines.append(f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


# Runs in a child with a 1 GB address-space cap (so a regression fails fast instead of eating the
# machine): prints the seconds the loader took, its exit, and the child's peak RSS growth.
_CHILD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from scaling.errors import UsageError
from scaling.sweep.spec import load_spec
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
try:
    load_spec(sys.argv[1]); outcome = "loaded"
except UsageError as e:
    outcome = "refused: " + str(e)
except MemoryError:
    outcome = "MemoryError"
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"s": time.perf_counter() - t, "outcome": outcome, "grown_kb": grown}))
"""


@pytest.mark.parametrize("under", ["", "pipeline"])
def test_alias_bomb_refused_fast_and_small(tmp_path, under):
    spec = tmp_path / "bomb.yaml"
    spec.write_text(alias_bomb(7, under=under))
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(spec)], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["outcome"].startswith("refused: bomb.yaml: YAML aliases expand to"), got
    assert got["s"] < 1.0 and got["grown_kb"] < 100_000, got


def test_alias_bomb_exits_2_on_one_line(tmp_path, cli):
    spec = tmp_path / "bomb.yaml"
    spec.write_text(alias_bomb(5))  # 9^6 values: small enough that a regression still ends soon
    proc = cli("sweep", "plan", str(spec), timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "aliases expand" in proc.stderr and "fewer nested aliases" in proc.stderr


def test_modest_aliases_still_work():
    text = """\
name: t
grid:
  kind: runs
  runs:
    - &r {size: 1.0e6, tokens: 1000}
    - {<<: *r, tokens: 2000}
    - *r
"""
    spec = parse_spec(text)
    assert [r.tokens for r in spec.grid.runs] == [1000, 2000, 1000]


def test_recursive_alias_refused_with_line():
    with pytest.raises(UsageError, match=r"s.yaml:3: a YAML alias refers to itself"):
        parse_spec("name: t\ngrid: {kind: runs, runs: [{size: 1.0e6, tokens: 1}]}\nloop: &x [1, *x]\n", "s.yaml")


@pytest.mark.parametrize("where", ["x: {}", "grid: {{kind: runs, runs: {}}}", "backend_options: {{a: {}}}"])
def test_deep_nesting_refused(where):
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(UsageError):
        parse_spec("name: t\n" + where.format(deep) + "\n", "s.yaml")


def test_oversized_and_binary_files_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("name: t\n" + "#" * MAX_SPEC_BYTES + "\n")
    with pytest.raises(UsageError, match=r"big.yaml: [\d,]+ bytes, more than"):
        load_spec(big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: t\n\xff\xfe\x00garbage")
    with pytest.raises(UsageError, match="bin.yaml: byte 8 is not UTF-8"):
        load_spec(binary)
