"""Choosing how much to prune, interactively: a ratio slider with the parameter count it leaves.

Planning is bookkeeping over precomputed importance (no forward pass), so every slider move
re-plans at once and updates the label and the per-block bars in place. `set_ratio` is the
method the slider's observer calls, so Python tests drive the same code. CSS classes
(finescope-ratio-picker, finescope-ratio-slider, finescope-ratio-readout) are stable for browser tests.
"""

from __future__ import annotations

import ipywidgets as widgets
import plotly.graph_objects as go

from finescope_nb.errors import FinescopeError
from finescope_nb.prune import ImportanceScores, PruneConfig, PrunePlan, plan_pruning
from finescope_nb.viz.prune_plots import params_per_layer


class RatioPicker(widgets.VBox):
    """A pruning-ratio slider over `scores`; `plan` is the plan of the current ratio (None when refused)."""

    def __init__(self, model, scores: ImportanceScores, config: PruneConfig = PruneConfig(), max_ratio: float = 0.8):
        self.model, self.scores, self.config = model, scores, config
        self.plan: PrunePlan | None = None
        self.slider = widgets.FloatSlider(value=config.ratio, min=0.0, max=max_ratio, step=0.01, description="ratio",
                                          readout_format=".0%", continuous_update=True,
                                          layout=widgets.Layout(width="60%")).add_class("finescope-ratio-slider")
        self.readout = widgets.HTML().add_class("finescope-ratio-readout")
        self.figure = go.FigureWidget(params_per_layer(plan_pruning(model, scores, config.replace(ratio=0.0))))
        self.figure.add_class("finescope-ratio-figure")
        super().__init__([self.slider, self.readout, self.figure])
        self.add_class("finescope-ratio-picker")
        self.slider.observe(lambda change: self.set_ratio(change["new"]), names="value")
        self.set_ratio(config.ratio)

    def set_ratio(self, ratio: float) -> PrunePlan | None:
        """Plan for `ratio`, then update the readout and the 'after' bars (or say why it is refused)."""
        try:
            self.plan = plan_pruning(self.model, self.scores, self.config.replace(ratio=round(float(ratio), 4)))
        except FinescopeError as exc:
            self.plan = None
            self.readout.value = f"<span style='color:#cf222e'>{exc}</span>"
            return None
        p = self.plan
        self.readout.value = (f"<b>{p.params_after:,}</b> of {p.params_before:,} non-embedding parameters remain "
                              f"(<b>{p.removed_fraction:.1%}</b> removed); heads per block "
                              f"{[s['num_heads'] for s in p.shapes_after]}, channels {[s['intermediate_size'] for s in p.shapes_after]}")
        with self.figure.batch_update():
            self.figure.data[1].y = p.table()["params_after"].tolist()
            self.figure.layout.title.text = params_per_layer(p).layout.title.text
        if abs(self.slider.value - ratio) > 1e-9:
            self.slider.value = ratio
        return p
