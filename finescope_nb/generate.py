"""Batched text generation with the KV cache, for showing what a model says and for distillation.

Prompts are left-padded so that every row's continuation starts at the same position, which
lets one `generate` call serve a whole batch. With `stops`, a row stops growing once its new text
holds a stop sequence, and the batch ends when every row has: the scorers cut each answer at its first
stop anyway, so what is generated past it is never read (a small model that never says EOS would
otherwise run every row to `max_new_tokens`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from finescope_nb.device import model_device
from finescope_nb.errors import FinescopeError, warn_once
from finescope_nb.lm import max_positions


@torch.no_grad()
def continue_texts(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 40,
                   do_sample: bool = False, temperature: float = 0.8, seed: int = 0,
                   batch_size: int = 16, add_special_tokens: bool = True, stops: Sequence[str] = ()) -> list[str]:
    """The model's continuation of each prompt (the new text only), reproducible from `seed`.

    `add_special_tokens=False` for prompts that already hold them (a chat template's output). `stops`: strings
    at which a row may stop; its text then runs at least to the first of them (cut it there), and up to that
    point it is what the row would have been without `stops`."""
    if not prompts:
        raise FinescopeError("No prompts to continue; pass at least one non-empty string.")
    ids = fit_prompts(model, tokenizer, prompts, max_new_tokens, add_special_tokens)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # rows of similar length batch together: less padding
    torch.manual_seed(seed)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    outputs: dict[int, str] = {}
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            enc = tokenizer.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt").to(model_device(model))
            gen = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=do_sample,
                temperature=temperature if do_sample else None, top_k=None, top_p=None,
                pad_token_id=pad, use_cache=True,
                stopping_criteria=StoppingCriteriaList([_StopOnText(tokenizer, stops, enc["input_ids"].shape[1])]) if stops else None,
            )
            new = gen[:, enc["input_ids"].shape[1]:]
            outputs.update(zip(rows, tokenizer.batch_decode(new, skip_special_tokens=True)))
    finally:
        tokenizer.padding_side = side
    return [outputs[i] for i in range(len(prompts))]


def fit_prompts(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, add_special_tokens: bool = True) -> list[list[int]]:
    """Each prompt's token ids, cut from the left (its first token kept when it is BOS) so that prompt and
    continuation fit the positions the model can embed: past them a model generates from positions it
    never saw in training. The end of a prompt is what the continuation follows, so it is what stays."""
    limit = max_positions(model)
    if limit is None:
        return tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]
    keep = limit - max_new_tokens
    if keep < 2:
        raise FinescopeError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in this model's context of "
                             f"{limit} tokens; ask for fewer new tokens.")
    out, cut = [], 0
    for ids in tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]:
        if len(ids) > keep:
            bos = tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id
            ids = ids[:1] + ids[len(ids) - keep + 1:] if bos else ids[len(ids) - keep:]
            cut += 1
        out.append(ids)
    if cut:
        warn_once(("prompts cut", limit, max_new_tokens),
                  f"{cut} of {len(prompts)} prompts are longer than this model's context of {limit} tokens less the "
                  f"{max_new_tokens} new ones and were cut from the left to their last {keep} tokens (said once per session).")
    return out


class _StopOnText(StoppingCriteria):
    """Per row: whether the new text (decoded as `continue_texts` returns it) holds any of `stops`."""

    def __init__(self, tokenizer, stops: Sequence[str], prompt_length: int):
        self.tokenizer, self.stops, self.prompt_length = tokenizer, tuple(stops), prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
        return torch.tensor([any(stop in text for stop in self.stops) for text in texts], device=input_ids.device)
