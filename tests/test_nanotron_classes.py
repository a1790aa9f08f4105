"""Every kind of config the backend writes, loaded by Nanotron's own ``get_config_from_file``
(dacite, ``strict=True``) at the pinned commit, and serialized back unchanged.

Nanotron's import needs flash_attn, grouped_gemm and triton; the loader stands in for them
(import-only, :mod:`scaling.backends.nanotron.missing_kernels`) in a process of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from nanotron_classes import load_with_nanotron
from test_nanotron_config import SPECS, spec

from scaling.backends.nanotron.config import ModelPath, build_config, model_path, options_of, to_yaml
from scaling.runspec import RunSpec

ROOT = Path(__file__).resolve().parents[1]
QWEN_FLASH, QWEN_SDPA, LLAMA = ModelPath("qwen2", "flash_attention_2"), ModelPath("qwen2", "sdpa"), ModelPath("llama", "flash_attention_2")


def _ladder_runs() -> list[RunSpec]:
    from scaling.sweep.grid import expand
    from scaling.sweep.spec import load_spec

    runs = sorted(expand(load_spec(ROOT / "sweeps" / "nanotron_chinchilla.yaml")), key=lambda r: r.params)
    return [runs[0], runs[-1]]


def _cases() -> dict[str, tuple[RunSpec, ModelPath]]:
    small, large = _ladder_runs()
    cases = {"ladder-smallest": (small, QWEN_FLASH), "ladder-largest-sdpa": (large, QWEN_SDPA)}
    for name, s in SPECS.items():
        cases[f"{name}-qwen2-flash"] = (s, QWEN_FLASH)
        cases[f"{name}-qwen2-sdpa"] = (s, QWEN_SDPA)
    cases["cosine-dp8-llama"] = (SPECS["cosine-dp8"], LLAMA)
    cases["zero1-float32"] = (spec(backend_options={"gpus_per_node": 8, "zero_stage": 1, "dtype": "float32"}), QWEN_SDPA)
    cases["afab-pp4-tied"] = (spec(shape={"tied": True}, backend_options={"gpus_per_node": 8, "pp": 4, "tp": 1,
                                                                          "pp_engine": "afab"}), LLAMA)  # fmt: skip
    return cases


CASES = _cases()


def _leaves(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _leaves(v, f"{prefix}.{k}")
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, d


def _get(d, path):
    import re

    for part in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        d = d[part[0]] if part[0] else d[int(part[1])]
    return d


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    """Every case written as YAML, then loaded in one Nanotron process."""
    tmp = tmp_path_factory.mktemp("nanotron_configs")
    (tmp / "tok").mkdir()
    written = {}
    for name, (s, path) in CASES.items():
        cfg = build_config(s, run_dir=tmp / "runs" / name, train_folder=tmp / "data" / "train", tokenizer_dir=tmp / "tok", path=path)
        file = tmp / f"{name}.yaml"
        file.write_text(to_yaml(cfg))
        written[name] = file
    loaded = load_with_nanotron(list(written.values()))
    return {name: (yaml.safe_load(f.read_text()), loaded[str(f)]) for name, f in written.items()}


@pytest.mark.parametrize("name", CASES)
def test_nanotron_loads_and_round_trips_the_config(parsed, name):
    ours, theirs = parsed[name]
    assert "error" not in theirs, theirs.get("error")
    s, path = CASES[name]
    assert theirs["model_class"] == {"qwen2": "Qwen2Config", "llama": "LlamaConfig"}[path.model]
    back = theirs["config"]
    changed = {k: (v, _get(back, k)) for k, v in _leaves(ours) if _get(back, k) != v}
    assert not changed, changed  # every value we wrote is the value Nanotron holds
    mc = back["model"]["model_config"]
    assert mc["_attn_implementation"] == path.attention
    if path.model == "qwen2":
        flash = path.attention == "flash_attention_2"
        assert mc["_use_qkv_packed"] is mc["_fused_rms_norm"] is mc["_fused_rotary_emb"] is flash
    assert back["tokens"]["train_steps"] == s.steps
    assert back["parallelism"]["dp"] * back["parallelism"]["tp"] * back["parallelism"]["pp"] == options_of(s).gpus


def test_nanotron_refuses_what_strict_parsing_must_refuse(tmp_path):
    """The loader really is strict: an unknown key and a wrong type fail in Nanotron itself."""
    s, path = CASES["cosine-dp8-qwen2-sdpa"]
    (tmp_path / "tok").mkdir()
    cfg = build_config(s, run_dir=tmp_path / "run", train_folder=tmp_path / "train", tokenizer_dir=tmp_path / "tok", path=path)
    bad_key = yaml.safe_load(to_yaml(cfg))
    bad_key["tokens"]["train_step"] = 3
    bad_type = yaml.safe_load(to_yaml(cfg))
    bad_type["tokens"]["train_steps"] = "100"
    files = []
    for i, c in enumerate((bad_key, bad_type)):
        files.append(tmp_path / f"bad{i}.yaml")
        files[-1].write_text(yaml.safe_dump(c))
    out = load_with_nanotron(files)
    assert "train_step" in out[str(files[0])]["error"]
    assert "train_steps" in out[str(files[1])]["error"]


def test_auto_resolves_by_what_the_machine_has():
    opts = options_of(SPECS["cosine-dp8"])
    assert model_path(opts, flash_attn=True) == QWEN_FLASH
    assert model_path(opts, flash_attn=False) == QWEN_SDPA
    llama = options_of(spec(backend_options={"model": "llama"}))
    assert model_path(llama, flash_attn=False) == LLAMA  # train() then refuses: flash-attn missing
