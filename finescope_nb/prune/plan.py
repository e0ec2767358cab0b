"""From unit importance to the heads and channels each block keeps, for an exact parameter budget.

The plan is pure bookkeeping (no weights are touched), so a notebook slider can show the
parameter count of any ratio instantly. Units are ranked by importance per parameter, since a
head group holds far more parameters than one MLP channel. Every block keeps at least one head
unit and one channel; a ratio that would need more is refused with the numbers.

For `head_unit="query"` the removable head unit is a *slot*: the r-th least important query head
of every KV group at once, so each group keeps the same number of query heads and the grouped
layout stays valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import torch

from finescope_nb.adapters import get_adapter
from finescope_nb.errors import FinescopeError
from finescope_nb.lm import layer_shapes
from finescope_nb.config import PruneConfig
from finescope_nb.prune.importance import ImportanceScores
from finescope_nb.prune.units import unit_cost


@dataclass
class PrunePlan:
    """Which head units and MLP channels each prunable block keeps, and what that leaves."""

    head_unit: str
    keep_heads: dict[int, list[int]]  # kept head groups ("group") or query heads ("query"), sorted
    keep_channels: dict[int, list[int]]
    shapes_before: list[dict[str, int]]
    shapes_after: list[dict[str, int]]
    params_before: int  # non-embedding parameters
    params_after: int
    layer_params_before: list[int] = field(default_factory=list)
    layer_params_after: list[int] = field(default_factory=list)
    # every parameter of the model before pruning, embeddings and LM head included (a tied head counted once)
    params_total_before: int = 0

    @property
    def removed_fraction(self) -> float:
        return 1 - self.params_after / self.params_before

    @property
    def budget_share(self) -> float:
        """What share of the whole model the non-embedding budget (what a ratio is a share of) is: a ratio
        of 30% removes 30% of this share, so in a model whose vocabulary holds most parameters the whole
        model shrinks far less."""
        return self.params_before / self.params_total_before

    def table(self) -> pd.DataFrame:
        """Per block: heads, KV heads, channels and parameters before and after."""
        rows = []
        for i, (a, b) in enumerate(zip(self.shapes_before, self.shapes_after)):
            rows.append({"layer": i, "heads": a["num_heads"], "heads_after": b["num_heads"], "kv_heads": a["num_kv_heads"],
                         "kv_heads_after": b["num_kv_heads"], "channels": a["intermediate_size"],
                         "channels_after": b["intermediate_size"], "params": self.layer_params_before[i],
                         "params_after": self.layer_params_after[i]})
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        return {k: ({str(i): v for i, v in getattr(self, k).items()} if k.startswith("keep_") else getattr(self, k))
                for k in self.__dataclass_fields__}


@dataclass
class _Unit:
    layer: int
    kind: str  # "head" or "channel"
    members: list[int]  # the adapter units it removes (a group, a slot's query heads, a channel)
    score: float
    cost: int

    @property
    def value(self) -> float:
        return self.score / self.cost


def _head_units(model, layer: int, scores: torch.Tensor, head_unit: str) -> list[_Unit]:
    """Removable head units of a block, weakest first; the strongest is left out so one always stays."""
    adapter = get_adapter(model)
    if head_unit == "group":
        cost = unit_cost(model, layer, "group")
        units = [_Unit(layer, "head", [g], float(s), cost) for g, s in enumerate(scores.tolist())]
    else:
        groups = adapter.query_heads_by_group(model, layer)
        ordered = [sorted(heads, key=lambda h: (float(scores[h]), h)) for heads in groups]
        cost = unit_cost(model, layer, "query") * len(groups)
        units = [_Unit(layer, "head", sorted(g[r] for g in ordered), float(sum(scores[g[r]] for g in ordered)), cost)
                 for r in range(len(ordered[0]))]
    return sorted(units, key=lambda u: (u.score, u.members))[:-1]


def _channel_units(model, layer: int, scores: torch.Tensor) -> list[_Unit]:
    cost = unit_cost(model, layer, "mlp")
    units = [_Unit(layer, "channel", [c], float(s), cost) for c, s in enumerate(scores.tolist())]
    return sorted(units, key=lambda u: (u.score, u.members))[:-1]


def _fill(units: list[_Unit], target: float) -> list[_Unit]:
    """Units to remove, least important per parameter first, until `target` parameters are removed.

    Units that fit in what is left are taken in order of importance per parameter; if the
    target is still not reached, the smallest remaining unit closes the gap (the overshoot is
    less than one unit).
    """
    chosen, removed = [], 0
    rest = []
    for unit in sorted(units, key=lambda u: (u.value, u.layer, u.kind, u.members)):
        if removed + unit.cost <= target:
            chosen.append(unit)
            removed += unit.cost
        else:
            rest.append(unit)
    if removed < target and rest:
        chosen.append(min(rest, key=lambda u: (u.cost, u.value)))
    return chosen


def _valid_head_counts(model, layer: int, head_unit: str) -> list[int]:
    shape = get_adapter(model).layer_shape(model, layer)
    groups, n_rep = shape["num_kv_heads"], shape["num_heads"] // shape["num_kv_heads"]
    return [k * n_rep for k in range(1, groups + 1)] if head_unit == "group" else [k * groups for k in range(1, n_rep + 1)]


def _uniform(model, scores: ImportanceScores, config: PruneConfig, layers: range, target: float) -> list[_Unit] | None:
    """The same number of head units and channels removed from every prunable block (None: not reachable).

    Heads and channels give up the same share of their units; with `num_heads` fixed, the
    channels make up the rest of the budget.
    """
    heads = {i: _head_units(model, i, scores.heads[i], config.head_unit) if config.prune_attention else [] for i in layers}
    channels = {i: _channel_units(model, i, scores.channels[i]) if config.prune_mlp else [] for i in layers}
    n = len(layers)
    head_cost = sum(h[0].cost for h in heads.values() if h) / n
    channel_cost = sum(c[0].cost for c in channels.values() if c) / n
    max_h, max_c = min(map(len, heads.values())), min(map(len, channels.values()))
    if config.num_heads is not None:
        for i in layers:
            valid = _valid_head_counts(model, i, config.head_unit)
            if config.num_heads not in valid:
                shape = get_adapter(model).layer_shape(model, i)
                only = (", and its only KV head is never removed: use head_unit='query' to remove query heads"
                        if shape["num_kv_heads"] == 1 and config.head_unit == "group" else "")
                raise FinescopeError(f"num_heads={config.num_heads} breaks grouped-query attention in layer {i} "
                                     f"({shape['num_heads']} query heads over {shape['num_kv_heads']} KV heads, "
                                     f"head_unit={config.head_unit!r}{only}); valid counts are {', '.join(map(str, valid))}.")
        valid = _valid_head_counts(model, layers[0], config.head_unit)
        h = len(valid) - 1 - valid.index(config.num_heads)
        if h and not config.prune_attention:
            raise FinescopeError(f"num_heads={config.num_heads} removes heads but prune_attention is False; enable it or drop num_heads.")
        options = [h]
    elif head_cost and channel_cost:
        share = target / sum(u.cost for i in layers for u in heads[i] + channels[i])
        options = range(min(max_h, round(share * (max_h + 1))), max_h + 1)
    else:
        options = [min(max_h + 1, math.ceil(target / n / head_cost))] if head_cost else [0]
    for h in options:
        left = target - n * h * head_cost
        c = max(0, math.ceil(left / n / channel_cost)) if channel_cost else (0 if left <= 0 else max_c + 1)
        if h <= max_h and c <= max_c:
            return [u for i in layers for u in heads[i][:h] + channels[i][:c]]
    return None


def plan_pruning(model, scores: ImportanceScores, config: PruneConfig = PruneConfig()) -> PrunePlan:
    """Choose the units to remove so that `config.ratio` of the non-embedding parameters go."""
    adapter = get_adapter(model)
    layers = config.layer_range(adapter.num_layers(model))
    missing = [i for i in layers if i not in scores.heads or i not in scores.channels]
    if missing or scores.head_unit != config.head_unit:
        raise FinescopeError(f"The importance scores cover layers {sorted(scores.heads)} with head_unit={scores.head_unit!r}, "
                             f"but the plan needs layers {layers.start}-{layers.stop - 1} with head_unit={config.head_unit!r}; "
                             "recompute importance with the same config.")
    before = adapter.non_embedding_parameters(model)
    target = config.ratio * before
    layer_params = [sum(p.numel() for p in block.parameters()) for block in adapter.decoder_layers(model)]

    def candidates(i):
        return ((_head_units(model, i, scores.heads[i], config.head_unit) if config.prune_attention else [])
                + (_channel_units(model, i, scores.channels[i]) if config.prune_mlp else []))

    removed: list[_Unit] | None = []
    if config.scope == "uniform" and (target > 0 or config.num_heads is not None):
        removed = _uniform(model, scores, config, layers, target)
    elif target > 0 and config.scope == "global":
        pool = [u for i in layers for u in candidates(i)]
        removed = _fill(pool, target) if sum(u.cost for u in pool) >= target else None
    elif target > 0:
        share = target / sum(layer_params[i] for i in layers)
        for i in layers:
            pool = candidates(i)
            if sum(u.cost for u in pool) < share * layer_params[i]:
                removed = None
                break
            removed += _fill(pool, share * layer_params[i])
    if removed is None:
        removable = sum(u.cost for i in layers for u in candidates(i))
        raise FinescopeError(f"Pruning ratio {config.ratio} would leave a block of layers {layers.start}-{layers.stop - 1} with no head "
                             f"or no channel (scope {config.scope!r}: those blocks can give up at most {removable:,} of the model's "
                             f"{before:,} non-embedding parameters, {removable / before:.1%}); lower the ratio or widen the layer range.")

    shapes = layer_shapes(model)
    keep_heads, keep_channels, after_shapes = {}, {}, [dict(s) for s in shapes]
    after_params = list(layer_params)
    for i in layers:
        gone_heads = {m for u in removed if u.layer == i and u.kind == "head" for m in u.members}
        gone_channels = {m for u in removed if u.layer == i and u.kind == "channel" for m in u.members}
        if gone_channels and config.channel_multiple > 1:
            gone_channels = _round_kept(scores.channels[i], gone_channels, config.channel_multiple)
        n_heads_units = shapes[i]["num_kv_heads"] if config.head_unit == "group" else shapes[i]["num_heads"]
        keep_heads[i] = [h for h in range(n_heads_units) if h not in gone_heads]
        keep_channels[i] = [c for c in range(shapes[i]["intermediate_size"]) if c not in gone_channels]
        n_rep = shapes[i]["num_heads"] // shapes[i]["num_kv_heads"]
        if config.head_unit == "group":
            after_shapes[i].update(num_heads=len(keep_heads[i]) * n_rep, num_kv_heads=len(keep_heads[i]))
        else:
            after_shapes[i].update(num_heads=len(keep_heads[i]))
        after_shapes[i]["intermediate_size"] = len(keep_channels[i])
        after_params[i] -= sum(u.cost for u in removed if u.layer == i and u.kind == "head")
        after_params[i] -= len(gone_channels) * unit_cost(model, i, "mlp")
    return PrunePlan(config.head_unit, keep_heads, keep_channels, shapes, after_shapes, before,
                     before - sum(a - b for a, b in zip(layer_params, after_params)), layer_params, after_params,
                     sum(p.numel() for p in adapter.root(model).parameters()))


def _round_kept(scores: torch.Tensor, gone: set[int], multiple: int) -> set[int]:
    """The removed channels after rounding the kept count to the nearest multiple (at least one multiple, at
    most every channel): the most important removed channels come back, or the least important kept ones go."""
    size = len(scores)
    kept = size - len(gone)
    target = min(size, max(multiple, round(kept / multiple) * multiple))
    order = sorted(range(size), key=lambda c: (-float(scores[c]), c))  # most important first
    return set(order[target:])
