"""Importance criteria: one small class per criterion behind the `Importance` interface.

A criterion scores every weight (and bias) of a projection; a unit's importance (a head group,
a query head or an MLP channel) is the sum over the features it owns, in every projection that
holds them, found through the adapter's `unit_owners`. Summing per element and then per unit is
what makes heads and channels comparable: both are estimates of what removing those weights
costs (Taylor) or of how much signal they carry (magnitude, activation-aware), so dividing by
a unit's parameter count gives importance per parameter for ranking across unit kinds.

A criterion names the calibration sums it reads (`needs`: "input_sq" or one of `calibration.GRADIENT_STATISTICS`), so the
calibration pass gathers nothing else; scores are formed from those sums only at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.pytorch_utils import Conv1D

from finescope_nb.adapters import get_adapter
from finescope_nb.prune.calibration import CalibrationStats, check_texts, collect
from finescope_nb.config import PruneConfig
from finescope_nb.device import parameter_values
from finescope_nb.prune.units import unit_cost


class Importance:
    """A pruning criterion: per-element scores of one projection from calibration statistics."""

    name = ""
    needs: frozenset[str] = frozenset()  # calibration sums the scores are formed from

    def element_scores(self, name: str, module, stats: CalibrationStats) -> dict[str, torch.Tensor]:
        """{"weight": scores shaped like the weight, "bias": scores shaped like the bias (optional)}."""
        raise NotImplementedError

    def feature_scores(self, name: str, module, dim: int, with_bias: bool, stats: CalibrationStats) -> torch.Tensor:
        """One score per index of the weight's dimension `dim`: element scores summed over the other
        dimension, plus the bias's where the features are outputs (`with_bias`)."""
        scores = self.element_scores(name, module, stats)
        per_feature = scores["weight"].float().sum(dim=1 - dim)
        if with_bias and scores.get("bias") is not None:
            per_feature = per_feature + scores["bias"].float()
        return per_feature

    def unit_scores(self, model, layer: int, kind: str, stats: CalibrationStats, generator: torch.Generator) -> torch.Tensor:
        """One score per unit of `kind` in block `layer`: element scores summed over each unit's features."""
        adapter = get_adapter(model)
        root = adapter.root(model)
        total = None
        for name, (side, owner) in adapter.unit_owners(model, layer, kind).items():
            feature_dim = (0 if side == "out" else 1) ^ int(adapter.conv1d)
            per_feature = self.feature_scores(name, root.get_submodule(name), feature_dim, side == "out", stats)
            units = torch.zeros(int(owner.max()) + 1).index_add_(0, owner, per_feature.cpu())  # scores live on the CPU
            total = units if total is None else total + units
        return total


class Taylor(Importance):
    """First-order Taylor |w * dL/dw|: the loss change of zeroing a weight, to first order (LLM-Pruner's default)."""

    name = "taylor"
    needs = frozenset({"grad"})

    def element_scores(self, name, module, stats):
        return {p: (w.float() * stats.grad[name][p].to(w.device)).abs() for p, w in parameter_values(module).items()}


class SecondOrderTaylor(Importance):
    """|w*g - 0.5*w^2*F|: Taylor with the diagonal Hessian approximated by the Fisher, F = sum of squared batch gradients."""

    name = "taylor2"
    needs = frozenset({"grad", "grad_sq"})

    def element_scores(self, name, module, stats):
        out = {}
        for p, w in parameter_values(module).items():
            w = w.float()
            out[p] = (w * stats.grad[name][p].to(w.device) - 0.5 * w * w * stats.grad_sq[name][p].to(w.device)).abs()
        return out


class TaylorPerBatch(Importance):
    """Sum over calibration batches of |w * g_b|: first-order Taylor scored batch by batch.

    The gradient of each batch is folded into one number per feature (|w * g| summed over the
    other dimension) as soon as it exists, so the state is per unit rather than per weight, which
    is what lets a large model be scored in bounded memory. It is not the same estimate as `taylor`,
    |w * sum_b g_b|: gradients that change sign between batches cancel there and add up here.
    """

    name = "taylor_per_batch"
    needs = frozenset({"batch_taylor"})

    def feature_scores(self, name, module, dim, with_bias, stats):
        sums = stats.batch_taylor[name]
        per_feature = sums[f"weight.{dim}"]
        return per_feature + sums["bias"] if with_bias and "bias" in sums else per_feature


class Magnitude(Importance):
    """|w|: no data at all, the baseline every data-driven criterion must beat."""

    name = "magnitude"

    def element_scores(self, name, module, stats):
        return {p: w.float().abs() for p, w in parameter_values(module).items()}


class ActivationAware(Importance):
    """Wanda-style |W_ij| * ||X_j||: a weight matters as much as the inputs it multiplies are large."""

    name = "activation"
    needs = frozenset({"input_sq"})

    def element_scores(self, name, module, stats):
        weight = parameter_values(module)["weight"].float().abs()
        norms = stats.input_sq[name].sqrt().to(weight.device)
        in_dim = 0 if isinstance(module, Conv1D) else 1  # Conv1D stores [in, out], nn.Linear [out, in]
        shape = [1, 1]
        shape[in_dim] = -1
        return {"weight": weight * norms.view(shape)}


class RandomImportance(Importance):
    """Random scores from the config's seed: what any criterion must beat to mean something.

    A unit's score is a uniform draw times its parameter count, so importance per parameter (what
    the plan ranks by) is uniform and heads are not removed first merely for being large.
    """

    name = "random"

    def unit_scores(self, model, layer, kind, stats, generator):
        owners = next(iter(get_adapter(model).unit_owners(model, layer, kind).values()))[1]
        return torch.rand(int(owners.max()) + 1, generator=generator) * unit_cost(model, layer, kind)


CRITERIA: dict[str, type[Importance]] = {c.name: c for c in (Taylor, SecondOrderTaylor, TaylorPerBatch, Magnitude, ActivationAware, RandomImportance)}


@dataclass
class ImportanceScores:
    """Unit scores of the prunable blocks: `heads[layer]` per head unit, `channels[layer]` per MLP channel."""

    criterion: str
    head_unit: str
    heads: dict[int, torch.Tensor]
    channels: dict[int, torch.Tensor]
    calibration_tokens: int = 0


def compute_importance(model, tokenizer, texts, config: PruneConfig = PruneConfig(), progress: bool = True) -> ImportanceScores:
    """Score every head unit and MLP channel of the prunable blocks on the first `calibration_docs` texts."""
    adapter = get_adapter(model)
    criterion = CRITERIA[config.criterion]()
    layers = config.layer_range(adapter.num_layers(model))
    texts = check_texts(texts)[: config.calibration_docs]
    stats = CalibrationStats()
    if criterion.needs:
        modules = [name for i in layers for name in adapter.projection_names(model, i)]
        stats = collect(model, tokenizer, texts, modules, criterion.needs, memory=config.memory,
                        batch_size=config.batch_size, max_length=config.max_length, progress=progress)
    generator = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        heads = {i: criterion.unit_scores(model, i, config.head_unit, stats, generator) for i in layers}
        channels = {i: criterion.unit_scores(model, i, "mlp", stats, generator) for i in layers}
    return ImportanceScores(config.criterion, config.head_unit, heads, channels, stats.tokens)
