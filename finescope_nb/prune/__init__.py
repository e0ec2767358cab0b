"""The pruning stage: remove the attention heads and MLP channels a domain needs least.

    from finescope_nb.prune import PruneConfig, compute_importance, plan_pruning, apply_plan

`PruneConfig` lives with the other stage configs in `finescope_nb.config`; `calibration` the pass that gathers gradients and input norms
(in default or bounded memory, the latter with `bounded`'s block checkpointing and sliced loss),
`importance` the criteria (one class each behind `Importance`), `plan` the choice of units for a
parameter budget, `surgery` the removal itself. `prune` chains them; `save_pruned` writes a model
that `finescope_nb.load_model` (and, for uniform shapes, stock `from_pretrained`) reads back.
"""

from __future__ import annotations

from pathlib import Path

from finescope_nb.artifacts import write_json_atomic
from finescope_nb.lm import save_model
from finescope_nb.prune.calibration import check_texts, sample_texts
from finescope_nb.config import PruneConfig
from finescope_nb.prune.importance import CRITERIA, Importance, ImportanceScores, compute_importance
from finescope_nb.prune.plan import PrunePlan, plan_pruning
from finescope_nb.prune.units import unit_cost
from finescope_nb.prune.surgery import apply_plan

PLAN_FILE = "finescope_prune.json"

__all__ = ["CRITERIA", "Importance", "ImportanceScores", "PLAN_FILE", "PruneConfig", "PrunePlan", "apply_plan", "check_texts",
           "compute_importance", "plan_pruning", "prune", "sample_texts", "save_pruned", "unit_cost"]


def prune(model, tokenizer, texts, config: PruneConfig = PruneConfig(), progress: bool = True):
    """Importance on `texts`, a plan for `config.ratio`, and the surgery: (pruned model, plan, scores)."""
    scores = compute_importance(model, tokenizer, texts, config, progress=progress)
    plan = plan_pruning(model, scores, config)
    return apply_plan(model, plan), plan, scores


def save_pruned(model, tokenizer, path, plan: PrunePlan, config: PruneConfig | None = None) -> Path:
    """Save with `save_pretrained` plus per-layer shapes, and the plan beside it (`finescope_prune.json`)."""
    folder = save_model(model, tokenizer, path, shapes=plan.shapes_after)
    write_json_atomic(folder / PLAN_FILE, {"plan": plan.to_dict(), "config": config.to_dict() if config else None})
    return folder
