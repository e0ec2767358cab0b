"""Multiple choice by log-likelihood: which continuation does the model find most probable?

The scoring shared by the cloze test and by MMLU / ARC (choice_tasks.py). Every option is scored as the summed log-probability
of its tokens after the context, in one padded batch per item group; the prediction is the
highest-scoring option. Summed (not length-normalised) scores are the plain "acc" of the
usual harnesses; cloze options all have the same token length, so there the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from finescope_nb.logprobs import next_token_logprobs


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
        option = torch.zeros(len(batch), width - 1, dtype=torch.bool)  # the positions that predict an option token
        for row, (_, c, o) in enumerate(batch):
            ids[row, : len(c) + len(o)] = torch.tensor(c + o)
            mask[row, : len(c) + len(o)] = 1
            option[row, len(c) - 1: len(c) + len(o) - 1] = True
        # logits a slice at a time, and only for the option's tokens
        logprobs = next_token_logprobs(model, ids.to(device), mask.to(device), wanted=option).cpu()
        for row, (item, _, _) in enumerate(batch):
            scores[item][slot[start + row]] = float(logprobs[row, option[row]].sum())
    return scores


def accuracy(scores: Sequence[np.ndarray], answers: Sequence[int]) -> float:
    """Share of items whose highest-scoring option is the answer (ties go to the first option)."""
    return float(np.mean([int(np.argmax(s)) == a for s, a in zip(scores, answers)])) if len(answers) else float("nan")
