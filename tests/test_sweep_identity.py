"""A run's identity hashes what changes its loss: execution options (threads, log intervals,
launcher paths, ports) are kept beside it, so a relaunch that changes them reuses every finished run."""

from __future__ import annotations

import hashlib
import json

from scaling.runspec import RunSpec
from scaling.store import SweepStore, atomic_write_json
from scaling.sweep import expand, launch, load_spec, status
from tests.test_sweep_launch import attempts, toy_spec


def test_a_relaunch_with_another_thread_count_reuses_every_finished_run(tmp_path):
    out = tmp_path / "out"
    one = toy_spec(tmp_path, name="toy", extra_opts=", threads: 1")
    s = launch(one, out, executor="debug", progress=False)
    assert s["done"] == 4 and s["skipped"] == 0
    (tmp_path / "b").mkdir()
    two = toy_spec(tmp_path / "b", name="toy", extra_opts=", threads: 2")
    again = launch(two, out, executor="debug", progress=False)
    assert again["skipped"] == 4 and again["done"] == 4
    assert set(attempts(out).values()) == {1}  # nothing trained twice
    for rd in SweepStore(out).runs():
        spec = rd.read_spec()
        assert spec["execution_options"] == {"threads": 1}  # what the finished run ran with, beside its identity
        assert "threads" not in spec["backend_options"]


def test_local_run_ids_ignore_execution_options_and_keep_what_changes_the_loss(tmp_path):
    base = "name: t\nmodel: {vocab: 256, seq_len: 32}\ntrain: {batch: 256, lr: 0.01}\n" \
           "grid: {kind: isoflop, budgets: [1e9], sizes: [{layers: 1, hidden: 16, heads: 2}]}\n"

    def run_id(opts: str) -> str:
        p = tmp_path / "s.yaml"
        p.write_text(base + f"backend_options: {{{opts}}}\n")
        (r,) = expand(load_spec(p))
        return r.run_id

    plain = run_id("")
    assert run_id("threads: 2, log_every: 5, save_model: false, keep_checkpoints: true") == plain
    assert run_id("dtype: bfloat16") != plain  # changes the loss: hashed
    r = RunSpec.from_json_dict(expand(load_spec(tmp_path / "s.yaml"))[0].to_json_dict())
    assert r.options == {"dtype": "bfloat16"}


def _legacy_id(r: RunSpec) -> str:
    """The run id as it was when every backend option was hashed."""
    d = r.hashed_dict()
    d["backend_options"] = {**d["backend_options"], **r.execution_options}
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def test_a_study_whose_run_ids_hashed_execution_options_is_found_again(tmp_path):
    """Run folders named by the older identity (threads hashed) are renamed to today's id and skipped."""
    spec = toy_spec(tmp_path, extra_opts=", threads: 1")
    out = tmp_path / "out"
    launch(spec, out, executor="debug", progress=False)
    store = SweepStore(out)
    for r in expand(load_spec(spec)):
        legacy = store.run(_legacy_id(r))
        store.run(r.run_id).path.rename(legacy.path)
        d = legacy.read_spec()
        d["backend_options"], d["run_id"] = {**d["backend_options"], **d.pop("execution_options")}, legacy.run_id
        atomic_write_json(legacy.path / "spec.json", d)  # as it was written then
        atomic_write_json(legacy.path / "result.json", {**legacy.read_result(), "run_id": legacy.run_id})
    assert not {r.run_id for r in expand(load_spec(spec))} & {rd.run_id for rd in store.runs()}
    again = launch(spec, out, executor="debug", progress=False)
    assert again["skipped"] == 4 and set(attempts(out).values()) == {1}
    ids = {r.run_id for r in expand(load_spec(spec))}
    assert {rd.run_id for rd in store.runs()} == ids
    assert {rd.read_result()["run_id"] for rd in store.runs()} == ids
    assert {r["run_id"] for r in status(out)["runs"]} == ids


def test_a_different_spec_into_a_sweep_folder_is_refused_unless_added(tmp_path, cli):
    out = tmp_path / "out"
    first = toy_spec(tmp_path, name="first", budgets=(1e10,))
    assert cli("sweep", "launch", str(first), "--out", str(out), "--executor", "debug", "--quiet").returncode == 0
    stored = (out / "sweep.yaml").read_text()
    (tmp_path / "b").mkdir()
    other = toy_spec(tmp_path / "b", name="other", budgets=(1e10, 2e10))
    before = {rd.run_id for rd in SweepStore(out).runs()}
    for args in (("sweep", "launch", str(other), "--out", str(out), "--executor", "debug"),
                 ("run", str(other), "--out", str(out), "--executor", "debug")):
        p = cli(*args)
        assert p.returncode == 2, p.stderr
        line = p.stderr.strip()
        assert "\n" not in line and "'first'" in line and "'other'" in line and "--add" in line, line
        assert (out / "sweep.yaml").read_text() == stored and {rd.run_id for rd in SweepStore(out).runs()} == before
    # the same runs with other execution settings are the same sweep
    (tmp_path / "c").mkdir()
    same = toy_spec(tmp_path / "c", name="first", budgets=(1e10,), retries=3, extra_opts=", threads: 3")
    assert cli("sweep", "launch", str(same), "--out", str(out), "--executor", "debug", "--quiet").returncode == 0
    p = cli("sweep", "launch", str(other), "--out", str(out), "--executor", "debug", "--add", "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert (s["runs"], s["skipped"], s["done"]) == (4, 2, 4)
    assert len(SweepStore(out).runs()) == 4 and load_spec(out).name == "other"
    assert set(attempts(out).values()) == {1}
