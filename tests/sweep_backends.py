"""A small backend for the sweep engine's tests: real work, no torch, controllable timing and faults.

``ToyBackend`` fits ``y = w x`` by SGD on a fixed synthetic problem, one step per
``spec.batch_tokens`` tokens, so its loss really falls and its result depends on the run config.
It honours the backend contract exactly like the trainers do: status and metrics through
:class:`RunDir`, a checkpoint (``checkpoints/state.json``: step, weights, RNG seed) every
``checkpoint_every`` steps, resume from the newest checkpoint with metrics truncated after it, and
``result.json`` last. It exists so that launcher behaviour (retries, pre-emption, kills, Slurm
arrays) can be tested in seconds without importing torch in every job.

``spec.backend_options`` (hashed into the run id, so each test gets its own runs):

* ``step_s``: seconds each step sleeps (to make runs long enough to kill or pre-empt);
* ``fail_attempts``: ``{name: n}`` raise on the run's first ``n`` attempts;
* ``fail_always``: list of run names that always raise;
* ``gpus_per_run``: ``{name: k}`` GPUs the run takes on a local executor with GPUs (default 1);
* ``law``: ``{E, A, alpha, B, beta, noise}``: the final (and eval) loss is then
  ``E + A / N^alpha + B / D^beta`` (N the total parameters, D the tokens; Hoffmann et al. 2022,
  eq. 2) plus Gaussian noise of std ``noise`` drawn from the run's seed and size, so IsoFLOP
  valleys sit where the test puts them;
* ``threads``: an execution option (kept out of the run id), unused.

Each attempt appends what its process saw to ``toy_device.jsonl`` (``CUDA_VISIBLE_DEVICES``,
``CUDA_DEVICE_ORDER``, start and, when it ends, end time), for the GPU placement tests.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from typing import Any

from scaling.runspec import RunSpec
from scaling.store import RunDir, atomic_write_json

NAME = "toy"


class ToyBackend:
    """Registered as ``toy`` by the entry point in tests/plugins/."""

    name = NAME
    execution_options = frozenset({"threads"})  # accepted and unused: how a run executes, not what it computes

    def prepare(self, specs: list[RunSpec], cache_dir: str) -> None:
        os.makedirs(cache_dir, exist_ok=True)
        with open(os.path.join(cache_dir, "prepared.log"), "a") as f:
            f.write(f"{len(specs)}\n")

    def gpus_per_run(self, spec: RunSpec) -> int:
        return int(spec.backend_options.get("gpus_per_run", {}).get(spec.name or "", 1))

    def estimate_seconds(self, spec: RunSpec) -> float:
        return spec.steps * float(spec.backend_options.get("step_s", 0.0))

    def describe(self, spec: RunSpec) -> dict[str, Any]:
        return {"toy_steps": spec.steps}

    def train(self, spec: RunSpec, run_dir: RunDir) -> dict[str, Any]:
        t0 = time.time()
        opts = spec.backend_options
        run_dir.path.mkdir(parents=True, exist_ok=True)
        if run_dir.read_spec() is None:
            run_dir.write_spec(spec.to_json_dict())
        # attempts counted in a file of their own: status.json is the launcher's
        attempts_file = run_dir.path / "toy_attempts"
        attempt = int(attempts_file.read_text()) + 1 if attempts_file.exists() else 1
        attempts_file.write_text(str(attempt))
        seen = {"attempt": attempt, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "cuda_device_order": os.environ.get("CUDA_DEVICE_ORDER"), "pid": os.getpid()}
        _record(run_dir, {**seen, "start": t0})
        run_dir.update_status("running", attempts=attempt)
        if spec.name in opts.get("fail_always", []):
            raise RuntimeError(f"toy failure of {spec.name} (always)")
        if attempt <= int(opts.get("fail_attempts", {}).get(spec.name or "", 0)):
            raise RuntimeError(f"toy failure of {spec.name} on attempt {attempt}")

        ck = run_dir.checkpoints / "state.json"
        step, w = 0, 0.0
        if ck.exists():
            state = json.loads(ck.read_text())
            step, w = int(state["step"]), float(state["w"])
        run_dir.truncate_metrics_after(step)  # a killed attempt's rows past the checkpoint (or all, without one)
        lr = spec.optimizer.lr
        step_s = float(opts.get("step_s", 0.0))
        flops_per_step = spec.flops() / spec.steps
        while step < spec.steps:
            rng = random.Random(spec.seed * 1_000_003 + step)  # the same batch at a step, resumed or not
            xs = [rng.uniform(-1, 1) for _ in range(8)]
            grad = sum(2 * (w * x - 3.0 * x) * x for x in xs) / len(xs)
            w -= lr * grad
            step += 1
            loss = sum((w * x - 3.0 * x) ** 2 for x in xs) / len(xs)
            if step_s:
                time.sleep(step_s)
            run_dir.append_metrics([{"step": step, "tokens": step * spec.batch_tokens, "flops": step * flops_per_step,
                                     "loss": loss, "lr": lr, "host": socket.gethostname()}])
            if spec.checkpoint_every and step % spec.checkpoint_every == 0 and step < spec.steps:
                atomic_write_json(ck, {"step": step, "w": w})
        if "law" in opts:
            loss = law_loss(opts["law"], spec.params, spec.steps * spec.batch_tokens, spec.seed)
        result = {
            "final_loss": loss, "eval_loss": loss, "params": spec.params, "non_embedding_params": spec.non_embedding_params,
            "tokens": spec.steps * spec.batch_tokens, "flops": spec.flops(), "wall_time": time.time() - t0,
            "steps": spec.steps, "epochs": 1.0, "attempt": attempt, "name": spec.name, "budget": spec.budget,
        }
        run_dir.write_result(result)
        _record(run_dir, {**seen, "end": time.time()})
        return result


def _record(run_dir: RunDir, row: dict[str, Any]) -> None:
    with open(run_dir.path / "toy_device.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")



def law_loss(law: dict[str, float], n: float, d: float, seed: int) -> float:
    """``E + A / N^alpha + B / D^beta`` plus ``noise`` x a standard normal fixed by (seed, N, D)."""
    mean = law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]
    return mean + float(law.get("noise", 0.0)) * random.Random(f"{seed}:{n}:{d}").gauss(0.0, 1.0)


def wait_for(pred, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll ``pred`` until it holds; TimeoutError naming ``what`` otherwise."""
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.1)
    raise TimeoutError(f"waited {timeout} s for {what}")
