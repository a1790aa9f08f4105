"""Resumable stages: each stage of a study records that it finished, and how long it took.

A stage is done when ``STUDY/stages/<name>.json`` exists (written atomically after the stage's
own artifacts). Running a study again skips done stages, so a killed study carries on where it
stopped; ``force`` reruns a stage and every stage after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaling.store import atomic_write_json, read_json


@dataclass
class StageLog:
    """Where the stage markers of one study live, and the minutes each stage took."""

    root: Path
    minutes: dict[str, float] = field(default_factory=dict)

    def marker(self, name: str) -> Path:
        return self.root / "stages" / f"{name}.json"

    def done(self, name: str) -> dict[str, Any] | None:
        return read_json(self.marker(name))

    def run(
        self,
        name: str,
        fn: Callable[[], dict[str, Any] | None],
        *,
        force: bool = False,
        on_start: Callable[[str], None] | None = None,
        on_end: Callable[[str, float, bool], None] | None = None,
    ) -> dict[str, Any]:
        """Run ``fn`` unless the stage is already done; return its recorded output."""
        prev = None if force else self.done(name)
        if prev is not None:
            self.minutes[name] = float(prev.get("minutes", 0.0))
            if on_end:
                on_end(name, self.minutes[name], True)
            return prev.get("output") or {}
        if on_start:
            on_start(name)
        t0 = time.perf_counter()
        out = fn() or {}
        minutes = (time.perf_counter() - t0) / 60.0
        self.minutes[name] = minutes
        atomic_write_json(self.marker(name), {"stage": name, "minutes": minutes, "finished": time.time(), "output": out})
        if on_end:
            on_end(name, minutes, False)
        return out

    def invalidate_from(self, names: list[str], first: str) -> None:
        """Forget ``first`` and every stage after it (for ``--force STAGE``)."""
        if first not in names:
            raise ValueError(f"--force {first!r}: one of {', '.join(names)}")
        for n in names[names.index(first):]:
            self.marker(n).unlink(missing_ok=True)
