"""Prompt / response pairs from curated records: what the teacher continues and the student learns.

Records that carry `prompt` and `response` fields (math problems with solutions, code signatures
with bodies) are used as they are. Free text is cut at a token boundary: the first part is the
prompt, the next `max_response_tokens` tokens the response. The cut is made on character offsets
of the tokenizer's own tokens, so both halves are exact substrings of the original text.
"""

from __future__ import annotations

from dataclasses import dataclass

from finescope_nb.errors import FinescopeError


@dataclass(frozen=True)
class Example:
    prompt: str
    response: str
    id: str = ""
    structured: bool = False  # True when the record's own prompt/response fields were used (a problem and its solution)


def _records(records) -> list[dict]:
    if hasattr(records, "to_dict") and hasattr(records, "columns"):  # a DataFrame
        return records.to_dict("records")
    if hasattr(records, "to_list"):  # a datasets.Dataset
        return records.to_list()
    return [r if isinstance(r, dict) else {"text": r} for r in records]


def split_examples(records, tokenizer, prompt_fraction: float = 0.5, max_prompt_tokens: int = 64,
                   max_response_tokens: int = 64) -> list[Example]:
    """One Example per record: its own prompt/response fields, else a prefix and its continuation.

    A free-text record needs at least two tokens; shorter ones are skipped.
    """
    if not 0 < prompt_fraction < 1:
        raise FinescopeError(f"prompt_fraction must be between 0 and 1, got {prompt_fraction}; 0.5 cuts texts in half.")
    rows = _records(records)
    if not rows:
        raise FinescopeError("The curated set is empty, so there is nothing to distil; curate some documents first.")
    out = []
    for i, row in enumerate(rows):
        rid = str(row.get("id", i))
        if row.get("prompt") and row.get("response"):
            out.append(Example(row["prompt"], row["response"], rid, structured=True))
            continue
        text = row.get("text") or ""
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if len(offsets) < 2:
            continue
        n_prompt = min(max_prompt_tokens, max(1, int(len(offsets) * prompt_fraction)))
        cut = offsets[n_prompt - 1][1]
        end = offsets[min(len(offsets), n_prompt + max_response_tokens) - 1][1]
        out.append(Example(text[:cut], text[cut:end], rid))
    if not out:
        raise FinescopeError("No curated record has two or more tokens, so none can be split into prompt and response.")
    return out
