"""The selectors every SAE result is measured against, behind the same `Selector` interface.

- `RandomSelector`: the floor; its precision is the target's share of the pool.
- `HashedNgramSelector`: DSIR-style importance weights on hashed word unigrams and bigrams,
  log p_seed(b) - log p_pool(b) per bucket, averaged over a document's n-grams (the plain sum
  mostly ranks documents by length).
- `DenseSelector`: the LM's own mean-pooled hidden state at the SAE's layer, no SAE; optionally
  centred on the pool's mean, which removes the direction every document shares and was the
  strongest baseline measured before this kit.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

from finescope_nb.activations import ActivationConfig, check_layer, default_layer
from finescope_nb.curate.base import Selector, pool_texts
from finescope_nb.curate.codes import dense_embeddings
from finescope_nb.errors import FinescopeError

WORD = re.compile(r"\w+|[^\w\s]")


class RandomSelector(Selector):
    """Uniform random scores, reproducible from `seed`."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def prepare(self, docs):
        return docs if isinstance(docs, int) else len(pool_texts(docs))

    @staticmethod
    def take(prepared, rows):
        return len(rows)

    def _fit(self, seeds) -> None:
        pass

    def _score(self, pool: int) -> np.ndarray:
        return np.random.default_rng(self.seed).random(pool)


@dataclass
class HashedDocs:
    """Documents as hashed n-gram buckets in CSR layout: doc i owns buckets[indptr[i]:indptr[i+1]]."""

    texts: list[str]
    indptr: np.ndarray
    buckets: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, rows) -> "HashedDocs":
        rows = np.asarray(rows)
        parts = [self.buckets[self.indptr[i]:self.indptr[i + 1]] for i in rows]
        indptr = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        return HashedDocs([self.texts[i] for i in rows], indptr,
                          np.concatenate(parts) if parts else np.zeros(0, np.int64))


def ngrams(text: str) -> list[str]:
    """Lower-cased word (and punctuation) unigrams and bigrams."""
    words = WORD.findall(text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


class HashedNgramSelector(Selector):
    """DSIR-style: hashed unigram+bigram importance weights between seeds and pool, averaged per n-gram."""

    name = "ngram-dsir"

    def __init__(self, n_buckets: int = 2 ** 18, smoothing: float = 1.0):
        if n_buckets < 2:
            raise FinescopeError(f"n_buckets must be at least 2, got {n_buckets}; use e.g. 2**18.")
        self.n_buckets, self.smoothing = n_buckets, smoothing

    def _hash(self, gram: str) -> int:
        return zlib.crc32(gram.encode("utf-8")) % self.n_buckets

    def prepare(self, docs) -> HashedDocs:
        if isinstance(docs, HashedDocs):
            return docs
        texts = pool_texts(docs)
        lists = [[self._hash(g) for g in ngrams(t)] for t in texts]
        indptr = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
        return HashedDocs(texts, indptr, np.fromiter((b for x in lists for b in x), dtype=np.int64, count=int(indptr[-1])))

    def _distribution(self, docs: HashedDocs) -> np.ndarray:
        counts = np.bincount(docs.buckets, minlength=self.n_buckets) + self.smoothing
        return counts / counts.sum()

    def _fit(self, seeds: HashedDocs) -> None:
        self.seed_logp = np.log(self._distribution(seeds))

    def _weights(self, pool: HashedDocs) -> np.ndarray:
        return self.seed_logp - np.log(self._distribution(pool))

    def _score(self, pool: HashedDocs) -> np.ndarray:
        per_gram = self._weights(pool)[pool.buckets]
        sums = np.add.reduceat(np.append(per_gram, 0.0), pool.indptr[:-1]) if len(per_gram) else np.zeros(len(pool))
        lengths = np.diff(pool.indptr)
        return np.where(lengths > 0, sums / np.maximum(lengths, 1), 0.0)

    def _explain(self, pool: HashedDocs, rows, n):
        weights = self._weights(pool)
        out = []
        for i in rows:
            grams = sorted(set(ngrams(pool.texts[i])), key=lambda g: -weights[self._hash(g)])[:n]
            out.append([(g, float(weights[self._hash(g)])) for g in grams])
        return out


class DenseSelector(Selector):
    """Mean-pooled hidden state at `layer`, cosine to the seed centroid or max over seeds, optionally centred."""

    def __init__(self, model=None, tokenizer=None, layer: int | None = None, *, centre: bool = True,
                 scoring: str = "centroid", config: ActivationConfig = ActivationConfig()):
        if scoring not in ("centroid", "max"):
            raise FinescopeError(f"Unknown scoring {scoring!r}; choose one of centroid, max.")
        if model is not None:
            layer = default_layer(model) if layer is None else check_layer(model, layer)
        self.model, self.tokenizer, self.layer, self.centre, self.scoring, self.config = model, tokenizer, layer, centre, scoring, config
        self.name = f"dense-{'centred-' if centre else ''}{scoring}"

    def prepare(self, docs) -> np.ndarray:
        if isinstance(docs, np.ndarray):
            return docs.astype(np.float32, copy=False)
        if self.model is None or self.tokenizer is None or self.layer is None:
            raise FinescopeError("This DenseSelector has no model, tokenizer and layer to embed texts; pass them to "
                                 "DenseSelector(model, tokenizer, layer) or pass embeddings instead of texts.")
        return dense_embeddings(self.model, self.tokenizer, pool_texts(docs), self.layer, self.config)

    def _fit(self, seeds: np.ndarray) -> None:
        self.seeds = seeds

    def _unit(self, x: np.ndarray, mean: np.ndarray) -> np.ndarray:
        x = x - mean if self.centre else x
        return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)

    def _queries(self, pool: np.ndarray, per_seed: bool) -> tuple[np.ndarray, np.ndarray]:
        if pool.shape[1] != self.seeds.shape[1]:
            raise FinescopeError(f"Pool vectors have width {pool.shape[1]} but seed vectors {self.seeds.shape[1]}; "
                                 "embed both with the same model and layer.")
        mean = pool.mean(0, keepdims=True)
        queries = self._unit(self.seeds, mean)
        if not per_seed and self.scoring == "centroid":
            queries = self._unit(queries.mean(0, keepdims=True), 0)
        return self._unit(pool, mean), queries

    def _similarities(self, pool: np.ndarray) -> np.ndarray:
        docs, queries = self._queries(pool, per_seed=True)
        return docs @ queries.T

    def _score(self, pool: np.ndarray) -> np.ndarray:
        docs, queries = self._queries(pool, per_seed=False)
        return (docs @ queries.T).max(1)

    def _explain(self, pool, rows, n):
        docs, queries = self._queries(pool, per_seed=False)
        sub = docs[rows]
        best = (sub @ queries.T).argmax(1)
        contrib = sub * queries[best]
        order = np.argsort(-contrib, axis=1)[:, :n]
        return [[(f"dim {d}", float(contrib[r, d])) for d in row if contrib[r, d] > 0] for r, row in enumerate(order)]
