"""Errors the CLI turns into exit codes: bad input exits 2 with one line naming the field."""

from __future__ import annotations

import sys


class UsageError(ValueError):
    """Bad input. The message names the field and the fix, in one line."""


def _pydantic_validation_error() -> type[BaseException] | None:
    # Only a loaded pydantic can have raised one, so the CLI never imports it just to check.
    core = sys.modules.get("pydantic_core")
    return getattr(core, "ValidationError", None)


def is_bad_input(exc: BaseException) -> bool:
    """A :class:`UsageError`, or a pydantic ``ValidationError`` (a model built from user input)."""
    validation_error = _pydantic_validation_error()
    return isinstance(exc, UsageError) or (validation_error is not None and isinstance(exc, validation_error))


def exit_code(exc: BaseException) -> int:
    """2 for bad input, 1 for any other failure."""
    return 2 if is_bad_input(exc) else 1


def one_line(exc: BaseException) -> str:
    """An error as one readable line; a pydantic error lists each field path with its problem."""
    validation_error = _pydantic_validation_error()
    if validation_error is not None and isinstance(exc, validation_error):
        parts = []
        for e in exc.errors():  # type: ignore[attr-defined]
            loc = ".".join(str(x) for x in e.get("loc", ()))
            msg = str(e.get("msg", "")).removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
        if parts:
            return "; ".join(parts)
    return " ".join(str(exc).split())


class ScalingWarning(UserWarning):
    """Something the user should know that does not stop the command; the CLI prints it as
    one ``warning:`` line."""
