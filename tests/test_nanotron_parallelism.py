"""The parallelism planner, its memory estimate, and the refusals of what Nanotron cannot run."""

from __future__ import annotations

import pytest

from scaling.backends.nanotron import NanotronBackend
from scaling.backends.nanotron.config import plan_for
from scaling.backends.nanotron.parallelism import (
    GIB,
    check_batch,
    check_gpus,
    check_tp,
    estimate_memory,
    params_per_gpu,
    plan_parallelism,
)
from scaling.errors import UsageError
from scaling.runspec import RunSpec
from scaling.shapes import ModelShape

SHAPE = ModelShape(layers=8, hidden=512, heads=8, kv_heads=4, ffn=1536, vocab=32000, seq_len=1024)


def spec(**opts) -> RunSpec:
    extra = opts.pop("_spec", {})
    return RunSpec.model_validate({
        "shape": {"layers": 8, "hidden": 512, "heads": 8, "kv_heads": 4, "ffn": 1536, "vocab": 32000, "seq_len": 1024},
        "tokens": 10_000_000, "batch_tokens": 1024 * 64, "optimizer": {"lr": 1e-3}, "backend": "nanotron",
        "backend_options": {"gpus_per_node": 8, **opts}, **extra,
    })  # fmt: skip


def test_tp_that_does_not_shard_the_heads_is_refused():
    with pytest.raises(UsageError, match=r"backend_options.tp=8: Nanotron cannot shard kv_heads=4"):
        check_tp(SHAPE, 8)
    with pytest.raises(UsageError, match=r"use tp in \[1, 2, 4\]"):
        plan_for(spec(tp=8))
    odd_vocab = SHAPE.replace(vocab=32001)
    with pytest.raises(UsageError, match="vocab=32001"):
        check_tp(odd_vocab, 2)
    check_tp(SHAPE, 4)


def test_batch_that_does_not_divide_into_micro_batches_is_refused():
    with pytest.raises(UsageError, match=r"micro_batch=3: 8 sequences per replica .* do not divide"):
        check_batch(64, 8, 3)
    with pytest.raises(UsageError, match=r"do not split over dp=8"):
        check_batch(60, 8, 1)
    assert check_batch(64, 8, 2) == 4
    with pytest.raises(UsageError, match="micro_batch=3"):
        plan_for(spec(_spec={"micro_batch": 3}))


def test_gpu_count_that_does_not_fit_dp_tp_pp_is_refused():
    with pytest.raises(UsageError, match=r"not a multiple of tp x pp = 4 x 4"):
        check_gpus(8, None, 4, 4)
    with pytest.raises(UsageError, match=r"backend_options.dp=4: dp x tp x pp = 16 does not match 8 GPUs"):
        check_gpus(8, 4, 2, 2)
    with pytest.raises(UsageError, match="does not match 8 GPUs"):
        plan_for(spec(tp=2, pp=2, dp=4))
    assert check_gpus(16, None, 2, 2) == 4


def test_spec_features_nanotron_llama_lacks_are_refused():
    s = RunSpec.model_validate({**spec().model_dump(), "shape": {**spec().shape.model_dump(), "qkv_bias": True}})
    with pytest.raises(UsageError, match="shape.qkv_bias"):
        plan_for(s)
    with pytest.raises(UsageError, match="backend_options: unknown_opt"):
        plan_for(spec(unknown_opt=1))


def test_memory_estimate_terms():
    # 20 bytes per parameter on one GPU, none of it sharded (Rajbhandari et al. 2020 + fp32 accumulator)
    m = estimate_memory(SHAPE, tp=1, pp=1, dp=1, micro_batch=1, accumulation=1, recompute=False,
                        sequence_parallel=False, overhead_gib=0)  # fmt: skip
    assert m.params_per_gpu == SHAPE.params
    assert m.states == 20 * SHAPE.params
    # activations: s b h (10 + 24/t) per layer (Korthikanti et al. 2022, eq. 2 without the score term)
    assert m.activations == 1024 * 512 * 34 * 8
    assert m.logits == 2 * 4 * 1024 * 32000
    zero = estimate_memory(SHAPE, tp=1, pp=1, dp=8, micro_batch=1, accumulation=1, recompute=False,
                           sequence_parallel=False, zero_stage=1, overhead_gib=0)  # fmt: skip
    assert zero.states == pytest.approx(SHAPE.params * (20 - 12 * 7 / 8))
    rec = estimate_memory(SHAPE, tp=1, pp=1, dp=1, micro_batch=1, accumulation=1, recompute=True,
                          sequence_parallel=False, overhead_gib=0)  # fmt: skip
    assert rec.activations < m.activations / 4
    assert params_per_gpu(SHAPE, 2, 1) == SHAPE.params // 2


def test_planner_adds_model_parallelism_only_when_memory_demands():
    small = plan_parallelism(SHAPE, batch_size=64, gpus=8, gpus_per_node=8, gpu_memory_gib=75)
    assert (small.dp, small.tp, small.pp) == (8, 1, 1)
    big = ModelShape(layers=80, hidden=8192, heads=64, kv_heads=8, ffn=28672, vocab=128256, seq_len=4096)  # Llama 3 70B
    plan = plan_parallelism(big, batch_size=512, gpus=64, gpus_per_node=8, gpu_memory_gib=75)
    assert plan.tp * plan.pp >= 8  # 70B x 20 B/param does not fit under 8-way model parallelism
    assert plan.memory.total_gib <= 75
    assert plan.batch_size == 512
    with pytest.raises(UsageError, match="gpu_memory_gb"):
        plan_parallelism(big, batch_size=8, gpus=8, gpus_per_node=8, gpu_memory_gib=75)


def test_pipeline_plans_keep_the_bubble_small():
    plan = plan_parallelism(SHAPE, batch_size=64, gpus=4, gpus_per_node=4, gpu_memory_gib=75, pp=2, tp=1)
    assert (plan.pp - 1) / (plan.accumulation + plan.pp - 1) <= 0.2


def test_describe_for_sweep_plan():
    cols = NanotronBackend().describe(spec())
    assert cols["parallel"] == "dp8 tp1 pp1" and cols["recompute"] is False
    d = NanotronBackend().details(spec())
    assert {"dp", "tp", "pp", "micro_batch", "accumulation", "steps", "memory_gib", "gpu_hours"} <= set(d)
    assert (cols["micro_batch"], cols["accum"], cols["gpu_hours"]) == (d["micro_batch"], d["accumulation"], d["gpu_hours"])
    assert d["dp"] * d["micro_batch"] * d["accumulation"] == 64
    assert d["steps"] == 153
    # GPU-hours = matmul FLOPs / (peak x MFU): H100 989.4 TFLOP/s dense BF16, the planner's default MFU
    from scaling.flops import training_flops
    from scaling.hardware import DEFAULT_MFU

    work = training_flops(spec().model_shape, 153 * 65536, "matmul")
    assert d["gpu_hours"] == pytest.approx(work / (989.4e12 * DEFAULT_MFU) / 3600) and d["mfu"] == DEFAULT_MFU
    assert d["memory_gib"] == pytest.approx(plan_for(spec()).memory.total / GIB, abs=0.01)
    assert NanotronBackend().estimate_seconds(spec()) == pytest.approx(d["hours"] * 3600)


def test_float32_training_holds_no_master_copy_and_twice_the_activations():
    from scaling.backends.nanotron.parallelism import estimate_memory

    shape = ModelShape(layers=4, hidden=256, heads=8, vocab=1024, seq_len=128)
    kw = dict(tp=1, pp=1, dp=2, micro_batch=4, accumulation=1, recompute=False, sequence_parallel=False, overhead_gib=0)
    bf16, fp32 = estimate_memory(shape, **kw), estimate_memory(shape, **kw, dtype="float32")
    assert fp32.states == bf16.params_per_gpu * 16 and bf16.states == bf16.params_per_gpu * 20
    assert fp32.activations == 2 * bf16.activations
    zero = estimate_memory(shape, **kw, dtype="float32", zero_stage=1)
    assert zero.states == bf16.params_per_gpu * (16 - 8 / 2)  # Adam's moments sharded over dp = 2
