"""Fuzzed specs, CSV and JSONL files: each one either loads or is refused as bad input (exit 2).

Anything else (a traceback: KeyError, TypeError, RecursionError...) is a bug the user would see as
exit 1. Seeded (``derandomize``) so a failure reproduces; each property runs in a few seconds.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaling.errors import exit_code
from scaling.fit.data import Columns, normalise, read_table
from scaling.sweep.grid import expand
from scaling.sweep.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]
SEED_SPECS = [(ROOT / "sweeps" / "quickstart.yaml").read_text(), (ROOT / "tests" / "specs" / "pipeline_tiny.yaml").read_text()]
def fuzz(n: int) -> settings:
    return settings(max_examples=n, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def exits(fn, *args) -> int:
    """The exit status the CLI would give: 0 when ``fn`` returns, else what ``scaling.cli`` maps."""
    try:
        fn(*args)
    except Exception as e:  # the point: only bad-input errors may escape
        code = exit_code(e)
        if code != 2:
            raise
        return code
    return 0


def load_and_expand(text: str) -> None:
    spec = parse_spec(text, source="fuzz.yaml")
    runs = spec.grid.model_dump()
    if len(json.dumps(runs, default=str)) < 20_000:  # expansion of an explicit grid of sane size
        expand(spec)


# ---- specs: mutations of the shipped specs, and random YAML documents ------------------------------

YAML_CHARS = string.ascii_letters + string.digits + " :-[]{},&*!|>'\"#%@`\n\t.eE+_/\\?"
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.text(YAML_CHARS, max_size=12),
    st.sampled_from(["isoflop", "kaplan_n", "kaplan_d", "wsd_branches", "runs", "local", "bpe", "1e11", "-1", "nan"]),
)
KEYS = st.sampled_from(
    ["name", "grid", "kind", "budgets", "sizes", "tokens", "size", "runs", "model", "vocab", "seq_len", "train",
     "batch", "lr", "rule", "data", "source", "layers", "hidden", "heads", "around_optimum", "k", "spread",
     "executor", "backend", "schedule", "sizes_per_budget", "budget", "x"]
)
documents = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                          st.dictionaries(KEYS | scalars.filter(lambda v: isinstance(v, (str, int))), inner, max_size=6)),
                         max_leaves=30)


# YAML's own constructs, which random characters rarely spell: anchors, merges, tags, complex keys.
FRAGMENTS = st.sampled_from(
    ["&a ", "*a", "<<: *a\n", "\n<<: [*a]\n", "!!binary ", "!!float ", "!!int ", "!!set ", "!!timestamp ",
     "? [1, 2]\n: 3\n", "\n- ", "{", "[", "'", '"', ": ", "\n  ", "1e999", "-.inf", "0x1f", "2001-12-14", "~"]
)


@st.composite
def mutated_spec(draw) -> str:
    text = draw(st.sampled_from(SEED_SPECS))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = min(len(text), i + draw(st.integers(0, 8)))
        text = text[:i] + draw(st.text(YAML_CHARS, max_size=8) | FRAGMENTS) + text[j:]
    return text


@fuzz(800)
@given(st.one_of(mutated_spec(), st.text(YAML_CHARS, max_size=200)))
def test_spec_text_loads_or_exits_2(text):
    assert exits(load_and_expand, text) in (0, 2)


@fuzz(500)
@given(documents)
def test_spec_documents_load_or_exit_2(doc):
    if isinstance(doc, dict):
        doc.setdefault("name", "fuzz")
    text = yaml.safe_dump(doc) if not isinstance(doc, float) else str(doc)
    assert exits(load_and_expand, text) in (0, 2)


# ---- CSV and JSONL files for scaling fit ------------------------------------------------------------

cells = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-5, 10**12).map(str),
                  st.text(string.printable, max_size=6), st.just(""))


def read_and_normalise(path: Path) -> None:
    frame, _ = read_table(path)
    normalise(frame, Columns())


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@fuzz(400)
@given(header=st.lists(st.sampled_from(["params", "tokens", "loss", "flops", "run_id", "", "x,y", '"q'])
                       , min_size=0, max_size=5),
       rows=st.lists(st.lists(cells, max_size=6), max_size=8),
       raw=st.binary(max_size=40))
def test_csv_loads_or_exits_2(work, header, rows, raw):
    path = work / "f.csv"
    text = "\n".join([",".join(header)] + [",".join(r) for r in rows])
    path.write_bytes(text.encode() + (raw if len(raw) % 3 == 0 else b""))
    assert exits(read_and_normalise, path) in (0, 2)


json_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**30), 10**30), st.none(),
                        st.booleans(), st.text(max_size=5), st.lists(st.integers(), max_size=2))


@fuzz(500)
@given(objs=st.lists(st.one_of(st.dictionaries(st.sampled_from(["params", "tokens", "loss", "flops", "step", "q"]),
                                               json_values, max_size=5), json_values), max_size=8),
       cut=st.integers(0, 400), junk=st.text(max_size=6))
def test_jsonl_loads_or_exits_2(work, objs, cut, junk):
    path = work / "f.jsonl"
    text = "\n".join(json.dumps(o) for o in objs)
    if cut < len(text):
        text = text[:cut] + junk + text[cut:]
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert exits(read_and_normalise, path) in (0, 2)
