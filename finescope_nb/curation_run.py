"""`finescope curate`: the curated dataset of your corpus, without pruning or fine-tuning.

The threshold-tuning use of FineScope needs only the first half of the pipeline: an SAE trained on
the user's corpus, the pool's pooled codes, the selection from the seeds, and the export. Every
input is checked first (`finescope_nb.inputs`), the SAE and the pool's codes are cached in the
runs folder (keyed by the corpus's content), and every output is written atomically, so an
interrupted command run again resumes where it stopped. The page written beside the data
(`curation.html`) shows why the documents were chosen, and what the centred dense baseline, the
strongest selector without an SAE, would have chosen instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from finescope_nb import paths
from finescope_nb.artifacts import atomic_path, write_json_atomic, write_text_atomic
from finescope_nb.config import CurationConfig
from finescope_nb.corpus import load_user_seeds
from finescope_nb.curate import DenseSelector, Selection, default_sae_selector, dense_embeddings, export_selection
from finescope_nb.curate.workspace import cached_pool_codes
from finescope_nb.errors import FinescopeError
from finescope_nb.inputs import check_m, check_seed_count, check_threshold, read_pool
from finescope_nb.lm import load_model, load_tokenizer, model_identity
from finescope_nb.pipeline import fast_mode
from finescope_nb.sae.cache import cached_sae, corpus_sae_texts, default_sae_config

PAGE_FILE, SUMMARY_FILE = "curation.html", "curation.json"


@dataclass
class CurationResult:
    out: Path
    page: Path
    pool: pd.DataFrame
    selection: Selection  # the SAE selector's
    dense: Selection  # the centred dense baseline's, as many documents
    sae_source: str  # which texts trained the SAE

    @property
    def pool_size(self) -> int:
        return len(self.pool)

    @property
    def overlap(self) -> int:
        return len(set(self.selection.rows.tolist()) & set(self.dense.rows.tolist()))

    @property
    def cut_description(self) -> str:
        rule = self.selection.rule
        cut = float(self.selection.scores[self.selection.rows[-1]])
        return f"top {rule['m']:,}, down to {cut:.4f}" if "m" in rule else f"at least {rule['threshold']:g}"


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FinescopeError(f"Output {str(out)!r} is a file; pass a folder for the curated set, such as {str(out.with_suffix(''))!r}.")
    if out.is_dir() and any(out.iterdir()) and not (out / SUMMARY_FILE).is_file() and not (out / "dataset").exists():
        raise FinescopeError(f"Folder {str(out)!r} is not empty and holds no earlier curation; choose an empty or new folder.")


def _pool_dense(model, tokenizer, pool: pd.DataFrame, layer: int, capture, progress: bool) -> np.ndarray:
    """The pool's mean-pooled hidden states at the SAE's layer, cached beside the pool's codes."""
    digest = hashlib.sha256("\x00".join([*map(str, pool["id"]), *pool["text"]]).encode())
    digest.update(f"|{layer}|{capture.to_json()}".encode())
    path = paths.DEFAULT_RUNS_DIR / "dense" / f"{model_identity(model)}-{digest.hexdigest()[:16]}.npy"
    if path.is_file():
        return np.load(path)
    vectors = dense_embeddings(model, tokenizer, pool["text"].tolist(), layer, capture, what="Pool document", progress=progress)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, vectors)
    return vectors


def curate_corpus(corpus: str, seeds: str, out: str | Path, m: int | None = None, threshold: float | None = None,
                  model: str | None = None, sae_mix: float = 0.0, progress: bool = True) -> CurationResult:
    """Select the documents of `corpus` most like `seeds` (top `m`, or all scoring at least `threshold`) and write
    `out/dataset`, `out/curated.jsonl` and `out/curation.html`."""
    from finescope_nb.curation_page import render_curation_page  # plotly and the viz layer, only for the page

    out = Path(out)
    _check_out(out)
    if m is not None and threshold is not None:
        raise FinescopeError("Pass either --m or --threshold, not both: the cut is one rule.")
    tokenizer = load_tokenizer(model)  # a bad model path fails before any work
    pool = read_pool(corpus, None)
    seed_texts = load_user_seeds(seeds)
    check_seed_count(seed_texts, len(pool), repr(str(seeds)))
    if threshold is None:
        m = m if m is not None else (60 if fast_mode() else CurationConfig().m)
        check_m(m, len(pool))
    sae_config = default_sae_config(fast=fast_mode())
    sae_texts = corpus_sae_texts(pool["text"], sae_config, sae_mix)

    lm = load_model(model)
    sae = cached_sae(lm, tokenizer, sae_config, progress=progress, texts=sae_texts,
                     **(dict(heldout_docs=60, heldout_tokens=4_000, loss_tokens=2_000) if fast_mode()
                        else dict(heldout_docs=500, heldout_tokens=50_000, loss_tokens=20_000)))
    codes = cached_pool_codes(sae, lm, tokenizer, pool, progress=progress)
    selector = default_sae_selector(sae, lm, tokenizer, top_l=codes.top_l).fit(seed_texts)
    if threshold is not None:
        check_threshold(threshold, selector.score(codes))
    ids = pool["id"].tolist()
    selection = selector.select(codes, m=m, threshold=threshold, ids=ids)

    dense = DenseSelector(lm, tokenizer, sae.layer, centre=True, config=sae.config.capture)
    dense.fit(seed_texts)
    dense_selection = dense.select(_pool_dense(lm, tokenizer, pool, sae.layer, sae.config.capture, progress),
                                   m=len(selection), ids=ids)

    export_selection(selection, pool, out)
    result = CurationResult(out, out / PAGE_FILE, pool, selection, dense_selection, sae_texts.source)
    write_text_atomic(result.page, render_curation_page(result, sae, lm, tokenizer, seed_texts, progress=progress))
    write_json_atomic(out / SUMMARY_FILE, {
        "corpus": str(corpus), "seeds": str(seeds), "model": model, "pool_size": len(pool), "selected": len(selection),
        "rule": selection.rule, "lowest_selected_score": float(selection.scores[selection.rows[-1]]),
        "score_range": [float(selection.scores.min()), float(selection.scores.max())],
        "dense_overlap": result.overlap, "sae_trained_on": sae_texts.source,
    })
    return result
