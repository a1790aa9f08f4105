"""The law interface: every published law and every fitted law answers the same questions.

A law maps model size N and training tokens D to a loss, and a compute budget C to the
compute-optimal allocation (N*, D*). Laws that only give an allocation (Hoffmann approaches 1
and 2, Llama 3) return ``nan`` from :meth:`Law.loss`; laws that only give a loss may solve the
allocation numerically under ``C = 6 N D``.

``param_convention`` says what N counts: ``"total"`` (Chinchilla) or ``"non_embedding"``
(Kaplan). The planner converts shapes accordingly. ``flops_convention`` says how C was counted
(``"6N"`` unless a paper says otherwise).

Pure: numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Allocation:
    """A compute-optimal allocation at budget ``flops``: ``N* x D*`` with ``C = 6 N* D*``."""

    flops: float
    params: float
    tokens: float

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params


@runtime_checkable
class Law(Protocol):
    name: str
    citation: str
    param_convention: str  # "total" | "non_embedding"
    flops_convention: str  # how C was counted, usually "6N"

    def loss(self, params: float, tokens: float) -> float:
        """Predicted final loss of a model of ``params`` trained on ``tokens`` (nan if the law has none)."""
        ...

    def optimal_allocation(self, flops: float) -> Allocation:
        """Compute-optimal N* and D* at budget ``flops``."""
        ...
