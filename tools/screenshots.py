"""Take the README's pictures from the real widgets and report, in Debian's chromium: `make screenshots`.

What the pictures show: the embedded 10M-parameter Llama and the embedded corpus in fast mode
(FINESCOPE_FAST=1: the fast SAE, smaller calibration and curated sets, 12 fine-tuning steps), the math
domain, 30% of the non-embedding parameters pruned. That is the configuration the notebooks and
`finescope run --domain math` use in fast mode; full-mode pictures would differ in their numbers only.

How: the browser tests' machinery (tests/browser/lab_driver.py) starts a throwaway JupyterLab on a copy
of notebooks/ and runs notebooks 03, 05, 06 and 07 with "Run All Cells"; each picture is the page
element of one widget or figure, taken once it is drawn. The report's summary figure comes from
`finescope run --domain math` in the same runs folder, whose report.html chromium opens from disk.
Each PNG must stay under 200 KB (the README embeds them).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from tools.paths import IMAGES, ROOT

sys.path.insert(0, str(ROOT / "tests" / "browser"))
from lab_driver import LabServer, launch_chromium, run_all_cells  # noqa: E402

MAX_BYTES = 200_000
RUN_TIMEOUT_S = 900  # one notebook in fast mode on two busy cores

# (notebook, the element to photograph, the PNG): elements found by the widgets' own CSS classes, or by the
# cell whose code draws the figure.
SHOTS = [
    ("03_explore_features.ipynb", ".finescope-feature-explorer .finescope-feature-card", "feature_card.png"),
    ("05_curate_dataset.ipynb", ".finescope-threshold-tuner", "threshold_tuner.png"),
    ("06_prune.ipynb", "cell:prune_plots.head_heatmap(scores, plan)", "importance_heatmap.png"),
    ("07_self_distill.ipynb", ".finescope-recovery-curves", "recovery_curves.png"),
]


def element(page, where: str):
    """The element a shot names: a CSS selector, or "cell:CODE" for the plotly figure of the cell running CODE."""
    if where.startswith("cell:"):
        cell = page.locator(".jp-CodeCell", has=page.locator(".jp-InputArea", has_text=where[5:]))
        return cell.locator(".jp-OutputArea .js-plotly-plot").first
    return page.locator(where).first


def save(locator, name: str) -> Path:
    """Photograph `locator` once its plotly figures are drawn; refuse a PNG over MAX_BYTES."""
    locator.wait_for(state="visible", timeout=60_000)
    locator.page.wait_for_timeout(1500)  # plotly's transitions and fonts settle
    path = IMAGES / name
    locator.screenshot(path=str(path), animations="disabled")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{path} is {size:,} bytes, over the {MAX_BYTES:,} the README allows: "
                         "make the element smaller (viewport width in tools/screenshots.py).")
    print(f"  {path.relative_to(ROOT)}: {size / 1000:.0f} KB", flush=True)
    return path


def report_of_fast_run(runs: Path) -> Path:
    """`finescope run --domain math` in fast mode; the path of the report.html it writes."""
    run_dir = runs / "report-math"
    env = dict(os.environ, FINESCOPE_FAST="1", FINESCOPE_RUNS_DIR=str(runs))
    subprocess.run([sys.executable, "-m", "finescope_nb.cli", "run", "--domain", "math", "--run-dir", str(run_dir)],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    report = run_dir / "report.html"
    if not report.is_file():
        raise SystemExit(f"`finescope run` finished without writing {report}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.screenshots", description=__doc__.split("\n\n")[0])
    names = ["report_summary.png", *(name for _, _, name in SHOTS)]
    parser.add_argument("only", nargs="*", metavar="PNG", help=f"retake only these ({', '.join(names)})")
    only = parser.parse_args(argv).only
    if set(only) - set(names):
        parser.error(f"no picture named {sorted(set(only) - set(names))[0]!r}; the pictures are {', '.join(names)}")
    wanted = set(only or names)
    t0 = time.perf_counter()
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="finescope-screenshots-") as tmp:
        workdir = Path(tmp)
        if "report_summary.png" in wanted:
            print("finescope run --domain math (fast mode) for the report ...", flush=True)
            report = report_of_fast_run(workdir / "runs")
        lab = LabServer(workdir)  # serves a copy of notebooks/ with FINESCOPE_RUNS_DIR=workdir/runs, fast mode
        try:
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright, workdir / "chromium-profile")
                try:
                    page = browser.new_page()
                    # tall enough that no element scrolls under the notebook's toolbar
                    page.set_viewport_size({"width": 1500, "height": 2600})
                    if "report_summary.png" in wanted:
                        page.goto(report.as_uri())
                        summary = page.locator(".plotly-graph-div").first  # the results section's figure comes first
                        page.wait_for_function("document.querySelector('.plotly-graph-div .main-svg') !== null")
                        save(summary, "report_summary.png")
                    for notebook, where, name in (shot for shot in SHOTS if shot[2] in wanted):
                        print(f"running {notebook} in JupyterLab ...", flush=True)
                        run_all_cells(page, lab.notebook_url(f"notebooks/{notebook}"), RUN_TIMEOUT_S)
                        save(element(page, where), name)
                finally:
                    browser.close()
        finally:
            lab.stop()
    print(f"pictures taken in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
