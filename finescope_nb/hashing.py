"""One way to name a collection of texts by its content.

Caches across the kit (SAE training sets, held-out files, curated pools, benchmark steps) are keyed
by what they were computed from. Those that key on a list of texts hash it the same way, the strings
joined by NUL (which no text or id holds), so two places that key on the same texts agree on the key.
(The pool codes' folder name joins ids by newlines, as it always has, so existing caches keep their names.)
"""

from __future__ import annotations

import hashlib
from typing import Iterable


def text_digest(parts: Iterable, length: int = 12) -> str:
    """The sha256 of `parts` (texts or ids, each turned into a string) joined by NUL, as `length` hex digits."""
    return hashlib.sha256("\x00".join(map(str, parts)).encode()).hexdigest()[:length]
