"""Who may write a folder: kernel locks held for the writer's whole life, JSON beside them for humans.

* A sweep folder has one launcher (``sweep launch``, ``sweep resume``, ``scaling run``). It holds an
  exclusive ``flock`` on ``DIR/.launcher.flock`` for as long as it lives and writes who it is to
  ``DIR/launcher.lock`` (pid, host, heartbeat) after taking it, atomically. The kernel drops the
  lock when the process ends however it ends, so there is no stale-lock guess on this host and
  no window in which a lock being written looks stale: two launchers started at the same instant
  cannot both hold it. The JSON only serves ``sweep status``, ``sweep cancel``, and launchers on
  hosts whose filesystem does not share ``flock`` (a fresh heartbeat from another host still
  refuses; there, two launchers on two hosts starting within the instant between one's ``flock``
  and its JSON write could both start: the kernel lock is the guarantee, the JSON a fallback).
* A run folder has one writer: the process that trains it holds ``RUN/.writer.flock``. A second
  task started on the same run (a relaunch that adopted a crashed launcher's runs, a requeue
  that overlaps the old job) waits for the first to end, then finds the run done or resumes it.

The lock files are never removed: removing a file that another process has opened but not yet
locked would let two processes lock two different files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from scaling.errors import UsageError
from scaling.store import atomic_write_json, pid_alive, proc_start

LOCK = "launcher.lock"
LAUNCHER_GUARD = ".launcher.flock"
WRITER_GUARD = ".writer.flock"
STALE_HEARTBEAT_S = 600.0  # a launcher on another host that has not written its lock for this long is gone


class SweepLocked(UsageError):
    """Another live launcher owns the sweep folder."""


class RunBusy(UsageError):
    """Another live process is writing the run folder."""


def holder_alive(info: dict[str, Any] | None) -> bool:
    """Whether the launcher a ``launcher.lock`` names still runs (its pid here; a fresh heartbeat elsewhere)."""
    if not info:
        return False
    if info.get("host") == socket.gethostname():
        return pid_alive(info.get("pid"), info.get("pid_start"))
    return time.time() - float(info.get("heartbeat", 0)) <= STALE_HEARTBEAT_S


class FileGuard:
    """An exclusive ``flock`` on one file (created if absent, never removed), until :meth:`release`
    or the end of the process. ``flock`` belongs to an open file: a second guard on the same path
    conflicts even inside one process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool = False) -> bool:
        """Take the lock; ``False`` if another holds it and ``wait`` is off."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP):
                    raise UsageError(f"{self.path}: this filesystem does not support file locks ({e.strerror}); "
                                     "put the folder on a local disk or a filesystem with lock support") from None
                raise
            with contextlib.suppress(FileNotFoundError):
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    self._fd = fd  # still the file at the path: ours
                    return True
            os.close(fd)  # the file was replaced between open and flock: lock the new one

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def busy(self) -> bool:
        """Whether another process holds it now (taken and dropped at once if free: callers that
        wait for the lock lose nothing; only use this on locks that writers take with ``wait``)."""
        probe = FileGuard(self.path)
        if not self.path.exists():
            return False
        if probe.acquire(wait=False):
            probe.release()
            return False
        return True


class SweepLock:
    """The launcher lock of a sweep folder (see the module docstring). A context manager."""

    def __init__(self, out_dir: str | Path) -> None:
        self.dir = Path(out_dir)
        self.path = self.dir / LOCK
        self._guard = FileGuard(self.dir / LAUNCHER_GUARD)
        self._info: dict[str, Any] = {}

    @property
    def held(self) -> bool:
        return self._guard.held

    def read(self) -> dict[str, Any] | None:
        """The holder's JSON (None if absent or unreadable); for display, never for mutual exclusion."""
        try:
            info = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return info if isinstance(info, dict) else None

    def acquire(self, executor: str, command: str = "sweep launch") -> None:
        """Own the folder or raise :class:`SweepLocked` naming the live holder."""
        if not self._guard.acquire(wait=False):
            raise SweepLocked(self._held_message(self.read()))
        info = self.read()
        if holder_alive(info) and not (info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname()):
            # a launcher on another host whose filesystem does not share flock, or of a version without it
            self._guard.release()
            raise SweepLocked(self._held_message(info))
        now = time.time()
        self._info = {"pid": os.getpid(), "pid_start": proc_start(os.getpid()), "host": socket.gethostname(),
                      "started": now, "heartbeat": now, "executor": executor, "command": command}
        atomic_write_json(self.path, self._info)

    def _held_message(self, info: dict[str, Any] | None) -> str:
        if not info:
            return (f"--out {self.dir}: another launcher is starting on this sweep; wait for it, "
                    f"watch it with `scaling sweep status`, or stop it with `scaling sweep cancel`")
        since = time.strftime("%H:%M:%S", time.localtime(info.get("started", 0)))
        return (f"--out {self.dir}: a launcher (pid {info.get('pid')} on {info.get('host')}, since {since}) "
                f"is running this sweep; wait for it, watch it with `scaling sweep status`, "
                f"or stop it with `scaling sweep cancel`")

    def heartbeat(self) -> None:
        if self.held:
            self._info["heartbeat"] = time.time()
            atomic_write_json(self.path, self._info)

    def release(self) -> None:
        if self.held:
            info = self.read() or {}
            if info.get("pid") == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            self._guard.release()

    def __enter__(self) -> SweepLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class RunLock:
    """The writer lock of one run folder: held by the process that trains it."""

    def __init__(self, run_dir: str | Path) -> None:
        self._guard = FileGuard(Path(run_dir) / WRITER_GUARD)

    def wait(self) -> None:
        """Block until no other process writes the run, then hold the lock."""
        self._guard.acquire(wait=True)

    def take(self, patience_s: float = 1.0) -> bool:
        """Hold the lock if no other process writes the run (a probe that holds it for an instant
        is waited out for up to ``patience_s``)."""
        end = time.monotonic() + patience_s
        while not self._guard.acquire(wait=False):
            if time.monotonic() > end:
                return False
            time.sleep(0.02)
        return True

    def busy(self) -> bool:
        return self._guard.busy()

    def release(self) -> None:
        self._guard.release()
