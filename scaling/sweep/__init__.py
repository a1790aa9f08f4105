"""The sweep engine: specs (``spec``), their expansion into runs (``grid``), and launching them
through submitit on this machine or a Slurm cluster.

Modules, one job each: ``lock`` (who may write a folder), ``task`` (what a job runs), ``jobs``
(handles on runs in flight), ``executors`` (debug/local/slurm and how many runs at once),
``progress`` (snapshots and displays), ``launcher`` (the launch loop), ``control`` (status, cancel),
``plan`` (the dry-run table), ``extend`` and ``added`` (runs an adaptive sweep adds, and their log).

Python API (what ``scaling sweep`` and ``scaling.pipeline`` call)::

    from scaling.sweep import load_spec, expand, launch, status, resume, cancel, plan_table
    spec = load_spec("sweeps/quickstart.yaml")
    runs = expand(spec)                                  # list[RunSpec], deterministic
    summary = launch(spec, "studies/quick", executor="local", max_parallel=None, progress=None)
    status("studies/quick")["counts"]                    # {"done": 20, ...}
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "SweepSpec": "scaling.sweep.spec",
    "load_spec": "scaling.sweep.spec",
    "parse_spec": "scaling.sweep.spec",
    "expand": "scaling.sweep.grid",
    "plan_table": "scaling.sweep.plan",
    "launch": "scaling.sweep.launcher",
    "extend_folder": "scaling.sweep.extend",
    "resume": "scaling.sweep.launcher",
    "status": "scaling.sweep.control",
    "cancel": "scaling.sweep.control",
    "write_store": "scaling.sweep.launcher",
    "Progress": "scaling.sweep.progress",
    "SweepLocked": "scaling.sweep.lock",
    "SweepLock": "scaling.sweep.lock",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # lazy: `import scaling.sweep.spec` must not import submitit or a backend
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'scaling.sweep' has no attribute {name!r}")
