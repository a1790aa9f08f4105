"""Bad input as a new user types it: exit 2 and one line naming the file, line or field and the fix.

Called in-process through ``scaling.cli.main`` (the same entry point as the console script) so the
whole list stays fast; ``test_cli_plan.py`` and friends cover the real processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaling.cli import main


def cli(capsys, *argv: str) -> tuple[int, str]:
    """Exit status and stderr of ``scaling ARGV``; the error must be a single line."""
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse exits itself
        code = int(e.code or 0)
    err = capsys.readouterr().err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
    return code, err.strip()


# ---- scaling params --hf-config -----------------------------------------------------------------

HF_OK = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 100,
         "intermediate_size": 128}


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b"{bad", r"bad.json:1:2: not valid JSON"),
        (bytes(range(128, 256)), r"byte 0 is not UTF-8"),
        (b"[1, 2]", r"a JSON list, not an object"),
        (json.dumps({**HF_OK, "hidden_size": "abc"}).encode(), r'hidden_size="abc": must be a whole number'),
        (json.dumps({**HF_OK, "hidden_size": 64.5}).encode(), r"hidden_size=64.5: must be a whole number"),
        (json.dumps({**HF_OK, "num_hidden_layers": True}).encode(), r"num_hidden_layers=true: must be a whole number"),
        (json.dumps({**HF_OK, "tie_word_embeddings": "no"}).encode(), r'tie_word_embeddings="no": must be true or false'),
        (json.dumps({k: v for k, v in HF_OK.items() if k != "vocab_size"}).encode(), r"missing field 'vocab_size'"),
    ],
)
def test_hf_config_refused(tmp_path, capsys, content, expect):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    code, err = cli(capsys, "params", "--hf-config", str(path), "--json")
    assert code == 2 and str(path) in err, err
    assert expect.replace("\\", "") in err, err


def test_hf_config_whole_float_accepted(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**HF_OK, "hidden_size": 64.0}))
    assert main(["params", "--hf-config", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shape"]["hidden"] == 64


# ---- argparse's own errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (("fit", "x.csv", "--bootstrap", "abc"), "scaling fit: argument --bootstrap: invalid int value: 'abc'"),
        (("train", "--tokens", "abc"), "scaling train: argument --tokens: invalid float value: 'abc'"),
        (("sweep", "launch", "s.yaml"), "scaling sweep launch: the following arguments are required: --out"),
        (("plan", "--flops"), "scaling plan: argument --flops: expected one argument"),
        (("nope",), "scaling: argument COMMAND: invalid choice: 'nope'"),
    ],
)
def test_argparse_errors_are_one_line(capsys, argv, expect):
    code, err = cli(capsys, *argv)
    assert code == 2 and expect in err and "--help" in err, err


# ---- output paths checked before any work ------------------------------------------------------------


def test_report_out_folder_refused(tmp_path, capsys):
    (tmp_path / "study" / "runs").mkdir(parents=True)
    (tmp_path / "page").mkdir()
    code, err = cli(capsys, "report", str(tmp_path / "study"), "-o", str(tmp_path / "page"))
    assert code == 2 and "-o" in err and "is a folder; give a file path" in err and ".html" in err, err


def test_sweep_launch_out_file_refused(tmp_path, capsys):
    ROOT = Path(__file__).resolve().parents[1]
    (tmp_path / "file").write_text("x")
    code, err = cli(capsys, "sweep", "launch", str(ROOT / "sweeps" / "quickstart.yaml"), "--out", str(tmp_path / "file"))
    assert code == 2 and "--out" in err and "is a file; give a folder" in err, err
    code, err = cli(capsys, "sweep", "launch", str(ROOT / "sweeps" / "quickstart.yaml"), "--out", str(tmp_path / "file" / "x"))
    assert code == 2 and "is a file, not a folder" in err, err


# ---- scaling plan: budgets outside what the planner spans -------------------------------------------


@pytest.mark.parametrize("flops", ["1e-30", "1e300", "0.5"])
def test_plan_budget_out_of_range(capsys, flops):
    code, err = cli(capsys, "plan", "--flops", flops)
    assert code == 2 and "outside the 1e6-1e40 FLOPs" in err, err


def test_plan_gpu_hours_out_of_range_names_the_flops(capsys):
    code, err = cli(capsys, "plan", "--gpu-hours", "1e-20")
    assert code == 2 and "gpu_hours=1e-20 (" in err and "FLOPs): outside" in err, err


# ---- scaling fit: bad files, with the line to fix -----------------------------------------------------


@pytest.fixture
def sweep_csv(tmp_path) -> Path:
    from tests.fit_helpers import isoflop_sweep

    path = tmp_path / "sweep.csv"
    isoflop_sweep()[["params", "tokens", "loss"]].to_csv(path, index=False)
    return path


def _broken_jsonl(tmp_path: Path, sweep_csv: Path) -> Path:
    import pandas as pd

    lines = pd.read_csv(sweep_csv).to_json(orient="records", lines=True).splitlines()
    lines[3] = lines[3][:20]  # a torn object on file line 4, cut after 20 characters
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _lying_parquet(tmp_path: Path, sweep_csv: Path) -> Path:
    import pandas as pd

    good = tmp_path / "good.parquet"
    pd.read_csv(sweep_csv).to_parquet(good)
    raw = good.read_bytes()
    path = tmp_path / "lying.parquet"
    path.write_bytes(raw[:-8] + (10**6).to_bytes(4, "little") + raw[-4:])  # footer length that lies
    return path


def test_fit_empty_and_binary_files(tmp_path, capsys):
    (tmp_path / "empty.csv").write_text("")
    code, err = cli(capsys, "fit", str(tmp_path / "empty.csv"))
    assert code == 2 and "empty.csv: the file is empty; give a header" in err, err
    (tmp_path / "bin.csv").write_bytes(b"params,tokens,loss\n" + bytes(range(128, 256)))
    code, err = cli(capsys, "fit", str(tmp_path / "bin.csv"))
    assert code == 2 and "bin.csv:2: byte 19 is not UTF-8" in err, err


def test_fit_broken_jsonl_names_line_and_column(tmp_path, capsys, sweep_csv):
    code, err = cli(capsys, "fit", str(_broken_jsonl(tmp_path, sweep_csv)))
    assert code == 2 and "broken.jsonl:4:21: not valid JSON" in err and "fix or delete that line" in err, err


def test_fit_lying_parquet_footer(tmp_path, capsys, sweep_csv):
    code, err = cli(capsys, "fit", str(_lying_parquet(tmp_path, sweep_csv)))
    assert code == 2 and "lying.parquet: not a readable parquet file" in err, err


def test_fit_bad_value_names_the_file_line(tmp_path, capsys, sweep_csv):
    text = sweep_csv.read_text().splitlines()
    text[4] = text[4].rsplit(",", 1)[0] + ",-1"  # file line 5 (the header is line 1)
    text.insert(2, "")  # a blank line pandas skips: line numbers still count it
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(text) + "\n")
    code, err = cli(capsys, "fit", str(bad))
    assert code == 2 and "loss: 1 value(s)" in err and "(line 6 of bad.csv)" in err, err


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (("--bootstrap", "1000000000000"), "--bootstrap=1000000000000: give 0 to 20,000"),
        (("--fix", "alpha=-5"), "alpha=-5.0: must be a positive finite number"),
        (("--fix", "alpha=nan"), "alpha=nan: must be a positive finite number"),
        (("--approach", "2", "--fix", "alpha=0.3"), "--fix: approach 2 does not use it"),
        (("--approach", "kaplan", "--bootstrap", "10"), "--bootstrap: approach kaplan does not use it"),
        (("--approach", "2", "--offset"), "--offset: only --approach kaplan uses it"),
        (("--seed", "3"), "--seed: only the bootstrap draws random numbers"),
        (("--folds", "3"), "--folds: only --predict uses it"),
        (("--predict", "--approach", "2"), "--approach 2: --predict fits its own candidates"),
    ],
)
def test_fit_options_refused(capsys, sweep_csv, extra, expect):
    code, err = cli(capsys, "fit", str(sweep_csv), *extra)
    assert code == 2 and expect in err, err


def test_fit_out_folder_refused_before_fitting(tmp_path, capsys, sweep_csv, monkeypatch):
    import scaling.commands.fit as fit_command

    def no_fit(args):
        raise AssertionError("the fit ran before --out was checked")

    monkeypatch.setattr(fit_command, "fit_from_args", no_fit)
    code, err = cli(capsys, "fit", str(sweep_csv), "--out", str(tmp_path))
    assert code == 2 and "--out" in err and "is a folder; give a file path" in err, err


def test_fit_single_budget_warns(tmp_path, capsys):
    from tests.fit_helpers import isoflop_sweep

    one = tmp_path / "one.csv"
    isoflop_sweep(budgets=(4e11,))[["params", "tokens", "loss"]].to_csv(one, index=False)
    assert main(["fit", str(one), "--json"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [line for line in err if line.startswith("warning: ")] and len(err) == 1, err
    assert "one compute budget" in err[0] and "add runs at other budgets" in err[0]


# ---- sweep specs: errors found while expanding the grid name the file line -------------------------

SPEC_HEAD = "name: t\nmodel: {vocab: 1024, seq_len: 128}\ntrain: {batch: 2048}\n"


def test_grid_size_error_names_line_without_repr(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC_HEAD + "grid:\n  kind: kaplan_n\n  tokens: 100000\n  sizes:\n"
                    "    - {layers: 1, hidden: 32, heads: 2}\n    - {layers: 1, hidden: 30, heads: 4}\n")
    code, err = cli(capsys, "sweep", "plan", str(spec))
    assert code == 2 and "s.yaml:9: grid.sizes.1: shape.heads=4: must divide hidden=30" in err, err
    assert "ShapeSize(" not in err


@pytest.mark.parametrize(
    "grid",
    ["{kind: kaplan_n, tokens: 1000, sizes: [{layers: 1, hidden: 32, heads: 2}]}",
     "{kind: kaplan_d, size: {layers: 1, hidden: 32, heads: 2}, tokens: [100000, 1500]}",
     "{kind: runs, runs: [{size: {layers: 1, hidden: 32, heads: 2}, tokens: 2000}]}",
     "{kind: runs, runs: [{size: {layers: 1, hidden: 32, heads: 2}, budget: 1000}]}"],
)
def test_spec_tokens_below_one_batch_refused(tmp_path, capsys, grid):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC_HEAD + f"grid: {grid}\n")
    code, err = cli(capsys, "sweep", "plan", str(spec))
    assert code == 2 and "s.yaml:4: grid: run " in err and "less than one batch of 2048 tokens" in err, err
