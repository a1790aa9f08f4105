"""The alignment stages' training curves: SFT loss, the reward model's pairwise accuracy, RL's
reward and KL to the SFT model, DPO's loss and implicit-reward accuracy, each from its stage's
``align/<stage>/metrics.jsonl`` (train and held-out series where both are logged)."""

from __future__ import annotations

import plotly.graph_objects as go

from scaling.report.data import Study
from scaling.report.figures import new_figure, styled

ALIGN_PANELS = (
    ("sft", ("loss", "eval_loss"), "SFT loss (nats/token)"),
    ("reward", ("accuracy", "eval_accuracy"), "reward model pairwise accuracy"),
    ("rlhf", ("reward",), "RLHF reward (reward model)"),
    ("rlhf", ("kl",), "RLHF KL to SFT (nats/token)"),
    ("dpo", ("loss", "eval_loss"), "DPO loss"),
    ("dpo", ("rewards/accuracies", "eval_rewards/accuracies"), "DPO implicit-reward accuracy"),
)


def alignment(study: Study) -> go.Figure | None:
    """Training curves of each alignment stage from align/{sft,reward,rlhf,dpo}/metrics.jsonl."""
    panels = []
    for stage, keys, title in ALIGN_PANELS:
        rows = study.align_metrics.get(stage) or []
        series = [(k, [(r.get("step"), r[k]) for r in rows if isinstance(r.get(k), (int, float)) and r.get("step") is not None]) for k in keys]
        series = [(k, s) for k, s in series if s]
        if series:
            panels.append((title, series))
    if not panels:
        return None
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig = new_figure(rows=nrows, cols=cols, subplot_titles=[p[0] for p in panels], horizontal_spacing=0.07,
                  vertical_spacing=0.16)
    for i, (_, series) in enumerate(panels):
        row, col = divmod(i, cols)
        for k, s in series:
            held = k.startswith("eval")
            fig.add_trace(go.Scatter(x=[a for a, _ in s], y=[b for _, b in s], mode="lines+markers" if held else "lines",
                                     name="held-out" if held else "train", legendgroup="eval" if held else "train",
                                     showlegend=i == 0, line={"color": "#d62728" if held else "#1f77b4"},
                                     marker={"size": 6}), row=row + 1, col=col + 1)
        fig.update_xaxes(title_text="optimizer step", row=row + 1, col=col + 1)
    return styled(fig, "Alignment: SFT, reward model, RLHF and DPO", height=340 * nrows)
