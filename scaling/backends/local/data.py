"""Tokenizers and packed token files for the local backend.

The documents come from :mod:`scaling.backends.local.corpus` (its docstring lists the sources).

Preparation (:func:`prepare_data`): every document is split into a training part and its last
``val_frac`` of characters, held out (so both corpora appear in the validation split); a
byte-level BPE of ``vocab`` entries is trained on the training parts (or a user's tokenizer folder
is loaded; a corpus too small for that many merges is refused, naming how many tokens it gave,
rather than leaving embedding rows no token uses: ``vocab`` is part of the run's config and its
parameter count, so it is not shrunk behind the user's back) and saved as a transformers ``PreTrainedTokenizerFast`` folder with bos/eos/pad tokens
and a ChatML chat template; both splits are tokenized in parallel (the ``tokenizers`` thread pool),
each document followed by the end-of-text token, and packed into flat ``uint16`` (or ``uint32``)
files read back with ``numpy.memmap``. The result is cached under a hash of the source (with file
sizes and modification times), tokenizer, vocabulary and split settings, so a sweep tokenizes once;
a file lock makes concurrent runs wait for one preparation.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scaling.backends.local.corpus import load_documents, source_files, split_held_out, truncate_documents
from scaling.errors import UsageError
from scaling.store import make_temp_dir

PREP_VERSION = 1  # bump when the preparation changes its output
EOS = "<|endoftext|>"
PAD = "<|pad|>"
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
SPECIAL_TOKENS = (EOS, PAD, *CHAT_TOKENS)
MIN_VOCAB_USED = 0.99  # a BPE that fills less of model.vocab than this is refused (unused embedding rows)
# ChatML (the format TRL and most chat models use); generation prompts end with the assistant header.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class PreparedData:
    """A tokenized corpus in the cache: tokenizer folder and packed train/val token files."""

    tokenizer_dir: str
    train_path: str
    val_path: str
    dtype: str
    n_train_tokens: int
    n_val_tokens: int

    def tokens(self, split: str = "train") -> np.ndarray:
        """The split's tokens as a read-only memory map."""
        path = self.train_path if split == "train" else self.val_path
        n = self.n_train_tokens if split == "train" else self.n_val_tokens
        return np.memmap(path, dtype=np.dtype(self.dtype), mode="r", shape=(n,))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---- loading text --------------------------------------------------------------------------------
# ---- tokenizer -------------------------------------------------------------------------------------


def train_bpe(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE (GPT-2 style, Radford et al. 2019) of exactly ``vocab_size`` entries
    where the text allows, wrapped as a transformers ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok: Any) -> Any:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD, unk_token=None
    )
    fast.add_special_tokens({"additional_special_tokens": list(CHAT_TOKENS)})
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 1_000_000
    return fast


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    path = Path(path).expanduser()
    if not (path / "tokenizer.json").exists() and not (path / "tokenizer_config.json").exists():
        raise UsageError(
            f"data.tokenizer={str(path)!r}: not a tokenizer folder (no tokenizer.json); use 'bpe' or a saved tokenizer"
        )
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.eos_token is None:
        tok.add_special_tokens({"eos_token": EOS})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# ---- preparation ----------------------------------------------------------------------------------


def token_dtype(vocab_size: int, requested: str | None = None) -> np.dtype:
    """uint16 when every id fits (vocab <= 65,536), else uint32."""
    auto = np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)
    if requested in (None, "auto"):
        return auto
    dt = np.dtype(requested)
    if dt.kind != "u" or vocab_size > np.iinfo(dt).max + 1:
        raise UsageError(
            f"backend_options.token_dtype={requested!r}: cannot hold vocab {vocab_size}; use {auto.name} or 'auto'"
        )
    return dt


def default_cache_dir() -> Path:
    return Path(os.environ.get("SCALING_CACHE") or Path.home() / ".cache" / "scaling").expanduser()


def _source_fingerprint(source: str) -> Any:
    """Files' sizes and mtimes, so an edited corpus is prepared again."""
    if source.startswith(("builtin:", "hf:")):
        return source
    path = Path(source).expanduser().resolve()
    if not path.exists():
        return str(path)
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in source_files(path)]


def data_key(data_spec: Any, vocab_size: int, dtype: str | None = None) -> str:
    tokenizer = data_spec.tokenizer
    if tokenizer != "bpe":
        p = Path(tokenizer).expanduser().resolve()
        tokenizer = [
            str(p),
            *(
                sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in p.glob("*"))
                if p.is_dir()
                else []
            ),
        ]
    blob = {
        "v": PREP_VERSION,
        "source": _source_fingerprint(data_spec.source),
        "text_column": data_spec.text_column,
        "tokenizer": tokenizer,
        "vocab": vocab_size,
        "val_frac": data_spec.val_frac,
        "max_chars": data_spec.max_chars,
        "split": data_spec.hf_split,
        "dtype": dtype or "auto",
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _chunks(docs: list[str], size: int = 1 << 16) -> tuple[list[str], list[int]]:
    """Documents cut at line breaks into ~64K-character pieces (parallel encoding), with the
    index of the last piece of each document (where the end-of-text token goes)."""
    pieces, ends = [], []
    for d in docs:
        start = 0
        while start < len(d):
            end = min(len(d), start + size)
            if end < len(d):
                nl = d.rfind("\n", start, end)
                end = nl + 1 if nl > start else end
            pieces.append(d[start:end])
            start = end
        ends.append(len(pieces) - 1)
    return pieces, ends


def tokenize(tok: Any, docs: list[str], dtype: np.dtype) -> np.ndarray:
    """All documents as one stream, each followed by the end-of-text token."""
    eos = tok.convert_tokens_to_ids(tok.eos_token)
    pieces, ends = _chunks(docs)
    ends_set = set(ends)
    enc = tok.backend_tokenizer.encode_batch(pieces, add_special_tokens=False) if pieces else []
    arrays = []
    for i, e in enumerate(enc):
        arrays.append(np.asarray(e.ids, dtype=np.int64))
        if i in ends_set:
            arrays.append(np.asarray([eos], dtype=np.int64))
    ids = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    if ids.size and ids.max() > np.iinfo(dtype).max:
        raise UsageError(f"backend_options.token_dtype={dtype.name}: token id {int(ids.max())} does not fit")
    return ids.astype(dtype)


@contextlib.contextmanager
def atomic_folder(path: Path, prefix: str = ".tmp-") -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` in one rename, on any
    error (or a kill) ``path`` is untouched and the temporary folder is removed (or ignored)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(path.parent, prefix)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created with its folder) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_prepared(folder: Path) -> PreparedData | None:
    meta = folder / "meta.json"
    if not meta.exists():
        return None
    m = json.loads(meta.read_text())
    return PreparedData(
        tokenizer_dir=str(folder / "tokenizer"),
        train_path=str(folder / "train.bin"),
        val_path=str(folder / "val.bin"),
        dtype=m["dtype"],
        n_train_tokens=int(m["n_train_tokens"]),
        n_val_tokens=int(m["n_val_tokens"]),
    )


def prepare_data(
    data_spec: Any, vocab_size: int, cache_dir: str | Path | None = None, dtype: str | None = None
) -> PreparedData:
    """Tokenize ``data_spec``'s corpus once (cached; safe to call from concurrent processes)."""
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    dt = token_dtype(vocab_size, dtype)
    folder = cache / "data" / data_key(data_spec, vocab_size, dtype)
    done = _read_prepared(folder)
    if done is not None:
        return done
    with file_lock(folder.with_name(folder.name + ".lock")):
        done = _read_prepared(folder)
        if done is not None:
            return done
        _prepare_into(folder, data_spec, vocab_size, dt)
    result = _read_prepared(folder)
    assert result is not None
    return result


def _prepare_into(folder: Path, data_spec: Any, vocab_size: int, dt: np.dtype) -> None:
    docs = truncate_documents(
        load_documents(data_spec.source, data_spec.text_column, data_spec.hf_split), data_spec.max_chars
    )
    if not docs:
        raise UsageError(f"data.source={data_spec.source!r}: no text found")
    train_docs, val_docs = split_held_out(docs, data_spec.val_frac)
    if data_spec.tokenizer == "bpe":
        if vocab_size < 256 + len(SPECIAL_TOKENS):
            raise UsageError(
                f"shape.vocab={vocab_size}: a byte-level BPE needs at least {256 + len(SPECIAL_TOKENS)}"
            )
        tok = train_bpe(train_docs, vocab_size)
        if len(tok) < MIN_VOCAB_USED * vocab_size:
            raise UsageError(
                f"model.vocab={vocab_size}: the BPE learned only {len(tok):,} tokens from "
                f"{sum(map(len, train_docs)):,} characters of data.source={data_spec.source!r}, so "
                f"{100 * (1 - len(tok) / vocab_size):.1f}% of the embedding rows would never be used; "
                f"set model.vocab to at most {len(tok)} or give more text"
            )
    else:
        tok = load_tokenizer(data_spec.tokenizer)
    if len(tok) > vocab_size:
        raise UsageError(
            f"shape.vocab={vocab_size}: smaller than the tokenizer's {len(tok)} tokens; raise shape.vocab"
        )
    train = tokenize(tok, train_docs, dt)
    val = tokenize(tok, val_docs, dt)
    if val.size < 2:
        raise UsageError(
            f"data.val_frac={data_spec.val_frac}: the validation split is empty; raise it or add text"
        )
    with atomic_folder(folder, prefix=f".{folder.name}.") as tmp:
        tok.save_pretrained(str(tmp / "tokenizer"))
        train.tofile(tmp / "train.bin")
        val.tofile(tmp / "val.bin")
        meta = {
            "source": data_spec.source,
            "tokenizer": data_spec.tokenizer,
            "vocab_size": vocab_size,
            "tokenizer_size": len(tok),
            "dtype": dt.name,
            "n_train_tokens": int(train.size),
            "n_val_tokens": int(val.size),
            "n_documents": len(docs),
            "train_chars": sum(map(len, train_docs)),
            "val_chars": sum(map(len, val_docs)),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")  # written last: marks completion
