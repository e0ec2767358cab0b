"""Where the embedded default lives inside the repository.

The kit ships its own corpus, eval sets and base model under data/ so that it runs with no hub.
Every module finds them through these names rather than hard-coding paths.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
CORPUS_DIR = DATA_DIR / "corpus"
EVALS_DIR = DATA_DIR / "evals"
MODELS_DIR = DATA_DIR / "models"
DEFAULT_MODEL_DIR = MODELS_DIR / "finescope-tiny-llama"
# Tests point FINESCOPE_RUNS_DIR at a temporary folder so they never touch the user's runs.
DEFAULT_RUNS_DIR = Path(os.environ.get("FINESCOPE_RUNS_DIR", REPO_ROOT / "runs"))
