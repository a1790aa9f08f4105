"""The report's alignment section, read from ``align/summary.json``: from a text completer to an
assistant, and RLHF beside DPO.

Blocks: the stages that did not learn (if any), the side-by-side table (format-following rate,
accuracy with its bootstrap 95% interval, its gain over the stage before with a paired interval, judge reward, KL from SFT, training time; the trivial
baseline last), the two reward models' held-out accuracy, and a panel of held-out prompts with
each stage's reply beside the correct answer (``sections/alignment.html.j2``; every text escaped
by the template). Summaries in the older base -> SFT -> DPO layout are shown as a plain table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scaling.report.blocks import Block, Details, Section, Table, Text, any_blocks, records_table
from scaling.report.data import Study

STAGE_LABEL = {"base": "base (pretrained)", "sft": "SFT", "rlhf": "RLHF (RLOO)", "dpo": "DPO", "trivial": "trivial baseline"}


def _ci(row: Mapping[str, Any]) -> str:
    ci = row.get("accuracy_ci")
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci, Sequence) and len(ci) == 2 and None not in ci else ""


def _gain(row: Mapping[str, Any]) -> str:
    g = row.get("gain")
    if not isinstance(g, Mapping) or not isinstance(g.get("ci"), Sequence):
        return ""
    over = STAGE_LABEL.get(str(g.get("over")), str(g.get("over")))
    return f"{g['gain']:+.3f} over {over} [{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}]"


def side_by_side(summ: Mapping[str, Any]) -> Table:
    rows = []
    for r in [*summ.get("table", []), *([summ["trivial"]] if summ.get("trivial") else [])]:
        learned = "" if r["stage"] in ("base", "trivial") else ("yes" if r.get("learned") else "NO")
        rows.append([STAGE_LABEL.get(r["stage"], r["stage"]), r.get("format_rate"), r.get("accuracy"), _ci(r),
                     _gain(r), r.get("train_accuracy"), r.get("judge_reward"), r.get("kl_from_sft"),
                     r.get("completion_loss"), r.get("wall_time"), learned])
    return Table(["stage", "format-following rate", "accuracy", "95% CI", "accuracy gain [paired 95% CI]",
                  "accuracy on SFT's training tasks", "judge reward", "KL from SFT", "answer loss (nats/token)",
                  "training s", "learned"], rows)


def reward_table(summ: Mapping[str, Any]) -> Table | None:
    rms = summ.get("reward_models") or {}
    if not rms:
        return None
    label = {"reward": "reward model (RLHF optimizes it)", "judge": "judge (disjoint pairs; scores every stage)"}
    rows = [[label.get(k, k), r.get("eval_accuracy"), _ci({"accuracy_ci": r.get("eval_accuracy_ci")}),
             r.get("eval_margin"), r.get("eval_pairs")] for k, r in rms.items()]
    return Table(["model", "held-out pairwise accuracy", "95% CI", "mean margin", "pairs"], rows)


def story(summ: Mapping[str, Any]) -> str:
    """One paragraph of what the numbers say (plain text; the template escapes it)."""
    t = {r["stage"]: r for r in summ.get("table", [])}
    parts = []
    base, sft = t.get("base", {}), t.get("sft", {})
    if base.get("format_rate") is not None and sft.get("format_rate") is not None:
        parts.append(f"The pretrained model only continues text: {100 * base['format_rate']:.0f}% of its replies to "
                     f"held-out tasks end the turn in the task's form; after SFT, {100 * sft['format_rate']:.0f}%.")
    triv = summ.get("trivial") or {}
    if sft.get("accuracy") is not None and triv.get("accuracy") is not None:
        parts.append(f"SFT answers {100 * sft['accuracy']:.1f}% exactly, against {100 * triv['accuracy']:.1f}% for "
                     "the trivial baseline (each task kind's most frequent answer label).")
        if sft.get("train_accuracy") is not None:
            parts.append(f"On the tasks it was fine-tuned on it answers {100 * sft['train_accuracy']:.1f}% exactly.")
    for name in ("rlhf", "dpo"):
        row = t.get(name)
        if row and row.get("accuracy") is not None and sft.get("accuracy") is not None:
            parts.append(f"{STAGE_LABEL[name]} from the same SFT model: {100 * row['accuracy']:.1f}% "
                         f"({'above' if row['accuracy'] > sft['accuracy'] else 'not above'} SFT's), "
                         f"KL from SFT {row.get('kl_from_sft') or 0:.3f} nats.")
    return " ".join(parts)


def examples(summ: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """(stages, rows) of the held-out panel: prompt, kind, correct answer, each stage's reply."""
    exs = [e for e in summ.get("examples") or [] if isinstance(e, Mapping)]
    stages = [r["stage"] for r in summ.get("table", []) if isinstance(r, Mapping) and "stage" in r]
    rows = [{"prompt": str(e.get("prompt", "")), "kind": e.get("kind") or "", "answer": e.get("answer"),
             "replies": [(str((e.get("replies") or {}).get(s, "")), (e.get("correct") or {}).get(s)) for s in stages]}
            for e in exs]
    return [STAGE_LABEL.get(s, s) for s in stages], rows


def alignment_section(study: Study, figs: Mapping[str, Any]) -> Section | None:
    summ = study.align_summary
    if summ is None and "alignment" not in figs:
        return None
    figure = "alignment" if "alignment" in figs else None
    title = "Alignment: base → SFT → RLHF and DPO"
    if not isinstance(summ, Mapping) or not summ.get("table") or "format_rate" not in summ["table"][0]:
        blocks: list[Block] = []
        if isinstance(summ, Mapping) and isinstance(summ.get("table"), list):
            blocks = [records_table([r for r in summ["table"] if isinstance(r, Mapping)])]
        elif summ is not None:
            blocks = any_blocks(summ)
        return Section("alignment", title, blocks, figure=figure)
    blocks: list[Block] = [Text("heading", "held-out tasks, side by side"), side_by_side(summ)]
    rm = reward_table(summ)
    if rm is not None:
        blocks += [Text("heading", "reward models"), rm]
    settings = {k: summ.get(k) for k in ("options", "tasks", "data", "stage_minutes", "minutes") if k in summ}
    blocks.append(Details("settings, data and stage minutes", any_blocks(settings)))
    stages, rows = examples(summ)
    return Section("alignment", title, blocks, figure=figure, template="sections/alignment.html.j2",
                   context={"story": story(summ), "flags": [(STAGE_LABEL.get(f["stage"], f["stage"]), f["reason"])
                                                            for f in summ.get("flags") or []],
                            "stages": stages, "examples": rows})
