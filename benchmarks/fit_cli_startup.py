"""Wall time of ``scaling fit`` as a whole process on Epoch's 240 points, beside ``import scaling``.

    python benchmarks/fit_cli_startup.py [--repeats 7] [--checkout PATH ...]

The command is what a user types: ``python -m scaling fit points.csv`` (approach 3, grid
estimator, no bootstrap) on the 240 points of Besiroglu et al. (2024) that
``analysis/chinchilla_replication.load`` keeps (``params, flops, loss``). The baseline, run in
the same loop, is ``python -c "import scaling"``: the interpreter and the package with nothing
else. Repeats alternate the two commands so a change in machine load hits both; the medians and
their ratio are printed. ``--checkout PATH`` times the same ``scaling fit`` from another source
tree too (e.g. an older commit's worktree), in the same loop.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

TARGET_S = 1.5


def wall(cmd: list[str], root: Path) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one process, spawn to exit, ``root`` first on
    PYTHONPATH. On a busy machine the CPU seconds are the steadier figure."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--checkout", type=Path, action="append", default=[], help="another source tree to time")
    args = ap.parse_args()

    from analysis.chinchilla_replication import load

    with tempfile.TemporaryDirectory() as tmp:
        points = Path(tmp) / "epoch240.csv"
        data = load()[["params", "flops", "loss"]]
        data.to_csv(points, index=False)
        fit = [sys.executable, "-m", "scaling", "fit", str(points)]
        cmds = {"import scaling": ([sys.executable, "-c", "import scaling"], ROOT),
                "scaling fit (this tree)": (fit, ROOT)}
        for other in args.checkout:
            cmds[f"scaling fit ({other})"] = (fit, other.resolve())
        for cmd, root in cmds.values():  # warm the file cache and the .pyc files
            wall(cmd, root)
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
        for _ in range(args.repeats):
            for k, (cmd, root) in cmds.items():
                times[k].append(wall(cmd, root))
    base = statistics.median(w for w, _ in times["import scaling"])
    base_cpu = statistics.median(c for _, c in times["import scaling"])
    print(f"{len(data)} points, {args.repeats} alternating repeats, load average {os.getloadavg()[0]:.1f}")
    for k, ts in times.items():
        med, cpu = statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts)
        print(f"{k:<40} wall median {med:6.3f} s (min {min(w for w, _ in ts):.3f}) {med / base:6.2f}x import scaling; "
              f"CPU median {cpu:6.3f} s {cpu / base_cpu:6.2f}x")
    med_fit = statistics.median(w for w, _ in times["scaling fit (this tree)"])
    print(f"target: scaling fit under {TARGET_S} s: {'met' if med_fit < TARGET_S else 'NOT met'} ({med_fit:.3f} s)")


if __name__ == "__main__":
    main()
