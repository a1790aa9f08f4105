"""Experiment design: choose the sweep that pins the law best for a given compute allowance.

A candidate design (budgets, ladder sizes per budget, repeats; or WSD trunks with cooldown
branches) is priced with the sweep planner's own cost model (its runs from
:func:`scaling.sweep.grid.expand`; FLOPs, this machine's seconds from the timing model, or
GPU-hours) and judged by simulation: losses drawn from a prior law plus noise on the
design's exact runs, fitted as the study would fit them (approach 2's IsoFLOP vertices and OLS power
law; approach 3's parametric fit with a bootstrap), and the widths of the 95% intervals on N* at the
target budget, on the allocation exponent and on the loss at the target read off the fits.

Modules: ``prior`` (the law and noise level losses are drawn from), ``space`` (IsoFLOP designs,
their runs, cost and family), ``wsd`` (the WSD-branch family), ``simulate`` (predicted interval
widths), ``trend`` (each simulated study's fitted noise trend), ``redraw`` (its approach-2 resamples), ``linear`` (linearised approach-3 widths, to rank), ``search`` (the choice).

Pure: numpy, scipy, pandas and pydantic (through the sweep spec); no torch, submitit or plotly.
"""

from __future__ import annotations

from scaling.design.prior import Prior, load_prior
from scaling.design.search import DesignChoice, choose_design
from scaling.design.simulate import Widths, predict_widths, realised_widths
from scaling.design.space import (
    Allowance,
    Design,
    DesignPoints,
    candidate_designs,
    design_spec,
    parse_allowance,
    plain_design,
)
from scaling.design.wsd import WsdDesign, candidate_wsd_designs

__all__ = [
    "Allowance",
    "Design",
    "DesignChoice",
    "DesignPoints",
    "Prior",
    "Widths",
    "WsdDesign",
    "candidate_designs",
    "candidate_wsd_designs",
    "choose_design",
    "design_spec",
    "load_prior",
    "parse_allowance",
    "plain_design",
    "predict_widths",
    "realised_widths",
]
