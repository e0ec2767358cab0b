"""The `Selector` interface every curation method implements, and the `Selection` it returns.

A selector is fitted on a few seed examples, scores every document of a pool, and selects: the
top M, everything above a threshold, or the union of each seed's top k (FineScope's supplement).
Each method works on its own representation of the documents (sparse SAE codes, dense hidden
states, hashed n-grams); `prepare` turns texts into it once, so a pool is embedded once and then
scored by many seed sets. Anything already prepared passes through `prepare` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import datasets
import numpy as np
import pandas as pd

from finescope_nb.errors import FinescopeError


def pool_texts(pool) -> list[str]:
    """The texts of a pool given as a list of str, a `datasets.Dataset` or a DataFrame with a `text` column."""
    if isinstance(pool, pd.Series):
        pool = pool.tolist()
    if isinstance(pool, (datasets.Dataset, pd.DataFrame)):
        columns = list(pool.column_names if isinstance(pool, datasets.Dataset) else pool.columns)
        if "text" not in columns:
            raise FinescopeError(f"The pool has no 'text' column (columns: {', '.join(map(str, columns)) or 'none'}); "
                                 "rename the column holding the documents to 'text'.")
        texts = list(pool["text"])
    elif isinstance(pool, str) or not isinstance(pool, Sequence):
        raise FinescopeError(f"A pool must be a list of texts, a Dataset or a DataFrame with a 'text' column, "
                             f"got {type(pool).__name__}; pass one of those.")
    else:
        texts = list(pool)
    if not texts:
        raise FinescopeError("The pool is empty; pass at least one document.")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise FinescopeError(f"Pool document {bad} is a {type(texts[bad]).__name__}, not text; "
                             "every document of the pool must be a string.")
    return texts


def check_seeds(seeds) -> list[str]:
    """Seed texts, refusing none at all and empty or whitespace-only ones (named by position)."""
    if isinstance(seeds, datasets.Dataset):
        seeds = seeds["text"] if "text" in seeds.column_names else []
    if isinstance(seeds, pd.Series):
        seeds = seeds.tolist()
    if isinstance(seeds, str):
        seeds = [seeds]
    seeds = list(seeds) if seeds is not None else []
    if not seeds:
        raise FinescopeError("No seeds were given; pass a list of at least one example text of the target domain.")
    empty = [i for i, s in enumerate(seeds) if not isinstance(s, str) or not s.strip()]
    if empty:
        raise FinescopeError(f"Seed{'s' if len(empty) > 1 else ''} {', '.join(map(str, empty))} "
                             f"{'are' if len(empty) > 1 else 'is'} empty or not text; remove or fill "
                             f"{'them' if len(empty) > 1 else 'it'} so every seed is a non-empty example.")
    return seeds


def ranking(scores: np.ndarray) -> np.ndarray:
    """Indices from best to worst score; ties keep pool order, so selections are reproducible."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def rows_above(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices scoring at least `threshold`, best first; refuses a cut that keeps nothing."""
    keep = ranking(scores)
    keep = keep[np.asarray(scores)[keep] >= threshold]
    if len(keep) == 0:
        raise FinescopeError(f"Threshold {threshold:.4g} selects no sample: scores range from {np.min(scores):.4g} "
                             f"to {np.max(scores):.4g}; pass a threshold at most {np.max(scores):.4g}.")
    return keep


def top_rows(scores: np.ndarray, m: int) -> np.ndarray:
    """The indices of the `m` best scores, best first; refuses M outside 1..pool size."""
    n = len(scores)
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= n:
        raise FinescopeError(f"M={m!r} is not between 1 and the pool size {n}; pass an M of at most {n}.")
    return ranking(scores)[:m]


@dataclass
class Selection:
    """What a selector chose: every pool score, the chosen rows (best first) and why each was chosen."""

    selector: str
    scores: np.ndarray  # [pool] score of every pool document
    rows: np.ndarray  # indices into the pool of the selected documents, best first
    ids: list[str]  # their ids
    top_features: list[list[tuple[str, float]]]  # per selected document: (feature, contribution), largest first
    rule: dict = field(default_factory=dict)  # how it was cut: {"m": ...}, {"threshold": ...} or {"per_seed_k": ...}

    def __len__(self) -> int:
        return len(self.rows)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"row": self.rows, "id": self.ids, "score": self.scores[self.rows],
                             "top_features": [", ".join(f for f, _ in feats) for feats in self.top_features]})


class Selector:
    """Fit on seeds, score a pool, select from it. Subclasses implement the underscored methods."""

    name = "selector"

    # -- what a subclass provides ------------------------------------------------------------------

    def prepare(self, docs) -> Any:
        """The selector's representation of `docs` (texts, or something already prepared)."""
        return pool_texts(docs)

    def _fit(self, seeds: Any) -> None:
        raise NotImplementedError

    def _similarities(self, pool: Any) -> np.ndarray:
        """[pool, seeds] similarity of every document to every seed (for per-seed top-k)."""
        raise FinescopeError(f"{self.name} has no per-seed similarities; select with m= or threshold= instead.")

    def _score(self, pool: Any) -> np.ndarray:
        raise NotImplementedError

    def _explain(self, pool: Any, rows: np.ndarray, n: int) -> list[list[tuple[str, float]]]:
        """The `n` features that contributed most to each of `rows`' scores."""
        return [[] for _ in rows]

    @staticmethod
    def take(prepared: Any, rows: np.ndarray) -> Any:
        """The prepared representation of a subset of the documents (e.g. one domain of the pool)."""
        if isinstance(prepared, np.ndarray):
            return prepared[rows]
        if hasattr(prepared, "take"):
            return prepared.take(rows)
        return [prepared[i] for i in rows]

    # -- the interface -----------------------------------------------------------------------------

    def fit(self, seeds) -> "Selector":
        if isinstance(seeds, (str, datasets.Dataset, pd.Series)) or (isinstance(seeds, Sequence) and not isinstance(seeds, np.ndarray)):
            seeds = check_seeds(seeds)
        self._fit(self.prepare(seeds))
        self.fitted = True
        return self

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted", False):
            raise FinescopeError(f"{self.name} has not seen any seeds yet; call .fit(seeds) before scoring.")

    def score(self, pool) -> np.ndarray:
        """[pool] float scores, higher = more like the seeds."""
        self._check_fitted()
        return np.asarray(self._score(self.prepare(pool)), dtype=np.float32)

    def select(self, pool, m: int | None = None, threshold: float | None = None, per_seed_k: int | None = None,
               ids: Sequence | None = None, explain: int = 5) -> Selection:
        """Select by exactly one rule: top `m`, score >= `threshold`, or the union of each seed's top `per_seed_k`."""
        self._check_fitted()
        rules = {k: v for k, v in (("m", m), ("threshold", threshold), ("per_seed_k", per_seed_k)) if v is not None}
        if len(rules) != 1:
            raise FinescopeError(f"Pass exactly one of m, threshold or per_seed_k (got {', '.join(rules) or 'none'}).")
        if ids is None and isinstance(pool, (datasets.Dataset, pd.DataFrame)) and "id" in (
                pool.column_names if isinstance(pool, datasets.Dataset) else pool.columns):
            ids = list(pool["id"])
        prepared = self.prepare(pool)
        scores = np.asarray(self._score(prepared), dtype=np.float32)
        if m is not None:
            rows = top_rows(scores, m)
        elif threshold is not None:
            rows = rows_above(scores, float(threshold))
        else:
            sims = self._similarities(prepared)
            top_rows(sims[:, 0], per_seed_k)  # checks k against the pool size
            best = np.argsort(-sims, axis=0, kind="stable")[:per_seed_k]
            chosen = np.unique(best)
            rows = chosen[ranking(scores[chosen])]
        if ids is not None and len(ids) != len(scores):
            raise FinescopeError(f"ids has {len(ids)} entries but the pool has {len(scores)} documents; pass one id per document.")
        names = [str(ids[i]) for i in rows] if ids is not None else [str(i) for i in rows]
        reasons = self._explain(prepared, rows, explain) if explain else [[] for _ in rows]
        return Selection(self.name, scores, rows, names, reasons, rules)
