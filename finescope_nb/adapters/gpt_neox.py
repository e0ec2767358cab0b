"""GPT-NeoX (Pythia): fused nn.Linear `attention.query_key_value`, `attention.dense`,
`mlp.dense_h_to_4h`, `mlp.dense_4h_to_h`; no GQA; parallel residual by default.

Unlike GPT-2, the fused outputs are interleaved per head: [h0 q, h0 k, h0 v, h1 q, ...], each
block head_dim wide (the forward views them as (-1, 3 * head_size) and chunks), so head h owns one
contiguous 3 * head_dim block. The forward infers the head count from shapes and reads no
per-layer count, so nothing needs syncing. head_size = hidden_size // num_attention_heads is
fixed by the config, so pruned heads need finescope_shapes.json.
"""

import torch
from torch import nn

from .base import Adapter


class GPTNeoXAdapter(Adapter):
    model_types = ("gpt_neox",)
    base = "gpt_neox"
    layers = "layers"
    token_embedding = "embed_in"
    norm = "final_layer_norm"
    lora_targets = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
    _mlp_sides = {"mlp.dense_h_to_4h": "out", "mlp.dense_4h_to_h": "in"}
    heads_fixed_by_config = True

    def head_dim(self, model: nn.Module) -> int:
        config = self.root(model).config
        return config.hidden_size // config.num_attention_heads

    def layer_shape(self, model: nn.Module, i: int) -> dict[str, int]:
        layer = self.decoder_layers(model)[i]
        heads = layer.attention.dense.weight.shape[1] // self.head_dim(model)
        return {"num_heads": heads, "num_kv_heads": heads, "intermediate_size": layer.mlp.dense_h_to_4h.weight.shape[0]}

    def _attention_map(self, model, i):
        heads, hd = self.num_heads(model, i), self.head_dim(model)
        return {
            "attention.query_key_value": ("out", torch.arange(3 * heads * hd) // (3 * hd)),
            "attention.dense": ("in", torch.arange(heads * hd) // hd),
        }

    def _projection_features(self, shape, head_dim, hidden):
        width, inter = shape["num_heads"] * head_dim, shape["intermediate_size"]
        return {
            "attention.query_key_value": (hidden, 3 * width),
            "attention.dense": (width, hidden),
            "mlp.dense_h_to_4h": (hidden, inter),
            "mlp.dense_4h_to_h": (inter, hidden),
        }

    def config_for_shapes(self, config, shapes):
        if any(s != shapes[0] for s in shapes) or shapes[0]["num_heads"] != config.num_attention_heads:
            return None
        return self._updated(config, intermediate_size=shapes[0]["intermediate_size"])
