"""The self-distillation filter: keep the teacher's response where it still agrees with the original.

FineScope keeps a regenerated answer only when it does not contradict the data it replaces. Two
measures, chosen per record:
- a math problem with its solution (a record with prompt/response fields) whose solution has a
  final answer (the last number, or what follows "####"): the teacher agrees when its final
  answer is the same number;
- everything else, including math prose cut at a token boundary (whose "last number" is just
  wherever the cut fell): unigram F1 between the words of the two responses (lower-cased \\w+ tokens),
  agreeing at or above a threshold. A tiny teacher almost never reproduces a text exactly, so
  exact match would keep nothing and make this arm the plain one; word F1 grades partial
  agreement, and `keep_rate_curve` shows how many responses each threshold keeps.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pandas as pd

from finescope_nb.distill.split import Example

WORD = re.compile(r"\w+")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
DEFAULT_THRESHOLD = 0.2


def final_answer(text: str) -> str | None:
    """The final numeric answer of a solution: after '####' if present, else the last number; None if none."""
    tail = text.rsplit("####", 1)[1] if "####" in text else text
    numbers = NUMBER.findall(tail)
    if not numbers:
        return None
    value = numbers[-1].replace(",", "").rstrip(".")
    try:
        return repr(float(value))
    except ValueError:
        return None


def word_f1(a: str, b: str) -> float:
    """Unigram F1 between the lower-cased words of two texts (0 when either has none)."""
    wa, wb = Counter(WORD.findall(a.lower())), Counter(WORD.findall(b.lower()))
    common = sum((wa & wb).values())
    if not common:
        return 0.0
    precision, recall = common / sum(wb.values()), common / sum(wa.values())
    return 2 * precision * recall / (precision + recall)


def agreement(original: str, regenerated: str, math: bool) -> float:
    """1.0 / 0.0 for math responses with a final answer (same answer or not), else word F1."""
    if math:
        answer = final_answer(original)
        if answer is not None:
            return float(final_answer(regenerated) == answer)
    return word_f1(original, regenerated)


def filter_responses(examples: list[Example], regenerated: list[str], domain: str,
                     threshold: float = DEFAULT_THRESHOLD) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(responses to train on, kept mask, agreement scores): the teacher's where it agrees, else the original."""
    scores = np.array([agreement(e.response, r, domain == "math" and e.structured) for e, r in zip(examples, regenerated)])
    kept = scores >= threshold
    responses = [r if k else e.response for e, r, k in zip(examples, regenerated, kept)]
    return responses, kept, scores


def keep_rate_curve(scores: np.ndarray, thresholds=None) -> pd.DataFrame:
    """Share of regenerated responses kept at each threshold: columns threshold, keep_rate."""
    thresholds = np.linspace(0, 1, 21) if thresholds is None else np.asarray(thresholds)
    return pd.DataFrame({"threshold": thresholds, "keep_rate": [(scores >= t).mean() for t in thresholds]})
