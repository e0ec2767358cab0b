"""Execute a notebook headless with nbclient and keep the executed copy: the one way the test suite and
`make docs` run notebooks, so the site shows exactly what the tests ran."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from finescope_nb.artifacts import atomic_path

# A plotly FigureWidget sends changes made after it was displayed (a slider's cut, a curve's new points) as
# one-off messages, so the widget state nbclient saves keeps the figure as first shown. This last cell, run
# after the notebook's own and then dropped from the copy, writes each figure's current data and layout into
# its synced state, so the saved state is the last one.
SYNC_FIGURE_WIDGETS = """\
import copy as _copy
from ipywidgets.widgets.widget import _instances as _live_widgets
from plotly.basewidget import BaseFigureWidget as _Figure
for _w in [_o for _o in list(_live_widgets.values()) if isinstance(_o, _Figure)]:
    _w._widget_layout, _w._widget_data = _copy.deepcopy(_w._layout_obj._props), _copy.deepcopy(_w._data)
"""


def execute_notebook(path: Path, out_dir: Path, fast: bool, runs_dir: Path | None = None,
                     cell_timeout_s: int = 900) -> nbformat.NotebookNode:
    """Run `path` top to bottom (FINESCOPE_FAST=1 when `fast`; stage results cached under `runs_dir`, else the
    kit's default runs/ folder that `make demo` fills) and write the executed copy to `out_dir/<name>` only if
    every cell ran. The widgets' last state is saved in the copy's metadata (nbclient's store_widget_state)."""
    nb = nbformat.read(path, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "FINESCOPE_FAST"}
    if fast:
        env["FINESCOPE_FAST"] = "1"
    if runs_dir is not None:
        env["FINESCOPE_RUNS_DIR"] = str(runs_dir)
    nb.cells.append(nbformat.v4.new_code_cell(SYNC_FIGURE_WIDGETS))
    client = NotebookClient(nb, timeout=cell_timeout_s, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)
    nb.cells.pop()
    with atomic_path(Path(out_dir) / path.name) as tmp:
        nbformat.write(nb, tmp)
    return nb
