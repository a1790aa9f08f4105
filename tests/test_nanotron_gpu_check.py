"""The CPU-testable parts of ``benchmarks/nanotron_gpu_check.py``: arguments, the two sweep specs,
the wheelhouse checks and pip's dry run of its install, the kill, the resume check on recorded
rows, the conversion check on a Nanotron-layout checkpoint, the comparison of the backends.
The training itself needs a GPU (the script refuses without one)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("nanotron_gpu_check", ROOT / "benchmarks" / "nanotron_gpu_check.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


def test_arguments():
    a = check.parse_args([])
    assert a.wheelhouse == ROOT / ".whl" and a.budget == 3e13 and a.hidden == [128, 192]
    with pytest.raises(SystemExit):
        check.parse_args(["--hidden", "100", "128"])
    with pytest.raises(SystemExit):
        check.parse_args(["--budget", "-1"])


def test_the_two_sweeps_hold_the_same_runs(tmp_path):
    from scaling.backends.nanotron.config import plan_for
    from scaling.sweep.grid import expand
    from scaling.sweep.spec import load_spec

    paths = check.write_specs(tmp_path, check.sweep_specs(3e13, [128, 192], "h200"))
    runs = {name: expand(load_spec(p)) for name, p in paths.items()}
    assert [r.name for r in runs["nanotron"]] == [r.name for r in runs["local"]] and len(runs["local"]) == 2
    for a, b in zip(runs["nanotron"], runs["local"], strict=True):
        assert (a.shape, a.tokens, a.batch_tokens, a.optimizer, a.schedule, a.seed) == (b.shape, b.tokens, b.batch_tokens, b.optimizer, b.schedule, b.seed)
        assert a.budget == b.budget == 3e13 and a.backend == "nanotron" and b.backend == "local"
        plan = plan_for(a)
        assert (plan.dp, plan.tp, plan.pp) == (1, 1, 1)
        assert a.options["dtype"] == b.options["dtype"] == "float32"
        assert a.steps >= a.options["checkpoint_interval"] + 4  # a checkpoint, then the kill three steps on


def _tiny_wheel(folder: Path, name: str = "scaling_check_demo") -> Path:
    src = folder / "src"
    (src / name).mkdir(parents=True)
    (src / name / "__init__.py").write_text("")
    (src / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "0.1"\n'
                                        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n')  # fmt: skip
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(folder / "wh"), str(src)],
                   check=True, capture_output=True)  # fmt: skip
    return folder / "wh"


def test_wheelhouse_problems_and_pips_dry_run(tmp_path, monkeypatch, capfd):
    assert "no wheelhouse" in check.wheelhouse_problems(tmp_path / "none")[0]
    wh = _tiny_wheel(tmp_path)
    problems = check.wheelhouse_problems(wh)
    assert any("no nanotron wheel" in p for p in problems) and any("run_train.py" in p for p in problems)
    monkeypatch.setattr(check, "REQUIRED_WHEELS", ("scaling_check_demo",))
    (wh / "run_train.py").write_text("")
    assert check.wheelhouse_problems(wh) == []
    cmd = check.install_command(wh, tmp_path / "site", dry_run=True)
    assert "--dry-run" in cmd and "--no-index" in cmd and "--no-deps" in cmd and cmd[cmd.index("--python-version") + 1] == "3.12"
    env = check.install_wheelhouse(wh, tmp_path / "site", dry_run=True)
    assert "Would install scaling_check_demo-0.1" in capfd.readouterr().out
    assert not (tmp_path / "site").exists()  # a dry run installs nothing
    assert env["NANOTRON_RUN_TRAIN"] == str((wh / "run_train.py").resolve()) and str(ROOT) in env["PYTHONPATH"]
    (wh / "scaling_check_demo-0.2-py3-none-any.whl").write_bytes((next(wh.glob("*0.1*.whl"))).read_bytes())
    assert any("twice" in p for p in check.wheelhouse_problems(wh))


def test_dry_run_writes_the_specs_and_trains_nothing(tmp_path, capsys):
    assert check.main(["--dry-run", "--skip-install", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("would run:") == 2 and (tmp_path / "nanotron.yaml").exists() and not (tmp_path / "nanotron").exists()


def test_kill_tree_kills_the_process_and_its_children():
    import psutil

    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
                               "print(c.pid, flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    child = int(parent.stdout.readline())
    killed = check.kill_tree(parent.pid)
    assert set(killed) == {parent.pid, child}
    assert parent.wait(timeout=30) == -9
    end = time.monotonic() + 30
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE and time.monotonic() < end:
        time.sleep(0.1)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def _rows(steps, loss=lambda s: 5.0 / s**0.3, attempt=0):
    return [{"step": s, "loss": loss(s), "attempt": attempt} for s in steps]


def test_resume_check_on_recorded_rows():
    before = _rows(range(1, 29))  # killed at step 28, checkpoint 25
    good = _rows(range(1, 26)) + _rows(range(26, 101), attempt=1)
    assert check.check_resume(before, good, checkpoint=25, steps=100) == []
    twice = _rows(range(1, 29)) + _rows(range(26, 101), attempt=1)  # rows after the checkpoint kept
    assert "duplicated [26, 27, 28]" in check.check_resume(before, twice, 25, 100)[0]
    lost = _rows(range(1, 26)) + _rows(range(27, 101))
    assert "missing [26]" in check.check_resume(before, lost, 25, 100)[0]
    scratch = _rows(range(1, 26)) + [{"step": s, "loss": 5.0 / (s - 25) ** 0.3} for s in range(26, 101)]  # restarted
    assert "training restarted" in check.check_resume(before, scratch, 25, 100)[0]
    rewritten = _rows(range(1, 26), loss=lambda s: 1.0) + _rows(range(26, 101), attempt=1)
    assert any("changed" in p for p in check.check_resume(before, rewritten, 25, 100))


def test_conversion_check_on_a_nanotron_layout_checkpoint(tmp_path):
    from nanotron_layout import write_nanotron_checkpoint
    from nanotron_study import VOCAB, make_study, nanotron_spec
    from transformers import LlamaConfig, LlamaForCausalLM

    from scaling.backends.nanotron import NanotronBackend
    from scaling.backends.nanotron.data import NanosetData, read_ds
    from scaling.backends.nanotron.entry import eval_loss

    spec = nanotron_spec(gpus_per_node=1)
    store, folder = make_study(tmp_path / "study", spec)
    rd = store.run(spec.run_id)
    NanotronBackend().write_config(spec, rd)
    s = spec.model_shape
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=s.hidden, intermediate_size=s.d_ffn, num_hidden_layers=s.layers,
                                         num_attention_heads=s.heads, num_key_value_heads=s.n_kv_heads, vocab_size=VOCAB,
                                         max_position_embeddings=s.seq_len, rms_norm_eps=1e-5)).eval()  # fmt: skip
    write_nanotron_checkpoint(model, rd.checkpoints, step=spec.steps, model_class="qwen2")
    data = NanosetData.load(folder)
    truth = eval_loss(model, read_ds(data.val_file, VOCAB), seq_len=s.seq_len, max_tokens=spec.eval_tokens)
    rd.write_result({"eval_loss": truth, "nanotron": {"eval_loss_nanotron": truth + 2e-4}})  # as recorded on the GPU
    c = check.conversion_check(rd.path, device="cpu")
    assert c["transformers"] == pytest.approx(truth, abs=1e-6) and check.conversion_problems(c) == []
    rd.write_result({"eval_loss": truth, "nanotron": {"eval_loss_nanotron": truth + 5e-3}})
    assert "vs nanotron" in check.conversion_problems(check.conversion_check(rd.path, device="cpu"))[0]
    rd.write_result({"eval_loss": truth, "nanotron": {"eval_loss_nanotron": None, "eval_loss_nanotron_error": "world size 2"}})
    assert "world size 2" in check.conversion_problems(check.conversion_check(rd.path, device="cpu"))[0]


def test_backends_compared_by_run_name():
    a = {"r1": {"params": 10, "eval_loss": 3.00, "tokens_per_s": 1e5, "mfu": 0.2},
         "r2": {"params": 20, "eval_loss": 2.80, "tokens_per_s": 8e4, "mfu": 0.25}}
    b = {"r1": {"params": 10, "eval_loss": 3.05, "tokens_per_s": 2e5, "mfu": None},
         "r2": {"params": 20, "eval_loss": 3.00, "tokens_per_s": 9e4, "mfu": 0.3}}  # fmt: skip
    lines, problems = check.compare_backends(a, b)
    assert len(lines) == 3 and "100,000" in lines[1] and "20.0%" in lines[1]
    assert problems == ["r2: held-out losses 2.8000 (nanotron) vs 3.0000 (local)"]  # 6.7% apart; r1 1.6%
    _, missing = check.compare_backends(a, {"r1": b["r1"]})
    assert missing == ["r2: finished with nanotron only"]
    assert check.nanotron_count_problems({"r": {"params": 7, "nanotron": {"num_params": {"total": 8}}}}) == [
        "r: Nanotron counts 8 parameters, we count 7"]
