"""Sweep engine overhead and core sharing, each figure beside its baseline from the same run.

1. Scheduling overhead per run on the local executor: N no-op runs through ``scaling.sweep.launch``
   (store writes, locking, spec parsing, progress, the RunTask wrapper) against the same number of
   no-op calls submitted with bare submitit (``LocalExecutor``, the same runs-at-once and polling
   interval). Target: at most 1.2x.
2. Core sharing: the wall time of an 8-run tiny sweep (real local-backend training) run 2 at a time
   with one thread each, against 1 at a time with both threads. Target: at least 1.3x.

    python benchmarks/sweep_overhead.py            # both
    python benchmarks/sweep_overhead.py --only overhead --runs 16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
POLL_S = 0.1

NOOP_SPEC = """\
name: noop
backend: noop
model: {{vocab: 256, seq_len: 16}}
train: {{batch: 16, lr: 0.001}}
grid:
  kind: kaplan_d
  size: {{layers: 1, hidden: 8, heads: 1}}
  tokens: [{tokens}]
executor: {{kind: local, retries: 0, poll_s: {poll}}}
"""

TINY_SPEC = """\
name: share
backend: local
backend_options: {{save_model: false}}
data: {{source: "builtin:shakespeare", max_chars: 400000}}
model: {{vocab: 512, seq_len: 128}}
train: {{batch: 2048, lr: 0.01, eval_tokens: 8192, flops_convention: 6N_non_embedding}}
grid:
  kind: kaplan_n
  tokens: {tokens}
  sizes: [{sizes}]
executor: {{kind: local, retries: 0, poll_s: {poll}}}
"""


def bare_submitit(n: int, parallel: int, folder: Path) -> float:
    """Submit ``n`` no-op calls with submitit's LocalExecutor, ``parallel`` in flight, polled like the launcher."""
    import submitit

    from benchmarks._sweep_noop import noop

    ex = submitit.LocalExecutor(folder)
    ex.update_parameters(timeout_min=60)
    t0 = time.perf_counter()
    pending, inflight = list(range(n)), []
    while pending or inflight:
        while pending and len(inflight) < parallel:
            pending.pop()
            inflight.append(ex.submit(noop))
        for j in [j for j in inflight if j.done()]:
            assert j.result() == 0
            inflight.remove(j)
        time.sleep(POLL_S)
    return time.perf_counter() - t0


def sweep_noop(n: int, parallel: int, folder: Path) -> float:
    from scaling.backends.base import register_backend
    from scaling.sweep import launch, parse_spec

    register_backend("noop", "benchmarks._sweep_noop:NoopBackend")  # a backend registered in this process
    spec = parse_spec(NOOP_SPEC.format(tokens=", ".join(str(16 * (i + 1)) for i in range(n)), poll=POLL_S))
    t0 = time.perf_counter()
    s = launch(spec, folder, executor="local", max_parallel=parallel, threads=1, progress=False)
    dt = time.perf_counter() - t0
    assert s["done"] == n, s
    return dt


def overhead(n: int, parallel: int) -> dict[str, float]:
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])  # jobs import benchmarks/
    with tempfile.TemporaryDirectory() as d:
        bare_submitit(2, parallel, Path(d) / "warm")  # warm the page cache for both sides
        bare = bare_submitit(n, parallel, Path(d) / "bare")
        ours = sweep_noop(n, parallel, Path(d) / "sweep")
    r = {"runs": n, "parallel": parallel, "bare_submitit_s_per_run": bare / n, "sweep_s_per_run": ours / n,
         "ratio": ours / bare}
    print(f"scheduling overhead per no-op run ({n} runs, {parallel} at a time): sweep {ours / n:.3f} s, "
          f"bare submitit {bare / n:.3f} s -> ratio {ours / bare:.2f}x (target <= 1.2x)")
    return r


def sharing(tokens: int) -> dict[str, float]:
    from scaling.sweep import launch, parse_spec

    sizes = ", ".join(f"{{layers: {layers}, hidden: {h}, heads: 2}}" for layers in (1, 2) for h in (32, 48, 64, 80))
    spec = parse_spec(TINY_SPEC.format(tokens=tokens, sizes=sizes, poll=POLL_S))
    with tempfile.TemporaryDirectory() as d:
        cache = Path(d) / "cache"
        launch(parse_spec(TINY_SPEC.format(tokens=2048, sizes=sizes.split("}, ")[0] + "}", poll=POLL_S)),
               Path(d) / "warm", executor="local", progress=False, cache_dir=cache)  # tokenize once, outside the timing
        t0 = time.perf_counter()
        a = launch(spec, Path(d) / "two", executor="local", max_parallel=2, threads=1, progress=False, cache_dir=cache)
        two = time.perf_counter() - t0
        t0 = time.perf_counter()
        b = launch(spec, Path(d) / "one", executor="local", max_parallel=1, threads=2, progress=False, cache_dir=cache)
        one = time.perf_counter() - t0
    assert a["done"] == b["done"] == 8, (a, b)
    print(f"8-run tiny sweep ({tokens} tokens each): 2 at a time x 1 thread {two:.1f} s, "
          f"1 at a time x 2 threads {one:.1f} s -> speed-up {one / two:.2f}x (target >= 1.3x)")
    return {"two_by_one_s": two, "one_by_two_s": one, "speedup": one / two}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("overhead", "sharing"), default=None)
    ap.add_argument("--runs", type=int, default=12, help="no-op runs for the overhead figure")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=204800, help="tokens per run of the tiny sweep")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out = {}
    if a.only in (None, "overhead"):
        out["overhead"] = overhead(a.runs, a.parallel)
    if a.only in (None, "sharing"):
        out["sharing"] = sharing(a.tokens)
    if a.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
