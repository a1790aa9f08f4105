"""The local backend's prepared tokens in the format Nanotron's data stage reads.

Nanotron's ``NanosetDatasetsArgs`` (pinned commit) points at folders of ``*.ds`` files, read by
``data/tokenized_bytes.py`` through datatrove's ``DatatroveFolderDataset``: each file is a flat
array of token ids, ``token_size_in_bytes`` = 2 (uint16, vocabularies up to 65,536) or 4
(uint32), little-endian, cut into samples of ``sequence_length + 1`` tokens. The local backend
writes the same stream as a uint16/uint32 memmap; converting is a byte copy in a fixed
endianness, so both backends train on the very same tokens in the same order (before shuffling).

Folder per tokenized corpus (``DATA/nanoset/<key>/``)::

    train/train.ds     training tokens       (dataset_folder of the data stage)
    val/val.ds         held-out tokens       (the entry point's validation loss)
    meta.json          vocab, token_size, token counts, tokenizer folder, eos id
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scaling.errors import UsageError
from scaling.runspec import RunSpec
from scaling.store import atomic_write_json, read_json

CHUNK = 1 << 24  # tokens copied at a time


def token_dtype(vocab: int) -> np.dtype:
    """Little-endian uint16 when every id fits, else uint32 (datatrove's token_size 2 or 4)."""
    return np.dtype("<u2") if vocab <= 65536 else np.dtype("<u4")


def write_ds(tokens: np.ndarray, path: str | Path, vocab: int) -> int:
    """Write ``tokens`` as a ``.ds`` file (atomically: temp name, then rename); return the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dt = token_dtype(vocab)
    tmp = path.with_name(f".{path.name}.tmp")
    n = len(tokens)
    with open(tmp, "wb") as f:
        for i in range(0, n, CHUNK):
            chunk = np.asarray(tokens[i : i + CHUNK])
            if chunk.size and int(chunk.max()) >= vocab:
                raise UsageError(f"data: token id {int(chunk.max())} >= vocab={vocab}; the tokenizer and shape.vocab disagree")
            f.write(chunk.astype(dt, copy=False).tobytes())
    tmp.replace(path)
    return n


def read_ds(path: str | Path, vocab: int) -> np.memmap:
    return np.memmap(path, dtype=token_dtype(vocab), mode="r")


@dataclass(frozen=True)
class NanosetData:
    folder: str
    vocab: int
    token_size: int
    train_tokens: int
    val_tokens: int
    tokenizer_dir: str
    eos_id: int | None = None
    bos_id: int | None = None

    @property
    def train_folder(self) -> Path:
        return Path(self.folder) / "train"

    @property
    def val_file(self) -> Path:
        return Path(self.folder) / "val" / "val.ds"

    @classmethod
    def load(cls, folder: str | Path) -> NanosetData:
        meta = read_json(Path(folder) / "meta.json")
        if meta is None:
            raise UsageError(f"data: {folder}/meta.json missing; run the sweep's prepare step first")
        return cls(**meta)


def write_nanoset(
    folder: str | Path,
    *,
    train: np.ndarray,
    val: np.ndarray,
    vocab: int,
    tokenizer_dir: str | Path,
    eos_id: int | None = None,
    bos_id: int | None = None,
) -> NanosetData:
    """Write train/val ``.ds`` files and ``meta.json`` (written last: its presence means complete)."""
    folder = Path(folder)
    n_train = write_ds(train, folder / "train" / "train.ds", vocab)
    n_val = write_ds(val, folder / "val" / "val.ds", vocab)
    data = NanosetData(
        folder=str(folder.resolve()),
        vocab=vocab,
        token_size=token_dtype(vocab).itemsize,
        train_tokens=n_train,
        val_tokens=n_val,
        tokenizer_dir=str(Path(tokenizer_dir).resolve()),
        eos_id=eos_id,
        bos_id=bos_id,
    )
    atomic_write_json(folder / "meta.json", asdict(data))
    return data


def data_key(data_spec: dict[str, Any], vocab: int) -> str:
    blob = json.dumps({"data": data_spec, "vocab": vocab}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def nanoset_folder(data_dir: str | Path, data_spec: dict[str, Any], vocab: int) -> Path:
    return Path(data_dir) / "nanoset" / data_key(data_spec, vocab)


def link_or_copy_ds(src: str | Path, dst: str | Path, src_dtype: str, vocab: int) -> int:
    """A local ``.bin`` memmap as a ``.ds`` file. On a little-endian machine with the same token
    width the bytes are identical, so the file is hard-linked (no copy of a large corpus);
    otherwise it is rewritten."""
    src, dst = Path(src), Path(dst)
    want = token_dtype(vocab)
    same = np.dtype(src_dtype).itemsize == want.itemsize and sys.byteorder == "little"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if same:
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        tmp.replace(dst)
        return os.path.getsize(dst) // want.itemsize
    return write_ds(np.memmap(src, dtype=np.dtype(src_dtype), mode="r"), dst, vocab)


def padded_tokenizer(tokenizer_dir: str | Path, vocab: int, out_dir: str | Path) -> tuple[Path, int | None, int | None]:
    """A copy of the tokenizer with exactly ``vocab`` entries.

    Nanotron's ``run_train.py`` asserts ``len(tokenizer) == vocab_size`` for nanosets; a BPE
    trained to at most ``vocab`` entries may have fewer, so unused placeholder tokens fill the
    gap (their ids never occur in the data). Returns the folder, eos and bos ids.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    n = len(tok)
    if n > vocab:
        raise UsageError(f"shape.vocab={vocab}: smaller than the tokenizer's {n} tokens; raise shape.vocab")
    if n < vocab:
        tok.add_tokens([f"<|unused_{i}|>" for i in range(vocab - n)], special_tokens=True)
    if len(tok) != vocab:
        raise UsageError(f"data.tokenizer: could not pad the tokenizer to shape.vocab={vocab} (got {len(tok)})")
    out = Path(out_dir)
    tok.save_pretrained(str(out))
    return out, tok.eos_token_id, tok.bos_token_id


def prepare_from_local(spec: RunSpec, folder: str | Path) -> NanosetData:
    """Tokenize with the local backend (same corpus, tokenizer and split) and expose the result
    as nanoset files in ``folder``; the local backend's cache sits beside it."""
    from scaling.backends.local.data import prepare_data

    folder = Path(folder)
    vocab = spec.shape.vocab
    prepared = prepare_data(spec.data, vocab, cache_dir=folder.parents[1])
    n_train = link_or_copy_ds(prepared.train_path, folder / "train" / "train.ds", prepared.dtype, vocab)
    n_val = link_or_copy_ds(prepared.val_path, folder / "val" / "val.ds", prepared.dtype, vocab)
    tok_dir, eos, bos = padded_tokenizer(prepared.tokenizer_dir, vocab, folder / "tokenizer")
    data = NanosetData(
        folder=str(folder.resolve()), vocab=vocab, token_size=token_dtype(vocab).itemsize, train_tokens=n_train,
        val_tokens=n_val, tokenizer_dir=str(tok_dir.resolve()), eos_id=eos, bos_id=bos,
    )  # fmt: skip
    atomic_write_json(folder / "meta.json", asdict(data))  # last: marks the folder complete
    return data
