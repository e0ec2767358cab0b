"""MMLU by category and ARC: zero-shot multiple choice scored by the log-likelihood of each choice.

For a model of a few million parameters both sit at chance; they are here so the same code scores
real models, and so a run shows honestly where a tiny model has nothing to lose.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from finescope_nb.corpus import load_eval_set, mmlu_categories
from finescope_nb.evaluate.choice import accuracy, option_logprobs
from finescope_nb.evaluate.registry import EvalOptions, register

MMLU_DOMAINS = {"stem": "stem", "humanities": "humanities", "social_sciences": "social_sciences"}


def text_choice_scores(model, tokenizer, questions: Sequence[str], choices: Sequence[Sequence[str]],
                       batch_size: int = 32) -> list[np.ndarray]:
    """Zero-shot "Question: ...\\nAnswer:" prompts with each choice as a continuation (" " + choice)."""
    contexts = [tokenizer(f"Question: {q}\nAnswer:", add_special_tokens=True)["input_ids"] for q in questions]
    options = [[tokenizer(" " + c, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id] for c in cs]
               for cs in choices]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return option_logprobs(model, contexts, options, pad, batch_size)


def _take(df: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    return df if limit is None or len(df) <= limit else df.sample(limit, random_state=seed).sort_index()


def _choice_rows(model, tokenizer, items: pd.DataFrame, group_col: str, domain_of, options: EvalOptions) -> pd.DataFrame:
    rows = []
    for group, df in items.groupby(group_col, sort=True):
        df = _take(df, options.limit, options.seed)
        scores = text_choice_scores(model, tokenizer, list(df["question"]), list(df["choices"]), options.batch_size * 4)
        rows.append({"domain": domain_of(group), "group": group, "n": len(df), "score": accuracy(scores, list(df["answer"]))})
    return pd.DataFrame(rows)


@register("mmlu", ("stem", "humanities", "social_sciences"), chance=0.25,
          description="MMLU test questions by category, zero-shot, log-likelihood of each choice")
def mmlu(model, tokenizer, options: EvalOptions) -> pd.DataFrame:
    items = load_eval_set("mmlu").to_pandas()
    categories = mmlu_categories()
    items["category"] = items["subject"].map(categories)
    items = items[(items["split"] == "test") & items["category"].isin([c for c, d in MMLU_DOMAINS.items() if d in options.domains])]
    return _choice_rows(model, tokenizer, items, "category", MMLU_DOMAINS.get, options)


@register("arc", ("stem",), chance=0.25,
          description="ARC-Easy and ARC-Challenge, zero-shot, log-likelihood of each choice (chance 0.25: all but a "
                      "handful of items have four choices)")
def arc(model, tokenizer, options: EvalOptions) -> pd.DataFrame:
    items = load_eval_set("arc").to_pandas()
    return _choice_rows(model, tokenizer, items, "subset", lambda _: "stem", options)
