"""From a scaling study to an assistant: choose the model from the law, then SFT, a reward model,
RLHF (RLOO) and DPO with TRL, compared side by side on held-out tasks.

* :func:`select` (``scaling.align.select``): the finished run nearest the law's ``N*(C)``.
* :func:`align` (``scaling.align.run``): SFT -> reward model -> RLHF and DPO, with the table.
* ``scaling.align.tasks``: built-in instruction tasks with exact answers, cut from the corpus.
* ``scaling.align.data``: users' data formats and loaders.

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
          dpo_data: str | None = None, prompts_data: str | None = None, **kw: Any) -> dict[str, Any]:
    """SFT, reward model, RLHF and DPO with the side-by-side evaluation (see :func:`scaling.align.run.align`)."""
    from scaling.align.run import align as _align

    return _align(model_dir, out_dir, sft_data, dpo_data, prompts_data, **kw)


__all__ = ["align", "select"]
