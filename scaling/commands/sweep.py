"""``scaling sweep {plan,launch,status,resume,extend,cancel}``: thin wrappers over :mod:`scaling.sweep`."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from scaling.commands import add_json_flag, emit_json


def _gpu_flags(q: argparse.ArgumentParser) -> None:
    q.add_argument("--gpus", default=None, metavar="IDS",
                   help="local: GPUs to place runs on, e.g. 0,1 (default: the spec's, else every visible GPU; none: CPU)")
    q.add_argument("--runs-per-gpu", default=None, metavar="N", help="local: runs at once on each GPU, or auto")


def _gpu_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from scaling.sweep.gpus import parse_gpus_flag, parse_runs_per_gpu_flag

    return {"gpus": None if args.gpus is None else parse_gpus_flag(args.gpus),
            "runs_per_gpu": None if args.runs_per_gpu is None else parse_runs_per_gpu_flag(args.runs_per_gpu)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = sub.add_parser("plan", help="dry run: the table of runs a spec expands to (N, D, FLOPs, D/N, time)")
    p.add_argument("spec", help="sweep YAML (e.g. sweeps/quickstart.yaml)")
    p.add_argument("--max-parallel", type=int, default=None, help="runs at once, for the wall-time estimate")
    _gpu_flags(p)
    p.add_argument("--study", default=None, metavar="DIR",
                   help="a study folder with finished runs to estimate from (nanotron: their measured MFU)")
    add_json_flag(p)

    def launch_opts(q: argparse.ArgumentParser) -> None:
        q.add_argument("--executor", choices=("debug", "local", "slurm"), default=None,
                       help="where runs go (default: the spec's executor.kind)")
        q.add_argument("--max-parallel", type=int, default=None, help="runs at once (local: default one per core)")
        q.add_argument("--threads", type=int, default=None, help="threads per run (local: default cores / runs at once)")
        _gpu_flags(q)
        q.add_argument("--retries", type=int, default=None, help="retries of a failed run (default: the spec's)")
        q.add_argument("--cache-dir", default=None, help="where the backend prepares data (default: DIR/data)")
        q.add_argument("--quiet", action="store_true", help="no progress display")
        add_json_flag(q)

    p = sub.add_parser("launch", help="run a sweep into a folder (finished runs are skipped)")
    p.add_argument("spec", help="sweep YAML")
    p.add_argument("--out", required=True, help="the sweep folder (results store)")
    p.add_argument("--add", action="store_true",
                   help="--out holds another sweep: add this spec's runs to it (sweep.yaml becomes this spec)")
    launch_opts(p)

    p = sub.add_parser("resume", help="launch a sweep folder again from its own sweep.yaml")
    p.add_argument("dir", help="the sweep folder")
    launch_opts(p)

    p = sub.add_parser("extend", help="finish a sweep folder, add IsoFLOP sizes where a minimum is not bracketed, "
                                      "then the spec's repeats (grid.extend, grid.repeats)")
    p.add_argument("dir", help="the sweep folder")
    p.add_argument("--max-added", type=int, default=None, help="runs added in the whole study (default: grid.extend's)")
    p.add_argument("--per-budget", type=int, default=None, help="runs added at one budget (default: grid.extend's)")
    launch_opts(p)

    p = sub.add_parser("status", help="runs done/running/failed, FLOPs done, per-run losses")
    p.add_argument("dir", help="the sweep folder")
    add_json_flag(p)

    p = sub.add_parser("cancel", help="stop the launcher and every run of a sweep folder")
    p.add_argument("dir", help="the sweep folder")
    add_json_flag(p)


def _positive(name: str, v: int | None) -> None:
    from scaling.errors import UsageError

    if v is not None and v < 1:
        raise UsageError(f"{name}={v}: must be at least 1")


def run(args: argparse.Namespace) -> int:
    return {"plan": _plan, "launch": _launch, "resume": _launch, "extend": _extend, "status": _status,
            "cancel": _cancel}[args.action](args)


def _console(columns: int = 10) -> Any:
    from rich.console import Console

    # wide enough for every column of the table: a pager or a wide terminal shows it whole
    return Console(soft_wrap=False, width=max(14 * columns, Console().width))


def _plan(args: argparse.Namespace) -> int:
    from scaling.sweep import plan_table

    _positive("--max-parallel", args.max_parallel)
    table = plan_table(args.spec, max_parallel=args.max_parallel, study=args.study, **_gpu_kwargs(args))
    if args.json:
        emit_json(table)
        return 0
    from rich.table import Table

    rows = table["runs"]
    trained = table["trained_flops_total"]
    spent = "" if math.isclose(trained, table["flops_total"]) else f", {trained:.3g} trained (branches from their trunks)"
    t = Table(title=f"sweep {table['name']}: {len(rows)} runs, {table['flops_total']:.3g} FLOPs{spent} ({table['flops_convention']})")
    cols = ["name", "run_id", "budget", "shape", "params", "non_emb", "tokens", "flops", "D/N", "batch", "lr", "est"]
    extra = (["gpu"] if table.get("placement") else []) + table["describe_columns"]
    for c in cols + extra:
        t.add_column(c, justify="left" if c in ("name", "run_id", "shape") else "right")
    for r in rows:
        est = r.get("est_seconds")
        t.add_row(
            str(r["name"]), r["run_id"], "" if r["budget"] is None else f"{r['budget']:.3g}", r["shape"],
            f"{r['params']:,}", f"{r['non_embedding_params']:,}", f"{r['tokens']:.4g}", f"{r['flops']:.3g}",
            f"{r['tokens_per_param']:.1f}", str(r["batch_tokens"]), f"{r['lr']:.3g}",
            "?" if est is None else _dur(est), *[_cell(r.get(c)) for c in extra],
        )
    con = _console(len(cols) + len(extra))
    con.print(t)
    wall = table.get("est_wall_seconds")
    con.print(f"estimated wall time: {'unknown' if wall is None else _dur(wall)} "
              f"({table['max_parallel']} at a time, {table['threads_per_run']} thread(s) each, executor {table['executor']})")
    rep = table.get("repeats")
    if rep:
        more, total = rep.get("est_wall_seconds"), table.get("est_wall_seconds_with_repeats")
        names = {"optimum": "each budget's best size", "largest": "its largest size", "smallest": "its smallest size",
                 "all": "every run"}
        at = " and ".join(names[a] for a in ([rep["at"]] if isinstance(rep["at"], str) else rep["at"]))
        con.print(f"then repeats: {rep['runs']} run(s), {rep['seeds']} more seed(s) at {at}: "
                  f"{'unknown' if more is None else _dur(more)} more ({rep['basis']}); "
                  f"{'unknown' if total is None else _dur(total)} in all, before any adaptive extension")
    pl = table.get("placement")
    if pl:
        cards = ", ".join(f"{g['index']} {g['name']}".strip() + (f" {g['memory_gb']:.0f} GiB" if g["memory_gb"] else "")
                          for g in pl["gpus"])
        con.print(f"placement: {pl['runs_per_gpu']} run(s) at a time on each of {len(pl['gpus'])} GPU(s) [{cards}] "
                  f"(GPUs from {pl['source']}; runs_per_gpu {pl['runs_per_gpu_why']}); each run sees only its GPU")
    if table.get("estimate_basis"):
        con.print(table["estimate_basis"] + (f" of {args.study}" if table.get("calibrated_on") else ""))
    tm = table.get("timing_model")
    if tm:
        con.print(f"timing model ({tm['source']}, cached per machine): {tm['step_overhead_s'] * 1e3:.1f} ms a step + "
                  f"{1 / tm['s_per_flop'] / 1e9 if tm['s_per_flop'] else float('inf'):.3g} GFLOP/s achieved, "
                  f"{tm['startup_s']:.1f} s process start + {tm['fixed_s']:.1f} s fixed a run; a busy machine measures slower")
    return 0


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return " ".join(f"{k}={_cell(x)}" for k, x in v.items())
    return str(v)


def _dur(s: float) -> str:
    s = float(s)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.1f}m"
    return f"{s / 3600:.1f}h"


def _launch(args: argparse.Namespace) -> int:
    from scaling.commands._args import output_dir
    from scaling.sweep import launch, resume

    for name in ("max_parallel", "threads"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.action == "launch":
        output_dir("--out", args.out)
    if args.retries is not None and args.retries < 0:
        from scaling.errors import UsageError

        raise UsageError(f"--retries={args.retries}: must be 0 or more")
    kw: dict[str, Any] = {"executor": args.executor, "max_parallel": args.max_parallel, "threads": args.threads,
                          "retries": args.retries, "progress": False if (args.quiet or args.json) else None,
                          "cache_dir": args.cache_dir, **_gpu_kwargs(args)}
    summary = launch(args.spec, args.out, add=args.add, **kw) if args.action == "launch" else resume(args.dir, **kw)
    if args.json:
        emit_json(summary)
    else:
        print(f"{summary['name']}: {summary['done']}/{summary['runs']} done ({summary['skipped']} already done), "
              f"{summary['failed']} failed, {summary['retried']} retried, {_dur(summary['wall_s'])} "
              f"-> {summary['out_dir']}")
        for f in summary["failed_runs"]:
            print(f"  failed {f['name']} ({f['run_id']}): {f['error'].strip().splitlines()[-1] if f['error'] else ''}",
                  file=sys.stderr)
    if summary["cancelled"]:
        return 1
    return 0 if summary["failed"] == 0 else 1


def _extend(args: argparse.Namespace) -> int:
    from scaling.errors import UsageError
    from scaling.sweep import extend_folder

    for name in ("max_parallel", "threads"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    for name in ("max_added", "per_budget", "retries"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')}={getattr(args, name)}: must be 0 or more")
    quiet = args.quiet or args.json
    out = extend_folder(args.dir, max_added=args.max_added, per_budget=args.per_budget,
                 say=(lambda m: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True)),
                 executor=args.executor, max_parallel=args.max_parallel, threads=args.threads, retries=args.retries,
                 progress=False if quiet else None, cache_dir=args.cache_dir)
    if args.json:
        emit_json(out)
    else:
        print(f"{args.dir}: {len(out['added'])} run(s) added in {out['rounds']} round(s); "
              f"{out['done']}/{out['runs']} done, {out['failed']} failed")
        for b in out["budgets"]:
            print(f"  budget {b['budget']:.3g}: {b['state']} ({b['added']} added): {b['reason']}")
    if out["cancelled"]:
        return 1
    return 0 if out["failed"] == 0 else 1


def _status(args: argparse.Namespace) -> int:
    from scaling.sweep import status

    st = status(args.dir)
    if args.json:
        emit_json(st)
        return 0
    from rich.table import Table

    c = st["counts"]
    launcher = st["launcher"]
    who = "no launcher" if not launcher else (
        f"launcher pid {launcher['pid']} on {launcher['host']} ({'alive' if launcher['alive'] else 'gone: stale lock'})")
    pct = 100 * st["flops_done"] / st["flops_total"] if st["flops_total"] else 0.0
    corrupt = f", {c['corrupt']} corrupt (a file that does not parse: see error)" if c.get("corrupt") else ""
    t = Table(title=f"{st['out_dir']}: {c['done']}/{st['total']} done, {c['running']} running, {c['failed']} failed, "
                    f"{c['interrupted']} interrupted, {c['cancelled']} cancelled, {c['pending']} pending{corrupt}; "
                    f"{pct:.0f}% of {st['flops_total']:.3g} FLOPs; {who}")
    on_gpus = any(r.get("gpus") for r in st["runs"])  # placed on GPUs by the local executor
    for col in ("name", "run_id", "state", "attempts", "progress", *(("gpus",) if on_gpus else ()), "final_loss",
                "eval_loss", "wall_time", "added", "error"):
        t.add_column(col)
    for r in st["runs"]:
        prog = f"{100 * r['tokens_done'] / r['tokens']:.0f}%" if r["tokens"] else ""
        err = (r.get("error") or "").strip().splitlines()
        gpus = (",".join(map(str, r.get("gpus") or [])),) if on_gpus else ()
        t.add_row(str(r["name"]), r["run_id"], r["state"], str(r["attempts"]), prog, *gpus, _cell(r["final_loss"]),
                  _cell(r["eval_loss"]), "" if r["wall_time"] is None else _dur(r["wall_time"]),
                  (r.get("added") or "").split(":")[0], err[-1][:60 if r["state"] != "corrupt" else 400] if err else "")
    _console().print(t)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from scaling.sweep import cancel

    out = cancel(args.dir)
    if args.json:
        emit_json(out)
    else:
        c = out["counts"]
        print(f"cancelled {args.dir}: {len(out['stopped_processes'])} run process(es) stopped, "
              f"{len(out['scancelled'])} Slurm job(s) cancelled; {c.get('done', 0)} done, {c.get('cancelled', 0)} cancelled")
    return 0
