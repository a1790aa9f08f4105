"""DeepSeek LLM (DeepSeek-AI 2024, arXiv:2401.02954), sec. 3: hyperparameter and allocation laws.

DeepSeek measures model scale by the non-embedding FLOPs per token
``M = 72 n_layer d^2 + 6 n_layer d l_seq`` (eq. 2: attention included, vocabulary excluded) and
compute by ``C = M D``.

* Batch size and learning rate (eq. 1), fitted on a grid search of small models with compute
  budgets from 1e17 to 2e19 FLOPs and checked on models with a 1e20 budget (sec. 3.1, Figure 3):
  ``B_opt = 0.2920 C^0.3271`` (tokens) and ``eta_opt = 0.3118 C^-0.1250``.
  At C = 1e20: B = 1.017e6 tokens, eta = 9.86e-4.
* Allocation (eq. 4): ``M_opt = 0.1715 C^0.5243``, ``D_opt = 5.8316 C^0.4757``, fitted on IsoFLOP
  profiles with budgets from 1e17 to 3e20 FLOPs (sec. 3.2). As a :class:`Law` the allocation
  reports ``N = M_opt / 6``, the non-embedding parameter count whose ``6N`` equals ``M``
  when the attention term ``6 n_layer d l_seq`` is small.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.laws.base import NAN, Allocation, check_budget

CITATION = (
    "DeepSeek-AI 2024, DeepSeek LLM: Scaling Open-Source Language Models with Longtermism, arXiv:2401.02954"
)

# eq. 1 (sec. 3.1)
BATCH_COEF = 0.2920
BATCH_EXPONENT = 0.3271
LR_COEF = 0.3118
LR_EXPONENT = -0.1250
# Budgets of the hyperparameter grid search (fit) and of the check that followed (sec. 3.1).
HYPERPARAM_FIT_RANGE = (1e17, 2e19)
HYPERPARAM_CHECKED_MAX = 1e20
# eq. 4 (sec. 3.2)
M_COEF = 0.1715
M_EXPONENT = 0.5243
D_COEF = 5.8316
D_EXPONENT = 0.4757
ALLOCATION_FIT_RANGE = (1e17, 3e20)


def non_embedding_flops_per_token(layers: int, hidden: int, seq_len: int) -> float:
    """DeepSeek's model scale ``M = 72 n_layer d^2 + 6 n_layer d l_seq`` (eq. 2)."""
    return 72.0 * layers * hidden**2 + 6.0 * layers * hidden * seq_len


def deepseek_batch_tokens(flops: float) -> float:
    """Optimal batch size in tokens, ``B_opt = 0.2920 C^0.3271`` (eq. 1), C = M D."""
    return BATCH_COEF * check_budget(flops) ** BATCH_EXPONENT


def deepseek_lr(flops: float) -> float:
    """Optimal peak learning rate (AdamW, multi-step schedule), ``eta_opt = 0.3118 C^-0.1250`` (eq. 1)."""
    return LR_COEF * check_budget(flops) ** LR_EXPONENT


def hyperparams_extrapolated(flops: float) -> bool:
    """True outside the budgets the hyperparameter laws were fitted and checked on (1e17 to 1e20)."""
    c = check_budget(flops)
    return not (HYPERPARAM_FIT_RANGE[0] <= c <= HYPERPARAM_CHECKED_MAX)


@dataclass(frozen=True)
class DeepSeekAllocation:
    """The allocation of eq. 4 as a :class:`Law` (no loss: ``nan``)."""

    name: str = "deepseek"
    citation: str = f"{CITATION}; eq. 4, M_opt = 0.1715 C^0.5243, D_opt = 5.8316 C^0.4757"
    param_convention: str = "non_embedding"
    flops_convention: str = "deepseek_M"

    def loss(self, params: float, tokens: float) -> float:
        return NAN

    def optimal_flops_per_token(self, flops: float) -> float:
        return M_COEF * check_budget(flops) ** M_EXPONENT

    def optimal_allocation(self, flops: float) -> Allocation:
        c = check_budget(flops)
        d = D_COEF * c**D_EXPONENT
        return Allocation(flops=c, params=self.optimal_flops_per_token(c) / 6.0, tokens=d)

    @property
    def a(self) -> float:
        return M_EXPONENT

    @property
    def b(self) -> float:
        return D_EXPONENT


DEEPSEEK = DeepSeekAllocation()
