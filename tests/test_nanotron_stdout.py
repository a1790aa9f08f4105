"""The fallback parser of Nanotron's step lines (recorded and launcher-wrapped lines)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaling.backends.nanotron.stdout_parser import clean, parse_file, parse_line, parse_number

LOG = Path(__file__).parent / "fixtures" / "nanotron_stdout.log"


@pytest.mark.parametrize(
    "text,value",
    [("98.3K", 98300.0), ("1.4M", 1.4e6), ("2B", 2e9), ("0.0003", 3e-4), ("3.3e-05", 3.3e-5), ("9.2", 9.2), ("-1.5", -1.5)],
)
def test_numbers_with_suffixes(text, value):
    assert parse_number(text) == pytest.approx(value)


def test_not_numbers():
    assert parse_number("0:00:28") is None
    assert parse_number("nan-ish") is None


def test_recorded_lines():
    rows = parse_file(LOG)
    assert [r["step"] for r in rows] == [12, 13, 91, 120, 191]
    r91 = next(r for r in rows if r["step"] == 91)
    assert r91["loss"] == pytest.approx(9.2)
    assert r91["lr"] == pytest.approx(3.3e-5)
    assert r91["grad_norm"] == pytest.approx(1.4e6)
    assert r91["tokens"] == 93200
    assert r91["tokens_per_s"] == pytest.approx(11300)
    assert r91["model_tflops_per_gpu"] == pytest.approx(0.784)
    assert r91["train_steps"] == 100
    assert "3 significant digits" in r91["precision"]


def test_prefix_and_ansi_are_stripped():
    line = LOG.read_text().splitlines()[-3]
    assert clean(line).startswith("11/27/2026 18:02:11 [INFO|DP=0|TP=0|node01]: iteration: 12")
    row = parse_line(line)
    assert (row["step"], row["loss"], row["grad_norm"]) == (12, pytest.approx(7.12), pytest.approx(0.873))
    assert "eta" not in row


def test_other_lines_and_repeats():
    assert parse_line("[default0]: [Optimizer Building] 0 params excluded from weight decay") is None
    lines = ["iteration: 5 / 10 | lm_loss: 3.25", "iteration: 5 / 10 | lm_loss: 3.24"]  # a resumed run re-logs step 5
    from scaling.backends.nanotron.stdout_parser import parse_lines

    assert [r["loss"] for r in parse_lines(lines)] == [pytest.approx(3.24)]
