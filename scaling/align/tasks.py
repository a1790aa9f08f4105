"""Built-in instruction tasks with exact, program-checkable answers, cut from the study's corpus.

The text is the part of each document that pretraining held out (its last ``tail_frac`` of
characters, the local backend's validation split), so no task passage was ever trained on. It is
cut into non-overlapping passages of ``passage_words`` whitespace-separated words inside each
document; the passages are shuffled with ``seed`` and dealt, one passage to one task, into four
disjoint splits: ``sft`` (supervised fine-tuning), ``pref`` (preference pairs for the reward model
and DPO, and the prompts RL trains on), ``judge`` (pairs for a second reward model, disjoint from
the first, that scores every stage in the comparison) and ``eval`` (held out from everything).
Each passage becomes one of these tasks (kinds dealt round-robin):

* ``blank``: the passage with one word (of three letters or more) replaced by ``____``; the answer
  is that word. The plausible wrong answer: another word of the same passage.
* ``order``: the passage's two halves shown as A and B in a random order; the answer is the letter
  of the half that comes first in the text. Wrong answer: the other letter.
* ``source`` (only where the corpus has two documents or more): the passage and two document
  names, its own and another one, in a random order; the answer is its document's name. Wrong
  answer: the other name.

A prompt is one user turn (the chat template renders it); the answer is one assistant turn. A
reply *follows the format* when the model ends its turn within the answer budget and the reply is
of the task's form (one word; A or B; one of the two names); it is *correct* when it equals the
answer (case and surrounding punctuation aside).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from scaling.errors import UsageError

Kind = Literal["blank", "order", "source"]
KINDS: tuple[str, ...] = ("blank", "order", "source")
SPLITS: tuple[str, ...] = ("sft", "pref", "judge", "eval")
BLANK = "____"
_WORD = re.compile(r"\S+\s*")
_CORE = re.compile(r"[A-Za-z][A-Za-z'-]*[A-Za-z]")


@dataclass(frozen=True)
class TaskOptions:
    """Where the built-in tasks come from and how many of each split."""

    corpus: str | None = None  # None: the corpus the model was pretrained on (else builtin:default)
    tail_frac: float | None = 0.02  # the part of each document pretraining held out; None: all of it
    text_column: str = "text"
    max_chars: int | None = None  # the pretraining corpus's own truncation (DataSpec.max_chars)
    kinds: tuple[str, ...] = KINDS
    n_sft: int = 384
    n_pref: int = 256
    n_judge: int = 192
    n_eval: int = 128
    passage_words: int = 12  # prompts of ~50-80 tokens with a 1024-token BPE: fit sequence 128, and train fast

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise UsageError(f"tasks.kinds={list(self.kinds)}: choose from {', '.join(KINDS)}")
        for name in ("n_sft", "n_pref", "n_judge", "n_eval"):
            if getattr(self, name) < 2:
                raise UsageError(f"tasks.{name}={getattr(self, name)}: need at least 2")
        if self.passage_words < 8:
            raise UsageError(f"tasks.passage_words={self.passage_words}: need at least 8")


@dataclass(frozen=True)
class Task:
    """One instruction with its exact answer, a plausible wrong answer and, for choice tasks, the options."""

    kind: str
    instruction: str
    answer: str
    wrong: str
    options: tuple[str, ...] = ()
    document: str = ""

    def prompt(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.instruction}]

    def sft_record(self) -> dict[str, Any]:
        return {"prompt": self.prompt(), "completion": [{"role": "assistant", "content": self.answer}]}

    def preference_record(self) -> dict[str, Any]:
        return {"prompt": self.prompt(), "chosen": [{"role": "assistant", "content": self.answer}],
                "rejected": [{"role": "assistant", "content": self.wrong}]}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalize_answer(text: str) -> str:
    """Lower case, surrounding whitespace and punctuation removed: the form answers are compared in."""
    return text.strip().strip(".,;:!?\"'()[]").strip().lower()


def follows_format(task: Task, reply: str) -> bool:
    """The reply has the task's form (the caller checks that the turn ended)."""
    r = normalize_answer(reply)
    if task.kind == "blank":
        return bool(_CORE.fullmatch(r)) or (len(r) >= 1 and r.isalpha())
    return r in {normalize_answer(o) for o in task.options}


def is_correct(task: Task, reply: str) -> bool:
    return normalize_answer(reply) == normalize_answer(task.answer)


# ---- the generator -----------------------------------------------------------------------------


def _passages(text: str, words: int) -> list[list[str]]:
    tokens = _WORD.findall(text)
    return [tokens[i : i + words] for i in range(0, len(tokens) - words + 1, words)]


def _join(words: Sequence[str]) -> str:
    return "".join(words).strip()


def _blank(words: list[str], rng: random.Random) -> tuple[str, str, str] | None:
    cores = [(i, m) for i, w in enumerate(words) if (m := _CORE.search(w)) and len(m.group()) >= 3]
    if len({m.group().lower() for _, m in cores}) < 2:
        return None
    i, m = rng.choice(cores)
    answer = m.group()
    wrong = rng.choice([c.group() for _, c in cores if c.group().lower() != answer.lower()])
    shown = list(words)
    shown[i] = words[i][: m.start()] + BLANK + words[i][m.end() :]
    return f"Fill in the blank with the missing word.\n\n{_join(shown)}", answer, wrong


def _order(words: list[str], rng: random.Random) -> tuple[str, str, str, tuple[str, ...]]:
    half = len(words) // 2
    first, second = _join(words[:half]), _join(words[half:])
    flip = rng.random() < 0.5
    a, b = (second, first) if flip else (first, second)
    answer = "B" if flip else "A"
    return (f"Which part comes first in the text, A or B?\n\nA: {a}\n\nB: {b}", answer, "A" if flip else "B",
            ("A", "B"))


def display_name(name: str) -> str:
    """A document's name as the tasks show it: the file's stem, underscores as spaces."""
    return name.rsplit("/", 1)[-1].replace("_", " ").strip()


def _source(words: list[str], doc: str, names: list[str], rng: random.Random) -> tuple[str, str, str, tuple[str, ...]]:
    answer = display_name(doc)
    wrong = rng.choice([n for n in names if n != answer])
    options = (answer, wrong) if rng.random() < 0.5 else (wrong, answer)
    return (f"Which text is this passage from: {options[0]} or {options[1]}?\n\n{_join(words)}", answer, wrong,
            options)


def _make(kind: str, words: list[str], doc: str, names: list[str], rng: random.Random) -> Task | None:
    if kind == "blank":
        made = _blank(words, rng)
        return Task("blank", *made, document=doc) if made else None
    if kind == "order":
        return Task("order", *_order(words, rng), document=doc)
    return Task("source", *_source(words, doc, names, rng), document=doc)


def build_tasks(documents: Sequence[tuple[str, str]], opts: TaskOptions = TaskOptions(), seed: int = 0) -> dict[str, list[Task]]:
    """The four disjoint splits of tasks (see the module docstring) from ``(name, text)`` documents."""
    names = sorted({display_name(n) for n, t in documents if t.strip()})
    kinds = [k for k in opts.kinds if k != "source" or len(names) >= 2]
    if not kinds:
        raise UsageError("tasks.kinds=['source']: the corpus has one document; add 'blank' or 'order'")
    passages = [(name, w) for name, text in documents for w in _passages(text, opts.passage_words)]
    need = {s: getattr(opts, f"n_{s}") for s in SPLITS}
    rng = random.Random(seed)
    rng.shuffle(passages)
    out: dict[str, list[Task]] = {s: [] for s in SPLITS}
    it = iter(passages)
    dealt = 0
    for split in ("eval", "judge", "pref", "sft"):  # the held-out split first: it never runs short
        while len(out[split]) < need[split]:
            passage = next(it, None)
            if passage is None:
                have = sum(map(len, out.values()))
                raise UsageError(
                    f"tasks: the corpus's held-out text gives {have} usable passages of {opts.passage_words} words, "
                    f"{sum(need.values())} needed ({', '.join(f'{s} {n}' for s, n in need.items())}); lower "
                    f"tasks.n_sft/n_pref/n_judge/n_eval, or pretrain with a larger data.val_frac or more text"
                )
            kind = kinds[dealt % len(kinds)]
            dealt += 1
            task = _make(kind, passage[1], passage[0], names, rng)
            if task is not None:
                out[split].append(task)
    return out


def corpus_documents(opts: TaskOptions) -> list[tuple[str, str]]:
    """``(name, held-out text)`` of each document of the corpus, as the local backend splits it."""
    from scaling.backends.local.corpus import named_documents, split_held_out, truncate_documents

    named = [(n, t) for n, t in named_documents(opts.corpus or "builtin:default", opts.text_column) if t.strip()]
    texts = truncate_documents(iter(t for _, t in named), opts.max_chars)
    named = [(n, t) for (n, _), t in zip(named, texts, strict=False)]
    if not opts.tail_frac:
        return named
    out = []
    for name, text in named:
        _, tail = split_held_out([text], opts.tail_frac)
        if tail:
            out.append((name, tail[0]))
    return out


# ---- the trivial baseline --------------------------------------------------------------------


def trivial_answers(train: Sequence[Task]) -> dict[str, Any]:
    """Per kind, the answer a model that ignores the passage does best with on ``train``: the most
    frequent answer of open tasks; for choice tasks, the option *position* most often right
    (the names change from task to task, the positions do not)."""
    out: dict[str, Any] = {}
    for kind in {t.kind for t in train}:
        ts = [t for t in train if t.kind == kind]
        if ts[0].options:
            out[kind] = Counter(t.options.index(t.answer) for t in ts).most_common(1)[0][0]
        else:
            out[kind] = Counter(normalize_answer(t.answer) for t in ts).most_common(1)[0][0]
    return out


def trivial_reply(task: Task, answers: dict[str, Any]) -> str:
    guess = answers.get(task.kind)
    if guess is None:
        return ""
    return task.options[guess] if task.options else str(guess)
