"""Log-probabilities of the next tokens, with the logits formed a slice of positions at a time.

A forward through the whole model materialises logits of shape [batch, tokens, vocabulary] and
then their log-softmax, twice that again. With Gemma 3's 262,144-token vocabulary that is 2 GiB
for 8 x 256 tokens in float32, more than the rest of the model. Here the decoder runs alone up to
its final hidden states, and the LM head (through the adapter, so a soft-capping head caps) turns
only `chunk_positions` rows at a time into logits, each slice reduced to one log-probability per row
before the next is formed. With gradients on, each slice is checkpointed, so its logits are
recomputed during the backward instead of kept. Perplexity, multiple choice and the bounded
calibration loss all score tokens this way.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from finescope_nb.adapters import get_adapter

SLICE_ELEMENTS = 1 << 24  # logits alive per slice by default (64 MiB in float32): 64 positions of Gemma's vocabulary


def final_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The decoder's final hidden states ([batch, tokens, hidden], final norm applied), without the LM head."""
    return get_adapter(model).base_model(model)(input_ids=input_ids, attention_mask=attention_mask,
                                                use_cache=False).last_hidden_state


def row_logprobs(model, rows: torch.Tensor, targets: torch.Tensor, chunk_positions: int | None = None) -> torch.Tensor:
    """log p(targets[i] | rows[i]) for final hidden-state rows [n, hidden] and token ids [n], in float32,
    never holding more than `chunk_positions` rows of logits (default: SLICE_ELEMENTS / vocabulary)."""
    adapter = get_adapter(model)
    size = chunk_positions or max(1, SLICE_ELEMENTS // adapter.lm_head(model).weight.shape[0])
    score = partial(_slice_logprobs, adapter, model)
    grad = torch.is_grad_enabled() and rows.requires_grad
    parts = [checkpoint(score, rows[i:i + size], targets[i:i + size], use_reentrant=False) if grad
             else score(rows[i:i + size], targets[i:i + size]) for i in range(0, len(targets), size)]
    return torch.cat(parts) if parts else rows.new_zeros(0, dtype=torch.float32)


def _slice_logprobs(adapter, model, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = adapter.head_logits(model, rows).float()
    return -F.cross_entropy(logits, targets.to(logits.device), reduction="none")  # the model's own loss, row by row


def next_token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        chunk_positions: int | None = None, wanted: torch.Tensor | None = None) -> torch.Tensor:
    """[batch, tokens - 1]: log p(input_ids[:, t + 1] | input_ids[:, :t + 1]); positions whose next token is
    padding are not scored (their entries are 0), nor, when `wanted` ([batch, tokens - 1], bool) is given, those
    it leaves out: the LM head only runs where a score is read (a multiple-choice option after a long context
    needs a few rows of logits, not one per context token; on Gemma's vocabulary the head is most of the cost)."""
    hidden = final_hidden(model, input_ids, attention_mask)
    scored = attention_mask[:, 1:].bool().to(hidden.device)
    if wanted is not None:
        scored &= wanted.bool().to(hidden.device)
    out = torch.zeros(scored.shape, dtype=torch.float32, device=hidden.device)
    out[scored] = row_logprobs(model, hidden[:, :-1][scored], input_ids[:, 1:].to(hidden.device)[scored], chunk_positions)
    return out


def response_loss(student, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                  teacher=None, kd_weight: float = 0.0, chunk_positions: int | None = None) -> torch.Tensor:
    """Fine-tuning's loss with the logits formed a slice at a time: the mean over positions whose label is not
    -100 of (1 - kd_weight) * cross-entropy + kd_weight * KL(teacher || student), the teacher's distribution
    recomputed slice by slice under no_grad. Equals transformers' loss (and the whole-logit KL) up to float
    rounding; what it saves is [batch, tokens, vocabulary] logits for the student and the teacher alike."""
    hidden = final_hidden(student, input_ids, attention_mask)
    targets = labels[:, 1:].to(hidden.device)
    scored = targets != -100
    rows, targets = hidden[:, :-1][scored], targets[scored]
    teacher_rows = None
    if teacher is not None and kd_weight > 0:
        with torch.no_grad():
            teacher_hidden = final_hidden(teacher, input_ids, attention_mask)  # on the teacher's last device
            teacher_rows = teacher_hidden[:, :-1][scored.to(teacher_hidden.device)]
    adapter = get_adapter(student)
    size = chunk_positions or max(1, SLICE_ELEMENTS // adapter.lm_head(student).weight.shape[0])
    score = partial(_slice_loss, adapter, student, teacher, kd_weight)
    parts = [checkpoint(score, rows[i:i + size], targets[i:i + size],
                        None if teacher_rows is None else teacher_rows[i:i + size], use_reentrant=False)
             for i in range(0, len(targets), size)]
    return torch.cat(parts).mean()


def _slice_loss(adapter, student, teacher, kd_weight: float, rows: torch.Tensor, targets: torch.Tensor,
                teacher_rows: torch.Tensor | None) -> torch.Tensor:
    logp = torch.log_softmax(adapter.head_logits(student, rows).float(), dim=-1)
    ce = -logp.gather(1, targets.to(logp.device)[:, None]).squeeze(1)
    if teacher_rows is None:
        return ce
    with torch.no_grad():
        target = torch.log_softmax(get_adapter(teacher).head_logits(teacher, teacher_rows).float(), dim=-1).to(logp.device)
    return (1 - kd_weight) * ce + kd_weight * (target.exp() * (target - logp)).sum(-1)
