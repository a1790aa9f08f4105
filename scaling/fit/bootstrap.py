"""Non-parametric bootstrap: resample the points with replacement, refit, keep every estimate.

A resample is a weight vector of counts (how often each point was drawn), so every resample
refits the same points with different weights and thousands of refits run as one batch
(:func:`scaling.fit.optim.levenberg_marquardt`), each warm-started at the full-data optimum.
Seeded with ``numpy.random.default_rng(seed)``; resample ``i`` draws ``n`` indices uniformly.
"""

from __future__ import annotations

import numpy as np

MAX_BOOTSTRAP = 20_000
"""Most resamples a fit accepts: B x points counts are held at once (20,000 x 240 points: 38 MB)."""


def resample_counts(n: int, n_resamples: int, seed: int | None = 0) -> np.ndarray:
    """``(n_resamples, n)`` counts: row ``i`` counts how often each point was drawn in resample ``i``."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    return counts_from_indices(idx, n)


def counts_from_indices(indices: np.ndarray, n: int) -> np.ndarray:
    """Counts from explicit resample indices ``(B, n)`` (e.g. to replay a published bootstrap)."""
    indices = np.asarray(indices, dtype=np.int64)
    rows = np.repeat(np.arange(len(indices)), indices.shape[1])
    counts = np.zeros((len(indices), n))
    np.add.at(counts, (rows, indices.ravel()), 1.0)
    return counts


def percentile_ci(draws: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """``(2, k)`` percentile interval of each column."""
    return np.nanpercentile(draws, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
