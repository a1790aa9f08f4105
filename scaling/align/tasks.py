"""Built-in instruction tasks with exact, program-checkable answers, cut from the study's corpus.

The text is the part of each document that pretraining held out (its last ``tail_frac`` of
characters, the local backend's validation split), so no task passage was ever trained on. It is
cut into non-overlapping passages of ``passage_words`` whitespace-separated words inside each
document; the passages are shuffled with ``seed`` and dealt into four disjoint splits: ``sft``
(supervised fine-tuning), ``pref`` (preference pairs for the reward model and DPO, and the prompts
RL trains on), ``judge`` (pairs for a second reward model, disjoint from the first, that scores
every stage in the comparison) and ``eval`` (held out from everything). A held-out passage gives
one task; a training passage gives ``variants`` (itself, then its prefixes one word shorter each),
kinds dealt round-robin.

Two kinds are open: the reply is a word of the passage, written with the leading space it has
there, so its tokens are the passage's own and a small model can copy them:

* ``last``: the passage; "repeat its last word" (the word after the last space).
* ``after``: the passage; "which word comes after X", X a word the passage has once (the reply is
  the next word's letters).

Their wrong reply is, by a coin, another word of the passage or a corpus word it lacks, written
like the answer. Five are a choice between two labelled options shown in the prompt (the right
one alternating between the labels within each split and kind, so the labels are balanced):

* ``blank``: the passage with one word (three letters or more, not repeated in the passage)
  replaced by ``____``; options: that word and a distractor.
* ``find``: the passage; options: one of its words and a distractor ("which word is in it?").
* ``next``: the passage without its last word; options: that word and a distractor.
* ``order``: the passage's two halves as the options; which comes first in the text.
* ``source`` (where the corpus has two documents or more): the passage; options: its document's
  name and another document's.

A distractor is a word of another passage drawn by word frequency (so it is no rarer than a right
answer) that the passage does not contain, so the right and the wrong option are alike in
everything but being right. The answer is the right option's label, ``A`` or ``B``, one token
that the prompt shows at the start of a line exactly as the reply writes it (a reply that had to
spell a word differently from the prompt's tokens, `` his`` against ``h`` ``is``, is a task the
smallest models fail at before reading anything); the rejected reply of a preference pair is the
other label. ``rejected="sampled"`` replaces the rejected replies by the SFT model's own wrong
samples once SFT has run (:mod:`scaling.align.pairs`).

A prompt is one user turn (the chat template renders it); the answer is one assistant turn. A
reply *follows the format* when the model ends its turn within the answer budget and the reply is
one of the labels (for an open task: one word); it is *correct* when it is the right one (case and punctuation aside).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from scaling.errors import UsageError

Kind = Literal["blank", "find", "next", "order", "source", "last", "after"]
KINDS: tuple[str, ...] = ("blank", "find", "next", "order", "source", "last", "after")
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
    rejected: str = "sampled"  # "sampled": the SFT model's wrong samples (scaling.align.pairs); "built-in"
    variants: int = 1  # tasks per passage in the training splits (sft, pref, judge): its prefixes, one word shorter each

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise UsageError(f"tasks.kinds={list(self.kinds)}: choose from {', '.join(KINDS)}")
        for name in ("n_sft", "n_pref", "n_judge", "n_eval"):
            if getattr(self, name) < 2:
                raise UsageError(f"tasks.{name}={getattr(self, name)}: need at least 2")
        if self.passage_words < 8:
            raise UsageError(f"tasks.passage_words={self.passage_words}: need at least 8")
        if self.rejected not in ("sampled", "built-in"):
            raise UsageError(f"tasks.rejected={self.rejected!r}: use 'sampled' (the SFT model's wrong replies) "
                             "or 'built-in' (the tasks' own wrong replies)")
        if not 1 <= self.variants <= self.passage_words - 7:
            raise UsageError(f"tasks.variants={self.variants}: choose 1 to passage_words - 7 = "
                             f"{self.passage_words - 7} (a task's passage keeps at least 8 words)")


LABELS: tuple[str, str] = ("A", "B")


@dataclass(frozen=True)
class Task:
    """One instruction with its exact answer (a label of ``options``), the wrong label, the
    option texts in label order (``choices``) and the corpus text the task was cut from."""

    kind: str
    instruction: str
    answer: str
    wrong: str
    options: tuple[str, ...] = LABELS
    choices: tuple[str, ...] = ()
    document: str = ""
    text: str = ""

    @property
    def answer_text(self) -> str:
        """The right option as text (the word, the part, the document name)."""
        return self.choices[self.options.index(self.answer)] if self.choices else self.answer

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
    """The reply is one of the task's labels, or for an open task one word (the caller checks that
    the turn ended)."""
    r = normalize_answer(reply)
    if not task.options:
        return bool(r) and len(r.split()) == 1
    return r in {normalize_answer(o) for o in task.options}


def is_correct(task: Task, reply: str) -> bool:
    return normalize_answer(reply) == normalize_answer(task.answer)


# ---- the generator -----------------------------------------------------------------------------


def _passages(text: str, words: int) -> list[list[str]]:
    tokens = _WORD.findall(text)
    return [tokens[i : i + words] for i in range(0, len(tokens) - words + 1, words)]


def _join(words: Sequence[str]) -> str:
    return "".join(words).strip()


def _cores(words: Sequence[str]) -> list[tuple[int, re.Match[str]]]:
    """(position, match) of each word of three letters or more: the candidates for answers."""
    return [(i, m) for i, w in enumerate(words) if (m := _CORE.search(w)) and len(m.group()) >= 3]


def _distractor(words: Sequence[str], pool: Sequence[str], rng: random.Random) -> str | None:
    """A word of the corpus (``pool``, one entry per occurrence) that the passage does not contain."""
    present = {m.group().lower() for _, m in _cores(words)}
    for _ in range(50):
        w = rng.choice(pool)
        if w.lower() not in present:
            return w
    return None


def _labelled(right: str, wrong: str, first: bool) -> tuple[str, str, tuple[str, str]]:
    """(answer label, wrong label, option texts in label order): the right option ``first`` or second."""
    if first:
        return LABELS[0], LABELS[1], (right, wrong)
    return LABELS[1], LABELS[0], (wrong, right)


def _options_text(question: str, choices: Sequence[str]) -> str:
    return question + "".join(f"\n{label}: {c}" for label, c in zip(LABELS, choices, strict=True))


Made = tuple[str, str, str, tuple[str, ...], tuple[str, ...]]  # instruction, answer, wrong, labels, choices


def _blank(words: list[str], pool: Sequence[str], rng: random.Random, first: bool) -> Made | None:
    cores = _cores(words)
    unique = [(i, m) for i, m in cores if sum(c.group().lower() == m.group().lower() for _, c in cores) == 1]
    wrong = _distractor(words, pool, rng) if unique else None
    if wrong is None:
        return None
    i, m = rng.choice(unique)  # a word the passage does not repeat: nothing else in it gives it away
    shown = list(words)
    shown[i] = words[i][: m.start()] + BLANK + words[i][m.end() :]
    answer, other, choices = _labelled(m.group(), wrong, first)
    return f"{_join(shown)}\n\n" + _options_text("Which word fills the blank?", choices), answer, other, LABELS, choices


def _find(words: list[str], pool: Sequence[str], rng: random.Random, first: bool) -> Made | None:
    cores = _cores(words)
    wrong = _distractor(words, pool, rng) if cores else None
    if wrong is None:
        return None
    answer, other, choices = _labelled(rng.choice(cores)[1].group(), wrong, first)
    return (f"{_join(words)}\n\n" + _options_text("Which word is in the passage?", choices), answer, other,
            LABELS, choices)


def _next(words: list[str], pool: Sequence[str], rng: random.Random, first: bool) -> Made | None:
    m = _CORE.search(words[-1])
    if m is None or len(m.group()) < 3 or any(c.group().lower() == m.group().lower() for _, c in _cores(words[:-1])):
        return None  # too short, or shown earlier in the passage, which would give it away
    wrong = _distractor(words, pool, rng)
    if wrong is None:
        return None
    shown = (_join(words[:-1]) + " " + words[-1][: m.start()]).rstrip()
    answer, other, choices = _labelled(m.group(), wrong, first)
    return _options_text("Which word comes next?", choices) + f"\n\n{shown}", answer, other, LABELS, choices


def _order(words: list[str], first: bool) -> Made:
    half = len(words) // 2
    answer, other, choices = _labelled(_join(words[:half]), _join(words[half:]), first)
    return (f"A: {choices[0]}\n\nB: {choices[1]}\n\nWhich part comes first in the text, A or B?", answer, other,
            LABELS, choices)


def display_name(name: str) -> str:
    """A document's name as the tasks show it: the file's stem, underscores as spaces."""
    return name.rsplit("/", 1)[-1].replace("_", " ").strip()


def _source(words: list[str], doc: str, names: list[str], rng: random.Random, first: bool) -> Made:
    own = display_name(doc)
    answer, other, choices = _labelled(own, rng.choice([n for n in names if n != own]), first)
    return (f"{_join(words)}\n\n" + _options_text("Which text is this passage from?", choices), answer, other,
            LABELS, choices)


def _reply_word(word: str, core: bool) -> str | None:
    """A word as a reply writes it: a leading space (the passage's tokens), the letters alone if ``core``."""
    m = _CORE.search(word) if core else None
    return " " + (m.group() if m else word.strip()) if (m or not core) and normalize_answer(word) else None


def _wrong_reply(words: Sequence[str], answer: str, pool: Sequence[str], rng: random.Random, core: bool) -> str | None:
    """The plausible wrong reply to an open task: by a coin, another word of the passage or a corpus
    word (``pool``, one entry per occurrence) the passage lacks, written like the answer. Both halves
    are needed: a reward model shown only the passage's own words as wrong learns nothing against a
    word from elsewhere, which RL then finds and repeats."""
    present = {normalize_answer(w) for w in words}
    inside = rng.random() < 0.5
    source = words if inside else pool
    for _ in range(50):
        w = _reply_word(rng.choice(source), core)
        if w is not None and normalize_answer(w) != normalize_answer(answer) and (inside or
                                                                                 normalize_answer(w) not in present):
            return w
    return None


def _spaced(words: Sequence[str], i: int) -> bool:
    """Word ``i`` follows a space, not a line break, so it has the tokens a reply ``" word"`` has."""
    return i >= 1 and words[i - 1][-1:] == " " and "\n" not in words[i - 1]


def _last(words: list[str], pool: Sequence[str], rng: random.Random) -> Made | None:
    answer = " " + words[-1].strip()
    ok = normalize_answer(answer) and _spaced(words, len(words) - 1)
    wrong = _wrong_reply(words, answer, pool, rng, core=False) if ok else None
    if wrong is None:
        return None
    return f"Repeat the last word of this passage.\n\n{_join(words)}", answer, wrong, (), ()


def _after(words: list[str], pool: Sequence[str], rng: random.Random) -> Made | None:
    """Which word follows a word the passage has once: the question names it as the passage spells
    it (never the first word, whose tokens lack the leading space), the answer is the next word's
    letters, so a reply copies the passage's tokens and stops."""
    norms = [normalize_answer(w) for w in words]
    nexts = [_CORE.match(w.strip()) for w in words]
    unique = [i for i in range(1, len(words) - 1)
              if len(norms[i]) >= 3 and norms.count(norms[i]) == 1 and _CORE.fullmatch(words[i].strip())
              and nexts[i + 1] and _spaced(words, i) and _spaced(words, i + 1)]
    if not unique:
        return None
    i = rng.choice(unique)
    answer = " " + nexts[i + 1].group()  # type: ignore[union-attr]
    wrong = _wrong_reply(words, answer, pool, rng, core=True)
    if wrong is None:
        return None
    return f"{_join(words)}\n\nWhich word comes after {words[i].strip()}?", answer, wrong, (), ()


def _make(kind: str, words: list[str], doc: str, names: list[str], pool: Sequence[str], raw_pool: Sequence[str],
          rng: random.Random, first: bool) -> Task | None:
    made = (_last(words, raw_pool, rng) if kind == "last" else _after(words, raw_pool, rng) if kind == "after"
            else _blank(words, pool, rng, first) if kind == "blank" else _find(words, pool, rng, first) if kind == "find"
            else _next(words, pool, rng, first) if kind == "next" else _order(words, first) if kind == "order"
            else _source(words, doc, names, rng, first))
    return Task(kind, *made, document=doc, text=_join(words)) if made else None


def build_tasks(documents: Sequence[tuple[str, str]], opts: TaskOptions = TaskOptions(), seed: int = 0) -> dict[str, list[Task]]:
    """The four disjoint splits of tasks (see the module docstring) from ``(name, text)`` documents."""
    names = sorted({display_name(n) for n, t in documents if t.strip()})
    kinds = [k for k in opts.kinds if k != "source" or len(names) >= 2]
    if not kinds:
        raise UsageError("tasks.kinds=['source']: the corpus has one document; add 'blank' or 'order'")
    passages = [(name, w) for name, text in documents for w in _passages(text, opts.passage_words)]
    # distractors drawn like answers, by word frequency: a wrong option is no rarer than a right one
    pool = [m.group() for _, w in passages for _, m in _cores(w)]
    raw_pool = [w for _, ws in passages for i, w in enumerate(ws) if _spaced(ws, i)]  # open tasks: words as written
    need = {s: getattr(opts, f"n_{s}") for s in SPLITS}
    rng = random.Random(seed)
    rng.shuffle(passages)
    out: dict[str, list[Task]] = {s: [] for s in SPLITS}
    it = iter(passages)
    dealt = 0
    # the right option alternates between A and B within each split and kind, from a seeded start:
    # labels balanced, so a reply that ignores the passage scores one half, whichever label it picks
    start = {(s, k): rng.random() < 0.5 for s in SPLITS for k in kinds}
    made = Counter[tuple[str, str]]()
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
            for cut in range(opts.variants if split != "eval" else 1):  # eval: one task per passage
                if len(out[split]) == need[split]:
                    break
                kind = kinds[dealt % len(kinds)]
                dealt += 1
                first = start[split, kind] != bool(made[split, kind] % 2)
                words = passage[1][: len(passage[1]) - cut]
                task = _make(kind, words, passage[0], names, pool, raw_pool, rng, first)
                if task is not None:
                    out[split].append(task)
                    made[split, kind] += 1
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
    """Per kind, the answer a model that ignores the passage does best with on ``train``: for choice
    tasks the label most often right (the option texts change from task to task, the labels do
    not), for open ones (none built in today) the most frequent answer."""
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
