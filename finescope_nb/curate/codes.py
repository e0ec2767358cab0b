"""Documents as vectors: sparse pooled SAE codes and dense mean-pooled hidden states.

A pool's SAE codes come from the SAE stage's `encode_corpus` (streamed to disk, memory-mapped);
seeds are few, so `sae_codes` encodes them in memory the same way (pool over text tokens, keep
the top L entries). `SparseCodes` is one pooling of either, as [docs, L] feature indices and
values: scoring then touches only L entries per document instead of the SAE's full width.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from finescope_nb.activations import ActivationConfig, capture, check_layer, context_length, pool_per_document
from finescope_nb.errors import FinescopeError, warn_once
from finescope_nb.sae.codes import POOLINGS, PooledCodes


@dataclass
class SparseCodes:
    """One pooling of per-document SAE codes: the top L (feature, value) pairs of each document."""

    indices: np.ndarray  # [docs, L] int
    values: np.ndarray  # [docs, L] float32, zero where a document has fewer than L active features
    d_sae: int
    meta: dict | None = None  # the SAE identity of codes read from encode_corpus

    def __len__(self) -> int:
        return len(self.indices)

    def take(self, rows) -> "SparseCodes":
        rows = np.asarray(rows)
        return SparseCodes(np.asarray(self.indices[rows]), np.asarray(self.values[rows]), self.d_sae, self.meta)

    def dense(self) -> np.ndarray:
        out = np.zeros((len(self), self.d_sae), dtype=np.float32)
        np.put_along_axis(out, np.asarray(self.indices, dtype=np.int64), np.asarray(self.values, dtype=np.float32), axis=1)
        return out

    def document_frequency(self) -> np.ndarray:
        """[d_sae] fraction of documents in which each feature is among the kept, non-zero entries."""
        active = np.asarray(self.values) > 0
        counts = np.bincount(np.asarray(self.indices)[active].ravel(), minlength=self.d_sae)
        return counts / max(len(self), 1)

    @classmethod
    def from_pooled(cls, codes: PooledCodes, pooling: str = "mean") -> "SparseCodes":
        if pooling not in POOLINGS:
            raise FinescopeError(f"Unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}.")
        return cls(codes.indices[pooling], codes.values[pooling], codes.d_sae, dict(codes.meta))

    @classmethod
    def from_dense(cls, dense: np.ndarray, top_l: int) -> "SparseCodes":
        dense = torch.as_tensor(np.asarray(dense, dtype=np.float32))
        values, indices = dense.topk(min(top_l, dense.shape[1]), dim=1)
        return cls(indices.numpy().astype(np.int32), values.clamp(min=0).numpy(), dense.shape[1])


def check_sae_codes(sae, codes: SparseCodes) -> None:
    """Refuse codes made by another SAE (width, model or layer) than the one a selector uses."""
    if codes.d_sae != sae.d_sae:
        raise FinescopeError(f"These codes have {codes.d_sae} features but the SAE has {sae.d_sae}; "
                             "encode the pool with the same SAE.")
    meta = codes.meta or {}
    for key, mine in (("model_identity", sae.model_identity), ("layer", sae.layer), ("sae_config_hash", sae.config.config_hash())):
        if key in meta and meta[key] != mine:
            raise FinescopeError(f"The pool's codes come from an SAE with {key} {meta[key]!r}, not {mine!r}; "
                                 "encode the pool with the SAE you select with.")


def warn_truncated(tokenizer, texts: Sequence[str], max_length: int, what: str = "Seed") -> None:
    """Say which texts are longer than the context and will be cut (the SAE sees only their start)."""
    lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]
    long = [i for i, n in enumerate(lengths) if n > max_length]
    if long:
        shown = ", ".join(map(str, long[:10])) + (", ..." if len(long) > 10 else "")
        warn_once(("truncated", what, max_length),
                  f"{what} {shown} {'is' if len(long) == 1 else 'are'} longer than the context of {max_length} tokens "
                  f"(longest {max(lengths)}) and {'was' if len(long) == 1 else 'were'} truncated to the first "
                  f"{max_length}; raise capture max_length to use more of {'it' if len(long) == 1 else 'them'} "
                  f"(later {what.lower()}s cut to {max_length} tokens are not reported again).", stacklevel=3)


def _token_pools(model, tokenizer, texts, layer, config, encode=None, progress=False):
    """(mean, max) pooled [docs, width] vectors of each text's token activations (or their SAE codes)."""
    means, maxes = [], []
    with warnings.catch_warnings():  # warn_truncated has already named the long texts
        warnings.filterwarnings("ignore", message="Some texts are longer than the context")
        for batch in capture(model, tokenizer, texts, layer, config, progress=progress):
            acts = batch.acts[layer]
            x = encode(acts) if encode is not None else acts
            rows = len(batch.tokens.doc_index)
            mean, peak = pool_per_document(x, batch.doc_index - batch.tokens.doc_index[0], rows)
            means.append(mean)
            maxes.append(peak)
    return torch.cat(means), torch.cat(maxes)


def sae_codes(sae, model, tokenizer, texts: Sequence[str], top_l: int = 64, config: ActivationConfig | None = None,
              what: str = "Seed", progress: bool = False) -> dict[str, SparseCodes]:
    """{pooling: SparseCodes} of a few texts, encoded in memory exactly as `encode_corpus` encodes a pool.

    It holds [texts, d_sae] in memory before keeping the top L, so encode a large pool with
    `encode_corpus` instead (streamed to disk) and pass its `PooledCodes` to the selector.
    """
    sae.check_model(model)
    config = config or sae.config.capture
    warn_truncated(tokenizer, texts, context_length(model, config.max_length), what)
    mean, peak = _token_pools(model, tokenizer, list(texts), sae.layer, config, sae.encode, progress)
    meta = {"model_identity": sae.model_identity, "layer": sae.layer, "sae_config_hash": sae.config.config_hash()}
    return {p: SparseCodes(*_top(x, top_l), sae.d_sae, meta) for p, x in zip(POOLINGS, (mean, peak))}


def _top(x: torch.Tensor, top_l: int):
    values, indices = x.topk(min(top_l, x.shape[1]), dim=1)
    return indices.numpy().astype(np.int32), values.numpy().astype(np.float32)


def dense_embeddings(model, tokenizer, texts: Sequence[str], layer: int, config: ActivationConfig = ActivationConfig(),
                     what: str = "Seed", progress: bool = False) -> np.ndarray:
    """[docs, hidden] mean over text tokens of the layer's output: the dense baseline's document vector."""
    layer = check_layer(model, layer)
    warn_truncated(tokenizer, texts, context_length(model, config.max_length), what)
    return _token_pools(model, tokenizer, list(texts), layer, config, progress=progress)[0].numpy()


def feature_enrichment(seeds: SparseCodes, pool: SparseCodes, pseudo_docs: float = 1.0) -> np.ndarray:
    """[d_sae] log2 of how much more often each feature is active in a seed than in a pool document.

    Smoothed with `pseudo_docs` imaginary documents at the pool's rate on each side, so one seed
    out of ten does not make a feature infinitely enriched.
    """
    if seeds.d_sae != pool.d_sae:
        raise FinescopeError(f"Seed codes have {seeds.d_sae} features but pool codes {pool.d_sae}; encode both with the same SAE.")
    pool_rate = pool.document_frequency()
    seed_rate = (seeds.document_frequency() * len(seeds) + pseudo_docs * pool_rate + 1e-9) / (len(seeds) + pseudo_docs)
    return np.log2(seed_rate / (pool_rate + 1e-9)).astype(np.float32)


def enrichment_table(seeds: SparseCodes, pool: SparseCodes) -> pd.DataFrame:
    """Features active on the seeds, ranked by seed enrichment, with how often each is active in seeds and pool."""
    table = pd.DataFrame({"feature": np.arange(pool.d_sae), "enrichment": feature_enrichment(seeds, pool),
                          "seed_rate": seeds.document_frequency(), "pool_rate": pool.document_frequency()})
    table = table[table.seed_rate > 0]
    return table.sort_values(["enrichment", "seed_rate"], ascending=False, ignore_index=True)
