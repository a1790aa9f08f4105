"""``scaling plan`` and ``scaling params`` as a user runs them (real processes)."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from hf_configs import LLAMA2_7B

from scaling.fit import LawFit
from scaling.laws import LAW_NAMES

ISSUE_KEYS = {
    "law", "flops", "params", "tokens", "tokens_per_param", "loss", "shape",
    "gpu_hours", "wall_clock_days", "cost_usd",
}  # fmt: skip


def test_plan_json_one_law():
    proc = run_cli(
        "plan",
        "--flops",
        "5.76e23",
        "--law",
        "epoch",
        "--gpus",
        "1024",
        "--price",
        "2.0",
        "--json",
        check=True,
    )
    d = json.loads(proc.stdout)
    assert set(d) >= ISSUE_KEYS
    assert {"layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "params"} <= set(d["shape"])
    assert round(d["params"] / 1e9, 1) == 72.2 and round(d["tokens"] / 1e12, 2) == 1.33
    assert d["cost_usd"] == pytest.approx(2.0 * d["gpu_hours"])
    assert d["wall_clock_days"] == pytest.approx(d["gpu_hours"] / 1024 / 24)


def test_plan_all_json_is_a_list_and_the_table_shows_every_law():
    proc = run_cli("plan", "--law", "all", "--flops", "1e22", "--json", check=True)
    out = json.loads(proc.stdout)
    assert [d["law"] for d in out] == list(LAW_NAMES)
    assert all(d["cost_usd"] is None and d["wall_clock_days"] is None for d in out)
    table = run_cli("plan", "--law", "all", "--flops", "1e22", check=True).stdout
    for name in LAW_NAMES:
        assert name in table
    assert "N*" in table and "GPU-h" in table


def test_plan_modes_from_the_command_line():
    d = json.loads(run_cli("plan", "--params", "7B", "--law", "chinchilla", "--json", check=True).stdout)
    assert d["params"] == 7e9 and d["mode"] == "fixed_params" and d["tokens"] > 1e11
    d = json.loads(
        run_cli(
            "plan", "--budget-usd", "500000", "--price", "2.5", "--law", "chinchilla", "--json", check=True
        ).stdout
    )
    assert d["cost_usd"] == pytest.approx(5e5) and d["gpu_hours"] == pytest.approx(2e5)
    d = json.loads(
        run_cli("plan", "--flops", "1e22", "--unique-tokens", "50B", "--law", "muennighoff", "--json").stdout
    )
    assert d["epochs"] > 1 and d["unique_tokens"] == 5e10


BAD_PLAN_INPUT = [
    (["--flops=-1e22"], "flops"),
    (["--flops", "-1e22"], "flops"),
    (["--flops", "lots"], "flops"),
    (["--flops", "1e22", "--law", "chinchila"], "law"),
    (["--flops", "1e22", "--gpu", "tpu9"], "gpu"),
    (["--flops", "1e22", "--mfu", "1.5"], "mfu"),
    (["--flops", "1e22", "--mfu", "0"], "mfu"),
    (["--flops", "1e22", "--gpu-hours", "100"], "budget"),
    (["--budget-usd", "1e5"], "price"),
    (["--flops"], "flops"),
    (["--flops", "1e22", "--law", "fit:/nonexistent/approach3_total.json"], "fit:"),
]


@pytest.mark.parametrize("args, field", BAD_PLAN_INPUT)
def test_plan_bad_input_exits_2_with_one_line(args, field, capsys):
    from scaling.cli import main

    try:
        code = main(["plan", *args])
    except SystemExit as e:  # argparse's own errors (a flag with no value)
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and field in lines[0]
    assert out == ""


def test_bad_input_as_a_process():
    for args, field in (BAD_PLAN_INPUT[1], BAD_PLAN_INPUT[3], BAD_PLAN_INPUT[9]):
        proc = run_cli("plan", *args)
        assert proc.returncode == 2 and proc.stdout == ""
        assert len(proc.stderr.strip().splitlines()) == 1 and field in proc.stderr


def test_params_from_an_hf_config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA2_7B))
    d = json.loads(
        run_cli("params", "--hf-config", str(path), "--seq-len", "4096", "--json", check=True).stdout
    )
    assert d["params"] == 6_738_415_616
    assert d["embedding_params"] == 262_144_000
    assert d["non_embedding_params"] == 6_738_415_616 - 262_144_000
    assert d["flops_per_token"]["6N"] == 6 * 6_738_415_616
    assert {"kaplan", "chinchilla", "chinchilla_no_embedding", "palm"} <= set(d["flops_per_token"])


def test_params_from_flags_and_errors():
    d = json.loads(
        run_cli(
            "params", "--layers", "30", "--hidden", "576", "--heads", "9", "--kv-heads", "3",
            "--ffn", "1536", "--vocab", "49152", "--tied", "--json", check=True,
        ).stdout
    )  # fmt: skip
    assert d["params"] == 134_515_008  # SmolLM2-135M
    table = run_cli("params", "--target", "1B", check=True).stdout
    assert "params (total)" in table
    bad = run_cli("params", "--layers", "2", "--hidden", "64", "--heads", "3")
    assert bad.returncode == 2 and "heads" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    missing = run_cli("params", "--hf-config", "/nonexistent/config.json")
    assert missing.returncode == 2 and "hf-config" in missing.stderr


@pytest.mark.slow
def test_plan_with_a_fitted_law(tmp_path):
    """``--law fit:PATH`` reads a fit saved by ``scaling fit`` (here: Epoch's constants as a fit)."""
    epoch = {"E": 1.8169, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
    law = LawFit(approach="3", form="chinchilla", params=epoch, n_points=240)
    path = tmp_path / "fit" / "approach3_total.json"
    path.parent.mkdir()
    path.write_text(json.dumps(law.to_dict()))
    d = json.loads(run_cli("plan", "--law", f"fit:{path}", "--flops", "5.76e23", "--json", check=True).stdout)
    assert round(d["params"] / 1e9, 1) == 72.2 and round(d["tokens"] / 1e12, 2) == 1.33
    assert d["loss"] == pytest.approx(
        1.8169 + 482.01 / d["params"] ** 0.3478 + 2085.43 / d["tokens"] ** 0.3658
    )


def test_plan_a_list_of_laws():
    out = json.loads(
        run_cli(
            "plan", "--law", "epoch,chinchilla-rounded", "--flops", "5.76e23", "--json", check=True
        ).stdout
    )
    assert [d["law"] for d in out] == ["epoch", "chinchilla-rounded"]
    assert round(out[1]["params"] / 1e9, 1) == 32.2
