"""Kaplan et al. (2020), "Scaling Laws for Neural Language Models" (arXiv:2001.08361).

N counts **non-embedding** parameters (sec. 2.1: "excluding all vocabulary and positional
embeddings"); C = 6 N D with that N; C_min in PF-days (1 PF-day = 8.64e19 FLOPs). Losses are in
nats per token on WebText2 with GPT-2's tokenizer, so they do not compare with Chinchilla's
MassiveText losses in absolute terms.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.laws.base import Allocation, check_budget

CITATION = "Kaplan et al. 2020, Scaling Laws for Neural Language Models, arXiv:2001.08361"
PF_DAY = 1e15 * 86400.0  # FLOPs in one petaflop/s-day

# eq. 1.1: L(N) = (N_c / N)^alpha_N
ALPHA_N = 0.076
N_C = 8.8e13
# eq. 1.2: L(D) = (D_c / D)^alpha_D
ALPHA_D = 0.095
D_C = 5.4e13
# eq. 1.3: L(C_min) = (C_c / C_min)^alpha_C, C in PF-days
ALPHA_C_MIN = 0.050
C_C_MIN = 3.1e8
# eq. 1.5 with its own fit (Table 2): L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D
JOINT_ALPHA_N = 0.076
JOINT_ALPHA_D = 0.103
JOINT_N_C = 6.4e13
JOINT_D_C = 1.8e13
# sec. 6.1, Figure 14 (left): N_opt = 1.3e9 (C_min / PF-day)^0.73 (eq. 1.7: N ~ C^0.73)
N_OPT_COEF = 1.3e9
N_OPT_EXPONENT = 0.73


@dataclass(frozen=True)
class KaplanLaw:
    """Kaplan's laws. :meth:`loss` is the joint ``L(N, D)`` (eq. 1.5); the allocation follows
    the compute-efficient frontier ``N_opt = 1.3e9 C^0.73`` (C in PF-days) with ``D = C / (6 N)``.
    """

    name: str = "kaplan"
    citation: str = f"{CITATION}; L(N,D) eq. 1.5 (Table 2), N_opt(C) sec. 6.1 / Figure 14"
    param_convention: str = "non_embedding"
    flops_convention: str = "6N_non_embedding"

    def loss(self, params: float, tokens: float) -> float:
        x = (JOINT_N_C / params) ** (JOINT_ALPHA_N / JOINT_ALPHA_D) + JOINT_D_C / tokens
        return x**JOINT_ALPHA_D

    def loss_n(self, params: float) -> float:
        """Eq. 1.1: converged loss of a model with ``params`` non-embedding parameters."""
        return (N_C / params) ** ALPHA_N

    def loss_d(self, tokens: float) -> float:
        """Eq. 1.2: loss of a large model trained with early stopping on ``tokens``."""
        return (D_C / tokens) ** ALPHA_D

    def loss_c(self, flops: float) -> float:
        """Eq. 1.3: loss on the compute-efficient frontier at ``flops`` (converted to PF-days)."""
        return (C_C_MIN / (check_budget(flops) / PF_DAY)) ** ALPHA_C_MIN

    def optimal_params(self, flops: float) -> float:
        return N_OPT_COEF * (check_budget(flops) / PF_DAY) ** N_OPT_EXPONENT

    def optimal_allocation(self, flops: float) -> Allocation:
        c = check_budget(flops)
        n = self.optimal_params(c)
        return Allocation(flops=c, params=n, tokens=c / (6.0 * n))

    @property
    def a(self) -> float:
        return N_OPT_EXPONENT

    @property
    def b(self) -> float:
        return 1.0 - N_OPT_EXPONENT


KAPLAN = KaplanLaw()
