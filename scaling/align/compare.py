"""Base, SFT, RLHF and DPO side by side on held-out tasks, and the flags of a stage that did not learn.

For each stage's model, on the held-out prompts (greedy decoding, at most ``max_new_tokens``):

* **format-following rate**: the share of replies that end the turn within the budget and have
  the task's form (:func:`scaling.align.tasks.follows_format`);
* **accuracy**: the share of exact answers, with a percentile bootstrap 95% interval over prompts
  (Efron & Tibshirani 1993, ch. 13; ``n_boot`` resamples, seeded);
* **judge reward**: the mean score of the reply under the second reward model (trained on pairs
  disjoint from the first's);
* **accuracy on SFT's training tasks** (where SFT trained on built-in tasks): the same grading
  on as many of the tasks SFT was fine-tuned on, so a stage that did not learn shows whether it
  fits what it saw (memorised, not generalised) or not even that (under-trained);
* **KL from SFT**: ``sum_t KL(pi(.|x, y_<t) || pi_SFT(.|x, y_<t))`` over the positions of the
  stage's own reply ``y``, the full next-token distributions compared at each, averaged over
  prompts (0 for SFT itself);
* **SFT's headroom for RL** (where RLHF ran): on the held-out prompts SFT answers wrongly, the
  share where at least one of ``HEADROOM_SAMPLES`` replies sampled at the RL temperature is right.
  RL raises the probability of the replies the policy samples and the reward model prefers, so it
  can turn a wrong greedy answer right only where the right one is sampled at all;

beside the *trivial baseline* (:func:`scaling.align.tasks.trivial_answers`) scored the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scaling.align.tasks import Task, follows_format, is_correct, trivial_answers, trivial_reply

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

LN2 = math.log(2.0)
HEADROOM_SAMPLES = 8  # replies sampled per held-out prompt SFT gets wrong, for its RL headroom


@dataclass(frozen=True)
class Reply:
    text: str
    ended: bool  # the model ended its turn within the budget
    ids: tuple[int, ...]  # prompt + reply token ids (for the KL)
    n_prompt: int


def generate_replies(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: Sequence[list[dict[str, str]]],
    max_new_tokens: int = 12, batch_size: int = 32, temperature: float | None = None, seed: int = 0,
) -> list[Reply]:
    """Replies to chat prompts, batched with left padding; stops at the end of turn. Greedy, or
    sampled at ``temperature`` (seeded with ``seed``)."""
    import torch

    from scaling.align.model import stop_ids

    if temperature:
        torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature else {"do_sample": False}
    stops = stop_ids(tok)
    device = next(model.parameters()).device
    model.eval()
    out: list[Reply] = []
    for i in range(0, len(prompts), batch_size):
        ids = [list(tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
               for p in prompts[i : i + batch_size]]
        width = max(map(len, ids))
        x = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
        attn = torch.zeros_like(x)
        for j, row in enumerate(ids):
            x[j, width - len(row) :] = torch.tensor(row)
            attn[j, width - len(row) :] = 1
        with torch.no_grad():
            y = model.generate(x.to(device), attention_mask=attn.to(device), max_new_tokens=max_new_tokens,
                               eos_token_id=stops, pad_token_id=tok.pad_token_id, **sampling)
        for j, row in enumerate(ids):
            new = y[j, width:].tolist()
            end = next((k for k, t in enumerate(new) if t in stops), None)
            reply = new[:end] if end is not None else new
            out.append(Reply(tok.decode(reply, skip_special_tokens=True), end is not None,
                             tuple(row + reply), len(row)))
    return out


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def kl_from(model: PreTrainedModel, reference: PreTrainedModel, replies: Sequence[Reply]) -> float:
    """Mean over replies of the summed per-position KL(model || reference) on the reply's tokens."""
    import torch

    if not replies:
        return float("nan")
    total = 0.0
    with torch.no_grad():
        for r in replies:
            n = len(r.ids) - r.n_prompt
            if n <= 0:
                continue
            x = torch.tensor([r.ids], device=next(model.parameters()).device)
            lp = torch.log_softmax(model(input_ids=x).logits[0, r.n_prompt - 1 : -1].float(), -1)
            lq = torch.log_softmax(reference(input_ids=x).logits[0, r.n_prompt - 1 : -1].float(), -1)
            total += float((lp.exp() * (lp - lq)).sum())
    return total / len(replies)


def grade(tasks: Sequence[Task], replies: Sequence[str], ended: Sequence[bool], seed: int = 0) -> dict[str, Any]:
    """Format rate and accuracy (with its bootstrap interval), overall and per task kind, and each
    task's correctness (``correct``, for the paired comparisons)."""
    fmt = [float(e and follows_format(t, r)) for t, r, e in zip(tasks, replies, ended, strict=True)]
    acc = [float(is_correct(t, r)) for t, r in zip(tasks, replies, strict=True)]
    n = max(1, len(tasks))
    out: dict[str, Any] = {"format_rate": sum(fmt) / n, "accuracy": sum(acc) / n,
                           "accuracy_ci": list(bootstrap_ci(acc, seed=seed)), "n": len(tasks), "correct": acc}
    out["by_kind"] = {k: sum(a for a, t in zip(acc, tasks, strict=True) if t.kind == k)
                      / sum(1 for t in tasks if t.kind == k) for k in sorted({t.kind for t in tasks})}
    return out


def accuracy_gain(row: dict[str, Any], over: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """``row``'s accuracy minus ``over``'s on the same held-out tasks, with a paired bootstrap 95%
    interval (the two resampled together, task by task: the mean of per-task differences)."""
    diff = [a - b for a, b in zip(row["correct"], over["correct"], strict=True)]
    return {"over": over["stage"], "gain": sum(diff) / max(1, len(diff)), "ci": list(bootstrap_ci(diff, seed=seed))}


def rl_headroom(model: PreTrainedModel, tok: PreTrainedTokenizerBase, tasks: Sequence[Task],
                correct: Sequence[float], temperature: float, max_new_tokens: int, seed: int = 0,
                k: int = HEADROOM_SAMPLES) -> dict[str, Any]:
    """On the tasks ``correct`` marks wrong (greedy), the share where one of ``k`` replies sampled
    at ``temperature`` is right (pass@k), and the share of sampled replies that are right."""
    wrong = [t for t, c in zip(tasks, correct, strict=True) if not c]
    out: dict[str, Any] = {"k": k, "temperature": temperature, "wrong": len(wrong), "covered": None,
                           "sampled_accuracy": None}
    if wrong:
        rep = generate_replies(model, tok, [t.prompt() for t in wrong for _ in range(k)],
                               max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
        hits = [is_correct(wrong[i // k], r.text) for i, r in enumerate(rep)]
        out["covered"] = sum(any(hits[i : i + k]) for i in range(0, len(hits), k)) / len(wrong)
        out["sampled_accuracy"] = sum(hits) / len(hits)
    return out


def headroom(row: dict[str, Any], sft: dict[str, Any]) -> str:
    """Why RL did not raise accuracy over SFT's, where SFT rarely samples the answers it misses."""
    h = sft.get("headroom") or {}
    if h.get("covered") is None:
        return ""
    return (f"; on the {h['wrong']} held-out prompts SFT answers wrongly, {h['k']} replies sampled at temperature "
            f"{h['temperature']:g} hold the right answer for only {h['covered']:.1%}: RL reinforces replies the "
            "policy samples, so it has little to turn right (a larger model, or tasks it sometimes gets right)")


def trivial_row(train: Sequence[Task], held_out: Sequence[Task], seed: int = 0) -> dict[str, Any]:
    """The trivial baseline on the held-out tasks: each kind's training answer that ignores the passage."""
    answers = trivial_answers(train)
    row = grade(held_out, [trivial_reply(t, answers) for t in held_out], [True] * len(held_out), seed)
    return {"stage": "trivial", **row, "answers": answers}


def learning_flags(rows: dict[str, dict[str, Any]], trivial: dict[str, Any] | None,
                   stages: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """A stage that did not learn, with the reason: SFT accuracy not above the trivial baseline
    (where ``gain`` is in the row: its paired 95% interval not above 0), format rate not above the
    base model's or held-out answer loss not below it; a reward model (or the judge) whose held-out
    pairwise accuracy interval reaches down to chance (0.5); DPO's held-out loss still within 1% of
    ln 2 (with an NLL term, ``dpo.sft_weight``: its held-out implicit reward margin not above 0); RL
    reward flat (the last quarter of steps no higher than the first); RLHF or DPO accuracy not
    above SFT's (the same paired interval, where given)."""
    flags: list[dict[str, str]] = []

    def flag(stage: str, reason: str) -> None:
        flags.append({"stage": stage, "reason": reason})

    def not_above(stage: str, row: dict[str, Any] | None, other: dict[str, Any] | None, name: str,
                  why: Callable[[dict[str, Any], dict[str, Any]], str] | None = None) -> None:
        """Flag ``row`` not above ``other``; ``why(row, other)`` adds the diagnosis to the reason."""
        if not (row and other and row.get("accuracy") is not None):
            return
        gain = row.get("gain")
        reason = None
        if gain and gain["over"] == other["stage"]:
            if gain["ci"][0] <= 0:
                reason = (f"held-out accuracy {row['accuracy']:.3f} not above {name} {other['accuracy']:.3f} "
                          f"(gain {gain['gain']:+.3f}, paired 95% CI [{gain['ci'][0]:+.3f}, {gain['ci'][1]:+.3f}])")
        elif row["accuracy"] <= other["accuracy"]:
            reason = f"held-out accuracy {row['accuracy']:.3f} not above {name} {other['accuracy']:.3f}"
        if reason is not None:
            flag(stage, reason + (why(row, other) if why else ""))

    sft, base = rows.get("sft"), rows.get("base")
    not_above("sft", sft, trivial, "the trivial baseline's", why=generalisation)
    if sft and base and sft.get("format_rate") is not None and sft["format_rate"] <= base["format_rate"]:
        flag("sft", f"format-following rate {sft['format_rate']:.3f} not above the base model's {base['format_rate']:.3f}")
    if sft and base and sft.get("completion_loss") is not None and not sft["completion_loss"] < base["completion_loss"]:
        flag("sft", f"held-out answer loss {sft['completion_loss']:.4f} not below the base model's {base['completion_loss']:.4f}")
    for name in ("reward", "judge"):
        res = stages.get(name)
        if res and res.get("eval_accuracy_ci") and res["eval_accuracy_ci"][0] <= 0.5:
            flag(name, f"held-out pairwise accuracy {res['eval_accuracy']:.3f} (95% CI from "
                       f"{res['eval_accuracy_ci'][0]:.3f}) is not above chance (0.5)")
    dpo = stages.get("dpo")
    if dpo and dpo.get("sft_weight"):  # the loss holds an NLL term: judge DPO's part by its implicit reward margin
        if dpo.get("eval_rewards_margins") is not None and not dpo["eval_rewards_margins"] > 0:
            flag("dpo", f"held-out implicit reward margin {dpo['eval_rewards_margins']:+.4f} is not above 0, "
                        "its value at the start")
    elif dpo and dpo.get("eval_loss") is not None and dpo["eval_loss"] >= 0.99 * LN2:
        flag("dpo", f"held-out DPO loss {dpo['eval_loss']:.4f} is not 1% below ln 2 = {LN2:.4f}, its value at the start")
    rl = stages.get("rlhf")
    if rl and rl.get("reward_first") is not None and rl["reward_last"] <= rl["reward_first"]:
        flag("rlhf", f"reward flat: {rl['reward_first']:+.4f} over the first quarter of steps, "
                     f"{rl['reward_last']:+.4f} over the last")
    not_above("rlhf", rows.get("rlhf"), sft, "SFT's", why=headroom)
    not_above("dpo", rows.get("dpo"), sft, "SFT's")
    return flags


def generalisation(row: dict[str, Any], trivial: dict[str, Any]) -> str:
    """Why a stage is not above the trivial baseline, from its accuracy on its own training tasks:
    memorised (that accuracy's bootstrap 95% interval above the baseline's held-out accuracy: it
    fits what it saw and does not carry the rule over) or under-trained (it does not fit even that)."""
    acc, ci = row.get("train_accuracy"), row.get("train_accuracy_ci")
    if acc is None or not ci:
        return ""
    if ci[0] > trivial["accuracy"]:
        return (f"; on its own training tasks it scores {acc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]: it memorised them "
                "without learning the rule (a larger model, or many more tasks)")
    return (f"; on its own training tasks it scores only {acc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]: under-trained "
            "(more steps or a higher learning rate)")


def reward_trend(metrics: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Mean RL reward over the first and the last quarter of the logged steps."""
    r = [m["reward"] for m in metrics if "reward" in m]
    if len(r) < 2:
        return {"reward_first": None, "reward_last": None}
    q = max(1, len(r) // 4)
    return {"reward_first": sum(r[:q]) / q, "reward_last": sum(r[-q:]) / q}


def _user_content(prompt: Any) -> str:
    return prompt[-1]["content"] if isinstance(prompt, list) else str(prompt)


def compare_stages(
    models: dict[str, Any], tok: PreTrainedTokenizerBase, prompts: Sequence[Any], answers: Sequence[str | None],
    data: Any, results: dict[str, dict[str, Any]], *, n_examples: int = 8, seed: int = 0,
    max_new_tokens: int = 12, beta: float = 0.1, max_length: int = 256, rl_temperature: float | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """The side-by-side table (module docstring), the reward models' held-out accuracy, the flags
    of stages that did not learn, and a few held-out prompts with every stage's reply; with
    ``rl_temperature`` (where RLHF ran), SFT's headroom for RL at that temperature."""
    from pathlib import Path

    from scaling.align.evaluate import score, stage_row
    from scaling.align.model import has_accelerator, load_model, match_eos
    from scaling.align.reward import pairwise_accuracy, reward_scores

    device = "cuda" if has_accelerator() else "cpu"
    tasks = data.eval_tasks  # the prompts are these tasks' (run.eval_prompts), every one of them
    seen = list((data.sft_tasks or [])[: len(prompts)]) if tasks is not None else []
    sft_eval, pref_eval = data.sets.get("sft_eval", []), data.sets.get("pref_eval", [])
    judge = None
    for name in ("reward", "judge"):
        if name in results:
            rm = match_eos(load_model(Path(results[name]["model"]), "reward"), tok).to(device)
            results[name].update(pairwise_accuracy(rm, tok, pref_eval, seed))
            log(f"{name}: held-out pairwise accuracy {results[name]['eval_accuracy']:.3f}, "
                f"margin {results[name]['eval_margin']:+.3f}")
            judge = rm if name == "judge" else judge
    reference = load_model(models["sft"]).to(device) if "sft" in models else None
    rows: dict[str, dict[str, Any]] = {}
    replies: dict[str, list[Reply]] = {}
    scores: dict[str, Any] = {}
    for stage, path in models.items():
        m = match_eos(load_model(path), tok).to(device)
        rep = generate_replies(m, tok, prompts, max_new_tokens=max_new_tokens)
        replies[stage] = rep
        scores[stage] = score(m, tok, sft_eval, pref_eval, max_length=max_length) if (sft_eval or pref_eval) else None
        ref_name = "base" if stage in ("base", "sft") else "sft" if "sft" in models else "base"
        row: dict[str, Any] = {"stage": stage, "model": str(path),
                               "wall_time": (results.get(stage) or {}).get("wall_time", 0.0)}
        if tasks is not None:
            row.update(grade(tasks, [r.text for r in rep], [r.ended for r in rep], seed))
        if seen:
            on_seen = generate_replies(m, tok, [t.prompt() for t in seen], max_new_tokens=max_new_tokens)
            g = grade(seen, [r.text for r in on_seen], [r.ended for r in on_seen], seed)
            row["train_accuracy"], row["train_accuracy_ci"] = g["accuracy"], g["accuracy_ci"]
        if stage == "sft" and rl_temperature and tasks is not None:
            h = row["headroom"] = rl_headroom(m, tok, tasks, row["correct"], rl_temperature, max_new_tokens, seed)
            if h["covered"] is not None:
                log(f"sft: headroom for RL: {h['covered']:.3f} of the {h['wrong']} held-out prompts it answers "
                    f"wrongly have the right answer among {h['k']} replies sampled at temperature {rl_temperature:g}")
        row["judge_reward"] = (sum(s := reward_scores(judge, tok, prompts, [r.text for r in rep])) / max(1, len(s))
                               if judge is not None else None)
        row["kl_from_sft"] = kl_from(m, reference, rep) if reference is not None else None
        if scores[stage] is not None:
            ref = scores.get(ref_name) if stage != "base" else None
            row.update(stage_row(scores[stage], ref, beta))
            row["reward_reference"] = ref_name if stage != "base" else "base"
        rows[stage] = row
        log(f"{stage}: " + ", ".join(f"{k} {row[k]:.3f}" for k in ("format_rate", "accuracy", "judge_reward", "kl_from_sft")
                                     if isinstance(row.get(k), float)))
    trivial = trivial_row(data.trivial_train, tasks, seed) if tasks is not None and data.trivial_train else None
    if "rlhf" in results:
        from scaling.store import read_jsonl

        results["rlhf"].update(reward_trend(read_jsonl(Path(results["rlhf"]["model"]).parent / "metrics.jsonl")))
    for stage, over in (("sft", trivial), ("rlhf", rows.get("sft")), ("dpo", rows.get("sft"))):
        if stage in rows and over is not None and "correct" in rows[stage]:
            rows[stage]["gain"] = accuracy_gain(rows[stage], over, seed)
    flags = learning_flags(rows, trivial, results)
    for row in [*rows.values(), *([trivial] if trivial else [])]:
        row.pop("correct", None)
    for row in rows.values():
        row["learned"] = row["stage"] == "base" or not any(f["stage"] == row["stage"] for f in flags)
    examples = [{"prompt": _user_content(prompts[i]), "answer": answers[i],
                 "kind": tasks[i].kind if tasks is not None else None,
                 "replies": {s: replies[s][i].text for s in replies},
                 "correct": {s: is_correct(tasks[i], replies[s][i].text) for s in replies} if tasks is not None else None}
                for i in range(min(n_examples, len(prompts)))]
    for f in flags:
        log(f"flag: {f['stage']} did not learn: {f['reason']}")
    return {"table": list(rows.values()), "trivial": trivial, "flags": flags,
            "learned": {k: not any(f["stage"] == k for f in flags) for k in results},
            "reward_models": {k: {x: results[k].get(x) for x in ("eval_accuracy", "eval_accuracy_ci", "eval_margin",
                                                                 "eval_pairs", "wall_time")}
                              for k in ("reward", "judge") if k in results},
            "examples": examples}


def _ci(row: dict[str, Any]) -> str:
    lo, hi = row.get("accuracy_ci") or (None, None)
    return f"{row['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{row['accuracy']:.3f}"


def _gain(row: dict[str, Any]) -> str:
    g = row["gain"]
    return f"{g['gain']:+.3f} vs {g['over']} [{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}]"


# (key, header, format) of the side-by-side table
TABLE_COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("stage", "stage", "{}"),
    ("format_rate", "format rate", "{:.3f}"),
    ("accuracy", "accuracy [95% CI]", _ci),
    ("gain", "accuracy gain [paired 95% CI]", _gain),
    ("train_accuracy", "on SFT's training tasks", "{:.3f}"),
    ("judge_reward", "judge reward", "{:+.3f}"),
    ("kl_from_sft", "KL from SFT", "{:.3f}"),
    ("completion_loss", "answer loss", "{:.3f}"),
    ("wall_time", "train s", "{:.0f}"),
    ("learned", "learned", lambda r: "yes" if r.get("learned") else "NO"),
)


def format_table(summary: dict[str, Any]) -> list[list[str]]:
    """The side-by-side table as rows of strings (header first), the trivial baseline last."""
    rows = [[label for _, label, _ in TABLE_COLUMNS]]
    for r in summary["table"] + ([summary["trivial"]] if summary.get("trivial") else []):
        cells = []
        for key, _, fmt in TABLE_COLUMNS:
            if key != "stage" and r.get(key) is None:
                cells.append("-")
            else:
                cells.append(fmt(r) if callable(fmt) else fmt.format(r[key]))
        rows.append(cells)
    return rows
