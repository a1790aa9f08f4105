"""Time to build the HTML report of a 100-run synthetic study, and the page's size.

Targets: under 5 s and under 6 MB. Baseline from the same run: reading the store
(``scaling.load_runs`` of the runs and of the curves) plus writing a one-figure plotly page with
plotly.js embedded (``fig.write_html``), the floor of any self-contained report of this store; the
ratio says what the report costs on top of it. Imports are warm (as in ``scaling run``).

The study is written through ``scaling.store`` (RunSpec, RunDir): IsoFLOP budgets with 20 sizes
each, losses from a known law L(N, D) = E + A/N^alpha + B/D^beta in non-embedding N plus seeded
noise, a training curve per run, and two failed runs.

    python benchmarks/report_build.py [--runs 100] [--keep DIR]
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scaling.runspec import OptimizerSpec, RunSpec, ShapeSpec  # noqa: E402
from scaling.store import RunDir, SweepStore, atomic_write_json  # noqa: E402

# the synthetic study's true law, in non-embedding parameters (made-up constants of a plausible
# size for 1e4-1e6-parameter models on a 1024-token vocabulary)
TRUE_LAW = {"E": 1.9, "A": 25.0, "alpha": 0.36, "B": 250.0, "beta": 0.36}
VOCAB, SEQ, BATCH = 1024, 128, 2048


def true_loss(n: float | np.ndarray, d: float | np.ndarray) -> float | np.ndarray:
    p = TRUE_LAW
    return p["E"] + p["A"] / np.power(n, p["alpha"]) + p["B"] / np.power(d, p["beta"])


def _candidates() -> list[ShapeSpec]:
    out = []
    for layers in (1, 2, 3, 4):
        for hidden in range(16, 513, 8):
            out.append(ShapeSpec(layers=layers, hidden=hidden, heads=2 if hidden % 16 == 0 else 1,
                                 ffn=max(8, round(hidden * 8 / 3 / 8) * 8), vocab=VOCAB, seq_len=SEQ))
    return out


def _n_opt(c: float) -> float:
    """argmin over N of L(N, C/(6N)) on a fine grid."""
    ns = np.geomspace(1e3, 1e8, 4000)
    return float(ns[np.argmin(true_loss(ns, c / (6 * ns)))])


def make_study(path: str | Path, n_runs: int = 100, sizes_per_budget: int = 20, seed: int = 0,
               names: dict[int, str] | None = None, steps_logged: int = 200, fail_every: int = 50) -> Path:
    """A synthetic study folder of ``n_runs`` runs; ``names`` overrides the name of run #i; every
    ``fail_every``-th run fails half way (two of 100 by default)."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    store = SweepStore(path)
    n_budgets = max(1, math.ceil(n_runs / sizes_per_budget))
    budgets = [1e11 * 2**i for i in range(n_budgets)]
    store.write_sweep(
        "name: synthetic\nbackend: local\nbudgets: [" + ", ".join(f"{b:.3g}" for b in budgets) + "]\n"
        f"sizes_per_budget: {sizes_per_budget}\nflops_convention: 6N_non_embedding\nseed: {seed}\n"
    )
    shapes = _candidates()
    nonemb = np.array([s.to_shape().non_embedding_params for s in shapes], dtype=float)
    i = 0
    for budget in budgets:
        n_star = _n_opt(budget)
        used: set[int] = set()
        for target in np.geomspace(n_star / 5, n_star * 5, sizes_per_budget):
            if i >= n_runs:
                break
            order = np.argsort(np.abs(np.log(nonemb / target)))
            k = next(int(j) for j in order if int(j) not in used)
            used.add(k)
            shape = shapes[k]
            n = nonemb[k]
            tokens = max(BATCH, int(round(budget / (6 * n) / BATCH)) * BATCH)
            spec = RunSpec(shape=shape, tokens=tokens, batch_tokens=BATCH, optimizer=OptimizerSpec(lr=min(1e-2, 0.32 / shape.hidden)),
                           seed=seed, name=(names or {}).get(i, f"b{budget:.0e}-h{shape.hidden}x{shape.layers}"), budget=budget,
                           eval_every=50)
            _write_run(store.run(spec.run_id), spec, n, rng, steps_logged, fail=i % fail_every == fail_every - 1)
            i += 1
    return path


def _write_run(rd: RunDir, spec: RunSpec, n: float, rng: np.random.Generator, steps_logged: int, fail: bool) -> None:
    rd.write_spec(spec.to_json_dict())
    rd.mark_running(job_id="synthetic")
    steps = spec.steps
    every = max(1, steps // steps_logged)
    stop = steps // 2 if fail else steps
    rows = []
    for step in range(every, stop + 1, every):
        t = step * spec.batch_tokens
        clean = min(math.log(VOCAB), float(true_loss(n, t)) + 0.4 * math.exp(-step / max(1, steps * 0.03)))
        rows.append({"step": step, "tokens": t, "flops": 6.0 * spec.params * t, "loss": clean + float(rng.normal(0, 0.01)),
                     "lr": spec.optimizer.lr, "tokens_per_s": 3.0e4})
    rd.append_metrics(rows)
    if fail:
        rd.update_status("failed", error="synthetic failure: killed at half the steps")
        return
    final = float(true_loss(n, spec.tokens)) + float(rng.normal(0, 0.004))
    rd.write_result({
        "final_loss": final, "eval_loss": final + 0.02 + float(rng.normal(0, 0.002)), "params": spec.params,
        "non_embedding_params": spec.non_embedding_params, "embedding_params": spec.params - spec.non_embedding_params,
        "tokens": spec.tokens, "flops": 6.0 * spec.params * spec.tokens,
        "flops_non_embedding": 6.0 * spec.non_embedding_params * spec.tokens, "wall_time": spec.tokens / 3.0e4,
        "steps": steps, "epochs": spec.tokens / 4.2e6, "tokens_per_s": 3.0e4, "mfu": 0.1, "budget": spec.budget,
        "name": spec.name,
    })


def write_fits(study: Path, done: pd.DataFrame | None = None, boot: int = 100) -> None:
    """Approaches 2 and 3 in both parameter conventions and the backtest, as the pipeline writes
    them (``LawFit.to_dict()``, :mod:`scaling.fit.artifacts`, ``scaling.fit.backtest``). The budgets
    count non-embedding FLOPs (``6N_non_embedding``); a convention whose IsoFLOP minima are not all
    interior gets the refusal, with its minima, instead of an approach-2 fit."""
    import scaling
    from scaling.convention import Convention
    from scaling.fit import Approach2, Approach3, Columns, FitRefusal, backtest
    from scaling.fit.artifacts import fit_path, write_approach2

    if done is None:
        runs = scaling.load_runs(study)
        done = runs[runs["status"] == "done"]
    for col, conv in (("non_embedding_params", "non_embedding"), ("params", "total")):
        cols = Columns(params=col, loss="eval_loss", convention=Convention(conv, "6N_non_embedding"))
        # only the non-embedding fit's C = 6 N D counts C as the budgets do: its band is drawn
        fit3 = Approach3(bootstrap=boot if conv == "non_embedding" else 0, seed=0, columns=cols).fit(done)
        atomic_write_json(fit_path(study, "approach3", conv), fit3.to_dict())
        try:
            write_approach2(study, conv, Approach2(columns=cols).fit(done), None)
        except FitRefusal as e:
            write_approach2(study, conv, None, {"reason": str(e), **cols.convention.to_dict(),
                                                "minima": Approach2(columns=cols).minima(done)})
    cols = Columns(params="non_embedding_params", loss="eval_loss", convention=Convention("non_embedding", "6N_non_embedding"))
    atomic_write_json(study / "fit" / "backtest.json", backtest(done, cols))


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
# appended to a copy of the page: the page's own clock at its load event (every inline script run,
# so every figure drawn by Plotly.newPlot) and the errors its handler recorded
_LOAD_CLOCK = ('<script>window.addEventListener("load", () => document.documentElement.setAttribute('
               '"data-load-ms", String(performance.now())));</script>')


def page_load_s(page: Path, profile: Path, timeout: float = 300) -> tuple[float | None, str]:
    """Seconds from navigation to the load event of ``page`` in headless Chromium (parse, plotly.js,
    every figure drawn; browser start not counted) and the page's recorded script errors; ``None``
    without a Chromium."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        return None, "no chromium on PATH"
    html = page.read_text(encoding="utf-8")
    end = html.rfind("</body>")
    timed_copy = page.with_name(page.stem + ".load-clock.html")
    timed_copy.write_text(html[:end] + _LOAD_CLOCK + html[end:], encoding="utf-8")
    out = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", timed_copy.as_uri()],
                         capture_output=True, text=True, timeout=timeout, check=False).stdout
    timed_copy.unlink()
    ms = re.search(r'data-load-ms="([0-9.]+)"', out)
    errors = re.search(r'data-script-errors="([^"]*)"', out)
    return (float(ms.group(1)) / 1e3 if ms else None), (errors.group(1) if errors else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--keep", type=Path, help="write the study and report here instead of a temp folder")
    args = ap.parse_args(argv)
    import plotly.graph_objects as go

    import scaling
    from scaling.report import build_report

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        study = make_study(root / "study", n_runs=args.runs)
        write_fits(study)
        out = root / "report.html"
        t0 = time.perf_counter()
        build_report(study, out)
        t_report = time.perf_counter() - t0
        size = out.stat().st_size
        t0 = time.perf_counter()
        scaling.load_runs(study)
        scaling.load_runs(study, curves=True)
        t_read = time.perf_counter() - t0
        base = root / "baseline.html"
        t0 = time.perf_counter()
        go.Figure(go.Scatter(x=[1, 2], y=[1, 2])).write_html(str(base), include_plotlyjs=True)
        t_page = time.perf_counter() - t0
        bsize = base.stat().st_size
    floor = t_read + t_page
    print(f"report of {args.runs} runs: {t_report:.2f} s (target < 5 s), {size / 1e6:.2f} MB (target < 6 MB)")
    print(f"baseline: reading the store (load_runs, runs and curves) {t_read:.2f} s + a one-figure "
          f"self-contained plotly page {t_page:.2f} s, {bsize / 1e6:.2f} MB")
    print(f"ratio report/baseline: time {t_report / floor:.2f}x, size {size / bsize:.2f}x")
    ok = t_report < 5 and size < 6e6
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
