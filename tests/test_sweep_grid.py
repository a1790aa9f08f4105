"""Grid expansion: deterministic runs, budgets spent exactly, sizes centred on N*, DeepSeek rules,
WSD branches that line up with their trunk's checkpoints."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from scaling.errors import UsageError
from scaling.flops import flops_per_token
from scaling.sweep.grid import deepseek_batch_tokens, deepseek_lr, expand
from scaling.sweep.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
name: g
model: {vocab: 1024, seq_len: 128, count: non_embedding, hidden_multiple: 8, head_dim: 8, ffn_multiple: 8, aspect_ratio: 16, max_layers: 4}
train: {batch: 2048, lr: {rule: inverse_width, scale: 0.32, max: 0.01}, flops_convention: 6N_non_embedding}
"""


def spec(grid: str, base: str = BASE):
    return parse_spec(base + grid)


def test_isoflop_runs_spend_their_budget_within_half_a_batch():
    runs = expand(spec("grid: {kind: isoflop, budgets: [2e11, 1e11], sizes: [2e4, 5e3, 1e4]}"))
    assert [r.budget for r in runs] == [1e11] * 3 + [2e11] * 3  # budgets ascending, then sizes ascending
    for r in runs:
        fpt = flops_per_token(r.model_shape, "6N_non_embedding")
        assert abs(r.flops() - r.budget) <= fpt * r.batch_tokens / 2
        assert r.tokens % r.batch_tokens == 0 and r.optimizer.lr == min(0.01, 0.32 / r.shape.hidden)
    sizes = [r.non_embedding_params for r in runs[:3]]
    assert sizes == sorted(sizes)


def test_expansion_is_deterministic_across_processes():
    text = BASE + "grid: {kind: isoflop, budgets: [1e11, 3e11], around_optimum: {k: 4, spread: 6, centre: tokens_per_param, tokens_per_param: 200}}\n"
    here = [r.run_id for r in expand(parse_spec(text))]
    code = "import sys; from scaling.sweep import parse_spec, expand; print(' '.join(r.run_id for r in expand(parse_spec(sys.stdin.read()))))"
    there = subprocess.run([sys.executable, "-c", code], input=text, capture_output=True, text=True, cwd=ROOT,
                           env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True).stdout.split()
    assert here == there and len(set(here)) == len(here)


def test_around_optimum_is_centred_and_log_spaced():
    g = "grid: {kind: isoflop, budgets: [1e13], around_optimum: {k: 5, spread: 16, centre: tokens_per_param, tokens_per_param: 20}}\n"
    runs = expand(spec(g, BASE.replace("max_layers: 4", "max_layers: 8")))
    n_star = math.sqrt(1e13 / (6 * 20))
    logs = [math.log(r.non_embedding_params / n_star) for r in runs]
    assert len(runs) == 5
    assert abs(logs[2]) < 0.25 and logs[0] == pytest.approx(-math.log(4), abs=0.35) and logs[-1] == pytest.approx(math.log(4), abs=0.35)


def test_ladder_window_moves_with_the_budget():
    ladder = "[" + ", ".join(f"{{layers: 2, hidden: {h}, heads: 2, ffn: {3 * h}}}" for h in (12, 16, 20, 24, 28, 32, 40, 48)) + "]"
    g = f"grid: {{kind: isoflop, budgets: [1e11, 1e12], around_optimum: {{k: 3, centre: tokens_per_param, tokens_per_param: 200}}, sizes: {ladder}}}\n"
    runs = expand(spec(g))
    small = [r.shape.hidden for r in runs if r.budget == 1e11]
    big = [r.shape.hidden for r in runs if r.budget == 1e12]
    assert len(small) == len(big) == 3 and small != big and max(big) > max(small)


def test_planner_centre_follows_chinchilla():
    g = "grid: {kind: isoflop, budgets: [1e21], around_optimum: {k: 3, spread: 4, centre: planner, law: chinchilla}}\n"
    base = "name: c\nmodel: {vocab: 32000, seq_len: 2048}\ntrain: {batch: 1048576, lr: 0.0003}\n"
    runs = expand(spec(g, base))
    mid = runs[1]
    # Hoffmann et al. (2022), Table 3: ~2.9e9 parameters at 1e21 FLOPs (approach 1) -- within 2x either way
    assert 1e9 < mid.params < 6e9 and 5 < mid.tokens / mid.params < 60


def test_deepseek_rules_match_the_paper():
    # DeepSeek-AI (2024), eq. 1, at C = 1e20: B_opt = 1.017e6 tokens, eta_opt = 9.86e-4
    assert deepseek_batch_tokens(1e20) == pytest.approx(1.017e6, rel=2e-3)
    assert deepseek_lr(1e20) == pytest.approx(9.86e-4, rel=2e-3)
    g = "grid: {kind: kaplan_n, tokens: 2000000000, sizes: [1e8, 4e8]}\n"
    base = "name: d\nmodel: {vocab: 32000, seq_len: 2048}\ntrain: {batch: {rule: deepseek, sequences_multiple: 8}, lr: {rule: deepseek}}\n"
    a, b = expand(spec(g, base))
    assert a.batch_size % 8 == 0 and b.batch_tokens >= a.batch_tokens and b.optimizer.lr <= a.optimizer.lr


def test_kaplan_grids():
    n = expand(spec("grid: {kind: kaplan_n, tokens: 1000000, sizes: [2e4, 5e3]}\n"))
    assert len({r.tokens for r in n}) == 1 and n[0].non_embedding_params < n[1].non_embedding_params
    d = expand(spec("grid: {kind: kaplan_d, size: {layers: 2, hidden: 32, heads: 2}, tokens: [400000, 100000]}\n"))
    assert [r.tokens for r in d] == sorted(r.tokens for r in d) and len({r.shape for r in d}) == 1


def test_wsd_branches_start_at_trunk_checkpoints():
    g = "grid: {kind: wsd_branches, sizes: [{layers: 2, hidden: 32, heads: 2}], tokens: [1000000, 2000000, 4000000], cooldown_frac: 0.2}\n"
    runs = expand(spec(g, BASE.replace("flops_convention", "checkpoint_every: 50, flops_convention")))
    trunk, *branches = runs
    assert trunk.schedule.kind == "constant" and trunk.branch_of is None and len(branches) == 3
    for b in branches:
        start = b.branch_from_tokens // b.batch_tokens
        assert b.branch_of == trunk.run_id and start % trunk.checkpoint_every == 0 and start <= trunk.steps
        assert b.schedule.kind == "wsd" and b.steps - start == round(b.schedule.decay_frac * b.steps)
        # the same warmup in tokens as the trunk, so the LR agrees up to the branch point
        assert round(b.schedule.warmup_frac * b.steps) == round(trunk.schedule.warmup_frac * trunk.steps)
        assert b.tokens == pytest.approx(start * b.batch_tokens / 0.8, rel=0.02)


def test_seeds_and_explicit_runs():
    runs = expand(spec("grid: {kind: runs, runs: [{size: 1e4, tokens: 409600, lr: 0.003}, {size: 1e4, budget: 1e11}]}\n",
                       BASE.replace("flops_convention", "seeds: [0, 1], flops_convention")))
    assert len(runs) == 4 and {r.seed for r in runs} == {0, 1} and runs[0].optimizer.lr == 0.003
    assert runs[0].name.endswith("_s0") and runs[1].name.endswith("_s1")


def test_budget_too_small_for_one_batch_is_a_usage_error():
    with pytest.raises(UsageError, match="less than one batch"):
        expand(spec("grid: {kind: isoflop, budgets: [1e6], sizes: [1e5]}\n"))
