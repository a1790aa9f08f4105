"""One module per CLI subcommand: ``add_arguments(parser)`` and ``run(args) -> int | None``.

Shared helpers for output live here: :func:`emit` prints JSON with ``--json`` or a rich table.
"""

from __future__ import annotations

import sys
from typing import Any


def emit_json(obj: Any) -> None:
    from scaling.store import dumps

    sys.stdout.write(dumps(obj) + "\n")


def add_json_flag(parser: Any) -> None:
    parser.add_argument("--json", action="store_true", help="print one machine-readable JSON object")
