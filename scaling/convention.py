"""How a study counts N and C: the value frames, fits, results and the report carry and check.

Two choices change every exponent a law reports:

* **parameters** (``ParamCount``): ``total`` counts every parameter (Hoffmann et al. 2022);
  ``non_embedding`` leaves out the token and position embeddings (Kaplan et al. 2020, sec. 2.1).
  At small scale the embeddings are most of the parameters, and the two counts give different
  compute-optimal exponents (Pearce & Song 2024).
* **FLOPs** (one of :data:`scaling.flops.FLOP_CONVENTIONS`): how the compute C of a run was
  counted, e.g. ``6N`` (``C = 6 N_total D``) or ``6N_non_embedding`` (``C = 6 N_non-emb D``).

A closed-form allocation such as Chinchilla's eq. 4 assumes ``C = 6 N D`` with N counted as the
law counts it: :meth:`Convention.six_nd` is that convention. Pure: the standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from scaling.errors import UsageError
from scaling.flops import FLOP_CONVENTIONS

ParamCount = Literal["total", "non_embedding"]
PARAM_COUNTS: tuple[str, ...] = ("total", "non_embedding")
# the store's result.json column that holds N under each count (scaling.store.load_runs)
N_COLUMN: dict[str, str] = {"total": "params", "non_embedding": "non_embedding_params"}
HEADLINE_CONVENTION = "total"
"""How ``scaling run``'s headline (backtest, summary, selection fallback) counts N: all parameters,
what one trains and serves, and the planner's default; both counts are fitted and kept."""


class ConventionMismatch(UsageError):
    """Two things that must count N (or C) the same way do not."""


@dataclass(frozen=True)
class Convention:
    """What N counts (``params``) and how C was counted (``flops``)."""

    params: ParamCount = "total"
    flops: str = "6N"

    def __post_init__(self) -> None:
        if self.params not in PARAM_COUNTS:
            raise UsageError(f"param_convention={self.params!r}: use one of {', '.join(PARAM_COUNTS)}")
        if self.flops not in FLOP_CONVENTIONS:
            raise UsageError(f"flops_convention={self.flops!r}: use one of {', '.join(FLOP_CONVENTIONS)}")

    @classmethod
    def six_nd(cls, params: str) -> Convention:
        """``C = 6 N D`` with N counted as ``params``: the convention of closed-form allocations."""
        return cls(params, "6N" if params == "total" else "6N_non_embedding")  # type: ignore[arg-type]

    @property
    def n_column(self) -> str:
        """The store's column that holds N under this count."""
        return N_COLUMN[self.params]

    @property
    def label(self) -> str:
        """``N total, C 6N``: short, for table cells and cards."""
        return f"N {self.params.replace('_', '-')}, C {self.flops}"

    def to_dict(self) -> dict[str, str]:
        return {"param_convention": self.params, "flops_convention": self.flops}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "fit") -> Convention:
        """Read ``param_convention`` and ``flops_convention``; both must be present and known."""
        missing = [k for k in ("param_convention", "flops_convention") if not d.get(k)]
        if missing:
            raise UsageError(f"{where}: no {' or '.join(missing)}; rewrite it with `scaling fit --out`")
        return cls(str(d["param_convention"]), str(d["flops_convention"]))  # type: ignore[arg-type]

    def check(self, other: Convention, what: str) -> None:
        """Raise :class:`ConventionMismatch` unless ``other`` counts N and C as this does."""
        if other != self:
            raise ConventionMismatch(f"{what}: counts {other.label}, expected {self.label}")
