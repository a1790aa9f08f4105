"""Preference pairs whose rejected reply is the SFT model's own mistake.

The field labels comparisons of the policy's samples (Ouyang et al. 2022, sec. 3.2): the wrong
replies a reward model has to rank low are the ones the policy gives. Here the label comes from
the task's exact answer: for each built-in pair, one reply is sampled from the SFT model at the
RL temperature (seeded); where it is wrong (not the answer, case and punctuation aside) it becomes
the rejected reply, and where it is right the task's own wrong reply stays. The chosen reply is
always the exact answer.

A reward model trained only on the built-in wrong replies (other words of the passage, corpus
words) never sees the broken words a small policy samples, scores them as it likes, and RL against
it climbs on them while held-out accuracy falls; trained on the policy's own mistakes it ranks
them low.

Written to ``OUT/pairs/``: ``<set>.jsonl`` (the records the reward models and DPO train and are
scored on) and ``info.json`` (what they were sampled from, and the share of sampled rejects).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scaling.align.data import Record, write_jsonl
from scaling.align.tasks import Task, is_correct
from scaling.store import atomic_write_json, read_json, read_jsonl

SETS = {"pref_train": "pref", "judge_train": "judge", "pref_eval": "eval"}  # record set: task split


def _usable(text: str) -> bool:
    """A sample that tokenizes after the prompt as it was sampled: not empty, and no line break or
    second space at its start (those merge with the assistant header's line break in the template,
    so the prompt would no longer be a prefix of prompt + reply)."""
    return bool(text.strip()) and (not text[:1].isspace() or text[:1] == " " and not text[1:2].isspace())


def _record(task: Task, rejected: str) -> Record:
    rec = task.preference_record()
    rec["rejected"] = [{"role": "assistant", "content": rejected}]
    return rec


def sampled_pairs(
    model_dir: Path, splits: dict[str, list[Task]], out: Path, *, temperature: float, max_new_tokens: int,
    seed: int = 0,
) -> tuple[dict[str, list[Record]], dict[str, Any]]:
    """The pair sets (``SETS``) with the SFT model's wrong samples as rejected replies, and their
    ``info``; reused from ``out`` when sampled before from the same model, tasks and settings."""
    from scaling.align.model import weights_fingerprint

    spec = {"model": str(model_dir), "weights": weights_fingerprint(model_dir), "temperature": temperature,
            "max_new_tokens": max_new_tokens, "seed": seed,
            "tasks": {name: [t.instruction for t in splits[split]] for name, split in SETS.items()}}
    info = read_json(out / "info.json")
    if info is not None and info.get("spec") == spec and all((out / f"{n}.jsonl").exists() for n in SETS):
        return {n: read_jsonl(out / f"{n}.jsonl") for n in SETS}, info
    from scaling.align.compare import generate_replies
    from scaling.align.model import load_model, load_tokenizer

    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    sets: dict[str, list[Record]] = {}
    share: dict[str, float] = {}
    for i, (name, split) in enumerate(SETS.items()):
        tasks = splits[split]
        replies = generate_replies(model, tok, [t.prompt() for t in tasks], max_new_tokens=max_new_tokens,
                                   batch_size=64, temperature=temperature, seed=seed + i)
        wrong = [_usable(r.text) and not is_correct(t, r.text) for t, r in zip(tasks, replies, strict=True)]
        sets[name] = [_record(t, r.text if w else t.wrong) for t, r, w in zip(tasks, replies, wrong, strict=True)]
        share[name] = sum(wrong) / max(len(wrong), 1)
    out.mkdir(parents=True, exist_ok=True)
    for name, records in sets.items():
        write_jsonl(out / f"{name}.jsonl", records)
    info = {"source": f"rejected: the SFT model's wrong samples at temperature {temperature} ({out})",
            "sampled_share": share, "spec": spec}
    atomic_write_json(out / "info.json", info)  # last: the pairs above are complete when it exists
    return sets, info
