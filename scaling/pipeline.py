"""The whole study, and the only place that chains the stages.

``run_study(spec_path, out)``: plan -> sweep -> extend -> fit -> backtest -> predict -> select -> align
(SFT, reward model, RLHF, DPO) -> report. Each stage reads what the stages before it wrote to the
study folder (see :mod:`scaling.store`) and records itself in ``STUDY/stages/`` (:mod:`scaling.stages`), so running
the same command again after a kill carries on where it stopped; the sweep itself skips finished
runs and resumes killed ones from their checkpoints.

The science, in short:

* **Two parameter conventions.** Every fit is made twice: with N counting non-embedding
  parameters (Kaplan et al. 2020) and with N counting all of them (Hoffmann et al. 2022). Their
  compute-optimal exponents ``a`` in ``N* ~ C^a`` differ, which is most of why the two papers
  disagreed (Pearce & Song 2024; Porian et al. 2024).
* **Two law forms.** Chinchilla's ``E + A/N^alpha + B/D^beta`` (approach 3) and Kaplan's joint
  ``[(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D``. Far from the irreducible loss, as a small CPU
  study is, E is poorly identified and the two forms extrapolate differently.
* **An honest backtest.** The law that predicts the largest budget is fitted without it. The
  headline counts N as all parameters (what one trains; the planner's default); which form it uses
  is decided *without looking at the largest budget*: each form is backtested one level down
  (fitted on the budgets below the second-largest, predicting the second-largest), and the one
  with the smallest absolute error there is chosen. Every candidate, in both conventions, is kept
  in ``fit/backtest.json``.
* **A law chosen by what it predicts.** ``fit/predict.json``: approach 3's variants (free E, E
  bounded, other basins, the smallest budgets left out) and Kaplan's form, cross-validated by
  leaving the largest budgets out in turn (:mod:`scaling.fit.crossval`); the one that predicted
  best, refitted on every budget, is the law the run is selected with. It counts N as the sweep
  spec does (``model.count``: total or non-embedding), C as ``train.flops_convention`` says.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaling.convention import HEADLINE_CONVENTION, PARAM_COUNTS, Convention
from scaling.stages import StageLog
from scaling.store import SweepStore, atomic_write_json, read_json
from scaling.study_summary import summarize

STAGES: list[str] = ["plan", "sweep", "extend", "fit", "backtest", "predict", "select", "align", "report"]
FORMS: tuple[str, ...] = ("chinchilla", "kaplan")
PUBLISHED: tuple[str, ...] = ("chinchilla", "epoch", "kaplan")


@dataclass(frozen=True)
class StudyOptions:
    """Pipeline settings; the sweep spec's ``pipeline:`` section sets them, the CLI overrides."""

    executor: str | None = None
    max_parallel: int | None = None
    bootstrap: int = 1000
    predict_bootstrap: int = 100  # resamples of the whole cross-validated choice (each refits every candidate)
    seed: int = 0
    loss_column: str = "eval_loss"
    align: bool = True
    sft_data: str | None = None
    dpo_data: str | None = None
    prompts_data: str | None = None
    beta: float | None = None  # DPO beta (dpo.beta's shorthand)
    skip_rlhf: bool = False
    skip_dpo: bool = False
    report: str | None = None
    cache_dir: str | None = None
    sft: dict[str, Any] = field(default_factory=dict)  # scaling.align.sft.SFTOptions fields
    reward: dict[str, Any] = field(default_factory=dict)  # scaling.align.reward.RewardOptions fields
    rlhf: dict[str, Any] = field(default_factory=dict)  # scaling.align.rlhf.RLOptions fields
    dpo: dict[str, Any] = field(default_factory=dict)  # scaling.align.dpo.DPOOptions fields
    tasks: dict[str, Any] = field(default_factory=dict)  # scaling.align.tasks.TaskOptions fields

    @classmethod
    def from_section(cls, section: dict[str, Any] | None, **overrides: Any) -> StudyOptions:
        from scaling.errors import UsageError

        section = dict(section or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(section) - known)
        if unknown:
            raise UsageError(f"pipeline.{unknown[0]}: unknown key; known keys: {', '.join(sorted(known))}")
        section.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**section)


# ---- small helpers ----------------------------------------------------------------------------------


class _Console:
    """One progress display for the whole study: stage lines on stderr, the sweep's own bar inside."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            m, s = divmod(int(time.perf_counter() - self.t0), 60)
            print(f"[{m:02d}:{s:02d}] {msg}", file=sys.stderr, flush=True)


def _fit_data(study: Path, convention: Convention, loss_column: str) -> Any:
    """The done runs as the fit's input: N counted as ``convention`` says, C the budget label."""
    from scaling.fit.data import study_data

    return study_data(study, convention, loss_column)


def _conventions(study: Path) -> list[Convention]:
    """Both parameter counts, with C as the sweep's budgets count it (``train.flops_convention``)."""
    from scaling.sweep import load_spec

    flops = load_spec(study / "sweep.yaml").train.flops_convention
    return [Convention(count, flops) for count in PARAM_COUNTS]  # type: ignore[arg-type]


def _study_convention(study: Path) -> Convention:
    """How the sweep spec counts N (``model.count``) and C (``train.flops_convention``)."""
    from scaling.sweep import load_spec

    spec = load_spec(study / "sweep.yaml")
    return Convention(spec.model.count, spec.train.flops_convention)


def _fitter(form: str, bootstrap: int = 0, seed: int = 0):
    from scaling.fit import Approach3, KaplanFit

    if form == "chinchilla":
        return Approach3(bootstrap=bootstrap, seed=seed)
    return KaplanFit(form="joint", non_embedding=False)


# ---- stages -----------------------------------------------------------------------------------------


def _stage_plan(study: Path, spec: Any, runs: list[Any]) -> dict[str, Any]:
    """What the published laws say for each budget of the sweep (in the sweep's own units)."""
    from scaling.planner import plan_all

    model = spec.model
    conv = runs[0].flops_convention if runs else "6N"
    count = "non_embedding" if "non_embedding" in conv else "total"
    out: dict[str, Any] = {"flops_convention": conv, "budgets": [],
                           "note": "N* and D* of the published laws at each budget (Kaplan counts non-embedding N)"}
    for c in sorted({float(r.budget) for r in runs if r.budget}):
        row: dict[str, Any] = {"flops": f"{c:.3g}"}
        sizes = [r.model_shape.count(count) for r in runs if r.budget and math.isclose(float(r.budget), c, rel_tol=1e-6)]
        row["runs"] = len(sizes)
        row[f"sizes ({count} N)"] = "; ".join(f"{n:,}" for n in sorted(sizes))
        for p in plan_all(flops=c, laws=list(PUBLISHED), vocab=model.vocab, seq_len=model.seq_len, with_shape=False):
            row[f"{p.law} N*"] = f"{p.params:,.0f}"
            row[f"{p.law} D*"] = f"{p.tokens:,.0f}"
        out["budgets"].append(row)
    out["runs"] = len(runs)
    out["flops_total"] = float(sum(float(r.budget or 0) for r in runs))
    atomic_write_json(study / "plan.json", out)
    return {"runs": len(runs), "budgets": len(out["budgets"])}


def _stage_extend(study: Path, spec: Any, opts: StudyOptions, launch_runs: Callable[[], dict[str, Any]],
                  log: Callable[[str], None]) -> dict[str, Any]:
    """IsoFLOP sizes added where a budget's minimum is not bracketed, then the spec's repeats
    (:mod:`scaling.sweep.extend`; the log is ``extend.json``)."""
    from scaling.sweep.extend import extend_sweep

    out = extend_sweep(spec, study, launch_runs, loss_column=opts.loss_column, say=log)
    kinds = [e["kind"] for e in out["added"]]
    return {"extended": kinds.count("extend"), "repeats": kinds.count("repeat"),
            "budgets": {f"{b['budget']:.3g}": b["state"] for b in out["budgets"]}}


def _stage_fit(study: Path, opts: StudyOptions, log: Callable[[str], None]) -> dict[str, Any]:
    """Approaches 3 and 2 and Kaplan's form, in both parameter counts: ``fit/<kind>_<count>.json``."""
    from scaling.fit import Approach2, FitRefusal
    from scaling.fit.artifacts import fit_path, read_noise, write_approach2, write_noise
    from scaling.fit.noise import estimate_noise

    out: dict[str, Any] = {}
    convs = _conventions(study)
    # repeated seeds give the noise (the same losses in either parameter count); the fits read it back
    write_noise(study, estimate_noise(_fit_data(study, convs[0], opts.loss_column).frame))
    noise = read_noise(study)
    if noise is not None:
        out["noise_std"] = noise.pooled
    a2 = Approach2(bootstrap=opts.bootstrap, seed=opts.seed)
    for conv in convs:
        data = _fit_data(study, conv, opts.loss_column)
        for form in FORMS:
            fitter = _fitter(form, opts.bootstrap if form == "chinchilla" else 0, opts.seed)
            fit = fitter.fit(data, noise=noise)
            path = fit_path(study, "approach3" if form == "chinchilla" else "kaplan", conv.params)
            atomic_write_json(path, fit.to_dict())
            out[path.stem] = {"objective": fit.objective, "n_points": fit.n_points}
        try:
            write_approach2(study, conv.params, a2.fit(data, noise=noise), None)
        except FitRefusal as e:  # a budget without an interior minimum: recorded, not fatal
            write_approach2(study, conv.params, None, {"reason": str(e), **conv.to_dict(),
                                                       "minima": a2.minima(data, noise)})
            log(f"approach 2 ({conv.params}) refused: {e}")
    return out


def _candidates(study: Path, opts: StudyOptions) -> list[dict[str, Any]]:
    from scaling.fit import FitRefusal, backtest

    rows = []
    for conv in _conventions(study):
        data = _fit_data(study, conv, opts.loss_column)
        budgets = sorted(data.frame["budget"].unique())
        inner = data.subset(data.frame["budget"] < budgets[-1]) if len(budgets) >= 4 else None
        for form in FORMS:
            row: dict[str, Any] = {"form": form, "param_convention": conv.params}
            try:
                row["outer"] = backtest(data, fitter=_fitter(form))
                row["inner"] = backtest(inner, fitter=_fitter(form)) if inner is not None else None
            except FitRefusal as e:
                row["refused"] = str(e)
            rows.append(row)
    return rows


def _stage_backtest(study: Path, opts: StudyOptions) -> dict[str, Any]:
    rows = _candidates(study, opts)
    ok = [r for r in rows if "outer" in r]
    if not ok:
        raise RuntimeError("backtest: no law could be fitted without the largest budget: " +
                           "; ".join(r.get("refused", "") for r in rows))
    # The headline counts N as all parameters (what one trains and serves, and the planner's
    # default); both conventions are fitted and kept, and the form is chosen one budget down.
    headline = [r for r in ok if r["param_convention"] == HEADLINE_CONVENTION] or ok
    scored = [r for r in headline if r.get("inner")]
    pick = min(scored, key=lambda r: abs(r["inner"]["error"])) if scored else headline[0]
    chosen = dict(pick["outer"])
    chosen.update(form=pick["form"], param_convention=pick["param_convention"],
                  chosen_by="smallest |error| predicting the second-largest budget from the ones below it"
                  if scored else "only candidate")
    out = {"chosen": chosen, "candidates": rows, "n_opt": _n_opt_pick(headline, pick)}
    atomic_write_json(study / "fit" / "backtest.json", out)
    return {"form": pick["form"], "param_convention": pick["param_convention"], "error": chosen["error"],
            "n_opt_form": out["n_opt"]["form"], "n_opt_error": out["n_opt"]["n_opt_error"]}


def _n_opt_pick(headline: list[dict[str, Any]], loss_pick: dict[str, Any]) -> dict[str, Any]:
    """N* at the largest budget from the form that located the second-largest budget's vertex best
    from the budgets below it (never from the largest): the loss and the optimum's position are
    two questions, and a form can answer one and miss the other."""
    scored = [r for r in headline if (r.get("inner") or {}).get("n_opt_error") is not None]
    pick = min(scored, key=lambda r: abs(r["inner"]["n_opt_error"])) if scored else loss_pick
    keys = ("budget", "n_opt_predicted", "n_opt_predicted_ci", "n_opt_observed", "n_opt_error")
    return {**{k: pick["outer"].get(k) for k in keys}, "form": pick["form"],
            "param_convention": pick["param_convention"],
            "inner_n_opt_error": (pick.get("inner") or {}).get("n_opt_error"),
            "chosen_by": "smallest |N* error| predicting the second-largest budget's vertex from the ones below it"
            if scored else "the loss's choice (no form located a vertex one budget down)"}


def _stage_predict(study: Path, opts: StudyOptions, log: Callable[[str], None]) -> dict[str, Any]:
    """The law that predicts: candidates cross-validated over the largest budgets (or sizes)."""
    from scaling.fit import FitRefusal, Predictor

    conv = _study_convention(study)
    try:
        law = Predictor(bootstrap=opts.predict_bootstrap, seed=opts.seed).fit(_fit_data(study, conv, opts.loss_column))
    except FitRefusal as e:  # too few budgets to cross-validate: recorded, not fatal
        atomic_write_json(study / "fit" / "predict.refused.json", {"reason": str(e)})
        log(f"predict refused: {e}")
        return {"refused": str(e)}
    atomic_write_json(study / "fit" / "predict.json", law.to_dict())
    return {"chosen": law.chosen, "axis": law.design["axis"]}


def _chosen_law_path(study: Path) -> Path:
    from scaling.fit.artifacts import fit_path

    if (study / "fit" / "predict.json").exists():
        return study / "fit" / "predict.json"
    ch = (read_json(study / "fit" / "backtest.json") or {}).get("chosen", {})
    kind = "approach3" if ch.get("form", "chinchilla") == "chinchilla" else "kaplan"
    return fit_path(study, kind, ch.get("param_convention", HEADLINE_CONVENTION))


def _stage_select(study: Path) -> dict[str, Any]:
    from scaling.align import select

    choice = select(study, fit=str(_chosen_law_path(study)))
    return {k: choice.get(k) for k in ("run_id", "name", "reason") if k in choice}


def align_settings(opts: StudyOptions) -> tuple[Any, Any]:
    """(StageSettings, TaskOptions) of the study's ``pipeline`` section: what ``scaling run`` aligns with."""
    from scaling.align.dpo import DPOOptions
    from scaling.align.reward import RewardOptions
    from scaling.align.rlhf import RLOptions
    from scaling.align.run import StageSettings
    from scaling.align.sft import SFTOptions
    from scaling.align.tasks import TaskOptions
    from scaling.errors import UsageError

    dpo = {**opts.dpo, **({"beta": opts.beta} if opts.beta is not None else {})}
    seed = {"seed": opts.seed}
    try:
        settings = StageSettings(SFTOptions(**{**seed, **opts.sft}), RewardOptions(**{**seed, **opts.reward}),
                                 RLOptions(**{**seed, **opts.rlhf}), DPOOptions(**{**seed, **dpo}))
        tasks = TaskOptions(**{k: tuple(v) if k == "kinds" else v for k, v in opts.tasks.items()})
    except TypeError as e:
        raise UsageError(f"pipeline.sft/reward/rlhf/dpo/tasks: {e}") from None
    return settings, tasks


def study_align_settings(study: Path) -> tuple[Any, Any]:
    """:func:`align_settings` of the spec a study was run from (its stored ``sweep.yaml``)."""
    from scaling.sweep import load_spec

    spec = load_spec(study / SweepStore.SWEEP)
    return align_settings(StudyOptions.from_section(getattr(spec, "pipeline", None)))


def _stage_align(study: Path, opts: StudyOptions, log: Callable[[str], None]) -> dict[str, Any]:
    """SFT, reward model, RLHF and DPO of the selected model; the built-in tasks come from the
    selected run's own corpus (its spec.json), from the text its pretraining held out."""
    from scaling.align import align

    choice = read_json(study / "select.json") or {}
    model_dir = choice.get("model_dir") or str(study / "runs" / choice["run_id"] / "model")
    settings, tasks = align_settings(opts)
    summary = align(model_dir, study / "align", opts.sft_data, opts.dpo_data, opts.prompts_data, settings=settings,
                    tasks=tasks, skip_rlhf=opts.skip_rlhf, skip_dpo=opts.skip_dpo, seed=opts.seed, log=log)
    return {"minutes": summary.get("minutes"), "stage_minutes": summary.get("stage_minutes"),
            "flags": summary.get("flags")}


def _stage_report(study: Path, opts: StudyOptions) -> dict[str, Any]:
    from scaling.report import build_report

    out = Path(opts.report) if opts.report else Path("reports") / f"{study.resolve().name}.html"
    path = build_report(study, out)
    return {"report": str(path)}


# ---- the entry point ----------------------------------------------------------------------------------


def run_study(
    spec_path: str | Path,
    out: str | Path | None = None,
    *,
    force: str | None = None,
    quiet: bool = False,
    add: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Run (or resume) the whole study of ``spec_path`` into ``out`` (default ``studies/<name>``).

    The study folder's launcher lock is held from the first stage to the last: a second
    ``scaling run``, ``sweep launch`` or ``sweep resume`` on the folder is refused meanwhile."""
    from scaling.sweep import SweepLock, load_spec
    from scaling.sweep.launcher import check_same_sweep

    t0 = time.perf_counter()
    say = _Console(quiet)
    spec = load_spec(spec_path)
    opts = StudyOptions.from_section(getattr(spec, "pipeline", None), **overrides)
    study = Path(out) if out else Path("studies") / spec.name
    study.mkdir(parents=True, exist_ok=True)
    with SweepLock(study) as lock:
        lock.acquire(opts.executor or spec.executor.kind, command="scaling run")
        check_same_sweep(spec, study, add)  # before any stage writes: another sweep's folder is refused
        changed = changed_sections(study, spec)
        if changed and StageLog(study).done(STAGES[0]) is not None:
            say(f"the spec's {', '.join(changed)} differ from the study's {SweepStore.SWEEP}: every stage runs "
                "again from plan (finished runs are kept)")
            force = STAGES[0]
        return _run_stages(spec, study, opts, lock, say, force, quiet, t0)


def changed_sections(study: Path, spec: Any) -> list[str]:
    """The top-level sections (``grid.`` fields one level down) in which ``spec`` differs from the
    study's stored ``sweep.yaml``: a study whose stages ran from another spec re-runs them, so that
    no setting of the spec (repeats, extension, pipeline options) is taken and then ignored."""
    from scaling.sweep import load_spec

    path = study / SweepStore.SWEEP
    if not path.exists():
        return []
    old, new = load_spec(path).model_dump(mode="json"), spec.model_dump(mode="json")
    out = []
    for key in sorted((set(old) | set(new)) - {"description"}):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict) and key == "grid":
            out += [f"grid.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(key)
    return out


def _all_done(study: Path, log: StageLog, name: str, planned: int) -> None:
    """Every planned run done, else the stage is forgotten and the study stops, to be resumed."""
    counts = SweepStore(study).counts()
    if counts.get("done", 0) < planned:
        log.marker(name).unlink(missing_ok=True)
        raise RuntimeError(f"{name}: {counts.get('done', 0)} of {planned} runs done ({counts}); "
                           f"run the same command again to resume")


def _run_stages(spec: Any, study: Path, opts: StudyOptions, lock: Any, say: _Console, force: str | None,
                quiet: bool, t0: float) -> dict[str, Any]:
    from scaling.sweep import expand, launch

    log = StageLog(study)
    if force:
        log.invalidate_from(STAGES, force)
    runs = expand(spec)

    def start(name: str) -> None:
        say(f"stage {name} ...")

    def end(name: str, minutes: float, skipped: bool) -> None:
        say(f"stage {name} {'already done' if skipped else 'done'} ({minutes:.2f} min)")

    def stage(name: str, fn: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
        return log.run(name, fn, on_start=start, on_end=end)

    stage("plan", lambda: _stage_plan(study, spec, runs))
    if SweepStore(study).counts().get("done", 0) < len(runs):
        # a marker alone never makes the sweep done: launch() skips finished runs and resumes the rest
        log.marker("sweep").unlink(missing_ok=True)
    def launch_runs() -> dict[str, Any]:
        return launch(spec, study, executor=opts.executor, max_parallel=opts.max_parallel,
                      progress=False if quiet else None, cache_dir=opts.cache_dir, lock=lock,
                      add=True)  # the folder was checked before the first stage

    stage("sweep", launch_runs)
    _all_done(study, log, "sweep", len(runs))
    ext = stage("extend", lambda: _stage_extend(study, spec, opts, launch_runs, say))
    _all_done(study, log, "extend", len(runs) + ext.get("extended", 0) + ext.get("repeats", 0))
    stage("fit", lambda: _stage_fit(study, opts, say))
    bt = stage("backtest", lambda: _stage_backtest(study, opts))
    say(f"backtest: {bt.get('form')} form, {bt.get('param_convention')} parameters, error {100 * bt.get('error', float('nan')):+.2f}%")
    pr = stage("predict", lambda: _stage_predict(study, opts, say))
    say(f"predict: {pr.get('chosen') or 'refused'} (cross-validated over {pr.get('axis', '-')})")
    if opts.align:
        stage("select", lambda: _stage_select(study))
        stage("align", lambda: _stage_align(study, opts, say))
    rep = stage("report", lambda: _stage_report(study, opts))
    summary = summarize(study, log, t0, rep.get("report"))
    say(f"study done in {summary['minutes']:.1f} min; report: {rep.get('report')}")
    return summary
