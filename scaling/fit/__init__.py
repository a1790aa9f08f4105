"""Fitting scaling laws: Chinchilla approaches 1, 2 and 3, Kaplan's forms, bootstrap, backtest.

``fit = Approach3().fit(frame)`` returns an immutable :class:`LawFit`; every fit is also a law
(:class:`scaling.laws.base.Law`) the planner can use, and :func:`load_law` reads one back from
the JSON that ``scaling fit --out`` writes. Pure: numpy, scipy, pandas.
"""

from __future__ import annotations

from pathlib import Path

# scipy.optimize is imported by the solvers that use it when they run, so importing the package
# (or running approaches 1 and 2) loads numpy and pandas only.
from scaling.fit.approach1 import Approach1
from scaling.fit.approach2 import Approach2
from scaling.fit.approach3 import Approach3
from scaling.fit.backtest import backtest
from scaling.fit.crossval import Predictor
from scaling.fit.data import Columns, FitData, FitRefusal, FitWarning, normalise, read_table
from scaling.fit.kaplan import KaplanFit
from scaling.fit.predictive import PredictiveLaw, is_predictive
from scaling.fit.results import LawFit


def load_law(path: str | Path, field: str = "--law") -> LawFit | PredictiveLaw:
    """The law saved at ``path`` (``to_dict()`` as JSON of a :class:`LawFit` or, from
    ``scaling fit --predict``, a :class:`PredictiveLaw`), usable as a law.

    Every problem is a :class:`~scaling.errors.UsageError` naming ``field`` and the file.
    """
    from scaling.errors import UsageError
    from scaling.store import read_json

    fix = "pass a file written by `scaling fit --out`"
    try:
        d = read_json(path)
    except ValueError as e:
        raise UsageError(f"{field}: {path} is not valid JSON ({e}); {fix}") from e
    if d is None:
        raise UsageError(f"{field}: {path} does not exist; {fix}")
    if not isinstance(d, dict) or "form" not in d or "params" not in d:
        raise UsageError(f"{field}: {path} is not a saved fit; {fix}")
    try:
        return PredictiveLaw.from_dict(d) if is_predictive(d) else LawFit.from_dict(d)
    except UsageError as e:
        raise UsageError(f"{field}: {path}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{field}: {path} is not a saved fit ({type(e).__name__}: {e}); {fix}") from None


__all__ = [
    "Approach1",
    "Approach2",
    "Approach3",
    "Columns",
    "FitData",
    "FitRefusal",
    "FitWarning",
    "KaplanFit",
    "LawFit",
    "PredictiveLaw",
    "Predictor",
    "backtest",
    "load_law",
    "normalise",
    "read_table",
]
