"""Recovery arms with one budget: self-distillation (FineScope), plain fine-tuning, random data, none.

`prepare` does what is shared once per domain: split the curated set, let the teacher regenerate
every response, filter. Each arm then fine-tunes the same pruned student for the same steps:
- `self_distill`: the curated prompts with the teacher's responses where they agree with the
  originals, the originals elsewhere; with `kd_weight` > 0 (the default) the student also matches
  the teacher's next-token distributions on those responses, not just their text;
- `plain`: the curated prompts with their original responses (no teacher);
- `random`: a random pool sample of the same size, original responses;
- `none`: no fine-tuning.
Scores come from `evaluate.domain_loss` / `evaluate.retained`, the kit's one definition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from finescope_nb.distill.agreement import DEFAULT_THRESHOLD, filter_responses
from finescope_nb.distill.finetune import FinetuneConfig, finetune
from finescope_nb.distill.split import Example, split_examples
from finescope_nb.distill.teacher import regenerate
from finescope_nb.errors import FinescopeError

ARMS = ("self_distill", "plain", "random", "none")


@dataclass
class RecoveryData:
    """Everything the arms train on, for one domain."""

    domain: str
    examples: list[Example]
    regenerated: list[str]
    responses: list[str]  # after the filter
    kept: np.ndarray
    agreement: np.ndarray
    random_examples: list[Example]

    @property
    def keep_rate(self) -> float:
        return float(self.kept.mean())

    def pairs(self, arm: str) -> tuple[list[str], list[str]]:
        """(prompts, responses) an arm trains on."""
        if arm == "self_distill":
            return [e.prompt for e in self.examples], self.responses
        if arm == "plain":
            return [e.prompt for e in self.examples], [e.response for e in self.examples]
        if arm == "random":
            return [e.prompt for e in self.random_examples], [e.response for e in self.random_examples]
        raise FinescopeError(f"Arm {arm!r} trains on nothing; the arms with training pairs are self_distill, plain and random.")

    def samples(self, n: int = 3) -> pd.DataFrame:
        """A few prompts with the original response, the teacher's, and whether the filter kept it."""
        rows = [{"prompt": e.prompt[-200:], "original": e.response, "teacher": r, "agreement": round(float(a), 3), "kept": bool(k)}
                for e, r, a, k in list(zip(self.examples, self.regenerated, self.agreement, self.kept))[:n]]
        return pd.DataFrame(rows)


def prepare(teacher, tokenizer, curated, random_records, domain: str, threshold: float = DEFAULT_THRESHOLD,
            max_prompt_tokens: int = 64, max_response_tokens: int = 64, do_sample: bool = False, temperature: float = 0.8,
            seed: int = 0, batch_size: int = 16, progress: bool = True, checkpoint: str | Path | None = None,
            mode: str = "continue") -> RecoveryData:
    """Split the curated set, regenerate its responses with the teacher, filter; split the random sample too
    (`random_records=None` when the `random` arm will not run).

    `checkpoint`: a file where the teacher's finished responses are kept, so an interrupted run resumes.
    `mode`: how the teacher writes them, `continue` or `rewrite` (see `distill.teacher`)."""
    examples = split_examples(curated, tokenizer, max_prompt_tokens=max_prompt_tokens, max_response_tokens=max_response_tokens)
    # a restatement may run a little longer than what it restates
    new_tokens = max_response_tokens if mode == "continue" else max_response_tokens + max_response_tokens // 2
    regenerated = regenerate(teacher, tokenizer, examples, max_new_tokens=new_tokens, do_sample=do_sample,
                             temperature=temperature, seed=seed, batch_size=batch_size, progress=progress, checkpoint=checkpoint,
                             mode=mode)
    responses, kept, scores = filter_responses(examples, regenerated, domain, threshold)
    random_examples = [] if random_records is None else split_examples(
        random_records, tokenizer, max_prompt_tokens=max_prompt_tokens, max_response_tokens=max_response_tokens)
    return RecoveryData(domain, examples, regenerated, responses, kept, scores, random_examples)


def run_arm(student, tokenizer, data: RecoveryData, arm: str, config: FinetuneConfig,
            evaluate: Callable[[object], float] | None = None, callback: Callable[[dict], None] | None = None,
            progress: bool = True, checkpoint: str | Path | None = None, teacher=None):
    """The recovered model of one arm and its history (the untouched student and an empty history for `none`).

    `teacher`: the unpruned model, whose distributions `self_distill` matches (see `finetune`); without it
    that arm trains on the regenerated text alone."""
    if arm not in ARMS:
        raise FinescopeError(f"Unknown recovery arm {arm!r}; choose one of {', '.join(ARMS)}.")
    if arm == "none":
        return student, pd.DataFrame(columns=["step", "train_loss", "val_loss"])
    prompts, responses = data.pairs(arm)
    return finetune(student, tokenizer, prompts, responses, config, evaluate=evaluate, callback=callback, progress=progress,
                    checkpoint=checkpoint, teacher=teacher if arm == "self_distill" else None)  # the others are text-only
