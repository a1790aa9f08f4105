"""Whether an allocation fit's vertices bend away from one power law: one reading of the test
:func:`scaling.fit.approach2.vertex_bend` records, shared by the fit's text and the report (a
module of its own, so that the report does not import the fitting package to read it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BEND_LEVEL = 0.05  # the quadratic's p-value below which the vertices are said to bend


def significant_bend(test: Any) -> Mapping[str, Any] | None:
    """The bend an N* line's test records (in ``info.noise.widening.power_law_n``) where its
    p-value is below ``BEND_LEVEL``; else None."""
    bend = test.get("bend") if isinstance(test, Mapping) else None
    return bend if bend and bend.get("p_value") is not None and bend["p_value"] < BEND_LEVEL else None
