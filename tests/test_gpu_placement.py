"""The local executor on a machine with GPUs: each run process sees one GPU, at most runs_per_gpu a GPU.

There is no GPU here, so the GPUs are a stand-in: an ``nvidia-smi`` script on PATH that lists two
"NVIDIA H200" cards (what the real one prints for ``--query-gpu=index,uuid,name,memory.total``).
Everything past that listing is real: submitit's LocalExecutor sets each job's
``CUDA_VISIBLE_DEVICES``, and the toy backend's run processes record what they saw and when
(``toy_device.jsonl``, tests/sweep_backends.py). No CUDA is touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaling.errors import UsageError
from scaling.runspec import RunSpec
from scaling.store import SweepStore
from scaling.sweep import expand, launch, load_spec, plan_table, resume, status
from scaling.sweep import gpus as G
from scaling.timing import pack
from tests.conftest import run_cli
from tests.sweep_backends import wait_for

pytestmark = pytest.mark.timeout(300)  # a launcher that never frees a GPU would wait forever

ROOT = Path(__file__).resolve().parents[1]
H200_MIB = 143771


def fake_smi(folder: Path, n: int = 2, mib: int = H200_MIB) -> Path:
    """A stand-in ``nvidia-smi`` listing ``n`` H200s; returns the folder to put first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = "\n".join(f"{i}, GPU-{i:04d}aaaa, NVIDIA H200, {mib}" for i in range(n))
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{rows}\nEOF\n")
    script.chmod(0o755)
    return folder


@pytest.fixture
def two_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_smi(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.chdir(ROOT)
    return tmp_path


def toy_spec(tmp_path: Path, step_s: float, executor: str, budgets=(1e10, 2e10), retries: int = 1,
             layers=(1, 2), opts: str = "") -> Path:
    p = tmp_path / "gpu.yaml"
    p.write_text(f"""\
name: gpu
backend: toy
backend_options: {{step_s: {step_s}{opts}}}
model: {{vocab: 1024, seq_len: 128}}
train: {{batch: 2048, lr: 0.1, checkpoint_every: 5, flops_convention: 6N_non_embedding}}
grid:
  kind: isoflop
  budgets: [{", ".join(str(b) for b in budgets)}]
  sizes: [{", ".join(f"{{layers: {n}, hidden: 32, heads: 2}}" for n in layers)}]
executor: {{kind: local, retries: {retries}, poll_s: 0.05, {executor}}}
""")
    return p


def attempts_seen(out: Path) -> list[dict]:
    """Every attempt of every run: the device it saw, its start and (if it ended) end."""
    rows: list[dict] = []
    for rd in SweepStore(out).runs():
        f = rd.path / "toy_device.jsonl"
        by_attempt: dict[int, dict] = {}
        for line in f.read_text().splitlines() if f.exists() else []:
            r = json.loads(line)
            by_attempt.setdefault(r["attempt"], {"run": rd.run_id}).update(r)
        rows.extend(by_attempt.values())
    return rows


def max_overlap(rows: list[dict], device: str, now: float) -> int:
    """The most attempts on ``device`` running at one instant (an attempt that never ended: till ``now``)."""
    on = [r for r in rows if device in r["cuda_visible_devices"].split(",")]
    events = sorted([(r["start"], 1) for r in on] + [(r.get("end", now), -1) for r in on], key=lambda e: (e[0], e[1]))
    most = cur = 0
    for _, d in events:
        cur += d
        most = max(most, cur)
    return most


def test_four_runs_on_two_gpus_one_at_a_time_each(two_gpus):
    s = launch(toy_spec(two_gpus, 0.02, "gpus: [0, 1], runs_per_gpu: 1"), two_gpus / "out", progress=False)
    assert (s["done"], s["failed"], s["max_parallel"]) == (4, 0, 2)
    assert [g["index"] for g in s["gpus"]["gpus"]] == [0, 1] and s["gpus"]["runs_per_gpu"] == 1
    rows = attempts_seen(two_gpus / "out")
    assert len(rows) == 4
    assert {r["cuda_visible_devices"] for r in rows} == {"0", "1"}  # one id each, both GPUs used
    assert {r["cuda_device_order"] for r in rows} == {"PCI_BUS_ID"}  # id i is nvidia-smi's GPU i
    now = time.time()
    assert max_overlap(rows, "0", now) == 1 and max_overlap(rows, "1", now) == 1
    for rd in SweepStore(two_gpus / "out").runs():  # the launcher's record matches what the process saw
        seen = {r["cuda_visible_devices"] for r in rows if r["run"] == rd.run_id}
        assert [seen] == [{str(g)} for g in rd.read_status()["gpus"]]
    assert sorted(tuple(r["gpus"]) for r in status(two_gpus / "out")["runs"]) == [(0,), (0,), (1,), (1,)]
    p = run_cli("sweep", "status", str(two_gpus / "out"))
    assert p.returncode == 0 and "gpus" in p.stdout


def test_two_runs_a_gpu(two_gpus):
    s = launch(toy_spec(two_gpus, 0.05, "gpus: [0, 1], runs_per_gpu: 2"), two_gpus / "out", progress=False)
    assert (s["done"], s["max_parallel"]) == (4, 4)
    rows = attempts_seen(two_gpus / "out")
    now = time.time()
    assert sorted(r["cuda_visible_devices"] for r in rows) == ["0", "0", "1", "1"]
    assert max_overlap(rows, "0", now) == 2 and max_overlap(rows, "1", now) == 2


def test_a_run_of_two_gpus_has_them_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_smi(tmp_path / 'bin', n=3)}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(ROOT)
    spec = toy_spec(tmp_path, 0.03, "runs_per_gpu: 2", opts=", gpus_per_run: {C1e10_L2H32: 2}")
    table = plan_table(spec)
    assert [r["gpus_per_run"] for r in table["runs"]] == [1, 2, 1, 1]
    s = launch(spec, tmp_path / "out", progress=False)
    assert s["done"] == 4
    rows = attempts_seen(tmp_path / "out")
    pair = next(r for r in rows if "," in r["cuda_visible_devices"])
    ids = pair["cuda_visible_devices"].split(",")
    assert len(ids) == 2 and len(set(ids)) == 2 and set(ids) <= {"0", "1", "2"}
    for r in rows:  # nobody shares the pair's GPUs while it runs
        if r is not pair and set(r["cuda_visible_devices"].split(",")) & set(ids):
            assert r["end"] <= pair["start"] or r["start"] >= pair["end"], r
    p = run_cli("sweep", "plan", str(spec), "--gpus", "2")
    assert p.returncode == 2 and "--gpus: run C1e10_L2H32 takes 2 GPUs, 1 are placed on (2)" in p.stderr


def test_cpu_path_without_gpus_is_unchanged(tmp_path, monkeypatch):
    """No nvidia-smi and no driver: no placement, and jobs see CUDA_VISIBLE_DEVICES="" as before."""
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + "/usr/bin:/bin")
    monkeypatch.setattr(G, "DEVICE_NODES", ())
    monkeypatch.setattr(G.shutil, "which", lambda name: None)
    monkeypatch.chdir(ROOT)
    spec = toy_spec(tmp_path, 0.0, "max_parallel: 2", budgets=(1e10,))
    assert plan_table(spec)["placement"] is None
    s = launch(spec, tmp_path / "out", progress=False)
    assert s["done"] == 2 and s["gpus"] is None and s["max_parallel"] == 2
    rows = attempts_seen(tmp_path / "out")
    assert {r["cuda_visible_devices"] for r in rows} == {""} and {r["cuda_device_order"] for r in rows} == {None}
    assert all("gpu" not in rd.read_status() for rd in SweepStore(tmp_path / "out").runs())


def _launcher(spec: Path, out: Path, env: dict, *extra: str) -> subprocess.Popen:
    env = {**env, "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "scaling", "sweep", "launch", str(spec), "--out", str(out),
                             "--quiet", *extra], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _running(out: Path) -> list[dict]:
    return [r for r in attempts_seen(out) if "end" not in r]


@pytest.mark.slow
def test_killed_run_frees_its_gpu(two_gpus):
    out = two_gpus / "out"
    proc = _launcher(toy_spec(two_gpus, 0.05, "gpus: [0, 1]", retries=2), out, dict(os.environ))
    try:
        wait_for(lambda: len(_running(out)) == 2, what="two runs started")
        victim = _running(out)[0]
        os.kill(victim["pid"], signal.SIGKILL)
        killed_at = time.time()
        assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    rows = attempts_seen(out)
    device = victim["cuda_visible_devices"]
    later = [r for r in rows if r["cuda_visible_devices"] == device and r["start"] > killed_at]
    assert later, f"nothing ran on GPU {device} after its run was killed"
    victim_ended = min(r["start"] for r in later)  # the killed attempt held the GPU until then at most
    clean = [r if r is not victim and r["pid"] != victim["pid"] else {**r, "end": victim_ended} for r in rows]
    now = time.time()
    assert max_overlap(clean, "0", now) == 1 and max_overlap(clean, "1", now) == 1
    assert sum(rd.is_done() for rd in SweepStore(out).runs()) == 4


@pytest.mark.slow
def test_resume_keeps_adopted_runs_on_their_gpus_and_places_orphans(two_gpus):
    """Kill the launcher alone: its two runs carry on, holding GPUs 0 and 1. The resumed launcher
    adopts them, and starts the other two only as they free their GPUs."""
    out = two_gpus / "out"
    # the first two runs (the smaller budget) differ 4x in steps: the one on GPU 1 ends seconds
    # before the one on GPU 0, and the next run must then go to GPU 1
    spec = toy_spec(two_gpus, 0.1, "gpus: [0, 1]", layers=(1, 4))
    proc = _launcher(spec, out, dict(os.environ))
    wait_for(lambda: len(_running(out)) == 2, what="two runs started")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    s = resume(out, progress=False)
    assert s["done"] == 4
    rows = attempts_seen(out)
    now = time.time()
    assert len(rows) == 4  # nothing started twice
    assert max_overlap(rows, "0", now) == 1 and max_overlap(rows, "1", now) == 1


# ---- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("executor, flags, needle", [
    ("gpus: [0, 0]", (), "executor.gpus: GPU 0 is listed twice"),
    ("runs_per_gpu: 0", (), "executor.runs_per_gpu: 0: at least 1"),
    ("gpus: [0, 5]", (), "executor.gpus: GPU 5 is not visible here (visible: 0, 1"),
    ("", ("--gpus", "0,7"), "--gpus: GPU 7 is not visible here"),
    ("", ("--gpus", "0,x"), "--gpus '0,x': GPU indices"),
    ("", ("--runs-per-gpu", "0"), "--runs-per-gpu '0': a positive integer, or auto"),
])
def test_bad_gpu_settings_exit_2_naming_the_field(two_gpus, cli, executor, flags, needle):
    spec = toy_spec(two_gpus, 0.0, executor)
    for action in (("plan", str(spec)), ("launch", str(spec), "--out", str(two_gpus / "out"))):
        p = cli("sweep", *action, *flags, env={"PATH": os.environ["PATH"]})
        assert p.returncode == 2, p.stderr
        assert needle in p.stderr and "Traceback" not in p.stderr
    assert not (two_gpus / "out" / "sweep.yaml").exists()  # refused before anything was written


def test_gpu_flags_with_another_executor_exit_2(two_gpus, cli):
    spec = toy_spec(two_gpus, 0.0, "")
    for kind in ("debug", "slurm"):
        p = cli("sweep", "launch", str(spec), "--out", str(two_gpus / kind), "--executor", kind, "--runs-per-gpu", "2")
        assert p.returncode == 2 and f"--gpus/--runs-per-gpu: place runs of --executor local only; with {kind}" in p.stderr


# ---- discovery, memory, plan ------------------------------------------------------------------------


def test_cuda_visible_devices_narrows_the_machine_gpus():
    gpus = [G.Gpu(i, "NVIDIA H200", H200_MIB * 2**20, f"GPU-{i}abc") for i in range(4)]
    assert [g.index for g in G.visible(gpus, None)] == [0, 1, 2, 3]
    assert [g.index for g in G.visible(gpus, "2,0")] == [2, 0]
    assert [g.index for g in G.visible(gpus, "GPU-3abc,1")] == [3, 1]  # UUIDs as CUDA takes them
    assert [g.index for g in G.visible(gpus, "1,9,2")] == [1]  # CUDA stops at the first bad entry
    assert G.visible(gpus, "") == [] and G.visible(gpus, "-1") == []


def test_discover_reads_nvidia_smi_and_cuda_visible_devices(two_gpus, monkeypatch):
    gpus, source = G.discover()
    assert [(g.index, g.name, g.memory_bytes) for g in gpus] == [(i, "NVIDIA H200", H200_MIB * 2**20) for i in (0, 1)]
    assert source == "nvidia-smi"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert [g.index for g in G.discover()[0]] == [1]


@pytest.mark.slow  # imports torch in a child
def test_without_nvidia_smi_a_loaded_driver_is_asked_through_torch(tmp_path, monkeypatch):
    """The fallback path, run for real: torch here has no CUDA device, so it finds none."""
    (tmp_path / "nvidiactl").touch()
    monkeypatch.setattr(G, "DEVICE_NODES", (str(tmp_path / "nvidiactl"),))
    monkeypatch.setattr(G.shutil, "which", lambda name: None)
    assert G.machine_gpus() == ([], "torch.cuda")


def _spec(layers: int, hidden: int, heads: int, seq: int, vocab: int, batch_seqs: int, **kw) -> RunSpec:
    return RunSpec(shape={"layers": layers, "hidden": hidden, "heads": heads, "vocab": vocab, "seq_len": seq},
                   tokens=seq * batch_seqs * 10, batch_tokens=seq * batch_seqs, optimizer={"lr": 1e-3}, **kw)


def test_run_memory_is_states_activations_logits_and_context():
    s = _spec(12, 768, 12, 1024, 50304, 8)
    sh = s.model_shape
    act = 12 * 1024 * 8 * 768 * (34 + 5 * 12 * 1024 / 768)  # Korthikanti et al. 2022, eq. 1, 16-bit
    assert G.run_memory_bytes(s) == int(16 * sh.params + act + 8 * 8 * 1024 * 50304 + G.CONTEXT_BYTES)
    assert G.run_memory_bytes(s.model_copy(update={"micro_batch": 2})) < G.run_memory_bytes(s)


def test_auto_runs_per_gpu_from_memory():
    tiny = [_spec(2, 64, 2, 128, 1024, 4)]
    h200 = [G.Gpu(0, "NVIDIA H200", H200_MIB * 2**20)]
    assert G.auto_runs_per_gpu(tiny, h200, cores=16)[0] == G.AUTO_MAX
    assert G.auto_runs_per_gpu(tiny, h200, cores=2)[0] == 2  # one process a core
    small_card = [G.Gpu(0, "NVIDIA L4", int(1.5 * G.GIB))]
    assert G.auto_runs_per_gpu(tiny, small_card, cores=16)[0] == 1
    big = [_spec(24, 2048, 16, 2048, 50304, 8)]  # ~1.3B: one a card, whatever fits
    assert G.auto_runs_per_gpu(big, h200, cores=16)[0] == 1


def test_plan_shows_placement_and_wall_time(two_gpus, cli):
    spec = toy_spec(two_gpus, 0.01, "gpus: [0, 1]")
    table = plan_table(spec)
    pl = table["placement"]
    assert [g["index"] for g in pl["gpus"]] == [0, 1] and pl["slots"] == 2 and table["max_parallel"] == 2
    ests = [r["est_seconds"] for r in table["runs"]]
    assert [r["gpu"] for r in table["runs"]][:2] == [0, 1]
    assert table["est_wall_seconds"] == pytest.approx(pack(ests, 2))
    assert plan_table(spec, runs_per_gpu=2)["placement"]["slots"] == 4
    assert plan_table(spec, gpus=[])["placement"] is None  # --gpus none: the CPU
    p = cli("sweep", "plan", str(spec), "--gpus", "1", "--runs-per-gpu", "2", env={"PATH": os.environ["PATH"]})
    assert p.returncode == 0, p.stderr
    assert "placement: 2 run(s) at a time on each of 1 GPU(s) [1 NVIDIA H200 140 GiB]" in p.stdout


def test_assumed_seconds_on_a_gpu_come_from_its_peak_and_share(two_gpus):
    runs = expand(load_spec(toy_spec(two_gpus, 0.0, "")))
    plan = G.GpuPlan((G.Gpu(0, "NVIDIA H200"),), 2, "test")
    ests, model = G.gpu_estimates(None, runs, 1, plan)
    alone = G.assumed_model(plan)
    assert alone is not None and alone.s_per_flop == pytest.approx(1 / (989.4e12 * 0.40))  # H200 dense BF16 peak
    assert model is not None and "assumed: 40% MFU" in model.source
    assert ests == pytest.approx([2 * alone.run_seconds(r) for r in runs])  # two runs share the card


def test_placement_bookkeeping():
    p = G.Placement(G.GpuPlan((G.Gpu(0), G.Gpu(1)), 1, "test"))
    assert [p.take("a"), p.take("b"), p.take("c")] == [(0,), (1,), None]
    p.release("a")
    assert p.take("c") == (0,)
    q = G.Placement(G.GpuPlan((G.Gpu(0), G.Gpu(1)), 2, "test"))
    q.hold("adopted", [1])
    assert [q.take(x) for x in "abcd"] == [(0,), (0,), (1,), None]
    r = G.Placement(G.GpuPlan((G.Gpu(0), G.Gpu(1), G.Gpu(2)), 2, "test"))
    assert r.take("a") == (0,) and r.take("pair", 2) == (1, 2) and r.take("b") == (0,) and r.take("c") is None
    r.release("pair")
    assert r.take("c") == (1,) and r.take("pair2", 2) is None  # GPU 1 is no longer idle
    with pytest.raises(UsageError, match="listed twice"):
        G.parse_gpus_flag("1,1")
    assert G.parse_gpus_flag("none") == [] and G.parse_runs_per_gpu_flag("auto") == "auto"


# ---- benchmarks/gpu_share.py: what runs without a GPU (the training itself needs one, not checked here) ----


def _bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_share", ROOT / "benchmarks" / "gpu_share.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_share_arguments_spec_and_dry_run(tmp_path):
    bench = _bench()
    with pytest.raises(SystemExit):
        bench.parse_args(["--hidden", "100", "128"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--tokens", "10", "--batch-tokens", "16384"])
    a = bench.parse_args(["--out", str(tmp_path / "gs")])
    runs = expand(load_spec(bench.write_spec(a)))
    assert [r.name for r in runs] == ["L4d256", "L4d384"] and runs[0].tokens == runs[1].tokens == pytest.approx(a.tokens, rel=1e-3)
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_share.py"), "--dry-run", "--out", str(tmp_path / "gs")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    plans = json.loads((tmp_path / "gs" / "gpu_share.json").read_text())["plans"]
    alone, shared = plans["back_to_back"], plans["shared"]
    assert [r["est_s"] * 2 for r in alone["runs"]] == pytest.approx([r["est_s"] for r in shared["runs"]])
    assert alone["est_wall_s"] == pytest.approx(sum(r["est_s"] for r in alone["runs"]))
    assert shared["est_wall_s"] == pytest.approx(max(r["est_s"] for r in shared["runs"]))
    assert "back_to_back: estimated wall" in p.stdout and "shared: estimated wall" in p.stdout


def test_gpu_share_refuses_without_a_gpu(tmp_path, monkeypatch):
    bench = _bench()
    monkeypatch.setattr(G, "discover", lambda: ([], "none"))
    assert bench.main(["--out", str(tmp_path / "gs")]) == 2


def test_place_follows_the_launcher():
    two = G.GpuPlan((G.Gpu(0), G.Gpu(1)), 1, "test")
    assert G.place([4.0, 1.0, 2.0, 3.0], two) == ([0, 1, 1, 1], pack([4.0, 1.0, 2.0, 3.0], 2))
    shared = G.GpuPlan((G.Gpu(0), G.Gpu(1)), 2, "test")
    assert G.place([1.0] * 4, shared) == ([0, 1, 0, 1], 1.0)
    # a run of both GPUs waits for both, and the run after it waits behind it
    assert G.place([3.0, 1.0, 2.0, 1.0], two, [1, 1, 2, 1]) == ([0, 1, 0, 0], 6.0)


def test_a_nanotron_run_takes_its_gpus_per_node():
    from scaling.backends.nanotron import NanotronBackend
    from tests.nanotron_study import nanotron_spec

    assert G.gpus_per_run(NanotronBackend(), nanotron_spec(gpus_per_node=2)) == 2
    assert G.gpus_per_run(object(), nanotron_spec(gpus_per_node=2)) == 1  # a backend that does not say: one
