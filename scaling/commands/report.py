"""``scaling report STUDY [-o reports/NAME.html] [--fit FIT.json ...] [--export DIR]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scaling.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from scaling.commands import add_json_flag

    parser.add_argument("study", type=Path, help="a study or sweep folder (with runs/)")
    parser.add_argument("-o", "--out", type=Path, help="the HTML file (default: reports/<study name>.html)")
    parser.add_argument("--fit", type=Path, action="append", default=[], help="a LawFit JSON to show (repeatable)")
    parser.add_argument("--export", type=Path, metavar="DIR",
                        help="also write each figure as PNG and SVG into DIR (needs kaleido; skipped with a note otherwise)")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    from scaling.commands._args import output_dir, output_file
    from scaling.report import ExportUnavailable, build_report, export_figures

    output_file("-o", args.out, suffix=".html")
    output_dir("--export", args.export)
    if not args.study.is_dir():
        raise UsageError(f"study: {args.study} is not a folder; pass a study folder holding runs/")
    if not (args.study / "runs").is_dir() and not (args.study / "spec.json").exists():
        raise UsageError(f"study: {args.study} has no runs/ folder; pass the folder a sweep or `scaling run` wrote")
    for f in args.fit:
        if not f.is_file():
            raise UsageError(f"--fit: {f} does not exist; pass a JSON written by `scaling fit --out`")
        try:
            ok = isinstance(json.loads(f.read_text(encoding="utf-8")), dict)
        except (ValueError, UnicodeDecodeError):
            ok = False
        if not ok:
            raise UsageError(f"--fit: {f} is not a JSON object; pass a file written by `scaling fit --out`")
    out = build_report(args.study, args.out, fit_paths=args.fit)
    exported: list[str] = []
    export_note = None
    if args.export:
        try:
            exported = [str(p) for p in export_figures(args.study, args.export, fit_paths=args.fit)]
        except ExportUnavailable as exc:
            export_note = f"figure export skipped: {exc}"
            print(export_note, file=sys.stderr)
    if args.json:
        from scaling.commands import emit_json

        emit_json({"report": str(out), "bytes": out.stat().st_size, "exported": exported, "export_note": export_note})
    else:
        print(f"report: {out} ({out.stat().st_size / 1e6:.1f} MB)")
        for p in exported:
            print(f"figure: {p}")
    return 0
