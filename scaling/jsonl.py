"""JSON Lines read one object a line, a bad line refused with its line and column (``FILE:LINE:COL``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from scaling.errors import UsageError


def objects(lines: Iterable[str], source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line; ``source`` names the file in errors."""
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{source}:{i}:{e.colno}: not valid JSON ({e.msg}); fix or delete that line") from None
        if not isinstance(row, dict):
            raise UsageError(f"{source}:{i}: a JSON {type(row).__name__}, not an object; write one object a line")
        yield i, row
