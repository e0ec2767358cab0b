"""Every notebook runs top to bottom, headless, in fast mode, from a clean checkout.

Each executed copy is kept in build/executed/fast/ (tools.paths.EXECUTED_FAST): the fast variant of
the static site (tests/test_site.py, `make docs-fast`) is built from these, so no notebook runs twice.
"""

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tools.execute import execute_notebook  # noqa: E402
from tools.paths import EXECUTED_FAST  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_exist():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_headless(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    nb = execute_notebook(path, EXECUTED_FAST, fast=True, runs_dir=tmp_path / "runs")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
