"""Pure plotting: data in, plotly Figure out. Each figure titles itself and labels its axes."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go


def corpus_composition(stats: pd.DataFrame, value: str = "characters") -> go.Figure:
    """Stacked bars: how much of each domain comes from each source."""
    fig = px.bar(stats, x="domain", y=value, color="source", text_auto=".2s",
                 title=f"Pool composition: {value} per domain, by source")
    fig.update_layout(legend_title_text="source", yaxis_title=value, xaxis_title="domain")
    return fig


def length_distribution(lengths: pd.DataFrame) -> go.Figure:
    """Box plots of chunk length per domain (characters): how uniform the chunking is."""
    fig = px.box(lengths, x="domain", y="characters", color="domain", points=False,
                 title="Chunk length per domain (characters)")
    fig.update_layout(showlegend=False)
    return fig


def perplexity_vs_unigram(table: pd.DataFrame) -> go.Figure:
    """Grouped bars of held-out perplexity, model vs unigram, on a log axis (lower is better)."""
    long = table.melt(id_vars="domain", value_vars=["model", "unigram"], var_name="scorer", value_name="ppl")
    fig = px.bar(long, x="domain", y="ppl", color="scorer", barmode="group", log_y=True, text_auto=".0f",
                 title="Held-out perplexity per domain: base model vs unigram baseline (lower is better)")
    fig.update_layout(yaxis_title="perplexity (log scale)")
    return fig


def training_curve(history: list[list[float]]) -> go.Figure:
    """Training loss against tokens seen, raw and smoothed."""
    df = pd.DataFrame(history, columns=["step", "loss", "seconds"])
    df["smoothed"] = df["loss"].rolling(20, min_periods=1).mean()
    fig = go.Figure()
    fig.add_scatter(x=df["step"], y=df["loss"], mode="lines", name="loss", opacity=0.35)
    fig.add_scatter(x=df["step"], y=df["smoothed"], mode="lines", name="smoothed (20 steps)")
    fig.update_layout(title="Base model training loss", xaxis_title="step", yaxis_title="loss (nats/token)")
    return fig


def pipeline_summary(table: pd.DataFrame, domain: str) -> go.Figure:
    """Per-domain perplexity of the base, pruned and recovered models (log scale), the target domain marked."""
    long = table.melt(id_vars="domain", value_vars=["base_ppl", "pruned_ppl", "recovered_ppl"], var_name="model", value_name="ppl")
    long["model"] = long["model"].str.removesuffix("_ppl")
    fig = px.bar(long, x="domain", y="ppl", color="model", barmode="group", log_y=True, text_auto=".1f",
                 color_discrete_map={"base": "#9aa5b1", "pruned": "#cf222e", "recovered": "#2da44e"},
                 title=f"FineScope for {domain}: perplexity per domain (log scale, lower is better)")
    fig.update_layout(yaxis_title="test perplexity")
    fig.add_annotation(x=domain, y=1, yref="paper", text="target", showarrow=False, font=dict(color="#2da44e"))
    return fig
