"""Checkpoint conversion: a random transformers Llama -> Nanotron's on-disk layout -> transformers.

The Nanotron layout is written by ``tests/nanotron_layout.py`` (a test-only mirror of what the
pinned Nanotron commit saves; Nanotron itself needs CUDA and cannot run here).
"""

from __future__ import annotations

import json

import pytest
import torch
from nanotron_layout import write_nanotron_checkpoint
from transformers import LlamaConfig, LlamaForCausalLM

from scaling.backends.nanotron.convert import convert_checkpoint, load_hf_model, load_nanotron_state
from scaling.errors import UsageError


def _tiny(tied: bool = False, kv: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=kv,
        vocab_size=128, max_position_embeddings=32, rms_norm_eps=1e-5, tie_word_embeddings=tied,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norms away from 1 so a swapped norm would show
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("model_class", ["qwen2", "llama"])
@pytest.mark.parametrize("tp,tied", [(1, False), (2, False), (2, True)])
def test_round_trip_identical_logits(tmp_path, tp, tied, model_class):
    torch.set_num_threads(1)
    ref = _tiny(tied=tied)
    write_nanotron_checkpoint(ref, tmp_path / "checkpoints", tp=tp, step=7, model_class=model_class)
    out = load_hf_model(tmp_path / "checkpoints")
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ref(ids).logits, out(ids).logits
    assert torch.equal(a, b)
    for k, v in ref.state_dict().items():
        assert torch.equal(v, out.state_dict()[k]), k


def test_tp2_shards_are_merged_by_metadata(tmp_path):
    ref = _tiny()
    ckpt = write_nanotron_checkpoint(ref, tmp_path / "ck", tp=2)
    files = sorted((ckpt / "model/model/decoder/0/pp_block/attn/qkv_proj").iterdir())
    assert [f.name for f in files] == [
        "model_weight_pp-rank-0-of-1_tp-rank-0-of-2.safetensors",
        "model_weight_pp-rank-0-of-1_tp-rank-1-of-2.safetensors",
    ]
    state = load_nanotron_state(ckpt)
    qkv = state["model.decoder.0.pp_block.attn.qkv_proj.weight"]
    sd = ref.state_dict()
    want = torch.cat([sd[f"model.layers.0.self_attn.{x}_proj.weight"] for x in "qkv"])
    assert torch.equal(qkv, want)  # rank 0 holds q[:half], k[:half], v[:half]: merged back in place


def test_missing_shard_is_refused(tmp_path):
    ckpt = write_nanotron_checkpoint(_tiny(), tmp_path / "ck", tp=2)
    (ckpt / "model/model/decoder/1/pp_block/mlp/down_proj/model_weight_pp-rank-0-of-1_tp-rank-1-of-2.safetensors").unlink()
    with pytest.raises(UsageError, match="down_proj.weight is missing shards"):
        load_nanotron_state(ckpt)


def test_convert_writes_model_and_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    ref = _tiny()
    write_nanotron_checkpoint(ref, tmp_path / "ck", tp=2)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(127)} | {"<unk>": 127}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(tmp_path / "tok")
    out = convert_checkpoint(tmp_path / "ck", tmp_path / "model", tokenizer_dir=tmp_path / "tok")
    again = LlamaForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(again(ids).logits, ref(ids).logits)
    assert len(AutoTokenizer.from_pretrained(out)) == 128
    assert json.loads((out / "nanotron_source.json").read_text())["checkpoint"].endswith("ck/10")


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(UsageError, match="latest.txt"):
        load_hf_model(tmp_path)


def test_metadata_strings_as_nanotron_writes_them():
    from scaling.backends.nanotron.convert import parse_shape, parse_slices_pairs

    # qkv_proj on TP rank 1 of 2 with chunks (4, 4, 4): SlicesPair.tuple_to_str output, numpy-2 shape repr
    pairs = "2,4,None|None,None,None#6,8,None|None,None,None;4,6,None|None,None,None#10,12,None|None,None,None"
    parsed = parse_slices_pairs(pairs)
    assert parsed[0] == ((slice(2, 4), slice(None)), (slice(6, 8), slice(None)))
    assert len(parsed) == 2
    assert parse_shape("(np.int64(12), 4)") == (12, 4) == parse_shape("(12, 4)")


@pytest.mark.parametrize("field,value", [("moe_config", {"num_experts": 8}), ("sliding_window_size", 16),
                                         ("no_rope_layer", 2), ("attention_bias", True)])  # fmt: skip
def test_a_qwen2_checkpoint_that_is_no_llama_is_refused(tmp_path, field, value):
    ckpt = write_nanotron_checkpoint(_tiny(), tmp_path / "ck", model_class="qwen2")
    cfg = json.loads((ckpt / "model_config.json").read_text())
    (ckpt / "model_config.json").write_text(json.dumps({**cfg, field: value}))
    with pytest.raises(UsageError, match=f"model_config.{field}="):
        load_hf_model(tmp_path / "ck")
