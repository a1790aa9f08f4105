"""Two small runs sharing one GPU (``runs_per_gpu: 2``) against the same two run back to back.

    python3 benchmarks/gpu_share.py              # on a machine with a GPU, from the checkout
    python3 benchmarks/gpu_share.py --dry-run    # anywhere: the spec and both plans on an assumed H200, no training

1. write one sweep spec of two runs on the local backend (``grid.kind: runs``, two widths, the
   same tokens), and prepare its data and the timing probe once (``scaling sweep plan``), so
   that neither launch pays for them;
2. ``launch`` it into ``OUT/back_to_back`` with ``--gpus G --runs-per-gpu 1``, then into
   ``OUT/shared`` with ``--gpus G --runs-per-gpu 2`` (the same run ids, a folder each);
3. print the wall time of each launch side by side with their ratio, and each run's tokens/s and
   MFU (``result.json``, the trainer's own figures against :mod:`scaling.hardware`'s peak), and
   the plan's estimate of both walls beside them. The summary lands in ``OUT/gpu_share.json``.

Without ``--dry-run`` it refuses to run on a machine with no visible GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scaling.store import SweepStore, atomic_write_json  # noqa: E402
from scaling.sweep import gpus as G  # noqa: E402

H200 = G.Gpu(0, "NVIDIA H200", 141 * G.GIB)  # the dry run's stand-in card


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/gpu_share"), help="the two sweep folders and the summary")
    ap.add_argument("--gpu", type=int, default=None, help="the GPU index (default: the first visible)")
    ap.add_argument("--hidden", type=int, nargs=2, default=[256, 384], help="widths of the two models")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--tokens", type=float, default=1.2e7, help="training tokens of each run (~10-60 s each on an H100-class GPU)")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-tokens", type=int, default=16384)
    ap.add_argument("--dry-run", action="store_true", help="write the spec, print both plans; train nothing")
    a = ap.parse_args(argv)
    if min(a.hidden) < 64 or any(h % 64 for h in a.hidden) or a.layers < 1:
        ap.error("--hidden must be multiples of 64 (heads of 64 dims) and --layers at least 1")
    if a.tokens < a.batch_tokens or a.batch_tokens % a.seq_len:
        ap.error("--tokens must be at least one batch and --batch-tokens a multiple of --seq-len")
    return a


def spec_text(a: argparse.Namespace) -> str:
    """The sweep of the two runs: local backend, its own device choice (CUDA where there is one)."""
    runs = "\n".join(f"    - {{size: {{layers: {a.layers}, hidden: {h}, heads: {h // 64}}}, tokens: {int(a.tokens)}, "
                     f"name: L{a.layers}d{h}}}" for h in a.hidden)
    return f"""\
name: gpu_share
backend: local
data: {{source: builtin:default, tokenizer: bpe}}
model: {{vocab: 4096, seq_len: {a.seq_len}}}
train: {{batch: {a.batch_tokens}, lr: 0.003, eval_tokens: 65536, flops_convention: 6N}}
grid:
  kind: runs
  runs:
{runs}
executor: {{kind: local, retries: 0}}
"""


def write_spec(a: argparse.Namespace) -> Path:
    a.out.mkdir(parents=True, exist_ok=True)
    p = a.out / "gpu_share.yaml"
    p.write_text(spec_text(a))
    return p


def dry_plans(spec: Path) -> dict[str, Any]:
    """Both launches on the stand-in H200, from the assumed MFU (no probe, no GPU)."""
    from scaling.sweep import expand, load_spec

    runs = expand(load_spec(spec))
    out: dict[str, Any] = {}
    for label, per in (("back_to_back", 1), ("shared", 2)):
        plan = G.GpuPlan((H200,), per, "dry run: an assumed H200")
        ests, model = G.gpu_estimates(None, runs, 1, plan)
        _, wall = G.place([float(e or 0.0) for e in ests], plan)
        out[label] = {"est_wall_s": wall, "timing_model": model.source if model else None,
                      "runs": [{"name": r.name, "est_s": e, "memory_gib": G.run_memory_bytes(r) / G.GIB}
                               for r, e in zip(runs, ests, strict=True)]}
    return out


def measure(spec: Path, out: Path, gpu: int) -> dict[str, Any]:
    """Prepare once, then both launches; their walls and each run's tokens/s and MFU."""
    from scaling.sweep import launch, plan_table

    cache = out / "data"
    rows: dict[str, Any] = {}
    for label, per in (("back_to_back", 1), ("shared", 2)):
        # the plan probes this GPU (cached per machine) and gives the estimate; the first launch
        # tokenizes into the shared cache, outside the timed launch below
        plan = plan_table(spec, gpus=[gpu], runs_per_gpu=per)
        if not cache.exists():
            from scaling.backends.local import LocalBackend
            from scaling.sweep import expand, load_spec

            LocalBackend().prepare(expand(load_spec(spec)), str(cache))
        t = time.perf_counter()
        s = launch(spec, out / label, gpus=[gpu], runs_per_gpu=per, cache_dir=cache, progress=False)
        wall = time.perf_counter() - t
        results = [rd.read_result() or {} for rd in SweepStore(out / label).runs()]
        rows[label] = {"wall_s": wall, "est_wall_s": plan["est_wall_seconds"], "done": s["done"], "failed": s["failed_runs"],
                       "runs": [{k: r.get(k) for k in ("name", "tokens_per_s", "mfu", "wall_time", "device", "dtype")}
                                for r in results]}
    return rows


def report(rows: dict[str, Any]) -> None:
    a, b = rows["back_to_back"], rows["shared"]
    est = (f"; plan estimated {a['est_wall_s']:.1f} s and {b['est_wall_s']:.1f} s"
           if a.get("est_wall_s") and b.get("est_wall_s") else "")
    print(f"wall: back to back {a['wall_s']:.1f} s, shared (runs_per_gpu 2) {b['wall_s']:.1f} s, "
          f"ratio shared/back-to-back {b['wall_s'] / a['wall_s']:.2f}{est}")
    for label in ("back_to_back", "shared"):
        for r in rows[label]["runs"]:
            mfu = f"{100 * r['mfu']:.2f}%" if r.get("mfu") is not None else "?"
            tps = f"{r['tokens_per_s']:,.0f}" if r.get("tokens_per_s") else "?"
            print(f"  {label:12s} {r.get('name')}: {tps} tokens/s, MFU {mfu}, {r.get('device')} {r.get('dtype')}")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    spec = write_spec(a)
    if a.dry_run:
        plans = dry_plans(spec)
        for label, p in plans.items():
            print(f"{label}: estimated wall {p['est_wall_s']:.1f} s ({p['timing_model']}); "
                  + ", ".join(f"{r['name']} {r['est_s']:.1f} s, ~{r['memory_gib']:.2f} GiB" for r in p["runs"]))
        atomic_write_json(a.out / "gpu_share.json", {"dry_run": True, "spec": str(spec), "plans": plans})
        return 0
    found, source = G.discover()
    if not found:
        print(f"gpu_share: no GPU visible here ({source}); run it on a GPU machine, or --dry-run", file=sys.stderr)
        return 2
    gpu = found[0].index if a.gpu is None else a.gpu
    rows = measure(spec, a.out, gpu)
    report(rows)
    atomic_write_json(a.out / "gpu_share.json", {"gpu": next((g.to_dict() for g in found if g.index == gpu), None),
                                                 "spec": str(spec), **rows})
    return 0 if all(not r["failed"] for r in rows.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
