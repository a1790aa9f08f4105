"""WSD-branch designs: a branch is priced at its cooldown (the trunk paid for the rest)."""

from __future__ import annotations

import pytest

from scaling.sweep.grid import expand
from scaling.sweep.spec import parse_spec
from scaling.timing import TimingModel

WSD = """
name: wsd
backend: local
data: {source: builtin:default, tokenizer: bpe}
model: {vocab: 1024, seq_len: 128, count: non_embedding}
train: {batch: 2048, lr: {rule: inverse_width, scale: 0.32, max: 0.01}, checkpoint_every: 50,
        flops_convention: 6N_non_embedding}
grid:
  kind: wsd_branches
  sizes: [{layers: 2, hidden: 16, heads: 2, ffn: 48}, {layers: 2, hidden: 32, heads: 2, ffn: 96}]
  tokens: [512000, 1024000, 2048000]
  cooldown_frac: 0.2
executor: {kind: local}
"""


def test_a_branch_costs_its_cooldown_only():
    """The trunk runs once to the last branch point; each branch trains from its trunk's
    checkpoint, so it pays for its last ``cooldown_frac`` of tokens (FLOPs and seconds)."""
    runs = expand(parse_spec(WSD, "wsd.yaml"))
    trunks = [r for r in runs if r.branch_of is None]
    branches = [r for r in runs if r.branch_of is not None]
    assert len(trunks) == 2 and len(branches) == 6
    for b in branches:
        assert b.start_step * b.batch_tokens == b.branch_from_tokens
        assert b.trained_steps == pytest.approx(0.2 * b.steps, abs=1)
        assert b.trained_flops() == pytest.approx(b.flops() * b.trained_steps / b.steps)
    for t in trunks:
        assert t.trained_steps == t.steps and t.trained_flops() == t.flops()
    timing = TimingModel(step_overhead_s=0.01, s_per_flop=1e-11, startup_s=2.0)
    b = branches[-1]
    assert timing.train_seconds(b) == pytest.approx(b.trained_steps * timing.step_seconds(b) + timing.eval_seconds(b))
    assert timing.train_seconds(b) < 0.3 * b.steps * timing.step_seconds(b)
