"""Import-only stand-ins for the GPU kernel packages Nanotron imports at module level.

Nanotron at the pinned commit imports ``flash_attn`` (``models/llama.py``, ``models/qwen.py``,
``nn/rotary.py``, ``nn/layer_norm.py``, the ring-attention modules), ``triton`` (Triton kernels
defined at import time with ``@triton.jit``) and, lazily, ``grouped_gemm`` (MoE), even where the
code path a run takes never calls them: ``import nanotron.config`` alone needs ``flash_attn``.

:func:`install` makes the *missing* ones importable (a package that is installed is left alone):
every attribute of a stand-in module is a :class:`MissingKernel` class, which Nanotron can
import, subclass (``class FlashRotaryEmbedding(flash_attn.layers.rotary.RotaryEmbedding)``) and
decorate with (``@triton.jit``), but which raises :class:`MissingKernelError`, naming the kernel
and the package to install, the moment anything calls or instantiates it. So a run on a code path
that needs no kernel trains, and a run on one that does fails loudly at its first call.

Only two places call :func:`install`: the training entry point (:mod:`.entry`), when the chosen
model path runs without flash-attn, and the tests that load Nanotron's config classes. Nothing
else in the package imports Nanotron, so these never reach another process.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

#: top-level package -> how to install the real one
PACKAGES = {
    "flash_attn": "pip install flash-attn (a CUDA build; or set backend_options.attention: sdpa)",
    "grouped_gemm": "pip install grouped_gemm (Nanotron's MoE layers only)",
    "triton": "pip install triton (ships with CUDA builds of torch)",
}
STAND_IN_VERSION = "0+missing"  # parses as a version lower than any release (nanotron compares flash_attn's)


class MissingKernelError(RuntimeError):
    """A kernel from a package that is not installed was called."""


class _MissingMeta(type):
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and callable(args[0]) and not isinstance(args[0], type):
            return _missing(f"{cls._qualname}({getattr(args[0], '__name__', 'fn')})")  # used as a decorator
        if not args and kwargs and cls._qualname.split(".")[-1] in ("heuristics", "autotune", "jit"):
            return cls  # a decorator factory: @triton.heuristics(values=...)
        raise MissingKernelError(
            f"{cls._qualname} was called, but {cls._package} is not installed here "
            f"(only stood in so that Nanotron imports): {PACKAGES[cls._package]}"
        )

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing(f"{cls._qualname}.{name}")

    def __getitem__(cls, item: Any) -> Any:  # kernel[grid](...) raises at the call
        if isinstance(item, int):  # not a sequence: iteration stops at once
            raise IndexError(item)
        return cls

    def __iter__(cls) -> Any:
        return iter(())


class MissingKernel(metaclass=_MissingMeta):
    """Base of every stand-in attribute; calling or instantiating one (or a subclass) raises."""

    _qualname = "missing"
    _package = "flash_attn"


def _missing(qualname: str) -> type:
    package = qualname.split(".")[0].split("(")[0]
    return _MissingMeta(qualname.rsplit(".", 1)[-1], (MissingKernel,), {"_qualname": qualname, "_package": package})


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = _missing(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``pkg`` and every ``pkg.sub.module`` of the stood-in packages."""

    def __init__(self, packages: frozenset[str]) -> None:
        self.packages = packages

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] not in self.packages:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StandInModule(spec.name)
        module.__path__ = []
        module.__version__ = STAND_IN_VERSION
        module.__stand_in__ = True
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def missing_packages() -> list[str]:
    """The kernel packages that are not installed (stood-in ones count as missing)."""
    out = []
    for name in PACKAGES:
        module = sys.modules.get(name)
        if module is not None:
            if getattr(module, "__stand_in__", False):
                out.append(name)
            continue
        if importlib.util.find_spec(name) is None:
            out.append(name)
    return out


def installed_stand_ins() -> list[str]:
    return sorted(p for f in sys.meta_path if isinstance(f, _StandInFinder) for p in f.packages)


def install(packages: list[str] | None = None) -> list[str]:
    """Stand in for ``packages`` (default: every missing one of :data:`PACKAGES`); return those
    stood in. Idempotent; a package that is installed is never replaced."""
    wanted = missing_packages() if packages is None else [p for p in packages if p in missing_packages()]
    new = frozenset(wanted) - set(installed_stand_ins())
    if new:
        sys.meta_path.append(_StandInFinder(new))  # last: a real package anywhere on the path wins
    return sorted(wanted)


def uninstall() -> None:
    """Remove the finders and every stood-in module (tests use this to leave the process clean)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _StandInFinder)]
    for name in [n for n, m in sys.modules.items() if getattr(m, "__stand_in__", False)]:
        del sys.modules[name]
