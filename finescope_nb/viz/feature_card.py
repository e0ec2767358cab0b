"""A feature card: the Neuronpedia / SAEDashboard panels for one SAE feature, plus its domain split.

Header (density, mean and max activation, enrichment), top-activating contexts with per-token
shading, activation histogram, logit table (promoted / suppressed tokens) and the share of the
feature's activation mass per domain. Pure: it reads a `FeatureStats` and returns HTML and plotly
figures; `widgets.FeatureCard` shows the same panels and updates them in place.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from finescope_nb.tokens import FRAGMENT_MARK
from finescope_nb.viz.html import examples_html, logit_table_html


def header_html(stats, feature: int, enrichment: np.ndarray | None = None) -> str:
    parts = [f"<b>Feature #{feature}</b>",
             f"density {100 * stats.density[feature]:.3g}% of tokens ({100 * stats.doc_density[feature]:.3g}% of documents)",
             f"mean {stats.mean_activation[feature]:.3g} · max {stats.max_activation[feature]:.3g}"]
    if enrichment is not None:
        parts.append(f"seed enrichment {enrichment[feature]:+.2f} (log2)")
    return '<div class="finescope-card-header">' + " · ".join(parts) + "</div>"


def histogram_figure(stats, feature: int) -> go.Figure:
    """Counts of the feature's non-zero activations on log-spaced bins."""
    fig = go.Figure()
    fig.add_bar(x=[], y=[], marker_color="darkorange")
    update_histogram(fig, stats, feature)
    return fig


def update_histogram(fig, stats, feature: int) -> None:
    hist = stats.histogram(feature)
    centres = np.sqrt(hist["low"] * hist["high"])
    fig.data[0].x, fig.data[0].y = centres.tolist(), hist["count"].tolist()
    fig.data[0].width = (hist["high"] - hist["low"]).tolist()
    fig.update_layout(title=f"Feature #{feature}: non-zero activations ({int(hist['count'].sum()):,} tokens)",
                      xaxis=dict(type="log", title="activation (log scale)"), yaxis_title="tokens",
                      height=260, margin=dict(t=40, b=40, l=50, r=10), bargap=0.05)


def domain_figure(stats, feature: int) -> go.Figure:
    """Share of the feature's activation mass per domain, against the corpus's token share per domain."""
    fig = go.Figure()
    fig.add_bar(x=[], y=[], name="this feature", marker_color="darkorange")
    update_domains(fig, stats, feature)
    return fig


def update_domains(fig, stats, feature: int) -> None:
    if stats.domain_mass is None:
        fig.data[0].x, fig.data[0].y = [], []
        fig.update_layout(title="No domain labels were given", height=260)
        return
    fig.data[0].x, fig.data[0].y = list(stats.domains), stats.domain_mass[feature].tolist()
    fig.update_layout(title=f"Feature #{feature}: where its activation mass comes from", yaxis=dict(title="share", range=[0, 1]),
                      height=260, margin=dict(t=40, b=40, l=50, r=10))


TOKEN_LEGEND = ('<div class="finescope-token-legend" style="color: grey; font-size: small">'
                f"{FRAGMENT_MARK}ing: a token that continues a word (no space before it); &lt;0xE2&gt;: one byte of a "
                "character split over several tokens (docs/GLOSSARY.md)</div>")


def feature_card_html(stats, feature: int, enrichment: np.ndarray | None = None) -> str:
    """Header, top examples and logit table as one HTML block (the figures come separately)."""
    return (f'<div class="finescope-feature-card">{header_html(stats, feature, enrichment)}'
            f"<h4>Top activations</h4>{examples_html(stats.examples(feature))}"
            f"<h4>Logit effects</h4>{logit_table_html(stats.logits(feature))}{TOKEN_LEGEND}</div>")


def feature_card(stats, feature: int, enrichment: np.ndarray | None = None) -> dict:
    """All panels of one feature: {"html", "histogram", "domains"}."""
    return {"html": feature_card_html(stats, feature, enrichment), "histogram": histogram_figure(stats, feature),
            "domains": domain_figure(stats, feature)}


def show_feature_card(stats, feature: int, enrichment: np.ndarray | None = None) -> None:
    """Display a card in a notebook (static: HTML and two figures)."""
    from IPython.display import HTML, display

    card = feature_card(stats, feature, enrichment)
    display(HTML(card["html"]))
    display(card["histogram"])
    display(card["domains"])

