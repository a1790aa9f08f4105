"""The ``scaling`` command line: parse, call one function, print.

Each subcommand lives in ``scaling/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int | None``; only the chosen one is imported, so ``scaling plan`` never loads torch.
Exit codes: 0 success, 2 bad input (one line naming the field), 1 failure, 130 interrupted.
``--debug`` (before or after the command's name) prints the traceback of any error as well.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from scaling import __version__

COMMANDS: dict[str, str] = {
    "plan": "compute budget -> compute-optimal N*, D*, shape, batch, LR, loss, hours, cost",
    "params": "exact parameter counts and FLOPs per token of a shape or a HF config.json",
    "fit": "fit scaling laws (approaches 1, 2, 3, Kaplan) to losses, with bootstrap intervals",
    "design": "choose the sweep (IsoFLOP grid or WSD branches) that pins N*, the exponent or the loss best for a compute allowance",
    "sweep": "plan, launch, watch, resume or cancel a sweep of training runs",
    "train": "train one model outside any sweep (local backend)",
    "select": "choose the run nearest the fitted compute-optimal frontier",
    "align": "SFT, reward model, RLHF (RLOO) and DPO of the chosen model, side by side on held-out tasks",
    "generate": "each alignment stage's answer to the same prompt, side by side",
    "report": "one self-contained offline HTML page of a study",
    "run": "the whole study: plan -> sweep -> fit -> backtest -> select -> SFT -> RLHF and DPO -> report",
}


def _chosen(argv: Sequence[str]) -> str | None:
    for a in argv:
        if a in COMMANDS:
            return a
        if not a.startswith("-"):
            return None
    return None


DEBUG_HELP = "on an error, print its full traceback too (exit codes unchanged)"


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line with exit status 2, like every other bad input
    (its own prints the whole usage first). Subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {self.prog}: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = OneLineParser(prog="scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"scaling {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _chosen(argv)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(f"scaling.commands.{name}")
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
        _accept_debug(p)
    return parser


def _accept_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after a command's name too, down to its own subcommands (``sweep launch``).
    SUPPRESS: where the flag is absent, the value given before the command's name stands."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _accept_debug(child)


def _one_line_warnings() -> None:
    """Our own warnings (:class:`scaling.errors.ScalingWarning`) as one ``warning:`` line each;
    others as Python shows them."""
    import warnings

    from scaling.errors import ScalingWarning

    shown = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, ScalingWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            shown(message, category, *args, **kwargs)

    warnings.showwarning = show


def main(argv: Sequence[str] | None = None) -> int:
    from scaling.errors import exit_code, one_line

    argv = list(sys.argv[1:] if argv is None else argv)
    _one_line_warnings()
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        code = args._run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        code = exit_code(e)
        print(f"error: {one_line(e) if code == 2 else f'{type(e).__name__}: {e}'}", file=sys.stderr)
        return code
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
