"""Measure this machine for the local trainer's time estimates, once, and remember it.

Two figures, each cached per machine (host, CPU model, PyTorch version, threads) in
``$SCALING_PROBE_CACHE``, else ``~/.cache/scaling/probe.json``, like the attention op's build
(whatever the sweep's data cache):

* seconds per training step of a few of the sweep's own shapes (the smallest, the middle and the
  largest by FLOPs a step, at their batch), timed through the trainer's own ``train_step`` after
  two warm-up steps (the median of five), from which
  :func:`scaling.timing.fit_step_model` fits the per-step overhead and the achieved rate;
* the start of a run process: a fresh interpreter importing the trainer (what a submitit job pays
  before its first step).

Each measurement is stored with the machine's load when it was taken (the 1-minute load average
and the CPU count). A machine under other load measures slower; a measurement taken while other work
left fewer than the run's threads free (:func:`contended`) is taken again the next time the machine
is idle, and the faster of the two kept (other load only ever slows a step down). The launcher then
refines the estimate from the runs themselves (:class:`scaling.timing.Refiner`).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scaling.flops import flops_per_token
from scaling.runspec import RunSpec
from scaling.store import atomic_write_json, read_json
from scaling.timing import TimingModel, fit_step_model

PROBE_FILE = "probe.json"
PROBE_VERSION = 2  # 2: each measurement stored with the load it was taken under
LOAD_SLACK = 0.5  # load-average noise tolerated before a probe counts as contended
FIXED_S = 0.5  # data loading from the cache, model build, checkpoints, export: 0.1-0.7 s measured on tiny runs


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(threads: int) -> str:
    import torch

    return f"v{PROBE_VERSION}|{os.uname().nodename}|{_cpu_model()}|torch {torch.__version__}|threads {threads}"


def machine_load() -> tuple[float, int]:
    """``(1-minute load average, CPU count)``: how busy the machine is right now."""
    return os.getloadavg()[0], os.cpu_count() or 1


def contended(load: float, cpus: int, threads: int) -> bool:
    """Whether other work (``load``, a load average) leaves fewer than ``threads`` of ``cpus`` cores
    free, give or take :data:`LOAD_SLACK`: a step timed then is slower than the machine."""
    return load > max(0.0, cpus - threads) + LOAD_SLACK


def _shape_key(spec: RunSpec) -> str:
    s = spec.model_shape
    o = spec.options
    return (f"L{s.layers} d{s.hidden} h{s.heads}/{s.n_kv_heads} f{s.d_ffn} v{s.vocab} T{s.seq_len} tied{int(s.tied)} "
            f"glu{int(s.glu)} B{spec.batch_tokens} {o.get('device', 'auto')} {o.get('dtype', 'auto')}")


def time_step(spec: RunSpec, threads: int, steps: int = 5, warmup: int = 2) -> float:
    """Median seconds of one training step (forward, backward, clip, AdamW) of ``spec``'s shape
    and batch, on the device and in the dtype its options give."""
    import torch

    from . import causal_attention
    from .model import build_model
    from .options import Options
    from .train import train_step

    opts = Options.from_spec(spec)
    device = opts.torch_device()
    amp = opts.autocast_dtype(device)
    shape = spec.model_shape
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if device.type == "cpu" and amp is None:
            causal_attention.available()  # the op the runs use (built once per machine)
        model = build_model(shape).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
        batch = max(1, spec.batch_tokens // shape.seq_len)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, shape.vocab, (batch, shape.seq_len), generator=g).to(device)
        y = torch.randint(0, shape.vocab, (batch, shape.seq_len), generator=g).to(device)
        times = []
        for i in range(warmup + steps):
            t = time.perf_counter()
            loss, _ = train_step(model, opt, model.loss, x, y, amp=amp)
            float(loss)  # waits for the device
            if i >= warmup:
                times.append(time.perf_counter() - t)
        if device.type == "cuda":  # the launcher probes: leave the GPU's memory to the runs placed on it
            del model, opt, x, y
            torch.cuda.empty_cache()
        return statistics.median(times)
    finally:
        torch.set_num_threads(old)


def time_startup(threads: int) -> float:
    """Seconds for a fresh interpreter to import the trainer (a run process's start)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import scaling.backends.local.train"], env=env, check=True,
                   capture_output=True, timeout=300)
    return time.perf_counter() - t


def _probe_shapes(specs: list[RunSpec]) -> list[RunSpec]:
    """The smallest, middle and largest of the runs by matmul FLOPs a step (one per shape)."""
    by_shape: dict[str, RunSpec] = {}
    for s in specs:
        by_shape.setdefault(_shape_key(s), s)
    ranked = sorted(by_shape.values(), key=lambda s: s.batch_tokens * flops_per_token(s.model_shape, "matmul"))
    picks = {0, len(ranked) // 2, len(ranked) - 1}
    return [ranked[i] for i in sorted(picks)]


def probe_cache() -> Path:
    """``$SCALING_PROBE_CACHE``, else ``~/.cache/scaling/probe.json``."""
    return Path(os.environ.get("SCALING_PROBE_CACHE") or Path.home() / ".cache" / "scaling" / PROBE_FILE).expanduser()


def _measure(old: dict[str, Any] | None, measure: Callable[[], float], load: float, cpus: int,
             threads: int) -> dict[str, Any]:  # fmt: skip
    """``{"seconds", "load"}`` of one probe measurement: ``old`` where it was taken on a quiet enough
    machine or the machine is busy now; otherwise measured now, keeping the faster of the two and
    the lower load (so an idle re-measurement is made once)."""
    if old is not None and (not contended(float(old["load"]), cpus, threads) or contended(load, cpus, threads)):
        return old
    seconds = float(measure())
    if old is None:
        return {"seconds": seconds, "load": load}
    return {"seconds": min(seconds, float(old["seconds"])), "load": min(load, float(old["load"]))}


def timing_model(specs: list[RunSpec], threads: int) -> TimingModel:
    """The timing model of ``specs`` on this machine at ``threads`` threads per run; probe
    results come from the cache when this machine measured them before (measured again when that
    was under load and the machine is idle now)."""
    path = probe_cache()
    known: dict[str, Any] = read_json(path) or {}
    key = machine_key(threads)
    entry = dict(known.get(key) or {})
    steps = dict(entry.get("steps") or {})
    load, cpus = machine_load()
    used = {_shape_key(s): s for s in _probe_shapes(specs)}
    new = {k: _measure(steps.get(k), lambda s=s: time_step(s, threads), load, cpus, threads) for k, s in used.items()}
    startup = _measure(entry.get("startup"), lambda: time_startup(threads), load, cpus, threads)
    if any(steps.get(k) != v for k, v in new.items()) or startup != entry.get("startup"):
        entry.update(steps={**steps, **new}, startup=startup, cpus=cpus, measured=time.time())
        atomic_write_json(path, {**known, key: entry})
    a, b = fit_step_model((s.batch_tokens * flops_per_token(s.model_shape, "matmul"), new[k]["seconds"])
                          for k, s in used.items())
    worst = max([startup["load"]] + [m["load"] for m in new.values()])
    busy = ": busy, slower than this machine idle" if contended(worst, cpus, threads) else ""
    return TimingModel(step_overhead_s=a, s_per_flop=b, startup_s=float(startup["seconds"]), fixed_s=FIXED_S,
                       source=f"probe of {len(used)} shapes at {threads} thread(s), load up to {worst:.1f} "
                              f"on {cpus} CPUs{busy}")
