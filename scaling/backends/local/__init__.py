"""The local backend: train Llama-style models on this machine's CPU or one CUDA GPU.

``LocalBackend().train(spec, run_dir)`` trains (or resumes) one run and writes its run folder
(``spec.json``, ``status.json``, ``metrics.jsonl``, ``checkpoints/``, ``model/``, ``result.json``);
``prepare(specs, cache_dir)`` tokenizes each distinct corpus once before a sweep. Torch is imported
only when a method is called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scaling.runspec import RunSpec
from scaling.store import RunDir
from scaling.timing import TimingModel


class LocalBackend:
    """The embedded trainer (see :mod:`scaling.backends.local.train`)."""

    name = "local"
    # how a run executes, not what it computes: kept out of its run id (RunSpec.execution_options)
    execution_options = frozenset({"threads", "log_every", "keep_checkpoints", "token_dtype", "save_model"})

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.cache_dir = str(cache_dir) if cache_dir else None

    def _cache(self, cache_dir: str | Path | None = None) -> Path:
        from .data import default_cache_dir

        c = cache_dir or self.cache_dir
        return Path(c).expanduser() if c else default_cache_dir()

    def prepare(self, specs: list[RunSpec], cache_dir: str | None = None) -> None:
        """Tokenize every distinct (corpus, tokenizer, vocab) of ``specs`` into the cache."""
        from .data import prepare_data

        cache = self._cache(cache_dir)
        self.cache_dir = str(cache)
        seen: set[tuple[str, int, Any]] = set()
        for s in specs:
            key = (s.data.model_dump_json(), s.shape.vocab, s.options.get("token_dtype"))
            if key not in seen:
                seen.add(key)
                prepare_data(s.data, s.shape.vocab, cache, dtype=s.options.get("token_dtype"))

    def train(self, spec: RunSpec, run_dir: RunDir | str | Path, **kwargs: Any) -> dict[str, Any]:
        """Train or resume ``spec`` in ``run_dir``; returns ``result.json``'s dict."""
        from .train import train_run

        return train_run(spec, run_dir, cache_dir=self._cache(), **kwargs)

    def timing_model(self, specs: list[RunSpec], threads: int) -> TimingModel:
        """The sweep's timing model on this machine: a short probe of a few of its shapes at
        ``threads`` threads (cached per machine), plus the measured process start."""
        from .probe import timing_model

        return timing_model(specs, threads)

    def estimate_seconds(self, spec: RunSpec) -> float | None:
        """Seconds of one run from :meth:`timing_model` (at the run's ``threads`` option, else all cores)."""
        import os

        threads = int(spec.options.get("threads") or os.cpu_count() or 1)
        return self.timing_model([spec], threads).run_seconds(spec)


__all__ = ["LocalBackend"]
