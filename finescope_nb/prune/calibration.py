"""One pass over a calibration text list, collecting what the importance criteria need.

Gradients of the language-model loss (summed over batches, and their per-batch squares for the
Fisher approximation) and the squared norm of every projection's input features (for the
activation-aware criterion) are gathered only for the projections of the prunable blocks, so a
large model does not keep gradients for its embeddings. The model's flags (training mode,
requires_grad) are restored afterwards.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from finescope_nb.activations import context_length, tokenize_batches
from finescope_nb.adapters import get_adapter
from finescope_nb.errors import FinescopeError


@dataclass
class CalibrationStats:
    """Sums over the calibration set, keyed by projection module name."""

    grad: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # {module: {"weight"|"bias": sum of grads}}
    grad_sq: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # sum over batches of squared grads
    input_sq: dict[str, torch.Tensor] = field(default_factory=dict)  # {module: sum over tokens of x_j^2}
    batches: int = 0
    tokens: int = 0


def check_texts(texts) -> list[str]:
    """The calibration texts as a list, refusing an empty or blank set with one sentence."""
    if isinstance(texts, str):
        raise FinescopeError("The calibration set must be a list of texts, got a single string; wrap it in a list.")
    texts = list(texts)
    if not texts or not any(isinstance(t, str) and t.strip() for t in texts):
        raise FinescopeError("The calibration set is empty; pass at least one non-blank text (the curated set, a pool sample or generic text).")
    return [t for t in texts if isinstance(t, str) and t.strip()]


def sample_texts(texts, n: int, seed: int) -> list[str]:
    """`n` texts drawn without replacement by `seed` (all of them, shuffled, when there are fewer)."""
    texts = check_texts(texts)
    return random.Random(seed).sample(texts, min(n, len(texts)))


def collect(model, tokenizer, texts, modules: list[str], *, gradients: bool, inputs: bool, batch_size: int = 8,
            max_length: int = 256, progress: bool = True) -> CalibrationStats:
    """Run the calibration texts through `model`, summing gradients and/or input norms of `modules`."""
    texts = check_texts(texts)
    root = get_adapter(model).root(model)
    targets = {name: root.get_submodule(name) for name in modules}
    stats = CalibrationStats()
    current: dict[str, torch.Tensor] = {}

    def input_hook(name):
        def hook(module, args):
            x = args[0].detach().float() * current["mask"].unsqueeze(-1)
            squares = x.pow(2).sum(dim=tuple(range(x.dim() - 1)))
            stats.input_sq[name] = stats.input_sq.get(name, 0) + squares
        return hook

    was_training = root.training
    flags = {p: p.requires_grad for p in root.parameters()}
    handles = [m.register_forward_pre_hook(input_hook(n)) for n, m in targets.items()] if inputs else []
    try:
        root.eval()
        for p in root.parameters():
            p.requires_grad_(False)
        if gradients:
            for m in targets.values():
                for p in m.parameters():
                    p.requires_grad_(True)
        batches = tokenize_batches(tokenizer, texts, batch_size, context_length(model, max_length))
        for batch in tqdm(batches, total=-(-len(texts) // batch_size), desc="calibration", unit="batch", disable=not progress):
            mask = batch.attention_mask
            if int(mask[:, 1:].sum()) == 0:
                continue  # single-token texts predict nothing
            current["mask"] = mask.float()
            labels = batch.input_ids.masked_fill(mask == 0, -100)
            with torch.set_grad_enabled(gradients):
                out = model(input_ids=batch.input_ids, attention_mask=mask, labels=labels if gradients else None, use_cache=False)
            if gradients:
                out.loss.backward()
                _accumulate_grads(targets, stats)
            stats.batches += 1
            stats.tokens += int(mask.sum())
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)
            p.grad = None
        root.train(was_training)
    if stats.batches == 0:
        raise FinescopeError("No calibration text has two or more tokens, so there is no loss to measure; pass longer texts.")
    return stats


def _accumulate_grads(targets: dict, stats: CalibrationStats) -> None:
    for name, module in targets.items():
        sums, squares = stats.grad.setdefault(name, {}), stats.grad_sq.setdefault(name, {})
        for pname, p in module.named_parameters(recurse=False):
            if p.grad is None:
                continue
            g = p.grad.detach().float()
            sums[pname] = sums.get(pname, 0) + g
            squares[pname] = squares.get(pname, 0) + g * g
            p.grad = None
