"""Figures for the pruning stage: where the importance is, what the cut keeps, what it costs. Pure: data in, figures out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from finescope_nb.prune import ImportanceScores, PrunePlan


def head_heatmap(scores: ImportanceScores, plan: PrunePlan | None = None) -> go.Figure:
    """Layer x head-unit importance (log scale, normalised per layer), pruned units crossed out."""
    layers = sorted(scores.heads)
    width = max(len(scores.heads[i]) for i in layers)
    grid = np.full((len(layers), width), np.nan)
    for r, i in enumerate(layers):
        values = scores.heads[i].numpy()
        grid[r, : len(values)] = np.log10(np.maximum(values / max(values.mean(), 1e-30), 1e-6))
    unit = "KV group" if scores.head_unit == "group" else "query head"
    fig = go.Figure(go.Heatmap(z=grid, x=list(range(width)), y=[f"layer {i}" for i in layers], colorscale="Viridis",
                               colorbar=dict(title="log10 score /<br>layer mean"),
                               hovertemplate=f"%{{y}}, {unit} %{{x}}<br>log10 relative score %{{z:.2f}}<extra></extra>"))
    if plan is not None:
        xs, ys = [], []
        for i in layers:
            xs += [u for u in range(len(scores.heads[i])) if u not in plan.keep_heads[i]]
            ys += [f"layer {i}"] * (len(scores.heads[i]) - len(plan.keep_heads[i]))
        fig.add_scatter(x=xs, y=ys, mode="markers", marker=dict(symbol="x", size=14, color="#cf222e", line=dict(width=2)),
                        name="pruned", hoverinfo="skip")
    fig.update_layout(title=f"{scores.criterion} importance of each {unit} (x = pruned)", xaxis_title=unit,
                      yaxis=dict(autorange="reversed"), height=120 + 40 * len(layers), legend=dict(orientation="h", y=-0.2))
    return fig


def channel_distributions(scores: ImportanceScores, plan: PrunePlan | None = None) -> go.Figure:
    """Per layer, the distribution of MLP channel importance (log scale) with the cut drawn where pruning stops."""
    fig = go.Figure()
    for i in sorted(scores.channels):
        values = scores.channels[i].numpy()
        fig.add_violin(y=np.log10(np.maximum(values, 1e-30)), name=f"layer {i}", box_visible=True, points=False,
                       showlegend=False, line_color="#4c72b0")
        if plan is not None and len(plan.keep_channels[i]) < len(values):
            kept = values[plan.keep_channels[i]]
            cut = np.log10(max(float(kept.min()), 1e-30))
            fig.add_scatter(x=[f"layer {i}"], y=[cut], mode="markers", marker=dict(symbol="line-ew-open", size=40, color="#cf222e",
                                                                                 line=dict(width=3)),
                            name="cut (weakest kept)", showlegend=i == min(scores.channels), hoverinfo="y")
    fig.update_layout(title=f"{scores.criterion} importance of MLP channels per layer; below the red line is pruned",
                      yaxis_title="log10 score", height=380)
    return fig


def params_per_layer(plan: PrunePlan) -> go.Figure:
    """Parameters of each block before and after pruning."""
    table = plan.table()
    fig = go.Figure()
    fig.add_bar(x=table["layer"], y=table["params"], name="before", marker_color="#9aa5b1")
    fig.add_bar(x=table["layer"], y=table["params_after"], name="after", marker_color="#2da44e")
    fig.update_layout(barmode="group", title=f"Parameters per block: {plan.params_before:,} -> {plan.params_after:,} non-embedding "
                                             f"({plan.removed_fraction:.1%} removed)", xaxis_title="block", yaxis_title="parameters",
                      height=340)
    return fig


def kept_overlap(plans: dict[str, PrunePlan]) -> go.Figure:
    """Per block, the Jaccard overlap of what two domains' plans keep (1: the same units survive)."""
    (name_a, a), (name_b, b) = list(plans.items())[:2]
    rows = []
    for i in sorted(a.keep_heads):
        for kind, ka, kb in (("heads", a.keep_heads[i], b.keep_heads[i]), ("channels", a.keep_channels[i], b.keep_channels[i])):
            union = set(ka) | set(kb)
            rows.append({"layer": i, "kind": kind, "jaccard": len(set(ka) & set(kb)) / len(union) if union else 1.0})
    df = pd.DataFrame(rows)
    fig = go.Figure()
    for kind, color in (("heads", "#8172b2"), ("channels", "#dd8452")):
        part = df[df["kind"] == kind]
        fig.add_bar(x=part["layer"], y=part["jaccard"], name=kind, marker_color=color)
    fig.update_layout(barmode="group", title=f"What survives in both: kept-unit overlap, {name_a} vs {name_b} calibration",
                      xaxis_title="block", yaxis=dict(title="Jaccard overlap of kept units", range=[0, 1]), height=340)
    return fig


def perplexity_comparison(results: pd.DataFrame, base: dict[str, float] | None = None) -> go.Figure:
    """Mean validation perplexity (with the spread over seeds) per pruning arm and domain; dashed: unpruned."""
    summary = results.groupby(["arm", "domain"], sort=False)["ppl"].agg(["mean", "std"]).reset_index()
    domains = list(dict.fromkeys(summary["domain"]))
    fig = make_subplots(rows=1, cols=len(domains), subplot_titles=domains)
    for c, domain in enumerate(domains, start=1):
        part = summary[summary["domain"] == domain]
        fig.add_bar(x=part["arm"], y=part["mean"], error_y=dict(type="data", array=part["std"].fillna(0)), showlegend=False,
                    marker_color="#4c72b0", row=1, col=c)
        if base and domain in base:
            fig.add_hline(y=base[domain], line_dash="dash", line_color="#2da44e", row=1, col=c,
                          annotation_text="unpruned", annotation_position="top left")
        fig.update_yaxes(title_text="validation perplexity" if c == 1 else None, row=1, col=c)
    fig.update_layout(title="After pruning, before recovery: lower is better (bars: mean over calibration seeds, whiskers: std)",
                      height=400)
    return fig
