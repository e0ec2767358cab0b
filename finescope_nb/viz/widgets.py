"""Interactive apps (ipywidgets): the feature card and the feature explorer with its prompt box.

The widgets only display: statistics come in as a `FeatureStats`, and the prompt box calls an
`encode` function handed to it (e.g. `functools.partial(features.encode_text, sae, model, tokenizer)`).
Every part carries a stable CSS class (finescope-feature-explorer, finescope-feature-card,
finescope-feature-list, finescope-prompt-box, finescope-token, ...) so a browser test can find it,
and every callback is a plain method (`select_feature`, `show_prompt`, `refresh`) that Python
tests can call. Figures are FigureWidgets updated in place, never re-created.
"""

from __future__ import annotations

import html
from typing import Callable

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from finescope_nb.errors import FinescopeError
from finescope_nb.tokens import plain
from finescope_nb.viz.feature_card import domain_figure, header_html, histogram_figure, update_domains, update_histogram
from finescope_nb.viz.html import examples_html, logit_table_html, prompt_html

SORT_KEYS = {"max activation": "max_activation", "density": "density", "enrichment": "enrichment"}


class FeatureCard(widgets.VBox):
    """One feature's panels; `show(feature)` swaps their contents in place."""

    def __init__(self, stats, enrichment: np.ndarray | None = None):
        self.stats, self.enrichment = stats, enrichment
        self.header = widgets.HTML().add_class("finescope-card-header")
        self.examples = widgets.HTML().add_class("finescope-card-examples")
        self.logits = widgets.HTML().add_class("finescope-card-logits")
        self.histogram = go.FigureWidget(histogram_figure(stats, 0))
        self.domains = go.FigureWidget(domain_figure(stats, 0))
        self.feature: int | None = None
        # stacked, not side by side: in a row each figure keeps plotly's default 700 px and the pair overflows the
        # explorer's card column; in a column each is as wide as the card
        figures = widgets.VBox([self.histogram, self.domains]).add_class("finescope-card-figures")
        super().__init__([self.header, self.examples, figures, self.logits])
        self.add_class("finescope-feature-card")

    def show(self, feature: int) -> None:
        self.stats._check(feature)
        self.feature = int(feature)
        self.header.value = header_html(self.stats, feature, self.enrichment)
        self.examples.value = "<h4>Top activations</h4>" + examples_html(self.stats.examples(feature))
        self.logits.value = "<h4>Logit effects</h4>" + logit_table_html(self.stats.logits(feature))
        with self.histogram.batch_update():
            update_histogram(self.histogram, self.stats, feature)
        with self.domains.batch_update():
            update_domains(self.domains, self.stats, feature)


class FeatureExplorer(widgets.VBox):
    """Search features by token or domain, sort them, click one for its card, and type a prompt to see
    which features fire on each of its tokens."""

    def __init__(self, stats, enrichment: np.ndarray | None = None, encode: Callable | None = None, rows: int = 14):
        self.stats, self.enrichment, self.encode = stats, enrichment, encode
        self.table = stats.table(enrichment)
        sorts = [k for k, col in SORT_KEYS.items() if col in self.table.columns]
        self.search = widgets.Text(placeholder="token, e.g. ' the' or 'def'", description="token").add_class("finescope-search")
        self.domain = widgets.Dropdown(options=["any", *stats.domains], description="domain").add_class("finescope-domain-filter")
        self.sort = widgets.Dropdown(options=sorts, value="enrichment" if "enrichment" in sorts else sorts[0],
                                     description="sort by").add_class("finescope-sort")
        self.listing = widgets.Select(options=[], rows=rows, layout=widgets.Layout(width="100%")).add_class("finescope-feature-list")
        self.count = widgets.HTML().add_class("finescope-feature-count")
        self.card = FeatureCard(stats, enrichment)
        self.prompt = widgets.Textarea(placeholder="Type a text and press 'Show features'",
                                       layout=widgets.Layout(width="100%")).add_class("finescope-prompt-input")
        self.prompt_button = widgets.Button(description="Show features", button_style="primary").add_class("finescope-prompt-button")
        self.prompt_output = widgets.HTML().add_class("finescope-prompt-output")
        self.prompt_box = widgets.VBox([widgets.HTML("<b>Prompt box</b>: which features fire on your text, token by token"),
                                        self.prompt, self.prompt_button, self.prompt_output]).add_class("finescope-prompt-box")
        self.prompt_box.layout.display = None if encode is not None else "none"
        self._last_prompt = None
        controls = widgets.HBox([self.search, self.domain, self.sort]).add_class("finescope-controls")
        left = widgets.VBox([self.count, self.listing], layout=widgets.Layout(width="34%"))
        body = widgets.HBox([left, widgets.Box([self.card], layout=widgets.Layout(width="66%"))])
        super().__init__([controls, body, self.prompt_box])
        self.add_class("finescope-feature-explorer")
        for control in (self.search, self.domain, self.sort):
            control.observe(lambda change: self.refresh(), names="value")
        self.listing.observe(self._on_pick, names="value")
        self.prompt_button.on_click(lambda button: self.show_prompt(self.prompt.value))
        self.refresh()

    def filtered(self) -> pd.DataFrame:
        """Live features matching the token search and domain filter, in the chosen order."""
        df = self.table[self.table.density > 0]
        query = plain(self.search.value.strip()).strip().lower()  # a label as displayed ('·ing') or as typed
        if query:
            promotes = {f: {plain(self.stats.tokens[i]).strip().lower() for i in self.stats.logit_top_ids[f]} for f in df.feature}
            df = df[[query == plain(row.peak_token).strip().lower() or query in promotes[row.feature] for row in df.itertuples()]]
        if self.domain.value != "any" and "domain" in df.columns:
            df = df[df.domain == self.domain.value]
        return df.sort_values(SORT_KEYS[self.sort.value], ascending=False)

    def refresh(self) -> None:
        df = self.filtered()
        column = SORT_KEYS[self.sort.value]
        options = [(f"#{r.feature}  {r.peak_token.strip()!r:>12}  {column} {getattr(r, column):.3g}", int(r.feature))
                   for r in df.head(300).itertuples()]
        self.listing.options = options
        self.count.value = f"{len(df):,} live features match" + (" (first 300 listed)" if len(df) > 300 else "")
        if options and self.card.feature not in df.feature.values:
            self.select_feature(options[0][1])

    def select_feature(self, feature: int) -> None:
        """Show `feature`'s card (what clicking it in the list does) and re-shade the prompt by it."""
        self.card.show(feature)
        if self.listing.value != feature and feature in [v for _, v in self.listing.options]:
            self.listing.value = feature
        if self._last_prompt is not None:
            self._render_prompt()

    def show_prompt(self, text: str) -> None:
        """Encode `text` and show its tokens shaded by the selected feature, with each token's top features."""
        if self.encode is None:
            raise RuntimeError("This explorer has no encode function; pass encode=... to use the prompt box.")
        self.prompt.value = text
        try:
            self._last_prompt = self.encode(text)
        except FinescopeError as exc:
            self._last_prompt = None
            self.prompt_output.value = f'<span class="finescope-prompt-error">{html.escape(str(exc))}</span>'
            return
        self._render_prompt()

    def _render_prompt(self) -> None:
        codes = self._last_prompt
        feature = self.card.feature
        acts = codes.codes[:, feature] if feature is not None else np.zeros(len(codes.tokens))
        self.prompt_output.value = prompt_html(codes.tokens, acts.tolist(), codes.top_features(3), feature)

    def _on_pick(self, change) -> None:
        if change["new"] is not None and change["new"] != self.card.feature:
            self.select_feature(change["new"])
