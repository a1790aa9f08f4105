"""The local training loop: one run, from a :class:`RunSpec` to a finished run folder.

Short by design. Per optimizer step: ``accum`` forward/backward passes over micro-batches,
gradient clipping (global L2 norm), the learning rate of :func:`lr_at` for this step, one fused
(CPU/CUDA) AdamW step with decoupled weight decay on matrices only (Loshchilov & Hutter 2019; norms
and biases are not decayed). Values that need a host sync (loss, gradient norm) stay on the device
and are fetched once every ``log_every`` steps (every step on the CPU, where a fetch is free).

Data order is a pure function of (seed, step): the training tokens are cut into
``seq_len + 1``-token windows, each epoch visits them in a fresh permutation drawn from
``numpy.random.default_rng([seed, epoch])``, and step ``s`` reads windows ``s*B .. s*B + B - 1``
of that endless stream. Resuming therefore needs only the step number, and a resumed run on the
CPU reproduces the uninterrupted run's losses bit for bit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scaling import hardware
from scaling.errors import UsageError
from scaling.flops import flops_per_token
from scaling.runspec import RunSpec
from scaling.store import RunDir, atomic_write_json, read_json

from . import causal_attention
from . import checkpoint as ck
from .data import PreparedData, atomic_folder, prepare_data
from .memory import tune_malloc
from .model import LlamaLM, build_model, save_hf_model
from .optim import AdamW
from .options import decay_start, lr_at, validate_spec, warmup_steps

METRICS_FLUSH_S = 5.0  # seconds between metric writes (always at checkpoints and the end)

# ---- data ------------------------------------------------------------------------------------------


class Batches:
    """Step -> (inputs, targets): windows of ``seq_len + 1`` tokens, a seeded permutation per epoch."""

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int) -> None:
        self.tokens = np.asarray(tokens)  # a few MB: read into memory once
        self.T, self.B, self.seed = seq_len, batch_size, seed
        self.n_windows = (len(self.tokens) - 1) // seq_len
        if self.n_windows < 1:
            raise UsageError(
                f"data: {len(self.tokens)} training tokens are fewer than one sequence of {seq_len}; add text"
            )
        self._perm: tuple[int, np.ndarray] | None = None
        self._offsets = np.arange(seq_len + 1)

    def _epoch_perm(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n_windows))
        return self._perm[1]

    def windows(self, step: int) -> np.ndarray:
        g = np.arange(step * self.B, (step + 1) * self.B)
        epochs, pos = np.divmod(g, self.n_windows)
        idx = np.empty(self.B, dtype=np.int64)
        for e in np.unique(epochs):
            m = epochs == e
            idx[m] = self._epoch_perm(int(e))[pos[m]]
        return idx

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.tokens[self.windows(step)[:, None] * self.T + self._offsets].astype(np.int64)
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]


def eval_windows(tokens: np.ndarray, seq_len: int, max_tokens: int) -> torch.Tensor:
    """The first ``max_tokens`` of the validation split as (n, seq_len + 1) windows (fixed)."""
    n = max(1, min(max_tokens // seq_len, (len(tokens) - 1) // seq_len))
    if (len(tokens) - 1) // seq_len < 1:
        raise UsageError(
            f"data.val_frac: the validation split has {len(tokens)} tokens, fewer than one sequence"
        )
    idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)
    return torch.from_numpy(np.asarray(tokens)[idx].astype(np.int64))


# ---- peak FLOP/s for MFU -------------------------------------------------------------------------

def gpu_peak_flops(name: str, dtype: torch.dtype | None) -> float | None:
    """The device's dense peak at the run's matmul precision (:func:`scaling.hardware.peak_flops`)."""
    return hardware.peak_flops(name, "bf16" if dtype in (torch.bfloat16, torch.float16) else "fp32")


def cpu_peak_flops(threads: int, seconds: float = 0.2) -> float:
    """fp32 matmul FLOP/s at ``threads`` threads (the best of a few 512^3 products)."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    a @ b
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * 512**3 / (time.perf_counter() - t))
    return best


def peak_flops(
    device: torch.device, dtype: torch.dtype | None, threads: int, cache: Path | None
) -> float | None:
    if device.type == "cuda":
        return gpu_peak_flops(torch.cuda.get_device_name(device), dtype)
    path = cache / "cpu_peak.json" if cache else None
    key = f"{os.uname().nodename}:{threads}"
    known = (read_json(path) or {}) if path else {}
    if key in known:
        return float(known[key])
    v = cpu_peak_flops(threads)
    if path:
        atomic_write_json(path, {**known, key: v})
    return v


# ---- the run ---------------------------------------------------------------------------------------


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay, seen = [], [], set()
    for _, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, spec: RunSpec) -> AdamW:
    o = spec.optimizer
    return AdamW(_param_groups(model, o.weight_decay), lr=lr_at(spec, 0), betas=(o.beta1, o.beta2), eps=o.eps)


def _trunk_dir(spec: RunSpec, run_dir: RunDir) -> RunDir:
    assert spec.branch_of is not None
    p = Path(spec.branch_of).expanduser()
    if not p.is_absolute() and not p.exists():
        p = run_dir.path.parent / spec.branch_of
    if not p.is_dir():
        raise UsageError(
            f"branch_of={spec.branch_of!r}: no run folder {p}; give the trunk's run_id (same sweep) or path"
        )
    return RunDir(p)


def _branch_start(spec: RunSpec, run_dir: RunDir) -> tuple[ck.Checkpoint, RunDir, int]:
    """The trunk checkpoint a WSD cooldown branch starts from, after checking it fits."""
    trunk = _trunk_dir(spec, run_dir)
    tokens = spec.branch_from_tokens or 0
    if tokens % spec.batch_tokens:
        raise UsageError(
            f"branch_from_tokens={tokens}: must be a multiple of batch_tokens={spec.batch_tokens}"
        )
    step = tokens // spec.batch_tokens
    if step > decay_start(spec) or step < warmup_steps(spec):
        raise UsageError(
            f"branch_from_tokens={tokens}: step {step} must lie in this run's stable phase, steps "
            f"{warmup_steps(spec)}..{decay_start(spec)} (raise decay_frac or move the branch point)"
        )
    tspec = trunk.read_spec() or {}
    for field in ("shape", "batch_tokens", "data", "seed", "init_std"):
        mine = spec.model_dump(mode="json")[field]
        if tspec.get(field) != mine:
            raise UsageError(
                f"branch_of={spec.branch_of!r}: the trunk's {field} differs from this run's; branch a matching trunk"
            )
    if (tspec.get("optimizer") or {}).get("lr") != spec.optimizer.lr:
        raise UsageError(f"branch_of={spec.branch_of!r}: the trunk's optimizer.lr differs from this run's")
    c = ck.find_checkpoint(trunk.checkpoints, step)
    if c is None:
        have = [x.state.get("tokens") for x in ck.list_checkpoints(trunk.checkpoints)]
        raise UsageError(
            f"branch_from_tokens={tokens}: trunk {trunk.path.name} has no checkpoint there (it has tokens {have}); "
            "train the trunk past it with checkpoint_every dividing the branch step"
        )
    return c, trunk, step


@dataclass
class _Metrics:
    """Per-step values kept on the device until the next sync, then rows of ``metrics.jsonl``
    (appended at least every :data:`METRICS_FLUSH_S` seconds, and on demand)."""

    def __init__(self, rd: RunDir, spec: RunSpec, fpt: float, fpt_mm: float, peak: float | None,
                 progress: Callable[[dict[str, Any]], None] | None) -> None:
        self.rd, self.spec, self.fpt, self.fpt_mm, self.peak, self.progress = rd, spec, fpt, fpt_mm, peak, progress
        self.pending: list[tuple[int, torch.Tensor, torch.Tensor, float]] = []
        self.rows: list[dict[str, Any]] = []
        self.t_last = self.last_write = time.perf_counter()
        self.losses = [float(r["loss"]) for r in rd.read_metrics() if "loss" in r]

    def flush(self, write: bool, eval_loss: float | None = None) -> None:
        """Fetch the pending values (one host sync) into rows; write them when asked or due."""
        tok_per_step = self.spec.batch_tokens
        if self.pending:
            vals = torch.stack([torch.stack([l_, g]) for _, l_, g, _ in self.pending]).double().cpu().tolist()
            now = time.perf_counter()
            tps = len(self.pending) * tok_per_step / max(now - self.t_last, 1e-9)
            self.t_last = now
            for (s, _, _, lr), (loss, gnorm) in zip(self.pending, vals, strict=True):
                self.rows.append({
                    "step": s + 1,
                    "tokens": (s + 1) * tok_per_step,
                    "flops": (s + 1) * tok_per_step * self.fpt,
                    "loss": loss,
                    "lr": lr,
                    "grad_norm": gnorm,
                    "tokens_per_s": tps,
                    "mfu": hardware.achieved_mfu(tps, self.fpt_mm, 1, self.peak)
                    if self.peak and tps > 0 else None,
                })
                self.losses.append(loss)
            self.pending.clear()
            if self.progress:
                self.progress({**self.rows[-1], "steps": self.spec.steps})
        if eval_loss is not None and self.rows:
            self.rows[-1]["eval_loss"] = eval_loss
        if write or time.perf_counter() - self.last_write > METRICS_FLUSH_S:
            self.rd.append_metrics(self.rows)
            self.rows.clear()
            self.last_write = time.perf_counter()


@dataclass
class _Start:
    """Where a run (re)starts: its step, the wall time already spent, and where it came from."""

    step: int = 0
    wall_before: float = 0.0
    resumed_from: int | None = None
    branch: dict[str, Any] | None = None


def _open_run(spec: RunSpec, rd: RunDir) -> dict[str, Any] | None:
    """The finished result if there is one; else claim the folder for ``spec`` and mark it running.
    A folder holding another run is refused first, finished or not."""
    existing = rd.read_spec()
    if existing is not None and existing.get("run_id") not in (None, spec.run_id):
        raise UsageError(
            f"run_dir={rd.path}: holds run {existing.get('run_id')}, not {spec.run_id}; use another folder"
        )
    done = rd.read_result_or_none()  # a corrupt result.json is not done: resume from the checkpoint
    if done is not None:
        return done
    if existing is None:
        rd.write_spec(spec.to_json_dict())
    rd.mark_running()
    return None


def _restore(spec: RunSpec, rd: RunDir, model: LlamaLM, opt: AdamW) -> _Start:
    """Load the latest checkpoint (resume), or the trunk's (a WSD branch), or start fresh; the
    metrics file is cut back to match."""
    ck.clean_partial(rd.checkpoints)
    last = ck.latest_checkpoint(rd.checkpoints)
    if last is not None:
        state = ck.load_checkpoint(last, model, opt)
        rd.truncate_metrics_after(last.step)
        return _Start(last.step, float(state.get("wall_time", 0.0)), last.step, state.get("branch"))
    if spec.branch_of is not None:
        c, trunk, step = _branch_start(spec, rd)
        state = ck.load_checkpoint(c, model, opt)
        rd.truncate_metrics_after(-1)
        rd.append_metrics([r for r in trunk.read_metrics() if int(r.get("step", 0)) <= step])
        branch = {"of": trunk.path.name, "from_step": step, "from_tokens": step * spec.batch_tokens}
        return _Start(step, float(state.get("wall_time", 0.0)), None, branch)
    rd.truncate_metrics_after(-1)
    return _Start()


def evaluate(model: LlamaLM, loss_fn: Callable[..., torch.Tensor], val: torch.Tensor, micro: int,
             amp: torch.dtype | None) -> float:
    """Mean held-out loss over the fixed validation windows, ``micro`` sequences at a time."""
    device = val.device
    model.eval()
    total = torch.zeros((), device=device, dtype=torch.float64)
    n = 0
    with torch.no_grad(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        for i in range(0, len(val), micro):
            w = val[i : i + micro]
            total += loss_fn(w[:, :-1], w[:, 1:]).double() * len(w)
            n += len(w)
    model.train()
    return float(total / n)


def _setup_device(opts: Any) -> tuple[torch.device, torch.dtype | None, int]:
    """Threads, device, autocast dtype; on the CPU the allocator tuned and the attention op ready."""
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = opts.torch_device()
    if device.type == "cpu":
        tune_malloc()
    amp = opts.autocast_dtype(device)
    if device.type == "cpu" and amp is None:
        causal_attention.available()  # build (once per machine) or load it before any step is timed
    return device, amp, torch.get_num_threads()


def train_run(
    spec: RunSpec,
    run_dir: RunDir | str | Path,
    cache_dir: str | Path | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    """Train or resume ``spec`` in ``run_dir``; return ``result.json``'s dict.

    ``stop_after_steps`` ends the process's work early (after a checkpoint), as a preemption
    would; the next call resumes. ``progress`` receives a dict after every logged step.
    """
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    opts = validate_spec(spec)
    done = _open_run(spec, rd)
    if done is not None:
        return done
    device, amp, threads = _setup_device(opts)
    cache = Path(cache_dir).expanduser() if cache_dir else None
    data = prepare_data(spec.data, spec.shape.vocab, cache, dtype=opts.token_dtype)
    shape = spec.model_shape
    micro = spec.micro_batch or spec.batch_size
    accum = spec.batch_size // micro
    batches = Batches(data.tokens("train"), shape.seq_len, spec.batch_size, spec.seed)
    val = eval_windows(data.tokens("val"), shape.seq_len, spec.eval_tokens)

    torch.manual_seed(spec.seed)
    model = build_model(shape, spec.init_std, spec.seed).to(device)
    opt = make_optimizer(model, spec)
    start = _restore(spec, rd, model, opt)
    # compile the loss method (forward + fused cross-entropy); the module itself stays plain
    loss_fn = torch.compile(model.loss) if opts.compile else model.loss
    fpt_mm = flops_per_token(shape, "matmul")
    peak = peak_flops(device, amp, threads, cache)
    log_every = opts.log_every or (1 if device.type == "cpu" else 10)
    keep_all = opts.keep_checkpoints if opts.keep_checkpoints is not None else spec.schedule.kind == "constant"
    val = val.to(device)
    t0 = time.perf_counter()
    metrics = _Metrics(rd, spec, flops_per_token(shape, spec.flops_convention), fpt_mm, peak, progress)

    def save(s: int) -> None:
        extra = {"tokens": s * spec.batch_tokens, "wall_time": start.wall_before + time.perf_counter() - t0,
                 "run_id": spec.run_id, "branch": start.branch, "data": {"seed": spec.seed, "next_window": s * spec.batch_size}}
        ck.save_checkpoint(rd.checkpoints, s, model, opt, extra, keep_last=None if keep_all else 1)

    step, ran = start.step, 0
    while step < spec.steps:
        lr = lr_at(spec, step)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batches.get(step)
        loss, gnorm = train_step(
            model, opt, loss_fn, x.to(device), y.to(device), accum, spec.optimizer.grad_clip, amp
        )
        metrics.pending.append((step, loss, gnorm, lr))
        step += 1
        ran += 1
        last_step = step == spec.steps
        do_eval = last_step or (spec.eval_every is not None and step % spec.eval_every == 0)
        do_ckpt = last_step or (spec.checkpoint_every is not None and step % spec.checkpoint_every == 0)
        stop = stop_after_steps is not None and ran >= stop_after_steps
        if do_eval or do_ckpt or stop or len(metrics.pending) >= log_every:
            metrics.flush(write=do_ckpt or stop, eval_loss=evaluate(model, loss_fn, val, micro, amp) if do_eval else None)
        if do_ckpt or stop:
            save(step)
        if stop and not last_step:
            rd.update_status("pending", stopped_at_step=step)
            return {"stopped_at_step": step}

    wall = start.wall_before + time.perf_counter() - t0
    if opts.save_model:
        save_final_model(model, data, rd.path / "model")
    return _finish(spec, rd, data, metrics.losses, wall, peak, fpt_mm, device, amp, threads, start.resumed_from,
                   start.branch)


def train_step(
    model: torch.nn.Module,
    opt: AdamW,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    accum: int = 1,
    clip: float | None = 1.0,
    amp: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over ``accum`` micro-batches; returns (mean loss, pre-clip grad norm)
    as device tensors (no host sync)."""
    micro = x.shape[0] // accum
    loss_sum = torch.zeros((), device=x.device)
    for m in range(accum):
        xs, ys = (x, y) if accum == 1 else (x[m * micro : (m + 1) * micro], y[m * micro : (m + 1) * micro])
        with torch.autocast(x.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = loss_fn(xs, ys)
        (loss / accum).backward()
        loss_sum += loss.detach()
    params = [p for g in opt.param_groups for p in g["params"]]
    gnorm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"), foreach=True)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss_sum / accum, gnorm.detach()


def save_final_model(model: LlamaLM, data: PreparedData, path: Path) -> None:
    """The transformers model folder (weights, config, tokenizer), renamed into place."""
    with atomic_folder(path, prefix=".tmp-model-") as tmp:
        save_hf_model(model, data.tokenizer_dir, tmp)


def _finish(
    spec: RunSpec,
    rd: RunDir,
    data: PreparedData,
    losses: list[float],
    wall: float,
    peak: float | None,
    fpt_mm: float,
    device: torch.device,
    amp: torch.dtype | None,
    threads: int,
    resumed_from: int | None,
    branch: dict[str, Any] | None,
) -> dict[str, Any]:
    shape = spec.model_shape
    rows = rd.read_metrics()
    eval_loss = next((r["eval_loss"] for r in reversed(rows) if r.get("eval_loss") is not None), None)
    k = max(1, spec.steps // 20)
    tail = [float(r["loss"]) for r in rows[-k:]] or losses[-k:]
    tokens = spec.steps * spec.batch_tokens
    # tokens/s of the steps timed in this run folder (the rows), robust to resumes
    tps_rows = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
    tps = float(np.median(tps_rows)) if tps_rows else tokens / max(wall, 1e-9)
    result = {
        "name": spec.name,
        "budget": spec.budget,
        "run_id": spec.run_id,
        "final_loss": float(np.mean(tail)),
        "final_loss_steps": len(tail),
        "eval_loss": eval_loss,
        "params": shape.params,
        "non_embedding_params": shape.non_embedding_params,
        "embedding_params": shape.embedding_params,
        "tokens": tokens,
        **spec.flops_fields(tokens),
        "flops_matmul": fpt_mm * tokens,
        "wall_time": wall,
        "steps": spec.steps,
        "epochs": tokens / data.n_train_tokens,
        "unique_tokens": data.n_train_tokens,
        "tokens_per_s": tps,
        "mfu": hardware.achieved_mfu(tps, fpt_mm, 1, peak) if peak and tps > 0 else None,
        "device": str(device),
        "dtype": str(amp).removeprefix("torch.") if amp else "float32",
        "threads": threads,
        "resumed_from_step": resumed_from,
        "branch": branch,
    }
    rd.write_result(result)
    return result
