"""FineScope's selector: cosine similarity between documents and seeds in pooled SAE code space.

Scoring is a sparse-times-dense product done by `torch.nn.functional.embedding_bag`: each pool
document is its top L (feature, value) pairs, so its similarity to every seed is a weighted sum of
L rows of the [d_sae, seeds] seed matrix. That is L x seeds multiply-adds per document instead of
d_sae x seeds, and nothing of size [pool, d_sae] is ever built (1M documents, 50 seeds: < 1 s).

Sparse codes also allow what a dense vector cannot: weighting each feature before the cosine,
by how rare it is in the pool (`idf`), by how enriched it is on the seeds (`enrichment`), or by
a hand-picked mask (`include` / `exclude`).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from finescope_nb.curate.base import Selector
from finescope_nb.curate.codes import SparseCodes, check_sae_codes, feature_enrichment, sae_codes
from finescope_nb.errors import FinescopeError
from finescope_nb.sae.codes import POOLINGS, PooledCodes

SCORINGS = ("centroid", "max")
WEIGHTINGS = ("none", "idf", "enrichment")
CHUNK = 131_072  # pool rows scored at once: bounds the temporaries to a few tens of MB


class SAESelector(Selector):
    """Pooled SAE codes (`pooling` mean or max), cosine to the seed centroid or max over seeds.

    Give `sae, model, tokenizer` to select from texts, or pass pooled codes (`PooledCodes` from
    `encode_corpus`, or `SparseCodes`) to `fit` and `score` directly.
    """

    def __init__(self, sae=None, model=None, tokenizer=None, *, pooling: str = "mean", scoring: str = "centroid",
                 weighting: str = "none", include: Iterable[int] | None = None, exclude: Iterable[int] | None = None,
                 top_l: int = 64, layer: int | None = None):
        for name, value, known in (("pooling", pooling, POOLINGS), ("scoring", scoring, SCORINGS),
                                   ("weighting", weighting, WEIGHTINGS)):
            if value not in known:
                raise FinescopeError(f"Unknown {name} {value!r}; choose one of {', '.join(known)}.")
        if sae is not None and model is not None:
            sae.check_model(model, layer)
        self.sae, self.model, self.tokenizer = sae, model, tokenizer
        self.pooling, self.scoring, self.weighting, self.top_l = pooling, scoring, weighting, top_l
        self.include, self.exclude = self._features(include), self._features(exclude)
        if sae is not None:
            self._check_mask(sae.d_sae)
        self.name = f"sae-{pooling}-{scoring}" + ("" if weighting == "none" else f"-{weighting}")

    @staticmethod
    def _features(features) -> np.ndarray | None:
        return None if features is None else np.asarray(list(features), dtype=np.int64)

    def prepare(self, docs) -> SparseCodes:
        if isinstance(docs, PooledCodes):
            docs = SparseCodes.from_pooled(docs, self.pooling)
        if isinstance(docs, SparseCodes):
            if self.sae is not None:
                check_sae_codes(self.sae, docs)
            return docs
        if self.sae is None or self.model is None or self.tokenizer is None:
            raise FinescopeError("This SAESelector has no SAE, model and tokenizer to encode texts; pass them to "
                                 "SAESelector(sae, model, tokenizer) or pass pooled codes instead of texts.")
        return sae_codes(self.sae, self.model, self.tokenizer, super().prepare(docs), self.top_l)[self.pooling]

    def _fit(self, seeds: SparseCodes) -> None:
        self.seeds = seeds
        self._check_mask(seeds.d_sae)

    def _check_mask(self, d_sae: int) -> None:
        """Refuse an include / exclude feature index that the SAE does not have."""
        for what, features in (("include", self.include), ("exclude", self.exclude)):
            if features is not None and len(features) and (features.min() < 0 or features.max() >= d_sae):
                bad = int(features[(features < 0) | (features >= d_sae)][0])
                raise FinescopeError(f"Feature {bad} in {what} is outside the SAE, which has features 0 to {d_sae - 1}; "
                                     "pass indices in that range.")

    def feature_weights(self, pool: SparseCodes) -> np.ndarray:
        """[d_sae] weight of each feature before the cosine: weighting times the include/exclude mask."""
        d = self.seeds.d_sae
        if pool.d_sae != d:
            raise FinescopeError(f"The pool's codes have {pool.d_sae} features but the seeds' {d}; encode both with the same SAE.")
        if self.weighting == "idf":
            weights = np.log((1 + len(pool)) / (1 + pool.document_frequency() * len(pool))) + 1.0
        elif self.weighting == "enrichment":
            weights = np.clip(feature_enrichment(self.seeds, pool), 0, None)
        else:
            weights = np.ones(d)
        weights = weights.astype(np.float32)
        if self.include is not None:
            mask = np.zeros(d, dtype=np.float32)
            mask[self.include] = 1
            weights = weights * mask
        if self.exclude is not None:
            weights[self.exclude] = 0
        return weights

    def _query(self, weights: np.ndarray, per_seed: bool) -> torch.Tensor:
        """[d_sae, q] unit query vectors: every seed (q=seeds) or, for centroid scoring, their mean."""
        seeds = self.seeds.dense() * weights
        seeds /= np.linalg.norm(seeds, axis=1, keepdims=True).clip(1e-12)
        if not per_seed and self.scoring == "centroid":
            seeds = seeds.mean(0, keepdims=True)
            seeds /= max(np.linalg.norm(seeds), 1e-12)
        return torch.from_numpy(np.ascontiguousarray(seeds.T))

    def _weighted(self, pool: SparseCodes, per_seed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_mask(pool.d_sae)
        weights = self.feature_weights(pool)
        return self._query(weights, per_seed), torch.from_numpy(weights)

    @staticmethod
    def _cosines(pool: SparseCodes, query: torch.Tensor, weights: torch.Tensor) -> np.ndarray:
        """[docs, q] cosine of each weighted document to each query column, CHUNK rows at a time."""
        out = np.empty((len(pool), query.shape[1]), dtype=np.float32)
        unweighted = bool((weights == 1).all())
        for start in range(0, len(pool), CHUNK):
            idx = _tensor(pool.indices[start:start + CHUNK], np.int32)
            val = _tensor(pool.values[start:start + CHUNK], np.float32)
            if not unweighted:
                val = val * weights[idx]
            sims = torch.nn.functional.embedding_bag(idx, query, per_sample_weights=val, mode="sum")
            sims /= torch.linalg.vector_norm(val, dim=1, keepdim=True).clamp(min=1e-12)
            out[start:start + len(idx)] = sims.numpy()
        return out

    def _similarities(self, pool: SparseCodes) -> np.ndarray:
        return self._cosines(pool, *self._weighted(pool, per_seed=True))

    def _score(self, pool: SparseCodes) -> np.ndarray:
        return self._cosines(pool, *self._weighted(pool)).max(axis=1)

    def _explain(self, pool: SparseCodes, rows: np.ndarray, n: int) -> list[list[tuple[str, float]]]:
        """Per row, the features whose product with the (best-matching) query adds most to the cosine."""
        if len(rows) == 0:
            return []
        query, weights = self._weighted(pool)
        sub = pool.take(rows)
        idx = torch.from_numpy(np.asarray(sub.indices, dtype=np.int64))
        val = torch.from_numpy(np.asarray(sub.values, dtype=np.float32)) * weights[idx]
        val /= val.norm(dim=1, keepdim=True).clamp(min=1e-12)
        best = torch.from_numpy(self._cosines(sub, query, weights).argmax(1))
        contrib = val * query[idx, best[:, None]]
        top = contrib.topk(min(n, contrib.shape[1]), dim=1)
        feats = idx.gather(1, top.indices)
        return [[(str(int(f)), float(c)) for f, c in zip(fr, cr) if c > 0] for fr, cr in zip(feats.tolist(), top.values.tolist())]


def _tensor(array, dtype) -> torch.Tensor:
    """A tensor over `array` without copying when it is already writable and of `dtype` (memory-mapped codes are copied)."""
    array = np.asarray(array, dtype=dtype)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def default_sae_selector(sae=None, model=None, tokenizer=None, **overrides) -> SAESelector:
    """The kit's default: mean pooling, cosine to the seed centroid, no feature weighting.

    Centroid scoring beat max-over-seeds on the pilot's codes; mean pooling is what the paper uses.
    """
    options = {"pooling": "mean", "scoring": "centroid", "weighting": "none"} | overrides
    return SAESelector(sae, model, tokenizer, **options)
