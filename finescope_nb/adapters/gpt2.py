"""GPT-2: fused Conv1D `attn.c_attn` (q|k|v), `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj`; no GQA.

Conv1D stores weights [in, out]. c_attn's outputs are [all q heads | all k heads | all v heads],
each head a contiguous block of head_dim, so head h owns three blocks. The forward splits c_attn's
output by `split_size` (its width per q/k/v) and reads `num_heads`; both are kept in sync.
GPT2Attention insists on num_heads * head_dim == hidden_size, so a model with pruned heads can
only be described by finescope_shapes.json, not by its config.
"""

import torch
from torch import nn

from .base import Adapter


class GPT2Adapter(Adapter):
    model_types = ("gpt2",)
    base = "transformer"
    layers = "h"
    token_embedding = "wte"
    position_embedding_name = "wpe"
    norm = "ln_f"
    lora_targets = ("c_attn", "c_proj", "c_fc")
    conv1d = True
    _mlp_sides = {"mlp.c_fc": "out", "mlp.c_proj": "in"}
    heads_fixed_by_config = True

    def head_dim(self, model: nn.Module) -> int:
        config = self.root(model).config
        return config.hidden_size // config.num_attention_heads

    def layer_shape(self, model: nn.Module, i: int) -> dict[str, int]:
        block = self.decoder_layers(model)[i]
        heads = block.attn.c_proj.weight.shape[0] // self.head_dim(model)
        return {"num_heads": heads, "num_kv_heads": heads, "intermediate_size": block.mlp.c_fc.weight.shape[1]}

    def _attention_map(self, model, i):
        heads, hd = self.num_heads(model, i), self.head_dim(model)
        owner = torch.arange(heads * hd) // hd
        return {"attn.c_attn": ("out", owner.repeat(3)), "attn.c_proj": ("in", owner)}

    def _projection_features(self, shape, head_dim, hidden):
        width, inter = shape["num_heads"] * head_dim, shape["intermediate_size"]
        return {
            "attn.c_attn": (hidden, 3 * width),
            "attn.c_proj": (width, hidden),
            "mlp.c_fc": (hidden, inter),
            "mlp.c_proj": (inter, hidden),
        }

    def sync_attention(self, model, i):
        attn, heads = self.decoder_layers(model)[i].attn, self.num_heads(model, i)
        attn.num_heads = heads
        attn.split_size = heads * self.head_dim(model)

    def config_for_shapes(self, config, shapes):
        if any(s != shapes[0] for s in shapes) or shapes[0]["num_heads"] != config.num_attention_heads:
            return None
        return self._updated(config, n_inner=shapes[0]["intermediate_size"])
