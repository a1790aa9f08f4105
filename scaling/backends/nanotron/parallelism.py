"""Data/tensor/pipeline parallelism, micro-batch and recomputation for one Nanotron run.

:func:`plan_parallelism` enumerates every ``(tp, pp, micro_batch, recompute)`` that Nanotron can
run for a shape on ``gpus`` devices, estimates the memory of each per GPU and keeps the first
that fits in this order of preference: fewest model-parallel GPUs (``tp x pp``: communication
and the pipeline bubble cost most), then no activation recomputation (it repeats the forward,
about a third more compute), then tensor before pipeline parallelism (within a node), then a pipeline
bubble ``(pp - 1) / (accumulation + pp - 1)`` of at most 20%, then the largest micro-batch
(fewer, larger matmuls).

Memory per GPU (bytes), with ``P`` the parameters held by the busiest pipeline stage after
tensor-parallel sharding:

* states: ``P x (2 bf16 weights + 2 bf16 grads + 4 fp32 grad accumulator + 4 fp32 master
  + 8 Adam moments)`` = 20 B/param; ZeRO-1 divides the 12 fp32 optimizer bytes by ``dp``
  (Rajbhandari et al. 2020, sec. 5.1: 16 B/param with fp16 grads; Nanotron adds the fp32
  gradient accumulator when ``accumulate_grad_in_fp32``).
* activations per layer and micro-batch of ``b`` sequences of ``s`` tokens, hidden ``h``:
  ``s b h (10 + 24 / t)`` bytes with tensor parallelism ``t`` and flash attention (no
  ``5 a s / h`` score term; Korthikanti et al. 2022, eq. 2); ``s b h x 34 / t`` with sequence
  parallelism (their eq. 3); full recomputation keeps only the layer input, ``2 s b h``, plus
  one layer's full activations. A 1F1B pipeline stage holds up to ``pp`` micro-batches.
* logits: ``s b V / t x 4`` bytes (fp32 for the loss) twice (logits and their gradient).
* a fixed ``overhead_gib`` for the CUDA context, NCCL buffers and fragmentation.

With ``dtype: float32`` the states are 16 B/param (fp32 weights, grads, Adam moments; no master
copy and no accumulator, which Nanotron refuses for fp32 parameters), ZeRO-1 shards the 8 bytes
of moments, and activations take twice the bytes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scaling.errors import UsageError
from scaling.shapes import ModelShape

GIB = 1024**3
STATE_BYTES = 20  # bf16 weights + bf16 grads + fp32 grad accumulator + fp32 master + Adam m, v
OPTIMIZER_BYTES = 12  # the part ZeRO-1 shards over dp: fp32 master + Adam m, v
# float32 training: fp32 weights + grads + Adam m, v (no master copy, no accumulator), of which
# ZeRO-1 shards the moments; activations take twice the bytes of the bf16 formulas
FP32_STATE_BYTES, FP32_OPTIMIZER_BYTES = 16, 8


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU on the busiest pipeline stage."""

    params_per_gpu: int
    states: float
    activations: float
    logits: float
    overhead: float

    @property
    def total(self) -> float:
        return self.states + self.activations + self.logits + self.overhead

    @property
    def total_gib(self) -> float:
        return self.total / GIB

    def to_dict(self) -> dict[str, float]:
        d = {k: (v / GIB if k != "params_per_gpu" else v) for k, v in asdict(self).items()}
        d = {("params_per_gpu" if k == "params_per_gpu" else f"{k}_gib"): v for k, v in d.items()}
        d["total_gib"] = self.total_gib
        return d


@dataclass(frozen=True)
class ParallelPlan:
    dp: int
    tp: int
    pp: int
    micro_batch: int
    accumulation: int
    recompute: bool
    sequence_parallel: bool
    memory: MemoryEstimate
    gpu_memory_gib: float

    @property
    def gpus(self) -> int:
        return self.dp * self.tp * self.pp

    @property
    def batch_size(self) -> int:
        return self.dp * self.micro_batch * self.accumulation

    def to_dict(self) -> dict[str, object]:
        return {
            "dp": self.dp,
            "tp": self.tp,
            "pp": self.pp,
            "gpus": self.gpus,
            "micro_batch": self.micro_batch,
            "accumulation": self.accumulation,
            "recompute": self.recompute,
            "sequence_parallel": self.sequence_parallel,
            "gpu_memory_gib": self.gpu_memory_gib,
            "memory": self.memory.to_dict(),
        }


# ---- validation: what Nanotron can shard ------------------------------------------------------


def check_tp(shape: ModelShape, tp: int) -> None:
    """Nanotron's Llama shards heads, KV heads, FFN and vocabulary over ``tp`` ranks.

    Its Config asserts ``heads % tp == 0`` and ``kv_heads >= tp``; column-parallel layers need
    every output chunk (q, k, v; gate, up; vocabulary) divisible by ``tp``. A vocabulary that does
    not divide would be padded, and the trained model would no longer have the planned
    parameter count.
    """
    if tp < 1:
        raise UsageError(f"backend_options.tp={tp}: must be a positive integer")
    problems = []
    if shape.heads % tp:
        problems.append(f"heads={shape.heads}")
    if shape.n_kv_heads % tp:
        problems.append(f"kv_heads={shape.n_kv_heads}")
    if shape.d_ffn % tp:
        problems.append(f"ffn={shape.d_ffn}")
    if shape.vocab % tp:
        problems.append(f"vocab={shape.vocab}")
    if problems:
        ok = [t for t in (1, 2, 4, 8) if _tp_ok(shape, t)]
        raise UsageError(
            f"backend_options.tp={tp}: Nanotron cannot shard {', '.join(problems)} over {tp} ranks "
            f"(each must be divisible by tp); use tp in {ok} or change the shape"
        )


def _tp_ok(shape: ModelShape, tp: int) -> bool:
    return all(x % tp == 0 for x in (shape.heads, shape.n_kv_heads, shape.d_ffn, shape.vocab))


def check_pp(shape: ModelShape, pp: int) -> None:
    if pp < 1 or pp > shape.layers:
        raise UsageError(f"backend_options.pp={pp}: must be between 1 and layers={shape.layers}")


def check_gpus(gpus: int, dp: int | None, tp: int, pp: int) -> int:
    """``dp x tp x pp`` must use exactly the GPUs asked for; returns dp."""
    if gpus % (tp * pp):
        raise UsageError(
            f"backend_options: {gpus} GPUs (nodes x gpus_per_node) is not a multiple of tp x pp = "
            f"{tp} x {pp}; choose tp and pp whose product divides {gpus}"
        )
    derived = gpus // (tp * pp)
    if dp is not None and dp != derived:
        raise UsageError(
            f"backend_options.dp={dp}: dp x tp x pp = {dp * tp * pp} does not match {gpus} GPUs "
            f"(nodes x gpus_per_node); use dp={derived} or change the GPU count"
        )
    return derived


def check_batch(batch_size: int, dp: int, micro_batch: int) -> int:
    """Sequences per step must split into ``dp`` replicas of whole micro-batches; returns accumulation."""
    if micro_batch < 1:
        raise UsageError(f"micro_batch={micro_batch}: must be a positive integer")
    per_replica, rem = divmod(batch_size, dp)
    if rem:
        raise UsageError(
            f"batch_tokens: {batch_size} sequences per step do not split over dp={dp} data-parallel "
            f"replicas; use a batch of a multiple of {dp} sequences"
        )
    accumulation, rem = divmod(per_replica, micro_batch)
    if rem or accumulation < 1:
        fits = [m for m in _divisors(per_replica)]
        raise UsageError(
            f"micro_batch={micro_batch}: {per_replica} sequences per replica (batch {batch_size} / dp {dp}) "
            f"do not divide into micro-batches of {micro_batch}; use one of {fits[:12]}"
        )
    return accumulation


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


# ---- memory -------------------------------------------------------------------------------------


def params_per_gpu(shape: ModelShape, tp: int, pp: int) -> int:
    """Parameters on the busiest stage: ``ceil(L / pp)`` layers plus the vocabulary matrices
    (embedding on the first stage, head on the last; both on the one stage when ``pp = 1``)."""
    layers = math.ceil(shape.layers / pp)
    vocab_mats = shape.embedding_params if pp == 1 else shape.vocab * shape.hidden
    return int((layers * shape.params_per_layer + vocab_mats + shape.hidden) / tp)


def estimate_memory(
    shape: ModelShape,
    *,
    tp: int,
    pp: int,
    dp: int,
    micro_batch: int,
    accumulation: int,
    recompute: bool,
    sequence_parallel: bool,
    zero_stage: int = 0,
    overhead_gib: float = 3.0,
    dtype: str = "bfloat16",
) -> MemoryEstimate:
    """Bytes per GPU (see the module docstring for each term and its source)."""
    p = params_per_gpu(shape, tp, pp)
    fp32 = dtype == "float32"
    state, shardable = (FP32_STATE_BYTES, FP32_OPTIMIZER_BYTES) if fp32 else (STATE_BYTES, OPTIMIZER_BYTES)
    per_param = state - (shardable * (1 - 1 / dp) if zero_stage >= 1 else 0)
    states = p * per_param
    s, b, h = shape.seq_len, micro_batch, shape.hidden
    full_layer = s * b * h * (34 / tp if sequence_parallel else 10 + 24 / tp) * (2 if fp32 else 1)
    layers = math.ceil(shape.layers / pp)
    per_microbatch = (2 * s * b * h * layers + full_layer) if recompute else full_layer * layers
    in_flight = min(pp, accumulation)  # 1F1B: the first stage holds up to pp micro-batches
    activations = per_microbatch * in_flight
    logits = 2 * 4 * s * b * shape.vocab / tp
    return MemoryEstimate(p, states, activations, logits, overhead_gib * GIB)


# ---- the planner ----------------------------------------------------------------------------------


def plan_parallelism(
    shape: ModelShape,
    *,
    batch_size: int,
    gpus: int,
    gpus_per_node: int,
    gpu_memory_gib: float,
    tp: int | None = None,
    pp: int | None = None,
    dp: int | None = None,
    micro_batch: int | None = None,
    recompute: bool | None = None,
    zero_stage: int = 0,
    overhead_gib: float = 3.0,
    dtype: str = "bfloat16",
) -> ParallelPlan:
    """The preferred plan that fits (module docstring); fixed choices are validated, not changed.

    Raises :class:`UsageError` naming the field when a fixed choice cannot work or nothing fits.
    """
    if gpus < 1:
        raise UsageError(f"backend_options: gpus={gpus}: nodes x gpus_per_node must be at least 1")
    if tp is not None:
        check_tp(shape, tp)
    if pp is not None:
        check_pp(shape, pp)
    if tp is not None and pp is not None:
        check_gpus(gpus, dp, tp, pp)
    if dp is not None and gpus % dp:
        raise UsageError(f"backend_options.dp={dp}: does not divide {gpus} GPUs (nodes x gpus_per_node)")
    tps = [tp] if tp is not None else [t for t in (1, 2, 4, 8) if t <= gpus_per_node and _tp_ok(shape, t)]
    pps = [pp] if pp is not None else [q for q in range(1, shape.layers + 1) if gpus % q == 0]
    candidates: list[tuple[tuple, ParallelPlan]] = []
    first_error: UsageError | None = None
    for t in tps:
        for q in pps:
            if gpus % (t * q) or (dp is not None and dp * t * q != gpus):
                continue
            d = gpus // (t * q)
            if batch_size % d:
                first_error = first_error or UsageError(
                    f"batch_tokens: {batch_size} sequences per step do not split over dp={d} replicas "
                    f"(tp={t}, pp={q} on {gpus} GPUs); use a batch of a multiple of {d} sequences"
                )
                continue
            per_replica = batch_size // d
            mbs_options = [micro_batch] if micro_batch is not None else sorted(_divisors(per_replica), reverse=True)
            for m in mbs_options:
                try:
                    acc = check_batch(batch_size, d, m)
                except UsageError as e:
                    first_error = first_error or e
                    continue
                for r in [recompute] if recompute is not None else [False, True]:
                    sp = t > 1 and shape.seq_len % t == 0
                    mem = estimate_memory(
                        shape, tp=t, pp=q, dp=d, micro_batch=m, accumulation=acc, recompute=r,
                        sequence_parallel=sp, zero_stage=zero_stage, overhead_gib=overhead_gib, dtype=dtype,
                    )  # fmt: skip
                    plan = ParallelPlan(d, t, q, m, acc, r, sp, mem, gpu_memory_gib)
                    bubble = (q - 1) / (acc + q - 1)  # 1F1B idle fraction (Narayanan et al. 2021)
                    key = (t * q, r, q, bubble > 0.2, -m)
                    candidates.append((key, plan))
    if not candidates:
        raise first_error or UsageError(
            f"backend_options: no dp x tp x pp fits {gpus} GPUs for this shape "
            f"(tp choices {tps}, pp choices {pps}); change nodes, gpus_per_node, tp or pp"
        )
    fitting = [c for c in candidates if c[1].memory.total_gib <= gpu_memory_gib]
    if not fitting:
        best = min(candidates, key=lambda c: c[1].memory.total)[1]
        raise UsageError(
            f"backend_options.gpu_memory_gb={gpu_memory_gib:g}: no plan fits; the smallest needs "
            f"{best.memory.total_gib:.1f} GiB per GPU (tp={best.tp}, pp={best.pp}, micro_batch="
            f"{best.micro_batch}, recompute={best.recompute}); add GPUs or allow larger tp/pp"
        )
    return min(fitting, key=lambda c: c[0])[1]
