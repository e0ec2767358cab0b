"""The teacher (the unpruned model) regenerates every curated response, batched with the KV cache.

Two modes. `continue` (the default) lets the teacher write the response from the prompt alone: a
problem with its own prompt/response fields is asked through the model's chat template when it has
one (an instruct model answers questions, it does not continue them), free text is continued as
text. `rewrite` shows the teacher the prompt and the original response, through the chat template,
and asks it to restate the response in its own words: the data keeps its facts, the wording becomes
the teacher's own, which is what self-data distillation wants a student to learn from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tqdm.auto import tqdm

from finescope_nb import distributed
from finescope_nb.artifacts import write_json_atomic
from finescope_nb.config import TEACHER_MODES
from finescope_nb.distill.split import Example
from finescope_nb.errors import FinescopeError
from finescope_nb.generate import continue_texts

REWRITE_REQUEST = ("Here is the start of a text and how it goes on.\n\nStart:\n{prompt}\n\nContinuation:\n{response}\n\n"
                   "Rewrite the continuation in your own words. Keep every fact, number, formula and line of code, keep "
                   "about the same length, and reply with the rewritten continuation only.")


def check_same_tokenizer(teacher_tokenizer, student_tokenizer) -> None:
    """The student learns the teacher's text and its next-token distributions, so both must share one vocabulary."""
    if teacher_tokenizer is student_tokenizer:
        return
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        raise FinescopeError("The teacher and the student use different tokenizers (their vocabularies differ); "
                             "distil a pruned model from the model it was pruned from.")


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def check_mode(mode: str, tokenizer) -> None:
    """Refuse an unknown mode, or `rewrite` for a model that has no chat template to ask it through."""
    if mode not in TEACHER_MODES:
        raise FinescopeError(f"Unknown teacher mode {mode!r}; choose one of {', '.join(TEACHER_MODES)}.")
    if mode == "rewrite" and not has_chat_template(tokenizer):
        raise FinescopeError("The rewrite mode asks the teacher through its chat template, and this model's tokenizer has "
                             "none; use teacher_mode='continue' or an instruct model such as smollm2-135m.")


def _chat(tokenizer, request: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": request}], tokenize=False, add_generation_prompt=True)


def teacher_prompts(tokenizer, examples: list[Example], mode: str = "continue") -> tuple[list[str], list[bool]]:
    """The text the teacher generates from for each example, and whether it is chat-formatted (and so
    already carries the special tokens the template wants)."""
    check_mode(mode, tokenizer)
    chat = has_chat_template(tokenizer)
    out, formatted = [], []
    for e in examples:
        if mode == "rewrite":
            out.append(_chat(tokenizer, REWRITE_REQUEST.format(prompt=e.prompt, response=e.response)))
        elif e.structured and chat:
            out.append(_chat(tokenizer, e.prompt))
        else:
            out.append(e.prompt)
        formatted.append(mode == "rewrite" or (e.structured and chat))
    return out, formatted


def regenerate(teacher, tokenizer, examples: list[Example], max_new_tokens: int = 64, do_sample: bool = False,
               temperature: float = 0.8, seed: int = 0, batch_size: int = 16, progress: bool = True,
               checkpoint: str | Path | None = None, mode: str = "continue") -> list[str]:
    """The teacher's response for every example (see the modes above), greedy or sampled (reproducible from `seed`).

    With `checkpoint` (a JSON file), finished chunks are saved as they come, and a rerun with the
    same prompts and settings continues after the last saved chunk. Under a launcher the processes
    take one chunk each in turn and the responses are gathered in prompt order.
    """
    if not examples:
        raise FinescopeError("There are no examples to regenerate; the curated set is empty.")
    prompts, formatted = teacher_prompts(tokenizer, examples, mode)
    key = hashlib.sha256(json.dumps([prompts, max_new_tokens, do_sample, temperature, seed, batch_size]).encode()).hexdigest()
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    out: list[str] = []
    if checkpoint is not None and checkpoint.is_file():
        saved = json.loads(checkpoint.read_text())
        out = saved["responses"] if saved.get("key") == key else []
    out = distributed.broadcast(out)  # what the main process resumes from
    chunk = batch_size * 4  # several generate batches per progress step (and per checkpoint)
    todo = list(range(len(out), len(prompts), chunk))  # the saved responses always end at a chunk boundary
    world = distributed.world_size()
    for first in tqdm(range(0, len(todo), world), desc="teacher", unit="chunk", disable=not progress):
        group = todo[first:first + world]  # one chunk per process, generated exactly as one process would
        mine = group[distributed.rank()] if distributed.rank() < len(group) else None
        texts = [] if mine is None else _chunk(teacher, tokenizer, prompts, formatted, mine, chunk, max_new_tokens,
                                               do_sample, temperature, seed, batch_size)
        for part in distributed.gather_in_order([texts]):
            out += part
        if checkpoint is not None and distributed.is_main():
            write_json_atomic(checkpoint, {"key": key, "responses": out})
    return out


def _chunk(teacher, tokenizer, prompts, formatted, start, chunk, max_new_tokens, do_sample, temperature, seed, batch_size):
    """The responses of prompts[start:start + chunk], sampled from `seed + start` whichever process makes them."""
    part: dict[int, str] = {}
    for chat in (False, True):  # plain and chat-formatted prompts go in separate batches
        rows = [i for i in range(start, min(start + chunk, len(prompts))) if formatted[i] == chat]
        if rows:
            texts = continue_texts(teacher, tokenizer, [prompts[i] for i in rows], max_new_tokens=max_new_tokens,
                                   do_sample=do_sample, temperature=temperature, seed=seed + start, batch_size=batch_size,
                                   add_special_tokens=not chat)
            part.update(zip(rows, texts))
    return [part[i] for i in range(start, min(start + chunk, len(prompts)))]
