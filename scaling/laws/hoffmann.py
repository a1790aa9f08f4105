"""Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models" (Chinchilla).

Three approaches, three answers at the Gopher budget C = 5.76e23 FLOPs:

* Approach 3, the parametric fit ``L = E + A/N^alpha + B/D^beta`` (section 3.3, eq. 10).
  The rounded constants of the paper (E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28) give
  N* = 32.2B; the unrounded constants recovered from the paper's LaTeX source give 40.4B, which is
  the figure the paper reports (Figure 1, Table 2). Rounded constants do not extrapolate.
* Approach 1, minimum over training curves: ``N* ~ C^0.50`` (Table 2). The paper's Table 3 lists
  the allocation it implies for nine sizes (400M at 1.92e19 FLOPs ... 10T at 1.30e28); a
  least-squares line through ``ln N`` vs ``ln C`` of those rows gives ``N* = 0.09916 C^0.4981``
  (67.8B at 5.76e23; the table says 67B).
* Approach 2, IsoFLOP profiles: ``N* ~ C^0.49`` (Table 2) and 63B parameters at the Gopher budget
  (Figure 3 caption); the coefficient is fixed by that point.

N counts all parameters (embeddings included); C = 6 N D.
"""

from __future__ import annotations

import math

from scaling.laws.base import ParametricLaw, PowerLawAllocation

CITATION = "Hoffmann et al. 2022, Training Compute-Optimal Large Language Models, arXiv:2203.15556"

# Approach 3, unrounded: the values in the paper's LaTeX source (eq. 10 prints them rounded).
E_UNROUNDED = 1.69337368
A_UNROUNDED = 406.401018
B_UNROUNDED = 410.722827
ALPHA_UNROUNDED = 0.33917084
BETA_UNROUNDED = 0.2849083

# Approach 3 as printed: section 3.3, eq. 10 (E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28).
E_ROUNDED, A_ROUNDED, B_ROUNDED, ALPHA_ROUNDED, BETA_ROUNDED = 1.69, 406.4, 410.7, 0.34, 0.28

# Approach 1: least squares of ln N on ln C over Table 3's nine rows (exponent 0.50 in Table 2).
APPROACH1_K = 0.09915893
APPROACH1_EXPONENT = 0.4980987

# Approach 2: exponent a = 0.49 (Table 2); N* = 63e9 at the Gopher budget 5.76e23 (Figure 3).
APPROACH2_EXPONENT = 0.49
APPROACH2_ANCHOR_FLOPS = 5.76e23
APPROACH2_ANCHOR_PARAMS = 63e9
APPROACH2_K = APPROACH2_ANCHOR_PARAMS / APPROACH2_ANCHOR_FLOPS**APPROACH2_EXPONENT

CHINCHILLA = ParametricLaw(
    name="chinchilla",
    citation=f"{CITATION}; approach 3 (sec. 3.3, eq. 10), unrounded constants from the paper's source",
    E=E_UNROUNDED,
    A=A_UNROUNDED,
    B=B_UNROUNDED,
    alpha=ALPHA_UNROUNDED,
    beta=BETA_UNROUNDED,
)

CHINCHILLA_ROUNDED = ParametricLaw(
    name="chinchilla-rounded",
    citation=f"{CITATION}; approach 3 (sec. 3.3, eq. 10), constants as printed (rounded)",
    E=E_ROUNDED,
    A=A_ROUNDED,
    B=B_ROUNDED,
    alpha=ALPHA_ROUNDED,
    beta=BETA_ROUNDED,
)

CHINCHILLA_APPROACH1 = PowerLawAllocation(
    name="chinchilla-1",
    citation=f"{CITATION}; approach 1 (sec. 3.1), power law through Table 3",
    k=APPROACH1_K,
    exponent=APPROACH1_EXPONENT,
)

CHINCHILLA_APPROACH2 = PowerLawAllocation(
    name="chinchilla-2",
    citation=f"{CITATION}; approach 2 (sec. 3.2), a=0.49 (Table 2), 63B at 5.76e23 (Figure 3)",
    k=APPROACH2_K,
    exponent=APPROACH2_EXPONENT,
)


def tokens_per_param_rule(ratio: float = 20.0, param_convention: str = "total") -> PowerLawAllocation:
    """The rule of thumb ``D = ratio x N`` (20 tokens per parameter, read off Hoffmann Table 3).

    ``C = 6 N D = 6 ratio N^2`` so ``N* = (C / (6 ratio))^0.5``. With
    ``param_convention="non_embedding"`` N counts non-embedding parameters (small models, where
    embeddings dominate the total, follow a fixed ratio more closely on that count).
    """
    if not (ratio > 0 and math.isfinite(ratio)):
        raise ValueError(f"tokens per parameter={ratio!r}: must be a positive number")
    if param_convention not in ("total", "non_embedding"):
        raise ValueError(f"param_convention={param_convention!r}: use 'total' or 'non_embedding'")
    suffix = "" if param_convention == "total" else "-non-embedding"
    return PowerLawAllocation(
        name=f"tokens-per-param-{ratio:g}{suffix}",
        citation=f"{CITATION}; rule of thumb D = {ratio:g} N (Table 3)",
        k=(6.0 * ratio) ** -0.5,
        exponent=0.5,
        param_convention=param_convention,
        flops_convention="6N" if param_convention == "total" else "6N_non_embedding",
    )
