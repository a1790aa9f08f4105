"""Argument helpers shared by commands: human numbers (``72B``, ``1.4T``, ``5.76e23``) and one-line
argparse errors (exit 2, as for every other bad input)."""

from __future__ import annotations

import math
import re
import sys
import types
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


def one_line_errors(parser: Any) -> None:
    """Make ``parser`` accept negative numbers as values (``--flops -1``, so the value check can
    name the field) and report its own errors on one line with exit status 2."""
    # argparse (before 3.13) reads "-1e22" as an option unless it matches this pattern.
    parser._negative_number_matcher = re.compile(r"^-(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?$", re.IGNORECASE)

    def error(self: Any, message: str) -> None:
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)

    parser.error = types.MethodType(error, parser)
