"""The store's files: frames that export, modes that follow the umask, one corrupt file that
does not take the study down (the run is reported as corrupt, with its path; ``resume`` reruns it)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

import scaling
from benchmarks.report_build import make_study
from scaling.store import RunDir, SweepStore, atomic_write_json, read_json
from scaling.sweep import launch, resume
from tests.test_sweep_launch import attempts, steps_logged, toy_spec


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """18 synthetic runs in the real layout (two failed), written through scaling.store."""
    return make_study(tmp_path_factory.mktemp("files") / "study", n_runs=18, sizes_per_budget=6, steps_logged=20,
                      fail_every=9)


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".index"))
    return dst


# ---- frames that export ------------------------------------------------------------------------------


@pytest.mark.parametrize("curves", [False, True])
def test_frames_round_trip_through_parquet_and_csv(study, tmp_path, curves):
    df = scaling.load_runs(study, curves=curves)
    assert len(df) > 0
    if not curves:
        assert "backend_options" not in df  # nested settings are flattened, never an empty struct
    df.to_parquet(tmp_path / "runs.parquet")
    back = pd.read_parquet(tmp_path / "runs.parquet")
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    df.to_csv(tmp_path / "runs.csv", index=False)
    csv = pd.read_csv(tmp_path / "runs.csv")
    assert list(csv.columns) == list(df.columns) and len(csv) == len(df)
    num = [c for c in df.columns if pd.api.types.is_float_dtype(df[c])]
    pd.testing.assert_frame_equal(csv[num], df[num].reset_index(drop=True), check_dtype=False)


def test_backend_options_are_columns(tmp_path):
    rd = RunDir(tmp_path / "runs" / "r1")
    rd.write_spec({"run_id": "r1", "name": "a", "backend_options": {"threads": 1, "extra": {"k": [1, 2]}}})
    rd2 = RunDir(tmp_path / "runs" / "r2")
    rd2.write_spec({"run_id": "r2", "name": "b", "backend_options": {"threads": "auto"}})
    df = scaling.load_runs(tmp_path).set_index("run_id")
    assert df.loc["r1", "backend_options.extra.k"] == "[1, 2]"  # a list is serialised as JSON
    assert set(df["backend_options.threads"]) == {"1", "auto"}  # mixed types: one type, written as text
    df.to_parquet(tmp_path / "x.parquet")


# ---- modes follow the umask ---------------------------------------------------------------------------


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_follow_the_umask(tmp_path, umask):
    torch = pytest.importorskip("torch")
    from scaling.backends.local.checkpoint import save_checkpoint

    old = os.umask(umask)
    try:
        rd = RunDir(tmp_path / "study" / "runs" / "r1")
        rd.write_spec({"run_id": "r1", "name": "x"})
        rd.mark_running()
        rd.append_metrics([{"step": 1, "loss": 2.0}])
        rd.write_result({"final_loss": 2.0})
        model = torch.nn.Linear(2, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        save_checkpoint(rd.checkpoints, 1, model, opt, state={})
        scaling.load_runs(tmp_path / "study")  # the derived index is written with the same modes
    finally:
        os.umask(old)
    modes = _modes(tmp_path / "study" / "runs" / "r1")
    assert any("checkpoints/" in k for k in modes)
    for name, mode in modes.items():
        is_dir = (tmp_path / "study" / "runs" / "r1" / name).is_dir()
        assert mode == ((0o777 if is_dir else 0o666) & ~umask), (name, oct(mode))
    for p in (tmp_path / "study").rglob("*"):
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p


# ---- one corrupt file ----------------------------------------------------------------------------------


def test_read_json_names_the_file(tmp_path):
    from scaling.store import CorruptFileError

    p = tmp_path / "result.json"
    p.write_text('{"final_loss": 2.')
    with pytest.raises(CorruptFileError, match="result.json"):
        read_json(p)
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CorruptFileError, match="result.json"):
        read_json(p)


def _corrupt(study: Path) -> tuple[str, str]:
    """Garbage in one finished run's result.json and in another's status.json."""
    done = [rd for rd in SweepStore(study).runs() if rd.is_done()]
    (done[0].path / RunDir.RESULT).write_text('{"final_loss": 2.3, "eval_')
    (done[1].path / RunDir.STATUS).write_bytes(b"\x00\x01 not json")
    return done[0].run_id, done[1].run_id


def test_load_runs_reports_the_corrupt_run_and_reads_the_rest(study, tmp_path):
    s = _copy(study, tmp_path / "s")
    bad_result, bad_status = _corrupt(s)
    with pytest.warns(UserWarning, match="result.json"):
        df = scaling.load_runs(s).set_index("run_id")
    assert len(df) == 18
    assert df.loc[bad_result, "status"] == "corrupt"
    assert f"{bad_result}/result.json" in df.loc[bad_result, "error"]
    assert df.loc[bad_status, "status"] == "done"  # result.json is the truth; status.json is advisory
    assert f"{bad_status}/status.json" in df.loc[bad_status, "error"]
    assert (df["status"] == "done").sum() == 15


def test_cli_reads_a_study_with_a_corrupt_file(study, tmp_path, cli):
    s = _copy(study, tmp_path / "s")
    bad_result, bad_status = _corrupt(s)
    st = cli("sweep", "status", str(s), "--json")
    assert st.returncode == 0, st.stderr
    rows = {r["run_id"]: r for r in json.loads(st.stdout)["runs"]}
    assert rows[bad_result]["state"] == "corrupt" and "result.json" in rows[bad_result]["error"]
    assert len(rows) == 18
    fit = cli("fit", str(s), "--approach", "2", "--json")
    assert fit.returncode == 0, fit.stderr
    assert f"{bad_result}/result.json" in fit.stderr and "Traceback" not in fit.stderr
    warned = [line for line in fit.stderr.splitlines() if bad_result in line]
    assert warned and all(line.startswith("warning: ") for line in warned)  # one line each, no source excerpt
    rep = cli("report", str(s), "-o", str(tmp_path / "r.html"))
    assert rep.returncode == 0, rep.stderr
    assert "corrupt" in (tmp_path / "r.html").read_text()


def test_resume_reruns_a_run_whose_result_is_corrupt(tmp_path):
    spec = toy_spec(tmp_path, ckpt=3)
    out = tmp_path / "out"
    launch(spec, out, executor="debug", progress=False)
    rd = next(r for r in SweepStore(out).runs() if r.read_spec()["name"] == "C1e10_L1H32")
    (rd.path / RunDir.RESULT).write_text("{ garbage")
    assert not rd.is_done()
    s = resume(out, executor="debug", progress=False)
    assert s["done"] == 4 and s["skipped"] == 3
    assert attempts(out) == {"C1e10_L1H32": 2, "C1e10_L2H32": 1, "C2e10_L1H32": 1, "C2e10_L2H32": 1}
    assert rd.read_result()["attempt"] == 2
    steps = steps_logged(out)["C1e10_L1H32"]
    assert steps == list(range(1, len(steps) + 1))  # resumed from its checkpoint: no step lost or repeated
    assert json.loads((rd.path / "checkpoints" / "state.json").read_text())["step"] > 0


def test_update_status_over_a_corrupt_status_starts_clean(tmp_path):
    rd = RunDir(tmp_path / "r")
    rd.write_spec({"run_id": "r"})
    (rd.path / RunDir.STATUS).write_text("{{{")
    assert rd.read_status()["state"] == "corrupt"
    rd.update_status("pending")
    assert rd.read_status()["state"] == "pending"
    atomic_write_json(rd.path / RunDir.RESULT, {"final_loss": 1.0})
    assert rd.read_status()["state"] == "done"
