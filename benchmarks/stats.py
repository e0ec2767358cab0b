"""Mean and sample standard deviation per group, the shape every results file reports."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def mean_std(records: Iterable[dict], value: str, by: Sequence[str]) -> dict:
    """Nested {by[0]: {by[1]: ... {"mean", "std", "n"}}} of `value` over records (std 0 for one record)."""
    groups: dict[tuple, list[float]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in by), []).append(float(r[value]))
    out: dict = {}
    for key, values in groups.items():
        node = out
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                         "n": len(values)}
    return out
