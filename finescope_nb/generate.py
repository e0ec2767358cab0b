"""Batched text generation with the KV cache, for showing what a model says and for distillation.

Prompts are left-padded so that every row's continuation starts at the same position, which
lets one `generate` call serve a whole batch.
"""

from __future__ import annotations

from typing import Sequence

import torch

from finescope_nb.device import model_device
from finescope_nb.errors import FinescopeError


@torch.no_grad()
def continue_texts(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 40,
                   do_sample: bool = False, temperature: float = 0.8, seed: int = 0,
                   batch_size: int = 16, add_special_tokens: bool = True) -> list[str]:
    """The model's continuation of each prompt (the new text only), reproducible from `seed`.

    `add_special_tokens=False` for prompts that already hold them (a chat template's output)."""
    if not prompts:
        raise FinescopeError("No prompts to continue; pass at least one non-empty string.")
    torch.manual_seed(seed)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt", padding=True,
                            add_special_tokens=add_special_tokens).to(model_device(model))
            gen = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=do_sample,
                temperature=temperature if do_sample else None, top_k=None, top_p=None,
                pad_token_id=pad, use_cache=True,
            )
            new = gen[:, enc["input_ids"].shape[1]:]
            outputs.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return outputs
