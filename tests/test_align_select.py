"""Select: the chosen run is the finished run nearest the law's N*(C) in log N."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from scaling.convention import Convention
from scaling.errors import UsageError
from scaling.laws.base import Allocation
from scaling.runspec import OptimizerSpec, RunSpec, ShapeSpec
from scaling.store import SweepStore, read_json
from tests.conftest import run_cli


@dataclass(frozen=True)
class PowerLawAllocation:
    """N*(C) = g C^a, D* = C / (6 N*): the form every approach fits (Hoffmann et al. 2022, eq. 4)."""

    g: float
    a: float
    param_convention: str = "non_embedding"
    flops_convention: str = "6N"
    name: str = "test law"
    citation: str = ""

    def optimal_allocation(self, flops: float) -> Allocation:
        n = self.g * flops**self.a
        return Allocation(flops=flops, params=n, tokens=flops / (6 * n))

    def loss(self, params: float, tokens: float) -> float:
        return 1.8 + 400 / params**0.34 + 400 / tokens**0.28


BUDGETS = (1e11, 3e11, 1e12)
HIDDENS = (32, 48, 64, 96, 128, 160)


def _spec(hidden: int, budget: float) -> RunSpec:
    shape = ShapeSpec(layers=2, hidden=hidden, heads=hidden // 16, vocab=1024, seq_len=128, ffn=3 * hidden)
    n = shape.to_shape().non_embedding_params
    tokens = max(2048, round(budget / (6 * n) / 2048) * 2048)
    return RunSpec(shape=shape, tokens=tokens, batch_tokens=2048, optimizer=OptimizerSpec(lr=0.32 / hidden),
                   name=f"h{hidden}", budget=budget)


@pytest.fixture
def study(tmp_path):
    store = SweepStore(tmp_path / "study")
    law = PowerLawAllocation(g=1.0, a=0.5)
    for c in BUDGETS:
        for h in HIDDENS:
            spec = _spec(h, c)
            rd = store.run(spec.run_id)
            rd.write_spec(spec.to_json_dict())
            if h == 96 and c == BUDGETS[-1]:
                rd.update_status("failed")  # a failed run is never chosen
                continue
            rd.write_result({"eval_loss": law.loss(spec.non_embedding_params, spec.tokens), "params": spec.params,
                             "non_embedding_params": spec.non_embedding_params, "tokens": spec.tokens,
                             "flops": spec.flops(), "budget": c, "name": spec.name})
    return store.path, law


def _expected(budget: float, law, exclude=()):
    n_opt = law.optimal_allocation(budget).params
    cands = [(abs(math.log(_spec(h, budget).non_embedding_params / n_opt)), h) for h in HIDDENS if h not in exclude]
    return _spec(min(cands)[1], budget)


def test_chosen_run_is_nearest_n_opt_at_largest_budget(study):
    from scaling.align import select

    path, law = study
    choice = select(path, fit=law)
    want = _expected(BUDGETS[-1], law, exclude=(96,))
    assert choice["run_id"] == want.run_id and choice["budget"] == BUDGETS[-1]
    assert choice["n_opt"] == pytest.approx(law.optimal_allocation(1e12).params)
    assert choice["model_dir"].endswith(f"runs/{want.run_id}/model")
    assert len(choice["candidates"]) == len(HIDDENS) - 1
    assert "N*(C=1e+12)" in choice["reason"] and want.run_id in choice["reason"]
    assert read_json(path / "select.json")["run_id"] == want.run_id
    assert choice["predicted_loss"] == pytest.approx(law.loss(want.non_embedding_params, want.tokens))


@pytest.mark.parametrize("budget", BUDGETS[:2])
def test_each_budget_and_the_law_moves_the_choice(study, budget):
    from scaling.align import select

    path, law = study
    assert select(path, fit=law, budget=budget)["run_id"] == _expected(budget, law).run_id
    small = PowerLawAllocation(g=0.3, a=0.5)  # a law wanting smaller models picks a smaller run
    picked = select(path, fit=small, budget=budget, write=False)
    assert picked["run_id"] == _expected(budget, small).run_id
    assert picked["non_embedding_params"] <= select(path, fit=law, budget=budget)["non_embedding_params"]


def test_total_parameter_law_counts_total_parameters(study):
    from scaling.align import select

    path, _ = study
    law = PowerLawAllocation(g=1.0, a=0.5, param_convention="total")
    choice = select(path, fit=law, budget=BUDGETS[0], write=False)
    n_opt = law.optimal_allocation(BUDGETS[0]).params
    best = min(HIDDENS, key=lambda h: abs(math.log(_spec(h, BUDGETS[0]).params / n_opt)))
    assert choice["run_id"] == _spec(best, BUDGETS[0]).run_id


def test_bad_input(study, tmp_path):
    from scaling.align import select

    path, law = study
    with pytest.raises(UsageError, match="budget=5e\\+11: no finished run"):
        select(path, fit=law, budget=5e11)
    with pytest.raises(UsageError, match="no fit in"):
        select(path)
    (tmp_path / "empty" / "runs").mkdir(parents=True)
    with pytest.raises(UsageError, match="no runs found"):
        select(tmp_path / "empty", fit=law)
    proc = run_cli("select", str(path), "--fit", str(tmp_path / "none.json"), timeout=60)
    assert proc.returncode == 2 and "none.json" in proc.stderr
    proc = run_cli("select", str(path), "--budget", "lots", timeout=60)
    assert proc.returncode == 2 and "--budget" in proc.stderr


def test_cli_with_a_saved_fit_picks_what_the_law_says(study):
    """`scaling select STUDY` reads the study's own fit JSON (LawFit.to_dict) and follows its N*."""
    import json

    from scaling.fit import LawFit
    from scaling.store import atomic_write_json

    path, _ = study
    # Chinchilla form with alpha = beta: N* = G (C/6)^0.5, G = (A/B)^(1/(2 alpha)) (Hoffmann et al. 2022, eq. 4)
    fit = LawFit(approach="3", form="chinchilla", n_points=18, convention=Convention.six_nd("non_embedding"),
                 params={"E": 1.8, "A": 400.0, "B": 900.0, "alpha": 0.34, "beta": 0.34})
    atomic_write_json(path / "fit" / "approach3_non_embedding.json", fit.to_dict())
    proc = run_cli("select", str(path), "--budget", "3e11", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    choice = json.loads(proc.stdout)
    n_opt = fit.optimal_allocation(3e11).params
    want = min(HIDDENS, key=lambda h: abs(math.log(_spec(h, 3e11).non_embedding_params / n_opt)))
    assert choice["run_id"] == _spec(want, 3e11).run_id
    assert choice["n_opt"] == pytest.approx(n_opt) and choice["fit_file"].endswith("approach3_non_embedding.json")
    assert choice["predicted_loss"] == pytest.approx(fit.loss(choice["non_embedding_params"], choice["tokens"]))
    proc = run_cli("select", str(path), "--budget", "3e11", timeout=120)  # the table for people
    assert proc.returncode == 0 and "chosen" in proc.stdout and choice["run_id"] in proc.stdout


@pytest.mark.slow
def test_train_optimal_trains_a_run_at_n_opt(tmp_path):
    """--train-optimal: a new run at N*(C), D*(C) with the local backend (tiny corpus and budget)."""
    from scaling.align import select
    from scaling.runspec import DataSpec

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"The {w} went to the market on day {i}.\n" for i in range(3000)
                              for w in ("cat", "dog")[i % 2 : i % 2 + 1]))
    budget = 3e9
    store = SweepStore(tmp_path / "study")
    for hidden in (16, 48):  # the law's N* lies between these: neither is optimal
        shape = ShapeSpec(layers=2, hidden=hidden, heads=2, vocab=320, seq_len=64, ffn=3 * hidden)
        n = shape.to_shape().non_embedding_params
        spec = RunSpec(shape=shape, tokens=max(1024, round(budget / (6 * n) / 1024) * 1024), batch_tokens=1024,
                       optimizer=OptimizerSpec(lr=0.01), data=DataSpec(source=str(corpus)), budget=budget,
                       backend_options={"threads": 1}, eval_tokens=2048)
        rd = store.run(spec.run_id)
        rd.write_spec(spec.to_json_dict())
        rd.write_result({"eval_loss": 3.0, "tokens": spec.tokens, "budget": budget})
    n_opt = 27_000.0
    law = PowerLawAllocation(g=n_opt / budget**0.5, a=0.5)
    choice = select(store.path, fit=law, train_optimal=True)
    assert choice["trained_optimal"] and choice["n_ratio"] == pytest.approx(1.0, abs=0.25)
    rd = store.run(choice["run_id"])
    assert rd.is_done() and (rd.path / "model" / "config.json").exists()
    spec = RunSpec.from_json_dict(rd.read_spec())
    assert 6 * spec.non_embedding_params * spec.tokens == pytest.approx(budget, rel=0.1)
    assert choice["loss"] is not None and read_json(store.path / "select.json")["run_id"] == choice["run_id"]
