"""Llama 3 (Grattafiori et al. 2024, "The Llama 3 Herd of Models", arXiv:2407.21783), sec. 3.2.1.

IsoFLOP minima between 6e18 and 1e22 FLOPs fit ``D*(C) = A C^alpha`` with (alpha, A) = (0.53, 0.29)
as printed. Those two-digit constants give 10.5T tokens at 3.8e25 FLOPs, while the paper's own
extrapolation says 16.55T tokens (and a 402B model). ``alpha = 0.537`` is the exponent the
paper's figure supports to three digits; ``A`` is then fixed so that ``D*(3.8e25) = 16.55e12``,
the paper's extrapolation. N* = C / (6 D*). The paper fits no loss in N and D.
"""

from __future__ import annotations

from scaling.laws.base import PowerLawAllocation

CITATION = "Llama Team 2024, The Llama 3 Herd of Models, arXiv:2407.21783, sec. 3.2.1"

ALPHA_PRINTED = 0.53
A_PRINTED = 0.29
ALPHA = 0.537
ANCHOR_FLOPS = 3.8e25  # the flagship budget (sec. 3.2.1)
ANCHOR_TOKENS = 16.55e12  # "402B parameters on 16.55T tokens"
A = ANCHOR_TOKENS / ANCHOR_FLOPS**ALPHA  # = 0.3037

LLAMA3 = PowerLawAllocation(
    name="llama3",
    citation=f"{CITATION}; alpha=0.537, A anchored at 16.55T tokens for 3.8e25 FLOPs",
    k=A,
    exponent=ALPHA,
    on="tokens",
)

LLAMA3_ROUNDED = PowerLawAllocation(
    name="llama3-rounded",
    citation=f"{CITATION}; (alpha, A) = (0.53, 0.29) as printed",
    k=A_PRINTED,
    exponent=ALPHA_PRINTED,
    on="tokens",
)
