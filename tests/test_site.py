"""The fast static site builds from the notebook tests' executed copies and every page works offline in chromium.

This file sorts after test_notebooks.py, so in `make test` the executed copies it needs are fresh; run
alone, it executes (in fast mode) only the notebooks whose copy is missing or older than the notebook.
Each page is opened from disk with every network request refused: a figure that needs a CDN, a widget
manager that is not there or any script error fails the test.
"""

import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "browser"))
from lab_driver import CHROMIUM_PATH, launch_chromium  # noqa: E402

from finescope_nb.errors import FinescopeError  # noqa: E402
from tools import site  # noqa: E402
from tools.execute import execute_notebook  # noqa: E402
from tools.paths import EXECUTED_FAST  # noqa: E402
from tools.static_outputs import make_static  # noqa: E402

pytestmark = pytest.mark.slow

# A figure drawn by plotly.js (an svg inside the placeholder), or an image output.
DRAWN = "document.querySelectorAll('.jupyter-wrapper .js-plotly-plot .main-svg, .jupyter-wrapper .jp-OutputArea-output img').length"


def test_a_site_without_executed_copies_says_how_to_get_them(tmp_path):
    with pytest.raises(FinescopeError, match=r"No up-to-date executed copy of 00_quickstart.ipynb.*run `make test`"):
        site.build_site("fast", tmp_path / "site", executed_dir=tmp_path / "none")
    assert not (tmp_path / "site").exists()


PROBE_CELLS = [
    "import numpy as np, ipywidgets as w, plotly.graph_objects as go\n"
    "fig = go.FigureWidget()\nfig.add_scatter(x=[0], y=[1.5], name='curve')\n"
    "box = w.VBox([w.HTML('<b>first</b>'), fig]).add_class('probe-box')\nbox",
    "fig.data[0].x, fig.data[0].y = np.array([0, 1, 2]), np.array([1.5, 2.5, 3.5])\n"
    "fig.update_layout(title='after')\nbox.children[0].value = '<b>last</b>'",
]


def test_a_widget_is_shown_as_the_last_cell_left_it(tmp_path):
    """A FigureWidget changed after it was displayed shows its last data and layout, from the saved state."""
    source = tmp_path / "probe.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in PROBE_CELLS]), source)
    executed = execute_notebook(source, tmp_path / "executed", fast=True, runs_dir=tmp_path / "runs")
    assert len(executed.cells) == 2, "the state-syncing cell must not stay in the executed copy"
    static = make_static(nbformat.read(tmp_path / "executed" / "probe.ipynb", as_version=4))
    assert "widgets" not in static.metadata, "no widget state left for a converter to load a widget manager for"
    shown = static.cells[0].outputs[0].data["text/html"]
    assert "probe-box" in shown and "<b>last</b>" in shown, shown[:500]
    spec = json.loads(re.search(r'class="finescope-figure-spec">(.*?)</script>', shown, re.S).group(1))
    assert spec["layout"]["title"]["text"] == "after"
    assert (spec["data"][0]["x"], spec["data"][0]["y"]) == ([0, 1, 2], [1.5, 2.5, 3.5])


@pytest.fixture(scope="module")
def fast_site(tmp_path_factory):
    for path in site.notebooks():
        if site.stale(path, EXECUTED_FAST):
            execute_notebook(path, EXECUTED_FAST, fast=True, runs_dir=tmp_path_factory.mktemp("runs"))
    return site.build_site("fast", tmp_path_factory.mktemp("site") / "fast")


def test_plotly_js_is_in_the_site_once(fast_site):
    holders = [p.relative_to(fast_site).as_posix() for p in fast_site.rglob("*")
               if p.is_file() and p.suffix in (".html", ".js") and b"plotly.js v" in p.read_bytes()]
    assert holders == ["js/plotly.min.js"], f"plotly.js should be one file of the site, found in {holders}"


def test_every_page_opens_offline_and_draws_its_figures(fast_site, tmp_path):
    assert shutil.which(CHROMIUM_PATH), f"{CHROMIUM_PATH} is missing: `make setup` installs Debian's chromium"
    notebook_pages = sorted((fast_site / "notebooks").glob("*.html"))
    assert [p.stem for p in notebook_pages] == [p.stem for p in site.notebooks()], "one page per notebook"
    pages = [fast_site / "index.html", *notebook_pages, *sorted((fast_site / "docs").glob("*.html"))]
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, tmp_path / "chromium-profile")
        try:
            page = browser.new_page()

            def offline(route):
                if route.request.url.startswith("file://"):
                    return route.continue_()
                errors.append(f"network request to {route.request.url}")
                return route.abort()

            def console(message):
                if message.type == "error":
                    errors.append(f"console error: {message.text} ({message.location.get('url')})")

            page.route("**/*", offline)
            page.on("console", console)
            page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
            for path in pages:
                before = len(errors)
                page.goto(path.as_uri(), wait_until="load")
                if path.parent.name == "notebooks":
                    try:
                        page.wait_for_function(f"{DRAWN} > 0", timeout=30_000)
                    except PlaywrightTimeoutError:
                        pass
                    assert page.evaluate(DRAWN) > 0, f"{path.name} shows no drawn figure"
                    placeholders = page.evaluate("document.querySelectorAll('div.finescope-figure').length")
                    undrawn = page.evaluate("document.querySelectorAll('div.finescope-figure:not(.js-plotly-plot)').length")
                    assert undrawn == 0, f"{path.name}: {undrawn} of {placeholders} figures were not drawn"
                assert len(errors) == before, f"{path.relative_to(fast_site)}: " + "; ".join(errors[before:])[:2000]
            # widgets are drawn from their last state: the tuner with its cut, the recovery curves with the arms
            # that a later cell trained (points added after the figure was displayed)
            page.goto((fast_site / "notebooks" / "05_curate_dataset.html").as_uri(), wait_until="load")
            tuner = page.locator(".finescope-threshold-tuner").first
            assert tuner.locator(".js-plotly-plot .shapelayer path").count() >= 1, "the tuner's histogram shows no cut"
            assert "selected" in tuner.locator(".finescope-selected-count").inner_text(), "the tuner shows no count"
            page.goto((fast_site / "notebooks" / "07_self_distill.html").as_uri(), wait_until="load")
            arms = page.locator(".finescope-recovery-curves .scatterlayer .trace").count()
            assert arms >= 3, f"the recovery curves show {arms} arms, not the 3 the notebook trained"
        finally:
            browser.close()
