"""From a scaling study to a model someone uses: choose it from the law, then SFT and DPO (TRL),
evaluated on held-out data before and after each stage.

* :func:`select` (``scaling.align.select``): the finished run nearest the law's ``N*(C)``.
* :func:`align` (``scaling.align.run``): base -> SFT -> DPO with a table of held-out metrics.
* ``scaling.align.data``: data formats, loaders and the built-in demo tasks.

Importing this package loads neither torch nor transformers; the stages import them when run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Load the (light, torch-free) submodule before defining the function of the same name: Python
# binds a package attribute to a submodule when it is first imported, which would otherwise
# replace the function below with the module.
from scaling.align import select as _select_module  # noqa: F401


def select(study_dir: str | Path, fit: Any = None, budget: float | None = None, **kw: Any) -> dict[str, Any]:
    """The run to align, written to ``STUDY/select.json`` (see :func:`scaling.align.select.select`)."""
    from scaling.align.select import select as _select

    return _select(study_dir, fit=fit, budget=budget, **kw)


def align(model_dir: str | Path, out_dir: str | Path | None = None, sft_data: str | None = None,
          dpo_data: str | None = None, beta: float = 0.1, loss_type: str = "sigmoid", **kw: Any) -> dict[str, Any]:
    """SFT then DPO with evaluation (see :func:`scaling.align.run.align`)."""
    from scaling.align.run import align as _align

    return _align(model_dir, out_dir, sft_data, dpo_data, beta, loss_type, **kw)


__all__ = ["align", "select"]
