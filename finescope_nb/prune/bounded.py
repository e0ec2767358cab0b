"""What keeps the calibration pass's memory bounded: block checkpointing and a chunked LM loss.

A plain forward keeps every block's activations for the backward and materialises logits of shape
[batch, tokens, vocabulary] (with their log-softmax and its gradient), which for a 150k-word
vocabulary outweighs the rest of the pass. Here the blocks are checkpointed (only each block's
inputs are kept; its insides are recomputed during the backward, one block at a time) and the
loss is computed from the final hidden states in slices of positions (finescope_nb.logprobs), each
slice's logits recomputed in the backward too, so at most one slice of logits is alive at any moment. Both
give the model's own loss and gradients up to float rounding. Module names come from the
architecture adapter only.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

import torch
from torch.utils.checkpoint import checkpoint, set_checkpoint_early_stop

from finescope_nb.adapters import get_adapter
from finescope_nb.logprobs import response_loss

LOSS_CHUNK_ELEMENTS = 1 << 20  # logits per loss slice (4 MiB in float32): 128 positions of an 8k vocabulary, 21 of 49k


def chunked_lm_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                    chunk_positions: int | None = None) -> torch.Tensor:
    """The causal-LM loss transformers computes for `labels` (mean next-token cross-entropy over
    positions whose label is not -100), without ever holding more than `chunk_positions` rows of
    logits (default: LOSS_CHUNK_ELEMENTS divided by the vocabulary size)."""
    size = chunk_positions or max(1, LOSS_CHUNK_ELEMENTS // get_adapter(model).lm_head(model).weight.shape[0])
    return response_loss(model, input_ids, attention_mask, labels, chunk_positions=size)


@contextmanager
def checkpointed_blocks(model):
    """Within the block, every decoder block's forward runs under non-reentrant activation
    checkpointing. The forward is wrapped on the instance (and restored afterwards) rather than
    through transformers' `gradient_checkpointing_enable`, which acts only in training mode, while
    calibration runs in eval mode so that dropout stays off."""
    blocks = list(get_adapter(model).decoder_layers(model))
    saved = [block.__dict__.get("forward") for block in blocks]  # a forward set on the instance (e.g. by accelerate hooks)
    for block in blocks:
        block.forward = partial(_checkpointed, block.forward)
    try:
        yield
    finally:
        for block, forward in zip(blocks, saved):
            if forward is None:
                del block.forward
            else:
                block.forward = forward


def _checkpointed(forward, *args, **kwargs):
    # the recomputation runs each block to its end: stopping it early, once the saved tensors are back,
    # would cut a forward short between an offloaded module's weight load and its release
    with set_checkpoint_early_stop(False):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
