"""The launcher on this machine (debug and local executors) with a fast backend (tests/sweep_backends.py):
skip finished runs, retry failures, refuse a second launcher, survive a killed launcher, cancel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling.store import SweepStore
from scaling.sweep import launch, load_spec, parse_spec, resume, status
from scaling.sweep.executors import share_cores
from scaling.sweep.lock import LOCK, SweepLock, SweepLocked
from tests.sweep_backends import wait_for

ROOT = Path(__file__).resolve().parents[1]
TOY = "toy"  # tests/sweep_backends.py, an entry point of tests/plugins/


def toy_spec(tmp_path: Path, name: str = "toy", step_s: float = 0.0, budgets=(1e10, 2e10), extra_opts: str = "",
             retries: int = 1, ckpt: int = 5) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"""\
name: {name}
backend: {TOY}
backend_options: {{step_s: {step_s}{extra_opts}}}
model: {{vocab: 1024, seq_len: 128}}
train: {{batch: 2048, lr: 0.1, checkpoint_every: {ckpt}, flops_convention: 6N_non_embedding}}
grid:
  kind: isoflop
  budgets: [{", ".join(str(b) for b in budgets)}]
  sizes: [{{layers: 1, hidden: 32, heads: 2}}, {{layers: 2, hidden: 32, heads: 2}}]
executor: {{kind: local, retries: {retries}, poll_s: 0.1}}
""")
    return p


def attempts(out: Path) -> dict[str, int]:
    return {rd.read_spec()["name"]: int((rd.path / "toy_attempts").read_text()) for rd in SweepStore(out).runs()
            if (rd.path / "toy_attempts").exists()}


def steps_logged(out: Path) -> dict[str, list[int]]:
    return {rd.read_spec()["name"]: [int(m["step"]) for m in rd.read_metrics()] for rd in SweepStore(out).runs()}


def test_debug_runs_all_and_relaunch_skips(tmp_path):
    spec = toy_spec(tmp_path, extra_opts=", fail_attempts: {C1e10_L2H32: 1}")
    seen = []
    s = launch(spec, tmp_path / "out", executor="debug", progress=seen.append)
    assert (s["done"], s["failed"], s["retried"], s["runs"]) == (4, 0, 1, 4)
    assert seen[-1].finished and seen[-1].flops_done == pytest.approx(seen[-1].flops_total)
    assert attempts(tmp_path / "out") == {"C1e10_L1H32": 1, "C1e10_L2H32": 2, "C2e10_L1H32": 1, "C2e10_L2H32": 1}
    again = launch(spec, tmp_path / "out", executor="debug", progress=False)
    assert again["skipped"] == 4 and again["done"] == 4
    assert attempts(tmp_path / "out")["C1e10_L1H32"] == 1  # not run again
    df = __import__("scaling").load_runs(tmp_path / "out")
    assert len(df) == 4 and set(df["status"]) == {"done"} and df["final_loss"].notna().all()


def test_failure_past_the_retry_limit_is_reported(tmp_path):
    spec = toy_spec(tmp_path, extra_opts=", fail_always: [C2e10_L1H32]", retries=1)
    s = launch(spec, tmp_path / "out", executor="debug", progress=False)
    assert s["done"] == 3 and s["failed"] == 1
    assert s["failed_runs"][0]["name"] == "C2e10_L1H32" and "toy failure" in s["failed_runs"][0]["error"]
    assert attempts(tmp_path / "out")["C2e10_L1H32"] == 2  # first try + one retry
    st = status(tmp_path / "out")
    assert st["counts"]["failed"] == 1 and st["counts"]["done"] == 3 and not st["complete"]


def test_local_processes_share_cores_and_retry(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = toy_spec(tmp_path, budgets=(1e10,), extra_opts=", fail_attempts: {C1e10_L1H32: 1}")
    s = launch(spec, tmp_path / "out", executor="local", max_parallel=2, progress=False)
    assert (s["done"], s["failed"], s["retried"]) == (2, 0, 1)
    assert (s["max_parallel"], s["threads_per_run"]) == (2, 1)
    pids = {json.loads((rd.path / "status.json").read_text())["pid"] for rd in SweepStore(tmp_path / "out").runs()}
    assert os.getpid() not in pids and len(pids) == 2  # each run in a process of its own
    st = json.loads(next(iter(SweepStore(tmp_path / "out").runs())).path.joinpath("status.json").read_text())
    assert st["threads"] == 1 and st["executor"] == "local"


def test_share_cores():
    n = os.cpu_count() or 1
    assert share_cores(10, 2, None)[0] == 2
    assert share_cores(1, None, None) == (1, max(1, len(os.sched_getaffinity(0))))
    assert share_cores(8, None, 1)[1] == 1 and share_cores(8, None, 1)[0] <= n


def test_second_launcher_is_refused_and_stale_lock_taken_over(tmp_path, cli):
    out = tmp_path / "out"
    out.mkdir()
    spec = toy_spec(tmp_path)
    # a live launcher: this very process holds the lock
    lock = SweepLock(out)
    lock.acquire("local")
    with pytest.raises(SweepLocked, match="is running this sweep"):
        launch(spec, out, executor="debug", progress=False)
    p = cli("sweep", "launch", str(spec), "--out", str(out), "--executor", "debug")
    assert p.returncode == 2 and f"pid {os.getpid()}" in p.stderr
    lock.release()
    # a dead launcher's lock is stale: taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK).write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename, "heartbeat": 0}))
    s = launch(spec, out, executor="debug", progress=False)
    assert s["done"] == 4 and not (out / LOCK).exists()


def _launcher(spec: Path, out: Path, *extra: str, ignore_sigint: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ["PYTHONPATH"]}
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    return subprocess.Popen([sys.executable, "-m", "scaling", "sweep", "launch", str(spec), "--out", str(out),
                             "--executor", "local", "--max-parallel", "2", "--quiet", *extra],
                            cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=ignore)




@pytest.mark.slow
def test_killed_launcher_and_runs_then_resume(tmp_path):
    """SIGKILL the launcher and its run processes mid-sweep: status tells the truth, resume finishes
    the interrupted runs from their checkpoints, finished runs are not run again, no metric is lost."""
    spec = toy_spec(tmp_path, step_s=0.03, budgets=(1e10, 2e10))
    out = tmp_path / "out"
    proc = _launcher(spec, out)
    store = SweepStore(out)
    wait_for(lambda: sum(rd.is_done() for rd in store.runs()) >= 1 and
          sum(len(rd.read_metrics()) > 12 and not rd.is_done() for rd in store.runs()) >= 1)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher, its job controllers and the runs
    proc.wait()
    time.sleep(0.3)
    st = status(out)
    assert st["launcher"]["alive"] is False
    assert st["counts"]["running"] == 0 and st["counts"]["interrupted"] >= 1
    done_before = {r["name"] for r in st["runs"] if r["state"] == "done"}
    first = attempts(out)
    s = resume(out, executor="local", progress=False)
    assert s["done"] == 4 and s["skipped"] == len(done_before)
    after = attempts(out)
    for name in done_before:
        assert after[name] == first[name] == 1
    for name, steps in steps_logged(out).items():
        assert steps == list(range(1, len(steps) + 1)), name  # every step once, in order
    assert status(out)["complete"]


@pytest.mark.slow
def test_killed_launcher_alone_leaves_runs_that_resume_adopts(tmp_path):
    spec = toy_spec(tmp_path, step_s=0.03, budgets=(2e10,))
    out = tmp_path / "out"
    proc = _launcher(spec, out)
    store = SweepStore(out)
    wait_for(lambda: sum(len(rd.read_metrics()) > 3 for rd in store.runs()) == 2)
    os.kill(proc.pid, signal.SIGKILL)  # only the launcher: its runs carry on
    proc.wait()
    st = status(out)
    assert st["counts"]["running"] == 2 and st["launcher"]["alive"] is False
    s = resume(out, executor="local", progress=False)  # adopts the two live runs, starts nothing twice
    assert s["done"] == 2
    assert attempts(out) == {"C2e10_L1H32": 1, "C2e10_L2H32": 1}


@pytest.mark.slow
def test_cancel_stops_launcher_and_runs(tmp_path, cli):
    """Launched with SIGINT ignored, as under nohup or as a script's background job: submitit's
    controllers then ignore the SIGINT its cancel sends and its job processes ignore SIGTERM, so
    only the SIGKILL after the grace period stops the runs."""
    spec = toy_spec(tmp_path, step_s=0.1, budgets=(1e10,))
    out = tmp_path / "out"
    proc = _launcher(spec, out, ignore_sigint=True)
    store = SweepStore(out)
    wait_for(lambda: sum(len(rd.read_metrics()) > 2 for rd in store.runs()) == 2)
    p = cli("sweep", "cancel", str(out), "--json")
    assert p.returncode == 0, p.stderr
    assert proc.wait(timeout=30) == 1  # the launcher exits, reporting the cancel
    st = status(out)
    # a run may finish within the grace period before the SIGKILL: it is done, and stays done
    c = st["counts"]
    assert c["running"] == 0 and c["cancelled"] >= 1 and c["cancelled"] + c["done"] == 2, c
    time.sleep(0.5)
    n = {k: len(v) for k, v in steps_logged(out).items()}
    time.sleep(0.5)
    assert {k: len(v) for k, v in steps_logged(out).items()} == n  # nothing trains any more
    s = resume(out, executor="local", progress=False)
    assert s["done"] == 2


def test_cli_launch_status_json(tmp_path, cli):
    spec = toy_spec(tmp_path)
    out = tmp_path / "out"
    p = cli("sweep", "launch", str(spec), "--out", str(out), "--executor", "debug", "--json")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["done"] == 4 and summary["failed"] == 0
    p = cli("sweep", "status", str(out), "--json")
    st = json.loads(p.stdout)
    assert st["complete"] and st["counts"]["done"] == 4 and all(r["final_loss"] is not None for r in st["runs"])
    assert cli("sweep", "status", str(out)).returncode == 0
    p = cli("sweep", "plan", str(spec), "--json")
    plan = json.loads(p.stdout)
    assert [r["run_id"] for r in plan["runs"]] == sorted(r["run_id"] for r in plan["runs"]) or len(plan["runs"]) == 4
    assert plan["describe_columns"] == ["toy_steps"]
    assert cli("sweep", "status", str(tmp_path / "nothing")).returncode == 2


def test_resolved_spec_is_stored_and_reloads(tmp_path):
    spec = toy_spec(tmp_path)
    launch(spec, tmp_path / "out", executor="debug", progress=False)
    stored = load_spec(tmp_path / "out")
    assert stored == load_spec(spec)
    assert parse_spec((tmp_path / "out" / "sweep.yaml").read_text()) == stored


def test_the_overhead_benchmark_launches_its_no_op_backend():
    """benchmarks/sweep_overhead.py registers its no-op backend in its own process and sweeps with it."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sweep_overhead.py"), "--only", "overhead",
                           "--runs", "2", "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout[proc.stdout.index("{"):])["overhead"]
    assert got["runs"] == 2 and got["sweep_s_per_run"] > 0 and got["ratio"] == pytest.approx(
        got["sweep_s_per_run"] / got["bare_submitit_s_per_run"])
