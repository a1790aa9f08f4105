"""The store's columnar index: only changed runs are re-read, running runs come from their JSONL
(torn last line included), the index is derived (deleted or damaged, it is rebuilt; read-only, it
is not written) and gives the same frames as the run folders themselves."""

from __future__ import annotations

import pandas as pd
import pytest

from scaling import columnar
from scaling.columnar import INDEX, RUNS_FILE, read_frames
from scaling.store import RunDir, SweepStore


def _run(root, rid: str, steps: int, done: bool = True, budget: float = 1e10) -> RunDir:
    rd = RunDir(root / "runs" / rid)
    rd.write_spec({"run_id": rid, "name": f"n-{rid}", "budget": budget, "tokens": steps * 10,
                   "shape": {"hidden": 32, "layers": 1}, "backend_options": {"threads": 1},
                   "derived": {"params": 1000, "non_embedding_params": 500, "flops": 6e4}})
    rd.mark_running()
    rd.append_metrics({"step": s, "tokens": 10 * s, "loss": 5.0 / s, **({"eval_loss": 5.1 / s} if s % 5 == 0 else {})}
                      for s in range(1, steps + 1))
    if done:
        rd.write_result({"final_loss": 5.0 / steps, "eval_loss": 5.1 / steps, "steps": steps, "tokens": steps * 10})
    return rd


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.setattr(columnar, "RACY_NS", 0)  # timestamps here are fresh by construction
    for i in range(6):
        _run(tmp_path, f"r{i}", steps=20 + i, done=i < 5)
    (tmp_path / "sweep.yaml").write_text("name: t\n")
    return tmp_path


def _direct(study) -> pd.DataFrame:
    rows = [{"run_id": rd.run_id, **m} for rd in SweepStore(study).runs() for m in rd.read_metrics()]
    return pd.DataFrame(rows)


def _assert_steps_equal(steps: pd.DataFrame, want: pd.DataFrame) -> None:
    """The steps hold ``want``'s rows (run_id categorical, categories in text order)."""
    for c in ("run_id", "name"):  # categories in text order: exactly the runs with steps
        assert isinstance(steps[c].dtype, pd.CategoricalDtype)
        assert steps[c].cat.categories.is_monotonic_increasing
        assert set(steps[c].cat.categories) == set(steps[c].dropna())
    got = steps.sort_values(["run_id", "step"]).reset_index(drop=True).astype({"run_id": str})
    want = want.sort_values(["run_id", "step"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False)


def test_only_changed_runs_are_read_again(study):
    runs, st = read_frames(study)
    assert st.runs_read == 6 and len(runs) == 6
    steps, st = read_frames(study, curves=True)
    assert (st.curves_read, st.live_curves) == (5, 1)
    runs, st = read_frames(study)
    assert st.runs_read == 0
    steps, st = read_frames(study, curves=True)
    assert (st.runs_read, st.curves_read, st.live_curves) == (0, 0, 1)
    assert {"index", "list", "rows", "segments", "metrics", "frame"} <= set(st.seconds)
    # the running run finishes: the next read opens that run only
    RunDir(study / "runs" / "r5").write_result({"final_loss": 0.2, "steps": 25})
    steps, st = read_frames(study, curves=True)
    assert (st.runs_read, st.curves_read, st.live_curves) == (1, 1, 0)
    _assert_steps_equal(steps, _direct(study))


def test_a_running_run_is_read_from_its_jsonl_with_a_torn_tail(study):
    read_frames(study, curves=True)
    p = study / "runs" / "r5" / RunDir.METRICS
    with open(p, "ab") as f:
        f.write(b'{"step": 26, "tokens": 260, "lo')  # a kill mid-write
    steps, st = read_frames(study, curves=True)
    r5 = steps[steps["run_id"] == "r5"]
    assert r5["step"].tolist() == list(range(1, 26)) and st.live_curves == 1
    RunDir(study / "runs" / "r5").append_metrics([{"step": 26, "tokens": 260, "loss": 0.19}])  # cuts the torn line
    steps, _ = read_frames(study, curves=True)
    assert steps.loc[steps["run_id"] == "r5", "step"].tolist() == list(range(1, 27))


def test_the_index_is_derived(study):
    first, _ = read_frames(study, curves=True)
    runs_first, _ = read_frames(study)
    (study / INDEX / RUNS_FILE).write_bytes(b"not parquet")  # damaged: rebuilt from the run folders
    runs, st = read_frames(study)
    assert st.runs_read == 6
    pd.testing.assert_frame_equal(runs, runs_first)
    for p in (study / INDEX).iterdir():
        p.unlink()
    again, st = read_frames(study, curves=True)
    pd.testing.assert_frame_equal(again.sort_values(["run_id", "step"]).reset_index(drop=True),
                                  first.sort_values(["run_id", "step"]).reset_index(drop=True))


def test_a_removed_run_leaves_the_frames(study):
    import shutil

    read_frames(study, curves=True)
    shutil.rmtree(study / "runs" / "r0")
    runs, _ = read_frames(study)
    steps, _ = read_frames(study, curves=True)
    assert "r0" not in set(runs["run_id"]) and "r0" not in set(steps["run_id"])
    assert "r0" not in set(steps["run_id"].cat.categories) and "n-r0" not in set(steps["name"].cat.categories)
    _assert_steps_equal(steps, _direct(study))


def test_segments_are_compacted(study, monkeypatch):
    monkeypatch.setattr(columnar, "MAX_SEGMENTS", 3)
    read_frames(study, curves=True)
    for i in range(6, 10):
        _run(study, f"r{i}", steps=10)
        steps, st = read_frames(study, curves=True)
        assert st.segments <= 3
    assert len(list((study / INDEX).glob("curves-*.parquet"))) <= 3
    assert set(steps["run_id"]) == {f"r{i}" for i in range(10)}
    assert len(steps) == len(_direct(study))


def test_a_study_that_cannot_be_written_is_read_without_the_index(study):
    (study / INDEX).write_text("a file where the index folder would go")  # as an unwritable study does
    runs, st = read_frames(study)
    steps, st2 = read_frames(study, curves=True)
    assert len(runs) == 6 and not st.persisted and not st2.persisted
    assert len(steps) == len(_direct(study))


def test_read_only_mode_writes_nothing(study, monkeypatch):
    monkeypatch.setenv("SCALING_STORE_READ_ONLY", "1")
    runs, st = read_frames(study)
    steps, st2 = read_frames(study, curves=True)
    assert not (study / INDEX).exists() and not st.persisted and not st2.persisted
    assert len(runs) == 6 and len(steps) == len(_direct(study))


def test_timestamps_too_fresh_are_not_trusted(tmp_path):
    _run(tmp_path, "r0", steps=5)
    read_frames(tmp_path, curves=True)
    _, st = read_frames(tmp_path, curves=True)
    assert st.runs_read == 1 and st.live_curves == 1  # written within RACY_NS of the scan: checked again


def test_killed_run_reads_interrupted_as_sweep_status_says(study):
    import subprocess
    import sys

    from scaling.store import load_runs
    from scaling.sweep.control import status

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    RunDir(study / "runs" / "r5").update_status("running", pid=int(dead.stdout), pid_start=None)  # a killed run
    frame = load_runs(study).set_index("run_id")
    by_status = {r["run_id"]: r["state"] for r in status(study)["runs"]}
    assert frame.loc["r5", "status"] == by_status["r5"] == "interrupted"
    assert (frame.drop(index="r5")["status"] == "done").all()


def test_curves_of_some_columns_leave_the_index_whole(study, monkeypatch):
    monkeypatch.setattr(columnar, "MAX_SEGMENTS", 2)
    some, _ = read_frames(study, curves=True, columns=["step", "loss"])  # builds the index from this read
    assert list(some.columns) == ["run_id", "step", "loss"] and len(some) == len(_direct(study))
    for i in range(6, 9):  # more segments than MAX_SEGMENTS: a partial read must not compact them
        _run(study, f"r{i}", steps=10)
        read_frames(study, curves=True, columns=["loss"])
    whole, _ = read_frames(study, curves=True)
    _assert_steps_equal(whole, _direct(study))  # eval_loss etc. kept


def test_a_failed_run_is_kept_in_the_index_until_it_is_retried(study):
    rd = RunDir(study / "runs" / "r5")
    rd.update_status("failed", error="boom")
    _, st = read_frames(study, curves=True)
    assert (st.curves_read, st.live_curves) == (6, 0)  # ended: indexed like a finished run
    _, st = read_frames(study, curves=True)
    assert (st.curves_read, st.live_curves) == (0, 0)
    # a retry: running again, it appends steps, and they are read from its JSONL
    rd.mark_running()
    rd.append_metrics([{"step": 26, "tokens": 260, "loss": 0.19}])
    steps, st = read_frames(study, curves=True)
    assert st.live_curves == 1
    assert steps.loc[steps["run_id"] == "r5", "step"].tolist() == list(range(1, 27))
    _assert_steps_equal(steps, _direct(study))


def test_a_done_run_is_checked_by_its_folder_alone_and_its_rewrites_are_seen(study, monkeypatch):
    read_frames(study, curves=True)
    read_frames(study, curves=True)  # the index now holds r0..r4 as done
    calls: list[str] = []
    real_stat = columnar.os.stat
    with monkeypatch.context() as m:
        m.setattr(columnar.os, "stat", lambda p, *a, **k: (calls.append(str(p)), real_stat(p, *a, **k))[1])
        _, st = read_frames(study, curves=True)
    assert st.runs_read == 0
    done_files = [c for c in calls if any(f"/r{i}/" in c for i in range(5))]
    assert done_files == []  # a done run: its folder's stat only
    assert sum(c.endswith("/r5/metrics.jsonl") for c in calls) == 1  # the running run: its metrics too
    # result.json rewritten (always by rename): the folder's mtime moves, the run is read again
    RunDir(study / "runs" / "r0").write_result({"final_loss": 0.123, "steps": 20, "tokens": 200})
    runs, st = read_frames(study)
    assert st.runs_read == 1 and runs.set_index("run_id").loc["r0", "final_loss"] == 0.123


def test_a_step_logged_after_a_cancel_is_seen(study):
    rd = RunDir(study / "runs" / "r5")
    rd.update_status("cancelled", pid=None)  # `sweep cancel` marks it while its process still runs
    read_frames(study, curves=True)
    _, st = read_frames(study, curves=True)
    assert (st.curves_read, st.live_curves) == (0, 0)  # kept in a segment
    with open(rd.path / RunDir.METRICS, "a") as f:  # the process's last step, appended in place
        f.write('{"step": 26, "tokens": 260, "loss": 0.19}\n')
    steps, st = read_frames(study, curves=True)
    assert st.curves_read == 1
    assert steps.loc[steps["run_id"] == "r5", "step"].tolist() == list(range(1, 27))


def test_a_run_without_a_name_or_steps_is_no_category(study):
    rd = RunDir(study / "runs" / "r9")
    rd.write_spec({"run_id": "r9", "budget": 1e10})  # no name, no steps yet
    RunDir(study / "runs" / "r8").write_spec({"run_id": "r8", "name": "n-r8"})
    rd.append_metrics([{"step": 1, "tokens": 10, "loss": 4.0}])
    steps, _ = read_frames(study, curves=True)
    assert steps.loc[steps["run_id"] == "r9", "name"].isna().all()
    assert "r8" not in set(steps["run_id"].cat.categories) and "n-r8" not in set(steps["name"].cat.categories)
