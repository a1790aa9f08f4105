"""Reading a cluster-sized study: 10,000 runs x 1,000 logged steps, each figure beside its baseline.

The store is written in the real layout (``sweep.yaml``, ``runs/<id>/`` with ``spec.json`` from a
real :class:`~scaling.runspec.RunSpec`, ``status.json``, ``metrics.jsonl`` with the local trainer's
keys, ``result.json``): 98% of the runs finished, 1% running (no result yet), 1% failed. The files
are written without the per-write fsync the trainers do (same bytes, minutes faster to build).

Figures (targets from the store's requirements):

1. ``load_runs(curves=True)``, warm index: under 5 s and within 2x of ``pandas.read_parquet`` of one
   parquet file holding the same rows (the frame ``load_runs`` gives, written by ``to_parquet``;
   measured alternately, median of the repeats); for scale, the same beside that file with
   ``run_id`` and ``name`` as text instead of categoricals; and the warm read's phases
   (``ReadStats.seconds``: what its floor is made of).
2. ``load_runs()`` (one row per run), warm: under 1 s; beside it ``read_parquet`` of the same frame
   and the per-file reader the store used before the index (every spec/status/result JSON).
3. ``scaling.sweep.status``: under 2 s; beside it the per-file status reads.
4. One running run finishes: the next ``load_runs(curves=True)`` opens only that run (the reader's
   own counts), and its time beside the warm read.
5. The cold read that builds the index, beside the per-file JSONL reader of before on a sample of
   runs, scaled to the whole store (the full per-file read takes minutes and ~10 GB).
6. ``scaling report`` of the store (warm index): build under 10 s, HTML under 20 MB, and the page's
   load in headless Chromium (navigation to the load event, every figure drawn) under 3 s; beside
   each, the report of the 100-run study of ``benchmarks/report_build.py`` (with its fits) built
   and loaded in the same run.

    python benchmarks/store_scale.py [--runs 10000] [--steps 1000] [--repeats 3] [--keep DIR] [--only-report]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from scaling.runspec import OptimizerSpec, RunSpec, ShapeSpec  # noqa: E402
from scaling.store import RunDir, SweepStore, read_json, read_jsonl  # noqa: E402

SEQ, BATCH, VOCAB = 128, 2048, 1024


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _metrics(steps: int, n: float, seed: int, stop: int) -> str:
    """The local trainer's per-step keys, one JSON line a step, eval_loss every 100 steps."""
    lines = []
    f_tok = 6.0 * n
    for s in range(1, stop + 1):
        tok = s * BATCH
        loss = 2.0 + 30.0 / n**0.3 + 40.0 / tok**0.3 + ((seed * 7919 + s * 104729) % 1000) * 1e-5
        ev = f', "eval_loss": {loss + 0.01!r}' if s % 100 == 0 else ""
        lines.append(f'{{"step": {s}, "tokens": {tok}, "flops": {f_tok * tok!r}, "loss": {loss!r}, "lr": 0.001, '
                     f'"grad_norm": 0.5, "tokens_per_s": 18000.0, "mfu": 0.04{ev}}}\n')
    return "".join(lines)


def build_store(root: Path, n_runs: int, steps: int) -> Path:
    """The study folder; specs are real RunSpecs (one per shape, renamed per run)."""
    store = SweepStore(root)
    store.write_sweep(f"name: scale\nbackend: local\nruns: {n_runs}\n")
    shapes = [ShapeSpec(layers=layers, hidden=h, heads=2, vocab=VOCAB, seq_len=SEQ)
              for layers in (1, 2, 3, 4) for h in range(16, 513, 16)]
    templates = [RunSpec(shape=s, tokens=steps * BATCH, batch_tokens=BATCH, optimizer=OptimizerSpec(lr=1e-3),
                         checkpoint_every=200).to_json_dict() for s in shapes]
    now = time.time()
    for i in range(n_runs):
        spec = json.loads(json.dumps(templates[i % len(templates)]))
        rid = hashlib.sha256(str(i).encode()).hexdigest()[:12]
        budget = 1e11 * 2 ** (i // len(templates))
        spec.update(run_id=rid, name=f"C{budget:.0e}_{i}", budget=budget, group=f"C={budget:.0e}")
        rd = store.run(rid)
        rd.path.mkdir(parents=True)
        n = float(spec["derived"]["non_embedding_params"])
        running, failed = i % 100 == 37, i % 100 == 71
        stop = steps // 2 if running or failed else steps
        _write(rd.path / RunDir.SPEC, json.dumps(spec, indent=2) + "\n")
        _write(rd.path / RunDir.METRICS, _metrics(steps, n, i, stop))
        state = "running" if running else "failed" if failed else "done"
        status = {"state": state, "attempts": 1, "host": "node-a", "pid": 10_000 + i, "job_id": f"7{i}",
                  "executor": "slurm", "slurm_job": f"7{i}", "started": now - 900, "updated": now - 10,
                  "error": "RuntimeError: CUDA out of memory" if failed else None}
        _write(rd.path / RunDir.STATUS, json.dumps(status, indent=2) + "\n")
        if state == "done":
            loss = 2.0 + 30.0 / n**0.3 + 40.0 / (steps * BATCH) ** 0.3
            _write(rd.path / RunDir.RESULT, json.dumps({
                "name": spec["name"], "budget": budget, "run_id": rid, "final_loss": loss, "eval_loss": loss + 0.01,
                "params": spec["derived"]["params"], "non_embedding_params": n, "tokens": steps * BATCH,
                "flops": 6.0 * n * steps * BATCH, "wall_time": 90.0, "steps": steps, "tokens_per_s": 18000.0,
                "mfu": 0.04, "device": "cpu", "threads": 1}, indent=2) + "\n")
    return root


# ---- the per-file readers of before (the baselines) ------------------------------------------------------


def per_file_runs(study: Path) -> Any:
    """One row per run from every run's spec, status and result JSON, as the store read before."""
    import pandas as pd

    rows = []
    for rd in SweepStore(study).runs():
        spec, status, result = (read_json(rd.path / f) or {} for f in (RunDir.SPEC, RunDir.STATUS, RunDir.RESULT))
        rows.append({"run_id": rd.run_id, "status": status.get("state"), **{k: v for k, v in spec.items()
                     if not isinstance(v, dict)}, **{k: v for k, v in result.items() if not isinstance(v, dict)}})
    return pd.DataFrame(rows)


def per_file_curves(runs: list[RunDir]) -> Any:
    import pandas as pd

    rows = []
    for rd in runs:
        spec = rd.read_spec() or {}
        rows.extend({"run_id": rd.run_id, "name": spec.get("name"), "budget": spec.get("budget"), **m}
                    for m in read_jsonl(rd.path / RunDir.METRICS))
    return pd.DataFrame(rows)


def per_file_status(study: Path) -> int:
    n = 0
    for rd in SweepStore(study).runs():
        rd.read_spec()
        rd.read_status()
        rd.read_result()
        n += 1
    return n


# ---- timing ------------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def paired(a: Callable[[], Any], b: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Medians of ``a`` and ``b`` run alternately ``repeats`` times each."""
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(timed(a)[0])
        tb.append(timed(b)[0])
    return statistics.median(ta), statistics.median(tb)


def _line(what: str, t: float, base_what: str, base: float, target: str) -> None:
    print(f"{what}: {t:.2f} s | {base_what}: {base:.2f} s | ratio {t / base:.2f}x | {target}")


def report_figures(study: Path, tmp: Path, repeats: int) -> None:
    """Figure 6: the report of ``study`` beside the report of a 100-run study, built and loaded alternately."""
    from benchmarks.report_build import make_study, page_load_s, write_fits
    from scaling.report import build_report

    small = make_study(tmp / "small-study", n_runs=100)
    write_fits(small)
    pages = {"big": tmp / "big.html", "small": tmp / "small.html"}
    t_big, t_small = paired(lambda: build_report(study, pages["big"]), lambda: build_report(small, pages["small"]),
                            repeats)
    size, small_size = pages["big"].stat().st_size, pages["small"].stat().st_size
    _line("scaling report (build)", t_big, "the report of a 100-run study with its fits", t_small,
          f"target < 10 s: {'met' if t_big < 10 else 'MISSED'}")
    print(f"report HTML: {size / 1e6:.1f} MB | 100-run report: {small_size / 1e6:.1f} MB | ratio {size / small_size:.2f}x"
          f" | target < 20 MB: {'met' if size < 20e6 else 'MISSED'}")
    loads: dict[str, list[float]] = {"big": [], "small": []}
    for _ in range(repeats):
        for k, page in pages.items():
            s, errors = page_load_s(page, tmp / "chromium-profile")
            if s is None or errors:
                print(f"page load not measured ({k}): {errors or 'no load event'}")
                return
            loads[k].append(s)
    big, small_load = statistics.median(loads["big"]), statistics.median(loads["small"])
    _line("report page load in headless Chromium", big, "the 100-run report's page", small_load,
          f"target < 3 s: {'met' if big < 3 else 'MISSED'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=1_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sample", type=int, default=200, help="runs read by the per-file JSONL baseline")
    ap.add_argument("--keep", type=Path, default=None, help="build the store here and keep it")
    ap.add_argument("--only-report", action="store_true",
                    help="figure 6 alone, on the store --keep names (built there first if absent)")
    args = ap.parse_args()

    import pandas as pd

    import scaling
    from scaling.columnar import RACY_NS, read_frames
    from scaling.sweep import status

    tmp = Path(tempfile.mkdtemp(prefix="store-scale-"))
    study = args.keep or tmp / "study"
    if args.only_report:
        if not (study / "runs").is_dir():
            build_store(study, args.runs, args.steps)
        read_frames(study, curves=True)  # the index, as the reads before figure 6 leave it
        try:
            report_figures(study, tmp, args.repeats)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    try:
        t_build, _ = timed(lambda: build_store(study, args.runs, args.steps))
        print(f"store: {args.runs} runs x {args.steps} steps in {study} (written in {t_build:.0f} s, "
              f"{sum(p.stat().st_size for p in (study / 'runs').rglob('*') if p.is_file()) / 1e9:.2f} GB)")
        time.sleep(RACY_NS / 1e9 + 0.1)  # older than the reader's timestamp guard, as a study being read is

        # 5. cold: the read that builds the index, beside the per-file reader on a sample
        t_cold, (curves, cold_stats) = timed(lambda: read_frames(study, curves=True))
        sample = SweepStore(study).runs()[:: max(1, args.runs // args.sample)]
        t_sample, _ = timed(lambda: per_file_curves(sample))
        t_per_file = t_sample * args.runs / len(sample)
        print(f"rows: {len(curves):,} steps of {curves['run_id'].nunique():,} runs; "
              f"columns {', '.join(map(str, curves.columns))}")
        _line("cold load_runs(curves=True), building the index", t_cold,
              f"per-file JSONL reader ({len(sample)} runs, x{args.runs / len(sample):.0f})", t_per_file,
              f"opened {cold_stats.curves_read + cold_stats.live_curves} runs' metrics")
        time.sleep(RACY_NS / 1e9 + 0.1)
        read_frames(study, curves=True)  # settles the runs read within the guard of the first scan

        # 1. warm curves beside one parquet of the same rows
        one, as_text = tmp / "curves.parquet", tmp / "curves-text-ids.parquet"
        curves.to_parquet(one)
        curves.astype({"run_id": str, "name": str}).to_parquet(as_text)
        del curves
        t_ours, t_base = paired(lambda: scaling.load_runs(study, curves=True), lambda: pd.read_parquet(one),
                                args.repeats)
        _line("load_runs(curves=True)", t_ours, "pandas.read_parquet of one file, same rows", t_base,
              f"target < 5 s and < 2x: {'met' if t_ours < 5 and t_ours < 2 * t_base else 'MISSED'}")
        t_ours2, t_text = paired(lambda: scaling.load_runs(study, curves=True), lambda: pd.read_parquet(as_text),
                                 args.repeats)
        _line("load_runs(curves=True)", t_ours2, "the same file with run_id and name as text", t_text, "for scale")
        phases = [read_frames(study, curves=True)[1].seconds for _ in range(args.repeats)]
        print("warm load_runs(curves=True) by phase, median s: "
              + ", ".join(f"{k} {statistics.median(p.get(k, 0.0) for p in phases):.3f}" for k in phases[0]))

        # 2. one row per run
        runs = scaling.load_runs(study)
        runs.to_parquet(tmp / "runs.parquet")
        t_runs, t_runs_pq = paired(lambda: scaling.load_runs(study), lambda: pd.read_parquet(tmp / "runs.parquet"),
                                   args.repeats)
        t_runs_files, _ = timed(lambda: per_file_runs(study))
        _line("load_runs()", t_runs, "per-file JSON reader", t_runs_files,
              f"target < 1 s: {'met' if t_runs < 1 else 'MISSED'}")
        _line("load_runs()", t_runs, "pandas.read_parquet of the same frame", t_runs_pq, "floor")

        # 3. sweep status
        t_status, t_status_files = paired(lambda: status(study), lambda: per_file_status(study), args.repeats)
        _line("sweep status", t_status, "per-file spec/status/result reads", t_status_files,
              f"target < 2 s: {'met' if t_status < 2 else 'MISSED'}")

        # 4. one run finishes
        t_warm, (_, warm_stats) = timed(lambda: read_frames(study, curves=True))
        rd = next(r for r in SweepStore(study).runs() if not r.is_done() and r.read_status()["state"] == "running")
        spec = rd.read_spec()
        done_rows = read_jsonl(rd.path / RunDir.METRICS)
        n = float(spec["derived"]["non_embedding_params"])
        tail = _metrics(args.steps, n, 0, args.steps).splitlines(keepends=True)[len(done_rows):]
        with open(rd.path / RunDir.METRICS, "a") as f:
            f.write("".join(tail))
        rd.write_result({"final_loss": 3.0, "eval_loss": 3.01, "steps": args.steps, "tokens": args.steps * BATCH})
        t_after, (after, after_stats) = timed(lambda: read_frames(study, curves=True))
        assert (after["run_id"] == rd.run_id).sum() == args.steps
        print(f"after one run finished: opened {after_stats.runs_read} run folder(s) of {after_stats.runs} "
              f"(warm read before it: {warm_stats.runs_read}); metrics parsed: {after_stats.curves_read} finished "
              f"run(s) into the index + {after_stats.live_curves} not finished or just written (read every time; "
              f"{warm_stats.live_curves} before); {t_after:.2f} s | warm read: {t_warm:.2f} s | ratio "
              f"{t_after / t_warm:.2f}x | target: only that run: {'met' if after_stats.runs_read == 1 else 'MISSED'}")
        print(f"index: {sum(p.stat().st_size for p in (study / '.index').iterdir()) / 1e6:.0f} MB in "
              f"{len(list((study / '.index').iterdir()))} files")

        # 6. the report
        report_figures(study, tmp, args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the store too, unless --keep put it elsewhere


if __name__ == "__main__":
    main()
