"""Every user input of `finescope run` and `finescope curate`, read and checked before any work starts.

A typo that surfaces after minutes of evaluation, or that leaves a run folder behind (which then
refuses the corrected command as "a different run"), punishes the user for nothing. So the model
path, the domain name, the corpus, the seeds, the held-out file and M are all read here, first,
and each problem is one sentence (`FinescopeError`). What was read is returned, so the pipeline
reads nothing twice.

The held-out file is also cleaned here: a held-out document that shares a lowercased word 13-gram
with the pool (the corpus build's own test, data/dedup.py) would measure memorisation of curated
text rather than the domain, so it is dropped and counted; when more than half go, the file is
mostly inside the pool and is refused.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import cache
from typing import Sequence

import numpy as np
import pandas as pd

from finescope_nb.config import RunConfig
from finescope_nb.corpus import POOL_DOMAINS, load_seeds, load_user_corpus, load_user_seeds, user_pool
from finescope_nb.curate.workspace import pool_sample
from finescope_nb.errors import FinescopeError
from finescope_nb.hashing import text_digest
from finescope_nb.evaluate.cloze import CONTEXT_TOKENS, CONTINUATION_TOKENS, N_OPTIONS
from finescope_nb.evaluate.registry import check_metrics, covering
from finescope_nb.distill.teacher import check_mode
from finescope_nb.lm import load_tokenizer
from finescope_nb.paths import DATA_DIR

MIN_SEEDS = 3
MAX_DROPPED_SHARE = 0.5  # more held-out documents inside the pool than this share: refused
VALIDATION_EVERY = 5  # every 5th kept held-out document validates recovery; the others measure the models


@dataclass
class Heldout:
    """A user's held-out documents of the target domain, after dropping those that overlap the pool."""

    path: str
    test: list[str]  # what the models are measured on (perplexity and cloze)
    validation: list[str]  # what picks the recovered weights, never measured on
    dropped: int  # documents sharing a word 13-gram with the pool
    total: int  # documents in the file
    key: str  # content hash of the kept documents, part of the evaluation's cache key

    def summary(self) -> dict:
        return {"path": self.path, "documents": self.total, "dropped_pool_overlap": self.dropped,
                "test_documents": len(self.test), "validation_documents": len(self.validation)}


@dataclass
class RunInputs:
    pool: pd.DataFrame  # id, text and whatever else the corpus has
    seeds: list[str]
    tokenizer: object
    heldout: Heldout | None = None


def slug(name: str) -> str:
    """A folder-safe form of a domain name: lowercase letters, digits, '.', '_' and '-', at most 40 characters."""
    text = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.")[:40].strip("-.")
    return text or "domain"


def check_domain_name(domain: str, corpus: str | None, seeds: str | None, heldout: str | None) -> str:
    """An embedded domain name, or any non-blank name when the user brings corpus, seeds and held-out file."""
    if not isinstance(domain, str) or not domain.strip():
        raise FinescopeError(f"The domain name {domain!r} is blank; name the domain, e.g. --domain 'clinical notes'.")
    if domain in POOL_DOMAINS:
        return domain
    missing = [flag for flag, value in (("--corpus POOL", corpus), ("--seeds SEEDS", seeds), ("--eval HELDOUT", heldout))
               if not value]
    if missing:
        needed = missing[-1] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
        raise FinescopeError(f"Unknown domain {domain!r}: it is not one of the embedded domains ({', '.join(POOL_DOMAINS)}), "
                             f"so it needs your own data; add {needed} (a JSONL/CSV/parquet file or "
                             "datasets folder with a 'text' column for the corpus and the held-out set).")
    return domain


def read_pool(corpus: str | None, per_domain: int | None, seed: int = 0) -> pd.DataFrame:
    """The user's corpus (ids as strings), or the embedded pool, `per_domain` documents per domain (None: all)."""
    if corpus:
        return user_pool(corpus)
    return pool_sample(per_domain, seed=seed)


def read_seeds(seeds: str | None, domain: str, n: int, seed: int = 0, draw: str = "stratified") -> list[str]:
    """The user's seed file, or `n` embedded held-out seeds of `domain` (`draw`: see corpus.load_seeds)."""
    if seeds:
        return load_user_seeds(seeds)
    return list(load_seeds(domain=domain, n=n, seed=seed, draw=draw)["text"])


def check_seed_count(seeds: Sequence[str], pool_size: int, where: str = "the seeds file") -> None:
    if len(seeds) < MIN_SEEDS:
        raise FinescopeError(f"Only {len(seeds)} non-empty seed{'s' if len(seeds) != 1 else ''} in {where}; "
                             f"give at least {MIN_SEEDS} example texts of the domain, one per line.")
    if len(seeds) > pool_size:
        raise FinescopeError(f"There are {len(seeds)} seeds but only {pool_size} pool documents; seeds are a few examples "
                             "that find many documents, so use a larger corpus or fewer seeds.")


def check_m(m: int, pool_size: int) -> None:
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 1 <= m <= pool_size:
        raise FinescopeError(f"M={m!r} curated documents asked for, but the pool has {pool_size}; pass --m {pool_size} or fewer.")


def check_threshold(threshold: float, scores: np.ndarray) -> None:
    """A cut on the selector's score scale must lie inside the range the pool's scores span."""
    low, high = float(np.min(scores)), float(np.max(scores))
    if not low <= threshold <= high:
        raise FinescopeError(f"Threshold {threshold:g} is outside the pool's scores, which range from {low:.4g} to {high:.4g}; "
                             f"pass a threshold between them (the score column of curated.jsonl uses this scale).")


@cache
def _dedup():
    """data/dedup.py, the corpus build's 13-gram test: the one definition (loaded by path, data/ is no package)."""
    spec = importlib.util.spec_from_file_location("finescope_dedup", DATA_DIR / "dedup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inside_pool(texts: Sequence[str], pool: Sequence[str]) -> np.ndarray:
    """[texts] True where a text shares a lowercased word 13-gram with any pool document.

    The n-grams are data/dedup.py's (its words, its n); only the held-out texts' are kept in memory
    and the pool is streamed past them, comparing the n-grams as strings (in one process that is the
    same test as dedup's stable fingerprints, and a few times faster on a large corpus)."""
    dedup = _dedup()
    n = dedup.NGRAM
    owners: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        tokens = dedup.words(text)
        for start in range(len(tokens) - n + 1):
            owners.setdefault(" ".join(tokens[start:start + n]), []).append(i)
    hit = np.zeros(len(texts), dtype=bool)
    for doc in pool:
        tokens = dedup.words(doc)
        for start in range(len(tokens) - n + 1):
            found = owners.get(" ".join(tokens[start:start + n]))
            if found is not None:
                hit[found] = True
    return hit


def read_heldout(path: str, pool: Sequence[str], tokenizer, cloze: bool) -> Heldout:
    """The user's held-out file with pool overlaps dropped; refused when mostly inside the pool or too small."""
    texts = list(load_user_corpus(path, what="Held-out file")["text"])
    inside = inside_pool(texts, pool)
    if inside.sum() > MAX_DROPPED_SHARE * len(texts):
        raise FinescopeError(f"{int(inside.sum())} of the {len(texts)} documents of held-out file {path!r} share a 13-word "
                             "passage with the pool, so it would measure memorised text; use documents that are not in the corpus.")
    kept = [t for t, hit in zip(texts, inside) if not hit]
    validation = kept[VALIDATION_EVERY - 1::VALIDATION_EVERY]
    test = [t for i, t in enumerate(kept) if i % VALIDATION_EVERY != VALIDATION_EVERY - 1]
    if not validation:
        raise FinescopeError(f"Held-out file {path!r} keeps {len(kept)} documents outside the pool, too few to both validate "
                             f"recovery and measure it; give at least {VALIDATION_EVERY}.")
    if cloze:
        need = CONTEXT_TOKENS + CONTINUATION_TOKENS
        long_enough = sum(len(ids) >= need for ids in tokenizer(test, add_special_tokens=False)["input_ids"])
        if long_enough < N_OPTIONS:
            raise FinescopeError(f"Only {long_enough} measured documents of held-out file {path!r} have the {need} "
                                 f"tokens a cloze item needs, and cloze needs {N_OPTIONS}; add longer documents or leave "
                                 "cloze out with --metrics perplexity.")
    key = text_digest([*test, "\x01", *validation])
    return Heldout(str(path), test, validation, int(inside.sum()), len(texts), key)


def check_run_inputs(config: RunConfig, fast: bool = False) -> RunInputs:
    """Read and check everything `finescope run` takes from the user; raise one sentence on the first problem."""
    own = config.eval.heldout
    check_domain_name(config.domain, config.corpus.path, config.curation.seeds_path, own)
    if config.curation.sae_mix and not config.corpus.path:
        raise FinescopeError("--sae-mix mixes the embedded pool into the SAE's training texts from your corpus, "
                             "so it needs --corpus; add --corpus or drop --sae-mix.")
    if config.eval.metrics and own:  # the target takes perplexity and cloze; the embedded domains what covers them
        check_metrics(config.eval.metrics)
    elif config.eval.metrics:  # unknown or useless metrics fail before any work
        covering(config.eval.metrics, config.eval.domains)
    tokenizer = load_tokenizer(config.model.path)  # a missing or broken model path fails here, before the run folder
    check_mode(config.finetune.teacher_mode, tokenizer)  # a rewrite needs the model's chat template
    pool = read_pool(config.corpus.path, 24 if fast else config.corpus.max_docs_per_domain, config.corpus.seed)
    seeds = read_seeds(config.curation.seeds_path, config.domain, config.curation.n_seeds, config.curation.seed,
                       config.curation.seed_draw)
    check_seed_count(seeds, len(pool), repr(config.curation.seeds_path) if config.curation.seeds_path else "the embedded seeds")
    check_m(config.curation.m, len(pool))
    heldout = read_heldout(own, list(pool["text"]), tokenizer, "cloze" in config.eval.metrics) if own else None
    return RunInputs(pool, seeds, tokenizer, heldout)
