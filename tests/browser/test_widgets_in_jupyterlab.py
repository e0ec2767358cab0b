"""The notebooks' widgets work for a user: in a real JupyterLab, in a headless chromium, with the mouse and keyboard.

Python tests call the widgets' methods directly; these check the part they cannot: that a slider drag
or a click in the browser reaches the kernel's callbacks and that the result is drawn on screen. Each
step leaves a screenshot in tests/artifacts/browser/ (or $FINESCOPE_BROWSER_ARTIFACTS), taken only
after the page was checked to show what the screenshot is meant to show.
"""

import os
import re
import shutil

import pytest
from playwright.sync_api import sync_playwright

from lab_driver import CHANGED, CHROMIUM_PATH, CONTAINS, ROOT, LabServer, launch_chromium, run_all_cells, wait_for_value

ARTIFACTS = os.environ.get("FINESCOPE_BROWSER_ARTIFACTS", str(ROOT / "tests" / "artifacts" / "browser"))
RUN_TIMEOUT_S = 420  # one notebook in fast mode, SAE training included, on two busy cores
PROMPT = "def add(a, b): return a + b"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    server = LabServer(tmp_path_factory.mktemp("jupyterlab"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    assert shutil.which(CHROMIUM_PATH), f"{CHROMIUM_PATH} is missing: `make setup` installs Debian's chromium"
    with sync_playwright() as playwright:
        context = launch_chromium(playwright, tmp_path_factory.mktemp("chromium-profile"))
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    try:
        yield page
    finally:
        page.close()


def screenshot(locator, name: str) -> None:
    os.makedirs(ARTIFACTS, exist_ok=True)
    locator.screenshot(path=os.path.join(ARTIFACTS, name))


def test_threshold_tuner_follows_a_slider_drag(lab, page):
    run_all_cells(page, lab.notebook_url("notebooks/05_curate_dataset.ipynb"), RUN_TIMEOUT_S)
    tuner = page.locator(".finescope-threshold-tuner")
    count_sel = ".finescope-threshold-tuner .finescope-selected-count .widget-html-content"
    cut_sel = ".finescope-threshold-tuner .finescope-score-histogram .layer-above .shapelayer path"
    page.locator(cut_sel).wait_for(state="attached", timeout=30_000)  # a vertical line has no width: never "visible"
    count_before, cut_before = page.inner_text(count_sel), page.get_attribute(cut_sel, "d")
    assert re.search(r"\d+ of [\d,]+ selected", count_before), f"the tuner shows no selected count: {count_before!r}"
    screenshot(tuner, "01_tuner_before.png")

    handle = page.locator(".finescope-threshold-tuner .finescope-threshold-slider .noUi-handle")
    track = page.locator(".finescope-threshold-tuner .finescope-threshold-slider .noUi-base").bounding_box()
    grip = handle.bounding_box()
    x, y = grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2
    # Drag to the far side of the track: a big move of the cut whatever the scores look like.
    target = track["x"] + track["width"] * (0.1 if x > track["x"] + track["width"] / 2 else 0.9)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(target, y, steps=10)
    page.mouse.up()

    count_after = wait_for_value(page, count_sel, CHANGED, count_before)
    assert count_after != count_before, \
        f"the selected count did not change after moving the slider: before {count_before!r}, after {count_after!r}"
    cut_after = wait_for_value(page, cut_sel, CHANGED, cut_before, attribute="d")
    assert cut_after != cut_before, \
        f"the histogram's cut line did not move after moving the slider: before {cut_before!r}, after {cut_after!r}"
    screenshot(tuner, "02_tuner_after_slider.png")


def test_feature_explorer_opens_a_card_and_reads_a_prompt(lab, page):
    run_all_cells(page, lab.notebook_url("notebooks/03_explore_features.ipynb"), RUN_TIMEOUT_S)
    explorer = page.locator(".finescope-feature-explorer")
    options = explorer.locator(".finescope-feature-list select option")
    assert options.count() >= 2, f"the feature list shows {options.count()} features, expected at least 2"
    option = options.nth(1)  # the first is open already
    feature = re.match(r"#(\d+)", option.inner_text().strip()).group(1)
    option.click()

    header_sel = ".finescope-feature-explorer .finescope-feature-card .finescope-card-header .widget-html-content"
    wanted = f"Feature #{feature}"
    header = wait_for_value(page, header_sel, CONTAINS, wanted)
    assert wanted in (header or ""), f"clicking feature #{feature} in the list did not open its card: header {header!r}"
    tokens = explorer.locator(".finescope-card-examples .finescope-token")
    lit = tokens.evaluate_all("spans => spans.filter(s => parseFloat(s.dataset.activation) > 0).length")
    assert lit > 0, f"the card of feature #{feature} highlights none of its {tokens.count()} example tokens"
    screenshot(explorer, "03_explorer_card.png")

    output_sel = ".finescope-feature-explorer .finescope-prompt-output .finescope-prompt-tokens"
    before = page.text_content(output_sel)
    box = explorer.locator(".finescope-prompt-input textarea")
    box.fill("")
    box.press_sequentially(PROMPT)
    explorer.locator("button.finescope-prompt-button").click()
    after = wait_for_value(page, output_sel, CHANGED, before)
    assert "".join(PROMPT.split()) in "".join((after or "").split()), \
        f"the prompt box did not show the typed text's tokens: before {before!r}, after {after!r}"
    prompt_tokens = explorer.locator(".finescope-prompt-output .finescope-token")
    firing = prompt_tokens.evaluate_all("spans => spans.filter(s => s.title.startsWith('#')).length")
    assert firing > 0, f"no feature fires on any of the {prompt_tokens.count()} tokens of {PROMPT!r}"
    shaded_by = explorer.locator(".finescope-prompt-output").inner_text()
    assert f"shaded by feature #{feature}" in shaded_by, \
        f"the prompt is not shaded by the clicked feature #{feature}: {shaded_by[-200:]!r}"
    screenshot(explorer.locator(".finescope-prompt-box"), "04_prompt_box_activations.png")
