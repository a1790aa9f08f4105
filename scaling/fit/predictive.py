"""``PredictiveLaw``: the law that cross-validation chose or combined, with every candidate's score.

The law is ``L(N, D) = sum_c w_c L_c(N, D)`` over the candidate laws ``L_c`` refitted on all the
rows (one weight of 1 when one candidate was selected). Its compute-optimal allocation is the
member's own (Hoffmann et al. 2022, eq. 4 for approach 3) when one member carries all the weight,
else ``argmin_N L(N, C / 6N)`` found numerically. Bootstrap draws hold, per resample, the weights
the whole procedure chose and every member's refitted parameters, so confidence intervals
include the choice. Usable wherever a law is (``scaling plan --law fit:PATH``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from scaling.fit.candidates import law_vector_loss
from scaling.fit.results import LawFit
from scaling.laws.base import Allocation, numeric_allocation

FORM = "predictive"


@dataclass(frozen=True, eq=False)
class PredictiveLaw:
    """Members (refitted candidates), their weights, the held-out score table and the design."""

    members: tuple[LawFit, ...]
    names: tuple[str, ...]
    weights: tuple[float, ...]
    combine: str
    table: tuple[Mapping[str, Any], ...]
    design: Mapping[str, Any]
    draws: Mapping[str, Any] | None = None

    form = FORM
    approach = "predict"

    # ---- Law protocol ------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return "fit:predict"

    @property
    def citation(self) -> str:
        chosen = ", ".join(f"{n} ({w:.2f})" for n, w in self._active())
        return f"fitted here; chosen by cross-validation over {self.design.get('axis')}: {chosen}"

    @property
    def param_convention(self) -> str:
        return self.members[0].param_convention

    @property
    def flops_convention(self) -> str:
        return self.members[0].flops_convention

    @property
    def info(self) -> dict[str, Any]:
        """The heaviest member's fit information, the design, and the data's largest FLOPs."""
        info = {**dict(self.members[int(np.argmax(self.weights))].info), "design": dict(self.design)}
        if self.design.get("max_flops"):
            info["max_flops"] = self.design["max_flops"]
        return info

    @property
    def chosen(self) -> str:
        """The member with the largest weight (the one selected, under ``select``)."""
        return self.names[int(np.argmax(self.weights))]

    def _active(self) -> list[tuple[str, float]]:
        return [(n, w) for n, w in zip(self.names, self.weights, strict=True) if w > 0]

    def loss(self, params: Any, tokens: Any) -> Any:
        n, d = np.asarray(params, float), np.asarray(tokens, float)
        out = sum(w * np.asarray(m.loss(n, d), float) for m, w in zip(self.members, self.weights, strict=True) if w > 0)
        return float(out) if np.ndim(out) == 0 else out

    def optimal_allocation(self, flops: float) -> Allocation:
        active = [m for m, w in zip(self.members, self.weights, strict=True) if w > 0]
        if len(active) == 1:
            return active[0].optimal_allocation(flops)
        return numeric_allocation(self.loss, flops)

    # ---- uncertainty ---------------------------------------------------------------------------------

    def draw_losses(self, params: Any, tokens: Any) -> np.ndarray | None:
        """(B, ...) predicted losses, one per bootstrap resample of the whole procedure."""
        if not self.draws:
            return None
        n, d = np.broadcast_arrays(np.asarray(params, float), np.asarray(tokens, float))
        w = np.asarray(self.draws["weights"], float)
        out = np.zeros((len(w), *n.shape))
        for c, law in enumerate(self.members):
            used = w[:, c] > 0
            if used.any():
                vec = np.asarray(self.draws["vectors"][c], float)[used]
                out[used] += w[used, c].reshape(-1, *([1] * n.ndim)) * law_vector_loss(law, vec, n, d)
        return out

    def predict(self, params: Any, tokens: Any, interval: str | None = None, alpha: float = 0.05) -> Any:
        """Predicted loss; ``interval="confidence"``: a dict ``loss, lower, upper`` (bootstrap
        percentiles of the whole procedure's predictions)."""
        mean = np.asarray(self.loss(params, tokens), float)
        if interval is None:
            return mean
        if interval != "confidence":
            raise ValueError(f"interval: {interval!r} is not 'confidence'")
        sims = self.draw_losses(params, tokens)
        if sims is None:
            return {"loss": mean, "lower": mean, "upper": mean}
        lo, hi = np.nanpercentile(sims, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
        return {"loss": mean, "lower": lo, "upper": hi}

    def choice_frequency(self) -> dict[str, float]:
        """How often each member carried the most weight across bootstrap resamples."""
        if not self.draws:
            return {}
        w = np.asarray(self.draws["weights"], float)
        top = np.bincount(np.argmax(w, axis=1), minlength=len(self.names)) / len(w)
        return {n: float(f) for n, f in zip(self.names, top, strict=True)}

    # ---- serialisation ---------------------------------------------------------------------------------

    def to_dict(self, include_draws: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "approach": self.approach,
            "form": FORM,
            "param_convention": self.param_convention,
            "flops_convention": self.flops_convention,
            "combine": self.combine,
            "chosen": self.chosen,
            "weights": dict(zip(self.names, self.weights, strict=True)),
            "design": dict(self.design),
            "candidates": [dict(r) for r in self.table],
            "choice_frequency": self.choice_frequency(),
            "members": [m.to_dict(include_draws=False) for m in self.members],
            "params": {f"w[{n}]": w for n, w in zip(self.names, self.weights, strict=True)},
        }
        if include_draws and self.draws:
            out["draws"] = {
                "weights": np.asarray(self.draws["weights"]).tolist(),
                "vectors": [np.asarray(v).tolist() for v in self.draws["vectors"]],
                "seed": self.draws.get("seed"),
                "n": self.draws.get("n"),
            }
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PredictiveLaw:
        members = tuple(LawFit.from_dict(m) for m in d["members"])
        weights = d["weights"]
        return cls(
            members=members,
            names=tuple(weights),
            weights=tuple(float(w) for w in weights.values()),
            combine=str(d["combine"]),
            table=tuple(d.get("candidates", [])),
            design=dict(d.get("design", {})),
            draws=d.get("draws"),
        )

    # ---- display ---------------------------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """One row per candidate: name, held-out error per fold and their mean, weight, chosen."""
        freq = self.choice_frequency()
        return [{**r, "bootstrap_choice": freq.get(r["name"])} for r in self.table]

    def summary(self, fmt: str = "text") -> str:
        """The candidates' held-out errors and which one predicts (``text`` or ``html``)."""
        folds = list(self.design.get("folds", []))
        head = ["candidate"] + [f"err {'N' if f.get('axis') == 'params' else f.get('axis', '')} {f['left_out']:.3g}" for f in folds] + ["mean", "weight", "boot"]
        body = [[r["name"], *(_pct(e) for e in r.get("errors") or [None] * len(folds)), _pct(r.get("score")),
                 f"{r.get('weight', 0):.2f}", _pct(r.get("bootstrap_choice"), 0)] for r in self.rows()]
        title = (f"cross-validated over {self.design.get('axis')} ({self.design.get('design')} design), "
                 f"{self.combine}: {self.chosen}; errors are mean |log L_hat - log L| of the left-out level")
        if fmt == "html":
            cells = "".join(
                f"<tr{' class=chosen' if r.get('chosen') else ''}>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in row) + "</tr>"
                for r, row in zip(self.rows(), body, strict=True)
            )
            heads = "".join(f"<th>{html.escape(h)}</th>" for h in head)
            return f"<table class='predict'><caption>{html.escape(title)}</caption><tr>{heads}</tr>{cells}</table>"
        if fmt != "text":
            raise ValueError(f"fmt: {fmt!r} is not 'text' or 'html'")
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
        lines = [title, "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
        for r, row in zip(self.rows(), body, strict=True):
            mark = " <- " + ("chosen" if self.combine == "select" else "weighted") if r.get("chosen") else ""
            lines.append("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) + mark)
        refused = [r for r in self.table if r.get("refused")]
        lines += [f"  {r['name']}: not scored ({r['refused']})" for r in refused]
        return "\n".join(lines)


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{100 * x:.{digits}f}%"


def is_predictive(d: Mapping[str, Any]) -> bool:
    """Whether a saved fit's dict is a :class:`PredictiveLaw`'s."""
    return d.get("form") == FORM


__all__: Sequence[str] = ("PredictiveLaw", "is_predictive")
