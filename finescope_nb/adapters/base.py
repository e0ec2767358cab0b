"""What every architecture adapter answers, and the parts of it that do not depend on the architecture.

Later stages (activation capture, structured pruning, LoRA) must never spell a module name such as
`self_attn.q_proj`: they ask an adapter. Each adapter describes one family's layout with a few
class attributes and small per-layer maps; everything else here is shared.

Prunable units. A layer has `num_head_groups` attention units and `intermediate_size` MLP units.
An attention unit is one KV head together with the query heads that read it (GQA), or one head
where there is no GQA; removing a unit removes whole heads, so the grouped layout stays valid. An MLP
unit is one hidden channel. `head_group_slices` / `mlp_channel_slices` say, for a set of units,
which features of which projection module belong to them: that is all a surgery needs to slice
weights, and all an importance score needs to sum over a unit.

Shapes are read from the weights, never from the config, because a pruned model's config still
describes the model it was pruned from.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from huggingface_hub.errors import StrictDataclassError
from torch import nn
from transformers.pytorch_utils import Conv1D


@dataclass(frozen=True)
class ProjSlice:
    """The features of one projection module that belong to a set of prunable units.

    `side` is "out" for output features (the bias is sliced with them) and "in" for input
    features. `index` is sorted ascending, so keeping those features preserves their order.
    `weight_dim` resolves the side for the module's storage: nn.Linear stores [out, in],
    GPT-2's Conv1D stores [in, out].
    """

    module: str
    side: str
    index: torch.Tensor
    transposed: bool

    @property
    def weight_dim(self) -> int:
        return (0 if self.side == "out" else 1) ^ int(self.transposed)


def _like(module: nn.Module, in_features: int, out_features: int) -> nn.Module:
    """A new projection of the same kind, dtype and device as `module`, with other feature counts."""
    weight = module.weight
    if isinstance(module, Conv1D):
        new = Conv1D(out_features, in_features)
    else:
        new = nn.Linear(in_features, out_features, bias=module.bias is not None)
    return new.to(dtype=weight.dtype, device=weight.device)


class Adapter:
    """Base class; subclasses fill in the class attributes and the per-layer maps below."""

    model_types: tuple[str, ...] = ()
    base: str = ""  # attribute of the *ForCausalLM holding the decoder stack
    layers: str = ""  # attribute of the base model holding the nn.ModuleList of blocks
    token_embedding: str = ""
    position_embedding_name: str | None = None
    norm: str = ""
    head = "lm_head"  # attribute of the *ForCausalLM holding the output projection (all families in transformers 5)
    lora_targets: tuple[str, ...] = ()
    conv1d = False  # projections are GPT-2 Conv1D ([in, out] weights) rather than nn.Linear
    has_gqa = False
    heads_fixed_by_config = False  # the config ties head_dim to hidden_size // heads, so it cannot state fewer heads
    _mlp_sides: dict[str, str] = {}  # {path in block: "out" | "in"} for the MLP projections

    # -- modules ----------------------------------------------------------------------------------

    @staticmethod
    def root(model: nn.Module) -> nn.Module:
        """The transformers model itself, also when wrapped by peft."""
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def base_model(self, model: nn.Module) -> nn.Module:
        return getattr(self.root(model), self.base)

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return getattr(self.base_model(model), self.layers)

    def layer_hook_name(self, i: int) -> str:
        """Module name (for `get_submodule` and sae-lens) whose output is the residual after block i."""
        return f"{self.base}.{self.layers}.{i}"

    def num_layers(self, model: nn.Module) -> int:
        return len(self.decoder_layers(model))

    def hidden_size(self, model: nn.Module) -> int:
        return self.embedding(model).weight.shape[1]

    def embedding(self, model: nn.Module) -> nn.Embedding:
        return getattr(self.base_model(model), self.token_embedding)

    def position_embedding(self, model: nn.Module) -> nn.Embedding | None:
        """The learned position table, or None where positions are rotary (no parameters)."""
        if self.position_embedding_name is None:
            return None
        return getattr(self.base_model(model), self.position_embedding_name)

    def final_norm(self, model: nn.Module) -> nn.Module:
        return getattr(self.base_model(model), self.norm)

    def lm_head(self, model: nn.Module) -> nn.Module:
        return getattr(self.root(model), self.head)

    def final_norm_scale(self, model: nn.Module) -> torch.Tensor | None:
        """The per-feature scale the final norm applies after normalising (None where it has none)."""
        weight = getattr(self.final_norm(model), "weight", None)
        return None if weight is None else weight.detach().float()

    def head_logits(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """The logits the model computes from final hidden states (after the final norm): for code that
        forms them in slices instead of calling the whole model."""
        return self.lm_head(model)(hidden)

    def lora_target_modules(self, model: nn.Module) -> list[str]:
        """Leaf module names to pass to peft's LoraConfig(target_modules=...)."""
        return list(self.lora_targets)

    def non_embedding_parameters(self, model: nn.Module) -> int:
        """Parameters the pruning ratio is a share of: all of them except the token embedding, a
        learned position embedding and the LM head (tied or not), i.e. the decoder blocks plus the
        final norm. Embeddings are excluded because structured pruning cannot shrink them."""
        skip = [self.embedding(model), self.lm_head(model), self.position_embedding(model)]
        excluded = {id(p) for m in skip if m is not None for p in m.parameters()}
        return sum(p.numel() for p in self.root(model).parameters() if id(p) not in excluded)

    # -- per-layer shapes -------------------------------------------------------------------------

    def head_dim(self, model: nn.Module) -> int:
        raise NotImplementedError

    def layer_shape(self, model: nn.Module, i: int) -> dict[str, int]:
        """{"num_heads", "num_kv_heads", "intermediate_size"} of block i, read from its weights."""
        raise NotImplementedError

    def num_heads(self, model: nn.Module, i: int) -> int:
        return self.layer_shape(model, i)["num_heads"]

    def num_kv_heads(self, model: nn.Module, i: int) -> int:
        return self.layer_shape(model, i)["num_kv_heads"]

    def intermediate_size(self, model: nn.Module, i: int) -> int:
        return self.layer_shape(model, i)["intermediate_size"]

    def num_head_groups(self, model: nn.Module, i: int) -> int:
        """Prunable attention units of block i: KV heads (each with its query heads)."""
        return self.num_kv_heads(model, i)

    def query_heads_by_group(self, model: nn.Module, i: int) -> list[list[int]]:
        """For each KV head g of block i, the query heads that attend with it.

        transformers repeats each KV head n_rep times in a row (repeat_kv), so query head h reads
        KV head h // n_rep.
        """
        shape = self.layer_shape(model, i)
        n_rep = shape["num_heads"] // shape["num_kv_heads"]
        return [list(range(g * n_rep, (g + 1) * n_rep)) for g in range(shape["num_kv_heads"])]

    # -- parts description ------------------------------------------------------------------------

    def attention_modules(self, model: nn.Module, i: int) -> dict[str, nn.Module]:
        """The attention projections of block i by their leaf name."""
        layer = self.decoder_layers(model)[i]
        return {path.rsplit(".", 1)[1]: layer.get_submodule(path) for path in self._attention_map(model, i)}

    def mlp_modules(self, model: nn.Module, i: int) -> dict[str, nn.Module]:
        """The MLP projections of block i by their leaf name (inputs first, output last)."""
        layer = self.decoder_layers(model)[i]
        return {path.rsplit(".", 1)[1]: layer.get_submodule(path) for path in self._mlp_sides}

    def unit_owners(self, model: nn.Module, i: int, kind: str) -> dict[str, tuple[str, torch.Tensor]]:
        """{module name: (side, owner)} for block i, where owner[f] is the unit that feature f of
        that side belongs to; kind is "group" (head groups), "query" (query heads alone) or "mlp".
        Importance scores reduce per-feature scores into units with it (one scatter per module)."""
        if kind == "group":
            members = self._attention_map(model, i)
        elif kind == "query":
            members = self._query_map(model, i)
        elif kind == "mlp":
            size = self.intermediate_size(model, i)
            members = {path: (side, torch.arange(size)) for path, side in self._mlp_sides.items()}
        else:
            raise ValueError(f"unit kind must be 'group', 'query' or 'mlp', got {kind!r}")
        return {f"{self.layer_hook_name(i)}.{path}": member for path, member in members.items()}

    def head_group_slices(self, model: nn.Module, i: int, groups) -> list[ProjSlice]:
        """Features of every attention projection of block i that belong to the given head groups."""
        return self._slices(self.unit_owners(model, i, "group"), groups)

    def query_head_slices(self, model: nn.Module, i: int, heads) -> list[ProjSlice]:
        """Features that belong to the given query heads alone, for pruning the same number of
        query heads in every GQA group while keeping the KV heads. Without GQA a head is a group."""
        return self._slices(self.unit_owners(model, i, "query"), heads)

    def mlp_channel_slices(self, model: nn.Module, i: int, channels) -> list[ProjSlice]:
        """Features of every MLP projection of block i that belong to the given channels."""
        return self._slices(self.unit_owners(model, i, "mlp"), channels)

    def _slices(self, members: dict, units) -> list[ProjSlice]:
        units = torch.as_tensor(list(units), dtype=torch.long)
        return [ProjSlice(module=name, side=side, index=torch.isin(owner, units).nonzero().flatten(), transposed=self.conv1d)
                for name, (side, owner) in members.items()]

    def _attention_map(self, model: nn.Module, i: int) -> dict[str, tuple[str, torch.Tensor]]:
        """{path in block: (side, owner)} where owner[f] is the head group that feature f belongs to."""
        raise NotImplementedError

    def _query_map(self, model: nn.Module, i: int) -> dict[str, tuple[str, torch.Tensor]]:
        """Like `_attention_map` for single query heads; without GQA a head is its own group."""
        return self._attention_map(model, i)

    # -- building layers of other shapes ----------------------------------------------------------

    def resize_layer(self, model: nn.Module, i: int, shape: dict[str, int]) -> None:
        """Replace block i's projections by uninitialised ones of the given shape and update the
        attributes the attention forward reads; the caller then loads weights into them."""
        self.check_shape(shape, i)
        layer = self.decoder_layers(model)[i]
        sizes = self._projection_features(shape, self.head_dim(model), self.hidden_size(model))
        for path, (n_in, n_out) in sizes.items():
            parent, _, leaf = path.rpartition(".")
            owner = layer.get_submodule(parent)
            setattr(owner, leaf, _like(getattr(owner, leaf), n_in, n_out))
        self.sync_attention(model, i)

    def projection_names(self, model: nn.Module, i: int) -> list[str]:
        """Full module names of every projection of block i (attention and MLP)."""
        sizes = self._projection_features(self.layer_shape(model, i), self.head_dim(model), self.hidden_size(model))
        return [f"{self.layer_hook_name(i)}.{path}" for path in sizes]

    def check_shape(self, shape: dict[str, int], i: int) -> None:
        """Raise ValueError unless `shape` is a layer shape this architecture can run."""
        heads, kv, inter = shape["num_heads"], shape["num_kv_heads"], shape["intermediate_size"]
        if min(heads, kv, inter) < 1 or heads % kv:
            raise ValueError(f"layer {i} shape {shape} needs counts >= 1 and num_heads a multiple of num_kv_heads")
        if not self.has_gqa and heads != kv:
            raise ValueError(f"layer {i} shape {shape} needs num_kv_heads == num_heads for {self.model_types[0]}")

    def _projection_features(self, shape: dict[str, int], head_dim: int, hidden: int) -> dict[str, tuple[int, int]]:
        """{path in block: (in_features, out_features)} for a layer of the given shape."""
        raise NotImplementedError

    def sync_attention(self, model: nn.Module, i: int) -> None:
        """Set block i's attention attributes that the forward reads to match its weights.

        Call this after any change of head counts (loading a reshaped model, or pruning surgery)."""

    def pad_layer(self, model: nn.Module, i: int, shape: dict[str, int]) -> None:
        """Grow block i back to `shape` (a pruned block's original one) with zero units, so that stock
        loaders, which build every block alike from the config, can read it; what it computes is unchanged.

        The kept KV groups take the first group slots, the kept query heads the first slots of each
        group, the kept channels the first channels. An added unit's weights and biases are zero,
        and so are its columns of the output projection, so it adds exactly nothing to the residual
        (a zero query head attends uniformly, and the zero columns discard what it reads).
        """
        now = self.layer_shape(model, i)
        n_rep_now, n_rep = now["num_heads"] // now["num_kv_heads"], shape["num_heads"] // shape["num_kv_heads"]
        if any(shape[key] < now[key] for key in now) or n_rep < n_rep_now:
            raise ValueError(f"layer {i} of shape {now} cannot be padded to the smaller shape {shape}")
        if shape == now:
            return
        root = self.root(model)
        old = {name: {p: t.detach().clone() for p, t in root.get_submodule(name).named_parameters(recurse=False)}
               for name in self.projection_names(model, i)}
        self.resize_layer(model, i, shape)
        kept = {"group": range(now["num_kv_heads"]), "mlp": range(now["intermediate_size"]),
                "query": [g * n_rep + r for g in range(now["num_kv_heads"]) for r in range(n_rep_now)]}
        # query-head owners after group owners: a projection in both (q_proj, o_proj) is placed per query head
        places = {piece.module: piece for kind in ("group", "query", "mlp")
                  for piece in self._slices(self.unit_owners(model, i, kind), kept[kind])}
        with torch.no_grad():
            for name, params in old.items():
                module, piece = root.get_submodule(name), places[name]
                module.weight.zero_().index_copy_(piece.weight_dim, piece.index, params["weight"])
                if "bias" in params:
                    if piece.side == "out":
                        module.bias.zero_().index_copy_(0, piece.index, params["bias"])
                    else:
                        module.bias.copy_(params["bias"])

    def gguf_tensors(self, model: nn.Module):
        """(name, tensor) pairs in llama.cpp's GGUF layout, or None where the kit's GGUF writer does not
        know this family."""
        return None

    def config_for_shapes(self, config, shapes: list[dict[str, int]]):
        """A copy of `config` that describes `shapes`, or None when this config class cannot
        (non-uniform layers, or head counts the architecture ties to hidden_size)."""
        raise NotImplementedError

    @staticmethod
    def _updated(config, **values):
        """A copy of `config` with `values`, or None when the config class refuses them (transformers 5
        validates configs on save: Llama's, for one, wants hidden_size divisible by the head count even
        when head_dim is given)."""
        new = copy.deepcopy(config)
        for key, value in values.items():
            setattr(new, key, value)
        try:
            getattr(new, "validate", lambda: None)()
        except (ValueError, StrictDataclassError):
            return None
        return new
