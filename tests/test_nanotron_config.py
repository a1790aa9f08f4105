"""Generated Nanotron configs against the pinned commit's schema (strict, as dacite parses them)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml

from scaling.backends.nanotron import NANOTRON_COMMIT
from scaling.backends.nanotron.config import build_config, lr_schedule, plan_for, to_yaml
from scaling.errors import UsageError
from scaling.runspec import RunSpec

SCHEMA = json.loads((Path(__file__).parent / "fixtures" / "nanotron_schema.json").read_text())


# ---- a strict validator of the fixture's type language -------------------------------------------


class SchemaError(ValueError):
    pass


def _split_args(inner: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        depth += ch == "["
        depth -= ch == "]"
        cur += ch
    return [*out, cur.strip()] if cur.strip() else out


def check(value, typ: str, path: str) -> str:
    """Validate ``value`` as ``typ``; return the class or union member it matched."""
    m = re.fullmatch(r"(\w+)\[(.*)\]", typ)
    if m:
        head, args = m.group(1), _split_args(m.group(2))
        if head == "Optional":
            return "None" if value is None else check(value, args[0], path)
        if head == "List":
            if not isinstance(value, list):
                raise SchemaError(f"{path}: expected a list, got {value!r}")
            for i, v in enumerate(value):
                check(v, args[0], f"{path}[{i}]")
            return "list"
        if head == "Union":  # dacite: the first member that parses wins
            errors = []
            for a in args:
                try:
                    return check(value, a, path)
                except SchemaError as e:
                    errors.append(str(e))
            raise SchemaError(f"{path}: matches no member of {typ}: {errors}")
        raise SchemaError(f"unknown type {typ}")
    if typ == "Any":
        return "Any"
    if typ == "None":
        if value is not None:
            raise SchemaError(f"{path}: expected null")
        return "None"
    scalars = {"int": int, "bool": bool, "str": str, "dict": dict, "list": list}
    if typ in scalars:
        if not isinstance(value, scalars[typ]) or (typ == "int" and isinstance(value, bool)):
            raise SchemaError(f"{path}: expected {typ}, got {value!r}")
        return typ
    if typ == "float":  # dacite accepts an int where a float is declared
        if not isinstance(value, (float, int)) or isinstance(value, bool):
            raise SchemaError(f"{path}: expected float, got {value!r}")
        return typ
    if typ == "Path":
        if not isinstance(value, str):
            raise SchemaError(f"{path}: expected a path string, got {value!r}")
        return typ
    if typ in SCHEMA["enums"]:
        allowed = SCHEMA["enums"][typ]
        v = value.upper() if SCHEMA["enum_case"].get(typ) == "upper" and isinstance(value, str) else value
        if v not in allowed:
            raise SchemaError(f"{path}: {value!r} not one of {allowed}")
        return typ
    if typ in SCHEMA["classes"]:
        fields = SCHEMA["classes"][typ]
        if not isinstance(value, dict):
            raise SchemaError(f"{path}: expected a mapping for {typ}, got {value!r}")
        unknown = set(value) - set(fields)
        if unknown:
            raise SchemaError(f"{path}: unknown key(s) {sorted(unknown)} for {typ}")
        for name, f in fields.items():
            if name not in value:
                if f["required"]:
                    raise SchemaError(f"{path}.{name}: required by {typ}")
                continue
            check(value[name], f["type"], f"{path}.{name}")
        return typ
    raise SchemaError(f"{path}: type {typ} not in the fixture")


def validate(cfg: dict) -> None:
    """Types and keys, then the value checks of the dataclasses' __post_init__."""
    check(cfg, SCHEMA["root"], "config")
    for key in SCHEMA["not_written"]:  # sections whose fields the fixture does not list
        assert cfg.get(key) is None, key
    lr = cfg["optimizer"]["learning_rate_scheduler"]
    assert lr.get("lr_warmup_style") in SCHEMA["checks"]["LRSchedulerArgs.lr_warmup_style"]["in"]
    assert lr.get("lr_decay_style") in SCHEMA["checks"]["LRSchedulerArgs.lr_decay_style"]["in"]
    assert cfg["logging"]["log_level"] in SCHEMA["checks"]["LoggingArgs.log_level"]["in"]
    stages = cfg["data_stages"]
    assert any(s["start_training_step"] == 1 for s in stages)
    mc, par = cfg["model"]["model_config"], cfg["parallelism"]
    assert mc["num_attention_heads"] % par["tp"] == 0
    assert mc["num_key_value_heads"] >= par["tp"]
    assert mc["num_attention_heads"] % mc["num_key_value_heads"] == 0
    for s in stages:
        ds = s["data"]["dataset"]
        assert ds["vocab_size"] == mc["vocab_size"]
        assert ds["tokenizer_name"] == cfg["tokenizer"]["tokenizer_name_or_path"]


# ---- specs -----------------------------------------------------------------------------------------


def spec(**kw) -> RunSpec:
    base = {
        "shape": {"layers": 4, "hidden": 256, "heads": 8, "kv_heads": 4, "vocab": 1024, "seq_len": 128},
        "tokens": 1_000_000,
        "batch_tokens": 128 * 64,
        "optimizer": {"lr": 1e-3},
        "backend": "nanotron",
        "backend_options": {"gpus_per_node": 8},
    }
    for k, v in kw.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return RunSpec.model_validate(base)


SPECS = {
    "cosine-dp8": spec(),
    "wsd-1sqrt": spec(schedule={"kind": "wsd", "decay_frac": 0.2, "decay_shape": "1-sqrt"}),
    "constant-tied": spec(schedule={"kind": "constant"}, shape={"tied": True}),
    "tp2-two-nodes": spec(backend_options={"nodes": 2, "gpus_per_node": 4, "tp": 2}, batch_tokens=128 * 96),
    "pp2-recompute": spec(backend_options={"gpus_per_node": 4, "pp": 2, "tp": 1, "recompute": True}),
    "big-1b": spec(shape={"layers": 16, "hidden": 2048, "heads": 16, "kv_heads": 8, "vocab": 32000, "seq_len": 2048},
                   tokens=20_000_000_000, batch_tokens=2048 * 512, backend_options={"nodes": 4, "gpus_per_node": 8}),
}  # fmt: skip


def _config(s: RunSpec, tmp_path: Path) -> dict:
    return build_config(s, run_dir=tmp_path / "runs" / s.run_id, train_folder=tmp_path / "data/train", tokenizer_dir=tmp_path / "tok")


@pytest.mark.parametrize("name", SPECS)
def test_generated_config_matches_pinned_schema(name, tmp_path):
    cfg = yaml.safe_load(to_yaml(_config(SPECS[name], tmp_path)))  # what Nanotron will read
    validate(cfg)
    assert check(cfg["model"]["model_config"], SCHEMA["classes"]["ModelArgs"]["model_config"]["type"], "m") == "Qwen2Config"
    assert check(cfg["model"]["init_method"], SCHEMA["classes"]["ModelArgs"]["init_method"]["type"], "i") == "RandomInit"
    ds_type = SCHEMA["classes"]["DataArgs"]["dataset"]["type"]
    assert check(cfg["data_stages"][0]["data"]["dataset"], ds_type, "d") == "NanosetDatasetsArgs"
    opt_type = SCHEMA["classes"]["OptimizerArgs"]["optimizer_factory"]["type"]
    assert check(cfg["optimizer"]["optimizer_factory"], opt_type, "o") == "AdamWOptimizerArgs"


def test_fixture_is_for_the_pinned_commit():
    assert SCHEMA["commit"] == NANOTRON_COMMIT


def test_validator_rejects_unknown_missing_and_mistyped_keys(tmp_path):
    cfg = _config(SPECS["cosine-dp8"], tmp_path)
    validate(cfg)
    bad = json.loads(json.dumps(cfg))
    bad["tokens"]["train_step"] = 3
    with pytest.raises(SchemaError, match="unknown key"):
        check(bad, "Config", "config")
    bad = json.loads(json.dumps(cfg))
    del bad["tokens"]["micro_batch_size"]
    with pytest.raises(SchemaError, match="micro_batch_size: required"):
        check(bad, "Config", "config")
    bad = json.loads(json.dumps(cfg))
    bad["optimizer"]["learning_rate_scheduler"]["lr_warmup_style"] = None  # str, not Optional: dacite refuses null
    with pytest.raises(SchemaError, match="expected str"):
        check(bad, "Config", "config")
    bad = json.loads(json.dumps(cfg))
    bad["tokens"]["train_steps"] = "100"
    with pytest.raises(SchemaError, match="expected int"):
        check(bad, "Config", "config")
    bad = json.loads(json.dumps(cfg))
    bad["model"]["model_config"]["is_llama_confg"] = True
    assert check(bad["model"]["model_config"], "Union[LlamaConfig, Starcoder2Config, Qwen2Config, Any]", "m") == "Any"
    bad = json.loads(json.dumps(cfg))
    bad["parallelism"]["tp_mode"] = "SEQUENCE"
    with pytest.raises(SchemaError, match="not one of"):
        check(bad, "Config", "config")


@pytest.mark.parametrize("name", SPECS)
def test_parameter_count_matches_scaling_flops(name, tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    s = SPECS[name]
    mc = _config(s, tmp_path)["model"]["model_config"]
    hf = LlamaConfig(
        hidden_size=mc["hidden_size"], intermediate_size=mc["intermediate_size"], num_hidden_layers=mc["num_hidden_layers"],
        num_attention_heads=mc["num_attention_heads"], num_key_value_heads=mc["num_key_value_heads"],
        vocab_size=mc["vocab_size"], tie_word_embeddings=mc["tie_word_embeddings"], attention_bias=mc["attention_bias"],
    )  # fmt: skip
    with torch.device("meta"):
        n = sum(p.numel() for p in LlamaForCausalLM(hf).parameters())
    assert n == s.params


@pytest.mark.parametrize("name", SPECS)
def test_tokens_and_batch_split(name, tmp_path):
    s = SPECS[name]
    cfg = _config(s, tmp_path)
    t, p = cfg["tokens"], cfg["parallelism"]
    assert p["dp"] * p["tp"] * p["pp"] == s.backend_options.get("nodes", 1) * s.backend_options["gpus_per_node"]
    assert p["dp"] * t["micro_batch_size"] * t["batch_accumulation_per_replica"] * t["sequence_length"] == s.batch_tokens
    assert t["train_steps"] == math.ceil(s.tokens / s.batch_tokens)
    assert cfg["checkpoints"]["resume_checkpoint_path"] == cfg["checkpoints"]["checkpoints_path"]
    assert cfg["model"]["make_vocab_size_divisible_by"] == 1


def test_lr_schedules():
    cos = lr_schedule(SPECS["cosine-dp8"])
    steps = SPECS["cosine-dp8"].steps
    warm = round(0.05 * steps)
    assert cos == {"learning_rate": 1e-3, "lr_warmup_steps": warm, "lr_warmup_style": "linear", "min_decay_lr": 1e-4,
                   "lr_decay_style": "cosine", "lr_decay_starting_step": warm, "lr_decay_steps": steps - warm}  # fmt: skip
    wsd = lr_schedule(SPECS["wsd-1sqrt"])
    decay = round(0.2 * steps)
    assert (wsd["lr_decay_style"], wsd["lr_decay_starting_step"], wsd["lr_decay_steps"]) == ("1-sqrt", steps - decay, decay)
    assert wsd["lr_decay_starting_step"] + wsd["lr_decay_steps"] == steps
    const = lr_schedule(SPECS["constant-tied"])
    assert const["min_decay_lr"] == const["learning_rate"]
    with pytest.raises(UsageError, match="schedule.decay_frac"):
        lr_schedule(spec(schedule={"kind": "wsd", "warmup_frac": 0.5, "decay_frac": 0.9}))


def test_plan_prefers_data_parallel_for_small_models():
    plan = plan_for(SPECS["cosine-dp8"])
    assert (plan.dp, plan.tp, plan.pp, plan.recompute) == (8, 1, 1, False)
    big = plan_for(SPECS["big-1b"])
    assert big.memory.total_gib <= big.gpu_memory_gib
    assert big.gpus == 32
