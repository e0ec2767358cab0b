"""Shared test set-up: offline, quiet, and nothing written outside the project or tmp."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HOME", str(ROOT / ".hf_home"))
os.environ.setdefault("FINESCOPE_FAST", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_warn_once():
    """Each test starts as a fresh session for `warn_once`, so a warning one test triggers does not hide it in the next."""
    from finescope_nb import errors

    errors._WARNED.clear()
    yield
