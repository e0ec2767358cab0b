"""Tiny own-domain inputs written into a folder: an unlabelled pool, seeds and a held-out file.

The target is the embedded math domain under a name the kit does not know, so the tests can check
what the curation found without the pool carrying labels. Two held-out documents are pool
documents, which the 13-gram check must drop and count.
"""

from __future__ import annotations

import json
from pathlib import Path

from finescope_nb.corpus import load_split

DOMAIN = "Number puzzles / grade 7!"


def _texts(split: str, domain: str, n: int, min_chars: int = 400) -> list[str]:
    return [r["text"] for r in load_split(split, [domain]) if len(r["text"]) >= min_chars][:n]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def write_inputs(folder: Path) -> dict[str, Path]:
    """pool.jsonl (20 math + 40 other documents, no labels), seeds.txt (5), heldout.jsonl (10 + 2 from the pool)."""
    folder.mkdir(parents=True, exist_ok=True)
    math = _texts("pool", "math", 20)
    others = [t for d in ("code", "humanities", "stem", "social_sciences") for t in _texts("pool", d, 10)]
    pool = [doc for i, other in enumerate(others) for doc in ((other, math[i // 2]) if i % 2 == 0 else (other,))]
    seeds = [t.replace("\n", " ") for t in _texts("seeds", "math", 5, min_chars=100)]
    heldout = _texts("test", "math", 10) + math[:2]
    (folder / "seeds.txt").write_text("\n".join(seeds) + "\n", encoding="utf-8")
    return {"pool": write_jsonl(folder / "pool.jsonl", pool), "heldout": write_jsonl(folder / "heldout.jsonl", heldout),
            "seeds": folder / "seeds.txt", "math": math}
