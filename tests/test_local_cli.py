"""``scaling train``: bad input exits 2 with one line naming the field; a tiny run end to end."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

BAD = [
    (["--params", "3e5", "--tokens", "1e5", "--corpus", "/no/such/corpus"], "data.source='/no/such/corpus'"),
    (
        ["--params", "3e5", "--tokens", "1e5", "--vocab", "70000", "--token-dtype", "uint16"],
        "token_dtype='uint16'",
    ),
    (["--params", "3e5", "--tokens", "100"], "smaller than one batch"),
    (
        ["--layers", "2", "--hidden", "100", "--heads", "3", "--tokens", "1e5"],
        "heads=3: must divide hidden=100",
    ),
    (["--params", "3e5", "--tokens", "1e5", "--micro-batch", "5"], "micro_batch=5"),
    (["missing.yaml"], "spec='missing.yaml': no such file"),
    (
        ["--layers", "2", "--hidden", "12", "--heads", "4", "--tokens", "1e5"],
        "head size hidden/heads=3 is odd",
    ),
]


@pytest.mark.parametrize(("args", "msg"), BAD, ids=[b[1][:24] for b in BAD])
def test_bad_input_exits_2_with_one_clear_line(args: list[str], msg: str, tmp_path) -> None:
    p = run_cli("train", *args, "--out", str(tmp_path / "run"), timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], p.stderr
    assert not (tmp_path / "run").exists()  # nothing written for bad input


@pytest.mark.slow
def test_train_from_a_run_file_with_json(tmp_path) -> None:
    spec = {
        "shape": {"layers": 1, "hidden": 32, "heads": 1, "vocab": 384, "seq_len": 32},
        "tokens": 8 * 256,
        "batch_tokens": 256,
        "optimizer": {"lr": 0.01},
        "data": {"source": "builtin:bible", "max_chars": 150000},
        "eval_tokens": 1024,
    }
    f = tmp_path / "run.yaml"
    import yaml

    f.write_text(yaml.safe_dump(spec))
    env = {"SCALING_CACHE": str(tmp_path / "cache")}
    p = run_cli(
        "train", str(f), "--threads", "1", "--out", str(tmp_path / "run"), "--json", env=env, timeout=300
    )
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["steps"] == 8 and res["params"] == res["non_embedding_params"] + 2 * 384 * 32
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    assert (tmp_path / "cache" / "data").is_dir()


TINY = ["--layers", "1", "--hidden", "16", "--heads", "2", "--vocab", "384", "--seq-len", "32", "--batch-tokens", "256",
        "--corpus", "builtin:bible", "--max-chars", "150000", "--eval-every", "4", "--threads", "1", "--json"]


def test_a_folder_holding_another_specs_run_is_refused_unless_replaced(tmp_path) -> None:
    out, env = tmp_path / "run", {"SCALING_CACHE": str(tmp_path / "cache")}
    first = run_cli("train", *TINY, "--tokens", "2048", "--out", str(out), env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    old = json.loads(first.stdout)
    other = run_cli("train", *TINY, "--tokens", "3072", "--out", str(out), env=env, timeout=300)
    assert other.returncode == 2, other.stderr
    line = other.stderr.strip()
    assert "\n" not in line and old["run_id"] in line and "--replace" in line and "2048 tokens" in line
    new_id = line.split("not this spec's run ")[1].split()[0]
    assert new_id != old["run_id"] and "3072 tokens" in line
    assert json.loads((out / "result.json").read_text())["run_id"] == old["run_id"]  # untouched
    # the same run with another thread count is the same run: reused, not refused
    again = run_cli("train", *TINY[:-3], "--threads", "2", "--json", "--tokens", "2048", "--out", str(out), env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["final_loss"] == old["final_loss"]
    replaced = run_cli("train", *TINY, "--tokens", "3072", "--out", str(out), "--replace", env=env, timeout=300)
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads(replaced.stdout)["run_id"] == new_id == json.loads((out / "spec.json").read_text())["run_id"]
    assert json.loads(replaced.stdout)["tokens"] == 3072
