"""Exact parameter counts of released models, HF config parsing, and the shape ladder."""

from __future__ import annotations

import json
import math
import random

import pytest
from hf_configs import LLAMA2_7B, QWEN2_0_5B, RELEASED, SMOLLM2_135M

from scaling.shapes import LadderRule, ModelShape, ShapeError, ladder, shape_for_params


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_model_parameter_counts_are_exact(name):
    config, exact = RELEASED[name]
    shape = ModelShape.from_hf_config(config)
    assert shape.params == exact
    assert shape.params == shape.non_embedding_params + shape.embedding_params


def test_llama2_7b_split_and_smollm2_tied():
    s = ModelShape.from_hf_config(LLAMA2_7B)
    assert s.embedding_params == 2 * 32000 * 4096  # input embedding and untied lm_head
    assert s.non_embedding_params == 6_738_415_616 - 262_144_000
    t = ModelShape.from_hf_config(SMOLLM2_135M)
    assert t.tied and t.embedding_params == 49152 * 576  # one shared matrix
    assert t.n_kv_heads == 3 and t.d_head == 64


def test_qwen2_has_qkv_bias_and_reads_from_a_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(QWEN2_0_5B))
    from_file = ModelShape.from_hf_config(path, seq_len=4096)
    from_dir = ModelShape.from_hf_config(tmp_path)
    assert from_file.qkv_bias and from_file.seq_len == 4096
    assert from_file.params == from_dir.params == 494_032_768
    # without the biases the count drops by exactly (q_dim + 2 kv_dim) per layer
    assert from_file.replace(qkv_bias=False).params == 494_032_768 - 24 * (896 + 2 * 128)


def test_hf_config_round_trip():
    s = ModelShape(layers=4, hidden=256, heads=8, kv_heads=2, ffn=704, vocab=1024, seq_len=128, tied=True)
    back = ModelShape.from_hf_config(s.to_hf_config())
    assert back.params == s.params and back.to_dict() == s.to_dict()


@pytest.mark.parametrize(
    "bad, field",
    [
        (dict(layers=0, hidden=64, heads=1), "layers"),
        (dict(layers=2, hidden=64, heads=3), "heads"),
        (dict(layers=2, hidden=64, heads=4, kv_heads=3), "kv_heads"),
        (dict(layers=2, hidden=64, heads=4, ffn=0), "ffn"),
    ],
)
def test_impossible_shapes_name_the_field(bad, field):
    with pytest.raises(ShapeError, match=field):
        ModelShape(**bad)


def test_unknown_family_and_missing_file(tmp_path):
    with pytest.raises(ShapeError, match="model_type"):
        ModelShape.from_hf_config({**LLAMA2_7B, "model_type": "gpt2"})
    with pytest.raises(ShapeError, match="no such file"):
        ModelShape.from_hf_config(tmp_path / "nope.json")


@pytest.mark.parametrize("target", [3e8, 1e9, 7e9, 7e10, 4e11])
def test_ladder_lands_near_the_target(target):
    s = shape_for_params(target)
    assert abs(s.params / target - 1) < 0.02
    assert 0.25 < s.aspect_ratio / 64 < 4  # the rule's aspect ratio, within the search window
    assert s.hidden % 64 == 0 and s.d_head == 64


def test_ladder_counts_the_convention_it_is_asked_for():
    ne = shape_for_params(1e9, count="non_embedding")
    tot = shape_for_params(1e9, count="total")
    assert abs(ne.non_embedding_params / 1e9 - 1) < 0.02
    assert abs(tot.params / 1e9 - 1) < 0.02
    assert ne.params > tot.params  # embeddings come on top of the non-embedding target


def test_ladder_is_monotone_and_deduplicated():
    shapes = ladder([1e8, 1e8, 3e8, 1e9, 3e9])
    counts = [s.params for s in shapes]
    assert len(shapes) == 4 and counts == sorted(counts)


def test_ladder_rule_count_matches_the_shape():
    rng = random.Random(0)
    for _ in range(200):
        rule = LadderRule(head_dim=rng.choice([16, 32, 64, 128]), kv_ratio=rng.choice([1, 2, 4, 8]))
        layers, hidden = rng.randint(1, 60), 64 * rng.randint(1, 80)
        for conv in ("total", "non_embedding"):
            assert rule.count(layers, hidden, 1024, conv) == rule.shape(layers, hidden, 1024, 128).count(conv)


def test_gqa_ladder():
    s = shape_for_params(7e9, rule=LadderRule(kv_ratio=4, aspect_ratio=128))
    assert s.heads == 4 * s.n_kv_heads
    assert abs(math.log(s.params / 7e9)) < 0.02


@pytest.mark.slow
def test_counts_match_transformers_models():
    """The formula against real transformers models (built on the meta device: no memory)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    for name in ("SmolLM2-135M", "Qwen2-0.5B", "Mistral-7B-v0.1"):
        config, exact = RELEASED[name]
        cls = transformers.CONFIG_MAPPING[config["model_type"]]
        cfg = cls(**{k: v for k, v in config.items() if k != "model_type"})
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(cfg)
        assert sum(p.numel() for p in model.parameters()) == exact == ModelShape.from_hf_config(config).params
