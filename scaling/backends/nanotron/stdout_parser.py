"""Fallback: per-step metrics from Nanotron's stdout, for runs whose entry point did not record them.

Nanotron's logging rank prints one line per step (``trainer.train_step_logs`` through
``LoggerWriter.add_scalars_from_list``)::

    [default0]:\\x1b[2;3m11/27/2026 18:02:11 [INFO|DP=0|TP=0|node01]\\x1b[0m: iteration: 12 / 100 |
        consumed_tokens: 98.3K | ... | lm_loss: 7.12 | lr: 0.0003 | model_tflops_per_gpu: 12.3 | eta: 0:00:28

``torchrun --tee`` adds the ``[defaultN]:`` prefix; the logger adds ANSI colours. Every number goes
through ``human_format``: three significant digits and a K/M/B/T suffix. That is why the entry
point records losses itself; these parsed losses carry +-0.5% rounding and must not feed fits
when full-precision metrics exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PREFIX = re.compile(r"^\s*\[[A-Za-z_]*\d+\]:\s?")
_ITER = re.compile(r"iteration:\s*(\d+)\s*/\s*(\d+)")
_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_NUMBER = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)([KMBTPE]?)$")

# Nanotron's tags -> our metrics keys (scaling.backends.base contract)
KEYS = {
    "lm_loss": "loss",
    "lr": "lr",
    "grad_norm": "grad_norm",
    "consumed_tokens": "tokens",
    "tokens_per_sec": "tokens_per_s",
    "tokens_per_sec_per_gpu": "tokens_per_s_per_gpu",
    "model_tflops_per_gpu": "model_tflops_per_gpu",
    "time_per_iteration_ms": "step_ms",
    "global_batch_size": "batch_tokens",
    "z_loss": "z_loss",
}


def clean(line: str) -> str:
    """The line without ANSI codes and without torchrun's ``[defaultN]:`` prefix."""
    return _PREFIX.sub("", _ANSI.sub("", line)).rstrip("\n")


def parse_number(text: str) -> float | None:
    """``"98.3K"`` -> 98300.0, ``"0.000300"`` -> 0.0003, ``"1.2e-05"`` -> 1.2e-05; ``None`` if not a number."""
    m = _NUMBER.match(text.strip())
    if not m:
        return None
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def parse_line(line: str) -> dict[str, Any] | None:
    """One step's metrics, or ``None`` for any other line."""
    text = clean(line)
    m = _ITER.search(text)
    if not m:
        return None
    row: dict[str, Any] = {"step": int(m.group(1)), "train_steps": int(m.group(2))}
    for part in text[m.end() :].split("|"):
        tag, sep, value = part.partition(":")
        if not sep:
            continue
        tag, value = tag.strip(), value.strip()
        if tag == "eta":
            continue
        number = parse_number(value)
        if number is None:
            continue
        row[KEYS.get(tag, tag)] = number
    if "step" in row and "tokens" in row:
        row["tokens"] = int(round(row["tokens"]))
    row["precision"] = "3 significant digits (stdout)"
    return row


def parse_lines(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Every step line, the last one kept when a step repeats (a resumed run re-logs steps)."""
    by_step: dict[int, dict[str, Any]] = {}
    for line in lines:
        row = parse_line(line)
        if row is not None:
            by_step[row["step"]] = row
    return [by_step[k] for k in sorted(by_step)]


def parse_file(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse_lines(f)
