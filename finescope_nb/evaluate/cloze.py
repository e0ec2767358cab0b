"""Cloze multiple choice from held-out passages: the main metric for tiny models.

Real benchmarks (MMLU, GSM8K...) sit at chance for a model of a few million parameters, so they
cannot show what pruning costs. The cloze test can: each item is a window of a held-out document
of the domain, cut into a context and its true continuation, and three distractor continuations
of the same length taken from other held-out documents of the same domain. A model that follows
the context picks the true one; guessing gets 25%. Options share the domain's vocabulary and
style, so topic alone does not give the answer away. Items are built on the model's own tokens,
so every model sharing a tokenizer (base, pruned, recovered) sees exactly the same items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from finescope_nb.corpus import DOMAINS, load_split
from finescope_nb.errors import FinescopeError
from finescope_nb.evaluate.choice import accuracy, option_logprobs
from finescope_nb.evaluate.registry import EvalOptions, register

N_OPTIONS = 4
CONTEXT_TOKENS, CONTINUATION_TOKENS = 48, 16  # an item's window: the context and the continuation to pick


@dataclass(frozen=True)
class ClozeItem:
    context: list[int]
    options: list[list[int]]
    answer: int
    doc: int


def make_items(sequences: list[list[int]], context_tokens: int = CONTEXT_TOKENS, continuation_tokens: int = CONTINUATION_TOKENS,
               limit: int | None = None, seed: int = 0) -> list[ClozeItem]:
    """One item per long-enough document: a window at a seeded offset, three distractors from other documents."""
    need = context_tokens + continuation_tokens
    rng = np.random.default_rng(seed)
    windows = []
    for doc, seq in enumerate(sequences):
        if len(seq) >= need:
            start = int(rng.integers(0, len(seq) - need + 1))
            windows.append((doc, seq[start:start + context_tokens], seq[start + context_tokens:start + need]))
    if len(windows) < N_OPTIONS:
        raise FinescopeError(f"Only {len(windows)} held-out documents have {need} tokens, and a cloze item needs "
                             f"{N_OPTIONS} documents; use more documents or shorter context/continuation lengths.")
    chosen = range(len(windows)) if limit is None or limit >= len(windows) else sorted(rng.choice(len(windows), limit, replace=False))
    items = []
    for i in chosen:
        doc, context, truth = windows[i]
        others = rng.choice([j for j in range(len(windows)) if j != i], N_OPTIONS - 1, replace=False)
        options = [windows[j][2] for j in others]
        answer = int(rng.integers(0, N_OPTIONS))
        options.insert(answer, truth)
        items.append(ClozeItem(list(context), [list(o) for o in options], answer, doc))
    return items


def cloze_accuracy(model, items: list[ClozeItem], pad_id: int = 0, batch_size: int = 32) -> float:
    scores = option_logprobs(model, [it.context for it in items], [it.options for it in items], pad_id, batch_size)
    return accuracy(scores, [it.answer for it in items])


def domain_items(tokenizer, domain: str, split: str = "test", limit: int | None = None, seed: int = 0) -> list[ClozeItem]:
    """The cloze items of one domain's held-out split (documents tokenised without truncation)."""
    return text_items(tokenizer, [r["text"] for r in load_split(split, domains=[domain])], limit=limit, seed=seed)


def text_items(tokenizer, texts: list[str], limit: int | None = None, seed: int = 0) -> list[ClozeItem]:
    """Cloze items built from any held-out documents of one domain, such as a user's own held-out file."""
    return make_items(tokenizer(list(texts), add_special_tokens=False)["input_ids"], limit=limit, seed=seed)


@register("cloze", DOMAINS, chance=1 / N_OPTIONS,
          description="held-out passage, pick its true 16-token continuation among 4 from the same domain")
def _cloze_metric(model, tokenizer, options: EvalOptions) -> pd.DataFrame:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = []
    for domain in options.domains:
        items = domain_items(tokenizer, domain, split=options.split, limit=options.limit, seed=options.seed)
        rows.append({"domain": domain, "group": domain, "n": len(items),
                     "score": cloze_accuracy(model, items, pad, options.batch_size * 4)})
    return pd.DataFrame(rows)
