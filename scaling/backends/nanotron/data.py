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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scaling.errors import UsageError
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
