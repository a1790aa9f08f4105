"""Errors the CLI turns into exit codes: bad input exits 2 with one line naming the field."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input. The message names the field and the fix, in one line."""


def one_line(exc: BaseException) -> str:
    """A validation error as one readable line (pydantic errors name the field path)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            parts = []
            for e in errors():
                loc = ".".join(str(x) for x in e.get("loc", ()))
                msg = str(e.get("msg", "")).removeprefix("Value error, ")
                parts.append(f"{loc}: {msg}" if loc else msg)
            if parts:
                return "; ".join(parts)
        except Exception:  # pragma: no cover - fall back to str()
            pass
    return " ".join(str(exc).split())
