"""Fine-tune the student on prompt -> response pairs, with the loss on response tokens only.

LoRA through peft (adapters on the projections the architecture adapter names, merged into the
weights at the end, so the result is a plain model again) or full fine-tuning for tiny models.
Every `eval_every` steps the held-out validation loss of the domain is measured and handed to
`callback` (the live recovery curve); optional early stopping restores the best weights. A loss
or weight that stops being finite ends training with a warning naming the step, and the model
keeps the weights of the last finite step.

With a `checkpoint` path, the trainable tensors, optimizer, schedule, data order and history
are saved at every evaluation, so a run killed mid-training resumes from its last evaluation
and ends with exactly the weights an uninterrupted run would have.

Under a launcher training is data-parallel (Accelerate's `prepare`, gradients averaged over
processes): every process draws the same global batch, takes its contiguous share of the rows,
and scales its loss by its share of the batch's response tokens, so the averaged gradient is the
one-process gradient of the whole batch. In one process, a batch whose logits would exceed
WHOLE_LOGITS_ELEMENTS (Gemma 3's vocabulary of 262,144 at 8 x 128 tokens: 1 GiB, and as much again for
the teacher's) forms them a slice at a time instead. Only the main process writes the checkpoint, which holds
nothing that depends on the number of processes: a run interrupted under several resumes under one.
"""

from __future__ import annotations

import copy
import math
import random
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from finescope_nb import distributed
from finescope_nb.adapters import get_adapter
from finescope_nb.artifacts import atomic_path
from finescope_nb.config import FinetuneConfig
from finescope_nb.device import model_device
from finescope_nb.errors import FinescopeError
from finescope_nb.logprobs import response_loss

WHOLE_LOGITS_ELEMENTS = 1 << 27  # 512 MiB of float32 logits; SmolLM2 at 8 x 128 tokens (50M) stays under it


def encode_pairs(tokenizer, prompts: Sequence[str], responses: Sequence[str], max_length: int) -> list[tuple[list[int], int]]:
    """(token ids, number of prompt tokens) per pair; the prompt keeps the tokenizer's BOS, the response ends with EOS.

    Pairs whose response loses every token to truncation are dropped; if none is left that is an error.
    """
    out = []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for prompt, response in zip(prompts, responses):
        p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + eos
        ids = (p + r)[:max_length]
        if len(ids) > len(p):
            out.append((ids, len(p)))
    if not out:
        raise FinescopeError(f"No example has a response token left within max_length={max_length} (the prompts fill it), "
                             "so the response-only loss has nothing to train on; raise max_length or shorten the prompts.")
    return out


def collate(pairs: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels are -100 on prompt and padding tokens, so only responses carry loss."""
    width = max(len(ids) for ids, _ in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for row, (ids, n_prompt) in enumerate(pairs):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        labels[row, n_prompt: len(ids)] = torch.tensor(ids[n_prompt:])
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def lora_targets(model, requested: Sequence[str] | None) -> list[str]:
    """The LoRA target leaf names, checked against the modules the (pruned) model really has."""
    adapter = get_adapter(model)
    present = {name.rsplit(".", 1)[-1] for name, _ in adapter.root(model).named_modules()}
    available = [t for t in adapter.lora_target_modules(model) if t in present]
    targets = list(requested) if requested is not None else available
    missing = [t for t in targets if t not in present]
    if missing or not targets:
        raise FinescopeError(f"LoRA target modules {missing or targets} do not exist in this model; "
                             f"the projections it has are {', '.join(available)}.")
    return targets


def _wrap(model, config: FinetuneConfig):
    if config.method == "full":
        return model
    from peft import LoraConfig, get_peft_model

    adapter = get_adapter(model)
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=lora_targets(model, config.lora_targets), fan_in_fan_out=adapter.conv1d)
    # peft (up to 0.21.2, the newest) reads transformers' deprecated `is_gradient_checkpointing` property, which warns
    # on every wrap; the kit never turns checkpointing on here, so that one warning says nothing to the user
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(model, lora)


def _unwrap(model, config: FinetuneConfig):
    return model.merge_and_unload() if config.method == "lora" else model


def _loss(student, teacher, batch: dict[str, torch.Tensor], kd_weight: float, sliced: bool = False) -> torch.Tensor:
    """Cross-entropy on response tokens, mixed with KL(teacher || student) on the same tokens when `kd_weight` > 0.

    The teacher's full next-token distribution says more per token than the one token it wrote;
    benchmarks/ablation_benchmark.py measures what that is worth against text-only recovery.
    `sliced`: the same loss with logits formed a slice of positions at a time (logprobs.response_loss).
    """
    batch = {name: t.to(model_device(student)) for name, t in batch.items()}
    if sliced:
        return response_loss(student, batch["input_ids"], batch["attention_mask"], batch["labels"], teacher, kd_weight)
    out = student(**batch, use_cache=False)
    if kd_weight == 0:
        return out.loss
    with torch.no_grad():
        target = torch.log_softmax(teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                           use_cache=False).logits[:, :-1].float(), dim=-1)
    scored = batch["labels"][:, 1:] != -100
    logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
    kl = (target.exp() * (target - logp)).sum(-1)[scored].mean()
    return (1 - kd_weight) * out.loss + kd_weight * kl


def _response_tokens(pairs) -> int:
    """The tokens that carry loss in these pairs (all but the prompt; the first token is never predicted)."""
    return sum(len(ids) - max(n_prompt, 1) for ids, n_prompt in pairs)


def _fingerprint(config: FinetuneConfig, pairs) -> str:
    return f"{config.config_hash(16)}|{len(pairs)}|{sum(len(ids) for ids, _ in pairs)}"


def finetune(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], config: FinetuneConfig = FinetuneConfig(),
             evaluate: Callable[[object], float] | None = None, callback: Callable[[dict], None] | None = None,
             progress: bool = True, checkpoint: str | Path | None = None, teacher=None):
    """Train a copy of `model` on the pairs; returns (trained model, history DataFrame).

    `evaluate(model)` returns the validation loss logged every `eval_every` steps (and at step 0);
    `callback(record)` receives every logged record {"step", "train_loss", "val_loss"}.
    `checkpoint`: a file to resume from and save to at every evaluation (removed when training ends).
    `teacher`: a model sharing the tokenizer whose next-token distributions the student matches with
    weight `config.kd_weight`; without one, training is on the text alone.
    """
    kd_weight = config.kd_weight if teacher is not None else 0.0
    pairs = encode_pairs(tokenizer, prompts, responses, config.max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    torch.manual_seed(config.seed)
    student = _wrap(copy.deepcopy(model), config)
    student.train()
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    world = distributed.world_size()
    if config.batch_size < world:
        raise FinescopeError(f"The fine-tuning batch of {config.batch_size} cannot be split over {world} processes; "
                             f"set finetune.batch_size to at least {world}.")
    vocabulary = get_adapter(student).lm_head(student).weight.shape[0]
    trained, optimizer = distributed.prepare(student, optimizer)  # the data-parallel wrapper under a launcher
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(config.warmup_steps, 1)))
    rng = random.Random(config.seed)
    order: list[int] = []
    history: list[dict] = []

    def snapshot() -> list[torch.Tensor]:
        return [p.detach().clone() for p in params]  # trainable tensors only: with LoRA, a few per cent of the model

    good = snapshot()
    best = (math.inf, good)
    since_best, running = 0, []

    def log(step: int) -> None:
        nonlocal best, since_best
        val = None
        if evaluate is not None:
            student.eval()
            with torch.no_grad():
                val = float(evaluate(student))
            student.train()
            if val < best[0]:
                best, since_best = (val, snapshot()), 0
            else:
                since_best += 1
        record = {"step": step, "train_loss": sum(running) / len(running) if running else None, "val_loss": val}
        running.clear()
        history.append(record)
        if callback is not None:
            callback(record)

    checkpoint = Path(checkpoint) if checkpoint is not None else None
    fingerprint = _fingerprint(config, pairs)

    def save(step: int) -> None:
        if not distributed.is_main():
            return
        state = {"fingerprint": fingerprint, "step": step, "params": snapshot(), "optimizer": optimizer.state_dict(),
                 "schedule": schedule.state_dict(), "rng": rng.getstate(), "order": list(order), "history": list(history),
                 "best": best, "since_best": since_best, "torch_rng": torch.get_rng_state()}
        with atomic_path(checkpoint) as tmp:
            torch.save(state, tmp)

    first = 1
    state = torch.load(checkpoint, weights_only=True) if checkpoint is not None and checkpoint.is_file() else None
    if state is not None and state["fingerprint"] == fingerprint:
        with torch.no_grad():
            for p, value in zip(params, state["params"]):
                p.copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])  # dropout masks continue as in an uninterrupted run
        order, history, best, since_best = state["order"], state["history"], state["best"], state["since_best"]
        good, first = snapshot(), state["step"] + 1
        if config.patience is not None and since_best >= config.patience:
            first = config.steps + 1  # it had already stopped early when it was interrupted
        for record in history:
            if callback is not None:
                callback(record)
    else:
        log(0)
    stopped = None
    for step in tqdm(range(first, config.steps + 1), initial=first - 1, total=config.steps, desc="fine-tune", disable=not progress):
        while len(order) < config.batch_size:
            order += rng.sample(range(len(pairs)), len(pairs))
        chosen = [pairs[order.pop()] for _ in range(config.batch_size)]
        mine = distributed.shard(len(chosen))
        batch = collate(chosen[mine.start:mine.stop], pad)
        tokens, everyone = _response_tokens(chosen[mine.start:mine.stop]), _response_tokens(chosen)
        # large logits (Gemma 3's 262k vocabulary) are formed in slices; not under a data-parallel launcher, whose
        # wrapper must run the forward itself for its gradient averaging
        sliced = world == 1 and batch["input_ids"].numel() * vocabulary > WHOLE_LOGITS_ELEMENTS
        local = _loss(trained, teacher, batch, kd_weight, sliced)
        # a mean over this process's tokens, reweighted so that the average over processes is the batch's mean
        loss = local * (tokens * world / everyone) if world > 1 else local
        loss_value = distributed.all_reduce_numbers(float(local.detach()) * tokens)[0] / everyone
        if not math.isfinite(loss_value):
            stopped = f"The training loss became {loss_value} at step {step}; training stopped and the weights of step {step - 1} were kept."
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        if not all(torch.isfinite(p).all() for p in params):
            stopped = f"The weights stopped being finite at step {step}; training stopped and the weights of step {step - 1} were kept."
            break
        good = snapshot()
        running.append(loss_value)
        if step % config.eval_every == 0 or step == config.steps:
            log(step)
            if checkpoint is not None:
                save(step)
            if config.patience is not None and since_best >= config.patience:
                break
    keep = good if stopped else best[1] if config.patience is not None and evaluate is not None else None
    if keep is not None:  # the last finite weights, or (early stopping) the best validation weights
        with torch.no_grad():
            for p, value in zip(params, keep):
                p.copy_(value)
    if stopped:
        warnings.warn(stopped, stacklevel=2)
    student.eval()
    if checkpoint is not None and distributed.is_main():
        checkpoint.unlink(missing_ok=True)
    frame = pd.DataFrame(history)
    frame.attrs["stopped"] = stopped
    return _unwrap(student, config), frame
