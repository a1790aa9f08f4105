"""scaling: plan, run, fit and align compute-optimal language models.

``scaling.load_runs(path)`` reads a results store into a pandas DataFrame. The math modules
(shapes, flops, hardware, laws, fit, planner) import no torch, submitit or plotly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    import pandas as pd


def load_runs(path: Any, curves: bool = False, columns: Any = None) -> pd.DataFrame:
    """One row per run of the results store at ``path`` (see :func:`scaling.store.load_runs`)."""
    from scaling.store import load_runs as _load

    return _load(path, curves=curves, columns=columns)


__all__ = ["__version__", "load_runs"]
