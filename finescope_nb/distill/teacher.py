"""The teacher (the unpruned model) regenerates every curated response, batched with the KV cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tqdm.auto import tqdm

from finescope_nb.artifacts import write_json_atomic

from finescope_nb.distill.split import Example
from finescope_nb.errors import FinescopeError
from finescope_nb.generate import continue_texts


def check_same_tokenizer(teacher_tokenizer, student_tokenizer) -> None:
    """The student learns the teacher's text and its next-token distributions, so both must share one vocabulary."""
    if teacher_tokenizer is student_tokenizer:
        return
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise FinescopeError("The teacher and the student use different tokenizers (their vocabularies differ); "
                             "distil a pruned model from the model it was pruned from.")


def regenerate(teacher, tokenizer, examples: list[Example], max_new_tokens: int = 64, do_sample: bool = False,
               temperature: float = 0.8, seed: int = 0, batch_size: int = 16, progress: bool = True,
               checkpoint: str | Path | None = None) -> list[str]:
    """The teacher's continuation of every prompt, greedy or sampled (reproducible from `seed`).

    With `checkpoint` (a JSON file), finished chunks are saved as they come, and a rerun with the
    same prompts and settings continues after the last saved chunk.
    """
    if not examples:
        raise FinescopeError("There are no examples to regenerate; the curated set is empty.")
    prompts = [e.prompt for e in examples]
    key = hashlib.sha256(json.dumps([prompts, max_new_tokens, do_sample, temperature, seed, batch_size]).encode()).hexdigest()
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    out: list[str] = []
    if checkpoint is not None and checkpoint.is_file():
        saved = json.loads(checkpoint.read_text())
        out = saved["responses"] if saved.get("key") == key else []
    chunk = batch_size * 4  # several generate batches per progress step (and per checkpoint)
    for start in tqdm(range(0, len(prompts), chunk), desc="teacher", unit="chunk", disable=not progress):
        if start < len(out):
            continue
        out += continue_texts(teacher, tokenizer, prompts[start:start + chunk], max_new_tokens=max_new_tokens,
                              do_sample=do_sample, temperature=temperature, seed=seed + start, batch_size=batch_size)
        if checkpoint is not None:
            write_json_atomic(checkpoint, {"key": key, "responses": out})
    return out
