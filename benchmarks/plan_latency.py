"""Wall time of ``scaling plan --law all --flops 1e22`` as a fresh process, beside ``python -c pass``.

Prints the median of N runs of each (interleaved, so machine load hits both alike) and the ratio.
Target: the plan under 0.5 s on a 2-core machine.

    python benchmarks/plan_latency.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLAN = [sys.executable, "-m", "scaling", "plan", "--law", "all", "--flops", "1e22"]
BASELINE = [sys.executable, "-c", "pass"]


def wall(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    wall(PLAN, env)  # warm the page cache and bytecode once; not counted
    plan_times, base_times = [], []
    for _ in range(args.runs):
        plan_times.append(wall(PLAN, env))
        base_times.append(wall(BASELINE, env))
    plan_s, base_s = statistics.median(plan_times), statistics.median(base_times)
    print(
        f"scaling plan --law all --flops 1e22: median {plan_s:.3f} s over {args.runs} runs (target < 0.5 s)"
    )
    print(f"python -c pass (baseline):           median {base_s:.3f} s over {args.runs} runs")
    print(
        f"ratio plan / baseline: {plan_s / base_s:.2f}x; plan minus interpreter start: {plan_s - base_s:.3f} s"
    )


if __name__ == "__main__":
    main()
