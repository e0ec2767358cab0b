"""How good a selection is, where the pool carries labels: precision@M, recall@M and AUROC.

FineScope's own setting has no labels; the embedded pool has domain and topic labels, so every
selector can be measured, and measured over several random draws of the seeds, because with ten
seeds one lucky or unlucky draw moves precision by more than the gap between methods.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from tqdm.auto import tqdm

from finescope_nb.curate.base import Selector, top_rows
from finescope_nb.errors import FinescopeError


def _relevant(relevant) -> np.ndarray:
    relevant = np.asarray(relevant, dtype=bool)
    if not relevant.any():
        raise FinescopeError("No document of the pool belongs to the target; check the target name against the pool's labels.")
    return relevant


def precision_at_m(scores, relevant, m: int) -> float:
    """Share of the `m` best-scored documents that belong to the target."""
    return float(_relevant(relevant)[top_rows(np.asarray(scores), m)].mean())


def recall_at_m(scores, relevant, m: int) -> float:
    """Share of the target's documents that are among the `m` best-scored."""
    relevant = _relevant(relevant)
    return float(relevant[top_rows(np.asarray(scores), m)].sum() / relevant.sum())


def auroc(scores, relevant) -> float:
    """Probability that a random target document outscores a random other one (ties count half)."""
    relevant = _relevant(relevant)
    if relevant.all():
        raise FinescopeError("Every document of the pool belongs to the target, so AUROC is undefined; add other documents.")
    ranks = pd.Series(np.asarray(scores, dtype=np.float64)).rank(method="average").to_numpy()
    n_pos, n_neg = relevant.sum(), (~relevant).sum()
    return float((ranks[relevant].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def cut_metrics(scores, relevant, threshold: float) -> dict:
    """Count, precision and recall of everything scoring at least `threshold` (the ThresholdTuner's readout)."""
    chosen = np.asarray(scores) >= threshold
    hits = int((chosen & relevant).sum())
    count = int(chosen.sum())
    return {"count": count, "precision": hits / count if count else float("nan"), "recall": hits / max(int(relevant.sum()), 1)}


def evaluate_selectors(selectors: Mapping[str, Selector], prepared: Mapping[str, object], labels: Sequence[str],
                       targets: Sequence[str], seeds_for: Callable[[str, int], object], m: int, draws: int = 5,
                       candidates: Callable[[str], np.ndarray] | None = None, progress: bool = True) -> pd.DataFrame:
    """One row per (selector, target, draw): precision@m, recall@m and AUROC.

    `prepared[name]` is the pool already in selector `name`'s representation (`selector.prepare(pool)`),
    so the pool is embedded once. `seeds_for(target, draw)` returns that draw's seeds (texts, or
    anything the selectors' `prepare` accepts: a dict keyed by selector name is split per selector).
    `candidates(target)`, when given, restricts retrieval to those pool rows (e.g. the target
    topic's own domain).
    """
    labels = np.asarray(labels)
    rows = []
    jobs = [(t, d) for t in targets for d in range(draws)]
    for target, draw in tqdm(jobs, desc="seed draws", disable=not progress):
        keep = candidates(target) if candidates is not None else np.arange(len(labels))
        relevant = labels[keep] == target
        seeds = seeds_for(target, draw)
        for name, selector in selectors.items():
            own = seeds[name] if isinstance(seeds, Mapping) else seeds
            selector.fit(own)
            pool = prepared[name] if candidates is None else selector.take(prepared[name], keep)
            scores = selector.score(pool)
            rows.append({"selector": name, "target": target, "draw": draw, "pool": len(keep), "relevant": int(relevant.sum()),
                         "precision": precision_at_m(scores, relevant, m), "recall": recall_at_m(scores, relevant, m),
                         "auroc": auroc(scores, relevant)})
    return pd.DataFrame(rows)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over draws of every metric, per selector and target."""
    out = results.groupby(["selector", "target"], sort=False)[["precision", "recall", "auroc"]].agg(["mean", "std"])
    out.columns = [f"{metric}_{stat}" for metric, stat in out.columns]
    return out.reset_index()


def topic_mix(curated_topics: Sequence[str], seed_topics: Sequence[str]) -> pd.DataFrame:
    """Per topic: how many seeds and how many curated documents carry it, and its share of the curated set.

    With labelled topics this shows what the seeds steered the selection to: ten seeds that all come
    from one kind of document curate that kind, whatever the domain holds besides."""
    curated = pd.Series(list(curated_topics), dtype=object).value_counts()
    seeds = pd.Series(list(seed_topics), dtype=object).value_counts()
    mix = pd.DataFrame({"seeds": seeds, "curated": curated}).fillna(0).astype(int)
    mix["curated_share"] = (mix.curated / max(int(mix.curated.sum()), 1)).round(3)
    return mix.rename_axis("topic").reset_index().sort_values(["curated", "seeds"], ascending=False, ignore_index=True)
