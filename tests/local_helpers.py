"""Shared pieces of the local-backend tests: a small real corpus and tiny run specs."""

from __future__ import annotations

from typing import Any

from scaling.runspec import RunSpec

# 400K characters of the shipped Shakespeare: tokenizes in well under a second
DATA = {"source": "builtin:shakespeare", "max_chars": 400_000}


def tiny_spec(**over: Any) -> RunSpec:
    d: dict[str, Any] = {
        "shape": {"layers": 1, "hidden": 32, "heads": 2, "vocab": 512, "seq_len": 64},
        "tokens": 20 * 512,
        "batch_tokens": 512,
        "optimizer": {"lr": 1e-2},
        "data": DATA,
        "eval_tokens": 2048,
        "backend_options": {"threads": 1},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    return RunSpec.model_validate(d)
