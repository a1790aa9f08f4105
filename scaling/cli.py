"""The ``scaling`` command line: parse, call one function, print.

Each subcommand lives in ``scaling/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int | None``; only the chosen one is imported, so ``scaling plan`` never loads torch.
Exit codes (DESIGN.md): 0 success, 2 bad input (one line naming the field), 1 failure.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from scaling import __version__

COMMANDS: dict[str, str] = {
    "plan": "compute budget -> compute-optimal N*, D*, shape, batch, LR, loss, hours, cost",
    "params": "exact parameter counts and FLOPs per token of a shape or a HF config.json",
    "fit": "fit scaling laws (approaches 1, 2, 3, Kaplan) to losses, with bootstrap intervals",
    "sweep": "plan, launch, watch, resume or cancel a sweep of training runs",
    "train": "train one model outside any sweep (local backend)",
    "select": "choose the run nearest the fitted compute-optimal frontier",
    "align": "SFT then DPO of the chosen model, evaluated before and after",
    "report": "one self-contained offline HTML page of a study",
    "run": "the whole study: plan -> sweep -> fit -> backtest -> select -> SFT -> DPO -> report",
}


def _chosen(argv: Sequence[str]) -> str | None:
    for a in argv:
        if a in COMMANDS:
            return a
        if not a.startswith("-"):
            return None
    return None


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"scaling {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _chosen(argv)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(f"scaling.commands.{name}")
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from scaling.errors import UsageError, one_line

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        code = args._run(args)
    except UsageError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # validation errors from pydantic are bad input too
        if type(e).__name__ == "ValidationError":
            print(f"error: {one_line(e)}", file=sys.stderr)
            return 2
        if getattr(args, "debug", False):
            raise
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
