"""The planner: budgets, modes, shapes, hyperparameters, hardware, and refusals."""

from __future__ import annotations

import math

import pytest

from scaling import hardware
from scaling.laws import LAW_NAMES, get_law
from scaling.planner import Plan, PlanError, budget_flops, plan, plan_all

ISSUE_KEYS = {
    "law", "flops", "params", "tokens", "tokens_per_param", "loss", "shape",
    "gpu_hours", "wall_clock_days", "cost_usd",
}  # fmt: skip
SHAPE_KEYS = {"layers", "hidden", "heads", "kv_heads", "ffn", "vocab", "params"}


def rel(a: float, b: float) -> float:
    return abs(a / b - 1)


def test_gpu_hours_example():
    # 3.8e25 FLOPs at 40% MFU on H100 SXM: 26.7M GPU-hours, $53M at $2/h, 68 days on 16,384 GPUs
    p = plan(3.8e25, law="chinchilla", gpu="h100", mfu=0.4, gpus=16384, price=2.0)
    assert round(p.gpu_hours / 1e6, 1) == 26.7
    assert round(p.cost_usd / 1e6) == 53
    assert round(p.wall_clock_days) == 68
    assert hardware.get_gpu("h100").peak_flops == 989.4e12  # dense BF16; 1979 is the sparse figure


def test_budget_kinds_agree():
    c = budget_flops(gpu_hours=1000, gpu="a100", mfu=0.5)
    assert math.isclose(c, 1000 * 312e12 * 0.5 * 3600)
    assert math.isclose(budget_flops(budget_usd=2000, price=2.0, gpu="a100", mfu=0.5), c)
    a = plan(gpu_hours=1000, gpu="a100", mfu=0.5, law="epoch")
    b = plan(c, gpu="a100", mfu=0.5, law="epoch")
    assert math.isclose(a.params, b.params) and math.isclose(a.gpu_hours, 1000)


def test_compute_optimal_plan_and_json_keys():
    p = plan(5.76e23, law="epoch", gpus=1024, price=2.0)
    d = p.to_dict()
    assert set(d) >= ISSUE_KEYS and set(d["shape"]) >= SHAPE_KEYS
    assert d["law"] == "epoch" and d["mode"] == "compute_optimal"
    assert round(d["params"] / 1e9, 1) == 72.2
    assert math.isclose(d["tokens_per_param"], d["tokens"] / d["params"])
    assert rel(d["shape"]["params"], d["params"]) < 0.02  # a real shape of about N*
    assert d["loss"] == pytest.approx(get_law("epoch").loss(p.params, p.tokens))
    assert d["unique_tokens"] is None and d["epochs"] is None and d["inference_flops"] is None


def test_nulls_where_not_asked():
    d = plan(1e22, law="epoch").to_dict()
    assert d["wall_clock_days"] is None and d["cost_usd"] is None and d["gpus"] is None
    assert d["gpu_hours"] > 0  # the default GPU (h100) and MFU (0.4) always give hours
    assert plan(1e22, law="chinchilla-1").to_dict()["loss"] is None  # allocation-only law


def test_kaplan_shape_counts_non_embedding_parameters():
    p = plan(1e18, law="kaplan", vocab=50257)
    assert p.param_convention == "non_embedding"
    assert rel(p.shape.non_embedding_params, p.params) < 0.02
    assert p.shape.params > p.params * 1.2  # GPT-2's vocabulary comes on top
    total = plan(1e18, law="chinchilla", vocab=50257)
    assert rel(total.shape.params, total.params) < 0.02


def test_deepseek_batch_and_lr_from_the_shape():
    from scaling.flops import flops_per_token
    from scaling.laws.deepseek import deepseek_batch_tokens, deepseek_lr

    p = plan(1e19, law="chinchilla", seq_len=2048)
    c_m = flops_per_token(p.shape, "kaplan") * p.tokens  # DeepSeek's C = M D
    assert p.batch_tokens == pytest.approx(deepseek_batch_tokens(c_m))
    assert p.lr == pytest.approx(deepseek_lr(c_m))
    assert p.batch_size == max(1, round(p.batch_tokens / 2048))
    assert p.extrapolated is False
    assert plan(1e23, law="chinchilla").extrapolated is True


def test_fixed_params_with_and_without_budget():
    law = get_law("epoch")
    spent = plan(1e21, params=1e9, law="epoch")
    assert spent.mode == "fixed_params" and math.isclose(spent.tokens, 1e21 / 6e9)
    optimal = plan(params=1e9, law="epoch")  # the compute at which 1B is optimal
    assert rel(law.optimal_allocation(optimal.flops).params, 1e9) < 1e-9
    assert rel(optimal.tokens, law.optimal_allocation(optimal.flops).tokens) < 1e-9


def test_fixed_tokens_and_fixed_both():
    p = plan(tokens=1e12, law="chinchilla-2")
    assert rel(get_law("chinchilla-2").optimal_allocation(p.flops).tokens, 1e12) < 1e-9
    both = plan(params=1e9, tokens=2e10, law="chinchilla")
    assert both.mode == "fixed" and math.isclose(both.flops, 1.2e20)


def test_target_loss_is_the_cheapest_compute():
    law = get_law("chinchilla")
    p = plan(target_loss=2.1, law="chinchilla")
    assert p.loss == pytest.approx(2.1, abs=1e-9)
    al = law.optimal_allocation(p.flops * 0.99)
    assert law.loss(al.params, al.tokens) > 2.1  # 1% less compute cannot reach it
    with_n = plan(params=1e9, target_loss=2.3, law="chinchilla")
    assert law.loss(1e9, with_n.tokens) == pytest.approx(2.3, abs=1e-9)


def test_target_loss_refusals():
    with pytest.raises(PlanError, match="target_loss"):
        plan(target_loss=1.5, law="chinchilla")  # below E = 1.693
    with pytest.raises(PlanError, match="allocation only"):
        plan(target_loss=2.1, law="llama3")
    with pytest.raises(PlanError, match="target_loss"):
        plan(target_loss=1.8, inference_tokens=1e13, law="epoch")  # below E = 1.8169


def test_data_constrained_plan():
    free = plan(1e22, law="muennighoff")
    scarce = plan(1e22, unique_tokens=5e10, law="muennighoff")
    assert scarce.mode == "data_constrained"
    assert scarce.epochs == pytest.approx(scarce.tokens / 5e10) and scarce.epochs > 1
    assert scarce.params < free.params and scarce.loss > free.loss
    # the optimum: a 10% bigger or smaller model under the same budget and data does worse
    m = get_law("muennighoff")
    for f in (0.9, 1.1):
        n = scarce.params * f
        assert m.loss_repeated(n, 1e22 / (6 * n), 5e10) > scarce.loss
    # plenty of unique data: the unconstrained optimum
    assert rel(plan(1e22, unique_tokens=1e15, law="muennighoff").params, free.params) < 1e-4
    # a law without a repetition term borrows Muennighoff's R_D* (data only: with no penalty on
    # excess parameters, scarce data pushes it toward a bigger model)
    other, unconstrained = plan(1e22, unique_tokens=5e10, law="epoch"), plan(1e22, law="epoch")
    assert other.params > unconstrained.params and other.loss > unconstrained.loss and other.notes


def test_inference_aware_plan():
    base = plan(1e22, law="chinchilla")
    p = plan(1e22, inference_tokens=1e13, law="chinchilla")
    assert p.mode == "inference_aware" and p.loss == pytest.approx(base.loss, abs=1e-9)
    assert p.params < base.params and p.tokens > base.tokens  # smaller, trained longer
    total = 6 * p.params * p.tokens + 2 * p.params * 1e13
    base_total = 6 * base.params * base.tokens + 2 * base.params * 1e13
    assert total < base_total and p.to_dict()["total_flops"] == pytest.approx(total)
    law = get_law("chinchilla")
    for f in (0.9, 1.1):  # the minimum over N along the iso-loss curve
        n = p.params * f
        d = law.tokens_for_loss(n, base.loss)
        assert 6 * n * d + 2 * n * 1e13 > total


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(flops=-1e22), "flops"),
        (dict(flops=0), "flops"),
        (dict(flops=float("nan")), "flops"),
        (dict(flops=1e22, gpu_hours=10), "budget"),
        (dict(flops=1e22, law="nope"), "law"),
        (dict(flops=1e22, gpu="tpu-v9"), "gpu"),
        (dict(flops=1e22, mfu=0), "mfu"),
        (dict(flops=1e22, mfu=1.5), "mfu"),
        (dict(flops=1e22, gpus=0), "gpus"),
        (dict(flops=1e22, price=-2), "price"),
        (dict(budget_usd=1e5), "price"),
        (dict(), "budget"),
        (dict(unique_tokens=1e9), "unique_tokens"),
        (dict(flops=1e22, target_loss=2.0), "target_loss"),
    ],
)
def test_bad_input_names_the_field(kwargs, field):
    kwargs.setdefault("law", "epoch")
    with pytest.raises(PlanError, match=field):
        plan(**kwargs)


def test_plan_all_side_by_side_and_skips():
    plans = plan_all(flops=1e22)
    assert [p.law for p in plans] == list(LAW_NAMES)
    assert all(isinstance(p, Plan) and p.flops == 1e22 for p in plans)
    skipped: dict[str, str] = {}
    with_loss = plan_all(target_loss=2.2, skipped=skipped)
    assert {p.law for p in with_loss} | set(skipped) == set(LAW_NAMES)
    assert "llama3" in skipped and "epoch" not in skipped


def test_plan_accepts_a_law_object():
    law = get_law("epoch")
    assert plan(1e21, law=law).params == plan(1e21, law="epoch").params
