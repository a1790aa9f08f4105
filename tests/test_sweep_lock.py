"""One writer per folder, with real processes: launchers started at the same instant never both run,
a second task on a run waits for the first, and `scaling run` / `sweep resume` are refused while a
launcher holds the folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from scaling.store import SweepStore
from scaling.sweep import launch, load_spec
from scaling.sweep.launcher import write_store
from scaling.sweep.lock import SweepLock, SweepLocked
from scaling.sweep.task import RunTask
from tests.sweep_backends import wait_for
from tests.test_sweep_launch import ROOT, attempts, steps_logged, toy_spec

# Each contender takes the lock of folder i at the instant T0 + i * PERIOD (all of them spin to
# the same instant), holds it for HOLD seconds when it gets it, and records when it held it.
CONTENDER = textwrap.dedent("""
    import json, sys, time
    from scaling.sweep.lock import SweepLock, SweepLocked
    root, t0, rounds, period, hold = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
    held = []
    for i in range(rounds):
        start = t0 + i * period
        while time.time() < start - 0.002:
            time.sleep(0.001)
        while time.time() < start:
            pass
        lock = SweepLock(f"{root}/{i}")
        try:
            lock.acquire("local")
        except SweepLocked:
            continue
        got = time.time()
        time.sleep(hold)
        held.append((i, got, time.time()))
        lock.release()
    print(json.dumps(held))
""")


def test_launchers_started_at_the_same_instant_never_both_hold_the_folder(tmp_path):
    rounds, period, hold, n = 60, 0.06, 0.025, 3
    t0 = time.time() + 1.5  # every contender has imported the lock by then
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(tmp_path), str(t0), str(rounds), str(period),
                               str(hold)], stdout=subprocess.PIPE, text=True, env=env) for _ in range(n)]
    held = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    by_round: dict[int, list[tuple[float, float]]] = {}
    for h in held:
        for i, a, b in h:
            by_round.setdefault(i, []).append((a, b))
    assert len(by_round) == rounds  # someone got every folder
    for i, spans in by_round.items():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end, f"folder {i}: two launchers held the lock at once: {spans}"


def test_two_launch_commands_at_once_one_runs_the_other_is_refused(tmp_path, cli):
    spec = toy_spec(tmp_path, step_s=0.01, budgets=(1e10,))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ['PYTHONPATH']}"}
    args = [sys.executable, "-m", "scaling", "sweep", "launch", str(spec), "--out", str(out), "--executor", "debug",
            "--quiet"]
    procs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    refused = next(e for p, (_, e) in zip(procs, outs, strict=True) if p.returncode == 2)
    assert "is running this sweep" in refused or "another launcher is starting" in refused
    assert set(attempts(out).values()) == {1}
    for name, steps in steps_logged(out).items():
        assert steps == list(range(1, len(steps) + 1)), name


def _tree(out: Path) -> dict[str, float]:
    return {str(p.relative_to(out)): p.stat().st_mtime for p in out.rglob("*") if p.is_file()}


def test_resume_and_scaling_run_are_refused_while_a_launcher_holds_the_folder(tmp_path, cli):
    """Refused before they write anything: `scaling run` holds the folder for all its stages, not
    only while it trains."""
    spec = toy_spec(tmp_path, budgets=(1e10,))
    out = tmp_path / "out"
    launch(spec, out, executor="debug", progress=False)
    lock = SweepLock(out)
    lock.acquire("local")
    try:
        before = _tree(out)
        for args in (("sweep", "resume", str(out)), ("run", str(spec), "--out", str(out))):
            p = cli(*args)
            assert p.returncode == 2 and f"pid {os.getpid()}" in p.stderr, (args, p.stderr)
        assert _tree(out) == before
    finally:
        lock.release()
    assert cli("sweep", "resume", str(out), "--executor", "debug", "--quiet").returncode == 0


WRITER = textwrap.dedent("""
    import sys
    from scaling.backends.base import backend_target
    from scaling.sweep.task import RunTask
    RunTask(sys.argv[1], "toy", backend_target("toy"))()
""")


def test_a_second_task_on_a_run_waits_for_the_first_writer(tmp_path):
    """A run whose process outlived its launcher: a task started on it again (as a relaunch that
    did not see the process would) waits for the first writer, then finds the run done."""
    spec = toy_spec(tmp_path, step_s=0.02, budgets=(1e10,))
    out = tmp_path / "out"
    store, runs = write_store(load_spec(spec), out)
    rd = store.run(runs[0].run_id)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ['PYTHONPATH']}"}
    first = subprocess.Popen([sys.executable, "-c", WRITER, str(rd.path)], cwd=ROOT, env=env)
    wait_for(lambda: len(rd.read_metrics()) >= 3, 30, "the first writer to train")
    result: dict = {}
    second = threading.Thread(target=lambda: result.update(RunTask(str(rd.path), "toy", "tests.sweep_backends:ToyBackend")()))
    second.start()
    time.sleep(0.3)
    assert second.is_alive() and not rd.is_done()  # waiting, not training
    assert first.wait(timeout=60) == 0
    second.join(timeout=30)
    assert result["attempt"] == 1  # the first writer's result: the run was trained once
    assert attempts(out) == {runs[0].name: 1}
    assert [int(m["step"]) for m in rd.read_metrics()] == list(range(1, runs[0].steps + 1))
    assert len(SweepStore(out).runs()) == len(runs)


HOLDER = textwrap.dedent("""
    import sys, time
    from scaling.sweep.lock import LAUNCHER_GUARD, FileGuard
    guard = FileGuard(f"{sys.argv[1]}/{LAUNCHER_GUARD}")
    assert guard.acquire()
    open(f"{sys.argv[1]}/launcher.lock", "w").close()  # the holder's JSON not written yet
    print("held", flush=True)
    time.sleep(30)
""")


def test_a_lock_whose_holder_has_not_written_its_json_yet_is_not_stale(tmp_path):
    """The instant between taking the lock and writing who holds it: the lock is held, not stale."""
    spec = toy_spec(tmp_path, budgets=(1e10,))
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ['PYTHONPATH']}"}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SweepLocked, match="another launcher is starting"):
            launch(spec, out, executor="debug", progress=False)
        assert not SweepStore(out).runs()
    finally:
        holder.kill()
        holder.wait()
    assert launch(spec, out, executor="debug", progress=False)["done"] == 2  # its process gone: taken over
