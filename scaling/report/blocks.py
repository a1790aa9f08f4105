"""The page's building blocks and its Jinja2 environment; no markup is written in Python.

A section is a :class:`Section` of blocks (:class:`Table`, :class:`Cards`, :class:`Text`,
:class:`Details`) that ``templates/blocks.html.j2`` draws, one branch per ``kind``. Templates come from package data (``templates/``) with autoescape on, so every value
is escaped; only the page's own CSS and scripts (``static/``) and plotly's figure HTML are
marked safe. Table cells are formatted by :func:`fmt` (the template's ``cell`` filter).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any, ClassVar, Literal

import jinja2
import numpy as np
from markupsafe import Markup

from scaling.report.figures import fmt_sci

# ---- cell text ------------------------------------------------------------------------------------


def fmt(v: Any) -> str:
    """A table cell's text: integers with thousands separators, floats to 4-5 significant digits."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}" if abs(int(v)) < 10**9 else fmt_sci(float(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return fmt_sci(v, 4)
        if v == int(v) and abs(v) < 1e6:
            return f"{int(v):,}"
        return f"{v:.5g}"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, default=str)[:300]
    return str(v)


def sort_value(v: Any) -> str:
    """A cell's ``data-v``, which the sort script reads: the full-precision number, or the text."""
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return repr(float(v)) if math.isfinite(float(v)) else ""
    return str(v) if v is not None else ""


# ---- blocks: what a section is made of (templates/blocks.html.j2 draws each kind) ----------------


@dataclass(frozen=True)
class Table:
    """Rows of values (formatted by :func:`fmt` in the template); the first ``text_cols`` align left."""

    header: Sequence[str]
    rows: Sequence[Sequence[Any]]
    text_cols: int = 1
    sortable: bool = False
    scroll: bool = False  # in a box of fixed height with a sticky header
    kind: ClassVar[str] = "table"

    @property
    def classes(self) -> str:
        return "sortable" if self.sortable else ""


@dataclass(frozen=True)
class Card:
    key: str
    value: str
    note: str = ""


@dataclass(frozen=True)
class Cards:
    cards: Sequence[Card]
    kind: ClassVar[str] = "cards"


@dataclass(frozen=True)
class Text:
    """A line of text: a ``heading`` (h3), a ``note`` (small print) or ``pre`` (verbatim, e.g. YAML)."""

    kind: Literal["heading", "note", "pre"]
    text: str


@dataclass(frozen=True)
class Details:
    """Blocks folded under a one-line summary."""

    summary: str
    blocks: Sequence[Block]
    kind: ClassVar[str] = "details"


Block = Table | Cards | Text | Details


@dataclass(frozen=True)
class Section:
    """One ``<section>``: ``figure`` names a key of the figures dict drawn above the blocks;
    ``template`` is ``section.html.j2`` or one that extends it, reading ``context``."""

    id: str
    title: str
    blocks: Sequence[Block] = ()
    figure: str | None = None
    template: str = "section.html.j2"
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def nav(self) -> str:
        return self.title.split(":")[0]


def kv_table(d: Mapping[str, Any]) -> Table:
    return Table(["key", "value"], list(_flat(d).items()), text_cols=2)


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def records_table(recs: Sequence[Mapping[str, Any]]) -> Table:
    cols: list[str] = []
    flats = [_flat(r) for r in recs]
    for f in flats:
        cols += [k for k in f if k not in cols]
    return Table(cols, [[f.get(c) for c in cols] for f in flats])


def records(obj: Any) -> bool:
    return isinstance(obj, list) and bool(obj) and all(isinstance(x, Mapping) for x in obj)


def any_blocks(obj: Any) -> list[Block]:
    """A dict as key/value rows (each list of dicts its own titled table), a list of dicts as a
    table, anything else as JSON."""
    if isinstance(obj, Mapping):
        lists = {k: v for k, v in obj.items() if records(v)}
        rest = {k: v for k, v in obj.items() if k not in lists}
        out: list[Block] = [kv_table(rest)] if rest else []
        for k, v in lists.items():
            out += [Text("heading", str(k)), records_table(v)]
        return out
    if records(obj):
        return [records_table(obj)]
    return [Text("pre", json.dumps(obj, indent=2, default=str))]



def _unknown_block(block: Any) -> str:
    raise TypeError(f"the report has no template for a block of type {type(block).__name__}")


@cache
def environment() -> jinja2.Environment:
    """The page's Jinja2 environment: templates from package data, autoescape on, strict names."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("scaling.report", "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters.update(cell=fmt, sort_value=sort_value)
    env.globals["unknown_block"] = _unknown_block
    return env


@cache
def static() -> dict[str, Markup]:
    """The page's own CSS and scripts (``static/``), inlined verbatim: trusted package data."""
    root = files("scaling.report") / "static"
    return {name: Markup((root / fname).read_text(encoding="utf-8"))
            for name, fname in (("css", "page.css"), ("error_hook", "error_hook.js"), ("sort_tables", "sort_tables.js"))}
