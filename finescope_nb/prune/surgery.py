"""Physically remove the planned heads and channels: smaller weight matrices, not masks.

For each pruned block the kept rows/columns of every projection are copied out (the adapter's
slices say which), the block's projections are rebuilt at the new shape (`resize_layer`, which
also syncs the attention attributes the forward reads), and the kept weights are loaded into
them. Afterwards the parameter count is checked against the plan, so the report can never
disagree with the model.
"""

from __future__ import annotations

import copy

import torch

from finescope_nb.adapters import get_adapter
from finescope_nb.errors import FinescopeError
from finescope_nb.lm import layer_shapes
from finescope_nb.prune.plan import PrunePlan


def apply_plan(model, plan: PrunePlan):
    """The pruned model (a copy; `model` is left as it was), with exactly `plan.params_after` non-embedding parameters."""
    adapter = get_adapter(model)
    if layer_shapes(model) != plan.shapes_before:
        raise FinescopeError("This plan was made for a model of other layer shapes; plan again on this model.")
    emptied = [i for i, kept in plan.keep_heads.items() if not kept]
    if emptied:
        i, groups = emptied[0], plan.shapes_before[emptied[0]]["num_kv_heads"]
        what = "its only key-value group" if groups == 1 else f"all {groups} of its key-value groups"
        raise FinescopeError(f"This plan removes every attention head of block {i} ({what}), which would leave the block "
                             "without attention; keep at least one head unit per block, or prune query heads within the "
                             "group with head_unit='query'.")
    pruned = copy.deepcopy(model)
    root = adapter.root(pruned)
    slice_heads = adapter.head_group_slices if plan.head_unit == "group" else adapter.query_head_slices
    with torch.no_grad():
        for i in plan.keep_heads:
            if plan.shapes_after[i] == plan.shapes_before[i]:
                continue
            kept = {name: {p: t.detach().clone() for p, t in root.get_submodule(name).named_parameters(recurse=False)}
                    for name in adapter.projection_names(pruned, i)}
            for piece in slice_heads(pruned, i, plan.keep_heads[i]) + adapter.mlp_channel_slices(pruned, i, plan.keep_channels[i]):
                params = kept[piece.module]
                params["weight"] = params["weight"].index_select(piece.weight_dim, piece.index)
                if piece.side == "out" and "bias" in params:
                    params["bias"] = params["bias"].index_select(0, piece.index)
            adapter.resize_layer(pruned, i, plan.shapes_after[i])
            for name, params in kept.items():
                module = root.get_submodule(name)
                for p, value in params.items():
                    getattr(module, p).copy_(value)
    after = adapter.non_embedding_parameters(pruned)
    if after != plan.params_after or layer_shapes(pruned) != plan.shapes_after:
        raise FinescopeError(f"Surgery left {after:,} non-embedding parameters but the plan says {plan.params_after:,}; "
                             "this is a bug in the adapter for this architecture, please report it.")
    return pruned
