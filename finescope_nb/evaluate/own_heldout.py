"""The target domain measured on the user's own held-out documents, the embedded domains beside it.

A domain the kit has never seen has no embedded test split, and even an embedded name may mean
something else in the user's corpus; so with a held-out file the target's perplexity and cloze
come from that file (the same scoring functions as every other domain), while the embedded
domains are still measured, to show what specialising cost elsewhere.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from finescope_nb.config import EvalConfig
from finescope_nb.evaluate.cloze import N_OPTIONS, cloze_accuracy, text_items
from finescope_nb.evaluate.perplexity import heldout_sequences, tokenize_texts
from finescope_nb.evaluate.registry import METRICS


def embedded_part(cfg: EvalConfig, domain: str) -> EvalConfig | None:
    """`cfg` for the embedded domains other than the target, with only the metrics that cover them (None: none left)."""
    others = tuple(d for d in cfg.domains if d != domain)
    if not others:
        return None
    return cfg.replace(domains=others, metrics=tuple(m for m in cfg.metrics if set(METRICS[m].domains) & set(others)))


def sequences_with_heldout(tokenizer, cfg: EvalConfig, domain: str, texts: Sequence[str]) -> dict[str, list[list[int]]]:
    """Tokenised held-out documents: the target's from `texts` first, then the other embedded domains'."""
    limit = cfg.max_docs_per_domain
    out = {domain: tokenize_texts(tokenizer, list(texts)[:limit] if limit is not None else list(texts), cfg.max_length)}
    rest = embedded_part(cfg, domain)
    if rest is not None:
        out.update(heldout_sequences(tokenizer, rest))
    return out


def heldout_cloze(model, tokenizer, domain: str, texts: Sequence[str], cfg: EvalConfig, seed: int = 0) -> pd.DataFrame:
    """The cloze test built from the held-out documents themselves, one row in `evaluate`'s columns."""
    items = text_items(tokenizer, list(texts), limit=cfg.metric_limit, seed=seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    score = cloze_accuracy(model, items, pad, cfg.batch_size * 4)
    return pd.DataFrame([{"metric": "cloze", "domain": domain, "group": domain, "n": len(items), "score": score,
                          "chance": 1 / N_OPTIONS, "higher_is_better": True}])
