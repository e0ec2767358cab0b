"""One interface for every metric: a small registry of `Metric`s and `evaluate()` over them.

A metric is a function `(model, tokenizer, options) -> DataFrame` with one row per group (a
domain, an MMLU category, an ARC subset...) and columns `domain, group, n, score`, plus any
extra columns it wants to show. `evaluate` runs the requested metrics, adds `metric`, `chance`
and `higher_is_better`, and concatenates. Metrics say which kit domains they speak to, so a
per-domain question ("how is the math model doing?") picks the right rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from finescope_nb.corpus import DOMAINS
from finescope_nb.errors import FinescopeError

COLUMNS = ("metric", "domain", "group", "n", "score", "chance", "higher_is_better")


@dataclass(frozen=True)
class EvalOptions:
    """What every metric may use: the domains asked for, an item cap for fast runs, a seed, a batch size."""

    domains: tuple[str, ...] = DOMAINS
    limit: int | None = None
    seed: int = 0
    batch_size: int = 8
    max_new_tokens: int = 128
    split: str = "test"  # the held-out split for the corpus-based metrics (perplexity, cloze)


@dataclass(frozen=True)
class Metric:
    name: str
    domains: tuple[str, ...]
    chance: float  # accuracy of guessing; 0 for generation metrics; nan where no chance level applies (perplexity)
    higher_is_better: bool
    description: str
    run: Callable[[object, object, EvalOptions], pd.DataFrame]


METRICS: dict[str, Metric] = {}


def register(name: str, domains: Sequence[str], chance: float, description: str, higher_is_better: bool = True):
    """Decorator adding a metric function to `METRICS` under `name`."""
    def wrap(fn):
        METRICS[name] = Metric(name, tuple(domains), chance, higher_is_better, description, fn)
        return fn
    return wrap


def _check_names(names: Sequence[str], known: Sequence[str], what: str) -> tuple[str, ...]:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise FinescopeError(f"Unknown {what} {unknown[0]!r}; known {what}s are {', '.join(known)}.")
    if not names:
        raise FinescopeError(f"No {what}s asked for; name at least one of {', '.join(known)}.")
    return tuple(names)


def check_metrics(names: Sequence[str]) -> tuple[str, ...]:
    return _check_names(names, list(METRICS), "metric")


def check_domains(domains: Sequence[str]) -> tuple[str, ...]:
    return _check_names(domains, DOMAINS, "domain")


def covering(metrics: Sequence[str], domains: Sequence[str]) -> list[str]:
    """The metrics (checked names) that speak to at least one of `domains`; refuses when none does."""
    names = [m for m in check_metrics(metrics) if set(METRICS[m].domains) & set(domains)]
    if not names:
        raise FinescopeError(f"None of the metrics {', '.join(metrics)} covers the domains {', '.join(domains)}; "
                             "see METRICS[name].domains for which domains each one speaks to.")
    return names


def evaluate(model, tokenizer, metrics: Sequence[str] = ("perplexity", "cloze"), domains: Sequence[str] = DOMAINS,
             limit: int | None = None, seed: int = 0, batch_size: int = 8, max_new_tokens: int = 128,
             split: str = "test") -> pd.DataFrame:
    """Every requested metric on the metrics' groups within `domains`, one row per (metric, group).

    `limit` caps the items per group (per domain for perplexity and cloze), for fast runs. A
    metric none of whose domains is asked for is skipped.
    """
    names = check_metrics(list(metrics))
    domains = check_domains(list(domains))
    if limit is not None and limit < 1:
        raise FinescopeError(f"limit={limit} leaves nothing to evaluate; pass a positive item count or None for all items.")
    frames = []
    for name in covering(names, domains):
        metric = METRICS[name]
        wanted = tuple(d for d in metric.domains if d in domains)
        df = metric.run(model, tokenizer, EvalOptions(wanted, limit, seed, batch_size, max_new_tokens, split))
        df.insert(0, "metric", name)
        df["chance"] = metric.chance
        df["higher_is_better"] = metric.higher_is_better
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    return out[list(COLUMNS) + [c for c in out.columns if c not in COLUMNS]]


def retained_accuracy(acc: float, base_acc: float, chance: float) -> float:
    """(acc - chance) / (base acc - chance): the share of the unpruned model's above-chance skill kept.

    Only meaningful when the unpruned model is above chance; otherwise it is refused."""
    if base_acc <= chance:
        raise FinescopeError(f"The unpruned model scores {base_acc:.3f}, not above chance {chance:.3f}, so 'retained' "
                             "has no meaning for this metric; use a metric the unpruned model does better than chance on.")
    return (acc - chance) / (base_acc - chance)


def retained_table(metrics: pd.DataFrame, model: str = "recovered", base: str = "base", z: float = 2.0) -> pd.DataFrame:
    """Per metric and group: base and `model` scores, whether the base model is above chance, and retained.

    "Above chance" means more than `z` standard errors of a guesser over the group's items above
    chance; only there does (score - chance) / (base - chance) measure kept skill, so elsewhere
    retained is left empty. Perplexity rows use the loss definition, exp(base loss - loss)."""
    keys = ["metric", "group"]
    wide = metrics.pivot_table(index=keys, columns="model", values="score", sort=False).reset_index()
    info = metrics.drop_duplicates(keys).set_index(keys)
    rows = []
    for _, r in wide.iterrows():
        meta = info.loc[(r["metric"], r["group"])]
        chance, n = float(meta["chance"]), int(meta["n"])
        if r["metric"] == "perplexity":
            above, kept = True, r[base] / r[model]  # perplexity ratio = exp(base loss - loss)
        else:
            margin = z * (chance * (1 - chance) / n) ** 0.5  # 0 for generation metrics: any solved item is above chance
            above = r[base] > chance + margin
            kept = (r[model] - chance) / (r[base] - chance) if above else float("nan")
        rows.append({"metric": r["metric"], "group": r["group"], "n": n, "chance": chance, base: r[base], model: r[model],
                     "above_chance": bool(above), "retained": kept})
    return pd.DataFrame(rows)
