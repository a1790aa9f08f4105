"""A module a hostile spec names as its backend (``backend: "tests.hostile_backend:Boom"``).

Importing it or calling ``Boom`` leaves a mark in the file ``$SCALING_HOSTILE_MARK``: planning or
launching such a spec must do neither."""

from __future__ import annotations

import os
from pathlib import Path

Path(os.environ.get("SCALING_HOSTILE_MARK", os.devnull)).write_text("imported\n")


class Boom:
    def __init__(self) -> None:
        Path(os.environ.get("SCALING_HOSTILE_MARK", os.devnull)).write_text("called\n")
