"""Sweep specs: a YAML file validated by pydantic, with errors that name the key and its line.

A spec has shared training settings (data, model family, batch and LR rules, schedule, optimizer),
a backend, executor settings and one grid::

    name: quickstart
    backend: local
    data: {source: builtin:default, tokenizer: bpe}
    model: {vocab: 1024, seq_len: 128, count: non_embedding}
    train: {batch: 2048, lr: {rule: inverse_width, scale: 0.32, max: 0.01}}
    grid:
      kind: isoflop
      budgets: [1e11, 2e11, 4e11]
      around_optimum: {k: 5, spread: 6, centre: tokens_per_param, tokens_per_param: 200}
    executor: {kind: local, retries: 2}

Grid kinds: ``isoflop`` (budgets x sizes), ``kaplan_n`` (sizes at fixed tokens), ``kaplan_d``
(tokens at a fixed size), ``wsd_branches`` (a constant-LR trunk per size with cooldown branches)
and ``runs`` (an explicit list). A size is either a number (target parameters, counted as
``model.count`` says) or an explicit ``{layers, hidden, heads}`` shape.

Pure: pydantic and PyYAML only.
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from scaling.errors import UsageError
from scaling.runspec import DataSpec, ScheduleSpec, StrictModel
from scaling.sweep.spec_grid import (
    GRID_KINDS,
    AroundOptimum,
    Extend,
    Grid,
    IsoflopGrid,
    KaplanDGrid,
    KaplanNGrid,
    Repeats,
    RunEntry,
    RunsGrid,
    ShapeSize,
    WsdGrid,
)
from scaling.sweep.yaml_source import compose, locate, record_lines

# ---- the model family ----------------------------------------------------------------------------


class ModelSettings(StrictModel):
    """The model family every size of the sweep belongs to, and how a target N becomes a shape.

    ``count``: what numeric sizes and ``tokens_per_param`` refer to, ``total`` parameters
    (Chinchilla) or ``non_embedding`` (Kaplan). The ladder fields are those of
    :class:`scaling.shapes.LadderRule`.
    """

    vocab: int = Field(default=32000, gt=0)
    seq_len: int = Field(default=2048, gt=0)
    tied: bool = False
    glu: bool = True
    qkv_bias: bool = False
    count: Literal["total", "non_embedding"] = "total"
    aspect_ratio: float = Field(default=64.0, gt=0)
    head_dim: int = Field(default=64, gt=0)
    kv_ratio: int = Field(default=1, gt=0)
    hidden_multiple: int = Field(default=64, gt=0)
    ffn_multiple: int = Field(default=256, gt=0)
    min_layers: int = Field(default=1, gt=0)
    max_layers: int = Field(default=128, gt=0)


# ---- batch and learning-rate rules -------------------------------------------------------------


class BatchRule(StrictModel):
    """Tokens per optimizer step.

    * ``fixed``: ``tokens``.
    * ``deepseek``: ``B = 0.2920 C^0.3271`` with C = M D (DeepSeek-AI 2024, eq. 1).
    * ``table``: ``table`` maps parameter counts (``model.count``) to tokens; the entry with the
      nearest count (in log space) applies.

    The result is clipped to ``[min_tokens, max_tokens]`` and rounded to a whole number of
    sequences, a multiple of ``sequences_multiple`` (e.g. data-parallel ranks x micro-batch).
    """

    rule: Literal["fixed", "deepseek", "table"] = "fixed"
    sequences_multiple: int = Field(default=1, gt=0)
    tokens: int | None = Field(default=None, gt=0)
    table: dict[float, int] | None = None
    min_tokens: int | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> BatchRule:
        if self.rule == "fixed" and self.tokens is None:
            raise ValueError("rule 'fixed' needs tokens: e.g. batch: {rule: fixed, tokens: 2048} or batch: 2048")
        if self.rule == "table" and not self.table:
            raise ValueError("rule 'table' needs table: {params: batch_tokens, ...}")
        return self


class LrRule(StrictModel):
    """Peak learning rate.

    * ``fixed``: ``value``.
    * ``inverse_width``: ``min(max, scale / hidden)`` (muP-style 1/width scaling of Adam's LR).
    * ``deepseek``: ``eta = 0.3118 C^-0.1250`` with C = M D (DeepSeek-AI 2024, eq. 1).
    * ``table``: parameter count -> LR, nearest entry in log space.
    """

    rule: Literal["fixed", "inverse_width", "deepseek", "table"] = "fixed"
    value: float | None = Field(default=None, gt=0)
    scale: float | None = Field(default=None, gt=0)
    max: float | None = Field(default=None, gt=0)
    table: dict[float, float] | None = None

    @model_validator(mode="after")
    def _complete(self) -> LrRule:
        need = {"fixed": "value", "inverse_width": "scale", "table": "table"}.get(self.rule)
        if need and not getattr(self, need):
            raise ValueError(f"rule {self.rule!r} needs {need}")
        return self


class OptimizerSettings(StrictModel):
    """AdamW settings shared by every run (the LR comes from ``train.lr``)."""

    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.95, ge=0, lt=1)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    grad_clip: float | None = Field(default=1.0, gt=0)


class TrainSettings(StrictModel):
    batch: BatchRule = BatchRule(tokens=2048)
    lr: LrRule = LrRule(value=1e-3)
    schedule: ScheduleSpec = ScheduleSpec()
    optimizer: OptimizerSettings = OptimizerSettings()
    seeds: list[int] = Field(default=[0], min_length=1)
    micro_batch: int | None = Field(default=None, gt=0)
    init_std: float = Field(default=0.02, gt=0)
    eval_every: int | None = Field(default=None, gt=0)
    eval_tokens: int = Field(default=65536, gt=0)
    checkpoint_every: int | None = Field(default=None, gt=0)
    flops_convention: str = "6N"

    @field_validator("batch", mode="before")
    @classmethod
    def _batch_shorthand(cls, v: Any) -> Any:
        return {"rule": "fixed", "tokens": v} if isinstance(v, (int, float, str)) else v

    @field_validator("lr", mode="before")
    @classmethod
    def _lr_shorthand(cls, v: Any) -> Any:
        return {"rule": "fixed", "value": v} if isinstance(v, (int, float, str)) else v

    @field_validator("flops_convention")
    @classmethod
    def _convention(cls, v: str) -> str:
        from scaling.flops import FLOP_CONVENTIONS

        if v not in FLOP_CONVENTIONS:
            raise ValueError(f"unknown convention {v!r}: choose one of {', '.join(FLOP_CONVENTIONS)}")
        return v


# ---- executors -------------------------------------------------------------------------------------


class SlurmSettings(StrictModel):
    """What ``sbatch`` is asked for, per run (one array task per run)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = Field(default=60, gt=0)
    nodes: int = Field(default=1, gt=0)
    gpus_per_node: int = Field(default=0, ge=0)
    tasks_per_node: int = Field(default=1, gt=0)
    cpus_per_task: int | None = Field(default=None, gt=0)
    mem_gb: float | None = Field(default=None, gt=0)
    array_parallelism: int = Field(default=64, gt=0)
    constraint: str | None = None
    exclude: str | None = None
    signal_delay_s: int = Field(default=120, ge=0)
    max_num_timeout: int = Field(default=3, ge=0, description="requeues after a timeout or pre-emption")
    setup: list[str] = Field(default_factory=list, description="shell lines run before the job")
    additional: dict[str, str | int | bool] = Field(default_factory=dict, description="extra sbatch options")


class ExecutorSettings(StrictModel):
    """How runs are launched.

    ``debug`` runs them one by one in this process; ``local`` as processes on this machine,
    ``max_parallel`` at once (default: one per core) with ``threads_per_run`` threads each
    (default: cores / max_parallel); ``slurm`` as a job array. Failed runs are retried up to
    ``retries`` times; each resumes from its own checkpoint.

    ``local`` on a machine with GPUs puts each run on a GPU of its own (``CUDA_VISIBLE_DEVICES``),
    ``runs_per_gpu`` at a time on each (``auto``: as many as their estimated memory allows), on the
    ``gpus`` listed (default: every visible GPU; ``[]``: the CPU), see :mod:`scaling.sweep.gpus`.
    """

    kind: Literal["debug", "local", "slurm"] = "local"
    max_parallel: int | None = Field(default=None, gt=0)
    threads_per_run: int | None = Field(default=None, gt=0)
    gpus: list[int] | None = Field(default=None, description="local: GPU indices (default: all visible; []: CPU)")
    runs_per_gpu: int | Literal["auto"] = Field(default=1, description="local: runs at once on each GPU, or auto")
    retries: int = Field(default=2, ge=0)
    timeout_min: int = Field(default=24 * 60, gt=0)
    poll_s: float = Field(default=0.5, gt=0)
    slurm: SlurmSettings = SlurmSettings()

    @field_validator("gpus")
    @classmethod
    def _distinct_gpus(cls, v: list[int] | None) -> list[int] | None:
        from scaling.sweep.gpus import gpu_list_problem

        problem = gpu_list_problem(v or [])
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("runs_per_gpu")
    @classmethod
    def _positive_runs_per_gpu(cls, v: int | str) -> int | str:
        if v != "auto" and int(v) < 1:
            raise ValueError(f"{v}: at least 1 run a GPU, or auto")
        return v


# ---- the spec --------------------------------------------------------------------------------------


class SweepSpec(StrictModel):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    backend: str = Field(default="local", description="a registered backend name (built in or an entry point)")
    backend_options: dict[str, Any] = Field(default_factory=dict)
    data: DataSpec = DataSpec()
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    grid: Grid
    executor: ExecutorSettings = ExecutorSettings()
    pipeline: dict[str, Any] = Field(
        default_factory=dict, description="settings of `scaling run` (checked by scaling.pipeline.StudyOptions)"
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        from scaling.backends.base import backend_target

        backend_target(v)  # a name only: nothing named in a spec is imported to check it
        return v

    @model_validator(mode="after")
    def _repeats_are_new_seeds(self) -> SweepSpec:
        rep = getattr(self.grid, "repeats", None)
        doubled = sorted(set(rep.seeds) & set(self.train.seeds)) if rep is not None else []
        if doubled:
            raise ValueError(f"grid.repeats.seeds: {doubled} already in train.seeds; repeat with other seeds")
        return self

    def where(self, *path: Any) -> str:
        """``quickstart.yaml:21: grid.sizes.3``: the file and line a path of the spec was written at
        (the nearest enclosing key the file has), for errors found after validation."""
        source, lines = _ORIGINS.get(id(self), ("", {}))
        dotted = ".".join(str(x) for x in path)
        p = tuple(path)
        while p and p not in lines:
            p = p[:-1]
        line = lines.get(p) if p else None
        where = f"{source}:{line}" if source and line else source
        return f"{where}: {dotted}" if where else dotted

    def to_yaml(self) -> str:
        """The resolved spec (every default filled in), as ``sweep.yaml`` stores it."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ---- loading with line numbers ---------------------------------------------------------------------

_ALL_FIELDS = sorted(
    {
        f
        for m in (SweepSpec, ModelSettings, BatchRule, LrRule, OptimizerSettings, TrainSettings, AroundOptimum,
                  Extend, Repeats, IsoflopGrid, KaplanNGrid, KaplanDGrid, WsdGrid, RunEntry, RunsGrid, SlurmSettings,
                  ExecutorSettings, ShapeSize, DataSpec, ScheduleSpec)
        for f in m.model_fields
    }
)


def _format_errors(err: ValidationError, data: Any, lines: dict[tuple[Any, ...], int], source: str) -> str:
    msgs: list[str] = []
    seen: set[str] = set()
    errors = err.errors()
    for e in errors:
        loc = tuple(e["loc"])
        # A size is a number or a shape: report only the branch that matches what was written.
        if "constrained-float" in loc and isinstance(e.get("input"), Mapping):
            continue
        if "ShapeSize" in loc and e["type"] == "model_type" and not isinstance(e.get("input"), Mapping):
            continue
        path, line = locate(tuple(e["loc"]), data, lines)
        if e["type"] == "union_tag_invalid":
            path, line = locate((*path, "kind"), data, lines)
        if e["type"] == "missing" and loc:
            path = (*path, loc[-1])
        dotted = ".".join(str(p) for p in path) or "(top level)"
        if e["type"] == "extra_forbidden":
            key = str(path[-1]) if path else dotted
            close = difflib.get_close_matches(key, _ALL_FIELDS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else "; remove it"
            msg = f"unknown key {key!r}{hint}"
        elif e["type"] == "union_tag_invalid":
            msg = f"unknown grid kind {e['input'].get('kind')!r}: choose one of {', '.join(GRID_KINDS)}" if isinstance(e.get("input"), Mapping) else str(e["msg"])
        elif e["type"] == "missing":
            msg = "required; add it"
        elif e["type"] == "union_tag_not_found":
            msg = f"missing 'kind': choose one of {', '.join(GRID_KINDS)}"
        else:
            msg = str(e["msg"]).removeprefix("Value error, ")
        where = f"{source}:{line}: " if line else f"{source}: "
        text = f"{where}{dotted}: {msg}"
        if text not in seen:
            seen.add(text)
            msgs.append(text)
    return "; ".join(msgs[:6]) + (f"; and {len(msgs) - 6} more" if len(msgs) > 6 else "")


MAX_SPEC_BYTES = 4 << 20
"""Largest spec file read (4 MiB); a hand-written spec is a few KB."""


# Where each parsed spec came from (file name, line of every key), kept beside the model rather than in
# it so that two specs with the same settings stay equal; dropped when the spec is.
_ORIGINS: dict[int, tuple[str, dict[tuple[Any, ...], int]]] = {}


def parse_spec(text: str, source: str = "<spec>") -> SweepSpec:
    """Validate YAML text; errors are :class:`UsageError` naming ``source:line: key: problem``.

    Aliases are allowed (``&base`` / ``*base``) but their expansion is bounded by
    :data:`~scaling.sweep.yaml_source.MAX_SPEC_NODES`, so a hostile spec is refused before it is expanded.
    """
    node, data = compose(text, source)
    if not isinstance(data, Mapping):
        raise UsageError(f"{source}: a sweep spec is a YAML mapping with at least name and grid")
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        record_lines(node, lines)
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as e:
        raise UsageError(_format_errors(e, data, lines, source)) from None
    _ORIGINS[id(spec)] = (source, lines)
    weakref.finalize(spec, _ORIGINS.pop, id(spec), None)
    return spec


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec file (see :func:`parse_spec`); at most :data:`MAX_SPEC_BYTES`."""
    p = Path(path)
    if p.is_dir() and (p / "sweep.yaml").exists():
        p = p / "sweep.yaml"  # a sweep folder: its resolved spec
    if not p.is_file():
        what = "is a folder without sweep.yaml" if p.is_dir() else "no such file"
        raise UsageError(f"spec {str(p)!r}: {what}; give a sweep YAML (see sweeps/)")
    size = p.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise UsageError(
            f"spec {p.name}: {size:,} bytes, more than {MAX_SPEC_BYTES:,}; a sweep spec is a few KB of YAML"
        )
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"spec {p.name}: byte {e.start} is not UTF-8; save the spec as UTF-8 text") from None
    return parse_spec(text, source=p.name)
