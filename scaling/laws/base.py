"""The law interface: every published law and every fitted law answers the same questions.

A law maps model size N and training tokens D to a loss, and a compute budget C to the
compute-optimal allocation (N*, D*). Laws that only give an allocation (Hoffmann approaches 1
and 2, Llama 3) return ``nan`` from :meth:`Law.loss`; laws that only give a loss may solve the
allocation numerically under ``C = 6 N D``.

``param_convention`` says what N counts: ``"total"`` (Chinchilla) or ``"non_embedding"``
(Kaplan). The planner converts shapes accordingly. ``flops_convention`` says how C was counted
(``"6N"`` unless a paper says otherwise).

Pure: the standard library only (``math``), so ``scaling plan`` starts fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

NAN = float("nan")


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


def has_loss(law: Law) -> bool:
    """Whether ``law`` predicts a loss (probed at a mid-sized point)."""
    return math.isfinite(law.loss(1e9, 2e10))


def check_budget(flops: float, field: str = "flops") -> float:
    f = float(flops)
    if not (f > 0 and math.isfinite(f)):
        raise ValueError(f"{field}={flops!r}: must be a positive finite number of FLOPs")
    return f


# ---- small pure-Python solvers (no scipy on the planning path) ------------------------------

_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0


def golden_min(f: Callable[[float], float], lo: float, hi: float, tol: float = 1e-10) -> float:
    """The minimiser of a unimodal ``f`` on ``[lo, hi]`` (golden-section search)."""
    a, b = lo, hi
    c, d = b - _INV_PHI * (b - a), a + _INV_PHI * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol * max(1.0, abs(a) + abs(b)):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - _INV_PHI * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _INV_PHI * (b - a)
            fd = f(d)
    return (a + b) / 2.0


def bisect(f: Callable[[float], float], lo: float, hi: float, tol: float = 1e-12) -> float:
    """A root of a monotone ``f`` with a sign change on ``[lo, hi]``."""
    flo = f(lo)
    if flo == 0:
        return lo
    if (flo > 0) == (f(hi) > 0):
        raise ValueError("no sign change on the bracket")
    for _ in range(200):
        mid = (lo + hi) / 2.0
        fm = f(mid)
        if fm == 0 or hi - lo < tol * max(1.0, abs(mid)):
            return mid
        if (fm > 0) == (flo > 0):
            lo, flo = mid, fm
        else:
            hi = mid
    return (lo + hi) / 2.0


def numeric_allocation(
    loss: Callable[[float, float], float], flops: float, k: float = 6.0, n_grid: int = 121
) -> Allocation:
    """``argmin_N L(N, C / (k N))`` for laws given only as a loss (``C = k N D``).

    ``ln N`` spans 1e2 to ``C / (k * 1e2)`` (at least 100 tokens); an ``n_grid``-point grid
    brackets the smallest loss and golden-section search on ``ln N`` finishes inside the
    bracket. When the grid's smallest loss is at either end the law prefers an extreme, has no
    interior optimum there, and N*, D* are nan.
    """
    c = check_budget(flops)
    lo, hi = math.log(1e2), math.log(max(c / (k * 1e2), 1e3))

    def f(ln_n: float) -> float:
        n = math.exp(ln_n)
        v = float(loss(n, c / (k * n)))
        return v if math.isfinite(v) else math.inf

    step = (hi - lo) / (n_grid - 1)
    grid = [lo + i * step for i in range(n_grid)]
    values = [f(x) for x in grid]
    i = min(range(n_grid), key=values.__getitem__)
    if i in (0, n_grid - 1) or not math.isfinite(values[i]):
        return Allocation(flops=c, params=NAN, tokens=NAN)
    n = math.exp(golden_min(f, grid[i - 1], grid[i + 1], tol=1e-12))
    return Allocation(flops=c, params=n, tokens=c / (k * n))


def chinchilla_optimum(A: Any, B: Any, alpha: Any, beta: Any) -> tuple[Any, Any, Any]:
    """``(G, a, b)`` of Hoffmann et al. (2022, eq. 4): ``G = (alpha A / (beta B))^(1/(alpha+beta))``,
    ``a = beta / (alpha+beta)``, ``b = alpha / (alpha+beta)``. Floats or numpy arrays alike."""
    s = alpha + beta
    return (alpha * A / (beta * B)) ** (1.0 / s), beta / s, alpha / s


def chinchilla_allocation(A: Any, B: Any, alpha: Any, beta: Any, flops: float) -> tuple[Any, Any]:
    """``N* = G (C/6)^a`` and ``D* = C / (6 N*)`` (Hoffmann et al. 2022, eq. 4, ``C = 6 N D``)."""
    g, a, _ = chinchilla_optimum(A, B, alpha, beta)
    n = g * (flops / 6.0) ** a
    return n, flops / (6.0 * n)


def local_exponent(law: Law, c_lo: float, c_hi: float) -> float:
    """``a = ln(N*(C_hi) / N*(C_lo)) / ln(C_hi / C_lo)``: the slope of ``ln N*`` in ``ln C`` of any law."""
    n_lo, n_hi = law.optimal_allocation(c_lo).params, law.optimal_allocation(c_hi).params
    return math.log(n_hi / n_lo) / math.log(c_hi / c_lo)


def effective_repeated_tokens(tokens: float, unique_tokens: float, r_star: float) -> float:
    """Muennighoff et al. (2023, eq. 5): ``D' = U + U R* (1 - exp(-R / R*))``, ``R = D/U - 1``.

    The value of ``tokens`` seen when only ``unique_tokens`` exist and the rest are repeats.
    """
    u = float(unique_tokens)
    r = max(float(tokens) / u - 1.0, 0.0)
    if r == 0.0:
        return float(tokens)
    return u + u * r_star * (1.0 - math.exp(-r / r_star))


# ---- the two shapes most published laws take ---------------------------------------------------


@dataclass(frozen=True)
class ParametricLaw:
    """``L(N, D) = E + A / N^alpha + B / D^beta`` (Hoffmann et al. 2022, eq. 2).

    Compute-optimal allocation under ``C = 6 N D`` (Hoffmann et al. 2022, eq. 4):
    ``N* = G (C/6)^a``, ``D* = G^-1 (C/6)^b``, ``G = (alpha A / (beta B))^(1/(alpha+beta))``,
    ``a = beta/(alpha+beta)``, ``b = alpha/(alpha+beta)``.
    """

    name: str
    citation: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    param_convention: str = "total"
    flops_convention: str = "6N"

    def loss(self, params: float, tokens: float) -> float:
        return self.E + self.A / params**self.alpha + self.B / tokens**self.beta

    @property
    def G(self) -> float:
        return chinchilla_optimum(self.A, self.B, self.alpha, self.beta)[0]

    @property
    def a(self) -> float:
        """Exponent of N* in C."""
        return chinchilla_optimum(self.A, self.B, self.alpha, self.beta)[1]

    @property
    def b(self) -> float:
        """Exponent of D* in C."""
        return chinchilla_optimum(self.A, self.B, self.alpha, self.beta)[2]

    def optimal_allocation(self, flops: float) -> Allocation:
        c = check_budget(flops)
        n, d = chinchilla_allocation(self.A, self.B, self.alpha, self.beta, c)
        return Allocation(flops=c, params=n, tokens=d)

    def optimal_loss(self, flops: float) -> float:
        al = self.optimal_allocation(flops)
        return self.loss(al.params, al.tokens)

    def tokens_for_loss(self, params: float, target: float) -> float:
        """The D with ``L(params, D) = target`` (inf when ``target`` is out of reach at this N)."""
        gap = target - self.E - self.A / params**self.alpha
        return (self.B / gap) ** (1.0 / self.beta) if gap > 0 else math.inf


@dataclass(frozen=True)
class PowerLawAllocation:
    """An allocation-only law ``N*(C) = k C^a``, ``D*(C) = C / (6 N*)`` (no loss: ``nan``).

    Hoffmann et al.'s approaches 1 and 2 and Llama 3's approach 2 publish the allocation only.
    Set ``on="tokens"`` when the paper fits ``D*(C) = k C^a`` instead (Llama 3).
    """

    name: str
    citation: str
    k: float
    exponent: float
    on: str = "params"  # which of N* or D* the power law gives
    param_convention: str = "total"
    flops_convention: str = "6N"

    def loss(self, params: float, tokens: float) -> float:
        return NAN

    def optimal_allocation(self, flops: float) -> Allocation:
        c = check_budget(flops)
        x = self.k * c**self.exponent
        if self.on == "tokens":
            return Allocation(flops=c, params=c / (6.0 * x), tokens=x)
        return Allocation(flops=c, params=x, tokens=c / (6.0 * x))

    @property
    def a(self) -> float:
        return self.exponent if self.on == "params" else 1.0 - self.exponent

    @property
    def b(self) -> float:
        return 1.0 - self.a
