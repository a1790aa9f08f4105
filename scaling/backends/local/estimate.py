"""Rough wall time of a local run, for ``sweep plan`` tables (no torch import).

``seconds = tokens x flops_per_token(matmul) / rate + eval``, where the rate is a fraction of the
fp32 matmul peak of the threads used (CPU) or of a GPU's bf16 peak. The CPU fraction grows with
width, as measured by ``benchmarks/train_throughput.py`` (tiny models spend their time in the
vocabulary matmuls, norms and elementwise kernels).
"""

from __future__ import annotations

import os

from scaling.flops import flops_per_token
from scaling.runspec import RunSpec

CPU_CORE_PEAK = 60e9  # fp32 FLOP/s of one core of the 2-core machines this was measured on
GPU_RATE = 0.35 * 900e12


def cpu_efficiency(hidden: int) -> float:
    """Fraction of matmul peak the loop reaches at this width (one thread: ~37% at 64x2, ~48% at 128x4, seq 128)."""
    return min(0.55, 0.25 + 0.0018 * hidden)


def estimate_seconds(spec: RunSpec) -> float:
    shape = spec.model_shape
    device = str(spec.backend_options.get("device", "auto"))
    work = spec.steps * spec.batch_tokens * flops_per_token(shape, "matmul")
    n_evals = 1 + (spec.steps // spec.eval_every if spec.eval_every else 0)
    work += n_evals * spec.eval_tokens * flops_per_token(shape, "matmul") / 3
    if device.startswith("cuda"):
        return work / GPU_RATE
    threads = int(spec.backend_options.get("threads") or os.cpu_count() or 1)
    return work / (threads * CPU_CORE_PEAK * cpu_efficiency(shape.hidden)) + 2.0
