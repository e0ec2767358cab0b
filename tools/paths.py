"""Where the tooling reads and writes, in one place: the test suite, `make docs` and `make screenshots` agree on it."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"  # gitignored
# The notebook test writes each notebook it executed in fast mode here; the fast site is built from these.
EXECUTED_FAST = BUILD / "executed" / "fast"
# `make docs` executes the notebooks in full mode into here (reusing the runs cache of `make demo`).
EXECUTED_FULL = BUILD / "executed" / "full"
SITE = ROOT / "site"  # gitignored
IMAGES = ROOT / "docs" / "img"
