"""A real single-node Slurm cluster for tests: slurmctld + slurmd in a temp folder.

No munge, systemd or cgroups: ``AuthType=auth/none``, ``CredType=cred/none``, ``SlurmUser`` is the
current user, ``proctrack/linuxproc``, ``task/none``, every state/log/pid/spool path inside the
temp folder and ``SLURM_CONF`` pointing at it. Each cluster gets its own name, folder and free
loopback ports, so two test sessions on one machine do not see each other. The node advertises
fake GPUs through gres: character-device files (``mknod ... c 1 3``, the same device as
``/dev/null``; a plain file when ``mknod`` is not permitted) listed in ``gres.conf``, so jobs that
ask for ``--gpus-per-node`` are scheduled and see ``CUDA_VISIBLE_DEVICES``/``SLURM_JOB_GPUS``.
No accounting daemon: ``sacct`` does not answer, so watch jobs with :meth:`SlurmCluster.squeue`.

Usage::

    def test_x(slurm_cluster):             # the session fixture; skips when Slurm is missing
        out = slurm_cluster.sbatch(["--wrap", "hostname"])
        slurm_cluster.wait_gone(out)

``SLURM_CONF`` is set in ``os.environ`` while the fixture is active, so ``sbatch``, ``squeue``,
``scontrol`` and submitit's Slurm executor talk to this cluster.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DAEMONS = ("slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "srun")
# Seconds a requeued job waits before we start it again. slurmctld holds it ~120 s (BeginTime) so
# the node can finish tearing down the last attempt. Started within ~0.1 s, the new attempt sometimes
# failed at once with no output (JobState=FAILED, NonZeroExitCode): once in three tries here, and in
# two full test runs, under load; we wait a second instead of two minutes.
REQUEUE_SETTLE_S = 1.0
# JobState values after which a job never runs again (scontrol show job); REQUEUED, PENDING,
# COMPLETING and the like are not final
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY"})
# Plugins the configuration below loads; Debian splits them across packages.
PLUGINS = ("auth_none", "cred_none", "select_cons_tres", "proctrack_linuxproc", "task_none", "gres_gpu")
PLUGIN_DIRS = ("/usr/lib/x86_64-linux-gnu/slurm-wlm", "/usr/lib/aarch64-linux-gnu/slurm-wlm", "/usr/lib/slurm", "/usr/lib64/slurm")


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(Path(d) / name) for d in ("/usr/sbin", "/sbin", "/usr/local/sbin") if (Path(d) / name).exists()), None
    )


def _plugin_dir() -> str | None:
    for d in PLUGIN_DIRS:
        if all((Path(d) / f"{p}.so").exists() for p in PLUGINS):
            return d
    return None


def unavailable_reason() -> str | None:
    """Why a cluster cannot start here, or ``None`` when it can."""
    missing = [b for b in (*DAEMONS, *CLIENTS) if _which(b) is None]
    if missing:
        return f"Slurm binaries not installed: {', '.join(missing)} (apt-get install slurmctld slurmd slurm-client)"
    if _plugin_dir() is None:
        return f"Slurm plugins {', '.join(PLUGINS)} not found in {', '.join(PLUGIN_DIRS)}"
    if os.geteuid() != 0:
        # slurmd must run jobs as the submitting user and needs root to do so.
        return f"slurmd needs root to launch jobs (tests run as uid {os.geteuid()})"
    return None


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together, so they differ)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _fake_gpu(path: Path) -> None:
    try:
        os.mknod(path, 0o666 | 0o020000, os.makedev(1, 3))  # S_IFCHR, /dev/null's numbers
    except (PermissionError, OSError):
        path.touch()


@dataclass
class SlurmCluster:
    """A running single-node cluster. :meth:`stop` ends both daemons and their jobs."""

    root: Path
    name: str
    node: str
    cpus: int
    gpus: int
    ctld_port: int
    slurmd_port: int
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # ---- client commands ----------------------------------------------------------------------
    def cmd(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def sbatch(self, args: list[str]) -> str:
        """Submit; return the job id."""
        out = self.cmd("sbatch", "--parsable", f"--chdir={self.root}", *args).stdout.strip()
        return out.split(";")[0]

    def squeue(self, job_id: str | None = None) -> dict[str, dict[str, str]]:
        """Jobs still known to the controller: ``{job_id: {"state", "reason", "restarts"}}``.

        Array tasks appear as ``ID_INDEX``; a pending array's unstarted tasks as ``ID_[a-b]``.
        """
        args = ["squeue", "--noheader", "--array", "--format=%i|%T|%r"]
        if job_id:
            args += ["--jobs", job_id.split("_")[0]]
        proc = self.cmd(*args, check=False)
        if proc.returncode != 0:
            return {}
        out: dict[str, dict[str, str]] = {}
        for line in proc.stdout.splitlines():
            jid, state, reason = (line.split("|") + ["", "", ""])[:3]
            out[jid.strip()] = {"state": state.strip(), "reason": reason.strip()}
        return out

    def job_states(self, job_id: str) -> list[str]:
        """``JobState`` of each task of ``job_id`` from ``scontrol`` (empty once it has aged out)."""
        proc = self.cmd("scontrol", "--oneliner", "show", "job", job_id, check=False)
        return [t.partition("=")[2] for line in proc.stdout.splitlines() for t in line.split() if t.startswith("JobState=")]

    def wait_gone(self, job_id: str, timeout: float = 60) -> None:
        """Wait until every task of ``job_id`` has ended: not in ``squeue`` and, while ``scontrol``
        still knows it, in a final state (``squeue`` omits a job for a moment while it is requeued)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.squeue(job_id) and all(s in FINAL_STATES for s in self.job_states(job_id)):
                return
            time.sleep(0.3)
        raise TimeoutError(f"job {job_id} still queued after {timeout} s: {self.squeue(job_id)} {self.job_states(job_id)}")

    def wait_state(self, job_id: str, state: str, timeout: float = 60) -> None:
        """Wait until ``job_id`` (or, for an array id without index, any of its tasks) is in ``state``."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            q = self.squeue(job_id)
            if any(v["state"] == state for k, v in q.items() if k == job_id or "_" not in job_id):
                return
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} never reached {state} in {timeout} s: {self.squeue(job_id)}")

    def release(self, job_id: str, timeout: float = 30) -> None:
        """Start a requeued job now rather than after the controller's begin-time delay (~120 s).

        Waits until the job is back in PENDING (a running job passes through COMPLETING first).
        """
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            q = self.squeue(job_id)
            key = job_id if job_id in q else next(iter(q), None)
            if key is not None and q[key]["state"] == "PENDING":
                time.sleep(REQUEUE_SETTLE_S)
                self.cmd("scontrol", "update", f"JobId={job_id}", "StartTime=now", check=False)
                return
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} did not return to PENDING in {timeout} s: {self.squeue(job_id)}")

    def requeue(self, job_id: str) -> None:
        """Requeue a job as a pre-emption would, and let it start again at once."""
        self.cmd("scontrol", "requeue", job_id)
        self.release(job_id)

    def release_requeued(self) -> list[str]:
        """Release every job waiting on ``BeginTime`` (requeued by itself or by the controller)."""
        ids = [j for j, v in self.squeue().items() if v["state"] == "PENDING" and v["reason"] == "BeginTime"]
        if ids:
            time.sleep(REQUEUE_SETTLE_S)
        for j in ids:
            self.cmd("scontrol", "update", f"JobId={j}", "StartTime=now", check=False)
        return ids

    @contextlib.contextmanager
    def releasing_requeued(self, every: float = 0.5) -> Iterator[list[str]]:
        """A background thread that releases requeued jobs while the block runs (yields the ids)."""
        released: list[str] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every):
                with contextlib.suppress(Exception):
                    released.extend(self.release_requeued())

        t = threading.Thread(target=loop, name="slurm-release", daemon=True)
        t.start()
        try:
            yield released
        finally:
            stop.set()
            t.join(timeout=5)

    # ---- lifecycle ----------------------------------------------------------------------------
    def log(self, daemon: str = "slurmctld") -> str:
        p = self.root / "log" / f"{daemon}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        """Cancel every job, then stop slurmd and slurmctld (their process groups)."""
        with contextlib.suppress(Exception):
            self.cmd("scancel", "--full", "--user", getpass.getuser(), check=False, timeout=10)
        for p in reversed(self.procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        self.procs.clear()


def _write_config(c: SlurmCluster, user: str, plugin_dir: str, real_memory: int) -> None:
    for d in ("etc", "state", "spool", "log", "run", "dev"):
        (c.root / d).mkdir(parents=True, exist_ok=True)
    gpu_files = []
    for i in range(c.gpus):
        p = c.root / "dev" / f"nvidia{i}"
        _fake_gpu(p)
        gpu_files.append(str(p))
    gres = f" Gres=gpu:{c.gpus}" if c.gpus else ""
    conf = f"""\
ClusterName={c.name}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={c.ctld_port}
SlurmdPort={c.slurmd_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
PluginDir={plugin_dir}
StateSaveLocation={c.root}/state
SlurmdSpoolDir={c.root}/spool/%n
SlurmctldPidFile={c.root}/run/slurmctld.pid
SlurmdPidFile={c.root}/run/slurmd-%n.pid
SlurmctldLogFile={c.root}/log/slurmctld.log
SlurmdLogFile={c.root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
GresTypes=gpu
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SlurmdParameters=config_overrides
MaxJobCount=10000
MinJobAge=300
KillWait=2
InactiveLimit=0
Waittime=0
JobRequeue=1
NodeName={c.node} NodeHostname=localhost NodeAddr=127.0.0.1 Port={c.slurmd_port} CPUs={c.cpus} RealMemory={real_memory} State=UNKNOWN{gres}
PartitionName=debug Nodes={c.node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
PartitionName=gpu Nodes={c.node} Default=NO MaxTime=INFINITE State=UP
"""
    (c.root / "etc" / "slurm.conf").write_text(conf)
    lines = [f"NodeName={c.node} Name=gpu File={f}" for f in gpu_files]
    (c.root / "etc" / "gres.conf").write_text("\n".join(lines) + "\n")
    (c.root / "spool" / c.node).mkdir(parents=True, exist_ok=True)


def start_cluster(root: str | Path | None = None, *, cpus: int = 8, gpus: int = 4, real_memory: int = 16000, timeout: float = 30) -> SlurmCluster:
    """Start a cluster in ``root`` (a new temp folder by default) and wait until its node is idle.

    ``cpus``/``gpus``/``real_memory`` are what the node advertises (``config_overrides``: not the
    host's real counts), so tests can schedule GPU jobs and several tasks at once on a small machine.
    """
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    plugin_dir = _plugin_dir()
    assert plugin_dir is not None
    tag = uuid.uuid4().hex[:8]
    base = Path(root) if root else Path(tempfile.mkdtemp(prefix=f"slurm-{tag}-"))
    # Slurm caps socket paths (108 bytes): keep the folder short.
    ctld_port, slurmd_port = free_ports(2)
    c = SlurmCluster(root=base, name=f"t{tag}", node=f"n{tag}", cpus=cpus, gpus=gpus, ctld_port=ctld_port, slurmd_port=slurmd_port)
    _write_config(c, getpass.getuser(), plugin_dir, real_memory)
    env = c.env
    logs = c.root / "log"
    try:
        for argv, name in (
            ([_which("slurmctld"), "-D", "-i", "-f", str(c.conf)], "slurmctld"),
            ([_which("slurmd"), "-D", "-N", c.node, "-f", str(c.conf)], "slurmd"),
        ):
            out = open(logs / f"{name}.stdout", "wb")  # noqa: SIM115 - handed to the daemon
            c.procs.append(subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
            if name == "slurmctld":
                _wait(lambda: c.cmd("scontrol", "ping", check=False, timeout=5).returncode == 0, timeout, c, "slurmctld answers")
        _wait(lambda: _node_ready(c), timeout, c, "the node is idle")
    except BaseException:
        c.stop()
        raise
    return c


def _node_ready(c: SlurmCluster) -> bool:
    proc = c.cmd("sinfo", "--noheader", "--format=%T", "--nodes", c.node, check=False, timeout=5) if shutil.which("sinfo") else None
    if proc is not None:
        return proc.returncode == 0 and proc.stdout.strip().rstrip("*") in ("idle", "mixed", "allocated")
    info = c.cmd("scontrol", "--oneliner", "show", "node", c.node, check=False, timeout=5).stdout
    return "State=IDLE" in info


def _wait(pred, timeout: float, c: SlurmCluster, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for p in c.procs:
            if p.poll() is not None:
                raise RuntimeError(
                    f"{Path(p.args[0]).name} exited {p.returncode} before {what}:\n"
                    + c.log("slurmctld")[-2000:]
                    + c.log("slurmd")[-2000:]
                    + "".join((c.root / "log" / f"{n}.stdout").read_text(errors="replace")[-1000:] for n in DAEMONS if (c.root / "log" / f"{n}.stdout").exists())
                )
        with contextlib.suppress(subprocess.TimeoutExpired):
            if pred():
                return
        time.sleep(0.2)
    raise TimeoutError(f"Slurm: waited {timeout} s for {what}:\n{c.log('slurmctld')[-2000:]}\n{c.log('slurmd')[-2000:]}")


@contextlib.contextmanager
def running_cluster(**kwargs) -> Iterator[SlurmCluster]:
    """A cluster for the duration of the block, with ``SLURM_CONF`` set in ``os.environ``."""
    c = start_cluster(**kwargs)
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(c.conf)
    try:
        yield c
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        c.stop()
        shutil.rmtree(c.root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """One real Slurm cluster for the test session (skips with the reason when Slurm is missing)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with running_cluster() as c:
        yield c
