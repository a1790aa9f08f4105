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

import functools
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
        """Wall time of one run for ``sweep plan`` tables and the launcher's ETA; ``None`` when
        unknown. A backend may also offer ``timing_model(specs, threads) ->``
        :class:`scaling.timing.TimingModel` (measured on this machine), which both then use."""
        ...


# A backend may also define ``execution_options``: the ``backend_options`` keys that change how a
# run executes but not its loss; they are kept beside the run's identity (``RunSpec.execution_options``).


# Built-in backends, imported only when used so that `import scaling.sweep` never imports torch.
BUILTIN: dict[str, str] = {
    "local": "scaling.backends.local:LocalBackend",
    "nanotron": "scaling.backends.nanotron:NanotronBackend",
}
ENTRY_POINT_GROUP = "scaling.backends"  # third-party backends: [project.entry-points."scaling.backends"]
_REGISTERED: dict[str, str] = {}  # register_backend() in this process


def register_backend(name: str, target: str) -> None:
    """Register a backend in this process as ``"package.module:ClassName"`` (an installed package
    registers itself instead with an entry point in the ``scaling.backends`` group)."""
    if not name or ":" in name:
        raise ValueError(f"backend name {name!r}: a plain name such as 'mytrainer'")
    if target.count(":") != 1:
        raise ValueError(f"backend target {target!r}: 'package.module:ClassName'")
    _REGISTERED[name] = target


@functools.cache
def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _registry() -> dict[str, str]:
    # an installed plugin cannot shadow a built-in; an explicit register_backend() can
    return {**_entry_points(), **BUILTIN, **_REGISTERED}


def backend_names() -> list[str]:
    return sorted(_registry())


def backend_target(name: str) -> str:
    """``"module:Class"`` of a registered backend name; anything else is refused, unimported."""
    reg = _registry()
    if name in reg:
        return reg[name]
    hint = (f"; a backend is a registered name, not code to import: install it as an entry point in the "
            f"{ENTRY_POINT_GROUP!r} group" if ":" in name else "")
    raise ValueError(f"{name!r} is not a registered backend: choose one of {', '.join(sorted(reg))}{hint}")


def load_target(target: str) -> type:
    """The class a registry entry names (imports its module)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def backend_class(name: str) -> type:
    return load_target(backend_target(name))


def get_backend(name: str, **options: Any) -> Backend:
    return backend_class(name)(**options)


def execution_option_names(name: str) -> frozenset[str]:
    """The ``backend_options`` keys backend ``name`` declares as execution options (threads, log
    intervals, paths, ports: how a run executes, not what it computes); none for an unknown name."""
    try:
        return _execution_option_names(backend_target(name))
    except (ValueError, ImportError, AttributeError):
        return frozenset()


@functools.cache
def _execution_option_names(target: str) -> frozenset[str]:
    return frozenset(getattr(load_target(target), "execution_options", ()))
