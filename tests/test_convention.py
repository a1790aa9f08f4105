"""How N and C are counted travels as a typed value, and each fit states the one it used."""

from __future__ import annotations

import pytest

from scaling import hardware
from scaling.convention import Convention, ConventionMismatch
from scaling.errors import UsageError
from scaling.fit import Approach2, Approach3, Columns, KaplanFit, LawFit, normalise
from tests.fit_helpers import isoflop_sweep


def test_convention_refuses_unknown_counts_and_round_trips():
    with pytest.raises(UsageError, match="param_convention='embedding'"):
        Convention("embedding")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="flops_convention='7N'"):
        Convention("total", "7N")
    c = Convention("non_embedding", "6N_non_embedding")
    assert Convention.from_dict(c.to_dict()) == c == Convention.six_nd("non_embedding")
    with pytest.raises(UsageError, match="no flops_convention"):
        Convention.from_dict({"param_convention": "total"})


def test_frames_carry_the_declared_convention_and_check_it():
    sweep = isoflop_sweep()
    declared = Convention("non_embedding", "6N_non_embedding")
    data = normalise(sweep, Columns(convention=declared))
    assert data.convention == declared
    # a frame without FLOPs counts C = 6 N D in its own N, whatever was declared
    no_flops = normalise(sweep.drop(columns=["flops"]), Columns(convention=Convention("total", "kaplan")))
    assert no_flops.convention == Convention("total", "6N")
    with pytest.raises(ConventionMismatch, match="counts N non-embedding"):
        normalise(data, Columns(convention=Convention("total", "6N")))


def test_each_fit_records_the_convention_its_numbers_use():
    sweep = isoflop_sweep()
    cols = Columns(convention=Convention("non_embedding", "6N_non_embedding"))
    # approach 2's N*(C) is in the data's C; approach 3's eq. 4 solves C = 6 N D in its own N
    assert Approach2(columns=cols).fit(sweep).convention == Convention("non_embedding", "6N_non_embedding")
    assert Approach3(columns=cols).fit(sweep).convention == Convention("non_embedding", "6N_non_embedding")
    total = Columns(convention=Convention("total", "6N_non_embedding"))
    assert Approach3(columns=total).fit(sweep).convention == Convention("total", "6N")
    assert Approach2(columns=total).fit(sweep).flops_convention == "6N_non_embedding"
    kaplan = KaplanFit(form="joint", non_embedding=False, columns=total).fit(sweep)
    assert kaplan.convention == Convention("total", "6N")


def test_saved_fits_must_say_how_they_count():
    fit = Approach3().fit(isoflop_sweep())
    d = fit.to_dict()
    assert (d["param_convention"], d["flops_convention"]) == ("total", "6N")
    assert LawFit.from_dict(d).convention == fit.convention
    with pytest.raises(UsageError, match="no flops_convention"):
        LawFit.from_dict({k: v for k, v in d.items() if k != "flops_convention"})


@pytest.mark.parametrize(("device", "dtype", "peak"), [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4e12),   # H100 SXM datasheet, dense BF16
    ("NVIDIA H100 PCIe", "bf16", 756.0e12),
    ("NVIDIA A100-SXM4-80GB", "fp32", 156.0e12),  # TF32: half the dense BF16 rate
    ("NVIDIA L40S", "bf16", 362.05e12),
    ("NVIDIA L4", "bf16", 121.0e12),
    ("Tesla T4", "fp16", 65.0e12),
    ("Some Future GPU", "bf16", None),
])
def test_one_peak_table_matches_cuda_device_names(device, dtype, peak):
    assert hardware.peak_flops(device, dtype) == peak


def test_the_local_trainer_reads_the_shared_peak_table():
    import torch

    from scaling.backends.local.train import gpu_peak_flops

    assert gpu_peak_flops("NVIDIA H200", torch.bfloat16) == hardware.GPUS["h200"].peak_flops
    assert gpu_peak_flops("NVIDIA H200", None) == hardware.GPUS["h200"].peak_flops / 2


def test_frame_sniffing_is_gone():
    # a column merely named like Kaplan's count is total N unless declared: only the store's own
    # non_embedding_params column means non-embedding by default
    frame = isoflop_sweep().rename(columns={"params": "n_nonemb"})
    assert normalise(frame, Columns(params="n_nonemb")).convention.params == "total"
    declared = Columns(params="n_nonemb", convention=Convention("non_embedding", "6N"))
    assert normalise(frame, declared).convention.params == "non_embedding"
