"""Accelerator peak throughput, model FLOPs utilisation (MFU), GPU-hours, wall clock and cost.

``GPU-hours = C / (peak x MFU x 3600)``. Peaks are dense BF16 tensor-core FLOP/s from the
vendors' datasheets (the larger figures printed beside them assume 2:4 sparsity and are never
reached by dense training). The default MFU, 0.40, is what large dense runs report: Llama 3 405B
reached 38-43% on H100s (Llama Team 2024, Table 4), Megatron-LM up to ~47% on H100s.
Example: 3.8e25 FLOPs at 40% MFU on H100 SXM = 26.7M GPU-hours, $53M at $2/GPU-hour, 68 days
on 16,384 GPUs.

Once runs have trained, their measured MFU replaces the assumption: :func:`achieved_mfu` of each
finished run, and :func:`fit_mfu` over them (MFU grows with model size: small models leave the
tensor cores idle more of the time), read at the size of each run still to train.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_MFU = 0.40


@dataclass(frozen=True)
class GPU:
    name: str
    peak_flops: float  # dense BF16 FLOP/s (FP16 on GPUs without BF16)
    source: str
    device_names: tuple[str, ...] = ()  # fragments of torch.cuda.get_device_name(), lower case


# Dense BF16 peaks (datasheet figures; the sparse figure is twice these). Order matters for
# device-name matching: the more specific name first ("h100 pcie" before "h100").
GPUS: dict[str, GPU] = {
    g.name: g
    for g in (
        GPU("h100-pcie", 756.0e12, "NVIDIA H100 PCIe datasheet: 1,513 TFLOP/s BF16 with sparsity", ("h100 pcie",)),
        GPU("h100", 989.4e12, "NVIDIA H100 SXM datasheet: 1,979 TFLOP/s BF16 with sparsity", ("h100",)),
        GPU("h200", 989.4e12, "NVIDIA H200 SXM datasheet: same tensor cores as H100 SXM", ("h200",)),
        GPU("a100", 312.0e12, "NVIDIA A100 datasheet: 312 TFLOP/s BF16 dense", ("a100",)),
        GPU("b200", 2250.0e12, "NVIDIA HGX B200 datasheet: 4.5 PFLOP/s BF16 with sparsity", ("b200",)),
        GPU("mi300x", 1307.4e12, "AMD Instinct MI300X datasheet: 1,307.4 TFLOP/s BF16 dense", ("mi300x",)),
        GPU("l40s", 362.05e12, "NVIDIA L40S datasheet: 733 TFLOP/s BF16 with sparsity", ("l40s",)),
        GPU("l4", 121.0e12, "NVIDIA L4 datasheet: 242 TFLOP/s BF16 with sparsity", ("l4",)),
        GPU("a10g", 70.0e12, "NVIDIA A10G (AWS G5): 70 TFLOP/s BF16 dense", ("a10g",)),
        GPU("rtx4090", 165.2e12, "NVIDIA Ada whitepaper, RTX 4090: 165.2 TFLOP/s BF16 dense (FP32 accumulate 330 sparse)", ("4090",)),
        GPU("v100", 125.0e12, "NVIDIA V100 SXM2 datasheet: 125 TFLOP/s FP16 tensor (no BF16)", ("v100",)),
        GPU("t4", 65.0e12, "NVIDIA T4 datasheet: 65 TFLOP/s FP16 tensor (no BF16)", ("t4",)),
    )
}
ALIASES = {"h100-sxm": "h100", "h200-sxm": "h200", "a100-sxm": "a100", "a100-80gb": "a100", "4090": "rtx4090"}


def get_gpu(name: str) -> GPU:
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in GPUS:
        raise ValueError(f"gpu={name!r}: unknown; choose one of {', '.join(GPUS)}")
    return GPUS[key]


def gpu_for_device(device_name: str) -> GPU | None:
    """The table's GPU whose name appears in ``torch.cuda.get_device_name()``, e.g.
    "NVIDIA H100 80GB HBM3" -> h100; None for a GPU not in the table."""
    name = str(device_name).lower()
    for g in GPUS.values():
        if any(frag in name for frag in g.device_names):
            return g
    return None


def peak_flops(device_name: str, dtype: str = "bf16") -> float | None:
    """Dense peak FLOP/s of a CUDA device at ``dtype`` (``bf16``, ``fp16`` or ``fp32``).

    fp32 training without autocast runs its matmuls on TF32 tensor cores, at half the dense BF16
    rate on A100 and H100 (NVIDIA A100 and H100 datasheets: 156 vs 312, 494.7 vs 989.4 TFLOP/s).
    """
    g = gpu_for_device(device_name)
    if g is None:
        return None
    if dtype in ("bf16", "fp16"):
        return g.peak_flops
    if dtype == "fp32":
        return g.peak_flops / 2
    raise ValueError(f"dtype={dtype!r}: use bf16, fp16 or fp32")


def check_mfu(mfu: float) -> float:
    m = float(mfu)
    if not (0.0 < m <= 1.0):
        raise ValueError(f"mfu={mfu!r}: must be in (0, 1], e.g. 0.4 for 40% utilisation")
    return m


def gpu_hours(flops: float, gpu: str | GPU = "h100", mfu: float = DEFAULT_MFU) -> float:
    """``C / (peak x MFU x 3600)``."""
    g = gpu if isinstance(gpu, GPU) else get_gpu(gpu)
    return float(flops) / (g.peak_flops * check_mfu(mfu) * 3600.0)


def flops_from_gpu_hours(hours: float, gpu: str | GPU = "h100", mfu: float = DEFAULT_MFU) -> float:
    """The inverse: FLOPs that ``hours`` GPU-hours deliver at ``mfu``."""
    g = gpu if isinstance(gpu, GPU) else get_gpu(gpu)
    return float(hours) * g.peak_flops * check_mfu(mfu) * 3600.0


def wall_clock_days(hours: float, gpus: int) -> float:
    if gpus < 1:
        raise ValueError(f"gpus={gpus!r}: must be a positive integer")
    return float(hours) / gpus / 24.0


def cost_usd(hours: float, price_per_gpu_hour: float) -> float:
    if not (price_per_gpu_hour > 0 and math.isfinite(price_per_gpu_hour)):
        raise ValueError(f"price={price_per_gpu_hour!r}: must be a positive USD per GPU-hour")
    return float(hours) * float(price_per_gpu_hour)


def achieved_mfu(tokens_per_s: float, flops_per_token: float, gpus: int, peak_flops_per_gpu: float) -> float:
    """``tokens/s x FLOPs per token / (GPUs x peak)``: the utilisation a run measured (PaLM,
    Chowdhery et al. 2022, Appendix B: model FLOPs, whatever recomputation adds)."""
    if not (tokens_per_s > 0 and flops_per_token > 0 and gpus >= 1 and peak_flops_per_gpu > 0):
        raise ValueError(f"achieved_mfu: positive tokens/s, FLOPs per token, GPUs and peak needed, got "
                         f"{tokens_per_s!r}, {flops_per_token!r}, {gpus!r}, {peak_flops_per_gpu!r}")
    return tokens_per_s * flops_per_token / (gpus * peak_flops_per_gpu)


@dataclass(frozen=True)
class MfuFit:
    """MFU against model size from finished runs: ``ln mfu = log_a + b ln N``, read only inside
    the sizes measured (a size outside reads the nearest measured one: no extrapolation)."""

    log_a: float
    b: float
    n_lo: float
    n_hi: float
    runs: int

    def at(self, n: float) -> float:
        n = min(max(float(n), self.n_lo), self.n_hi)
        return min(1.0, math.exp(self.log_a + self.b * math.log(n)))

    def describe(self) -> str:
        lo, hi = sorted((self.at(self.n_lo), self.at(self.n_hi)))
        span = f"{lo:.2f}" if round(lo, 2) == round(hi, 2) else f"{lo:.2f}-{hi:.2f} by size"
        return f"measured MFU {span} ({self.runs} finished run{'s' if self.runs != 1 else ''})"


def fit_mfu(points: Sequence[tuple[float, float]]) -> MfuFit:
    """Least squares of ``ln mfu`` on ``ln N`` over ``(N, mfu)`` of finished runs; one size: its
    mean (``b = 0``)."""
    pts = [(math.log(n), math.log(m)) for n, m in points if n > 0 and 0 < m <= 1]
    if not pts:
        raise ValueError("fit_mfu: no (N, mfu) point with N > 0 and 0 < mfu <= 1")
    k = len(pts)
    mx, my = sum(x for x, _ in pts) / k, sum(y for _, y in pts) / k
    var = sum((x - mx) ** 2 for x, _ in pts)
    b = sum((x - mx) * (y - my) for x, y in pts) / var if var > 0 else 0.0
    return MfuFit(log_a=my - b * mx, b=b, n_lo=math.exp(min(x for x, _ in pts)), n_hi=math.exp(max(x for x, _ in pts)),
                  runs=k)
