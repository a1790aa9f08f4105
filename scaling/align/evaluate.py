"""Held-out evaluation of a model before and after each stage.

For held-out prompt/completion records and prompt/chosen/rejected records:

* **completion loss**: mean negative log-likelihood per completion token (the prompt is context
  only), ``L = -sum log p(y_t | x, y_<t) / sum |y|``; **perplexity** ``exp(L)``.
* **log-likelihood preference accuracy**: the fraction of pairs with
  ``log p(chosen | x) > log p(rejected | x)`` (sequence log-probabilities, summed over tokens).
* **implicit-reward preference accuracy** (Rafailov et al. 2023, eq. 5): the reward of a policy
  against a reference is ``r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))``; accuracy is the
  fraction with ``r(x, chosen) > r(x, rejected)``. Each stage is scored against the model it
  started from (DPO against its reference, the SFT model; SFT against the base model; the base
  against itself, where every reward is 0).

Ties count one half, so a model that cannot tell the two apart scores 0.5. Completions are
tokenized as TRL does: the prompt alone and prompt + completion (+ EOS for plain text), the
completion starting where the two token sequences diverge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scaling.align.data import Record

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _ids(tok: PreTrainedTokenizerBase, messages: list, generation_prompt: bool) -> list[int]:
    out = tok.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True, return_dict=True)
    return list(out["input_ids"])


def encode(tok: PreTrainedTokenizerBase, prompt: Any, completion: Any) -> tuple[list[int], int]:
    """Token ids of prompt + completion and the number of prompt tokens (TRL's tokenization)."""
    if isinstance(prompt, list):
        p = _ids(tok, prompt, True)
        full = _ids(tok, prompt + completion, False)
    else:
        eos = tok.eos_token or ""
        text = completion if completion.endswith(eos) else completion + eos
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        full = tok(prompt + text, add_special_tokens=False)["input_ids"]
    return full, _common_prefix(p, full)


def completion_logps(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[Any, Any]],
    *,
    batch_size: int = 16,
    max_length: int = 256,
) -> tuple[list[float], list[int]]:
    """Summed log-probability of each completion given its prompt, and its token count."""
    import torch

    enc = []
    for prompt, completion in pairs:
        ids, n_prompt = encode(tok, prompt, completion)
        enc.append((ids[:max_length], n_prompt))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    device = next(model.parameters()).device
    logps: list[float] = []
    counts: list[int] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(enc), batch_size):
            batch = enc[i : i + batch_size]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attn = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.bool)  # completion tokens
            for j, (ids, n_prompt) in enumerate(batch):
                input_ids[j, : len(ids)] = torch.tensor(ids)
                attn[j, : len(ids)] = 1
                mask[j, n_prompt : len(ids)] = True
            input_ids, attn, mask = input_ids.to(device), attn.to(device), mask.to(device)
            logits = model(input_ids=input_ids, attention_mask=attn, use_cache=False).logits.float()
            lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
            m = mask[:, 1:]
            logps.extend((lp * m).sum(-1).tolist())
            counts.extend(m.sum(-1).tolist())
    model.train(was_training)
    return logps, counts


@dataclass
class StageScores:
    """Per-record log-probabilities of one model on the held-out sets."""

    completion_logps: list[float]
    completion_tokens: list[int]
    chosen_logps: list[float]
    rejected_logps: list[float]

    @property
    def completion_loss(self) -> float:
        n = sum(self.completion_tokens)
        return -sum(self.completion_logps) / n if n else float("nan")


def _accuracy(margins: Sequence[float]) -> float:
    if not margins:
        return float("nan")
    return sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins) / len(margins)


def score(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    sft_eval: Sequence[Record],
    dpo_eval: Sequence[Record],
    *,
    batch_size: int = 16,
    max_length: int = 256,
) -> StageScores:
    kw = {"batch_size": batch_size, "max_length": max_length}
    c_lp, c_n = completion_logps(model, tok, [(r["prompt"], r["completion"]) for r in sft_eval], **kw)
    ch, _ = completion_logps(model, tok, [(r["prompt"], r["chosen"]) for r in dpo_eval], **kw)
    rj, _ = completion_logps(model, tok, [(r["prompt"], r["rejected"]) for r in dpo_eval], **kw)
    return StageScores(c_lp, c_n, ch, rj)


def stage_row(scores: StageScores, reference: StageScores | None, beta: float) -> dict[str, Any]:
    """Held-out likelihood columns of one stage: answer loss, preference accuracies, implicit rewards."""
    import math

    loss = scores.completion_loss
    loglik = [c - r for c, r in zip(scores.chosen_logps, scores.rejected_logps, strict=True)]
    ref = reference or scores
    chosen_r = [beta * (a - b) for a, b in zip(scores.chosen_logps, ref.chosen_logps, strict=True)]
    rejected_r = [beta * (a - b) for a, b in zip(scores.rejected_logps, ref.rejected_logps, strict=True)]
    margins = [c - r for c, r in zip(chosen_r, rejected_r, strict=True)]
    n = max(1, len(margins))
    return {
        "completion_loss": loss,
        "perplexity": math.exp(loss) if loss == loss else float("nan"),
        "pref_acc_reward": _accuracy(margins),
        "pref_acc_loglik": _accuracy(loglik),
        "reward_chosen": sum(chosen_r) / n,
        "reward_rejected": sum(rejected_r) / n,
        "reward_margin": sum(margins) / n,
        "n_completions": len(scores.completion_logps),
        "n_pairs": len(margins),
    }
