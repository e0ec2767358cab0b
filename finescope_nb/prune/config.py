"""What a pruning run depends on, as one hashable config (the run folder keys its result by it)."""

from __future__ import annotations

from dataclasses import dataclass

from finescope_nb.config import Config
from finescope_nb.errors import FinescopeError

SCOPES = ("per_layer", "global", "uniform")
HEAD_UNITS = ("group", "query")


@dataclass(frozen=True)
class PruneConfig(Config):
    """Structured pruning of attention heads and MLP channels, calibrated on a text list.

    `ratio` is always the share of the model's non-embedding parameters to remove (embeddings and
    the LM head cannot shrink). `first_layer` / `last_layer` bound the prunable blocks
    (inclusive; None keeps LLM-Pruner's habit of leaving the first eighth of the blocks, at least
    one, and the last block whole). `scope`: "per_layer" removes the same share of every prunable
    block, ranking its heads and channels together by importance per parameter; "global" ranks
    all units of all prunable blocks at once; "uniform" removes the same head and channel counts
    from every prunable block, so that when every block is pruned the result loads with stock
    `from_pretrained`. `head_unit`: "group" removes a KV head with its query heads, "query" removes
    the same number of query heads from every KV group and keeps the KV heads. `num_heads`
    (uniform scope only) fixes the query heads each prunable block keeps; the rest of the ratio
    then comes from MLP channels.
    """

    ratio: float = 0.3
    criterion: str = "taylor"
    scope: str = "per_layer"
    head_unit: str = "group"
    first_layer: int | None = None
    last_layer: int | None = None
    prune_attention: bool = True
    prune_mlp: bool = True
    num_heads: int | None = None
    calibration_docs: int = 64
    max_length: int = 256
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self):
        from finescope_nb.prune.importance import CRITERIA  # the registry lives beside the criteria

        if not isinstance(self.ratio, (int, float)) or not 0 <= self.ratio < 1:
            raise FinescopeError(f"The pruning ratio must be in [0, 1), got {self.ratio!r}; it is the share of non-embedding parameters to remove.")
        if self.criterion not in CRITERIA:
            raise FinescopeError(f"Unknown importance criterion {self.criterion!r}; choose one of {', '.join(CRITERIA)}.")
        if self.scope not in SCOPES:
            raise FinescopeError(f"Unknown pruning scope {self.scope!r}; choose one of {', '.join(SCOPES)}.")
        if self.head_unit not in HEAD_UNITS:
            raise FinescopeError(f"head_unit must be one of {', '.join(HEAD_UNITS)}, got {self.head_unit!r}.")
        if self.num_heads is not None and self.scope != "uniform":
            raise FinescopeError(f"num_heads={self.num_heads} needs scope='uniform' (the same head count in every block), got scope={self.scope!r}.")
        if not (self.prune_attention or self.prune_mlp):
            raise FinescopeError("prune_attention and prune_mlp are both False, so nothing can be pruned; enable at least one.")
        for name in ("calibration_docs", "max_length", "batch_size"):
            if getattr(self, name) < 1:
                raise FinescopeError(f"{name} must be at least 1, got {getattr(self, name)}.")

    def layer_range(self, num_layers: int) -> range:
        """The prunable blocks of a model with `num_layers` blocks."""
        first = max(1, num_layers // 8) if self.first_layer is None else self.first_layer
        last = num_layers - 2 if self.last_layer is None else self.last_layer
        if num_layers < 3 and self.first_layer is None and self.last_layer is None:
            first, last = 0, num_layers - 1  # too few blocks to keep any whole
        for name, value in (("first_layer", first), ("last_layer", last)):
            if not 0 <= value < num_layers:
                raise FinescopeError(f"{name}={value} is outside the model's blocks 0-{num_layers - 1}; choose a layer inside them.")
        if first > last:
            raise FinescopeError(f"first_layer={first} is after last_layer={last}; the prunable range is empty.")
        return range(first, last + 1)
