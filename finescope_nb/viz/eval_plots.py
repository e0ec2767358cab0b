"""Figures for evaluation and the ablation table: scores against chance, rows against the unpruned model."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

MODEL_COLORS = {"base": "#9aa5b1", "pruned": "#cf222e", "recovered": "#2da44e"}


def metric_bars(metrics: pd.DataFrame) -> go.Figure:
    """Score per metric group for each model, with each group's chance level as a dashed tick.

    A bar at its tick means the model is guessing there: those metrics show the code path works,
    not what pruning costs."""
    df = metrics[metrics["chance"].notna()].copy()
    df["label"] = df["metric"] + " · " + df["group"].astype(str)
    fig = go.Figure()
    for model, part in df.groupby("model", sort=False):
        fig.add_bar(x=part["label"], y=part["score"], name=model, marker_color=MODEL_COLORS.get(model))
    chance = df.drop_duplicates("label")
    fig.add_scatter(x=chance["label"], y=chance["chance"], mode="markers", name="chance",
                    marker=dict(symbol="line-ew", size=28, line=dict(width=2, color="#57606a")))
    fig.update_layout(barmode="group", title="Task metrics per group: accuracy or pass rate, chance marked (higher is better)",
                      yaxis=dict(title="score", range=[0, 1]), xaxis_title="metric · group", height=420)
    return fig


def ablation_frame(result: dict, key: str = "retained") -> pd.DataFrame:
    """The ablation results as a long table: row, domain, mean, std (of `key`: "retained", "rows" or "cloze")."""
    table = result["cloze"]["rows"] if key == "cloze" else result[key]
    order = [r for r in result.get("row_order", []) if r in table] + [r for r in table if r not in result.get("row_order", [])]
    return pd.DataFrame([{"row": row, "domain": d, "mean": v["mean"], "std": v["std"]}
                         for row in order for d, v in table[row].items()])


def ablation_bars(result: dict, key: str = "retained") -> go.Figure:
    """Mean over seeds with std whiskers per ablation row and domain; the unpruned level is 1.0 for "retained"."""
    df = ablation_frame(result, key)
    fig = go.Figure()
    for domain, part in df.groupby("domain", sort=False):
        fig.add_bar(x=part["row"], y=part["mean"], error_y=dict(type="data", array=part["std"]), name=domain)
    if key == "retained":
        fig.add_hline(y=1.0, line_dash="dash", line_color="#57606a", annotation_text="unpruned")
        low = min(df["mean"] - df["std"])
        fig.update_yaxes(range=[math.floor(low * 100) / 100 - 0.01, 1.01])
    elif key == "cloze":
        fig.add_hline(y=result["cloze"]["chance"], line_dash="dot", line_color="#57606a", annotation_text="chance")
    title = {"retained": "Ablation: retained score, exp(-loss) / unpruned exp(-loss) on test documents",
             "rows": "Ablation: exp(-test loss) per row", "cloze": "Ablation: cloze accuracy per row"}[key]
    fig.update_layout(barmode="group", title=f"{title} (mean ± std over {len(result['seeds'])} seeds)", height=420,
                      yaxis_title=key, xaxis_title="")
    return fig
