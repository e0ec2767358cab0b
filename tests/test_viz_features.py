"""Feature card and FeatureExplorer: the panels carry the data, callbacks update widgets in place,
and components keep the CSS classes browser tests rely on."""

import functools
import re

import numpy as np
import pytest

import tiny_models as tm
from finescope_nb.features import compute_feature_stats, encode_text, seed_enrichment
from finescope_nb.sae import SAEConfig, train_sae
from finescope_nb.viz.feature_card import feature_card
from finescope_nb.viz.html import token_spans
from finescope_nb.viz.widgets import FeatureCard, FeatureExplorer

TEXTS = tm.texts(60, seed=5)


@pytest.fixture(scope="module")
def setup():
    model, tok = tm.llama(), tm.tokenizer()
    sae = train_sae(model, tok, tm.texts(150, seed=1),
                    SAEConfig(layer=1, d_sae=48, k=4, train_tokens=2048, batch_size=256), progress=False)
    stats = compute_feature_stats(sae, model, tok, TEXTS, domains=tm.domains(60), n_top=4, window=6, progress=False)
    seeds = compute_feature_stats(sae, model, tok, TEXTS[:6], progress=False)
    return stats, seed_enrichment(stats, seeds), functools.partial(encode_text, sae, model, tok)


def live_feature(stats):
    return int(np.argmax(stats.max_activation))


def test_token_spans_escape_and_shade():
    html = token_spans(["<b>", " x"], [0.0, 2.0])
    assert "&lt;b&gt;" in html and "<b>" not in html
    assert html.count('class="finescope-token"') == 2
    assert "rgba(255, 140, 0, 0.00)" in html and "rgba(255, 140, 0, 1.00)" in html


def test_feature_card_panels_carry_the_feature(setup):
    stats, enrichment, _ = setup
    f = live_feature(stats)
    card = feature_card(stats, f, enrichment)
    assert f"Feature #{f}" in card["html"] and "finescope-logit-table" in card["html"]
    assert card["html"].count("finescope-example\"") == len(stats.examples(f))
    assert sum(card["histogram"].data[0].y) == stats.hist_counts[f].sum()
    assert list(card["domains"].data[0].x) == stats.domains
    assert sum(card["domains"].data[0].y) == pytest.approx(1.0, abs=1e-5)


def test_card_widget_updates_in_place(setup):
    stats, enrichment, _ = setup
    card = FeatureCard(stats, enrichment)
    histogram, header = card.histogram, card.header
    live = np.flatnonzero(stats.density > 0)
    for f in live[:2]:
        card.show(int(f))
        assert card.histogram is histogram and card.header is header
        assert f"Feature #{f}" in card.header.value
        assert sum(card.histogram.data[0].y) == stats.hist_counts[f].sum()
    assert "finescope-feature-card" in card._dom_classes


def test_explorer_search_sort_select_and_prompt(setup):
    stats, enrichment, encode = setup
    app = FeatureExplorer(stats, enrichment, encode=encode)
    assert "finescope-feature-explorer" in app._dom_classes
    assert "finescope-prompt-box" in app.prompt_box._dom_classes
    assert "finescope-feature-list" in app.listing._dom_classes
    assert app.sort.value == "enrichment"
    listed = [v for _, v in app.listing.options]
    assert listed[0] == int(np.argmax(np.where(stats.density > 0, enrichment, -np.inf)))
    app.sort.value = "density"
    listed = [v for _, v in app.listing.options]
    assert list(stats.density[listed]) == sorted(stats.density[listed], reverse=True)
    target = live_feature(stats)
    app.select_feature(target)
    assert app.card.feature == target and app.listing.value == target
    assert f"Feature #{target}" in app.card.header.value
    token = stats.table().peak_token[target]
    app.search.value = token
    assert target in [v for _, v in app.listing.options]
    app.search.value = ""
    app.domain.value = "math"
    assert set(stats.table().domain[[v for _, v in app.listing.options]]) == {"math"}
    assert app.card.feature in [v for _, v in app.listing.options]  # the card follows the filter
    app.show_prompt(TEXTS[0])
    shown = app.prompt_output.value
    assert shown.count('class="finescope-token"') == len(TEXTS[0].split())
    activations = [float(a) for a in re.findall(r'data-activation="([^"]+)"', shown)]
    expected = encode(TEXTS[0]).codes[:, app.card.feature]
    np.testing.assert_allclose(activations, expected, rtol=1e-3, atol=1e-4)
    other = next(int(f) for f in np.flatnonzero(stats.density > 0) if f != app.card.feature)
    app.select_feature(other)
    assert f"feature #{other}" in app.prompt_output.value  # re-shaded in place by the new feature
    app.show_prompt("   ")
    assert "finescope-prompt-error" in app.prompt_output.value
