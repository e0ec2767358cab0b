"""Build the static site of the executed notebooks with MkDocs (Material theme) and mkdocs-jupyter.

    python -m tools.site fast   # from build/executed/fast/, the copies the notebook tests wrote -> site/fast/
    python -m tools.site full   # executes each notebook in full mode into build/executed/full/ -> site/full/

Why this shape: the site must open offline from disk (file://), so the Material theme's web fonts and
its search (a web worker) are off, and plotly.js is one file of the site
loaded by every page rather than inlined into each figure. Widgets and plotly outputs are made static
first (tools/static_outputs.py). The full variant reuses the stage results `make demo` left in runs/
(the notebooks cache their stages there by config), and re-executes only notebooks changed since
their last executed copy.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import plotly
import yaml

from finescope_nb.errors import FinescopeError
from tools.execute import execute_notebook
from tools.paths import BUILD, EXECUTED_FAST, EXECUTED_FULL, IMAGES, ROOT, SITE
from tools.static_outputs import make_static

NOTEBOOKS = ROOT / "notebooks"
ASSETS = Path(__file__).resolve().parent / "site_assets"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
MODES = {"fast": "fast mode (FINESCOPE_FAST=1, the test suite's run)", "full": "full mode (the defaults, as `make demo`)"}


def notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def stale(source: Path, executed_dir: Path) -> bool:
    copy = executed_dir / source.name
    return not copy.is_file() or copy.stat().st_mtime < source.stat().st_mtime


def execute_full(executed_dir: Path = EXECUTED_FULL) -> None:
    """Execute in full mode every notebook whose executed copy is missing or older than the notebook."""
    for path in notebooks():
        if stale(path, executed_dir):
            t0 = time.perf_counter()
            print(f"executing {path.name} in full mode ...", flush=True)
            execute_notebook(path, executed_dir, fast=False, cell_timeout_s=3600)
            print(f"  {time.perf_counter() - t0:.0f} s", flush=True)


def stage_sources(executed_dir: Path, stage: Path, mode: str) -> dict:
    """Write the site's sources into `stage` (mirroring the repository's layout, so the README's links to
    notebooks/ and docs/ resolve) and return the MkDocs configuration."""
    missing = [p.name for p in notebooks() if stale(p, executed_dir)]
    if missing:
        hint = ("run `make test` (or `python -m pytest tests/test_notebooks.py`), which keeps them"
                if mode == "fast" else "run `make docs`, which executes them")
        raise FinescopeError(f"No up-to-date executed copy of {', '.join(missing)} in {executed_dir}: {hint}.")
    shutil.rmtree(stage, ignore_errors=True)
    docs = stage / "docs"
    (docs / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "README.md", docs / "index.md")  # the home page; its pictures sit at docs/img/ as in the repo
    guides = sorted((ROOT / "docs").glob("*.md"))
    for page in guides:
        (docs / "docs").mkdir(exist_ok=True)
        shutil.copy(page, docs / "docs" / page.name)
    if IMAGES.is_dir():
        shutil.copytree(IMAGES, docs / "docs" / "img")
    pages = []
    for path in notebooks():
        nb = make_static(nbformat.read(executed_dir / path.name, as_version=4))
        nbformat.write(nb, docs / "notebooks" / path.name)
        pages.append(f"notebooks/{path.name}")
    (docs / "js").mkdir()
    shutil.copy(PLOTLY_JS, docs / "js" / "plotly.min.js")
    shutil.copy(ASSETS / "figures.js", docs / "js" / "figures.js")
    (docs / "css").mkdir()
    shutil.copy(ASSETS / "widgets.css", docs / "css" / "widgets.css")
    return {
        "site_name": f"finescope-nb notebooks, {MODES[mode]}",
        "docs_dir": str(docs),
        "use_directory_urls": False,  # pages open from disk as plain .html files
        "theme": {"name": "material", "font": False},  # no web fonts: nothing is fetched from the network
        # No search: the theme's search runs in a web worker, which a page opened from disk may not start,
        # and its offline shim is fetched from a CDN.
        "plugins": [{"mkdocs-jupyter": {"include": ["*.ipynb"], "execute": False, "cache": False,
                                        "include_requirejs": False}}],
        "extra_javascript": ["js/plotly.min.js", "js/figures.js"],
        "extra_css": ["css/widgets.css"],
        "nav": [{"README": "index.md"},
                {"Notebooks": pages},
                *([{"Docs": [f"docs/{p.name}" for p in guides]}] if guides else [])],
    }


def build_site(mode: str, out: Path | None = None, executed_dir: Path | None = None) -> Path:
    """Build the `mode` site into `out` (default site/<mode>/) from `executed_dir`'s executed notebooks."""
    executed_dir = executed_dir or (EXECUTED_FAST if mode == "fast" else EXECUTED_FULL)
    out = Path(out or SITE / mode)
    stage = BUILD / "site-src" / mode
    config = stage_sources(executed_dir, stage, mode)
    config["site_dir"] = str(out.resolve())
    (stage / "mkdocs.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--clean", "--quiet", "-f", str(stage / "mkdocs.yml")],
                            cwd=stage, capture_output=True, text=True)
    if result.returncode != 0:
        raise FinescopeError(f"mkdocs could not build the {mode} site (exit {result.returncode}): "
                             f"{result.stderr.strip()[-2000:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.site", description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=sorted(MODES), help="fast: the test suite's executed copies; full: execute in full mode")
    parser.add_argument("--out", type=Path, help="the site's folder (default site/MODE)")
    args = parser.parse_args(argv)
    try:
        t0 = time.perf_counter()
        if args.mode == "full":
            execute_full()
        out = build_site(args.mode, args.out)
    except FinescopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.mode} site built in {time.perf_counter() - t0:.0f} s: open {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
