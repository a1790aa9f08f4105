"""The entry point's CPU-testable parts: metrics rows, validation loss, result.json, the Llama
init workaround, and the refusals when CUDA or Nanotron is missing.

Nanotron cannot train here (no CUDA; it is not installable from PyPI). Where Nanotron's own
classes are needed, small stand-ins with the same hook names take their place, and each test
says so.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from nanotron_study import VOCAB, make_study, nanotron_spec

from scaling.backends.nanotron import NanotronBackend
from scaling.backends.nanotron.data import NanosetData, read_ds, token_dtype
from scaling.backends.nanotron.entry import (
    MetricsRecorder,
    build_result,
    eval_loss,
    main,
    missing_requirements,
    patch_llama_init,
    recording_trainer,
)
from scaling.store import RunDir


def test_nanoset_files_hold_the_same_tokens(tmp_path):
    spec = nanotron_spec()
    _, folder = make_study(tmp_path, spec)
    data = NanosetData.load(folder)
    assert data.token_size == 2 and data.train_tokens == 20_000
    raw = (folder / "train" / "train.ds").read_bytes()
    assert len(raw) == 2 * 20_000
    again = np.frombuffer(raw, dtype="<u2")
    assert np.array_equal(again, read_ds(data.train_folder / "train.ds", VOCAB))
    assert token_dtype(70_000) == np.dtype("<u4")


def test_metrics_rows_are_full_precision(tmp_path):
    spec = nanotron_spec()
    rd = RunDir(tmp_path / "run")
    rec = MetricsRecorder(rd, spec, gpus=2, peak_flops=1e12)
    row = rec.row(step=3, loss=5.123456789012, lr=1e-3, step_s=0.5, grad_norm=0.25, model_tflops_per_gpu=0.1)
    rec.append(row)
    back = rd.read_metrics()[0]
    assert back["loss"] == 5.123456789012  # not Nanotron's "5.12"
    assert back["tokens"] == 3 * spec.batch_tokens
    assert back["flops"] == pytest.approx(3 * spec.batch_tokens * 6 * spec.params)
    assert back["tokens_per_s"] == spec.batch_tokens / 0.5
    from scaling.flops import flops_per_token

    assert back["mfu"] == pytest.approx(back["tokens_per_s"] * flops_per_token(spec.model_shape, "matmul") / 2e12)


def test_recording_trainer_hooks_train_step_logs(tmp_path):
    """A stand-in base class with Nanotron's hook and attributes (DistributedTrainer needs CUDA)."""
    calls = []

    class FakeTrainer:  # the attributes RecordingTrainer reads, as DistributedTrainer has them
        def __init__(self):
            self.iteration_step = 7
            self.iteration_timer = types.SimpleNamespace(elapsed=0.25)
            self.sequence_length, self.global_batch_size = 32, 8
            self.unwrapped_model = types.SimpleNamespace(get_flops_per_sec=lambda **kw: (1.5, 2.0))
            self.lr_scheduler = types.SimpleNamespace(get_last_lr=lambda: [4e-4])
            self.grad_norm_unclipped = torch.tensor(0.5)

        def train_step_logs(self, outputs, loss_avg, z_loss_avg, tbi_logs):
            calls.append(loss_avg)

    spec = nanotron_spec()
    rd = RunDir(tmp_path / "run")
    cls = recording_trainer(FakeTrainer, MetricsRecorder(rd, spec, 2, None), is_logger=lambda t: True)
    t = cls()
    t.train_step_logs(outputs=[], loss_avg=torch.tensor(3.14159265, dtype=torch.float64), z_loss_avg=None, tbi_logs=None)
    t.train_step_logs(outputs=[], loss_avg=None, z_loss_avg=None, tbi_logs=None)  # not the loss rank
    rows = rd.read_metrics()
    assert len(calls) == 2 and len(rows) == 1
    assert rows[0]["step"] == 7 and rows[0]["loss"] == pytest.approx(3.14159265, abs=1e-12)
    assert rows[0]["lr"] == 4e-4 and rows[0]["grad_norm"] == 0.5 and rows[0]["model_tflops_per_gpu"] == 1.5


def test_llama_init_workaround_hands_the_whole_config(monkeypatch):
    """Stand-in modules for nanotron.models.llama and nanotron.scaling.parametrization."""
    seen = []

    class StandardParametrizator:
        def __init__(self, config):
            seen.append(config)
            _ = (config.model.init_method.std, config.parallelism.tp)  # what the real one reads

    llama = types.ModuleType("nanotron.models.llama")
    llama.StandardParametrizator = StandardParametrizator
    param = types.ModuleType("nanotron.scaling.parametrization")
    param.StandardParametrizator = StandardParametrizator
    for name, mod in {"nanotron": types.ModuleType("nanotron"), "nanotron.models": types.ModuleType("nanotron.models"),
                      "nanotron.models.llama": llama, "nanotron.scaling": types.ModuleType("nanotron.scaling"),
                      "nanotron.scaling.parametrization": param}.items():  # fmt: skip
        monkeypatch.setitem(sys.modules, name, mod)
    sys.modules["nanotron.models"].llama = llama
    sys.modules["nanotron.scaling"].parametrization = param
    parallelism = types.SimpleNamespace(tp=2)
    model_args = types.SimpleNamespace(init_method=types.SimpleNamespace(std=0.02))
    with pytest.raises(AttributeError):
        StandardParametrizator(config=model_args)  # the bug: ModelArgs has no .model
    patch_llama_init(parallelism)
    llama.StandardParametrizator(config=model_args)  # what init_model_randomly calls
    assert seen[-1].model is model_args and seen[-1].parallelism is parallelism
    whole = types.SimpleNamespace(model=model_args, parallelism=parallelism)
    llama.StandardParametrizator(config=whole)  # an upstream fix passes the whole Config: unchanged
    assert seen[-1] is whole


def test_eval_loss_uses_the_local_backends_windows():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                         vocab_size=64, max_position_embeddings=32))  # fmt: skip
    tokens = np.random.default_rng(0).integers(0, 64, 16 * 5 + 3).astype(np.uint16)
    got = eval_loss(model, tokens, seq_len=16, max_tokens=10_000, batch_size=2)
    # the local backend's windows: start every seq_len tokens, seq_len + 1 long (targets overlap inputs by one)
    x = torch.stack([torch.from_numpy(tokens[i * 16 : i * 16 + 17].astype(np.int64)) for i in range(5)])
    with torch.no_grad():
        logits = model(x[:, :-1]).logits
    direct = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), x[:, 1:].reshape(-1))
    assert got == pytest.approx(float(direct), rel=1e-5)
    first_two = torch.nn.functional.cross_entropy(logits[:2].reshape(-1, 64), x[:2, 1:].reshape(-1))
    assert eval_loss(model, tokens, seq_len=16, max_tokens=32) == pytest.approx(float(first_two), rel=1e-5)


def test_result_has_the_layout_keys():
    spec = nanotron_spec()
    rows = [{"step": i, "loss": 10 - i * 0.1, "tokens_per_s": 100.0, "mfu": 0.3} for i in range(1, 21)]
    r = build_result(spec, rows, eval_loss_value=8.5, wall_time=12.0, train_tokens_available=20_000)
    assert spec.steps == 20 and r["final_loss_steps"] == 1  # steps // 20, as local runs
    r = build_result(spec, rows, eval_loss_value=8.5, wall_time=12.0, train_tokens_available=20_000, final_loss_steps=10)
    for key in ("final_loss", "eval_loss", "params", "non_embedding_params", "embedding_params", "tokens", "flops",
                "flops_non_embedding", "wall_time", "steps", "epochs", "tokens_per_s", "mfu", "budget", "name"):  # fmt: skip
        assert key in r, key
    assert r["final_loss"] == pytest.approx(np.mean([10 - i * 0.1 for i in range(11, 21)]))
    assert r["flops"] == 6 * spec.params * spec.tokens
    assert r["epochs"] == spec.tokens / 20_000


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_missing_cuda_or_nanotron_is_said_plainly(tmp_path, capsys):
    missing = missing_requirements(needs_flash_attn=False)
    assert any("CUDA" in m for m in missing) and not any(m.startswith("flash_attn") for m in missing)
    assert any(m.startswith("flash_attn") for m in missing_requirements(needs_flash_attn=True))
    assert main(["--run-dir", str(tmp_path)]) == 1
    assert "cannot train with Nanotron here" in capsys.readouterr().err
    spec = nanotron_spec()
    store, _ = make_study(tmp_path, spec)
    with pytest.raises(RuntimeError, match="missing: a CUDA GPU"):
        NanotronBackend().train(spec, store.run(spec.run_id))
    cfg = store.run(spec.run_id).path / "nanotron" / "config.yaml"
    assert cfg.exists()  # the config was written before the refusal: inspectable


def test_nanoset_from_the_local_backends_tokens(tmp_path):
    """Both backends train on the same tokens: the .ds files are the local backend's token files."""
    import os

    from scaling.backends.local.data import prepare_data
    from scaling.backends.nanotron.data import nanoset_folder, prepare_from_local
    from scaling.runspec import RunSpec

    corpus = tmp_path / "corpus.txt"
    words = np.random.default_rng(0).choice(["the", "king", "and", "lord", "spake", "unto", "thee", "thou"], 6000)
    corpus.write_text("\n".join(" ".join(words[i : i + 12]) for i in range(0, 6000, 12)))
    s = nanotron_spec()
    s = RunSpec.model_validate({**s.model_dump(), "shape": {**s.shape.model_dump(), "vocab": 290},
                                "data": {"source": str(corpus), "tokenizer": "bpe", "val_frac": 0.1}})  # fmt: skip
    folder = nanoset_folder(tmp_path / "data", s.data.model_dump(mode="json"), 290)
    data = prepare_from_local(s, folder)
    local = prepare_data(s.data, 290, cache_dir=tmp_path / "data")
    for ours, theirs in ((data.train_folder / "train.ds", local.train_path), (data.val_file, local.val_path)):
        assert Path(ours).read_bytes() == Path(theirs).read_bytes()
    assert os.stat(data.train_folder / "train.ds").st_ino == os.stat(local.train_path).st_ino  # hard link, no copy
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(data.tokenizer_dir)) == 290  # Nanotron asserts len(tokenizer) == vocab
    assert data.eos_id is not None
    NanotronBackend().prepare([s], str(tmp_path / "data"))  # finds the prepared folder, validates the spec
