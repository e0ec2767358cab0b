"""Llama family (llama, mistral, qwen2): separate q/k/v/o projections, GQA, SwiGLU MLP.

Heads are contiguous blocks of `head_dim` features: q_proj's outputs and o_proj's inputs are
laid out [head0, head1, ...], k_proj/v_proj's outputs [kv0, kv1, ...]. Query head h attends with
KV head h // n_rep. Qwen2 adds biases on q/k/v; `attention_bias` / `mlp_bias` configs add
others: all are handled by slicing a bias together with its output features. The attention
forward infers head counts from tensor shapes except `num_key_value_groups`, which it reads
from the module (eager and sdpa repeat_kv), so that is the one attribute to keep in sync.
"""

import torch
from torch import nn

from .base import Adapter


class LlamaAdapter(Adapter):
    model_types = ("llama", "mistral", "qwen2")
    base = "model"
    layers = "layers"
    token_embedding = "embed_tokens"
    norm = "norm"
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    has_gqa = True
    _mlp_sides = {"mlp.gate_proj": "out", "mlp.up_proj": "out", "mlp.down_proj": "in"}

    def head_dim(self, model: nn.Module) -> int:
        config = self.root(model).config
        return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    def layer_shape(self, model: nn.Module, i: int) -> dict[str, int]:
        layer, hd = self.decoder_layers(model)[i], self.head_dim(model)
        return {
            "num_heads": layer.self_attn.q_proj.weight.shape[0] // hd,
            "num_kv_heads": layer.self_attn.k_proj.weight.shape[0] // hd,
            "intermediate_size": layer.mlp.up_proj.weight.shape[0],
        }

    def _attention_map(self, model, i):
        shape, hd = self.layer_shape(model, i), self.head_dim(model)
        n_rep = shape["num_heads"] // shape["num_kv_heads"]
        q_owner = torch.arange(shape["num_heads"] * hd) // hd // n_rep
        kv_owner = torch.arange(shape["num_kv_heads"] * hd) // hd
        return {
            "self_attn.q_proj": ("out", q_owner),
            "self_attn.k_proj": ("out", kv_owner),
            "self_attn.v_proj": ("out", kv_owner),
            "self_attn.o_proj": ("in", q_owner),
        }

    def _query_map(self, model, i):
        owner = torch.arange(self.num_heads(model, i) * self.head_dim(model)) // self.head_dim(model)
        return {"self_attn.q_proj": ("out", owner), "self_attn.o_proj": ("in", owner)}

    def _projection_features(self, shape, head_dim, hidden):
        q, kv, inter = shape["num_heads"] * head_dim, shape["num_kv_heads"] * head_dim, shape["intermediate_size"]
        return {
            "self_attn.q_proj": (hidden, q),
            "self_attn.k_proj": (hidden, kv),
            "self_attn.v_proj": (hidden, kv),
            "self_attn.o_proj": (q, hidden),
            "mlp.gate_proj": (hidden, inter),
            "mlp.up_proj": (hidden, inter),
            "mlp.down_proj": (inter, hidden),
        }

    def sync_attention(self, model, i):
        shape = self.layer_shape(model, i)
        self.decoder_layers(model)[i].self_attn.num_key_value_groups = shape["num_heads"] // shape["num_kv_heads"]

    def gguf_tensors(self, model):
        """llama.cpp's names for every weight (its llama and deci architectures share them), in order.

        llama.cpp rotates consecutive pairs of a head's features, transformers rotates its two halves,
        so the query and key rows of every head are interleaved: row 2j takes row j, row 2j+1 row
        j + head_dim / 2. The LM head is written even when tied, so no loader has to know to reuse
        the embedding.
        """
        hd = self.head_dim(model)

        def pairs(weight, heads):
            return weight.reshape(heads, 2, hd // 2, -1).transpose(1, 2).reshape(weight.shape)

        yield "token_embd.weight", self.embedding(model).weight
        for i, layer in enumerate(self.decoder_layers(model)):
            shape, attn, mlp = self.layer_shape(model, i), layer.self_attn, layer.mlp
            yield f"blk.{i}.attn_norm.weight", layer.input_layernorm.weight
            yield f"blk.{i}.attn_q.weight", pairs(attn.q_proj.weight, shape["num_heads"])
            yield f"blk.{i}.attn_k.weight", pairs(attn.k_proj.weight, shape["num_kv_heads"])
            yield f"blk.{i}.attn_v.weight", attn.v_proj.weight
            yield f"blk.{i}.attn_output.weight", attn.o_proj.weight
            yield f"blk.{i}.ffn_norm.weight", layer.post_attention_layernorm.weight
            yield f"blk.{i}.ffn_gate.weight", mlp.gate_proj.weight
            yield f"blk.{i}.ffn_up.weight", mlp.up_proj.weight
            yield f"blk.{i}.ffn_down.weight", mlp.down_proj.weight
        yield "output_norm.weight", self.final_norm(model).weight
        yield "output.weight", self.lm_head(model).weight

    def config_for_shapes(self, config, shapes):
        if any(s != shapes[0] for s in shapes):
            return None
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return self._updated(
            config,
            num_attention_heads=shapes[0]["num_heads"],
            num_key_value_heads=shapes[0]["num_kv_heads"],
            intermediate_size=shapes[0]["intermediate_size"],
            head_dim=head_dim,  # explicit: hidden_size // num_attention_heads no longer gives it
        )
