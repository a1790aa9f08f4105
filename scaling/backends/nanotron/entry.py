"""The training entry point, run on every GPU under torchrun::

    CUDA_DEVICE_MAX_CONNECTIONS=1 torchrun --nproc_per_node=8 \\
        -m scaling.backends.nanotron.entry --run-dir STUDY/runs/<run_id>

It reads ``RUN/nanotron/config.yaml`` (written by :class:`NanotronBackend`), then:

1. works around the Llama random-init bug of the pinned commit (upstream issue #386:
   ``LlamaForTraining.init_model_randomly`` builds ``StandardParametrizator(config=config.model)``,
   which then reads ``config.model.init_method`` and ``config.parallelism`` from a ``ModelArgs``
   and fails): the parametrizator that ``nanotron.models.llama`` looks up is replaced by a
   factory that hands it the whole config; a fixed upstream passes the whole config and is
   left unchanged;
2. trains with Nanotron's ``DistributedTrainer`` and the data loader of Nanotron's
   ``run_train.py`` (resuming from ``RUN/checkpoints/latest.txt`` when present), and on the
   logging rank appends one full-precision row per step to ``metrics.jsonl`` (Nanotron prints
   losses to 3 significant digits; the fit needs more);
3. after the last step (Nanotron saves the final checkpoint), on global rank 0: converts that
   checkpoint to a transformers model in ``RUN/model`` with the tokenizer, computes the
   validation loss on held-out tokens (Nanotron computes none) and writes ``result.json``
   atomically.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from scaling.hardware import achieved_mfu
from scaling.runspec import RunSpec
from scaling.store import RunDir, atomic_write_text, dumps

CONFIG_NAME = "nanotron/config.yaml"


# ---- requirements ---------------------------------------------------------------------------------


def missing_requirements(needs_flash_attn: bool) -> list[str]:
    """What this machine lacks to train with Nanotron on a model path that does (or does not)
    call flash-attn (empty when it can)."""
    from scaling.backends.nanotron import INSTALL

    missing = []
    try:
        import torch

        if not torch.cuda.is_available():
            missing.append("a CUDA GPU (Nanotron trains with NCCL only; torch.cuda.is_available() is False)")
    except ImportError:
        missing.append("torch")
    needed = [("nanotron", INSTALL), ("datatrove", "pip install datatrove")]
    if needs_flash_attn:
        needed.append(("flash_attn", "pip install flash-attn, or set backend_options.attention: sdpa"))
    for module, why in needed:
        if importlib.util.find_spec(module) is None:
            missing.append(f"{module} ({why})")
    return missing


def find_run_train() -> Path:
    """Nanotron's ``run_train.py``: ``$NANOTRON_RUN_TRAIN``, or the repository root of an
    editable install (``src/nanotron/__init__.py`` -> ``run_train.py``)."""
    env = os.environ.get("NANOTRON_RUN_TRAIN")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("nanotron")
    if spec is None or spec.origin is None:
        raise RuntimeError("nanotron is not installed")
    path = Path(spec.origin).resolve().parents[2] / "run_train.py"
    if not path.exists():
        raise RuntimeError(
            f"{path} not found: install Nanotron from a clone (pip install -e) or set NANOTRON_RUN_TRAIN"
        )
    return path


def _import_file(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # run_train.py guards its own main with __name__
    return module


# ---- the Llama init workaround -----------------------------------------------------------------------


def patch_llama_init(parallelism: Any) -> None:
    """Make ``nanotron.models.llama``'s parametrizator accept the ``ModelArgs`` it is given."""
    import nanotron.models.llama as llama
    from nanotron.scaling.parametrization import StandardParametrizator

    def parametrizator(config: Any) -> Any:
        if hasattr(config, "parallelism"):  # a whole Config: upstream fixed
            return StandardParametrizator(config=config)
        return StandardParametrizator(config=SimpleNamespace(model=config, parallelism=parallelism))

    llama.StandardParametrizator = parametrizator


# ---- metrics ----------------------------------------------------------------------------------------------


class MetricsRecorder:
    """Builds and appends one metrics row per step (the local backend's keys plus Nanotron's)."""

    def __init__(self, run_dir: RunDir, spec: RunSpec, gpus: int, peak_flops: float | None) -> None:
        from scaling.flops import flops_per_token

        self.run_dir, self.spec, self.gpus, self.peak = run_dir, spec, gpus, peak_flops
        self.flops_per_token = flops_per_token(spec.model_shape, spec.flops_convention)
        self.matmul_per_token = flops_per_token(spec.model_shape, "matmul")

    def row(self, *, step: int, loss: float, lr: float, step_s: float, grad_norm: float | None = None,
            model_tflops_per_gpu: float | None = None) -> dict[str, Any]:  # fmt: skip
        tokens = step * self.spec.batch_tokens
        tps = self.spec.batch_tokens / step_s if step_s > 0 else None
        mfu = achieved_mfu(tps, self.matmul_per_token, self.gpus, self.peak) if (tps and self.peak) else None
        return {
            "step": step,
            "tokens": tokens,
            "flops": tokens * self.flops_per_token,
            "loss": float(loss),
            "lr": float(lr),
            "grad_norm": None if grad_norm is None else float(grad_norm),
            "tokens_per_s": tps,
            "step_s": step_s,
            "mfu": mfu,
            "model_tflops_per_gpu": model_tflops_per_gpu,
            "time": time.time(),
        }

    def append(self, row: dict[str, Any]) -> None:
        self.run_dir.append_metrics([row])


def recording_trainer(base: type, recorder: MetricsRecorder, is_logger: Any) -> type:
    """A subclass of Nanotron's ``DistributedTrainer`` that also records full-precision metrics."""

    class RecordingTrainer(base):
        def train_step_logs(self, outputs, loss_avg, z_loss_avg, tbi_logs):  # Nanotron's hook
            super().train_step_logs(outputs=outputs, loss_avg=loss_avg, z_loss_avg=z_loss_avg, tbi_logs=tbi_logs)
            if loss_avg is None or not is_logger(self):
                return
            step_s = self.iteration_timer.elapsed  # ended by super(); CUDA-event timed
            model_tflops, _ = self.unwrapped_model.get_flops_per_sec(
                iteration_time_in_sec=step_s, sequence_length=self.sequence_length, global_batch_size=self.global_batch_size
            )
            grad = getattr(self, "grad_norm_unclipped", None)
            recorder.append(
                recorder.row(
                    step=self.iteration_step,
                    loss=loss_avg.item(),
                    lr=self.lr_scheduler.get_last_lr()[0],
                    step_s=step_s,
                    grad_norm=None if grad is None else grad.item(),
                    model_tflops_per_gpu=model_tflops,
                )
            )

    return RecordingTrainer


# ---- validation loss and the result ----------------------------------------------------------------


def _mean_window_loss(summed_loss: Any, model: Any, tokens: np.ndarray, *, seq_len: int, max_tokens: int,
                      batch_size: int, device: str) -> float:  # fmt: skip
    """Mean next-token loss over the local backend's validation windows
    (:func:`scaling.backends.local.train.eval_windows`: the first ``max_tokens`` held-out tokens
    as windows of ``seq_len + 1``); ``summed_loss(batch)`` gives the summed loss of its targets."""
    import torch

    from scaling.backends.local.train import eval_windows

    windows = eval_windows(tokens, seq_len, max_tokens)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            batch = windows[i : i + batch_size].to(device)
            total += summed_loss(batch)
            count += batch[:, 1:].numel()
    return total / count


def eval_loss(model: Any, tokens: np.ndarray, *, seq_len: int, max_tokens: int, batch_size: int = 8,
              device: str = "cpu") -> float:  # fmt: skip
    """The held-out loss of a transformers causal LM, on the same windows as the local backend's."""
    import torch

    def summed(batch: Any) -> float:
        logits = model(batch[:, :-1]).logits.float()
        return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"))

    return _mean_window_loss(summed, model, tokens, seq_len=seq_len, max_tokens=max_tokens, batch_size=batch_size, device=device)


def nanotron_eval_loss(model: Any, tokens: np.ndarray, *, seq_len: int, max_tokens: int, batch_size: int = 8,
                       device: str = "cuda") -> float:  # fmt: skip  # pragma: no cover - needs CUDA
    """The same held-out loss computed by Nanotron's own model (``...ForTraining`` with
    tp = pp = 1: its forward takes input, position and label ids and a label mask and returns the
    mean loss), before any conversion; the GPU check compares it with the converted model's."""
    import torch

    def summed(batch: Any) -> float:
        inputs, labels = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
        positions = torch.arange(seq_len, device=device, dtype=torch.int32).repeat(len(batch), 1)
        out = model(input_ids=inputs, position_ids=positions, label_ids=labels,
                    label_mask=torch.ones_like(labels, dtype=torch.bool))  # fmt: skip
        return float(out["loss"]) * labels.numel()

    return _mean_window_loss(summed, model, tokens, seq_len=seq_len, max_tokens=max_tokens, batch_size=batch_size, device=device)


def build_result(spec: RunSpec, rows: list[dict[str, Any]], *, eval_loss_value: float | None, wall_time: float,
                 train_tokens_available: int, final_loss_steps: int | None = None, extra: dict | None = None) -> dict[str, Any]:  # fmt: skip
    """``result.json`` from the recorded rows, with the local backend's keys (what
    :func:`scaling.load_runs` reads); ``final_loss`` is the mean train loss of the last
    ``max(1, steps // 20)`` steps, as the local backend computes it."""
    shape = spec.model_shape
    tokens = spec.steps * spec.batch_tokens
    k = final_loss_steps or max(1, spec.steps // 20)
    losses = [r["loss"] for r in rows if r.get("loss") is not None]
    tail = losses[-k:]
    tps = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
    mfus = [r["mfu"] for r in rows if r.get("mfu")]
    return {
        "name": spec.name,
        "budget": spec.budget,
        "backend": "nanotron",
        "final_loss": float(np.mean(tail)) if tail else None,
        "final_loss_steps": len(tail),
        "eval_loss": eval_loss_value,
        "params": shape.params,
        "non_embedding_params": shape.non_embedding_params,
        "embedding_params": shape.embedding_params,
        "tokens": tokens,
        **spec.flops_fields(tokens),
        "wall_time": wall_time,
        "steps": spec.steps,
        "epochs": tokens / train_tokens_available if train_tokens_available else None,
        "tokens_per_s": float(np.median(tps)) if tps else None,
        "mfu": float(np.median(mfus)) if mfus else None,
        **(extra or {}),
    }


def latest_checkpoint_step(checkpoints: Path) -> int:
    """The step of Nanotron's newest checkpoint (its ``latest.txt``), 0 before the first."""
    latest = checkpoints / "latest.txt"
    return int(latest.read_text().strip()) if latest.exists() else 0


def begin_attempt(rd: RunDir) -> int:
    """Rank 0, before Nanotron starts (or resumes): mark the run running and drop the metrics
    rows logged after Nanotron's newest checkpoint, which the resumed run logs again; returns
    the step Nanotron resumes from."""
    step = latest_checkpoint_step(rd.checkpoints)
    rd.mark_running()
    rd.truncate_metrics_after(step)
    return step


# ---- main -----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaling.backends.nanotron.entry", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    args = parser.parse_args(argv)
    rd = RunDir(args.run_dir)
    config = rd.path / CONFIG_NAME
    path = run_model_path(rd) if config.exists() else None
    missing = missing_requirements(path is None or path.needs_flash_attn)
    if path is None:
        missing.append(f"{config} (written by the nanotron backend before it starts torchrun)")
    if missing:
        print("error: cannot train with Nanotron here; missing: " + "; ".join(missing), file=sys.stderr)
        return 1
    return _train(rd)


def run_model_path(rd: RunDir) -> Any:
    """The model class and attention the run's config was written for."""
    import yaml

    from scaling.backends.nanotron.config import written_model_path

    return written_model_path(yaml.safe_load((rd.path / CONFIG_NAME).read_text())["model"]["model_config"])


def prepare_nanotron(path: Any, parallelism: Any) -> list[str]:
    """Before Nanotron builds the model: import-only stand-ins for the kernel packages that are
    missing (:mod:`.missing_kernels`; a kernel actually called then fails loudly), the unpacked
    Qwen2 attention for ``sdpa`` (:mod:`.qwen2_sdpa`), the Llama init workaround. Returns the
    packages stood in."""
    from scaling.backends.nanotron import missing_kernels

    stood_in = missing_kernels.install()
    if path.model == "qwen2" and path.attention == "sdpa":
        from scaling.backends.nanotron import qwen2_sdpa

        qwen2_sdpa.patch()
    if path.model == "llama":
        patch_llama_init(parallelism)
    return stood_in


def _train(rd: RunDir) -> int:  # pragma: no cover - needs CUDA and Nanotron
    import torch

    from scaling.backends.nanotron import missing_kernels, peak_flops_per_gpu

    missing_kernels.install()  # before the first nanotron import
    from nanotron.config import get_config_from_file
    from nanotron.trainer import DistributedTrainer
    from scaling.backends.nanotron.config import options_of
    from scaling.backends.nanotron.convert import convert_checkpoint, load_hf_model
    from scaling.backends.nanotron.data import NanosetData, read_ds

    spec = RunSpec.from_json_dict(rd.read_spec())
    opts = options_of(spec)
    config_path = rd.path / CONFIG_NAME
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if rank == 0:
        begin_attempt(rd)
    path = run_model_path(rd)
    stood_in = prepare_nanotron(path, get_config_from_file(str(config_path)).parallelism)
    recorder = MetricsRecorder(rd, spec, world, peak_flops_per_gpu(opts))

    def is_logger(trainer: Any) -> bool:
        import nanotron.distributed as dist

        return dist.get_rank(trainer.parallel_context.world_pg) == trainer.logger_ranks[0]

    trainer = recording_trainer(DistributedTrainer, recorder, is_logger)(str(config_path))
    run_train = _import_file(find_run_train(), "nanotron_run_train")
    dataloader = run_train.get_dataloader(trainer)
    trainer.train(dataloader)  # saves the final checkpoint (save_final_state)
    torch.distributed.barrier()
    if rank != 0:
        return 0
    eval_started = time.time()
    data = NanosetData.load(Path(opts_data_folder(rd)))
    native = _native_eval(trainer, data, spec, world)
    native |= {"num_params": dict(trainer.num_params), "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}
    del trainer, dataloader
    torch.cuda.empty_cache()
    convert_checkpoint(rd.checkpoints, rd.path / "model", tokenizer_dir=data.tokenizer_dir, vocab_size=spec.shape.vocab)
    model = load_hf_model(rd.checkpoints, vocab_size=spec.shape.vocab).to(f"cuda:{os.environ.get('LOCAL_RANK', 0)}")
    ev = eval_loss(model, read_ds(data.val_file, data.vocab), seq_len=spec.shape.seq_len, max_tokens=spec.eval_tokens,
                   device=str(next(model.parameters()).device))  # fmt: skip
    rows = rd.read_metrics()
    # training time of every attempt (each step timed by Nanotron) plus this conversion and evaluation
    wall = sum(r.get("step_s") or 0.0 for r in rows) + (time.time() - eval_started)
    result = build_result(
        spec, rows, eval_loss_value=ev, wall_time=wall, train_tokens_available=data.train_tokens,
        final_loss_steps=opts.final_loss_steps,
        extra={"nanotron": {"world_size": world, "config": str(config_path), "model": path.model,
                            "attention": path.attention, "stood_in": stood_in, **native}},
    )  # fmt: skip
    if rows:  # the last step carries the held-out loss, as in local runs (one atomic rewrite)
        rows[-1] = {**rows[-1], "eval_loss": ev}
        atomic_write_text(rd.path / RunDir.METRICS, "".join(dumps(r, indent=None) + "\n" for r in rows))
    rd.write_result(result)
    return 0


def _native_eval(trainer: Any, data: Any, spec: RunSpec, world: int) -> dict[str, Any]:  # pragma: no cover
    """``eval_loss_nanotron`` where one process holds the whole model (world size 1), else the
    reason it was not computed; a failure here is recorded, not fatal: the run has trained."""
    from scaling.backends.nanotron.data import read_ds

    if world != 1:
        return {"eval_loss_nanotron": None, "eval_loss_nanotron_error": f"world size {world}: computed only on one GPU"}
    try:
        loss = nanotron_eval_loss(trainer.unwrapped_model, read_ds(data.val_file, data.vocab), seq_len=spec.shape.seq_len,
                                  max_tokens=spec.eval_tokens, device=f"cuda:{os.environ.get('LOCAL_RANK', 0)}")  # fmt: skip
        return {"eval_loss_nanotron": loss}
    except Exception as e:  # recorded beside the result for the GPU check to report
        return {"eval_loss_nanotron": None, "eval_loss_nanotron_error": f"{type(e).__name__}: {e}"}


def opts_data_folder(rd: RunDir) -> str:
    """The nanoset folder the config's data stage points at (its parent of ``train/``)."""
    import yaml

    cfg = yaml.safe_load((rd.path / CONFIG_NAME).read_text())
    return str(Path(cfg["data_stages"][0]["data"]["dataset"]["dataset_folder"][0]).parent)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
