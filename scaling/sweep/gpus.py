"""GPUs of this machine for the local executor: which are visible, how many runs each takes, which run holds which.

No torch here (the planner and ``sweep plan`` import this): the GPUs come from ``nvidia-smi``
(index, UUID, name, memory), or, where a GPU driver is present without it (ROCm, some containers),
from ``torch.cuda`` in a child process; ``CUDA_VISIBLE_DEVICES`` of this process narrows them. A
run's process is then given one GPU by submitit's own ``LocalExecutor(visible_gpus=[i],
gpus_per_node=1)``, which sets its ``CUDA_VISIBLE_DEVICES=i``; ``CUDA_DEVICE_ORDER=PCI_BUS_ID``
makes ``i`` mean the GPU that ``nvidia-smi`` calls ``i``. A run the backend says needs ``k`` GPUs
(``gpus_per_run(spec)``: a Nanotron run's ``gpus_per_node``) takes ``k`` idle GPUs, alone.

``runs_per_gpu: auto`` packs runs by their estimated memory (:func:`run_memory_bytes`) against the
smallest card's, at most :data:`AUTO_MAX` a GPU and no more than the cores can feed (one process a
core). Several runs on one GPU share its compute: :func:`shared_model` times a run among ``r`` as
its per-step overhead (Python, kernel launches: each process its own) plus ``r`` times its compute.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from scaling.errors import UsageError
from scaling.hardware import DEFAULT_MFU, gpu_for_device
from scaling.runspec import RunSpec
from scaling.timing import TimingModel, run_estimates

GIB = 1024**3
CONTEXT_BYTES = 1 * GIB  # a process's CUDA context, cuBLAS workspace and allocator slack
USABLE = 0.9  # of a card's memory, the rest left to fragmentation
AUTO_MAX = 4  # runs a GPU under `auto`: beyond a few, time-sliced processes add no throughput
DEVICE_NODES = ("/dev/nvidiactl", "/dev/kfd")  # an NVIDIA or AMD driver is loaded
SMI_QUERY = ["nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]
_TORCH_QUERY = (
    "import torch\n"
    "for i in range(torch.cuda.device_count()):\n"
    "    p = torch.cuda.get_device_properties(i)\n"
    "    print(f'{i}, , {p.name}, {p.total_memory // 2**20}')\n"
)


@dataclass(frozen=True)
class Gpu:
    index: int  # what CUDA_VISIBLE_DEVICES takes (nvidia-smi's index, PCI bus order)
    name: str = ""
    memory_bytes: int | None = None
    uuid: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "memory_gb": self.memory_bytes / GIB if self.memory_bytes else None}


def _parse_rows(text: str) -> list[Gpu]:
    """``index, uuid, name, memory MiB`` lines (``nvidia-smi --format=csv,noheader,nounits``)."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        mem = int(float(parts[3]) * 2**20) if parts[3].replace(".", "", 1).isdigit() else None
        out.append(Gpu(int(parts[0]), parts[2], mem, parts[1]))
    return out


def _query(cmd: list[str]) -> list[Gpu] | None:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return _parse_rows(p.stdout) if p.returncode == 0 else None


def machine_gpus() -> tuple[list[Gpu], str]:
    """Every GPU of the machine and where the list came from: ``nvidia-smi``, else (a driver
    loaded without it) ``torch.cuda`` in a child process, else none."""
    if shutil.which("nvidia-smi"):
        found = _query(SMI_QUERY)
        if found is not None:
            return found, "nvidia-smi"
    if any(Path(p).exists() for p in DEVICE_NODES):
        env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the order the runs' CUDA_VISIBLE_DEVICES is read in
        try:
            p = subprocess.run([sys.executable, "-c", _TORCH_QUERY], capture_output=True, text=True, timeout=120,
                               check=False, env=env)
        except (OSError, subprocess.TimeoutExpired):
            return [], "none"
        if p.returncode == 0:
            return _parse_rows(p.stdout), "torch.cuda"
    return [], "none"


def visible(gpus: Sequence[Gpu], cuda_visible: str | None) -> list[Gpu]:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` leaves (all when unset), in its order; like CUDA, the list
    stops at the first entry that names no GPU."""
    if cuda_visible is None:
        return list(gpus)
    by_index = {str(g.index): g for g in gpus}
    by_uuid = {g.uuid: g for g in gpus if g.uuid}
    out: list[Gpu] = []
    for entry in (e.strip() for e in cuda_visible.split(",")):
        g = by_index.get(entry) or by_uuid.get(entry) or next(
            (x for u, x in by_uuid.items() if entry.startswith("GPU-") and u.startswith(entry)), None)
        if g is None or g in out:
            break
        out.append(g)
    return out


def discover() -> tuple[list[Gpu], str]:
    """The GPUs this process may place runs on, and how they were found."""
    gpus, source = machine_gpus()
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None and gpus:
        return visible(gpus, cvd), f"{source}, CUDA_VISIBLE_DEVICES={cvd}"
    return gpus, source


def gpu_list_problem(ids: Sequence[int]) -> str | None:
    """What is wrong with a list of GPU indices (negative, or one listed twice), or None."""
    bad = [i for i in ids if i < 0 or list(ids).count(i) > 1]
    if not bad:
        return None
    return (f"GPU {bad[0]} is {'negative' if bad[0] < 0 else 'listed twice'}: "
            "each visible GPU index once (runs_per_gpu sets runs a GPU)")


def parse_gpus_flag(text: str) -> list[int]:
    """``--gpus 0,1,3`` -> [0, 1, 3]; ``--gpus none`` -> [] (train on the CPU)."""
    t = text.strip().lower()
    if t in ("none", "cpu", ""):
        return []
    try:
        ids = [int(x) for x in t.split(",")]
    except ValueError:
        raise UsageError(f"--gpus {text!r}: GPU indices separated by commas (e.g. 0,1), or none") from None
    problem = gpu_list_problem(ids)
    if problem:
        raise UsageError(f"--gpus {text}: {problem}")
    return ids


def parse_runs_per_gpu_flag(text: str) -> int | str:
    """``--runs-per-gpu 2`` -> 2; ``auto`` stays ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    if not text.strip().isdigit() or int(text) < 1:
        raise UsageError(f"--runs-per-gpu {text!r}: a positive integer, or auto")
    return int(text)


# ---- memory of a run ---------------------------------------------------------------------------


def run_memory_bytes(spec: RunSpec) -> int:
    """Peak GPU memory of one training run, estimated.

    ``16 P`` for fp32 weights, gradients and AdamW's two moments (Rajbhandari et al. 2020, ZeRO,
    section 3: 4+4+8 bytes a parameter with an fp32 master copy), plus the activations a micro-batch
    of ``b`` sequences of ``s`` tokens keeps for the backward pass, ``s b h (34 + 5 a s / h)`` bytes
    a layer at 16 bits (Korthikanti et al. 2022, eq. 1, attention scores included: an upper bound
    where the kernel is fused), twice that in fp32, plus fp32 logits and their gradient,
    ``8 b s V``, plus :data:`CONTEXT_BYTES`.
    """
    sh = spec.model_shape
    b, s = spec.micro_batch or spec.batch_size, sh.seq_len
    dtype = str(spec.options.get("dtype", "auto"))
    width = 2.0 if dtype == "float32" else 1.0
    per_layer = s * b * sh.hidden * (34 + 5 * sh.heads * s / sh.hidden) * width
    return int(16 * sh.params + sh.layers * per_layer + 8 * b * s * sh.vocab + CONTEXT_BYTES)


def auto_runs_per_gpu(specs: Sequence[RunSpec], gpus: Sequence[Gpu], cores: int) -> tuple[int, str]:
    """Runs a GPU for ``runs_per_gpu: auto``, and why: as many of the largest run as fit the
    smallest card (:data:`USABLE` of it), at most :data:`AUTO_MAX` and ``cores // len(gpus)``."""
    if not specs:
        return 1, "no runs"
    need = max(run_memory_bytes(s) for s in specs)
    mems = [g.memory_bytes for g in gpus if g.memory_bytes]
    if not mems:
        return 1, "card memory unknown"
    fit = int(USABLE * min(mems) // need)
    r = max(1, min(fit, AUTO_MAX, max(1, cores // max(1, len(gpus)))))
    return r, (f"largest run ~{need / GIB:.2f} GiB of {min(mems) / GIB:.0f} GiB: {fit} fit; "
               f"at most {AUTO_MAX} a GPU and {cores} core(s) for {len(gpus)} GPU(s)")


# ---- the plan and the bookkeeping ----------------------------------------------------------------


@dataclass(frozen=True)
class GpuPlan:
    """The GPUs a local launch places runs on, ``runs_per_gpu`` at a time on each."""

    gpus: tuple[Gpu, ...]
    runs_per_gpu: int
    source: str  # how the GPUs were found (or "executor.gpus")
    why: str = ""  # how runs_per_gpu was chosen

    @property
    def slots(self) -> int:
        return len(self.gpus) * self.runs_per_gpu

    @property
    def ids(self) -> list[int]:
        return [g.index for g in self.gpus]

    def to_dict(self) -> dict[str, Any]:
        return {"gpus": [g.to_dict() for g in self.gpus], "runs_per_gpu": self.runs_per_gpu, "slots": self.slots,
                "source": self.source, "runs_per_gpu_why": self.why}


def gpu_plan(kind: str, settings: Any, specs: Sequence[RunSpec], cores: int, gpus: Sequence[int] | None = None,
             runs_per_gpu: int | str | None = None, where: str = "executor.gpus") -> GpuPlan | None:
    """The placement of a ``local`` launch; None (the CPU path) for other executors or no GPU.

    ``gpus``/``runs_per_gpu`` (flags) override ``settings.gpus``/``settings.runs_per_gpu``; an
    explicit list must name visible GPUs (UsageError naming ``where`` otherwise)."""
    wanted = settings.gpus if gpus is None else list(gpus)
    per = settings.runs_per_gpu if runs_per_gpu is None else runs_per_gpu
    if kind != "local" and (gpus or runs_per_gpu is not None):
        fix = "executor.slurm.gpus_per_node sets a job's GPUs" if kind == "slurm" else "it runs in this process"
        raise UsageError(f"--gpus/--runs-per-gpu: place runs of --executor local only; with {kind}, {fix}")
    if kind != "local" or wanted == []:
        return None
    found, source = discover()
    if wanted is None:
        chosen = found
    else:
        by_index = {g.index: g for g in found}
        missing = [i for i in wanted if i not in by_index]
        if missing:
            seen = ", ".join(str(g.index) for g in found) or "none"
            raise UsageError(f"{where}: GPU {missing[0]} is not visible here (visible: {seen}, from {source}); "
                             f"list visible GPUs, or none to train on the CPU")
        chosen, source = [by_index[i] for i in wanted], f"{where} ({source})"
    if not chosen:
        return None
    if per == "auto":
        r, why = auto_runs_per_gpu(specs, chosen, cores)
    else:
        r, why = int(per), "set"
    return GpuPlan(tuple(chosen), r, source, why)


def gpus_per_run(backend: Any, spec: RunSpec) -> int:
    """GPUs one run of ``spec`` takes: the backend's ``gpus_per_run(spec)`` where it has one
    (a Nanotron run: its ``gpus_per_node``), else 1."""
    fn = getattr(backend, "gpus_per_run", None)
    return max(1, int(fn(spec))) if callable(fn) else 1


def check_needs(plan: GpuPlan, specs: Sequence[RunSpec], needs: Sequence[int], where: str) -> None:
    """Every run fits the plan's GPUs (UsageError naming the run and ``where`` otherwise)."""
    for spec, k in zip(specs, needs, strict=True):
        if k > len(plan.gpus):
            raise UsageError(f"{where}: run {spec.name or spec.run_id} takes {k} GPUs, {len(plan.gpus)} are placed on "
                             f"({', '.join(map(str, plan.ids))}); list more GPUs or give the run fewer")


class Placement:
    """Which GPUs each run in flight holds: a one-GPU run takes the least busy GPU with room
    (lowest index first), a run of ``k`` GPUs takes ``k`` idle ones alone; a run that ends, fails
    or is killed gives them back."""

    def __init__(self, plan: GpuPlan) -> None:
        self.plan = plan
        self.load = dict.fromkeys(plan.ids, 0)
        self.held: dict[str, tuple[int, ...]] = {}
        self._weight: dict[str, int] = {}

    def take(self, run_id: str, need: int = 1) -> tuple[int, ...] | None:
        if need == 1:
            free = [i for i in self.plan.ids if self.load[i] < self.plan.runs_per_gpu]
            chosen = [min(free, key=lambda i: self.load[i])] if free else []
        else:
            idle = [i for i in self.plan.ids if self.load[i] == 0]
            chosen = idle[:need] if len(idle) >= need else []
        if not chosen:
            return None
        self.hold(run_id, chosen)
        return self.held[run_id]

    def hold(self, run_id: str, gpus: Any) -> None:
        """``run_id`` holds ``gpus`` (a run adopted from an earlier launcher: the GPUs it recorded)."""
        ids = tuple(g for g in (gpus if isinstance(gpus, list | tuple) else [gpus]) if isinstance(g, int) and g in self.load)
        if run_id in self.held or not ids:
            return
        weight = 1 if len(ids) == 1 else self.plan.runs_per_gpu  # a multi-GPU run has its GPUs alone
        self.held[run_id], self._weight[run_id] = ids, weight
        for g in ids:
            self.load[g] += weight

    def release(self, run_id: str) -> None:
        weight = self._weight.pop(run_id, 0)
        for g in self.held.pop(run_id, ()):
            self.load[g] -= weight


# ---- time --------------------------------------------------------------------------------------


def assumed_model(plan: GpuPlan, mfu: float = DEFAULT_MFU) -> TimingModel | None:
    """Seconds of a run on the plan's slowest card at ``mfu`` of its dense BF16 peak
    (:mod:`scaling.hardware`); None for a card not in the table."""
    peaks = [gpu_for_device(g.name) for g in plan.gpus]
    if not peaks or any(p is None for p in peaks):
        return None
    peak = min(p.peak_flops for p in peaks if p is not None)
    return TimingModel(step_overhead_s=0.0, s_per_flop=1.0 / (peak * mfu),
                       source=f"assumed: {mfu:.0%} MFU of {peak / 1e12:.0f} TFLOP/s peak")


def shared_model(model: TimingModel, runs_per_gpu: int) -> TimingModel:
    """A run among ``runs_per_gpu`` on one GPU: each keeps its per-step overhead, the compute is shared."""
    return replace(model, s_per_flop=model.s_per_flop * runs_per_gpu)


def _slot_key(ends: list[float], now: float, order: int) -> tuple[float, int, int]:
    """A GPU for a one-GPU run: when a slot frees (not before ``now``), then the fewest busy slots then."""
    t = max(now, min(ends))
    return t, sum(e > t for e in ends), order


def place(seconds: Sequence[float], plan: GpuPlan, needs: Sequence[int] | None = None) -> tuple[list[int], float]:
    """The first GPU each run starts on and the wall time, as the launcher places them: in launch
    order, none starting before the one before it; a one-GPU run on the slot that frees first (the
    least busy GPU on a tie), a run of ``k`` GPUs once ``k`` GPUs are wholly free."""
    ends = {g: [0.0] * plan.runs_per_gpu for g in plan.ids}  # when each slot of each GPU frees
    where: list[int] = []
    now = 0.0
    for i, s in enumerate(seconds):
        need = needs[i] if needs else 1
        dur = float(s) if math.isfinite(s) else 0.0
        if need == 1:
            g = min(plan.ids, key=lambda x: _slot_key(ends[x], now, plan.ids.index(x)))
            now = max(now, min(ends[g]))
            k = ends[g].index(min(ends[g]))
            ends[g][k] = now + dur
            where.append(g)
        else:
            chosen = sorted(plan.ids, key=lambda x: (max(ends[x]), plan.ids.index(x)))[:need]
            now = max([now, *(max(ends[x]) for x in chosen)])
            for x in chosen:
                ends[x] = [now + dur] * plan.runs_per_gpu
            where.append(min(chosen, key=plan.ids.index))
    return where, max((max(e) for e in ends.values()), default=0.0)


def gpu_estimates(backend: Any, specs: Sequence[RunSpec], threads: int, plan: GpuPlan | None,
                  finished: Sequence[tuple[RunSpec, dict[str, Any]]] = ()) -> tuple[list[float | None], TimingModel | None]:  # fmt: skip
    """Each run's seconds and the model behind them (:func:`scaling.timing.run_estimates`, which
    calibrates a backend on the study's ``finished`` runs). On a
    GPU plan: the backend's measured model (its probe ran on this machine's GPU) shared among
    ``runs_per_gpu`` (:func:`shared_model`); else the backend's own estimates; else the assumed
    model (:func:`assumed_model`), shared likewise."""
    ests, model = run_estimates(backend, specs, threads, finished) if backend is not None else ([None] * len(specs), None)
    if plan is None or (model is None and specs and all(e is not None for e in ests)):
        return ests, model
    model = model or assumed_model(plan)
    if model is None:
        return ests, None
    model = shared_model(model, plan.runs_per_gpu)
    return [model.run_seconds(s) for s in specs], model
