"""The 13-gram overlap test that keeps eval items and held-out text out of the pool.

The corpus build (data/build_corpus.py) and the tests share this one definition, so a test can
recompute the overlap of any two committed files and get the build's answer.

Definition: lower-case the text, take its word tokens with ``re.findall(r"\\w+", text.lower())``,
and form every run of ``n`` (13) consecutive tokens. Each run is joined with single spaces and
stored as the first 8 bytes of its BLAKE2b digest read as a big-endian unsigned integer: a stable
64-bit fingerprint (Python's own ``hash`` changes from process to process). Two texts overlap when
their fingerprint sets intersect. A text with fewer than ``n`` tokens has no n-grams and so never
overlaps anything.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

NGRAM = 13
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The lower-cased ``\\w+`` tokens of ``text``."""
    return _WORD.findall(text.lower())


def _fingerprint(gram: str) -> int:
    return int.from_bytes(hashlib.blake2b(gram.encode("utf-8"), digest_size=8).digest(), "big")


def word_ngrams(text: str, n: int = NGRAM) -> set[int]:
    """Stable 64-bit fingerprints of every ``n`` consecutive lower-cased word tokens of ``text``."""
    tokens = words(text)
    return {_fingerprint(" ".join(tokens[i : i + n])) for i in range(len(tokens) - n + 1)}


def ngram_index(texts: Iterable[str], n: int = NGRAM) -> set[int]:
    """The union of :func:`word_ngrams` over ``texts``: what other texts must not share."""
    index: set[int] = set()
    for text in texts:
        index |= word_ngrams(text, n)
    return index


def overlaps(text: str, index: set[int], n: int = NGRAM) -> bool:
    """True when ``text`` shares at least one ``n``-gram with ``index``."""
    return not word_ngrams(text, n).isdisjoint(index)
