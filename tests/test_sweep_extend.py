"""Adaptive IsoFLOP sweeps: sizes added beyond the edge a budget's minimum leans on, in ladder order,
up to the caps; repeats at the optimum; every addition logged with its reason; a kill loses nothing.

Real sweeps through the launcher with the test backend ``toy`` (tests/sweep_backends.py), whose
final loss follows ``E + A/N^alpha + B/D^beta`` (option ``law``), so each budget's valley sits where
the test puts it: on this ladder the optimum is near 55k parameters at 1e11 FLOPs and 90k at 3e11.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scaling.store import SweepStore
from scaling.sweep import extend_folder, launch, load_spec, status
from scaling.sweep.added import LOG, read_log
from scaling.sweep.extend import LARGER, SMALLER, side_to_extend
from tests.sweep_backends import wait_for

ROOT = Path(__file__).resolve().parents[1]
LAW = "{E: 1.7, A: 400, alpha: 0.34, B: 410, beta: 0.28}"
HIDDEN = (16, 24, 32, 48, 64, 96, 128)  # total N: 14,928 26,232 43,168 80,112 139,584 270,816 492,160


def spec_file(tmp_path: Path, *, tokens_per_param: float = 1e6, budgets: str = "[1e11, 3e11]", extend: str = "",
              repeats: str = "", noise: float = 0.0, hidden=HIDDEN, step_s: float = 0.0, k: int = 3,
              executor: str = "debug") -> Path:
    """A toy IsoFLOP spec whose window (``k`` sizes of the ladder around ``sqrt(C / 6r)``) starts at the
    smallest sizes (``tokens_per_param`` large) or the largest (small)."""
    law = LAW.replace("}", f", noise: {noise}}}")
    sizes = "\n".join(f"    - {{layers: 2, hidden: {h}, heads: 2}}" for h in hidden)
    tmp_path.mkdir(parents=True, exist_ok=True)
    p = tmp_path / "toy.yaml"
    p.write_text(f"""\
name: toyext
backend: toy
backend_options: {{law: {law}, step_s: {step_s}}}
model: {{vocab: 256, seq_len: 64, count: total}}
train: {{batch: 32768, lr: 0.1, checkpoint_every: 2}}
grid:
  kind: isoflop
  budgets: {budgets}
  around_optimum: {{k: {k}, centre: tokens_per_param, tokens_per_param: {tokens_per_param}}}
  sizes:
{sizes}
{extend}{repeats}executor: {{kind: {executor}, retries: 0, poll_s: 0.1}}
""")
    return p


def run_extension(tmp_path: Path, **kw) -> tuple[Path, dict]:
    out = tmp_path / "out"
    launch(spec_file(tmp_path, **kw), out, progress=False)
    return out, extend_folder(out, progress=False)


def added(result: dict) -> list[str]:
    return [a["name"] for a in result["added"]]


def states(result: dict) -> dict[float, str]:
    return {b["budget"]: b["state"] for b in result["budgets"]}


def _points(vertex: float, sizes=(1e4, 2e4, 4e4, 8e4, 1.6e5)) -> pd.DataFrame:
    n = np.array(sizes)
    return pd.DataFrame({"params": n, "tokens": 1e9 / n, "loss": 3 + 0.1 * (np.log(n) - math.log(vertex)) ** 2})


def test_side_to_extend_reads_the_valley():
    assert side_to_extend(1e9, _points(5e3))[0] == SMALLER  # lowest loss at the smallest size
    assert side_to_extend(1e9, _points(5e5))[0] == LARGER
    side, why = side_to_extend(1e9, _points(1.6e4))  # between the two smallest: one size below the minimum
    assert side == SMALLER and "within one size of the smallest" in why
    assert side_to_extend(1e9, _points(1e5))[0] == LARGER
    side, why = side_to_extend(1e9, _points(4e4))
    assert side is None and why.startswith("bracketed")
    flat = _points(4e4).assign(loss=lambda f: 3 - 0.01 * (np.log(f["params"]) - math.log(3e4)) ** 2)
    assert side_to_extend(1e9, flat)[0] == LARGER  # no valley: toward the lower edge


def test_extension_adds_the_next_ladder_sizes_beyond_the_edge_until_bracketed(tmp_path, cli):
    out, res = run_extension(tmp_path, extend="  extend: {per_budget: 3}\n")  # windows 16/24/32: valleys to the right
    assert added(res) == ["C1e11_L2H48", "C3e11_L2H48", "C1e11_L2H64", "C3e11_L2H64", "C3e11_L2H96"]
    assert states(res) == {1e11: "bracketed", 3e11: "bracketed"}
    assert [a["round"] for a in res["added"]] == [1, 1, 2, 2, 3] and {a["side"] for a in res["added"]} == {LARGER}
    assert res["done"] == res["runs"] == 11 and res["failed"] == 0
    # each added run carries its reason: in its spec.json, the study's extend.json, sweep status, load_runs
    store = SweepStore(out)
    by_name = {rd.read_spec()["name"]: rd.read_spec() for rd in store.runs()}
    assert by_name["C1e11_L2H64"]["added"].startswith("extend larger: the minimum")
    assert by_name["C1e11_L2H16"]["added"] is None
    assert [e["name"] for e in json.loads((out / LOG).read_text())["added"]] == added(res)
    rows = {r["name"]: r for r in status(out)["runs"]}
    assert rows["C3e11_L2H96"]["added"].startswith("extend larger") and rows["C3e11_L2H16"]["added"] is None
    shown = cli("sweep", "status", str(out), check=True).stdout
    assert shown.count("extend larger") == 5
    df = __import__("scaling").load_runs(out)
    assert df["added"].notna().sum() == 5
    # the budget that turned interior stopped: 1e11 gained two sizes, 3e11 three
    assert [b["added"] for b in res["budgets"]] == [2, 3]
    again = extend_folder(out, progress=False)  # nothing left to add: the same log, no new runs
    assert added(again) == added(res) and again["runs"] == 11


def test_extension_toward_smaller_sizes(tmp_path):
    _, res = run_extension(tmp_path, tokens_per_param=1e-3, budgets="[1e11]", extend="  extend: {per_budget: 8}\n")
    # the window is the three largest sizes (64/96/128): sizes below it are added, nearest first
    assert added(res) == ["C1e11_L2H48", "C1e11_L2H32", "C1e11_L2H24"]
    assert {a["side"] for a in res["added"]} == {SMALLER} and states(res) == {1e11: "bracketed"}


def test_extension_stops_at_the_caps(tmp_path):
    _, res = run_extension(tmp_path, extend="  extend: {per_budget: 1}\n")
    assert added(res) == ["C1e11_L2H48", "C3e11_L2H48"] and states(res) == {1e11: "capped", 3e11: "capped"}
    assert all("grid.extend.per_budget reached" in b["reason"] for b in res["budgets"])
    _, res = run_extension(tmp_path / "b", extend="  extend: {max_added: 3}\n")
    assert added(res) == ["C1e11_L2H48", "C3e11_L2H48", "C1e11_L2H64"]
    assert states(res) == {1e11: "bracketed", 3e11: "capped"} and "max_added" in res["budgets"][1]["reason"]
    _, res = run_extension(tmp_path / "c", extend="  extend: {max_added: 0}\n")
    assert added(res) == [] and res["runs"] == 6 and set(states(res).values()) == {"capped"}


def test_extension_stops_where_the_ladder_ends(tmp_path):
    _, res = run_extension(tmp_path, budgets="[3e11]", hidden=HIDDEN[:4], extend="  extend: {per_budget: 8}\n")
    assert added(res) == ["C3e11_L2H48"] and states(res) == {3e11: "ladder ends"}
    assert "no larger size in the ladder" in res["budgets"][0]["reason"]


def test_repeats_at_the_optimum_and_everywhere(tmp_path):
    _, res = run_extension(tmp_path, extend="  extend: {max_added: 0}\n", repeats="  repeats: {seeds: [1, 2]}\n", noise=0.01)
    # after the first pass the best size of both budgets is the largest of the window (32)
    assert added(res) == ["C1e11_L2H32_s1", "C1e11_L2H32_s2", "C3e11_L2H32_s1", "C3e11_L2H32_s2"]
    assert all(a["kind"] == "repeat" and a["reason"].startswith("repeat") for a in res["added"])
    assert res["done"] == 10
    _, res = run_extension(tmp_path / "all", budgets="[1e11]", extend="  extend: {max_added: 0}\n",
                           repeats="  repeats: {seeds: [5], at: all}\n")
    assert added(res) == ["C1e11_L2H16_s5", "C1e11_L2H24_s5", "C1e11_L2H32_s5"]


def test_repeats_at_the_optimum_and_the_largest_size(tmp_path):
    """``at: [optimum, largest, smallest]``: each named point once (the best size of the window 16, 24,
    32 is its largest, so it is repeated once), ascending in N; the reason says what each was chosen as."""
    _, res = run_extension(tmp_path, budgets="[1e11]", extend="  extend: {max_added: 0}\n",
                           repeats="  repeats: {seeds: [4], at: [optimum, largest, smallest]}\n")
    assert added(res) == ["C1e11_L2H16_s4", "C1e11_L2H32_s4"], added(res)
    reasons = [a["reason"] for a in res["added"]]
    assert "the smallest size" in reasons[0] and "the best size and the largest size" in reasons[1], reasons
    _, res = run_extension(tmp_path / "small", budgets="[1e11]", extend="  extend: {max_added: 0}\n",
                           repeats="  repeats: {seeds: [4], at: smallest}\n")
    assert added(res) == ["C1e11_L2H16_s4"]


def test_extension_then_repeats_at_the_extended_optimum(tmp_path):
    _, res = run_extension(tmp_path, budgets="[3e11]", repeats="  repeats: {seeds: [7]}\n")
    # the first pass's best was 32 (the window's edge); after the extension it is 48, nearest the 90k optimum
    assert added(res) == ["C3e11_L2H48", "C3e11_L2H64", "C3e11_L2H48_s7"]


def test_a_budget_added_to_a_repeated_study_gets_its_own_repeats(tmp_path):
    """A study whose repeats are done, then a larger budget launched into it (``launch --add``): the
    next extension repeats the new budget's best size and leaves the first budget's as they were."""
    out, res = run_extension(tmp_path, budgets="[1e11]", extend="  extend: {max_added: 0}\n",
                             repeats="  repeats: {seeds: [1, 2]}\n", noise=0.01)
    assert added(res) == ["C1e11_L2H32_s1", "C1e11_L2H32_s2"]
    wider = spec_file(tmp_path / "wider", budgets="[1e11, 3e11]", extend="  extend: {max_added: 0}\n",
                      repeats="  repeats: {seeds: [1, 2]}\n", noise=0.01)
    launch(wider, out, progress=False, add=True)
    res = extend_folder(out, progress=False)
    assert added(res) == ["C1e11_L2H32_s1", "C1e11_L2H32_s2", "C3e11_L2H32_s1", "C3e11_L2H32_s2"], added(res)
    assert res["done"] == 10
    assert added(extend_folder(out, progress=False)) == added(res)  # once per budget: a rerun adds nothing


@pytest.mark.slow
def test_a_kill_during_extension_loses_nothing_and_a_rerun_carries_on(tmp_path):
    spec = spec_file(tmp_path, step_s=0.02, executor="local", extend="  extend: {per_budget: 3}\n")
    _, uninterrupted = run_extension(tmp_path / "ref", extend="  extend: {per_budget: 3}\n")
    out = tmp_path / "out"
    launch(spec, out, progress=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ["PYTHONPATH"]}
    proc = subprocess.Popen([sys.executable, "-m", "scaling", "sweep", "extend", str(out), "--max-parallel", "2",
                             "--quiet"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = SweepStore(out)
    names = {a["name"] for a in uninterrupted["added"]}

    def mid_round_two() -> bool:  # round 2 logged, one of its runs part-way
        log = read_log(out)
        return log["rounds"] >= 2 and any(len(rd.read_metrics()) >= 3 and not rd.is_done() for rd in store.runs())

    wait_for(mid_round_two, timeout=120, what="the second round of the extension to be under way")
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its runs
    proc.wait()
    done_before = {rd.read_spec()["name"] for rd in store.runs() if rd.is_done()}
    first = {rd.read_spec()["name"]: int((rd.path / "toy_attempts").read_text()) for rd in store.runs()
             if rd.is_done()}
    res = extend_folder(out, progress=False, executor="local")
    assert {a["name"] for a in res["added"]} == names and res["done"] == res["runs"] == 11
    for rd in store.runs():
        name = rd.read_spec()["name"]
        if name in done_before:
            assert int((rd.path / "toy_attempts").read_text()) == first[name] == 1, name  # not run again
        steps = [int(m["step"]) for m in rd.read_metrics()]
        assert steps == list(range(1, len(steps) + 1)), name  # every step once, in order
    assert load_spec(out / "sweep.yaml").grid.extend.per_budget == 3


def test_a_grid_without_a_ladder_continues_its_own_log_spacing():
    from scaling.sweep import parse_spec
    from scaling.sweep.extend import ladder, next_shape

    spec = parse_spec("""\
name: t
model: {vocab: 256, seq_len: 64, count: total}
grid: {kind: isoflop, budgets: [1e12], around_optimum: {k: 3, spread: 4, centre: tokens_per_param, tokens_per_param: 20}}
""")
    assert ladder(spec) == []
    present = [192_960, 406_464, 705_408]  # three shapes of the family, as it resolves 2e5, 4e5 and 8e5
    up = next_shape(spec, present, LARGER, []).count("total")
    down = next_shape(spec, present, SMALLER, []).count("total")
    # the grid's step is 4^(1/2) = 2x: the next shape of the family beyond each edge, as it rounds it
    assert 705_408 < up < 4 * 705_408 and 192_960 / 4 < down < 192_960
