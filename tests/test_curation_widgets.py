"""Curation widgets driven from Python: the same methods their observers call."""

import time

import numpy as np
import pandas as pd
import pytest

from finescope_nb.curate import Selection, SparseCodes, enrichment_table
from finescope_nb.errors import FinescopeError
from finescope_nb.features import TokenCodes
from finescope_nb.viz.curation_plots import score_histogram, selector_comparison
from finescope_nb.viz.curation_widgets import FeaturePicker, SamplePreview, ThresholdTuner

RNG = np.random.default_rng(0)
LABELS = np.array(["math"] * 300 + ["code"] * 700)
SCORES = np.where(LABELS == "math", RNG.normal(0.7, 0.1, 1000), RNG.normal(0.4, 0.1, 1000))


def test_slider_changes_count_metrics_and_figure():
    exported = []
    tuner = ThresholdTuner(SCORES, LABELS, "math", on_export=lambda t: exported.append(t) or "out", m=100)
    assert "finescope-threshold-tuner" in tuner._dom_classes and "finescope-threshold-slider" in tuner.slider._dom_classes
    before = (tuner.count.value, tuner.metrics.value, tuner.figure.layout.shapes[0].x0, tuner.value_label.value)
    assert tuner.top_m.value == 100 and "<b>100</b>" in tuner.count.value
    tuner.slider.value = 0.5
    after = (tuner.count.value, tuner.metrics.value, tuner.figure.layout.shapes[0].x0, tuner.value_label.value)
    assert all(a != b for a, b in zip(before, after))
    n = int((SCORES >= 0.5).sum())
    assert tuner.top_m.value == n and f"<b>{n:,}</b>" in tuner.count.value
    precision = (LABELS[SCORES >= 0.5] == "math").mean()
    assert f"precision <b>{precision:.3f}</b>" in tuner.metrics.value
    assert tuner.figure.layout.shapes[0].x0 == pytest.approx(0.5)
    assert "0.5000" in tuner.value_label.value
    tuner.top_m.value = 10
    assert len(tuner.rows()) == 10 and tuner.threshold == pytest.approx(np.sort(SCORES)[-10])
    tuner.export_button.click()
    assert exported == [tuner.threshold] and "exported 10 documents" in tuner.export_status.value


def test_a_cut_above_every_score_says_so_and_updates_stay_fast():
    tuner = ThresholdTuner(SCORES)
    tuner.set_threshold(SCORES.max() + 1)
    assert "selects nothing" in tuner.count.value and "scores range from" in tuner.count.value
    big = RNG.random(200_000)
    tuner = ThresholdTuner(big, np.where(big > 0.5, "a", "b"), "a")
    start = time.perf_counter()
    for x in np.linspace(0.1, 0.9, 20):
        tuner.set_threshold(x)
    assert (time.perf_counter() - start) / 20 < 0.1


def test_feature_picker_toggles_include_and_exclude():
    pool = SparseCodes.from_dense(RNG.random((50, 20)) * (RNG.random((50, 20)) < 0.3), 20)
    seeds = SparseCodes.from_dense(RNG.random((5, 20)) * (RNG.random((5, 20)) < 0.6), 20)
    table = enrichment_table(seeds, pool)
    assert table.enrichment.is_monotonic_decreasing
    changes = []
    picker = FeaturePicker(table, n=5, on_change=lambda inc, exc: changes.append((inc, exc)))
    first, second = (int(f) for f in table.feature[:2])
    picker.toggles[first].value = "include"
    picker.set_state(second, "exclude")
    assert picker.include == [first] and picker.exclude == [second]
    assert changes[-1] == ([first], [second]) and picker.toggles[second].value == "exclude"
    assert f"#{first}" in picker.summary.value
    with pytest.raises(FinescopeError, match="not listed"):
        picker.set_state(10_000, "include")


def test_sample_preview_pages_bands_and_highlights():
    rows = np.argsort(-SCORES)[:12]
    selection = Selection("test", SCORES.astype(np.float32), rows, [f"d{i}" for i in rows],
                          [[("3", 0.5)] for _ in rows], {"m": 12})
    texts = [f"text number {i}" for i in range(len(SCORES))]

    def encode(text):
        words = text.split()
        codes = np.zeros((len(words), 8), dtype=np.float32)
        codes[-1, 3] = 2.0
        return TokenCodes(words, codes)

    preview = SamplePreview(selection, texts, sources=LABELS, encode=encode, features=[3], page_size=5)
    assert preview.pages() == 3 and preview.body.value.count('class="finescope-sample"') == 5
    assert 'data-activation="2"' in preview.body.value
    preview.next.click()
    assert preview.page == 1 and "page 2 of 3" in preview.page_label.value
    cut = float(SCORES[rows[3]])
    preview.band.value = (cut, preview.band.max)
    assert len(preview.visible()) == 4 and preview.page == 0
    preview.set_features([])
    assert "finescope-token" not in preview.body.value


def test_plots_have_titles_and_axes():
    fig = score_histogram(SCORES, LABELS, 0.5)
    assert len(fig.data) == 2 and fig.layout.shapes[0].x0 == 0.5 and fig.layout.xaxis.title.text == "score"
    assert sum(int(np.sum(t.y)) for t in fig.data) == len(SCORES)
    summary = pd.DataFrame({"selector": ["a", "b"], "target": ["math", "math"], "precision_mean": [0.9, 0.5],
                            "precision_std": [0.01, 0.1]})
    assert selector_comparison(summary).layout.title.text.startswith("precision")
