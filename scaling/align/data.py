"""Fine-tuning data: the formats users have, validated record by record.

Formats (the names TRL uses):

* SFT, ``prompt``/``completion``: two strings (the loss is on the completion only), or two lists
  of chat messages (conversational).
* SFT, ``messages``: one chat, a list of ``{"role", "content"}``; it becomes a conversational
  prompt/completion pair whose completion is the last assistant turn (the loss falls on that
  turn; earlier turns are context), rendered with the tokenizer's chat template.
* Preferences (reward model, DPO), ``prompt``/``chosen``/``rejected``: three strings, or three
  lists of messages.
* RL prompts, ``prompt``: a string or a list of messages (the reply is the policy's own).

Sources: a ``.jsonl`` file (one JSON object a line), a ``.json`` file (a list of objects or JSON
lines), a ``.parquet`` file, a folder saved with ``datasets.Dataset.save_to_disk``, a folder of
jsonl/parquet files, ``builtin`` (the demo tasks below), or ``hf:NAME[@SPLIT]`` / ``NAME``:
a Hugging Face dataset loaded with ``datasets.load_dataset`` (needs the network or a local
dataset script/folder). A malformed record raises :class:`DataError` naming its line (row) and
field; nothing is dropped silently.

Built-in tasks, cut from the study's corpus with exact answers, are in :mod:`scaling.align.tasks`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from scaling.errors import UsageError

Kind = Literal["sft", "dpo", "prompt"]
Record = dict[str, Any]

ROLES = ("system", "user", "assistant", "tool")


class DataError(UsageError):
    """A malformed record: the message names the source, line (or row) and field."""


# ---- record validation --------------------------------------------------------------------------


def _check_messages(value: Any, field: str, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field '{field}' must be a non-empty list of {{role, content}} messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise DataError(f"{where}: {field}[{i}] must be an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise DataError(f"{where}: {field}[{i}].role={m['role']!r}: use one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise DataError(f"{where}: {field}[{i}].content must be a string")
        out.append({"role": str(m["role"]), "content": m["content"]})
    return out


def _check_text_or_chat(rec: Mapping[str, Any], fields: Sequence[str], where: str) -> Record:
    """All of ``fields`` present, and either all strings or all message lists."""
    missing = [f for f in fields if f not in rec or rec[f] is None]
    if missing:
        have = ", ".join(sorted(map(str, rec))) or "none"
        raise DataError(f"{where}: missing field '{missing[0]}' (fields present: {have}); expected {'/'.join(fields)}")
    if all(isinstance(rec[f], str) for f in fields):
        empty = [f for f in fields[1:] if not rec[f].strip()]
        if empty:
            raise DataError(f"{where}: field '{empty[0]}' is empty")
        return {f: rec[f] for f in fields}
    if all(isinstance(rec[f], list) for f in fields):
        return {f: _check_messages(rec[f], f, where) for f in fields}
    kinds = ", ".join(f"{f}={type(rec[f]).__name__}" for f in fields)
    raise DataError(f"{where}: fields {'/'.join(fields)} must be all strings or all message lists (got {kinds})")


def _messages_to_pair(messages: list[dict[str, str]], where: str) -> Record:
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise DataError(f"{where}: field 'messages' has no assistant turn to learn from")
    if last == 0:
        raise DataError(f"{where}: field 'messages' starts with the assistant turn; give the user turn before it")
    return {"prompt": messages[:last], "completion": [messages[last]]}


def normalize(rec: Any, kind: Kind, where: str) -> Record:
    """One record in canonical form: SFT -> prompt/completion, DPO -> prompt/chosen/rejected."""
    if not isinstance(rec, Mapping):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if kind == "sft":
        if "messages" in rec and "prompt" not in rec:
            return _messages_to_pair(_check_messages(rec["messages"], "messages", where), where)
        if "prompt" not in rec and "completion" not in rec:
            raise DataError(f"{where}: an SFT record needs 'prompt' and 'completion', or 'messages'")
        return _check_text_or_chat(rec, ("prompt", "completion"), where)
    if kind == "dpo":
        return _check_text_or_chat(rec, ("prompt", "chosen", "rejected"), where)
    if kind == "prompt":
        if "prompt" not in rec:
            have = ", ".join(sorted(map(str, rec))) or "none"
            raise DataError(f"{where}: missing field 'prompt' (fields present: {have}); an RL record is a prompt alone")
        if isinstance(rec["prompt"], str):
            if not rec["prompt"].strip():
                raise DataError(f"{where}: field 'prompt' is empty")
            return {"prompt": rec["prompt"]}
        return {"prompt": _check_messages(rec["prompt"], "prompt", where)}
    raise ValueError(f"kind={kind!r}: 'sft', 'dpo' or 'prompt'")


def normalize_all(records: Iterable[tuple[str, Any]], kind: Kind) -> list[Record]:
    out = [normalize(rec, kind, where) for where, rec in records]
    if not out:
        raise DataError(f"{kind} data: no records; give at least one")
    return out


# ---- sources ---------------------------------------------------------------------------------------


def _jsonl_records(path: Path) -> Iterable[tuple[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{lineno}", json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None


def _json_records(path: Path) -> Iterable[tuple[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        yield from ((f"{path}: record {i}", r) for i, r in enumerate(data))
    else:
        yield from _jsonl_records(path)


def _table_records(rows: Iterable[Mapping[str, Any]], label: str) -> Iterable[tuple[str, Any]]:
    for i, row in enumerate(rows):
        yield f"{label}: row {i}", dict(row)


def _parquet_records(path: Path) -> Iterable[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    return _table_records(table.to_pylist(), str(path))


def _file_records(path: Path) -> Iterable[tuple[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_records(path)
    if suffix == ".json":
        return _json_records(path)
    if suffix == ".parquet":
        return _parquet_records(path)
    raise DataError(f"{path}: unknown file type '{suffix}'; use .jsonl, .json or .parquet")


def _dir_records(path: Path, split: str) -> Iterable[tuple[str, Any]]:
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{path}: no split '{split}' (splits: {', '.join(ds)}); name one with @SPLIT")
            ds = ds[split]
        return _table_records(ds, str(path))
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jsonl", ".json", ".parquet"))
    if not files:
        raise DataError(f"{path}: no .jsonl, .json or .parquet files and no saved dataset in this folder")
    return (r for f in files for r in _file_records(f))


def _hf_records(name: str, split: str) -> Iterable[tuple[str, Any]]:
    """A Hugging Face dataset by name (``datasets.load_dataset``), e.g. ``trl-lib/ultrafeedback_binarized``."""
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # offline, unknown name, unknown split
        raise DataError(f"dataset '{name}' (split {split}): could not load ({type(e).__name__}: {e})") from None
    return _table_records(ds, f"{name}[{split}]")


def parse_source(source: str) -> tuple[str, str]:
    """``hf:NAME@SPLIT`` / ``PATH@SPLIT`` -> (name, split); the split defaults to ``train``."""
    name = source.removeprefix("hf:")
    if "@" in name:
        name, _, split = name.rpartition("@")
        return name, split or "train"
    return name, "train"


def load_records(source: str | Path, kind: Kind) -> list[Record]:
    """Validated records of ``kind`` from a file, a folder or a Hugging Face dataset name."""
    src = str(source)
    name, split = parse_source(src)
    path = Path(name)
    if not src.startswith("hf:") and path.exists():
        records = _dir_records(path, split) if path.is_dir() else _file_records(path)
    elif src.startswith("hf:") or (not path.suffix and "/" in name and not name.startswith((".", "/"))):
        records = _hf_records(name, split)
    else:
        raise DataError(f"{kind} data '{src}': no such file; give a .jsonl/.parquet path, a folder, or hf:NAME")
    return normalize_all(records, kind)


def split_records(records: Sequence[Record], eval_frac: float, seed: int) -> tuple[list[Record], list[Record]]:
    """A seeded train / held-out split (at least one record each when there are two or more)."""
    if not 0 < eval_frac < 1:
        raise UsageError(f"eval_frac={eval_frac}: must be between 0 and 1")
    idx = list(range(len(records)))
    random.Random(seed).shuffle(idx)
    n_eval = min(max(1, round(eval_frac * len(idx))), len(idx) - 1) if len(idx) > 1 else 0
    held = [records[i] for i in sorted(idx[:n_eval])]
    train = [records[i] for i in sorted(idx[n_eval:])]
    return train, held


def write_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Records as JSON lines, atomically (to hand the built-in tasks to users as files)."""
    from scaling.store import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
