"""A tiny Nanotron run end to end through our entry point, on the GPUs of this machine.

    python benchmarks/nanotron_tiny_run.py [--out /tmp/nanotron_tiny] [--steps 60]

Needs CUDA, Nanotron at the pinned commit installed from a clone (see
``scaling.backends.nanotron.INSTALL``), flash-attn and datatrove. It prepares the built-in corpus
with the local backend's tokenizer, trains a 2-layer Llama with torchrun on every visible GPU
(data parallel), and prints, each beside its baseline from the same run:

* our full-precision losses against Nanotron's 3-significant-digit stdout (ratio ~1, |diff| <= 0.5%),
* the entry point's validation loss against the same loss recomputed from the converted
  transformers model on the CPU (ratio ~1: the conversion is faithful),
* the loss after training against the loss at step 1 (ratio < 1: it learned).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, ROOT)  # run from a checkout without installing; torchrun's workers get it too
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/nanotron_tiny")
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()

    from scaling.backends.nanotron import NanotronBackend
    from scaling.backends.nanotron.entry import eval_loss, missing_requirements

    missing = missing_requirements(needs_flash_attn=False)
    if missing:
        print("cannot run: missing " + "; ".join(missing))
        return 1
    import torch

    from scaling.backends.nanotron.data import NanosetData, read_ds
    from scaling.backends.nanotron.stdout_parser import parse_file
    from scaling.runspec import RunSpec
    from scaling.store import SweepStore

    gpus = torch.cuda.device_count()
    seq, batch_seqs = 256, 8 * gpus
    spec = RunSpec.model_validate({
        "shape": {"layers": 2, "hidden": 128, "heads": 4, "kv_heads": 2, "vocab": 1024, "seq_len": seq},
        "tokens": args.steps * seq * batch_seqs, "batch_tokens": seq * batch_seqs, "optimizer": {"lr": 3e-3},
        "data": {"source": "builtin:default", "tokenizer": "bpe", "max_chars": 3_000_000},
        "eval_tokens": 32768, "backend": "nanotron", "name": "nanotron-tiny",
        "backend_options": {"gpus_per_node": gpus, "gpu_memory_gb": torch.cuda.get_device_properties(0).total_memory / 1e9,
                            "gpu": "h100"},
    })  # fmt: skip
    store = SweepStore(args.out)
    rd = store.run(spec.run_id)
    rd.write_spec(spec.to_json_dict())
    backend = NanotronBackend()
    backend.prepare([spec], str(Path(args.out) / "data"))
    t0 = time.perf_counter()
    result = backend.train(spec, rd)
    wall = time.perf_counter() - t0

    rows = [r for r in rd.read_metrics() if r.get("loss") is not None]
    printed = {r["step"]: r["loss"] for r in parse_file(rd.path / "nanotron" / "logs" / "node0.log")}
    pairs = [(r["loss"], printed[r["step"]]) for r in rows if r["step"] in printed]
    worst = max(abs(a - b) / a for a, b in pairs) if pairs else float("nan")
    data = NanosetData.load(backend._data_folder(spec, Path(args.out) / "data"))
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(rd.path / "model").float()
    cpu_eval = eval_loss(model, read_ds(data.val_file, data.vocab), seq_len=seq, max_tokens=spec.eval_tokens)
    print(f"gpus: {gpus} ({torch.cuda.get_device_name(0)}), steps recorded: {len(rows)} of {spec.steps}, wall {wall:.1f} s")
    print(f"loss: recorded {rows[-1]['loss']:.6f} vs stdout {printed.get(rows[-1]['step'])} "
          f"(worst relative difference over {len(pairs)} steps: {worst:.2e}; stdout keeps 3 digits)")
    print(f"eval loss: entry point {result['eval_loss']:.6f} vs converted model on CPU {cpu_eval:.6f} "
          f"(ratio {result['eval_loss'] / cpu_eval:.5f})")
    print(f"train loss: last {rows[-1]['loss']:.4f} vs step 1 {rows[0]['loss']:.4f} (ratio {rows[-1]['loss'] / rows[0]['loss']:.3f})")
    print(f"result.json: final_loss {result['final_loss']:.4f}, tokens/s {result['tokens_per_s']}, mfu {result['mfu']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
