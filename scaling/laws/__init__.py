"""Published scaling laws by name, and fitted ones from a file.

``get_law("epoch")`` returns an immutable law object (see :class:`scaling.laws.base.Law`);
``get_law("fit:study/fit/approach3_total.json")`` loads a law fitted by ``scaling fit``.
``LAW_NAMES`` lists the published ones, in the order ``scaling plan --law all`` shows them;
``tokens-per-param-R`` (and ``tokens-per-param-R-non-embedding``) is the rule ``D = R N`` for any R.
"""

from __future__ import annotations

from collections.abc import Callable

from scaling.laws.base import Allocation, Law, ParametricLaw, PowerLawAllocation


def _published() -> dict[str, Callable[[], Law]]:
    def hoffmann(attr: str) -> Callable[[], Law]:
        def get() -> Law:
            from scaling.laws import hoffmann as h

            return getattr(h, attr)

        return get

    def attr_of(module: str, attr: str) -> Callable[[], Law]:
        def get() -> Law:
            import importlib

            return getattr(importlib.import_module(f"scaling.laws.{module}"), attr)

        return get

    def rule20() -> Law:
        from scaling.laws.hoffmann import tokens_per_param_rule

        return tokens_per_param_rule(20.0)

    return {
        "kaplan": attr_of("kaplan", "KAPLAN"),
        "chinchilla": hoffmann("CHINCHILLA"),
        "chinchilla-rounded": hoffmann("CHINCHILLA_ROUNDED"),
        "chinchilla-1": hoffmann("CHINCHILLA_APPROACH1"),
        "chinchilla-2": hoffmann("CHINCHILLA_APPROACH2"),
        "epoch": attr_of("epoch", "EPOCH"),
        "llama3": attr_of("llama3", "LLAMA3"),
        "llama3-rounded": attr_of("llama3", "LLAMA3_ROUNDED"),
        "deepseek": attr_of("deepseek", "DEEPSEEK"),
        "muennighoff": attr_of("muennighoff", "MUENNIGHOFF"),
        "tokens-per-param-20": rule20,
    }


_REGISTRY = _published()
LAW_NAMES: tuple[str, ...] = tuple(_REGISTRY)
FIT_PREFIX = "fit:"
RULE_PREFIX = "tokens-per-param-"


class UnknownLawError(ValueError):
    """A law name that is neither published nor ``fit:PATH``."""


def get_law(name: str) -> Law:
    """The law called ``name`` (one of :data:`LAW_NAMES`) or ``fit:PATH`` (a fitted law's JSON)."""
    key = str(name).strip()
    if key.startswith(FIT_PREFIX):
        return _load_fitted(key[len(FIT_PREFIX) :])
    get = _REGISTRY.get(key.lower())
    if get is None and key.lower().startswith(RULE_PREFIX):
        return _ratio_rule(key)
    if get is None:
        raise UnknownLawError(
            f"law={name!r}: unknown; choose one of {', '.join(LAW_NAMES)}, 'all', or fit:PATH"
        )
    return get()


def _ratio_rule(key: str) -> Law:
    """``tokens-per-param-R`` or ``tokens-per-param-R-non-embedding``: D = R N."""
    from scaling.laws.hoffmann import tokens_per_param_rule

    rest = key.lower()[len(RULE_PREFIX) :]
    convention = "total"
    if rest.endswith("-non-embedding"):
        rest, convention = rest[: -len("-non-embedding")], "non_embedding"
    try:
        ratio = float(rest)
    except ValueError:
        raise UnknownLawError(
            f"law={key!r}: write tokens-per-param-R with a number R, e.g. tokens-per-param-200-non-embedding"
        ) from None
    return tokens_per_param_rule(ratio, convention)


def _load_fitted(path: str) -> Law:
    if not path:
        raise UnknownLawError(
            "law='fit:': give the fitted law's file, e.g. fit:STUDY/fit/approach3_total.json"
        )
    from scaling.fit import load_law

    return load_law(path)


__all__ = [
    "FIT_PREFIX",
    "LAW_NAMES",
    "Allocation",
    "Law",
    "ParametricLaw",
    "PowerLawAllocation",
    "UnknownLawError",
    "get_law",
]
