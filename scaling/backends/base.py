"""The one interface between the sweep engine and whatever trains a model.

A backend turns a :class:`~scaling.runspec.RunSpec` into a finished run folder. The sweep engine
knows only this protocol and the registry below; backends never import ``scaling.sweep``.

Contract for ``train(spec, run_dir)``:

* write ``spec.json`` if absent, ``status.json`` (running), append per-step rows to
  ``metrics.jsonl`` (keys: step, tokens, flops, loss, lr, grad_norm, tokens_per_s, mfu and
  eval_loss where evaluated), checkpoints under ``checkpoints/`` at ``spec.checkpoint_every``;
* resume from the newest checkpoint in ``run_dir`` when one exists (exactly the same losses
  as an uninterrupted run where the hardware allows);
* write ``result.json`` last (via :meth:`RunDir.write_result`) with at least: final_loss,
  eval_loss, params, non_embedding_params, tokens, flops, wall_time, epochs, steps;
* return that result dict. Raise on failure (the launcher records it and may retry).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

from scaling.runspec import RunSpec
from scaling.store import RunDir


@runtime_checkable
class Backend(Protocol):
    name: str

    def prepare(self, specs: list[RunSpec], cache_dir: str) -> None:
        """Once per sweep, before any run: e.g. tokenize the corpus into the shared cache."""
        ...

    def train(self, spec: RunSpec, run_dir: RunDir) -> dict[str, Any]:
        """Train (or resume) one run; write the run folder; return ``result.json``'s dict."""
        ...

    def estimate_seconds(self, spec: RunSpec) -> float | None:
        """Rough wall time for ``sweep plan`` tables; ``None`` when unknown."""
        ...


# name -> "module:attribute"; imported lazily so `import scaling.sweep` never imports torch.
_REGISTRY: dict[str, str] = {
    "local": "scaling.backends.local:LocalBackend",
    "nanotron": "scaling.backends.nanotron:NanotronBackend",
}


def register_backend(name: str, target: str) -> None:
    """Register a third-party backend as ``"package.module:ClassName"``."""
    _REGISTRY[name] = target


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def backend_target(name: str) -> str:
    """``"module:Class"`` of a registered backend; a ``"module:Class"`` string is returned as is,
    so job processes can import a backend registered only in the launching process."""
    if ":" in name:
        return name
    if name not in _REGISTRY:
        raise ValueError(f"backend={name!r}: choose one of {', '.join(backend_names())}")
    return _REGISTRY[name]


def get_backend(name: str, **options: Any) -> Backend:
    if name not in _REGISTRY:
        raise ValueError(f"backend={name!r}: choose one of {', '.join(backend_names())}")
    module, _, attr = _REGISTRY[name].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    return cls(**options)
