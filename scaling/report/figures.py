"""The report's plotly figures. Each function returns a ``go.Figure`` or ``None`` when its data is absent.

Axes carry units: parameters N (count), tokens D (count), compute C (FLOPs, C = 6 N D), loss
(nats per token). Every string from the store reaches plotly through :func:`text` (escaped), since
plotly renders a subset of HTML in names and hover text.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from scaling.convention import N_COLUMN
from scaling.laws import get_law
from scaling.report.data import CONVENTION_LABEL, CONVENTIONS, Study

LOSS_AXIS = "loss (nats/token)"
MAX_CURVE_POINTS = 120  # per run: a smooth line on log axes
MIN_CURVE_POINTS = 16  # per run, however many runs: the curve's shape still shows
CURVE_POINTS = 160_000  # per panel, across runs: what a page of curves embeds and draws in a second or two
# An explicit style instead of a plotly template: templates are deep-copied into every figure,
# which costs more than building the figure itself.
AXIS_STYLE = {"gridcolor": "#e6e6e6", "linecolor": "#888", "showline": True, "zeroline": False,
              "ticks": "outside", "tickcolor": "#888", "ticklen": 4}
LAYOUT = {
    "template": None,
    "plot_bgcolor": "white",
    "paper_bgcolor": "white",
    "font": {"family": "system-ui, -apple-system, 'Segoe UI', sans-serif", "size": 12, "color": "#2a3f5f"},
    "colorway": ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"],
    "height": 430,
    "margin": {"l": 70, "r": 20, "t": 60, "b": 60},
    "legend": {"font": {"size": 11}},
    "hoverlabel": {"namelength": -1},
}
# published laws drawn beside the fitted frontier, as named in scaling.laws
PUBLISHED = (("kaplan", "Kaplan 2020"), ("chinchilla", "Chinchilla 2022"), ("epoch", "Epoch 2024"))


def text(s: Any) -> str:
    return html.escape(str(s), quote=False)


def fmt_sci(x: float, digits: int = 3) -> str:
    """1.2e11 style (no '+', no leading zeros in the exponent)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    s = f"{x:.{digits}g}"
    if "e" in s:
        m, e = s.split("e")
        return f"{m}e{int(e)}"
    return s


def budget_colors(budgets: list[float]) -> dict[float, str]:
    bs = sorted(set(budgets))
    if len(bs) == 1:
        return {bs[0]: sample_colorscale("Viridis", [0.2])[0]}
    return dict(zip(bs, sample_colorscale("Viridis", [0.05 + 0.8 * i / (len(bs) - 1) for i in range(len(bs))]), strict=True))


def new_figure(**subplots: Any) -> go.Figure:
    """An empty figure without a template (see AXIS_STYLE), with subplots when asked."""
    fig = go.Figure(layout={"template": None})
    return make_subplots(figure=fig, **subplots) if subplots else fig


def styled(fig: go.Figure, title: str, **kw: Any) -> go.Figure:
    """``fig`` with the house layout, its title and the axis style on every axis."""
    fig.update_layout(**{**LAYOUT, "title": {"text": title, "x": 0.01}, **kw})
    fig.update_xaxes(**AXIS_STYLE)
    fig.update_yaxes(**AXIS_STYLE)
    return fig


def curve_points(n_runs: int) -> int:
    """Points drawn per run: :data:`CURVE_POINTS` shared by the runs, between
    :data:`MIN_CURVE_POINTS` and :data:`MAX_CURVE_POINTS`."""
    return int(np.clip(CURVE_POINTS // max(1, n_runs), MIN_CURVE_POINTS, MAX_CURVE_POINTS))


def thin_runs(run: np.ndarray, x: np.ndarray, points: int) -> np.ndarray:
    """Indices of the rows to draw of runs laid out one after another (``run``: each row's run,
    contiguous; ``x`` increasing within a run): per run, the first row of each of ``points``
    equal steps of log x (the axes are logarithmic) and its last row; rows with x <= 0 or NaN never."""
    ok = np.flatnonzero(x > 0)
    if not len(ok):
        return ok
    r, lx = run[ok], np.log(x[ok])
    first = np.r_[True, r[1:] != r[:-1]]
    last = np.r_[r[1:] != r[:-1], True]
    run_of = np.cumsum(first) - 1  # 0..runs-1 in layout order
    lo, hi = lx[first][run_of], lx[last][run_of]
    span = np.where(hi > lo, hi - lo, 1.0)
    step = np.ceil((lx - lo) / span * (points - 1))
    new_step = np.r_[True, step[1:] != step[:-1]]
    return ok[first | last | new_step]


def _runs_by_budget(cv: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(order, run, budget, first_row)``: the rows of ``cv`` run after run (runs by budget, rows
    in logged order), each row's run number in that layout, and per run its budget (-1: none) and
    its first row in ``cv``."""
    codes, _ = pd.factorize(cv["run_id"])
    first_row = np.full(codes.max() + 1 if len(codes) else 0, len(codes), dtype=np.int64)
    np.minimum.at(first_row, codes, np.arange(len(codes)))
    budget = cv["budget"].to_numpy(float)[first_row] if "budget" in cv else np.full(len(first_row), np.nan)
    budget = np.nan_to_num(budget, nan=-1.0)
    rank = np.empty(len(first_row), dtype=np.int64)
    by = np.lexsort((first_row, budget))  # by budget, then as stored
    rank[by] = np.arange(len(by))
    order = np.argsort(rank[codes], kind="stable")  # rows of a run stay in logged order
    return order, rank[codes][order], budget[by], first_row[by]


def training_curves(study: Study) -> go.Figure | None:
    """Loss against tokens and against FLOPs, log axes, one line per run, coloured by budget.

    The runs of one budget share a trace, separated by gaps (NaN), and each run is thinned to
    :func:`curve_points` points (:func:`thin_runs`, float32), which keeps the page small and quick
    to draw with thousands of runs."""
    cv = study.curves
    if cv.empty or "loss" not in cv or "tokens" not in cv:
        return None
    xs = ["tokens", "flops"] if "flops" in cv and cv["flops"].notna().any() else ["tokens"]
    fig = new_figure(rows=1, cols=len(xs), horizontal_spacing=0.08,
                        subplot_titles=["loss vs tokens", "loss vs compute"][: len(xs)])
    cv = cv.dropna(subset=["loss"]).reset_index(drop=True)
    order, run, budgets, first_rows = _runs_by_budget(cv)
    names = cv["name"].iloc[first_rows] if "name" in cv else pd.Series([None] * len(first_rows))
    names = [text(n if isinstance(n, str) else rid) for n, rid in zip(names, cv["run_id"].iloc[first_rows], strict=True)]
    colors = budget_colors([b for b in budgets if b > 0])
    loss = cv["loss"].to_numpy(float)[order]
    tokens = cv["tokens"].to_numpy(float)[order]
    # FLOPs are tokens times a run's FLOPs per token: the same rows are evenly spaced on both axes
    thinned = thin_runs(run, tokens, curve_points(len(budgets)))
    for col, x in enumerate(xs, start=1):
        xv = tokens if x == "tokens" else cv[x].to_numpy(float)[order]
        keep = thinned[xv[thinned] > 0]
        r = run[keep]
        gap = np.r_[r[1:] != r[:-1], True]  # a NaN after each run's last point
        pos = np.arange(len(keep)) + np.cumsum(np.r_[False, gap[:-1]])
        n = len(keep) + int(gap.sum())
        px, py = np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32)
        px[pos], py[pos] = _sig(xv[keep]), np.round(loss[keep], 4)
        runs_at = np.full(n, -1)
        runs_at[pos] = r
        runs_at[pos[gap] + 1] = r[gap]  # the gap belongs to the run before it, for the budget split
        hover = np.array([*names, ""], dtype=object)[np.where(np.isnan(px), -1, runs_at)]
        for key in np.unique(budgets):
            label = f"C = {fmt_sci(key)} FLOPs" if key > 0 else "no budget"
            sel = budgets[runs_at] == key
            fig.add_trace(go.Scatter(
                x=px[sel], y=py[sel], customdata=hover[sel], mode="lines",
                name=label, legendgroup=label, showlegend=col == 1, connectgaps=False, opacity=0.85,
                line={"width": 1.1, "color": colors.get(key, "#888")},
                hovertemplate=f"%{{customdata}}<br>{x}=%{{x:.3s}}<br>loss=%{{y:.4f}}<extra>{label}</extra>",
            ), row=1, col=col)
    fig.update_xaxes(type="log", title_text="tokens D", row=1, col=1)
    if len(xs) == 2:
        fig.update_xaxes(type="log", title_text=f"compute C (FLOPs, counted {study.run_flops})", exponentformat="power", row=1, col=2)
    fig.update_yaxes(type="log", title_text=LOSS_AXIS)
    return styled(fig, "Training curves (one line per run)", height=460)


def _sig(a: np.ndarray, digits: int = 4) -> np.ndarray:
    """Round to significant digits, to keep the embedded JSON short."""
    a = np.asarray(a, dtype=float)
    with np.errstate(divide="ignore"):
        scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(np.where(a == 0, 1, a)))))
    return np.round(a * scale) / scale


def _tokens_along(runs: pd.DataFrame, n_col: str, n: np.ndarray) -> np.ndarray | None:
    """The tokens of a run of this budget at sizes ``n``: the budget's runs' ``log D`` against
    ``log N``, fitted by a line (slope -1 where C counts N the same way); None without tokens."""
    if "tokens" not in runs or runs[n_col].nunique() < 2:
        return None
    slope, icept = np.polyfit(np.log(runs[n_col].to_numpy(float)), np.log(runs["tokens"].to_numpy(float)), 1)
    return np.exp(icept + slope * np.log(n))


def isoflop(study: Study) -> go.Figure | None:
    """Loss against N at each budget, the fitted parabola in ln N and its minimum with a 1-sigma
    error bar, the run-to-run noise (``fit/noise.json``) as a band around the parabola; a toggle
    switches N between the non-embedding and total conventions."""
    done = study.done
    if done.empty or "budget" not in done or done["budget"].notna().sum() < 3:
        return None
    loss_col = study.loss_column()
    colors = budget_colors(list(done["budget"].dropna().unique()))
    fig = new_figure()
    groups: dict[str, list[int]] = {}
    titles: dict[str, str] = {}
    for conv in CONVENTIONS:
        n_col = N_COLUMN[conv]
        if n_col not in done or done[n_col].isna().all():
            continue
        idx: list[int] = []
        vs = {v.budget: v for v in study.valleys(conv)}
        titles[conv] = "IsoFLOP curves: ★ parabola minimum ±1σ" + (
            "; band: noise ±1σ" if study.noise else "") + (
            "" if all(v.interior for v in vs.values()) else "; ✕ no interior minimum (best run)")
        visible = not groups
        for budget, g in done.dropna(subset=["budget", n_col]).groupby("budget"):
            c = colors[budget]
            label = f"C = {fmt_sci(budget)}"
            names = [text(n) for n in g["name"].fillna(g["run_id"])] if "name" in g else list(g["run_id"])
            fig.add_trace(go.Scatter(
                x=g[n_col], y=g[loss_col], mode="markers", name=label, legendgroup=label,
                marker={"color": c, "size": 8}, visible=visible, customdata=names,
                hovertemplate="%{customdata}<br>N=%{x:.3s}<br>loss=%{y:.4f}<extra></extra>",
            ))
            idx.append(len(fig.data) - 1)
            v = vs.get(float(budget))
            if v is None or v.parabola is None:
                continue
            xs = np.exp(np.linspace(np.log(v.n_range[0]) - 0.15, np.log(v.n_range[1]) + 0.15, 60))
            sigma = study.noise_std(float(budget), _tokens_along(g, n_col, xs))
            if sigma is not None:  # the run-to-run noise of one run's loss, around the parabola
                fig.add_trace(go.Scatter(
                    x=np.concatenate([xs, xs[::-1]]),
                    y=np.concatenate([v.loss_at(np.log(xs)) + sigma, (v.loss_at(np.log(xs)) - sigma)[::-1]]),
                    mode="lines", fill="toself", fillcolor=c, opacity=0.15, line={"width": 0},
                    legendgroup=label, showlegend=False, visible=visible, hoverinfo="skip",
                    name=f"{label}: noise ±{np.min(sigma):.4f}" + ("" if np.ndim(sigma) == 0 else f"..{np.max(sigma):.4f}"),
                ))
                idx.append(len(fig.data) - 1)
            fig.add_trace(go.Scatter(
                x=xs, y=v.loss_at(np.log(xs)), mode="lines", legendgroup=label, showlegend=False,
                line={"color": c, "width": 1.5, "dash": "dot"}, visible=visible, hoverinfo="skip",
            ))
            se = v.log_n_se if math.isfinite(v.log_n_se) else 0.0
            fig.add_trace(go.Scatter(
                x=[v.n_opt], y=[v.loss_opt], mode="markers", legendgroup=label, showlegend=False,
                marker={"color": c, "size": 13, "symbol": "star" if v.interior else "x", "line": {"width": 1, "color": "black"}},
                error_x={"type": "data", "symmetric": False, "array": [v.n_opt * (math.exp(se) - 1)],
                         "arrayminus": [v.n_opt * (1 - math.exp(-se))], "color": c},
                visible=visible,
                hovertemplate=f"{label}: N*=%{{x:.3s}} (x/÷ {math.exp(se):.2f})<br>loss=%{{y:.4f}}"
                + ("" if v.interior else "<br>no interior minimum: best run") + "<extra></extra>",
            ))
            idx += [len(fig.data) - 2, len(fig.data) - 1]
        groups[conv] = idx
    if not fig.data:
        return None
    buttons = []
    for conv, idx in groups.items():
        vis = [i in set(idx) for i in range(len(fig.data))]
        buttons.append({"label": CONVENTION_LABEL[conv], "method": "update",
                        "args": [{"visible": vis}, {"xaxis.title.text": f"parameters N, {CONVENTION_LABEL[conv]}",
                                                    "title.text": titles[conv]}]})
    first = next(iter(groups))
    fig.update_xaxes(type="log", title_text=f"parameters N, {CONVENTION_LABEL[first]}")
    fig.update_yaxes(title_text=f"final {loss_col.replace('_', ' ')} (nats/token)")
    menus = [{"type": "buttons", "direction": "right", "x": 1.0, "xanchor": "right", "y": 1.13, "buttons": buttons}] if len(buttons) > 1 else []
    return styled(fig, titles[first], updatemenus=menus, height=470)


def _published(c_grid: np.ndarray) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(label, convention, N*, D*) of each published law drawn beside the fit."""
    out = []
    for name, label in PUBLISHED:
        try:
            law = get_law(name)
            allocs = [law.optimal_allocation(float(c)) for c in c_grid]
        except Exception:  # a law without an allocation is simply not drawn
            continue
        conv = getattr(law, "param_convention", "total")
        out.append((label, conv, np.array([a.params for a in allocs]), np.array([a.tokens for a in allocs])))
    return out


def frontier_data(study: Study, conv: str) -> dict[str, Any] | None:
    """IsoFLOP minima, fitted power law, bootstrap band and target for one quantity, cached.

    ``conv`` is a parameter convention (N*) or ``"tokens"`` (D*: the parabola in ln D, which does
    not depend on how parameters are counted). C is the sweep's budget label for every run."""
    key = ("frontier", conv)
    if key not in study.cache:
        study.cache[key] = _frontier_data(study, conv)
    return study.cache[key]


def _c_grid(study: Study) -> tuple[np.ndarray, float]:
    budgets = [float(b) for b in study.done["budget"].dropna().unique()] if "budget" in study.done else []
    if not budgets:
        return np.array([]), float("nan")
    target = study.target_flops() or max(budgets) * 10
    return np.geomspace(min(budgets) / 1.5, max(max(budgets), target) * 1.5, 60), target


def _frontier_fit(study: Study, conv: str) -> Any:
    """The fit whose N*(C) (or D*(C)) is drawn against the budget labels: approach 2 (its C is the
    labels'), else approach 3 where its ``C = 6 N D`` counts C as the labels do."""
    budgets = study.budget_flops
    counts = [conv] if conv != "tokens" else list(CONVENTIONS)
    for approach in ("2", "3"):
        for count in counts:
            f = study.fit(approach, count)
            if f is not None and (approach == "2" or (f.convention is not None and f.convention.flops == budgets)):
                return f
    return None


def _frontier_data(study: Study, conv: str) -> dict[str, Any] | None:
    done = study.done
    if done.empty or "budget" not in done:
        return None
    vs = [v for v in study.valleys(conv) if v.interior]
    fit = _frontier_fit(study, conv)
    pl = None
    if fit is not None:
        pl = fit.n_opt_coef_at_c() if conv != "tokens" else fit.power_law("d_opt")
    if pl is None:  # no fit to draw: the minima alone are shown in the IsoFLOP section
        return None
    c_grid, target = _c_grid(study)
    y = pl["coef"] * c_grid ** pl["exponent"]
    band = _fit_band(fit, c_grid, "tokens" if conv == "tokens" else "params")
    band_label = None
    if band is not None:
        y, band_label = band.pop("y"), band.pop("label")
    return {"conv": conv, "valleys": vs, "c": c_grid, "y": y, "band": band, "band_label": band_label,
            "law": pl, "source": f"fit/{fit.name}.json", "target": target, "fit": fit}


def _fit_band(fit: Any, c_grid: np.ndarray, key: str) -> dict[str, Any] | None:
    """The fit's own interval of N*(C) or D*(C) (``LawFit.allocation``: bootstrap draws or OLS)."""
    if "form" not in fit.raw or "params" not in fit.raw or fit.convention is None:
        return None
    from scaling.fit import LawFit

    law = LawFit.from_dict(fit.raw)
    rows = [law.allocation(float(c)) for c in c_grid]
    if not all(isinstance(r.get("ci"), dict) and r["ci"].get(key) for r in rows):
        return None
    lo = np.array([r["ci"][key][0] for r in rows], dtype=float)
    hi = np.array([r["ci"][key][1] for r in rows], dtype=float)
    kind = "bootstrap" if law.draws is not None else "OLS"
    return {"y": np.array([r[key] for r in rows], dtype=float), "lo": lo, "hi": hi,
            "label": f"95% {kind} band of fit/{fit.name}.json"}


PALETTE = {"non_embedding": "#1f77b4", "total": "#d62728", "tokens": "#2ca02c"}


def _frontier_traces(fig: go.Figure, fd: dict[str, Any], col: int, lab: str, sym: str) -> None:
    color = PALETTE[fd["conv"]]
    band = fd["band"]
    if band is not None:
        fig.add_trace(go.Scatter(x=np.r_[fd["c"], fd["c"][::-1]], y=np.r_[band["hi"], band["lo"][::-1]], fill="toself",
                                 fillcolor=color, opacity=0.18, line={"width": 0}, hoverinfo="skip",
                                 name=f"{fd['band_label'].split(' (')[0].split(' of ')[0]}, {lab}"), row=1, col=col)
    fig.add_trace(go.Scatter(x=fd["c"], y=fd["y"], mode="lines", line={"color": color, "width": 2},
                             name=f"fit, {lab}: {sym} ∝ C^{fd['law']['exponent']:.3f}",
                             hovertemplate=f"C=%{{x:.3s}}<br>{sym}=%{{y:.3s}}<extra></extra>"), row=1, col=col)
    vs = fd["valleys"]
    if vs:
        cs = np.array([v.budget for v in vs])
        y = np.array([v.n_opt for v in vs])
        se = np.array([v.log_n_se if math.isfinite(v.log_n_se) else 0.0 for v in vs])
        fig.add_trace(go.Scatter(x=cs, y=y, mode="markers", marker={"color": color, "size": 9, "line": {"width": 1, "color": "white"}},
                                 error_y={"type": "data", "symmetric": False, "array": y * (np.exp(se) - 1),
                                          "arrayminus": y * (1 - np.exp(-se))},
                                 name=f"IsoFLOP minima, {lab}", hovertemplate=f"C=%{{x:.3s}}<br>{sym}=%{{y:.3s}}<extra></extra>"),
                      row=1, col=col)


def frontier(study: Study) -> go.Figure | None:
    """N*(C) and D*(C): IsoFLOP minima (±1σ), the fitted power law with a 95% bootstrap band,
    extrapolated to the target budget, beside the published laws."""
    fds = [fd for conv in CONVENTIONS if (fd := frontier_data(study, conv))]
    fdd = frontier_data(study, "tokens")
    if not fds and fdd is None:
        return None
    fig = new_figure(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=["compute-optimal parameters N*(C)", "compute-optimal tokens D*(C)"])
    for fd in fds:
        _frontier_traces(fig, fd, 1, CONVENTION_LABEL[fd["conv"]], "N*")
    if fdd is not None:
        _frontier_traces(fig, fdd, 2, "tokens", "D*")
    c_grid, target = _c_grid(study)
    dash = {"Kaplan 2020": "dash", "Chinchilla 2022": "dot", "Epoch 2024": "dashdot"}
    for label, conv, ns, ds in _published(c_grid):
        for k, ys in ((1, ns), (2, ds)):
            fig.add_trace(go.Scatter(x=c_grid, y=ys, mode="lines", line={"color": "#555", "dash": dash.get(label, "dash"), "width": 1.3},
                                     name=f"{label} ({'non-emb.' if conv == 'non_embedding' else 'total'} N)", legendgroup=label,
                                     showlegend=k == 1, hovertemplate=f"{label}<br>C=%{{x:.3s}}<br>%{{y:.3s}}<extra></extra>"),
                          row=1, col=k)
    for k in (1, 2):
        fig.add_vline(x=target, line={"color": "#999", "dash": "dot", "width": 1}, row=1, col=k)
        fig.add_annotation(x=math.log10(target), y=1.0, xref=f"x{k if k > 1 else ''}", yref="paper",
                           text=f"target {fmt_sci(target)}", showarrow=False, xanchor="right", yanchor="bottom",
                           font={"size": 10})
    fig.update_xaxes(type="log", title_text="IsoFLOP budget C (FLOPs)", exponentformat="power")
    fig.update_yaxes(type="log", title_text="parameters N*", row=1, col=1)
    fig.update_yaxes(type="log", title_text="tokens D*", row=1, col=2)
    return styled(fig, "Compute-optimal frontier, extrapolated to the target budget", height=520,
                   legend={"orientation": "h", "y": -0.22, "font": {"size": 11}})


def parametric(study: Study) -> go.Figure | None:
    """Approach 3 against the data: predicted vs observed loss, and residuals against compute."""
    done = study.done
    loss_col = study.loss_column()
    pairs = [(conv, f) for conv in CONVENTIONS if (f := study.fit("3", conv)) and f.loss_params and N_COLUMN[conv] in done]
    if not pairs or done.empty or "tokens" not in done:
        return None
    fig = new_figure(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=["fitted L(N, D) vs observed", "residual (observed − fitted) vs compute"])
    palette = {"non_embedding": "#1f77b4", "total": "#d62728"}
    lo, hi = float(done[loss_col].min()), float(done[loss_col].max())
    for conv, f in pairs:
        d = done.dropna(subset=[N_COLUMN[conv], "tokens", loss_col])
        pred = f.loss(d[N_COLUMN[conv]].to_numpy(float), d["tokens"].to_numpy(float))
        obs = d[loss_col].to_numpy(float)
        c = 6 * d[N_COLUMN[conv]].to_numpy(float) * d["tokens"].to_numpy(float)
        lo, hi = min(lo, float(np.nanmin(pred))), max(hi, float(np.nanmax(pred)))
        names = [text(n) for n in d["name"].fillna(d["run_id"])] if "name" in d else list(d["run_id"])
        rmse = float(np.sqrt(np.nanmean((obs - pred) ** 2)))
        lab = f"{CONVENTION_LABEL[conv]} (RMSE {rmse:.4f})"
        fig.add_trace(go.Scatter(x=pred, y=obs, mode="markers", name=lab, legendgroup=conv, customdata=names,
                                 marker={"color": palette[conv], "size": 7, "opacity": 0.8},
                                 hovertemplate="%{customdata}<br>fitted=%{x:.4f}<br>observed=%{y:.4f}<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=c, y=obs - pred, mode="markers", legendgroup=conv, showlegend=False, customdata=names,
                                 marker={"color": palette[conv], "size": 7, "opacity": 0.8},
                                 hovertemplate="%{customdata}<br>C=%{x:.3s}<br>residual=%{y:.4f}<extra></extra>"), row=1, col=2)
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"color": "#888", "dash": "dash", "width": 1},
                             name="observed = fitted", hoverinfo="skip"), row=1, col=1)
    fig.add_hline(y=0, line={"color": "#888", "dash": "dash", "width": 1}, row=1, col=2)
    fig.update_xaxes(title_text=f"fitted {LOSS_AXIS}", row=1, col=1)
    fig.update_yaxes(title_text=f"observed {LOSS_AXIS}", row=1, col=1)
    fig.update_xaxes(type="log", title_text="compute C = 6ND (FLOPs, N as fitted)", exponentformat="power", row=1, col=2)
    fig.update_yaxes(title_text="residual (nats/token)", row=1, col=2)
    return styled(fig, "Parametric fit L(N, D) = E + A/N^α + B/D^β against the runs",
                   legend={"orientation": "h", "y": -0.2})


def backtest(study: Study) -> go.Figure | None:
    """Predicted vs achieved lowest loss at the held-out largest budget, beside the naive baselines."""
    bt = study.backtest
    if not isinstance(bt, dict) or bt.get("achieved_loss") is None or bt.get("predicted_loss") is None:
        return None
    ach = float(bt["achieved_loss"])
    rows = [("law fitted without this budget", float(bt["predicted_loss"]))]
    for k, lab in (("previous_budget", "previous budget's best loss"), ("power_law_on_minima", "power law through the minima")):
        v = (bt.get("baselines") or {}).get(k)
        v = v.get("predicted_loss", v.get("loss")) if isinstance(v, dict) else v
        if isinstance(v, (int, float)) and math.isfinite(v):
            rows.append((lab, float(v)))
    errs = [100 * (p - ach) / ach for _, p in rows]
    fig = new_figure(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.16,
                        subplot_titles=["lowest loss at the held-out budget", "N* at the held-out budget"])
    fig.add_trace(go.Scatter(y=[r[0] for r in rows], x=[r[1] for r in rows], mode="markers+text", name="prediction",
                             marker={"color": ["#1f77b4"] + ["#999"] * (len(rows) - 1), "size": 14, "symbol": "diamond"},
                             text=[f"{p:.4f} ({e:+.2f}%)" for (_, p), e in zip(rows, errs, strict=True)],
                             textposition="top center", cliponaxis=False,
                             hovertemplate="%{y}: %{x:.4f}<extra></extra>"), row=1, col=1)
    fig.add_vline(x=ach, line={"color": "black", "width": 2}, row=1, col=1)
    fig.add_annotation(x=ach, y=0.0, xref="x", yref="paper", yanchor="bottom", xanchor="left", xshift=4,
                       showarrow=False, text=f"achieved {ach:.4f}", font={"size": 11}, bgcolor="white")
    vals = [ach, *(p for _, p in rows)]
    pad = 0.25 * (max(vals) - min(vals)) + 1e-3
    fig.update_xaxes(range=[min(vals) - pad, max(vals) + pad], title_text=LOSS_AXIS, row=1, col=1)
    fig.update_yaxes(range=[-0.6, len(rows) - 0.3], row=1, col=1)
    npred, nobs = bt.get("n_opt_predicted"), bt.get("n_opt_observed")
    if isinstance(npred, (int, float)) and isinstance(nobs, (int, float)):
        by = (f"predicted ({bt['n_opt_form']}, N {bt.get('n_opt_param_convention') or ''})" if bt.get("n_opt_form")
              else "predicted")
        fig.add_trace(go.Bar(x=[by, "observed"], y=[npred, nobs], marker={"color": ["#1f77b4", "#444"]},
                             text=[fmt_sci(npred), fmt_sci(nobs)], textposition="auto", showlegend=False,
                             hovertemplate="%{x}: N*=%{y:.3s}<extra></extra>"), row=1, col=2)
        fig.update_yaxes(title_text="parameters N*", row=1, col=2)
    budget = bt.get("budget") or bt.get("flops")
    title = "Backtest" + (f" at C = {fmt_sci(float(budget))} FLOPs" if isinstance(budget, (int, float)) else "")
    return styled(fig, title + ": predictions (◆) against the achieved loss (black line)", showlegend=False, height=380,
                   margin={"l": 230, "r": 20, "t": 60, "b": 60})


def all_figures(study: Study) -> dict[str, go.Figure]:
    """Every figure whose data exists, keyed by section id, in page order."""
    from scaling.report.align_curves import alignment

    makers = {
        "curves": training_curves, "isoflop": isoflop, "frontier": frontier, "parametric": parametric,
        "backtest": backtest, "alignment": alignment,
    }
    return {k: f for k, m in makers.items() if (f := m(study)) is not None}
