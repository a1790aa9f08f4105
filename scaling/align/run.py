"""The alignment stage end to end: evaluate the base model, SFT, evaluate, DPO, evaluate.

``align(model_dir, out_dir)`` writes (in a study, ``OUT`` is ``STUDY/align``)::

    OUT/sft/  spec.json metrics.jsonl model/ result.json
    OUT/dpo/  spec.json metrics.jsonl model/ result.json
    OUT/summary.json   the base -> SFT -> DPO table on held-out data

Each stage is skipped when its ``result.json`` exists with the same spec, so a rerun after a kill
carries on from the first unfinished stage. ``model_dir`` may also be a study folder: its
``select.json`` names the model (``select()`` runs first when it is missing).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scaling.align.data import DemoTasks, Record, corpus_documents, demo_tasks, load_records, split_records
from scaling.align.dpo import DPOOptions
from scaling.align.sft import SFTOptions
from scaling.errors import UsageError
from scaling.store import RunDir, atomic_write_json, read_json


@dataclass(frozen=True)
class DemoOptions:
    """Size of the built-in demo tasks (see :func:`scaling.align.data.demo_tasks`)."""

    n_train: int = 512
    n_eval: int = 128
    prompt_words: int = 24
    completion_words: int = 12
    corpus: str = "builtin:default"
    tail_frac: float | None = 0.02  # the part of each document pretraining held out; None: all of it


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


def _data(
    sft_data: str | None, dpo_data: str | None, demo: DemoOptions, eval_frac: float, seed: int
) -> tuple[dict[str, list[Record]], dict[str, Any]]:
    # user data first: a malformed record is reported before any corpus is read or model loaded
    user = {kind: load_records(src, kind) for kind, src in (("sft", sft_data), ("dpo", dpo_data))  # type: ignore[arg-type]
            if src not in (None, "builtin")}
    tasks: DemoTasks | None = None
    if len(user) < 2:
        tasks = demo_tasks(
            corpus_documents(demo.corpus, demo.tail_frac), n_train=demo.n_train, n_eval=demo.n_eval,
            prompt_words=demo.prompt_words, completion_words=demo.completion_words, seed=seed,
        )
    sets: dict[str, list[Record]] = {}
    info: dict[str, Any] = {}
    for kind, src in (("sft", sft_data), ("dpo", dpo_data)):
        if src in (None, "builtin"):
            assert tasks is not None
            sets[f"{kind}_train"], sets[f"{kind}_eval"] = getattr(tasks, f"{kind}_train"), getattr(tasks, f"{kind}_eval")
            info[kind] = {"source": f"builtin ({demo.corpus})", **asdict(demo)}
        else:
            sets[f"{kind}_train"], sets[f"{kind}_eval"] = split_records(user[kind], eval_frac, seed)
            info[kind] = {"source": str(src), "eval_frac": eval_frac}
        info[kind].update(train=len(sets[f"{kind}_train"]), held_out=len(sets[f"{kind}_eval"]))
    return sets, info


def check_lengths(tok: Any, sets: dict[str, list[Record]], sft_max: int, dpo_max: int) -> None:
    """Refuse records whose prompt alone fills ``max_length``: truncation would leave no
    completion token, and TRL drops such records without a word."""
    from scaling.align.evaluate import encode

    reply = {"sft": "completion", "dpo": "chosen"}  # any reply: the prompt's length is what counts
    for name, records in sets.items():
        kind = name.split("_")[0]
        limit = sft_max if kind == "sft" else dpo_max
        long = sum(1 for r in records if encode(tok, r["prompt"], r[reply[kind]])[1] >= limit)
        if long:
            raise UsageError(
                f"{kind}.max_length={limit}: {long} of {len(records)} {name.replace('_', ' ')} records have prompts "
                f"of {limit} tokens or more, leaving no completion to learn; raise --max-length or shorten the prompts"
            )


def _stage_done(out: Path, spec: dict[str, Any]) -> bool:
    rd = RunDir(out)
    return rd.is_done() and rd.read_spec() == spec and (out / "model" / "config.json").exists()


def _run_stage(
    name: str, fn: Callable[..., dict], model: Path, train: list[Record], held: list[Record],
    out: Path, opts: Any, source: str, log: Callable[[str], None],
) -> dict[str, Any]:
    from scaling.align.model import stage_spec

    spec = stage_spec(name, model, source, opts, len(train), len(held))
    if _stage_done(out, spec):
        log(f"{name}: done before, reusing {out / 'model'}")
        return RunDir(out).read_result() or {}
    shutil.rmtree(out, ignore_errors=True)  # a different or unfinished stage: start it clean
    log(f"{name}: {opts.steps} steps on {len(train)} records")
    res = fn(model, train, held, out, opts, source=source)
    log(f"{name}: train loss {res['final_loss']:.4f}, held-out loss {res['eval_loss']:.4f}, {res['wall_time']:.1f}s")
    return res


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def align(
    model_dir: str | Path,
    out_dir: str | Path | None = None,
    sft_data: str | None = None,
    dpo_data: str | None = None,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    *,
    sft: SFTOptions | None = None,
    dpo: DPOOptions | None = None,
    demo: DemoOptions = DemoOptions(),
    eval_frac: float = 0.1,
    max_eval: int = 256,
    n_samples: int = 3,
    skip_sft: bool = False,
    skip_dpo: bool = False,
    seed: int = 0,
    threads: int | None = None,
    log: Callable[[str], None] = _stderr,
) -> dict[str, Any]:
    """SFT then DPO of ``model_dir`` with evaluation before and after; returns the summary.

    ``sft_data``/``dpo_data``: a file, folder or ``hf:NAME`` (see :mod:`scaling.align.data`),
    or ``None`` for the built-in demo tasks. User data is split ``eval_frac`` held out (seeded).
    ``beta`` and ``loss_type`` override ``dpo``'s. At most ``max_eval`` held-out records per set
    are scored for the table.
    """
    from scaling.align.dpo import run_dpo
    from scaling.align.evaluate import score, stage_row
    from scaling.align.model import has_accelerator, load_model, load_tokenizer, quiet, set_threads
    from scaling.align.sft import run_sft

    t0 = time.perf_counter()
    model, study = resolve_model(model_dir)
    out = Path(out_dir) if out_dir is not None else (study or model.parent) / "align"
    sft = sft or SFTOptions(seed=seed)
    dpo = DPOOptions(**{**asdict(dpo or DPOOptions(seed=seed)), "beta": beta, "loss_type": loss_type})
    sets, info = _data(sft_data, dpo_data, demo, eval_frac, seed)
    set_threads(threads)
    quiet()
    sft_eval, dpo_eval = sets["sft_eval"][:max_eval], sets["dpo_eval"][:max_eval]
    tok = load_tokenizer(model)
    check_lengths(tok, sets, sft.max_length, dpo.max_length)

    def evaluate(path: Path) -> Any:
        m = load_model(path).to("cuda" if has_accelerator() else "cpu")
        return score(m, tok, sft_eval, dpo_eval, n_samples=n_samples,
                     max_length=max(sft.max_length, dpo.max_length))

    stages: list[tuple[str, Path, Any]] = [("base", model, evaluate(model))]
    log(f"base: held-out completion loss {stages[0][2].completion_loss:.4f}")
    results: dict[str, Any] = {}
    current = model
    if not skip_sft:
        results["sft"] = _run_stage("sft", run_sft, current, sets["sft_train"], sets["sft_eval"], out / "sft",
                                    sft, info["sft"]["source"], log)
        current = out / "sft" / "model"
        stages.append(("sft", current, evaluate(current)))
    if not skip_dpo:
        results["dpo"] = _run_stage("dpo", run_dpo, current, sets["dpo_train"], sets["dpo_eval"], out / "dpo",
                                    dpo, info["dpo"]["source"], log)
        current = out / "dpo" / "model"
        stages.append(("dpo", current, evaluate(current)))
    table = []
    for i, (name, path, scores) in enumerate(stages):
        ref = stages[i - 1] if i else None
        row = stage_row(scores, ref[2] if ref else None, dpo.beta)
        table.append({"stage": name, "model": str(path), "reward_reference": ref[0] if ref else name, **row})
    summary = {
        "base_model": str(model),
        "study": str(study) if study else None,
        "out": str(out),
        "final_model": str(current),
        "beta": dpo.beta,
        "loss_type": dpo.loss_type,
        "sft_options": asdict(sft),
        "dpo_options": asdict(dpo),
        "data": info,
        "table": table,
        "stages": results,
        "minutes": (time.perf_counter() - t0) / 60,
    }
    atomic_write_json(out / "summary.json", summary)
    return summary


# "reward acc." is the preference accuracy of the implicit reward against the stage's starting
# model; "log-lik. acc." that of the plain sequence log-likelihood (see scaling.align.evaluate)
TABLE_COLUMNS = (
    ("stage", "stage", "{}"),
    ("completion_loss", "completion loss", "{:.4f}"),
    ("perplexity", "perplexity", "{:.2f}"),
    ("pref_acc_reward", "reward acc.", "{:.3f}"),
    ("pref_acc_loglik", "log-lik. acc.", "{:.3f}"),
    ("reward_margin", "reward margin", "{:+.4f}"),
)


def format_table(summary: dict[str, Any]) -> list[list[str]]:
    """The table as rows of strings (header first) for plain or rich printing."""
    rows = [[label for _, label, _ in TABLE_COLUMNS]]
    for r in summary["table"]:
        rows.append([fmt.format(r[k]) if r.get(k) is not None else "-" for k, _, fmt in TABLE_COLUMNS])
    return rows
