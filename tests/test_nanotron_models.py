"""Nanotron's model code on the CPU, where it needs no CUDA: the SDPA attention path the backend
supplies against transformers' Llama, and Nanotron's FLOP count against :mod:`scaling.flops`.

Runs in a subprocess (``tests/nanotron_sdpa_attention.py``) with import-only stand-ins for
flash_attn and triton, as the training entry point has them where flash-attn is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nanotron_classes import require_nanotron

from scaling.flops import flops_per_token
from scaling.shapes import ModelShape

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [
    ModelShape(layers=4, hidden=256, heads=8, kv_heads=4, vocab=1024, seq_len=128),
    ModelShape(layers=16, hidden=2048, heads=16, kv_heads=8, vocab=32000, seq_len=2048),
    ModelShape(layers=2, hidden=64, heads=4, vocab=320, seq_len=32, tied=True),
]


@pytest.fixture(scope="module")
def nanotron_results():
    require_nanotron()
    request = {
        "attention_kv": [2, 4],
        "flops": [{"num_layers": s.layers, "hidden_size": s.hidden, "num_heads": s.heads, "num_key_value_heads": s.n_kv_heads,
                   "vocab_size": s.vocab, "seq_len": s.seq_len, "ffn_hidden_size": s.d_ffn} for s in SHAPES],
    }  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "nanotron_sdpa_attention.py"), json.dumps(request)],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("i,kv", [(0, 2), (1, 4)])
def test_sdpa_path_attention_is_transformers_llama_attention(nanotron_results, i, kv):
    """Same weights, same output: the rotary convention and the q/k/v layout of the path that
    trains without flash-attn are those of the transformers Llama its checkpoints convert to."""
    r = nanotron_results["attention"][i]
    assert r["max_abs_diff"] <= 1e-6 * r["scale"], r


@pytest.mark.parametrize("i", range(len(SHAPES)))
def test_nanotron_flop_count_against_ours(nanotron_results, i):
    """Nanotron's ``get_flops`` counts every matmul of the non-embedding weights and the output
    head, as ``matmul`` does, but attention over the whole context (``12 L s d_q`` per token, no
    causal halving, where ``matmul`` takes ``6 L s d_q``) and no norm weights (``2 d`` per layer
    plus the final norm, which ``N_non_embedding`` includes). With those two terms moved, the
    counts are equal."""
    s = SHAPES[i]
    theirs_per_token = nanotron_results["flops"][i] / s.seq_len
    norms = 2 * s.hidden * s.layers + s.hidden
    ours = flops_per_token(s, "matmul") - 6 * norms + 6 * s.layers * s.seq_len * s.q_dim
    assert theirs_per_token == pytest.approx(ours, rel=1e-12)
