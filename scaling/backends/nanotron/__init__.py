"""The Nanotron backend: run specs trained by Nanotron on GPU clusters, results in our store.

Nanotron's PyPI release (0.4, March 2024) cannot import its config (a circular import, upstream
issues #191/#235). Cluster users install GitHub main at the commit below, from a clone, since
the entry point uses the repository's ``run_train.py``::

    git clone https://github.com/huggingface/nanotron && cd nanotron
    git checkout 2411b022a75fb7f7561a1bb4166706da5e1b76de
    pip install -e . && pip install datatrove numba
    pip install flash-attn        # optional: the fast path; without it runs train with sdpa

Without flash-attn, runs train Nanotron's Qwen2 class with torch's SDPA attention
(:class:`~scaling.backends.nanotron.config.ModelPath`).

Everything here imports without Nanotron or CUDA (config generation, the parallelism planner,
validation, ``scaling sweep plan``, checkpoint conversion); only :meth:`NanotronBackend.train`
and the entry point need them, and they say what is missing.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from scaling.errors import UsageError
from scaling.runspec import RunSpec
from scaling.store import RunDir, atomic_write_text

NANOTRON_REPO = "https://github.com/huggingface/nanotron"
NANOTRON_COMMIT = "2411b022a75fb7f7561a1bb4166706da5e1b76de"  # main, 2026-04-07 (still labelled 0.4)
INSTALL = (
    f"git clone {NANOTRON_REPO} && cd nanotron && git checkout {NANOTRON_COMMIT} "
    "&& pip install -e . && pip install datatrove numba"
)


def peak_flops_per_gpu(opts: Any) -> float:
    """Dense BF16 peak FLOP/s of one GPU: ``peak_tflops`` if given, else :mod:`scaling.hardware`'s table."""
    if opts.peak_tflops:
        return opts.peak_tflops * 1e12
    from scaling.hardware import get_gpu

    try:
        return get_gpu(opts.gpu).peak_flops
    except ValueError as e:
        raise UsageError(f"backend_options.gpu: {e}; or set backend_options.peak_tflops") from None


class NanotronBackend:
    """:class:`scaling.backends.base.Backend` for Nanotron."""

    name = "nanotron"
    # how a run executes, not what it computes: kept out of its run id (RunSpec.execution_options)
    execution_options = frozenset({"torchrun", "rdzv_port", "data_dir", "cpus_per_task", "result_wait_s",
                                   "assumed_mfu", "peak_tflops", "checkpoint_interval", "slurm_stop_wait_s"})

    def __init__(self) -> None:
        self._cache_dir: str | None = None  # set by prepare(): where the sweep keeps prepared data
        self._mfu: Any = None  # set by calibrate(): scaling.hardware.MfuFit of the study's finished runs
        self._fixed_s = 0.0  # set by calibrate(): a run's seconds outside its steps, as measured

    # ---- estimates: the assumed MFU, then the study's measured one ---------------------------------
    def calibrate(self, finished: Iterable[tuple[RunSpec, Mapping[str, Any]]]) -> None:
        """Estimate from now on with the MFU that ``finished`` runs (spec, ``result.json``) measured,
        fitted against model size (:func:`scaling.hardware.fit_mfu`), plus their median seconds
        outside the steps (start, data, evaluation, checkpoints, conversion); runs without a
        measurement (another backend's, none logged) are left out."""
        from scaling.hardware import fit_mfu

        measured = [m for m in (self.measured(s, r) for s, r in finished) if m is not None]
        self._mfu = fit_mfu([(m["params"], m["mfu"]) for m in measured]) if measured else None
        self._fixed_s = statistics.median(m["fixed_s"] for m in measured) if measured else 0.0

    @staticmethod
    def measured(spec: RunSpec, result: Mapping[str, Any]) -> dict[str, float] | None:
        """What a finished run measured: ``mfu`` = its median tokens/s x matmul FLOPs per token /
        (GPUs x peak), the convention of ``assumed_mfu`` and of the runs' logged ``mfu``, and
        ``fixed_s`` = its wall time less its tokens at that rate; ``None`` without tokens/s."""
        from scaling.backends.nanotron.config import options_of
        from scaling.flops import flops_per_token
        from scaling.hardware import achieved_mfu

        tps, wall, tokens = (result.get(k) for k in ("tokens_per_s", "wall_time", "tokens"))
        if result.get("backend") != "nanotron" or not isinstance(tps, int | float) or tps <= 0:
            return None
        try:
            opts = options_of(spec)
            peak = peak_flops_per_gpu(opts)
        except UsageError:
            return None
        mfu = achieved_mfu(float(tps), flops_per_token(spec.model_shape, "matmul"), opts.gpus, peak)
        steps_s = float(tokens or spec.tokens) / float(tps)
        fixed = max(0.0, float(wall) - steps_s) if isinstance(wall, int | float) else 0.0
        return {"params": float(spec.params), "mfu": mfu, "fixed_s": fixed}

    @property
    def estimate_basis(self) -> str:
        """Which MFU the GPU-hours use, in words (``sweep plan`` prints it)."""
        if self._mfu is None:
            return "GPU-hours at the assumed MFU (backend_options.assumed_mfu)"
        return f"GPU-hours at the {self._mfu.describe()} + {self._fixed_s / 60:.1f} min a run outside its steps"

    def _mfu_of(self, spec: RunSpec, opts: Any) -> tuple[float, str]:
        if self._mfu is None:
            return opts.assumed_mfu, "assumed"
        return self._mfu.at(spec.params), "measured"

    # ---- planning (no GPU needed) --------------------------------------------------------------
    def describe(self, spec: RunSpec) -> dict[str, Any]:
        """The columns ``scaling sweep plan`` adds for a run: parallelism, micro-batch x accumulation,
        recomputation, memory per GPU and GPU-hours (:meth:`details` has everything).

        Raises :class:`UsageError` (exit 2) naming the field when Nanotron cannot run the spec.
        """
        d = self.details(spec)
        return {
            "parallel": f"dp{d['dp']} tp{d['tp']} pp{d['pp']}",
            "micro_batch": d["micro_batch"],
            "accum": d["accumulation"],
            "recompute": d["recompute"],
            "mem_gib": round(d["memory_gib"], 1),
            "mfu": f"{d['mfu']:.2f} {d['mfu_source']}",
            "gpu_hours": d["gpu_hours"],
        }

    def details(self, spec: RunSpec) -> dict[str, Any]:
        """Parallelism, batch split, memory breakdown, MFU (assumed, or measured once :meth:`calibrate`
        had finished runs), GPU-hours ``matmul FLOPs / (peak x MFU)`` plus the measured seconds
        outside the steps on every GPU, and wall hours of one run."""
        from scaling.backends.nanotron.config import lr_schedule, options_of, plan_for
        from scaling.flops import training_flops
        from scaling.hardware import GPU, gpu_hours as hours_of

        opts = options_of(spec)
        plan = plan_for(spec, opts)
        lr_schedule(spec)  # validates the schedule against the step count
        gpu = GPU(opts.gpu, peak_flops_per_gpu(opts), "backend_options")
        tokens = spec.steps * spec.batch_tokens
        work = training_flops(spec.model_shape, tokens, "matmul")  # the matmuls the GPUs really do
        mfu, source = self._mfu_of(spec, opts)
        gpu_hours = hours_of(work, gpu, mfu) + self._fixed_s * plan.gpus / 3600
        return {
            **plan.to_dict(),
            "gpu": opts.gpu,
            "nodes": opts.nodes,
            "gpus_per_node": opts.gpus_per_node,
            "steps": spec.steps,
            "batch_sequences": spec.batch_size,
            "memory_gib": plan.memory.total_gib,
            "assumed_mfu": opts.assumed_mfu,
            "mfu": mfu,
            "mfu_source": source,
            "gpu_hours": gpu_hours,
            "hours": gpu_hours / plan.gpus,
            "nanotron_commit": NANOTRON_COMMIT,
        }

    def slurm_parameters(self, spec: RunSpec) -> dict[str, Any]:
        """How the sweep engine shapes this run's Slurm job: ``nodes`` nodes with
        ``gpus_per_node`` GPUs, one task per node (each task runs torchrun)."""
        from scaling.backends.nanotron.config import options_of
        from scaling.backends.nanotron.launch import slurm_parameters

        return slurm_parameters(options_of(spec))

    def gpus_per_run(self, spec: RunSpec) -> int:
        """GPUs the local executor gives one run (one torchrun of ``gpus_per_node`` processes a node)."""
        from scaling.backends.nanotron.config import options_of

        return options_of(spec).gpus

    def estimate_seconds(self, spec: RunSpec) -> float | None:
        try:
            return self.details(spec)["hours"] * 3600.0
        except UsageError:
            return None

    # ---- data ------------------------------------------------------------------------------------
    def prepare(self, specs: list[RunSpec], cache_dir: str) -> None:
        """Validate every spec against Nanotron, then write each corpus once as nanoset files."""
        self._cache_dir = cache_dir
        seen: set[Path] = set()
        for spec in specs:
            self.details(spec)
            folder = self._data_folder(spec, cache_dir)
            if folder not in seen:
                seen.add(folder)
                self._ensure_data(spec, folder)

    def _data_folder(self, spec: RunSpec, data_dir: str | Path) -> Path:
        from scaling.backends.nanotron.data import nanoset_folder

        return nanoset_folder(data_dir, spec.data.model_dump(mode="json"), spec.shape.vocab)

    def _ensure_data(self, spec: RunSpec, folder: Path) -> Any:
        from scaling.backends.nanotron.data import NanosetData, prepare_from_local

        if (folder / "meta.json").exists():
            return NanosetData.load(folder)
        return prepare_from_local(spec, folder)

    def _run_data_dir(self, spec: RunSpec, run_dir: RunDir) -> Path:
        """``backend_options.data_dir``, else the cache :meth:`prepare` was given, else ``STUDY/data``."""
        opts_dir = spec.options.get("data_dir") or self._cache_dir
        return Path(opts_dir) if opts_dir else run_dir.path.resolve().parents[1] / "data"

    # ---- training ----------------------------------------------------------------------------------
    def write_config(self, spec: RunSpec, run_dir: RunDir) -> Path:
        """Validate, prepare the data if needed, and write ``RUN/nanotron/config.yaml`` atomically."""
        from scaling.backends.nanotron.config import build_config, model_path, options_of, plan_for, to_yaml
        from scaling.backends.nanotron.entry import CONFIG_NAME

        opts = options_of(spec)
        plan = plan_for(spec, opts)
        path = model_path(opts)  # "auto" resolved by what this (training) machine has installed
        data = self._ensure_data(spec, self._data_folder(spec, self._run_data_dir(spec, run_dir)))
        special = (data.bos_id if data.bos_id is not None else 1, data.eos_id if data.eos_id is not None else 2)
        cfg = build_config(
            spec, run_dir=run_dir.path, train_folder=data.train_folder, tokenizer_dir=data.tokenizer_dir,
            plan=plan, options=opts, path=path, special_tokens=special,
        )  # fmt: skip
        path = run_dir.path / CONFIG_NAME
        atomic_write_text(path, to_yaml(cfg))
        return path

    def train(self, spec: RunSpec, run_dir: RunDir) -> dict[str, Any]:
        """Run this node's share of the run (every Slurm task calls this); node 0 returns the result."""
        from scaling.backends.nanotron.config import model_path, options_of
        from scaling.backends.nanotron.entry import missing_requirements
        from scaling.backends.nanotron.launch import node_environment, run_node, wait_for_result

        if run_dir.read_spec() is None:
            run_dir.write_spec(spec.to_json_dict())
        if run_dir.is_done():
            return run_dir.read_result() or {}
        opts = options_of(spec)
        self.write_config(spec, run_dir)  # every node writes the same bytes atomically
        if opts.torchrun == "torchrun":  # a custom launcher is trusted to bring what it needs
            missing = missing_requirements(model_path(opts).needs_flash_attn)
            if missing:
                raise RuntimeError("nanotron backend cannot train here; missing: " + "; ".join(missing))
        where = node_environment()
        code = run_node(run_dir.path, opts)
        log = run_dir.path / "nanotron" / "logs" / f"node{where['node_rank']}.log"
        if code != 0:
            raise RuntimeError(f"torchrun exited {code} on node {where['node_rank']}; see {log}")
        if where["node_rank"] != 0:
            return wait_for_result(run_dir, opts.result_wait_s)
        result = run_dir.read_result()
        if result is None:
            raise RuntimeError(f"the entry point exited 0 without writing {run_dir.path / 'result.json'}; see {log}")
        return result


__all__ = ["INSTALL", "NANOTRON_COMMIT", "NanotronBackend", "peak_flops_per_gpu"]
