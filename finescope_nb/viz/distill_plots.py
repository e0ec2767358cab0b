"""Figures for the recovery stage: live recovery curves, the filter's keep rate. Pure except `RecoveryCurves`,
a FigureWidget that training appends to while it runs."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

COLORS = {"self_distill": "#2da44e", "plain": "#4c72b0", "random": "#dd8452", "none": "#9aa5b1"}


class RecoveryCurves:
    """Held-out domain loss of each arm against steps, drawn as training logs it.

    `callback(arm)` gives the function to hand to `finetune(callback=...)`: every record with a
    validation loss appends one point to that arm's trace, in place (no re-render).
    """

    def __init__(self, domain: str, unpruned_loss: float | None = None, pruned_loss: float | None = None, steps: int | None = None):
        self.figure = go.FigureWidget()
        self.figure.update_layout(title=f"Recovery on {domain}: validation loss while fine-tuning (lower is better)",
                                  xaxis_title="step", yaxis_title="validation loss (nats/token)", height=400)
        for level, name, dash in ((unpruned_loss, "unpruned", "dash"), (pruned_loss, "pruned, no recovery", "dot")):
            if level is not None:
                self.figure.add_hline(y=level, line_dash=dash, line_color="#57606a", annotation_text=name,
                                      annotation_position="top right")
        if steps:
            self.figure.update_xaxes(range=[0, steps])
        self.figure.add_class("finescope-recovery-curves")

    def trace(self, arm: str):
        for trace in self.figure.data:
            if trace.name == arm:
                return trace
        self.figure.add_scatter(x=[], y=[], mode="lines+markers", name=arm, line=dict(color=COLORS.get(arm)))
        return self.figure.data[-1]

    def add(self, arm: str, record: dict) -> None:
        if record.get("val_loss") is None:
            return
        trace = self.trace(arm)
        with self.figure.batch_update():
            trace.x = tuple(trace.x) + (record["step"],)
            trace.y = tuple(trace.y) + (record["val_loss"],)

    def callback(self, arm: str):
        return lambda record: self.add(arm, record)


def keep_rate_plot(curve: pd.DataFrame, threshold: float, domain: str) -> go.Figure:
    """Share of the teacher's responses kept as the agreement threshold rises, the chosen threshold marked."""
    fig = go.Figure(go.Scatter(x=curve["threshold"], y=curve["keep_rate"], mode="lines+markers", name="keep rate"))
    fig.add_vline(x=threshold, line_dash="dash", line_color="#cf222e", annotation_text=f"threshold {threshold}")
    fig.update_layout(title=f"Self-distillation filter on {domain}: share of teacher responses kept",
                      xaxis_title="agreement threshold", yaxis=dict(title="keep rate", range=[0, 1.02]), height=340)
    return fig


def retained_bars(table: pd.DataFrame) -> go.Figure:
    """Retained score per arm and domain (mean, with std whiskers over seeds); 1.0 is the unpruned model."""
    fig = go.Figure()
    for arm, part in table.groupby("arm", sort=False):
        fig.add_bar(x=part["domain"], y=part["mean"], error_y=dict(type="data", array=part["std"].fillna(0)), name=arm,
                    marker_color=COLORS.get(arm))
    fig.add_hline(y=1.0, line_dash="dash", line_color="#57606a", annotation_text="unpruned")
    fig.update_layout(barmode="group", title="Retained: exp(-loss) / exp(-unpruned loss) on the test split (higher is better)",
                      yaxis_title="retained", height=380)
    return fig
