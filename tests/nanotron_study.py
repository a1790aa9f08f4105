"""Test helper: a study folder with a run spec, a tiny tokenizer and nanoset token files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scaling.backends.nanotron.data import nanoset_folder, write_nanoset
from scaling.runspec import RunSpec
from scaling.store import SweepStore

VOCAB = 256


def tiny_tokenizer(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB - 1)} | {"<eos>": VOCAB - 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<eos>").save_pretrained(folder)
    return folder


def nanotron_spec(**backend_options) -> RunSpec:
    return RunSpec.model_validate({
        "shape": {"layers": 2, "hidden": 64, "heads": 4, "kv_heads": 2, "vocab": VOCAB, "seq_len": 32},
        "tokens": 32 * 8 * 20, "batch_tokens": 32 * 8, "optimizer": {"lr": 1e-3}, "backend": "nanotron",
        "backend_options": {"gpus_per_node": 2, **backend_options}, "name": "tiny",
    })  # fmt: skip


def make_study(root: Path, spec: RunSpec) -> tuple[SweepStore, Path]:
    """STUDY/runs/<id>/spec.json plus STUDY/data/nanoset/<key>/ for the spec's corpus."""
    store = SweepStore(root)
    rd = store.run(spec.run_id)
    rd.write_spec(spec.to_json_dict())
    rng = np.random.default_rng(0)
    tok = tiny_tokenizer(root / "data" / "tokenizer")
    folder = nanoset_folder(root / "data", spec.data.model_dump(mode="json"), VOCAB)
    write_nanoset(folder, train=rng.integers(0, VOCAB, 20_000), val=rng.integers(0, VOCAB, 2_000), vocab=VOCAB,
                  tokenizer_dir=tok, eos_id=VOCAB - 1)  # fmt: skip
    return store, folder
