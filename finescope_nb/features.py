"""What each SAE feature responds to and what it does, gathered in one pass over a corpus.

Per feature: how often it fires (per token and per document), its mean and max activation, a
histogram of its non-zero activations, the contexts where it fires hardest (a token window
around the peak, with the feature's activation on every token of the window), the tokens its
decoder direction promotes and suppresses through the final norm and the unembedding (logit
effects), and, when documents carry domain labels, how its activation mass splits over domains.
These are the panels a feature card shows, and `seed_enrichment` ranks features by how much
more often they fire on a few seed documents than on the pool, which is what curation exploits.

Memory does not grow with the corpus: top contexts are merged batch by batch and everything else
is a running sum over [d_sae] or [d_sae, bins] arrays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from finescope_nb.activations import ActivationConfig, capture
from finescope_nb.artifacts import atomic_path
from finescope_nb.errors import FinescopeError
from finescope_nb.lm import get_adapter
from finescope_nb.sae.layer_sae import LayerSAE
from finescope_nb.tokens import readable_sequence, token_bytes, token_labels

__all__ = ["FeatureStats", "TokenCodes", "compute_feature_stats", "encode_text", "logit_effects",
           "seed_enrichment"]

HIST_EDGES = np.logspace(-3, 4, 57)  # log-spaced bins shared by all features: scales differ by orders of magnitude


@torch.no_grad()
def logit_effects(sae: LayerSAE, model, n: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(top ids, top values, bottom ids, bottom values), each [d_sae, n]: the direct effect of each
    decoder direction on the logits, through the final norm's scale and the unembedding.

    The norm's input-dependent rescaling is left out: it multiplies all logits of a token alike
    and does not change which tokens a feature promotes.
    """
    adapter = get_adapter(model)
    directions = sae.decoder_directions()
    norm_scale = adapter.final_norm_scale(model)
    if norm_scale is not None:
        directions = directions * norm_scale
    unembed = adapter.lm_head(model).weight.detach().float()
    tops, bottoms = [], []
    for chunk in directions.split(512):
        logits = chunk @ unembed.T
        tops.append(logits.topk(n, dim=1))
        bottoms.append((-logits).topk(n, dim=1))
    top_ids = torch.cat([t.indices for t in tops]).numpy()
    top_vals = torch.cat([t.values for t in tops]).numpy()
    bottom_ids = torch.cat([b.indices for b in bottoms]).numpy()
    bottom_vals = -torch.cat([b.values for b in bottoms]).numpy()
    return top_ids, top_vals, bottom_ids, bottom_vals


@dataclass
class FeatureStats:
    """Per-feature statistics over a corpus; arrays are indexed by feature first."""

    n_tokens: int
    n_docs: int
    density: np.ndarray  # [d_sae] fraction of tokens where the feature fires
    doc_density: np.ndarray  # [d_sae] fraction of documents where it fires at least once
    mean_activation: np.ndarray  # [d_sae] mean over the tokens where it fires
    max_activation: np.ndarray  # [d_sae]
    hist_counts: np.ndarray  # [d_sae, bins] counts of non-zero activations in HIST_EDGES bins
    top_values: np.ndarray  # [d_sae, n_top] peak activation of each top document
    top_docs: np.ndarray  # [d_sae, n_top] document index (position in the input), -1 when unused
    window_ids: np.ndarray  # [d_sae, n_top, window] token ids around the peak, -1 outside the text
    window_acts: np.ndarray  # [d_sae, n_top, window] the feature's activation on those tokens
    logit_top_ids: np.ndarray  # [d_sae, n_logits]
    logit_top_values: np.ndarray
    logit_bottom_ids: np.ndarray
    logit_bottom_values: np.ndarray
    tokens: list[str]  # readable label of every token id on its own (finescope_nb.tokens.token_labels)
    domains: list[str] = field(default_factory=list)  # domain names, when labels were given
    domain_mass: np.ndarray | None = None  # [d_sae, n_domains] fraction of activation mass per domain
    doc_ids: list[str] = field(default_factory=list)  # id of every input document
    doc_domains: list[str] = field(default_factory=list)
    token_hex: list[str | None] = field(default_factory=list)  # bytes of every token id (hex), to merge byte pieces in contexts

    @property
    def d_sae(self) -> int:
        return len(self.density)

    def table(self, enrichment: np.ndarray | None = None) -> pd.DataFrame:
        """One row per feature: density, activations, peak token, top promoted token, main domain."""
        peak_token = []
        for f in range(self.d_sae):
            ids = self.window_ids[f, 0]
            centre = ids[len(ids) // 2]
            peak_token.append(self.tokens[centre] if self.top_docs[f, 0] >= 0 and centre >= 0 else "")
        df = pd.DataFrame({
            "feature": np.arange(self.d_sae), "density": self.density, "doc_density": self.doc_density,
            "mean_activation": self.mean_activation, "max_activation": self.max_activation,
            "peak_token": peak_token, "promotes": [self.tokens[i] for i in self.logit_top_ids[:, 0]],
        })
        if self.domain_mass is not None:
            main = self.domain_mass.argmax(1)
            df["domain"] = [self.domains[i] if self.density[f] > 0 else "" for f, i in enumerate(main)]
            df["domain_share"] = self.domain_mass.max(1)
        if enrichment is not None:
            df["enrichment"] = enrichment
        return df

    def examples(self, feature: int) -> list[dict]:
        """The top contexts of one feature: tokens, activations, the peak value and the document."""
        self._check(feature)
        out = []
        for j in range(self.top_docs.shape[1]):
            doc = int(self.top_docs[feature, j])
            if doc < 0:
                break
            ids, acts = self.window_ids[feature, j], self.window_acts[feature, j]
            valid = ids >= 0
            out.append({
                "tokens": self._running_text(ids[valid]), "acts": acts[valid].tolist(),
                "peak": float(self.top_values[feature, j]), "doc": doc,
                "doc_id": self.doc_ids[doc] if self.doc_ids else str(doc),
                "domain": self.doc_domains[doc] if self.doc_domains else None,
            })
        return out

    def logits(self, feature: int) -> pd.DataFrame:
        """Top promoted and suppressed tokens of one feature, side by side."""
        self._check(feature)
        return pd.DataFrame({
            "promoted": [self.tokens[i] for i in self.logit_top_ids[feature]],
            "promoted_logit": self.logit_top_values[feature],
            "suppressed": [self.tokens[i] for i in self.logit_bottom_ids[feature]],
            "suppressed_logit": self.logit_bottom_values[feature],
        })

    def histogram(self, feature: int) -> pd.DataFrame:
        """Non-empty histogram bins of one feature's non-zero activations."""
        self._check(feature)
        counts = self.hist_counts[feature]
        nz = np.flatnonzero(counts)
        return pd.DataFrame({"low": HIST_EDGES[nz], "high": HIST_EDGES[nz + 1], "count": counts[nz]})

    def _running_text(self, ids) -> list[str]:
        """Tokens of a context as running text: byte pieces merged into their characters."""
        if not self.token_hex:  # statistics saved before token bytes were kept
            return [self.tokens[i] for i in ids]
        pieces = [bytes.fromhex(self.token_hex[i]) if self.token_hex[i] is not None else None for i in ids]
        return readable_sequence(pieces, [self.tokens[i] for i in ids])

    def _check(self, feature) -> None:
        if isinstance(feature, bool) or not isinstance(feature, (int, np.integer)) or not 0 <= feature < self.d_sae:
            raise FinescopeError(f"Feature {feature!r} does not exist; pass an int from 0 to {self.d_sae - 1}.")

    def save(self, folder: str | Path) -> Path:
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray)}
        meta = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in arrays}
        with atomic_path(folder) as tmp:
            tmp.mkdir(parents=True)
            np.savez_compressed(tmp / "arrays.npz", **arrays)
            (tmp / "meta.json").write_text(json.dumps(meta))
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> "FeatureStats":
        folder = Path(folder)
        if not (folder / "arrays.npz").is_file():
            raise FinescopeError(f"{str(folder)!r} holds no feature statistics; pass a folder written by FeatureStats.save.")
        with np.load(folder / "arrays.npz") as data:
            arrays = {k: data[k] for k in data.files}
        return cls(**arrays, **json.loads((folder / "meta.json").read_text()))


class _TopContexts:
    """The n_top documents where each feature peaks highest, with a token window around each peak."""

    def __init__(self, d_sae: int, n_top: int, window: int):
        self.half = window // 2
        width = 2 * self.half + 1
        self.values = torch.full((n_top, d_sae), -1.0)
        self.docs = torch.full((n_top, d_sae), -1, dtype=torch.long)
        self.ids = torch.full((n_top, d_sae, width), -1, dtype=torch.long)
        self.acts = torch.zeros(n_top, d_sae, width)

    def update(self, padded: torch.Tensor, input_ids: torch.Tensor, keep: torch.Tensor, doc_index: torch.Tensor) -> None:
        """padded: [batch, seq, d_sae] codes (zero at dropped positions)."""
        n_top = self.values.shape[0]
        peak, where = padded.max(dim=1)  # [batch, d_sae]: each document's peak, so top documents are distinct
        take = min(n_top, peak.shape[0])
        cand_vals, rows = peak.topk(take, dim=0)  # [take, d_sae]
        cand_vals = torch.where(cand_vals > 0, cand_vals, torch.full_like(cand_vals, -1.0))
        centre = where.gather(0, rows)
        offsets = torch.arange(-self.half, self.half + 1)
        pos = centre[..., None] + offsets  # [take, d_sae, width]
        seq = padded.shape[1]
        inside = (pos >= 0) & (pos < seq)
        pos_c = pos.clamp(0, seq - 1)
        row_grid = rows[..., None].expand_as(pos_c)
        valid = inside & keep[row_grid, pos_c]
        ids = torch.where(valid, input_ids[row_grid, pos_c], torch.full_like(pos_c, -1))
        feat = torch.arange(padded.shape[2])[None, :, None].expand_as(pos_c)
        acts = torch.where(valid, padded[row_grid, pos_c, feat], torch.zeros(()))
        all_vals = torch.cat([self.values, cand_vals])
        best_vals, order = all_vals.topk(n_top, dim=0)
        all_docs = torch.cat([self.docs, torch.where(cand_vals > 0, doc_index[rows], torch.full_like(rows, -1))])
        self.values = best_vals
        self.docs = all_docs.gather(0, order)
        index3 = order[..., None].expand(-1, -1, self.ids.shape[2])
        self.ids = torch.cat([self.ids, ids]).gather(0, index3)
        self.acts = torch.cat([self.acts, acts]).gather(0, index3)


@torch.no_grad()
def compute_feature_stats(sae: LayerSAE, model, tokenizer, texts: Sequence[str], domains: Sequence[str] | None = None,
                          doc_ids: Sequence | None = None, n_top: int = 8, window: int = 16, n_logits: int = 10,
                          config: ActivationConfig | None = None, progress: bool = True) -> FeatureStats:
    """One pass over `texts` gathering every per-feature statistic a feature card shows."""
    sae.check_model(model)
    texts = list(texts)
    for name, labels in (("domains", domains), ("doc_ids", doc_ids)):
        if labels is not None and len(labels) != len(texts):
            raise FinescopeError(f"{name} has {len(labels)} entries but there are {len(texts)} texts; pass one per text.")
    d = sae.d_sae
    domain_names = sorted(set(domains)) if domains is not None else []
    domain_of = torch.tensor([domain_names.index(x) for x in domains]) if domains is not None else None
    fires = torch.zeros(d, dtype=torch.float64)
    doc_fires = torch.zeros(d, dtype=torch.float64)
    total = torch.zeros(d, dtype=torch.float64)
    peak = torch.zeros(d)
    hist = torch.zeros(d * (len(HIST_EDGES) - 1), dtype=torch.float64)
    mass = torch.zeros(len(domain_names), d, dtype=torch.float64)
    top = _TopContexts(d, n_top, window)
    log_edges = torch.from_numpy(np.log10(HIST_EDGES[1:-1])).float()
    n_tokens = 0
    for batch in capture(model, tokenizer, texts, sae.layer, config or sae.config.capture, progress=progress):
        codes = sae.encode(batch.acts[sae.layer])
        tb = batch.tokens
        local = batch.doc_index - tb.doc_index[0]
        padded = torch.zeros(*tb.input_ids.shape, d)
        padded[local, batch.position] = codes
        active = codes > 0
        fires += active.sum(0)
        total += codes.sum(0)
        peak = torch.maximum(peak, codes.max(0).values)
        doc_fires += (padded.amax(1) > 0).sum(0)
        tok, feat = active.nonzero(as_tuple=True)
        bins = torch.bucketize(codes[tok, feat].log10(), log_edges)
        hist += torch.bincount(feat * (len(HIST_EDGES) - 1) + bins, minlength=hist.numel()).double()
        if domain_of is not None:
            mass.index_add_(0, domain_of[tb.doc_index], padded.sum(1).double())
        top.update(padded, tb.input_ids, tb.keep, tb.doc_index)
        n_tokens += len(codes)
    logit_parts = logit_effects(sae, model, n_logits)
    mass_share = None
    if domain_of is not None:
        mass_share = (mass / mass.sum(0).clamp(min=1e-12)).T.float().numpy()
    return FeatureStats(
        n_tokens=n_tokens, n_docs=len(texts), density=(fires / max(n_tokens, 1)).float().numpy(),
        doc_density=(doc_fires / len(texts)).float().numpy(),
        mean_activation=(total / fires.clamp(min=1)).float().numpy(), max_activation=peak.numpy(),
        hist_counts=hist.view(d, -1).long().numpy(), top_values=top.values.T.numpy().clip(min=0),
        top_docs=top.docs.T.numpy(), window_ids=top.ids.transpose(0, 1).numpy(),
        window_acts=top.acts.transpose(0, 1).numpy(), logit_top_ids=logit_parts[0], logit_top_values=logit_parts[1],
        logit_bottom_ids=logit_parts[2], logit_bottom_values=logit_parts[3], tokens=token_labels(tokenizer),
        domains=domain_names, domain_mass=mass_share, doc_ids=[str(x) for x in doc_ids] if doc_ids is not None else [],
        doc_domains=list(domains) if domains is not None else [],
        token_hex=[b.hex() if b is not None else None for b in token_bytes(tokenizer)],
    )


def seed_enrichment(pool: FeatureStats, seeds: FeatureStats, pseudo_docs: float = 1.0) -> np.ndarray:
    """log2 of how much more often each feature fires on seed documents than on pool documents.

    Document frequencies are smoothed with `pseudo_docs` imaginary documents on each side, so a
    feature seen in one seed out of ten is not infinitely enriched.
    """
    if pool.d_sae != seeds.d_sae:
        raise FinescopeError(f"The pool statistics have {pool.d_sae} features and the seed statistics {seeds.d_sae}; compute both with the same SAE.")
    seed_rate = (seeds.doc_density * seeds.n_docs + pseudo_docs * pool.doc_density + 1e-9) / (seeds.n_docs + pseudo_docs)
    pool_rate = (pool.doc_density * pool.n_docs + pseudo_docs * pool.doc_density + 1e-9) / (pool.n_docs + pseudo_docs)
    return np.log2(seed_rate / pool_rate)


@dataclass
class TokenCodes:
    """A text's tokens and the SAE features active on each (dense [tokens, d_sae])."""

    tokens: list[str]
    codes: np.ndarray

    def top_features(self, n: int = 3) -> list[list[tuple[int, float]]]:
        order = np.argsort(-self.codes, axis=1)[:, :n]
        return [[(int(f), float(self.codes[t, f])) for f in row if self.codes[t, f] > 0] for t, row in enumerate(order)]


@torch.no_grad()
def encode_text(sae: LayerSAE, model, tokenizer, text: str) -> TokenCodes:
    """Token-by-token feature activations of one text (the prompt box of the feature explorer)."""
    if not isinstance(text, str) or not text.strip():
        raise FinescopeError("The text is empty; type at least one word.")
    batch = next(iter(capture(model, tokenizer, [text], sae.layer, sae.config.capture, progress=False)))
    codes = sae.encode(batch.acts[sae.layer])
    pieces = token_bytes(tokenizer)
    ids = [int(i) for i in batch.token_ids]
    return TokenCodes(readable_sequence([pieces[i] for i in ids], tokenizer.convert_ids_to_tokens(ids)), codes.numpy())
