"""Gemma 3 text models (`gemma3_text`, e.g. Gemma 3 270M): the Llama layout of projections, plus what Gemma adds.

The projections are named and laid out as in Llama (q/k/v/o, gate/up/down, heads in contiguous blocks
of `head_dim`), so the unit maps, the surgery and the padding are Llama's. What differs, and why
nothing else has to change for it:

- `head_dim` is stated by the config (256 in the 270M model) and is not hidden_size / heads; Llama's
  adapter already reads a stated head_dim first, so a pruned block's width is heads * 256.
- q_norm and k_norm are RMS norms over one head's `head_dim` features, shared by every head: removing
  heads leaves them as they are, so surgery carries them through untouched.
- The 270M model has one key-value head per block. As a head *group* that is the whole attention of
  a block, which the plan never removes (it keeps the strongest unit of every block), so query heads
  are its useful head unit: the named model's defaults choose them.
- Sliding-window and global layers alternate and each kind has its own rotary table; the decoder
  model computes the masks and rotary tables and hands each block its own, so a hook on a block's
  output (capture, early exit) sees exactly the hidden state of the full forward.
- The token embedding multiplies by sqrt(hidden_size) inside its own module, so `embedding(model)(ids)`
  is what the blocks receive (the Jacobian option differentiates with respect to exactly that).
- Its RMS norms scale by (1 + weight), and the LM head may soft-cap the logits; `final_norm_scale`
  and `head_logits` say so for the code that recomputes logits from hidden states.

The kit's GGUF writer knows only llama.cpp's llama layouts, so `gguf_tensors` stays None (export
writes a transformers folder instead).
"""

import torch
from torch import nn

from .llama import LlamaAdapter


class Gemma3Adapter(LlamaAdapter):
    model_types = ("gemma3_text",)

    def gguf_tensors(self, model):
        return None

    def final_norm_scale(self, model: nn.Module) -> torch.Tensor:
        return 1.0 + self.final_norm(model).weight.detach().float()

    def head_logits(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(model)(hidden)
        cap = self.root(model).config.final_logit_softcapping
        return logits if cap is None else torch.tanh(logits / cap) * cap
