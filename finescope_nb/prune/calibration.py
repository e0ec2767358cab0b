"""One pass over a calibration text list, collecting what the importance criteria need.

Gradients of the language-model loss (summed over batches, their per-batch squares for the
Fisher approximation, or the per-batch first-order Taylor scores reduced per feature) and the
squared norm of every projection's input features (for the activation-aware criterion) are
gathered only for the projections of the prunable blocks, so a large model does not keep
gradients for its embeddings. The model's flags (training mode, requires_grad) are restored
afterwards.

Two memory modes give the same sums. "default" runs the model's own forward and loss and folds
each batch's gradients once its backward has ended, summing squares for every gradient
criterion. "bounded" folds each projection's gradient into the sums the criterion reads the
moment autograd produces it and frees it (a post-accumulate-grad hook per parameter), checkpoints
the blocks and computes the loss in slices of positions (`prune.bounded`), so what stays alive is
the sums themselves plus one block's activations and one slice of logits. A projection whose
weights are offloaded (a device_map with CPU or disk offload) has no lasting .grad: its weight
gradient is formed from its input and its output's gradient (a forward hook and a tensor hook)
and folded the same way. The sums are all the
state there is: scores are formed from them at the end, so sums from several processes can be
added before scoring. Under a launcher each process runs its contiguous share of whole batches
(the same batches one process would form) and the sums are all-reduced, so every process ends
with the one-process sums.
"""

from __future__ import annotations

import random
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial

import torch
from tqdm.auto import tqdm
from transformers.pytorch_utils import Conv1D

from finescope_nb import distributed
from finescope_nb.activations import context_length, tokenize_batches
from finescope_nb.adapters import get_adapter
from finescope_nb.device import model_device, offloaded, parameter_values
from finescope_nb.errors import FinescopeError
from finescope_nb.prune.bounded import checkpointed_blocks, chunked_lm_loss


GRADIENT_STATISTICS = ("grad", "grad_sq", "batch_taylor")


@dataclass
class CalibrationStats:
    """Sums over the calibration set, keyed by projection module name."""

    grad: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # {module: {"weight"|"bias": sum of grads}}
    grad_sq: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # sum over batches of squared grads
    # sum over batches of |w * g|, per feature: {module: {"weight.0": summed over dim 1, "weight.1": over dim 0, "bias": ...}}
    batch_taylor: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
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


def collect(model, tokenizer, texts, modules: list[str], needs, *, memory: str = "default", batch_size: int = 8,
            max_length: int = 256, progress: bool = True) -> CalibrationStats:
    """Run the calibration texts through `model`, summing the statistics in `needs` (names from
    GRADIENT_STATISTICS or "input_sq") for `modules`, in the given memory mode ("default" or "bounded")."""
    texts = check_texts(texts)
    needs = set(needs)
    gradients = bool(needs & set(GRADIENT_STATISTICS))
    bounded = memory == "bounded"
    folded = needs if bounded or not gradients else needs | {"grad", "grad_sq"}
    adapter = get_adapter(model)
    root = adapter.root(model)
    targets = {name: root.get_submodule(name) for name in modules}
    device = model_device(model)
    stats = CalibrationStats()
    current: dict = {}

    def input_hook(name):
        def hook(module, args):
            if current["backward"]:
                return  # a checkpointed block recomputing its forward: its inputs were counted already
            x = args[0].detach().float() * current["mask"].unsqueeze(-1)
            squares = x.pow(2).sum(dim=tuple(range(x.dim() - 1)))
            stats.input_sq[name] = stats.input_sq.get(name, 0) + squares
        return hook

    def activation_gradient_hook(name):  # an offloaded projection: its weight gradient from its input and output gradient
        def hook(module, args, output):
            if current["backward"] or not output.requires_grad:
                return
            x = args[0].detach()
            output.register_hook(lambda g: _fold_from_activations(stats, name, module, x, g, folded))
        return hook

    was_training = root.training
    flags = {p: p.requires_grad for p in root.parameters()}
    handles = [m.register_forward_pre_hook(input_hook(n)) for n, m in targets.items()] if "input_sq" in needs else []
    try:
        root.eval()
        for p in root.parameters():
            p.requires_grad_(False)
        if gradients:
            away = {name: m for name, m in targets.items() if offloaded(m)}
            handles += [m.register_forward_hook(activation_gradient_hook(n)) for n, m in away.items()]
            if away:  # the graph must reach the offloaded projections even where no weight before them needs a gradient
                handles.append(model.get_input_embeddings().register_forward_hook(lambda m, a, out: out.requires_grad_()))
            for name, m in targets.items():
                if name in away:
                    continue
                for pname, p in m.named_parameters(recurse=False):
                    p.requires_grad_(True)
                    p.grad = None  # a gradient left from earlier would be added to the first batch's
                    if bounded:
                        handles.append(p.register_post_accumulate_grad_hook(partial(_fold_and_free, stats, name, pname, folded)))
        mine = distributed.shard(len(texts), batch_size)  # whole batches: the same ones a single process forms
        batches = tokenize_batches(tokenizer, texts[mine.start:mine.stop], batch_size, context_length(model, max_length))
        with checkpointed_blocks(model) if gradients and bounded else nullcontext():
            for batch in tqdm(batches, total=-(-len(mine) // batch_size), desc="calibration", unit="batch", disable=not progress):
                if int(batch.attention_mask[:, 1:].sum()) == 0:
                    continue  # single-token texts predict nothing
                ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
                current.update(mask=mask.float(), backward=False)
                labels = ids.masked_fill(mask == 0, -100)
                if gradients:
                    if bounded:
                        loss = chunked_lm_loss(model, ids, mask, labels)
                    else:
                        loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
                    current["backward"] = True
                    loss.backward()
                    if not bounded:
                        _fold_batch(targets, stats, folded)
                else:
                    with torch.no_grad():  # bounded: the blocks alone, no logits at all
                        (adapter.base_model(model) if bounded else model)(input_ids=ids, attention_mask=mask, use_cache=False)
                stats.batches += 1
                stats.tokens += int(mask.sum())
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in flags.items():
            p.requires_grad_(flag)
            p.grad = None
        root.train(was_training)
    stats = _all_reduced(stats) if distributed.launched() else stats
    if stats.batches == 0:
        raise FinescopeError("No calibration text has two or more tokens, so there is no loss to measure; pass longer texts.")
    return stats


def _all_reduced(stats: CalibrationStats) -> CalibrationStats:
    """The sums of every process added together (a process whose share was empty adds zeros)."""
    flat = {f"{kind}|{module}|{key}": value for kind in GRADIENT_STATISTICS
            for module, sums in getattr(stats, kind).items() for key, value in sums.items()}
    flat.update({f"input_sq|{module}|": value for module, value in stats.input_sq.items()})
    out = CalibrationStats()
    for name, value in distributed.all_reduce_sums(flat).items():
        kind, module, key = name.split("|")
        if kind == "input_sq":
            out.input_sq[module] = value
        else:
            getattr(out, kind).setdefault(module, {})[key] = value
    batches, tokens = distributed.all_reduce_numbers(stats.batches, stats.tokens)
    out.batches, out.tokens = int(batches), int(tokens)
    return out


def _fold_batch(targets: dict, stats: CalibrationStats, needs: set[str]) -> None:
    """Default mode: fold every target's gradient after the batch's backward, then free it."""
    for name, module in targets.items():
        for pname, p in module.named_parameters(recurse=False):
            if p.grad is not None:
                _fold(stats, name, pname, p, p.grad, needs)
                p.grad = None


def _fold_and_free(stats: CalibrationStats, name: str, pname: str, needs: set[str], param: torch.Tensor) -> None:
    """Bounded mode, a post-accumulate-grad hook: fold this parameter's gradient the moment it is complete."""
    _fold(stats, name, pname, param, param.grad, needs)
    param.grad = None


def _fold_from_activations(stats: CalibrationStats, name: str, module, x: torch.Tensor, g: torch.Tensor, needs: set[str]) -> None:
    """The weight (and bias) gradient of a projection from its input and its output's gradient, summed over
    tokens: what autograd would have put in .grad, for weights that only exist while the module runs."""
    values = parameter_values(module)
    x2, g2 = x.reshape(-1, x.shape[-1]).float(), g.reshape(-1, g.shape[-1]).float()
    weight = g2.T @ x2 if not isinstance(module, Conv1D) else x2.T @ g2  # nn.Linear stores [out, in], Conv1D [in, out]
    _fold(stats, name, "weight", values["weight"], weight, needs)
    if "bias" in values:
        _fold(stats, name, "bias", values["bias"], g2.sum(0), needs)


def _fold(stats: CalibrationStats, name: str, pname: str, param: torch.Tensor, grad: torch.Tensor, needs: set[str]) -> None:
    """Add one batch's gradient of one parameter to the sums in `needs` (the sums may take over `grad`'s storage)."""
    g = grad.detach().float()
    if "grad" in needs:
        _add(stats.grad.setdefault(name, {}), pname, g)
    if "grad_sq" in needs:
        _add(stats.grad_sq.setdefault(name, {}), pname, g * g)
    if "batch_taylor" in needs:
        taylor = (param.detach().float().to(g.device) * g).abs()
        parts = {f"{pname}.0": taylor.sum(1), f"{pname}.1": taylor.sum(0)} if taylor.dim() == 2 else {pname: taylor}
        for key, value in parts.items():
            _add(stats.batch_taylor.setdefault(name, {}), key, value)


def _add(sums: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
    if key in sums:
        sums[key].add_(value)
    else:
        sums[key] = value
