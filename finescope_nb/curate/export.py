"""The curated set on disk: a `datasets` folder and a JSONL file, the input of pruning and distillation.

Each record keeps its text, id, selection score and the features that contributed most, so a
later stage (or a reader) can see why a document is in the set. Both are written under a
temporary name and renamed into place: an interrupted export leaves the previous one intact.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets

from finescope_nb.artifacts import atomic_path
from finescope_nb.curate.base import Selection, pool_texts
from finescope_nb.errors import FinescopeError

DATASET_DIR = "dataset"
JSONL_FILE = "curated.jsonl"


def curated_records(selection: Selection, pool) -> list[dict]:
    texts = pool_texts(pool)
    if len(texts) != len(selection.scores):
        raise FinescopeError(f"The pool has {len(texts)} documents but the selection scored {len(selection.scores)}; "
                             "export with the pool the selection was made from.")
    return [{"text": texts[row], "id": doc_id, "score": float(selection.scores[row]),
             "top_features": [{"feature": f, "contribution": float(c)} for f, c in feats]}
            for row, doc_id, feats in zip(selection.rows.tolist(), selection.ids, selection.top_features)]


def export_selection(selection: Selection, pool, folder: str | Path) -> Path:
    """Write `folder/dataset` (datasets.save_to_disk) and `folder/curated.jsonl`; returns `folder`."""
    if len(selection) == 0:
        raise FinescopeError("The selection is empty, so there is nothing to export; lower the threshold or raise M.")
    folder = Path(folder)
    records = curated_records(selection, pool)
    features = datasets.Features({
        "text": datasets.Value("string"), "id": datasets.Value("string"), "score": datasets.Value("float32"),
        "top_features": datasets.List({"feature": datasets.Value("string"), "contribution": datasets.Value("float32")}),
    })
    with atomic_path(folder / DATASET_DIR) as tmp:
        datasets.Dataset.from_list(records, features=features).save_to_disk(str(tmp))
    with atomic_path(folder / JSONL_FILE) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return folder


def load_curated(folder: str | Path) -> datasets.Dataset:
    """The curated set written by `export_selection`."""
    path = Path(folder) / DATASET_DIR
    if not path.is_dir():
        raise FinescopeError(f"{str(folder)!r} holds no curated set (no {DATASET_DIR}/ folder); pass a folder written by export_selection.")
    return datasets.load_from_disk(str(path))
