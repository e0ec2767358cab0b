"""Pruning arms side by side: criteria and calibration sources, repeated over calibration seeds.

An arm is a config plus where its calibration texts come from; each seed draws a fresh
calibration sample (and seeds the random criterion), so the spread over seeds says how much a
result depends on which documents happened to be drawn. The score is held-out perplexity per
domain from `evaluate.domain_perplexity`, the one scoring function of the kit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from finescope_nb.config import EvalConfig
from finescope_nb.evaluate import domain_perplexity, heldout_sequences
from finescope_nb.prune import PruneConfig, prune, sample_texts


@dataclass(frozen=True)
class Arm:
    """One way of pruning: a config and a function from a seed to its calibration texts."""

    config: PruneConfig
    texts: Callable[[int], list[str]]


def calibration_source(texts: Sequence[str], n: int) -> Callable[[int], list[str]]:
    """`n` texts drawn from `texts` by the seed: the curated set, a random pool sample, generic text."""
    texts = list(texts)
    return lambda seed: sample_texts(texts, n, seed)


def compare_arms(model, tokenizer, arms: dict[str, Arm], seeds: Sequence[int], eval_config: EvalConfig,
                 progress: bool = False) -> pd.DataFrame:
    """Prune with every arm and seed and score each pruned model: columns arm, seed, domain, loss, ppl, params_after."""
    sequences = heldout_sequences(tokenizer, eval_config)
    rows = []
    for name, arm in arms.items():
        for seed in seeds:
            config = arm.config.replace(seed=seed)
            pruned, plan, _ = prune(model, tokenizer, arm.texts(seed), config, progress=progress)
            ppl = domain_perplexity(pruned, tokenizer, eval_config, sequences=sequences, progress=False)
            rows += [{"arm": name, "seed": seed, "domain": r.domain, "loss": r.loss, "ppl": r.ppl, "params_after": plan.params_after}
                     for r in ppl.itertuples()]
    return pd.DataFrame(rows)
