"""Argument helpers shared by commands: human numbers (``72B``, ``1.4T``, ``5.76e23``) and negative
values that reach the value checks (argparse's own errors are one line: ``scaling.cli.OneLineParser``)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from scaling.errors import UsageError

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*([kmbgtp]?)\s*$", re.IGNORECASE)


def number(field: str, text: str | None) -> float | None:
    """``"72B"`` -> 7.2e10; ``"5.76e23"`` -> 5.76e23; None stays None. Bad text -> UsageError."""
    if text is None:
        return None
    m = _NUMBER.match(str(text).replace("_", "").replace(",", ""))
    if not m:
        raise UsageError(f"{field}={text!r}: not a number (examples: 1e22, 72B, 1.4T, 2000)")
    value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if not math.isfinite(value):
        raise UsageError(f"{field}={text!r}: must be finite")
    return value


def integer(field: str, text: str | None) -> int | None:
    v = number(field, text)
    if v is None:
        return None
    if v != int(v):
        raise UsageError(f"{field}={text!r}: must be a whole number")
    return int(v)


def accept_negative_numbers(parser: Any) -> None:
    """Make ``parser`` accept negative numbers as values (``--flops -1``), so the value check can
    name the field instead of argparse calling ``-1`` an unknown option."""
    # argparse (before 3.13) reads "-1e22" as an option unless it matches this pattern.
    parser._negative_number_matcher = re.compile(r"^-(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?$", re.IGNORECASE)


def output_file(flag: str, path: str | Path | None, suffix: str = ".json") -> Path | None:
    """``path`` checked before any work starts: a file to write, not an existing folder."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{flag} {p}: is a folder; give a file path, e.g. {p / 'name'}{suffix}")
    _parent_is_folder(flag, p)
    return p


def output_dir(flag: str, path: str | Path | None) -> Path | None:
    """``path`` checked before any work starts: a folder (created later if missing), not a file."""
    if path is None:
        return None
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {p}: is a file; give a folder (it is created if missing)")
    _parent_is_folder(flag, p)
    return p


def _parent_is_folder(flag: str, p: Path) -> None:
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {p}: {parent} is a file, not a folder; give a path under a folder")
            return
