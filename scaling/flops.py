"""Training FLOPs per token under the conventions the literature uses, each named.

Training FLOPs are three times the forward FLOPs (backward = 2 x forward; Kaplan et al. 2020,
sec. 2.1; Hoffmann et al. 2022, App. F). All functions return FLOPs **per token** for one
training step (forward + backward) unless the name says otherwise.

Conventions (``FLOP_CONVENTIONS``):

* ``6N``: 6 x all parameters (Hoffmann et al. 2022, the usual ``C = 6 N D``).
* ``6N_non_embedding``: 6 x non-embedding parameters (Kaplan et al. 2020, eq. 2.1 without the
  context term).
* ``kaplan``: ``C = 6 N + 6 n_layer n_ctx d_attn`` with N non-embedding (Kaplan et al. 2020,
  Table 1: C_forward = 2N + 2 n_layer n_ctx d_attn).
* ``chinchilla``: Hoffmann et al. (2022) Appendix F, every matmul, softmax included, embeddings and
  output logits included.
* ``chinchilla_no_embedding``: the same without the embedding and final-logit terms; with this
  convention the ratios of Hoffmann's Table A4 come out (see tests).
* ``palm``: ``6 N + 12 L H Q T`` (Chowdhery et al. 2022, App. B; H heads, Q head size, T context).
* ``matmul``: every matrix multiply the model really does per token in training,
  ``6 (N_non_embedding + V d) + 6 L T d_q`` (causal attention counted in full, as a
  dense kernel computes it); the numerator of MFU.
"""

from __future__ import annotations

from typing import Literal

from scaling.shapes import ModelShape

FlopConvention = Literal[
    "6N", "6N_non_embedding", "kaplan", "chinchilla", "chinchilla_no_embedding", "palm", "matmul"
]
FLOP_CONVENTIONS: tuple[str, ...] = (
    "6N",
    "6N_non_embedding",
    "kaplan",
    "chinchilla",
    "chinchilla_no_embedding",
    "palm",
    "matmul",
)


def chinchilla_forward_flops_per_sequence(shape: ModelShape, *, embeddings: bool = True) -> float:
    """Forward FLOPs for one sequence of ``s = seq_len`` tokens (Hoffmann et al. 2022, App. F).

    embeddings ``2 s V d``; QKV ``2 s d (q_dim + 2 kv_dim)`` (``6 s d kq`` without GQA);
    logits ``2 s^2 kq``; softmax ``3 h s^2``; attention-over-values ``2 s^2 kq``; output projection
    ``2 s kq d``; FFN ``2 s x (FFN weights)`` (``4 s d ffw`` for a 2-matrix MLP); final logits
    ``2 s d V``. Norms, biases and nonlinearities are ignored, as in the paper.
    """
    s, d, V, L = shape.seq_len, shape.hidden, shape.vocab, shape.layers
    kq = shape.q_dim
    per_layer = (
        2 * s * d * (shape.q_dim + 2 * shape.kv_dim)  # QKV projections
        + 2 * s * s * kq  # QK^T logits
        + 3 * shape.heads * s * s  # softmax
        + 2 * s * s * kq  # attention x V
        + 2 * s * kq * d  # output projection
        + 2 * s * shape.mlp_params_per_layer  # FFN
    )
    total = L * per_layer
    if embeddings:
        total += 2 * s * V * d + 2 * s * d * V
    return float(total)


def flops_per_token(shape: ModelShape, convention: FlopConvention | str = "6N") -> float:
    """Training (forward + backward) FLOPs per token under ``convention``."""
    L, T = shape.layers, shape.seq_len
    if convention == "6N":
        return 6.0 * shape.params
    if convention == "6N_non_embedding":
        return 6.0 * shape.non_embedding_params
    if convention == "kaplan":
        return 6.0 * shape.non_embedding_params + 6.0 * L * T * shape.q_dim
    if convention == "chinchilla":
        return 3.0 * chinchilla_forward_flops_per_sequence(shape, embeddings=True) / T
    if convention == "chinchilla_no_embedding":
        return 3.0 * chinchilla_forward_flops_per_sequence(shape, embeddings=False) / T
    if convention == "palm":
        return 6.0 * shape.params + 12.0 * L * shape.heads * shape.d_head * T
    if convention == "matmul":
        return 6.0 * (shape.non_embedding_params + shape.vocab * shape.hidden) + 6.0 * L * T * shape.q_dim
    raise ValueError(f"flops convention={convention!r}: choose one of {', '.join(FLOP_CONVENTIONS)}")


def all_flops_per_token(shape: ModelShape) -> dict[str, float]:
    """Every convention at once, for ``scaling params`` and reports."""
    return {c: flops_per_token(shape, c) for c in FLOP_CONVENTIONS}


def training_flops(shape: ModelShape, tokens: float, convention: FlopConvention | str = "6N") -> float:
    """``C = flops_per_token x D``."""
    return flops_per_token(shape, convention) * float(tokens)


def tokens_for_flops(shape: ModelShape, flops: float, convention: FlopConvention | str = "6N") -> float:
    """Tokens ``D = C / flops_per_token`` that spend ``flops`` on ``shape``."""
    return float(flops) / flops_per_token(shape, convention)
