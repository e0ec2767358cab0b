"""Multiple choice by log-likelihood: which continuation does the model find most probable?

Shared by the cloze test and by MMLU / ARC. Every option is scored as the summed log-probability
of its tokens after the context, in one padded batch per item group; the prediction is the
highest-scoring option. Summed (not length-normalised) scores are the plain "acc" of the
usual harnesses; cloze options all have the same token length, so there the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from finescope_nb.corpus import load_eval_set, mmlu_categories
from finescope_nb.evaluate.registry import EvalOptions, register

MMLU_DOMAINS = {"stem": "stem", "humanities": "humanities", "social_sciences": "social_sciences"}


@torch.no_grad()
def option_logprobs(model, contexts: Sequence[Sequence[int]], options: Sequence[Sequence[Sequence[int]]],
                    pad_id: int = 0, batch_size: int = 32) -> list[np.ndarray]:
    """Summed log-probability of each option's tokens given its context, one array per item."""
    model.eval()
    device = next(model.parameters()).device
    flat = [(i, list(c), list(o)) for i, (c, opts) in enumerate(zip(contexts, options)) for o in opts]
    scores = [np.zeros(len(opts)) for opts in options]
    slot = [j for opts in options for j in range(len(opts))]
    for start in range(0, len(flat), batch_size):
        batch = flat[start:start + batch_size]
        width = max(len(c) + len(o) for _, c, o in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (_, c, o) in enumerate(batch):
            ids[row, : len(c) + len(o)] = torch.tensor(c + o)
            mask[row, : len(c) + len(o)] = 1
        logprobs = torch.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device),
                                           use_cache=False).logits.float(), dim=-1).cpu()
        for row, (item, c, o) in enumerate(batch):
            positions = torch.arange(len(c) - 1, len(c) + len(o) - 1)
            scores[item][slot[start + row]] = float(logprobs[row, positions, torch.tensor(o)].sum())
    return scores


def accuracy(scores: Sequence[np.ndarray], answers: Sequence[int]) -> float:
    """Share of items whose highest-scoring option is the answer (ties go to the first option)."""
    return float(np.mean([int(np.argmax(s)) == a for s, a in zip(scores, answers)])) if len(answers) else float("nan")


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
        rows.append({"domain": domain_of(group), "group": group, "n": len(df), "score": accuracy(scores, list(df["answer"])),
                     "chance_items": float(np.mean([1 / len(c) for c in df["choices"]]))})
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
          description="ARC-Easy and ARC-Challenge, zero-shot, log-likelihood of each choice (a few items have 3 or 5)")
def arc(model, tokenizer, options: EvalOptions) -> pd.DataFrame:
    items = load_eval_set("arc").to_pandas()
    return _choice_rows(model, tokenizer, items, "subset", lambda _: "stem", options)
