"""Training checkpoints: safetensors for every tensor, JSON for everything else.

A checkpoint is a folder ``checkpoints/step-00000123/`` holding ``tensors.safetensors`` (model
parameters ``model.<name>``, AdamW moments ``optim.<i>.exp_avg`` / ``.exp_avg_sq`` / ``.step``,
RNG states ``rng.torch`` / ``rng.cuda``) and ``state.json`` (step, tokens, wall time, optimizer
hyper-parameters, data position). It is written into a hidden temporary folder and renamed into
place, so a SIGKILL at any moment leaves either the old set of checkpoints or the new one; folders
without ``state.json`` are ignored and removed. Nothing is unpickled on load.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from scaling.store import apply_umask, atomic_write_json, make_temp_dir, read_json

PREFIX = "step-"
TENSORS = "tensors.safetensors"
STATE = "state.json"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int

    @property
    def state(self) -> dict[str, Any]:
        return read_json(self.path / STATE) or {}


def list_checkpoints(folder: str | Path) -> list[Checkpoint]:
    """Complete checkpoints, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        if p.is_dir() and p.name.startswith(PREFIX) and (p / STATE).exists() and (p / TENSORS).exists():
            try:
                out.append(Checkpoint(p, int(p.name.removeprefix(PREFIX))))
            except ValueError:
                continue
    return sorted(out, key=lambda c: c.step)


def latest_checkpoint(folder: str | Path) -> Checkpoint | None:
    ckpts = list_checkpoints(folder)
    return ckpts[-1] if ckpts else None


def find_checkpoint(folder: str | Path, step: int) -> Checkpoint | None:
    return next((c for c in list_checkpoints(folder) if c.step == step), None)


def clean_partial(folder: str | Path) -> None:
    """Remove temporary folders left by a kill during a save."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".tmp-"):
                shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(
    folder: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: Any,
    state: dict[str, Any],
    keep_last: int | None = 1,
    keep_steps: set[int] | frozenset[int] = frozenset(),
) -> Checkpoint:
    """Write a checkpoint atomically; then prune older ones down to ``keep_last`` (None keeps
    all), never removing the steps in ``keep_steps``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in seen:  # a tied lm_head is the embedding
            continue
        seen.add(id(p))
        tensors[f"model.{name}"] = p.detach().cpu().contiguous()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        for k, v in optimizer.state.get(p, {}).items():
            if torch.is_tensor(v):
                tensors[f"optim.{i}.{k}"] = v.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    groups = [
        {k: v for k, v in g.items() if k != "params"} | {"n_params": len(g["params"])}
        for g in optimizer.param_groups
    ]
    tmp = make_temp_dir(folder)
    save_file(tensors, str(tmp / TENSORS))
    apply_umask(tmp / TENSORS)  # safetensors writes its file 0600
    atomic_write_json(tmp / STATE, {**state, "step": step, "param_groups": groups})
    final = folder / f"{PREFIX}{step:08d}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    ckpts = list_checkpoints(folder)
    if keep_last is not None:
        for c in ckpts[: max(0, len(ckpts) - keep_last)]:
            if c.step not in keep_steps and c.path != final:
                shutil.rmtree(c.path, ignore_errors=True)
    return Checkpoint(final, step)


def load_checkpoint(
    ckpt: Checkpoint, model: torch.nn.Module, optimizer: Any, restore_rng: bool = True
) -> dict[str, Any]:
    """Load weights, optimizer moments and RNG state in place; return ``state.json``."""
    device = next(model.parameters()).device
    tensors = load_file(str(ckpt.path / TENSORS), device="cpu")
    state = json.loads((ckpt.path / STATE).read_text())
    with torch.no_grad():
        seen: set[int] = set()
        for name, p in model.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            p.copy_(tensors[f"model.{name}"].to(device))
    if optimizer is not None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, v in tensors.items():
            if key.startswith("optim."):
                _, i, k = key.split(".", 2)
                per_param.setdefault(int(i), {})[k] = v
        optimizer.state.clear()
        for i, p in enumerate(params):
            if i in per_param:
                optimizer.state[p] = {k: t.to(p.device) for k, t in per_param[i].items()}
        for g, saved in zip(optimizer.param_groups, state.get("param_groups", []), strict=False):
            g.update(
                {
                    k: (tuple(v) if k == "betas" else v)
                    for k, v in saved.items()
                    if k not in ("params", "n_params")
                }
            )
    if restore_rng:
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])
    return state
