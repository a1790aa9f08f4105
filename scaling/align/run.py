"""The alignment stage end to end: SFT, a reward model, RLHF (RLOO) and DPO from the same SFT model
and data, then base, SFT, RLHF and DPO side by side on held-out tasks.

``align(model_dir, out_dir)`` writes (in a study, ``OUT`` is ``STUDY/align``)::

    OUT/sft/  OUT/reward/  OUT/judge/  OUT/rlhf/  OUT/dpo/   spec.json metrics.jsonl model/ result.json
    OUT/pairs/         the preference pairs after SFT (tasks.rejected="sampled": scaling.align.pairs)
    OUT/summary.json   the side-by-side table, the flags, held-out examples

Each stage is skipped when its ``result.json`` exists with the same spec (its input model's
weights included), so a rerun after a kill carries on from the first unfinished stage. A stage
that is not run builds no data and trains nothing. ``model_dir`` may also be a study folder: its
``select.json`` names the model (``select()`` runs first when it is missing). With no data given,
the built-in tasks (:mod:`scaling.align.tasks`) are cut from the corpus the model was pretrained
on (its run's ``spec.json``), from the text pretraining held out.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from scaling.align.data import Record, load_records, split_records
from scaling.align.dpo import DPOOptions
from scaling.align.reward import RewardOptions
from scaling.align.rlhf import RLOptions
from scaling.align.sft import SFTOptions
from scaling.align.tasks import Task, TaskOptions, build_tasks, corpus_documents
from scaling.errors import UsageError
from scaling.store import RunDir, atomic_write_json, read_json

POLICY_STAGES = ("base", "sft", "rlhf", "dpo")


def resolve_model(path: str | Path) -> tuple[Path, Path | None]:
    """(model folder, study folder or None) for a model folder or a study folder."""
    p = Path(path)
    if (p / "config.json").exists():
        return p, None
    if (p / "runs").is_dir() or (p / "select.json").exists():
        choice = read_json(p / "select.json")
        if choice is None:
            from scaling.align.select import select

            choice = select(p)
        model = Path(choice["model_dir"])
        if not model.is_absolute() and not model.exists():
            model = p / "runs" / str(choice["run_id"]) / "model"
        if not (model / "config.json").exists():
            raise UsageError(f"model={model}: the selected run has no saved model; rerun it with the local backend")
        return model, p
    raise UsageError(f"model={p}: neither a model folder (config.json) nor a study folder (runs/)")


def pretraining_corpus(model: Path, opts: TaskOptions) -> TaskOptions:
    """``opts`` with the corpus of the run that made ``model`` (its ``spec.json`` beside the model
    folder: source, text column, truncation, held-out fraction), where ``opts.corpus`` is unset."""
    if opts.corpus is not None:
        return opts
    data = (read_json(model.parent / "spec.json") or {}).get("data") or {}
    if not data.get("source"):
        return replace(opts, corpus="builtin:default")
    return replace(opts, corpus=data["source"], text_column=data.get("text_column", "text"),
                   max_chars=data.get("max_chars"), tail_frac=data.get("val_frac", opts.tail_frac))


@dataclass
class AlignData:
    """Every set the stages that run need, and where each came from."""

    sets: dict[str, list[Record]] = field(default_factory=dict)
    eval_tasks: list[Task] | None = None  # held-out built-in tasks (exact answers), if built
    trivial_train: list[Task] | None = None
    sft_tasks: list[Task] | None = None  # the built-in tasks SFT trains on, where it trains on them
    pair_tasks: dict[str, list[Task]] | None = None  # built-in pairs to resample the rejects of (tasks.rejected)
    info: dict[str, Any] = field(default_factory=dict)


def _user_prefs(src: str, eval_frac: float, judge_frac: float, seed: int) -> dict[str, list[Record]]:
    train, held = split_records(load_records(src, "dpo"), eval_frac, seed)
    pref, judge = split_records(train, judge_frac, seed + 1)
    return {"pref_train": pref, "judge_train": judge, "pref_eval": held}


def build_data(
    want: dict[str, bool], tasks: TaskOptions, sft_data: str | None, dpo_data: str | None,
    prompts_data: str | None, eval_frac: float, judge_frac: float, seed: int,
) -> AlignData:
    """The sets of the stages in ``want`` (sft, prefs, rlhf): user data first, so a malformed
    record is reported before any corpus is read or model loaded; built-in tasks for the rest."""
    if sft_data and not want["sft"]:
        raise UsageError("--sft DATA was given with --skip-sft: nothing would use it; drop one of them")
    if dpo_data and not want["prefs"]:
        raise UsageError("--dpo DATA was given with --skip-dpo and --skip-rlhf: nothing would use it; drop one")
    if prompts_data and not want["rlhf"]:
        raise UsageError("--prompts DATA was given with --skip-rlhf: nothing would use it; drop one of them")
    d = AlignData()
    if want["sft"] and sft_data:
        d.sets["sft_train"], d.sets["sft_eval"] = split_records(load_records(sft_data, "sft"), eval_frac, seed)
        d.info["sft"] = {"source": sft_data, "eval_frac": eval_frac}
    if want["prefs"] and dpo_data:
        d.sets.update(_user_prefs(dpo_data, eval_frac, judge_frac, seed))
        d.info["preferences"] = {"source": dpo_data, "eval_frac": eval_frac, "judge_frac": judge_frac}
    if want["rlhf"] and prompts_data:
        d.sets["rl_prompts"] = load_records(prompts_data, "prompt")
        d.info["rl_prompts"] = {"source": prompts_data}
    builtin = (want["sft"] and not sft_data) or (want["prefs"] and not dpo_data) or not (sft_data or dpo_data)
    if builtin:
        split = build_tasks(corpus_documents(tasks), tasks, seed)
        d.eval_tasks, d.trivial_train = split["eval"], split["sft"]
        label = {"source": f"built-in tasks ({tasks.corpus})", **asdict(tasks)}
        if want["sft"] and not sft_data:
            d.sets["sft_train"] = [t.sft_record() for t in split["sft"]]
            d.sft_tasks = split["sft"]
            d.sets["sft_eval"] = [t.sft_record() for t in split["eval"]]
            d.info["sft"] = label
        if want["prefs"] and not dpo_data:
            d.sets["pref_train"] = [t.preference_record() for t in split["pref"]]
            d.sets["judge_train"] = [t.preference_record() for t in split["judge"]]
            d.sets["pref_eval"] = [t.preference_record() for t in split["eval"]]
            d.info["preferences"] = label
            if tasks.rejected == "sampled" and want["sft"]:
                d.pair_tasks = split
    if want["rlhf"] and "rl_prompts" not in d.sets:
        d.sets["rl_prompts"] = [{"prompt": r["prompt"]} for r in d.sets["pref_train"]]
        d.info["rl_prompts"] = {"source": "the preference training prompts"}
    for part in d.info.values():
        part["records"] = {k: len(v) for k, v in d.sets.items()}
    return d


def eval_prompts(d: AlignData, max_eval: int) -> tuple[list[Any], list[str | None]]:
    """The held-out prompts every stage answers, and their exact answers where known: every
    built-in held-out task (``tasks.n_eval`` sets their number), or the first ``max_eval`` held-out
    user records."""
    if d.eval_tasks is not None:
        ts = d.eval_tasks
        return [t.prompt() for t in ts], [f"{t.answer}: {t.answer_text}" if t.options else t.answer.strip() for t in ts]
    recs = (d.sets.get("sft_eval") or d.sets.get("pref_eval") or [])[:max_eval]
    return [r["prompt"] if isinstance(r["prompt"], list) else [{"role": "user", "content": r["prompt"]}]
            for r in recs], [None] * len(recs)


def check_lengths(tok: Any, sets: dict[str, list[Record]], limits: dict[str, int]) -> None:
    """Refuse records whose prompt alone fills its stage's ``max_length``: truncation would leave
    no reply token, and TRL drops such records without a word."""
    from scaling.align.evaluate import encode

    reply = {"sft": "completion", "pref": "chosen", "judge": "chosen"}
    for name, records in sets.items():
        kind = name.split("_")[0]
        if kind not in limits:
            continue
        limit = limits[kind]
        if kind == "rl":
            long = sum(1 for r in records if encode(tok, r["prompt"], [{"role": "assistant", "content": ""}]
                                                    if isinstance(r["prompt"], list) else "")[1] >= limit)
        else:
            long = sum(1 for r in records if encode(tok, r["prompt"], r[reply[kind]])[1] >= limit)
        if long:
            stage = {"sft": "sft", "pref": "dpo", "judge": "reward", "rl": "rlhf"}[kind]
            raise UsageError(
                f"{stage}.max_length={limit}: {long} of {len(records)} {name.replace('_', ' ')} records have prompts "
                f"of {limit} tokens or more, leaving no reply to learn; raise --max-length or shorten the prompts"
            )


def _stage_done(out: Path, spec: dict[str, Any]) -> bool:
    rd = RunDir(out)
    return rd.is_done() and rd.read_spec() == spec and (out / "model" / "config.json").exists()


def run_stage(
    name: str, call: Callable[[], dict[str, Any]], model: Path, counts: tuple[int, int], out: Path, opts: Any,
    source: str, log: Callable[[str], None],
) -> dict[str, Any]:
    """Run one stage (``call``), or reuse it when it finished before with the same spec."""
    from scaling.align.model import stage_spec

    spec = stage_spec(name, model, source, opts, *counts)
    if _stage_done(out, spec):
        log(f"{name}: done before, reusing {out / 'model'}")
        return RunDir(out).read_result() or {}
    shutil.rmtree(out, ignore_errors=True)  # a different or unfinished stage: start it clean
    log(f"{name}: {opts.steps} steps on {counts[0]} records")
    res = call()
    loss = res.get("eval_loss")
    log(f"{name}: train loss {res['final_loss']:.4f}" + (f", held-out loss {loss:.4f}" if loss is not None else "")
        + f", {res['wall_time']:.1f}s")
    return res


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class StageSettings:
    """Each stage's hyperparameters."""

    sft: SFTOptions = SFTOptions()
    reward: RewardOptions = RewardOptions()
    rlhf: RLOptions = RLOptions()
    dpo: DPOOptions = DPOOptions()


def align(
    model_dir: str | Path,
    out_dir: str | Path | None = None,
    sft_data: str | None = None,
    dpo_data: str | None = None,
    prompts_data: str | None = None,
    *,
    settings: StageSettings = StageSettings(),
    tasks: TaskOptions = TaskOptions(),
    eval_frac: float = 0.1,
    judge_frac: float = 0.25,
    max_eval: int = 256,
    n_examples: int = 8,
    skip_sft: bool = False,
    skip_rlhf: bool = False,
    skip_dpo: bool = False,
    seed: int = 0,
    threads: int | None = None,
    log: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """SFT, then RLHF (reward model + RLOO) and DPO from the SFT model; returns the summary.

    ``sft_data``/``dpo_data``/``prompts_data``: a file, folder or ``hf:NAME`` (see
    :mod:`scaling.align.data`), or ``None`` for the built-in tasks. User data is split
    ``eval_frac`` held out (seeded); user preference pairs give ``judge_frac`` of the rest to the
    judge. Every stage answers each held-out built-in task for the table, or at most ``max_eval``
    held-out user records.
    """
    from scaling.align.compare import compare_stages
    from scaling.align.model import load_tokenizer, quiet, set_threads

    t0 = time.perf_counter()
    model, study = resolve_model(model_dir)
    out = Path(out_dir) if out_dir is not None else (study or model.parent) / "align"
    tasks = pretraining_corpus(model, tasks)
    want = {"sft": not skip_sft, "rlhf": not skip_rlhf, "dpo": not skip_dpo, "prefs": not (skip_rlhf and skip_dpo)}
    s = settings
    d = build_data(want, tasks, sft_data, dpo_data, prompts_data, eval_frac, judge_frac, seed)
    set_threads(threads)
    quiet()
    tok = load_tokenizer(model)
    limits = {"sft": s.sft.max_length} if want["sft"] else {}
    if want["prefs"]:
        limits.update(pref=s.dpo.max_length if want["dpo"] else s.reward.max_length, judge=s.reward.max_length)
    if want["rlhf"]:
        limits["rl"] = s.rlhf.max_length - s.rlhf.max_completion_length
    check_lengths(tok, d.sets, limits)
    prompts, answers = eval_prompts(d, max_eval)
    results, minutes, models = _train_all(model, out, d, want, s, log)
    models = {"base": model, **models}
    summary = compare_stages(models, tok, prompts, answers, d, results, n_examples=n_examples, seed=seed,
                             max_new_tokens=s.rlhf.max_completion_length, beta=s.dpo.beta, max_length=s.dpo.max_length,
                             rl_temperature=s.rlhf.temperature if "rlhf" in models else None, log=log)
    summary.update({
        "base_model": str(model), "study": str(study) if study else None, "out": str(out),
        "final_model": str(models[[k for k in POLICY_STAGES if k in models][-1]]),
        "beta": s.dpo.beta, "loss_type": s.dpo.loss_type, "options": asdict(s),
        "tasks": asdict(tasks), "data": d.info, "stages": results, "stage_minutes": minutes,
        "minutes": (time.perf_counter() - t0) / 60,
    })
    atomic_write_json(out / "summary.json", summary)
    return summary


def _train_all(
    model: Path, out: Path, d: AlignData, want: dict[str, bool], s: StageSettings, log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, float], dict[str, Path]]:
    """SFT, reward model, judge, RLHF, DPO: those ``want`` asks for, in that order."""
    from scaling.align.dpo import run_dpo
    from scaling.align.model import weights_fingerprint
    from scaling.align.reward import run_reward
    from scaling.align.rlhf import run_rlhf
    from scaling.align.sft import run_sft

    results: dict[str, Any] = {}
    minutes: dict[str, float] = {}
    models: dict[str, Path] = {}
    start = model
    src = {k: v.get("source", "") for k, v in d.info.items()}

    def timed(name: str, fn: Callable[..., dict], train: str, held: str | None, opts: Any, source: str,
              **kw: Any) -> Path:
        t = time.perf_counter()
        tr, he = d.sets[train], d.sets[held] if held else None
        folder = out / name
        call = (lambda: fn(start, tr, he, folder, opts, source=source, **kw)) if held else (
            lambda: fn(start, tr, kw["reward_model"], folder, opts, source=source))
        results[name] = run_stage(name, call, start, (len(tr), len(he or [])), folder, opts, source, log)
        minutes[name] = (time.perf_counter() - t) / 60
        return folder / "model"

    if want["sft"]:
        start = models["sft"] = timed("sft", run_sft, "sft_train", "sft_eval", s.sft, src["sft"])
    if d.pair_tasks is not None:
        from scaling.align.pairs import sampled_pairs

        t = time.perf_counter()
        sets, info = sampled_pairs(start, d.pair_tasks, out / "pairs", temperature=s.rlhf.temperature,
                                   max_new_tokens=s.rlhf.max_completion_length, seed=s.sft.seed)
        d.sets.update(sets)
        d.info["preferences"]["rejected"] = {"source": info["source"], "sampled_share": info["sampled_share"]}
        src["preferences"] += f"; {info['source']} {weights_fingerprint(start)}"
        minutes["pairs"] = (time.perf_counter() - t) / 60
        log("pairs: rejected replies sampled from the SFT model, wrong in "
            + ", ".join(f"{k} {v:.0%}" for k, v in info["sampled_share"].items()))
    if want["rlhf"]:
        timed("reward", run_reward, "pref_train", "pref_eval", s.reward, src["preferences"])
    if want["prefs"]:
        timed("judge", run_reward, "judge_train", "pref_eval", s.reward, src["preferences"], stage="judge")
    if want["rlhf"]:
        rm = out / "reward" / "model"
        source = f"{src['rl_prompts']}; reward model {rm} {weights_fingerprint(rm)}"
        models["rlhf"] = timed("rlhf", run_rlhf, "rl_prompts", None, s.rlhf, source, reward_model=rm)
    if want["dpo"]:
        models["dpo"] = timed("dpo", run_dpo, "pref_train", "pref_eval", s.dpo, src["preferences"])
    return results, minutes, models
