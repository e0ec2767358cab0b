"""What the curation notebooks start from: model, SAE, a pool and its pooled codes, cached.

The SAE is the one an earlier notebook saved for this model (`latest_sae`) or, failing that, the
default one trained now through the SAE stage's cache. The pool's codes are written once under
runs/codes/, keyed by the SAE and the exact documents, so re-running a notebook encodes nothing.
Under FINESCOPE_FAST a balanced sample of the pool keeps each notebook to a minute or two.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from finescope_nb import distributed, paths
from finescope_nb.corpus import load_pool, load_seeds, user_pool
from finescope_nb.curate.sae_selector import default_sae_selector
from finescope_nb.hashing import text_digest
from finescope_nb.lm import load_model, load_tokenizer
from finescope_nb.sae.cache import cached_sae, corpus_sae_texts, default_sae_config, latest_sae
from finescope_nb.sae.codes import PooledCodes, encode_corpus, merge_codes

SHARD_DOCS = 2048  # pool encoding is saved every this many documents, so an interrupted run resumes


@dataclass
class Workspace:
    model: object
    tokenizer: object
    sae: object
    pool: pd.DataFrame  # id, text, domain, topic, source (a user's corpus: id, text and whatever columns it has)
    codes: PooledCodes  # rows aligned with `pool`


def pool_sample(per_domain: int | None, seed: int = 0) -> pd.DataFrame:
    """The embedded pool, or `per_domain` random documents of each domain (None: all of it)."""
    df = load_pool().to_pandas()[["id", "text", "domain", "topic", "source"]]
    if per_domain is not None:
        df = df.sample(frac=1.0, random_state=seed).groupby("domain", sort=True).head(per_domain)
    return df.reset_index(drop=True)


def cached_pool_codes(sae, model, tokenizer, pool: pd.DataFrame, top_l: int = 64, runs_dir: str | Path | None = None,
                      progress: bool = True, shard_docs: int = SHARD_DOCS) -> PooledCodes:
    """Pooled codes of `pool` under this SAE, loaded when an earlier run wrote them.

    A large pool is encoded in shards of `shard_docs` documents, each saved as it finishes: an
    interrupted encoding resumes at the first missing shard, and the shards are merged at the end.
    Under a launcher every shard is encoded by all processes together (see `encode_corpus`), the
    main process decides which shards are missing and merges them; processes holding different
    pools are refused before any encoding."""
    digest = hashlib.sha256("\n".join(map(str, pool["id"])).encode())
    digest.update(f"|{top_l}|{sae.config.capture.to_json()}".encode())
    texts_digest = text_digest(pool["text"])
    distributed.agree("pool", {"documents": len(pool), "ids": digest.hexdigest()[:12], "texts": texts_digest,
                               "sae": sae.config.config_hash(), "model": sae.model_identity})
    runs = Path(runs_dir) if runs_dir is not None else paths.DEFAULT_RUNS_DIR
    folder = runs / "codes" / f"{sae.model_identity}-{sae.config.config_hash()}-{digest.hexdigest()[:12]}"
    if distributed.broadcast((folder / "meta.json").is_file()):
        return PooledCodes.load(folder)
    texts, ids = pool["text"].tolist(), [str(i) for i in pool["id"]]
    shards = folder.with_name(folder.name + ".shards")
    parts = []
    for n, start in enumerate(range(0, len(pool), shard_docs)):
        part = shards / f"{n:05d}"
        if not distributed.broadcast((part / "meta.json").is_file()):
            encode_corpus(sae, model, tokenizer, texts[start:start + shard_docs], ids[start:start + shard_docs], part,
                          top_l=top_l, progress=progress, total=len(texts[start:start + shard_docs]))
        parts.append(part)
    with distributed.main_only("Merging the pool's code shards") as main:
        if main:
            merge_codes([PooledCodes.load(part) for part in parts], folder)
            shutil.rmtree(shards, ignore_errors=True)
    return PooledCodes.load(folder)


def open_workspace(fast: bool, per_domain: int | None = None, top_l: int = 64, progress: bool = True,
                   model_name=None, corpus: str | None = None) -> Workspace:
    """Model, tokenizer, SAE, pool and pool codes for the curation notebooks (small under `fast`).

    `model_name`: what `load_model` takes (None: the embedded tiny Llama; a named model such as "smollm2-135m").
    `corpus`: a user's corpus file or datasets folder instead of the embedded pool; the SAE is then the one
    trained on that corpus (as `finescope run` and `finescope curate` train it, so their cache is shared)."""
    model, tokenizer = load_model(model_name), load_tokenizer(model_name)
    small = dict(heldout_docs=60, heldout_tokens=4_000, loss_tokens=2_000) if fast else {}
    config = default_sae_config(fast=fast, model=model_name)
    if corpus is not None:
        pool = user_pool(corpus)
        sae = cached_sae(model, tokenizer, config, progress=progress, texts=corpus_sae_texts(pool["text"], config), **small)
        return Workspace(model, tokenizer, sae, pool, cached_pool_codes(sae, model, tokenizer, pool, top_l=top_l, progress=progress))
    sae = latest_sae(model)
    if sae is None:
        sae = cached_sae(model, tokenizer, config, progress=progress, **small)
    pool = pool_sample(per_domain if per_domain is not None else (150 if fast else None))
    codes = cached_pool_codes(sae, model, tokenizer, pool, top_l=top_l, progress=progress)
    return Workspace(model, tokenizer, sae, pool, codes)


def curate_top(sae, model, tokenizer, pool: pd.DataFrame, codes: PooledCodes, seeds, m: int) -> pd.DataFrame:
    """The top-`m` rows of `pool` under the kit's default SAE selector fitted on `seeds`, with a `score` column."""
    selector = default_sae_selector(sae, model, tokenizer, top_l=codes.top_l).fit(seeds)
    selection = selector.select(codes, m=m, ids=pool["id"].tolist())
    return pool.iloc[selection.rows].assign(score=selection.scores[selection.rows]).reset_index(drop=True)


def curate_domain(ws: Workspace, domain: str, m: int, n_seeds: int = 10, seed: int = 0,
                  draw: str = "stratified") -> pd.DataFrame:
    """FineScope's curated set for `domain`: the top `m` pool documents from `n_seeds` held-out seeds drawn with
    `seed` (`draw`: see corpus.load_seeds)."""
    seeds = load_seeds(domain=domain, n=n_seeds, seed=seed, draw=draw)["text"]
    return curate_top(ws.sae, ws.model, ws.tokenizer, ws.pool, ws.codes, seeds, m)
