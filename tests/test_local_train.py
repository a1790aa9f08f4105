"""The local training loop: loss falls, determinism, SIGKILL-and-resume, WSD branches, result files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from local_helpers import tiny_spec

from scaling.backends.local import LocalBackend
from scaling.backends.local.options import lr_at
from scaling.store import RunDir

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in RunDir(run).read_metrics()]


def test_twenty_steps_loss_falls_and_run_folder_complete(cache, tmp_path) -> None:
    # budgets counted with non-embedding N (Kaplan's), as the quickstart does
    spec = tiny_spec(eval_every=10, checkpoint_every=10, name="tiny", budget=1e9, flops_convention="6N_non_embedding")
    t = time.perf_counter()
    res = LocalBackend(cache).train(spec, tmp_path / "run")
    assert time.perf_counter() - t < 60
    rows = RunDir(tmp_path / "run").read_metrics()
    assert [r["step"] for r in rows] == list(range(1, 21))
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5
    assert {"step", "tokens", "flops", "loss", "lr", "grad_norm", "tokens_per_s", "mfu"} <= set(rows[0])
    assert [r["step"] for r in rows if "eval_loss" in r] == [10, 20]
    for key in (
        "final_loss",
        "eval_loss",
        "params",
        "non_embedding_params",
        "embedding_params",
        "tokens",
        "flops",
        "flops_non_embedding",
        "wall_time",
        "steps",
        "epochs",
        "tokens_per_s",
        "mfu",
        "budget",
        "name",
    ):
        assert key in res, key
    assert res["params"] == spec.params and res["tokens"] == 20 * 512 and res["budget"] == 1e9
    # result.json counts C as the run's convention does, says which, and agrees with its metrics
    assert res["flops_convention"] == "6N_non_embedding"
    assert res["flops"] == 6 * spec.non_embedding_params * 20 * 512 == rows[-1]["flops"]
    assert res["flops_non_embedding"] == res["flops"]
    assert 0 < res["epochs"] < 1
    assert res["eval_loss"] == rows[-1]["eval_loss"]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["final_loss"] == res["final_loss"]
    assert RunDir(tmp_path / "run").read_status()["state"] == "done"
    # the final model loads in transformers, with its tokenizer, and gives our eval loss
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scaling.backends.local.data import prepare_data
    from scaling.backends.local.train import eval_windows

    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    tok = AutoTokenizer.from_pretrained(tmp_path / "run" / "model")
    assert tok.pad_token == "<|pad|>" and hf.config.eos_token_id == tok.eos_token_id
    w = eval_windows(prepare_data(spec.data, 512, cache).tokens("val"), 64, spec.eval_tokens)
    with torch.no_grad():
        loss = hf(input_ids=w[:, :-1], labels=w[:, :-1].clone()).loss  # HF shifts labels itself
    ours = torch.nn.functional.cross_entropy(
        hf(input_ids=w[:, :-1]).logits.reshape(-1, 512), w[:, 1:].reshape(-1)
    )
    assert loss.item() == pytest.approx(ours.item(), rel=0.05)
    assert ours.item() == pytest.approx(res["eval_loss"], rel=1e-4)
    # a finished run is not trained again
    assert LocalBackend(cache).train(spec, tmp_path / "run") == res


def test_same_seed_same_losses_other_seed_differs(cache, tmp_path) -> None:
    a = LocalBackend(cache).train(tiny_spec(tokens=8 * 512), tmp_path / "a")
    b = LocalBackend(cache).train(tiny_spec(tokens=8 * 512), tmp_path / "b")
    LocalBackend(cache).train(tiny_spec(tokens=8 * 512, seed=1), tmp_path / "c")
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert a["eval_loss"] == b["eval_loss"]
    assert losses(tmp_path / "a") != losses(tmp_path / "c")


_CHILD = """
import sys, time, torch
from local_helpers import tiny_spec
from scaling.backends.local import LocalBackend
spec = tiny_spec(tokens=30 * 512, checkpoint_every=5, eval_every=10)
LocalBackend(sys.argv[2]).train(spec, sys.argv[1], progress=lambda row: time.sleep(0.15))
"""


@pytest.mark.slow
def test_sigkill_then_resume_continues_the_same_loss_curve(cache, tmp_path) -> None:
    spec = tiny_spec(tokens=30 * 512, checkpoint_every=5, eval_every=10)
    ref = LocalBackend(cache).train(spec, tmp_path / "ref")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(run), str(cache)], env=env, cwd=ROOT)
    try:
        deadline = time.time() + 120
        while not (run / "checkpoints" / "step-00000010").exists():
            assert proc.poll() is None, "the child exited before its second checkpoint"
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.2)  # mid-way between checkpoints
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "result.json").exists()
    assert RunDir(run).read_status()["state"] == "running"
    res = LocalBackend(cache).train(spec, run)
    assert res["resumed_from_step"] in (10, 15)
    assert losses(run) == losses(tmp_path / "ref")  # bit for bit, on the CPU
    assert [r["step"] for r in RunDir(run).read_metrics()] == list(range(1, 31))
    assert res["eval_loss"] == ref["eval_loss"]
    assert RunDir(run).read_status()["attempts"] == 2


def test_preempt_and_resume_in_process(cache, tmp_path) -> None:
    spec = tiny_spec(tokens=12 * 512, checkpoint_every=4)
    ref = LocalBackend(cache).train(spec, tmp_path / "ref")
    assert LocalBackend(cache).train(spec, tmp_path / "r", stop_after_steps=5) == {"stopped_at_step": 5}
    res = LocalBackend(cache).train(spec, tmp_path / "r")
    assert res["resumed_from_step"] == 5
    assert losses(tmp_path / "r") == losses(tmp_path / "ref")
    assert res["final_loss"] == ref["final_loss"]


def test_wsd_branch_equals_a_direct_wsd_run(cache, tmp_path) -> None:
    """A cooldown branch from the constant-LR trunk reproduces the run trained with WSD throughout."""
    sweep = tmp_path / "runs"
    trunk = tiny_spec(tokens=40 * 512, schedule={"kind": "constant", "warmup_frac": 0.1}, checkpoint_every=10)
    wsd = {
        "kind": "wsd",
        "warmup_frac": 0.13,
        "decay_frac": 1 / 3,
        "final_frac": 0.0,
    }  # 4 warmup steps as the trunk
    direct = tiny_spec(tokens=30 * 512, schedule=wsd)
    branch = tiny_spec(tokens=30 * 512, schedule=wsd, branch_of=trunk.run_id, branch_from_tokens=20 * 512)
    backend = LocalBackend(cache)
    backend.train(trunk, sweep / trunk.run_id)
    assert [c.name for c in sorted((sweep / trunk.run_id / "checkpoints").iterdir())] == [
        f"step-{s:08d}" for s in (10, 20, 30, 40)
    ]  # a constant-LR trunk keeps every checkpoint for branches
    d = backend.train(direct, sweep / direct.run_id)
    b = backend.train(branch, sweep / branch.run_id)
    assert b["branch"] == {"of": trunk.run_id, "from_step": 20, "from_tokens": 20 * 512}
    assert losses(sweep / branch.run_id) == losses(sweep / direct.run_id)
    assert b["eval_loss"] == d["eval_loss"] and b["final_loss"] == d["final_loss"]
    assert [r["lr"] for r in RunDir(sweep / branch.run_id).read_metrics()][20:] == [
        lr_at(direct, s) for s in range(20, 30)
    ]


def test_lr_schedules() -> None:
    cos = tiny_spec(tokens=100 * 512, schedule={"kind": "cosine", "warmup_frac": 0.1, "final_frac": 0.1})
    lrs = [lr_at(cos, s) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[9] == pytest.approx(1e-2)
    assert lrs[-1] == pytest.approx(1e-3) and max(lrs) == pytest.approx(1e-2)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    wsd = tiny_spec(
        tokens=100 * 512, schedule={"kind": "wsd", "warmup_frac": 0.0, "decay_frac": 0.2, "final_frac": 0.0}
    )
    lrs = [lr_at(wsd, s) for s in range(100)]
    assert lrs[:80] == [1e-2] * 80 and lrs[-1] == 0.0 and lrs[90] == pytest.approx(1e-2 * 9 / 20)
    sq = tiny_spec(
        tokens=100 * 512,
        schedule={"kind": "wsd", "decay_frac": 0.2, "decay_shape": "1-sqrt", "final_frac": 0.0},
    )
    assert lr_at(sq, 84) == pytest.approx(1e-2 * (1 - (5 / 20) ** 0.5))


def test_our_adamw_equals_torch_fused_adamw() -> None:
    from scaling.backends.local.optim import AdamW

    torch.manual_seed(0)
    a, b = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())

    def groups(m):
        return [
            {"params": [m.weight], "weight_decay": 0.1},
            {"params": [m.bias], "weight_decay": 0.0},
        ]

    ours = AdamW(groups(a), lr=1e-2, betas=(0.9, 0.95), eps=1e-8)
    ref = torch.optim.AdamW(groups(b), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, fused=True)
    for _ in range(5):
        x = torch.randn(16, 8)
        for m, o in ((a, ours), (b, ref)):
            m(x).pow(2).sum().backward()
            o.step()
            o.zero_grad(set_to_none=True)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
