"""What one prunable unit costs in parameters, the currency of every pruning budget."""

from __future__ import annotations

from finescope_nb.adapters import get_adapter


def unit_cost(model, layer: int, kind: str) -> int:
    """Parameters (weights and biases) one unit of `kind` ("group", "query", "mlp") holds in block `layer`."""
    adapter = get_adapter(model)
    root = adapter.root(model)
    slices = {"group": adapter.head_group_slices, "query": adapter.query_head_slices, "mlp": adapter.mlp_channel_slices}[kind](model, layer, [0])
    cost = 0
    for piece in slices:
        module = root.get_submodule(piece.module)
        cost += len(piece.index) * module.weight.shape[1 - piece.weight_dim]
        if piece.side == "out" and module.bias is not None:
            cost += len(piece.index)
    return cost
