"""Muennighoff et al. (2023), "Scaling Data-Constrained Language Models" (arXiv:2305.16264).

With only ``U_D`` unique tokens, ``D`` training tokens are worth
``D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*))`` fresh ones, ``R_D = D / U_D - 1`` repetitions (eq. 5);
parameters beyond ``U_N``, the compute-optimal size for ``U_D`` tokens, are worth
``N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*))``, ``R_N = N / U_N - 1`` (eq. 6). The loss is the
Chinchilla form in N' and D' with the authors' C4 fit (App. A, eq. 17; the constants of their
released code, ``huggingface/datablations`` README "Parametric fit"):
``L(N=6.34e9, D=242e9, U_D=25e9) = 2.2256440889984477``.
N counts all parameters; C = 6 N D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scaling.laws.base import Allocation, ParametricLaw, effective_repeated_tokens, numeric_allocation

CITATION = "Muennighoff et al. 2023, Scaling Data-Constrained Language Models, arXiv:2305.16264"

# App. A: log-space constants of the single-epoch fit and the decay constants (eq. 17).
LOG_A = 6.255414
LOG_B = 7.3049974
LOG_E = 0.6254804
ALPHA = 0.3526596
BETA = 0.3526596
R_D_STAR = 15.387756
R_N_STAR = 5.309743


@dataclass(frozen=True)
class MuennighoffLaw(ParametricLaw):
    """The data-constrained law. :meth:`loss` assumes unique data (``U_D = D``); its allocation is
    Hoffmann's closed form; :meth:`loss_repeated` and :meth:`optimal_allocation_repeated` add the
    repetition terms."""

    r_d_star: float = R_D_STAR
    r_n_star: float = R_N_STAR

    def optimal_params_for_tokens(self, tokens: float) -> float:
        """``U_N``: the compute-optimal N for ``tokens`` unique tokens, ``(D G)^(beta/alpha) G``."""
        return (tokens * self.G) ** (self.beta / self.alpha) * self.G

    def loss_repeated(self, params: float, tokens: float, unique_tokens: float) -> float:
        """``L(N, D, U_D) = E + A / N'^alpha + B / D'^beta`` (eqs. 5, 6)."""
        u_d = min(float(unique_tokens), float(tokens))
        u_n = min(float(params), self.optimal_params_for_tokens(u_d))
        r_n = max(params / u_n - 1.0, 0.0)
        n_eff = u_n + u_n * self.r_n_star * (1.0 - math.exp(-r_n / self.r_n_star))
        d_eff = effective_repeated_tokens(tokens, u_d, self.r_d_star)
        return self.E + self.A / n_eff**self.alpha + self.B / d_eff**self.beta

    def optimal_allocation_repeated(self, flops: float, unique_tokens: float) -> Allocation:
        """``argmin_N L(N, C/(6N), U_D)``: the data-constrained optimum (golden section on ln N)."""
        return numeric_allocation(lambda n, d: self.loss_repeated(n, d, unique_tokens), flops)


MUENNIGHOFF = MuennighoffLaw(
    name="muennighoff",
    citation=f"{CITATION}; App. A eq. 17 (C4 fit)",
    E=math.exp(LOG_E),
    A=math.exp(LOG_A),
    B=math.exp(LOG_B),
    alpha=ALPHA,
    beta=BETA,
)
