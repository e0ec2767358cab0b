"""Math word problems scored by exact match of the final answer: GSM8K and MATH-500.

The model answers greedily from a plain zero-shot prompt (no few-shot examples, no chat
template) so that base and pruned models are asked the same way. Its text is cut at the first
stop sequence (where a base model starts inventing the next question), the final answer is
pulled out (GSM8K: after "####", else the last number; MATH: the last \\boxed{...}, else the
last number), and prediction and reference are compared after `normalise`.

`normalise` is deliberately modest: it removes what only changes the typesetting (dollar signs,
spacing commands, \\left/\\right, \\dfrac vs \\frac, degree marks, \\text wrappers, thousands
separators, trailing zeros) and never does algebra, so "1/2" and "0.5" stay different. Every
rule is visible below, and the pure functions are exposed for tests and for reading a model's
mistakes in a notebook.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence

import pandas as pd

from finescope_nb.corpus import load_eval_set
from finescope_nb.evaluate.registry import EvalOptions, register
from finescope_nb.generate import continue_texts

GSM8K_STOPS = ("\n\n", "\nQuestion:")
MATH_STOPS = ("\n\n\n", "\nQuestion:")  # MATH solutions have paragraphs, so a blank line is no end

_NUMBER = re.compile(r"-?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)")
_PLAIN_NUMBER = re.compile(r"-?(?:\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)")
_SPACING = re.compile(r"\\[,;:! ]|\\quad|\\qquad|\\displaystyle|\\left|\\right")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?")
_UNIT = re.compile(r"\\(?:text|mbox)\{\s[^{}]*\}(?:\^\d|\^\{\d\})?$")  # a trailing "\text{ cm}^2" is a unit
_TEXT = re.compile(r"\\(?:text|textbf|mbox|mathrm)\{([^{}]*)\}")
_FRAC_SHORT = re.compile(r"\\frac(\d)(\d)")  # \frac12 -> \frac{1}{2}
_SQRT_SHORT = re.compile(r"\\sqrt(\d+)")  # \sqrt2 -> \sqrt{2}
_ASSIGNMENT = re.compile(r"^[a-zA-Z]\s*=\s*(?!=)")  # "x = 5" -> "5"


def gsm8k_prompt(question: str) -> str:
    return f"Question: {question.strip()}\nAnswer:"


def math_prompt(problem: str) -> str:
    return f"Question: {problem.strip()}\nGive the final answer as \\boxed{{...}}.\nAnswer:"


def cut_at_stops(text: str, stops: Iterable[str]) -> str:
    """`text` up to the first occurrence of any stop sequence."""
    ends = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[:min(ends)] if ends else text


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def extract_gsm8k(text: str) -> str | None:
    """The number after the first "####" (GSM8K's answer mark), else the last number in the text."""
    if "####" in text:
        after = _NUMBER.search(text.split("####", 1)[1])
        if after:
            return after.group()
    return last_number(text)


def last_boxed(text: str) -> str | None:
    """The contents of the last \\boxed{...} (or \\fbox{...}), braces balanced; None without one."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    head = text[start:].removeprefix("\\boxed").removeprefix("\\fbox").lstrip()
    if not head.startswith("{"):  # "\boxed 5": the argument runs to the next space or dollar
        token = re.match(r"[^\s$]+", head)
        return token.group() if token else None
    depth = 0
    for i, char in enumerate(head):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return head[1:i]
    return None  # unbalanced: the generation stopped inside the box


def extract_math(text: str) -> str | None:
    """The last \\boxed{...} answer, else the last number in the text."""
    boxed = last_boxed(text)
    return boxed if boxed is not None else last_number(text)


def normalise(answer: str | None) -> str:
    """A canonical spelling of a final answer, so that typesetting differences do not count as errors."""
    if answer is None:
        return ""
    s = answer.strip()
    s = _TEXT.sub(r"\1", _UNIT.sub("", s))
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\$", "").replace("$", "")
    s = _DEGREES.sub("", s).replace("\\%", "").replace("%", "")
    s = _SPACING.sub("", s)
    s = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", s)
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    s = _ASSIGNMENT.sub("", s)
    s = re.sub(r"\s+", "", s).rstrip(".")
    if _PLAIN_NUMBER.fullmatch(s):
        s = s.replace(",", "")
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        s = re.sub(r"^(-?)\.", r"\g<1>0.", s)  # ".5" -> "0.5"
        if s in ("-0", "", "-"):
            s = "0"
    elif re.fullmatch(r"-?\d+/\d+", s):
        num, den = s.split("/")
        s = f"\\frac{{{num.lstrip('-')}}}{{{den}}}"
        s = "-" + s if num.startswith("-") else s
    return s


def is_match(prediction: str | None, reference: str) -> bool:
    """Exact match after `normalise`; a missing prediction never matches."""
    return prediction is not None and normalise(prediction) == normalise(reference)


def pick_items(indices: Sequence[int], limit: int | None, seed: int) -> list[int]:
    """All of `indices`, or `limit` of them drawn reproducibly from `seed` (kept in their original order)."""
    if limit is None or limit >= len(indices):
        return list(indices)
    return sorted(random.Random(seed).sample(list(indices), limit))


def _answer(model, tokenizer, prompts: list[str], stops: Sequence[str], options: EvalOptions) -> list[str]:
    texts = continue_texts(model, tokenizer, prompts, max_new_tokens=options.max_new_tokens, do_sample=False,
                           seed=options.seed, batch_size=options.batch_size, stops=stops)
    return [cut_at_stops(t, stops) for t in texts]


@register("gsm8k", ("math",), chance=0.0,
          description="GSM8K test word problems, greedy zero-shot answer, exact match of the final number")
def _gsm8k_metric(model, tokenizer, options: EvalOptions) -> pd.DataFrame:
    ds = load_eval_set("gsm8k")
    items = ds.select(pick_items(range(len(ds)), options.limit, options.seed))
    texts = _answer(model, tokenizer, [gsm8k_prompt(q) for q in items["question"]], GSM8K_STOPS, options)
    predictions = [extract_gsm8k(t) for t in texts]
    correct = [is_match(p, a) for p, a in zip(predictions, items["answer"])]
    return pd.DataFrame([{"domain": "math", "group": "gsm8k", "n": len(correct), "score": sum(correct) / len(correct),
                          "answered": sum(p is not None for p in predictions) / len(predictions)}])


@register("math500", ("math",), chance=0.0,
          description="MATH-500 problems per subject, greedy zero-shot answer, exact match of the last \\boxed{}")
def _math500_metric(model, tokenizer, options: EvalOptions) -> pd.DataFrame:
    ds = load_eval_set("math500")
    subjects = [item_id.split("/")[1] for item_id in ds["id"]]
    chosen = {s: pick_items([i for i, t in enumerate(subjects) if t == s], options.limit, options.seed)
              for s in sorted(set(subjects))}
    items = ds.select([i for picked in chosen.values() for i in picked])
    texts = _answer(model, tokenizer, [math_prompt(p) for p in items["problem"]], MATH_STOPS, options)
    predictions = [extract_math(t) for t in texts]
    correct = [is_match(p, a) for p, a in zip(predictions, items["answer"])]
    rows, start = [], 0
    for subject, picked in chosen.items():
        part, answered = correct[start:start + len(picked)], predictions[start:start + len(picked)]
        rows.append({"domain": "math", "group": subject, "n": len(part), "score": sum(part) / len(part),
                     "answered": sum(p is not None for p in answered) / len(answered)})
        start += len(picked)
    return pd.DataFrame(rows)
