"""Pure curation figures: score histograms with the cut, and selector comparisons over seed draws.

The histogram is binned with numpy once per group and drawn as stacked bars, so moving the cut
changes one layout shape and never re-bins: that is what keeps the ThresholdTuner under 100 ms.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

CUT_COLOUR = "crimson"


def binned_scores(scores: np.ndarray, groups: Sequence[str] | None, bins: int = 60) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(bin edges, {group: counts}); one group 'pool' when there are no labels."""
    scores = np.asarray(scores, dtype=np.float64)
    low, high = float(scores.min()), float(scores.max())
    edges = np.linspace(low, high if high > low else low + 1e-6, bins + 1)
    if groups is None:
        return edges, {"pool": np.histogram(scores, edges)[0]}
    groups = np.asarray(groups)
    return edges, {str(g): np.histogram(scores[groups == g], edges)[0] for g in sorted(set(groups.tolist()))}


def score_histogram(scores: np.ndarray, groups: Sequence[str] | None = None, threshold: float | None = None,
                    title: str = "Pool scores", bins: int = 60) -> go.Figure:
    """Stacked histogram of pool scores, coloured by true group when labels exist, with the cut as a line."""
    edges, counts = binned_scores(scores, groups, bins)
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    fig = go.Figure()
    for name, c in counts.items():
        fig.add_bar(x=centres, y=c, width=width, name=name)
    fig.update_layout(barmode="stack", title=title, xaxis_title="score", yaxis_title="documents", bargap=0,
                      height=320, margin=dict(t=40, b=40, l=50, r=10), legend_title_text="true label")
    set_cut(fig, threshold if threshold is not None else float(edges[0]))
    return fig


def set_cut(fig: go.Figure, threshold: float) -> None:
    """Draw (or move) the vertical cut line: one shape, updated in place."""
    line = dict(type="line", xref="x", yref="paper", x0=threshold, x1=threshold, y0=0, y1=1,
                line=dict(color=CUT_COLOUR, width=2, dash="dash"), name="cut")
    if fig.layout.shapes:
        fig.layout.shapes[0].update(x0=threshold, x1=threshold)
    else:
        fig.add_shape(**line)


def selector_comparison(summary: pd.DataFrame, metric: str = "precision", title: str | None = None) -> go.Figure:
    """Grouped bars of a metric's mean over seed draws per target and selector, with the std as error bars."""
    fig = px.bar(summary, x="target", y=f"{metric}_mean", error_y=f"{metric}_std", color="selector", barmode="group",
                 title=title or f"{metric} per target: mean over seed draws (error bar: std)")
    fig.update_layout(yaxis=dict(title=metric, range=[0, 1.05]), xaxis_title="target", legend_title_text="selector")
    return fig
