"""Figures for the SAE stage: training curves, quality against sparsity, feature density. Pure: data in, figures out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def training_curves(history: list[dict]) -> go.Figure:
    """Loss, explained variance (per training batch), L0 and dead features against tokens seen."""
    df = pd.DataFrame(history)
    panels = [("loss", "loss"), ("explained_variance", "explained variance"), ("l0", "L0 (active features / token)"),
              ("dead_features", "dead features (silent for the window)")]
    fig = make_subplots(rows=1, cols=4, subplot_titles=[title for _, title in panels])
    for i, (column, _) in enumerate(panels, start=1):
        fig.add_scatter(x=df["tokens"], y=df[column], mode="lines", showlegend=False, row=1, col=i)
        fig.update_xaxes(title_text="training tokens", row=1, col=i)
    fig.update_layout(title="SAE training, on the training batches", height=300, margin=dict(t=70, b=40))
    return fig


def loss_bars(metrics: dict) -> go.Figure:
    """Clean, SAE-spliced and zero-ablated LM loss: how much of the layer the SAE preserves."""
    names = ["clean", "SAE spliced in", "layer zeroed"]
    values = [metrics["clean_loss"], metrics["spliced_loss"], metrics["zero_ablation_loss"]]
    fig = go.Figure(go.Bar(x=names, y=values, text=[f"{v:.3f}" for v in values], marker_color=["#2da44e", "darkorange", "#cf222e"]))
    fig.update_layout(title=f"Next-token loss on held-out text: the SAE recovers {100 * metrics['loss_recovered']:.1f}% of the gap",
                      yaxis_title="nats / token", height=320)
    return fig


def variants_scatter(table: pd.DataFrame, label: str) -> go.Figure:
    """Explained variance against L0, one point per variant: the sparsity / fidelity trade-off."""
    fig = go.Figure(go.Scatter(x=table["l0"], y=table["explained_variance"], mode="markers+text", text=table[label],
                               textposition="top center", marker=dict(size=11)))
    fig.update_layout(title="Held-out explained variance against sparsity (up and left is better)",
                      xaxis_title="L0: active features per token", yaxis_title="explained variance", height=340)
    return fig


def density_histogram(density: np.ndarray) -> go.Figure:
    """How often features fire (log10 of the fraction of tokens); dead features counted apart."""
    live = density[density > 0]
    fig = go.Figure(go.Histogram(x=np.log10(live), nbinsx=40, marker_color="steelblue"))
    fig.update_layout(title=f"Feature density: {len(live):,} live features, {int((density == 0).sum()):,} never fired",
                      xaxis_title="log10(fraction of tokens where the feature fires)", yaxis_title="features", height=320)
    return fig
