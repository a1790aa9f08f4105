"""Besiroglu, Erdil, Barnett and You (Epoch AI, 2024), "Chinchilla Scaling: A replication attempt".

They re-fit Hoffmann et al.'s approach 3 on 240 (N, D, loss) points read off Hoffmann's Figure 4
(Huber loss with delta = 1e-3 in log space; the headline maximum-likelihood estimate, bootstrap
standard errors A 124.5, B 1293, E 0.026, alpha 0.015, beta 0.021) and found the original fit
inconsistent with its own data. N counts all parameters; C = 6 N D.
At C = 5.76e23 their law gives N* = 72.2B, D* = 1.33T (about 18 tokens per parameter).
"""

from __future__ import annotations

from scaling.laws.base import ParametricLaw

# arXiv:2404.10102, the headline maximum-likelihood point estimates.
E = 1.8169
A = 482.01
B = 2085.43
ALPHA = 0.3478
BETA = 0.3658

EPOCH = ParametricLaw(
    name="epoch",
    citation=(
        "Besiroglu et al. 2024, Chinchilla Scaling: A replication attempt, arXiv:2404.10102, "
        "maximum-likelihood estimate"
    ),
    E=E,
    A=A,
    B=B,
    alpha=ALPHA,
    beta=BETA,
)
