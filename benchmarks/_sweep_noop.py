"""No-op work for benchmarks/sweep_overhead.py: what a job imports must be the same on both sides."""

from __future__ import annotations

from typing import Any


def noop() -> int:
    return 0


class NoopBackend:
    """A backend that finishes each run at once (writes result.json and nothing else)."""

    name = "noop"

    def prepare(self, specs: list[Any], cache_dir: str) -> None:
        pass

    def estimate_seconds(self, spec: Any) -> float:
        return 0.0

    def train(self, spec: Any, run_dir: Any) -> dict[str, Any]:
        result = {"final_loss": 0.0, "eval_loss": 0.0, "steps": spec.steps, "tokens": spec.tokens}
        run_dir.write_result(result)
        return result
