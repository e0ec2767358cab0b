"""Interactive curation apps (ipywidgets): pick features, tune the cut, read the curated samples.

They only display and call back: scores, labels and enrichment tables come in computed, and the
export button calls a function handed in. Every part carries a stable CSS class
(finescope-threshold-tuner, finescope-threshold-slider, finescope-threshold-value,
finescope-selected-count, finescope-feature-picker, finescope-sample-preview, ...) for browser
tests, and every callback is a plain method (`set_threshold`, `set_top_m`, `set_state`,
`show_page`, ...) that the widget's own observers call, so Python tests drive the same code.
"""

from __future__ import annotations

import html
from typing import Callable, Sequence

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from finescope_nb.errors import FinescopeError
from finescope_nb.viz.curation_plots import score_histogram, set_cut
from finescope_nb.viz.html import token_spans

STATES = ("include", "neutral", "exclude")


class ThresholdTuner(widgets.VBox):
    """A threshold slider and a top-M box over pool scores, with a live histogram, count and (with labels)
    precision and recall of `target` at the cut. `on_export(threshold)` runs when Export is pressed."""

    def __init__(self, scores, labels: Sequence[str] | None = None, target: str | None = None,
                 on_export: Callable[[float], object] | None = None, m: int = 100, bins: int = 60):
        self.scores = np.asarray(scores, dtype=np.float64)
        if len(self.scores) == 0:
            raise FinescopeError("There are no scores to tune a threshold on; score a non-empty pool first.")
        self.order = np.argsort(-self.scores, kind="stable")
        self.sorted = self.scores[self.order]
        self.relevant = None
        if labels is not None and target is not None:
            self.relevant = np.asarray(labels) == target
            self.hits = np.cumsum(self.relevant[self.order])  # hits among the top i+1
        self.target, self.on_export = target, on_export
        low, high = float(self.sorted[-1]), float(self.sorted[0])
        self.slider = widgets.FloatSlider(min=low, max=high, step=(high - low) / 500 or 1e-6, readout_format=".4f",
                                          description="threshold", continuous_update=True,
                                          layout=widgets.Layout(width="60%")).add_class("finescope-threshold-slider")
        self.top_m = widgets.BoundedIntText(min=1, max=len(self.scores), description="top M",
                                            layout=widgets.Layout(width="200px")).add_class("finescope-top-m")
        self.value_label = widgets.HTML().add_class("finescope-threshold-value")
        self.count = widgets.HTML().add_class("finescope-selected-count")
        self.metrics = widgets.HTML().add_class("finescope-selection-metrics")
        title = f"Pool scores (target: {target})" if target else "Pool scores"
        self.figure = go.FigureWidget(score_histogram(self.scores, labels, None, title, bins)).add_class("finescope-score-histogram")
        self.export_button = widgets.Button(description="Export selection", button_style="success",
                                            disabled=on_export is None).add_class("finescope-export-button")
        self.export_status = widgets.HTML().add_class("finescope-export-status")
        controls = widgets.HBox([self.slider, self.top_m]).add_class("finescope-threshold-controls")
        readout = widgets.HBox([self.value_label, self.count, self.metrics]).add_class("finescope-threshold-readout")
        super().__init__([controls, readout, self.figure, widgets.HBox([self.export_button, self.export_status])])
        self.add_class("finescope-threshold-tuner")
        self.threshold = None
        self._syncing = False
        self.slider.observe(lambda change: self.set_threshold(change["new"]), names="value")
        self.top_m.observe(lambda change: self.set_top_m(change["new"]), names="value")
        self.export_button.on_click(lambda button: self.export())
        self.set_top_m(min(m, len(self.scores)))

    def selected_count(self, threshold: float) -> int:
        """Documents scoring at least `threshold` (binary search in the sorted scores)."""
        return int(np.searchsorted(-self.sorted, -threshold, side="right"))

    def set_threshold(self, threshold: float) -> None:
        """Move the cut: recount, recompute precision / recall, move the line; the slider observer calls this."""
        if self._syncing:
            return
        self.threshold = float(threshold)
        n = self.selected_count(self.threshold)
        self._syncing = True
        try:
            self.slider.value = min(max(self.threshold, self.slider.min), self.slider.max)
            if n >= 1:
                self.top_m.value = n
        finally:
            self._syncing = False
        self.value_label.value = f"cut at <b>{self.threshold:.4f}</b>"
        if n == 0:
            self.count.value = (f"<b>0</b> selected: this threshold selects nothing; scores range from "
                                f"{self.sorted[-1]:.4f} to {self.sorted[0]:.4f}")
        else:
            self.count.value = f"<b>{n:,}</b> of {len(self.scores):,} selected"
        if self.relevant is not None:
            hits = int(self.hits[n - 1]) if n else 0
            precision = hits / n if n else float("nan")
            recall = hits / max(int(self.relevant.sum()), 1)
            self.metrics.value = f"precision <b>{precision:.3f}</b> · recall <b>{recall:.3f}</b> ({self.target})"
        with self.figure.batch_update():
            set_cut(self.figure, self.threshold)

    def set_top_m(self, m: int) -> None:
        """Cut right at the M-th best score (ties at the cut may add a few more)."""
        if self._syncing:
            return
        m = int(min(max(m, 1), len(self.scores)))
        self.set_threshold(float(self.sorted[m - 1]))

    def rows(self) -> np.ndarray:
        """Pool indices at or above the current cut, best first."""
        return self.order[: self.selected_count(self.threshold)]

    def export(self) -> None:
        if self.on_export is None:
            return
        try:
            result = self.on_export(self.threshold)
            self.export_status.value = f"exported {len(self.rows()):,} documents" + (f" to {html.escape(str(result))}" if result else "")
        except FinescopeError as exc:
            self.export_status.value = f'<span class="finescope-export-error">{html.escape(str(exc))}</span>'


class FeaturePicker(widgets.VBox):
    """Features ranked by seed enrichment, each with include / neutral / exclude toggles and a card button.

    `table` comes from `curate.enrichment_table`; `stats` (a FeatureStats) and `card`, a
    `widgets.FeatureCard` from the SAE stage, make each row able to open its feature card.
    `on_change(include, exclude)` runs whenever a toggle moves.
    """

    def __init__(self, table: pd.DataFrame, n: int = 15, stats=None, card=None,
                 on_change: Callable[[list[int], list[int]], None] | None = None):
        self.table = table.head(n).reset_index(drop=True)
        self.stats, self.card, self.on_change = stats, card, on_change
        self.states: dict[int, str] = {}
        self.toggles: dict[int, widgets.ToggleButtons] = {}
        rows = [widgets.HTML("<b>feature · seed enrichment (log2) · active in seeds / pool</b>")]
        peaks = stats.table().peak_token if stats is not None else None
        for r in self.table.itertuples():
            feature = int(r.feature)
            token = f" · peaks on {html.escape(repr(peaks[feature]))}" if peaks is not None and peaks[feature] else ""
            label = widgets.HTML(f"#{feature} · {r.enrichment:+.2f} · {100 * r.seed_rate:.0f}% / {100 * r.pool_rate:.1f}%{token}",
                                 layout=widgets.Layout(width="420px")).add_class("finescope-feature-label")
            toggle = widgets.ToggleButtons(options=list(STATES), value="neutral", style={"button_width": "70px"}).add_class("finescope-feature-toggle")
            toggle.observe(lambda change, f=feature: self.set_state(f, change["new"]), names="value")
            button = widgets.Button(description="card", disabled=card is None,
                                    layout=widgets.Layout(width="60px")).add_class("finescope-card-button")
            button.on_click(lambda b, f=feature: self.show_card(f))
            self.toggles[feature] = toggle
            rows.append(widgets.HBox([label, toggle, button]).add_class("finescope-feature-row"))
        self.summary = widgets.HTML().add_class("finescope-picker-summary")
        children = [widgets.VBox(rows), self.summary] + ([card] if card is not None else [])
        super().__init__(children)
        self.add_class("finescope-feature-picker")
        self._update_summary()

    @property
    def include(self) -> list[int]:
        return sorted(f for f, s in self.states.items() if s == "include")

    @property
    def exclude(self) -> list[int]:
        return sorted(f for f, s in self.states.items() if s == "exclude")

    def set_state(self, feature: int, state: str) -> None:
        """Include, exclude or reset one feature (what its toggle does)."""
        if state not in STATES:
            raise FinescopeError(f"Unknown feature state {state!r}; choose one of {', '.join(STATES)}.")
        if feature not in self.toggles:
            raise FinescopeError(f"Feature {feature} is not listed in this picker; pick one of {sorted(self.toggles)[:10]}.")
        self.states[feature] = state
        if self.toggles[feature].value != state:
            self.toggles[feature].value = state
        self._update_summary()
        if self.on_change is not None:
            self.on_change(self.include, self.exclude)

    def show_card(self, feature: int) -> None:
        if self.card is not None:
            self.card.show(feature)

    def _update_summary(self) -> None:
        inc, exc = self.include, self.exclude
        self.summary.value = (f"include: {', '.join(f'#{f}' for f in inc) or 'all features'} · "
                              f"exclude: {', '.join(f'#{f}' for f in exc) or 'none'}")


class SamplePreview(widgets.VBox):
    """Curated samples page by page: score, id and source, tokens highlighted by the chosen features,
    filterable by a score band. `encode(text)` returns a `features.TokenCodes` (e.g.
    `functools.partial(features.encode_text, sae, model, tokenizer)`); without it text is shown plain."""

    def __init__(self, selection, texts: Sequence[str], sources: Sequence[str] | None = None,
                 encode: Callable | None = None, features: Sequence[int] = (), page_size: int = 5, max_chars: int = 700):
        self.selection, self.texts, self.sources, self.encode = selection, list(texts), sources, encode
        self.features, self.page_size, self.max_chars = list(features), page_size, max_chars
        scores = selection.scores[selection.rows]
        low, high = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
        self.band = widgets.FloatRangeSlider(value=(low, high), min=low, max=high if high > low else low + 1e-6,
                                             step=max((high - low) / 200, 1e-6), description="score band",
                                             readout_format=".3f", layout=widgets.Layout(width="60%")).add_class("finescope-score-band")
        self.prev = widgets.Button(description="◀ previous").add_class("finescope-page-prev")
        self.next = widgets.Button(description="next ▶").add_class("finescope-page-next")
        self.page_label = widgets.HTML().add_class("finescope-page-label")
        self.body = widgets.HTML().add_class("finescope-sample-list")
        super().__init__([widgets.HBox([self.band]), widgets.HBox([self.prev, self.page_label, self.next]), self.body])
        self.add_class("finescope-sample-preview")
        self.page = 0
        self.band.observe(lambda change: self.set_band(*change["new"]), names="value")
        self.prev.on_click(lambda b: self.show_page(self.page - 1))
        self.next.on_click(lambda b: self.show_page(self.page + 1))
        self.set_band(low, high)

    def visible(self) -> np.ndarray:
        """Selected rows whose score lies in the band, best first."""
        scores = self.selection.scores[self.selection.rows]
        low, high = self.band.value
        return np.flatnonzero((scores >= low - 1e-9) & (scores <= high + 1e-9))

    def set_band(self, low: float, high: float) -> None:
        if tuple(self.band.value) != (low, high):
            self.band.value = (low, high)  # its observer calls back here
            return
        self.show_page(0)

    def set_features(self, features: Sequence[int]) -> None:
        """Highlight tokens by these features' summed activation."""
        self.features = list(features)
        self.show_page(self.page)

    def pages(self) -> int:
        return max(1, -(-len(self.visible()) // self.page_size))

    def show_page(self, page: int) -> None:
        self.page = int(min(max(page, 0), self.pages() - 1))
        shown = self.visible()[self.page * self.page_size:(self.page + 1) * self.page_size]
        self.page_label.value = f"page {self.page + 1} of {self.pages()} · {len(self.visible()):,} samples in the band"
        self.body.value = "".join(self._sample_html(i) for i in shown) or "<i>No sample scores inside this band.</i>"

    def _sample_html(self, position: int) -> str:
        row = int(self.selection.rows[position])
        text = self.texts[row][: self.max_chars]
        source = f" · {html.escape(str(self.sources[row]))}" if self.sources is not None else ""
        feats = ", ".join(f"#{f}" for f, _ in self.selection.top_features[position][:3])
        head = (f'<div class="finescope-sample-header"><b>{self.selection.scores[row]:.4f}</b> · '
                f"{html.escape(self.selection.ids[position])}{source} · top features {html.escape(feats) or '-'}</div>")
        if self.encode is not None and self.features:
            codes = self.encode(text)
            acts = codes.codes[:, self.features].sum(1)
            body = token_spans(codes.tokens, acts.tolist())
        else:
            body = html.escape(text)
        return (f'<div class="finescope-sample" style="margin: 6px 0; font-family: monospace; white-space: pre-wrap">'
                f"{head}{body}</div>")
