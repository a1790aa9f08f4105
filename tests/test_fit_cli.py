"""``scaling fit`` as a user runs it: files, sweep folders, column maps, refusals (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scaling.fit import load_law
from scaling.store import RunDir
from tests.conftest import run_cli
from tests.fit_helpers import EPOCH_CSV, isoflop_sweep


class Proc:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """The CLI in this process (a subprocess costs seconds of imports; one test runs it for real)."""
    from scaling.cli import main

    def call(*args: str, check: bool = False) -> Proc:
        code = main(list(args))
        out = capsys.readouterr()
        if check:
            assert code == 0, out.err
        return Proc(code, out.out, out.err)

    return call


def test_epoch_csv_json_keys(tmp_path):
    out = tmp_path / "fit.json"
    proc = run_cli("fit", str(EPOCH_CSV), "--params-col", "Model Size", "--flops-col", "Training FLOP",
                   "--bootstrap", "20", "--json", "--out", str(out), check=True)
    d = json.loads(proc.stdout)
    for key in ("E", "A", "B", "alpha", "beta", "a", "b", "G", "se", "ci", "n_points", "objective"):
        assert key in d
    assert d["n_points"] == 245 and set(d["se"]) >= {"alpha", "beta", "E", "A", "B"}
    law = load_law(out)
    assert law.draws.shape == (20, 5)
    assert law.params["alpha"] == pytest.approx(d["alpha"])


def test_approach2_json_and_sweep_folder_non_embedding(tmp_path, cli):
    data = isoflop_sweep()
    for i, row in data.iterrows():
        rd = RunDir(tmp_path / "study" / "runs" / f"r{i}")
        rd.write_spec({"run_id": f"r{i}", "budget": row["budget"],
                       "derived": {"params": 3 * row["params"], "non_embedding_params": row["params"]}})
        rd.update_status("done")
        rd.write_result({"params": 3 * row["params"], "non_embedding_params": row["params"], "tokens": row["tokens"],
                         "flops": row["flops"], "final_loss": row["loss"] + 0.1, "eval_loss": row["loss"]})
    proc = cli("fit", str(tmp_path / "study"), "--approach", "2", "--params-col", "non_embedding_params",
                   "--json", check=True)
    d = json.loads(proc.stdout)
    assert d["param_convention"] == "non_embedding"
    assert set(d["n_opt"]) == {"coef", "exponent", "ci"} and len(d["minima"]) == 5
    assert 0.45 < d["n_opt"]["exponent"] < 0.6
    proc = cli("fit", str(tmp_path / "study"), "--params-col", "non_embedding_params", "--backtest", check=True)
    assert "backtest at C = 1.6e+12" in proc.stdout
    # --param-convention on a sweep folder picks the runs' column of that count, not only the label
    by_flag = json.loads(cli("fit", str(tmp_path / "study"), "--approach", "2", "--param-convention", "non_embedding",
                             "--json", check=True).stdout)
    assert by_flag["n_opt"]["coef"] == pytest.approx(d["n_opt"]["coef"]) and by_flag["param_convention"] == "non_embedding"
    total = json.loads(cli("fit", str(tmp_path / "study"), "--approach", "2", "--json", check=True).stdout)
    assert total["n_opt"]["coef"] == pytest.approx(3 * d["n_opt"]["coef"], rel=1e-6)  # N total = 3 N here


def test_text_output_and_tokens_from_flops(tmp_path, cli):
    path = tmp_path / "runs.csv"
    isoflop_sweep().drop(columns=["tokens"]).to_csv(path, index=False)
    proc = cli("fit", str(path), check=True)
    assert "alpha" in proc.stdout and "tokens/param" in proc.stdout


@pytest.mark.parametrize(
    "args, field",
    [
        (["--params-col", "N"], "--params-col"),
        (["--fix", "alpha"], "--fix"),
        (["--approach", "2"], "budget"),
    ],
)
def test_refusals_exit_2(tmp_path, cli, args, field):
    path = tmp_path / "runs.csv"
    data = isoflop_sweep()
    if "2" in args:
        data = data[data["params"] < data.groupby("budget")["params"].transform("median")]
    data.to_csv(path, index=False)
    proc = cli("fit", str(path), *args)
    assert proc.returncode == 2, proc.stderr
    assert field in proc.stderr and proc.stderr.count("\n") == 1


def test_missing_file_and_nan(tmp_path, cli):
    proc = cli("fit", str(tmp_path / "nope.csv"))
    assert proc.returncode == 2 and "DATA" in proc.stderr
    path = tmp_path / "bad.csv"
    path.write_text("params,tokens,loss\n1e6,1e8,3.1\n2e6,1e8,nan\n")
    proc = cli("fit", str(path))
    assert proc.returncode == 2 and "loss" in proc.stderr


def test_approach1_from_sweep_folder_curves(tmp_path, cli):
    from tests.fit_helpers import TINY, chinchilla_loss

    for i, n in enumerate(np.geomspace(1e3, 1e6, 10)):
        rd = RunDir(tmp_path / "runs" / f"r{i}")
        rd.write_spec({"run_id": f"r{i}", "derived": {"params": n, "non_embedding_params": n / 2}})
        rd.update_status("done")
        tokens = np.geomspace(1e5, 1e10, 60)
        rd.append_metrics(
            {"step": s, "tokens": d, "flops": 6 * n * d, "loss": float(chinchilla_loss(TINY, n, d))}
            for s, d in enumerate(tokens)
        )
        rd.write_result({"params": n, "non_embedding_params": n / 2, "tokens": tokens[-1], "eval_loss": 3.0})
    proc = cli("fit", str(tmp_path), "--approach", "1", "--json", check=True)
    d = json.loads(proc.stdout)
    assert d["approach"] == "1" and 0.4 < d["n_opt"]["exponent"] < 0.6
