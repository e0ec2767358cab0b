"""The README's table of models side by side: one row per model, every cell read from that model's
results file, so the table can only say what a benchmark recorded.

    python benchmarks/side_by_side.py            # print the table
    python benchmarks/side_by_side.py --write    # put it between the README's side-by-side markers

The embedded model's whole-pool files are benchmarks/results/*.json; a named model's are under
results/<name>/; the embedded model re-measured on SmolLM2's pool sample is under
results/embedded-pool1000/ (only the pool-dependent columns apply there). A file or key that is not
there yet reads "not yet measured". tests/test_readme_numbers.py checks that the README holds
exactly what this prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finescope_nb.artifacts import atomic_path  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
START, END = "<!-- side-by-side:start -->", "<!-- side-by-side:end -->"
MISSING, SAME, NOT_APPLICABLE = "not yet measured", "as above", "not applicable"
DEFAULT_SELECTOR, DENSE = "sae mean centroid (default)", "dense centred centroid"

# (row label, results folder, whether the row's numbers depend on nothing but the pool sample)
MODELS = [
    ("embedded tiny Llama (10M), whole pool", RESULTS, False),
    ("embedded tiny Llama, SmolLM2's pool sample", RESULTS / "embedded-pool1000", True),
    ("SmolLM2-135M-Instruct", RESULTS / "smollm2-135m", False),
    ("Gemma 3 270M", RESULTS / "gemma3-270m", False),
]


def _sae(d: dict) -> str:
    gap = (d["zero_ablation_loss"] - d["spliced_loss"]) / (d["zero_ablation_loss"] - d["clean_loss"])
    return f"{d['explained_variance']:.2f} / {d['dead_fraction']:.0%} / {gap:.0%} (block {d['layer']})"


def _capture(d: dict) -> str:
    return f"{d['capture_speedup_vs_full_forward']:.2f}x"


def _precision(d: dict) -> str:
    coarse = d["precision_at_m"]["coarse"]
    return f"{min(coarse[DEFAULT_SELECTOR].values()):.2f} / {min(coarse[DENSE].values()):.2f}"


def _pruned(d: dict) -> str:
    cells = d["ppl_pruned"]["taylor/curated"]
    return " / ".join(f"{d['ppl_base'][k]:.1f} → {cells[k]['mean']:.1f}" for k in ("math", "code"))


def _speed(d: dict) -> str:
    return f"{d['blocks_speedup']:.2f}x / {d['forward_speedup']:.2f}x"


def _retained(d: dict) -> str:
    cells = d["retained"]["finescope"]
    n = cells["math"]["n"]
    return " / ".join(f"{cells[k]['mean']:.3f}" for k in ("math", "code")) + f" ({n} seed{'s' if n != 1 else ''})"


def _wall(d: dict) -> str:
    return f"{d['demo_seconds'] / 60:.0f} min"


# (header, file, cell, what the pool-sample row shows: "measured" on the sample, SAME as the whole pool because the
# measure does not depend on the pool, or NOT_APPLICABLE: the whole run, whose pool is part of what it times)
COLUMNS: list[tuple[str, str, Callable[[dict], str], str]] = [
    ("SAE: explained variance / dead / loss recovered", "sae.json", _sae, SAME),
    ("capture speed-up (early exit)", "sae.json", _capture, SAME),
    ("precision@500, lowest domain: SAE / dense", "curation.json", _precision, "measured"),
    ("perplexity, unpruned → 30% pruned (Taylor, curated): math / code", "pruning.json", _pruned, "measured"),
    ("speed-up at 30%: blocks / whole forward", "pruning.json", _speed, "measured"),
    ("ablation, FineScope retained (exp(-test loss)): math / code", "ablation.json", _retained, "measured"),
    ("`finescope run --domain math`", "pipeline.json", _wall, NOT_APPLICABLE),
]


def cell(folder: Path, file: str, read: Callable[[dict], str]) -> str:
    path = folder / file
    if not path.is_file():
        return MISSING
    try:
        return read(json.loads(path.read_text()))
    except (KeyError, TypeError):  # an older or partial file without this measure (or with it empty)
        return MISSING


def table() -> str:
    lines = ["| model | " + " | ".join(header for header, *_ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for label, folder, sample_only in MODELS:
        cells = [cell(folder, file, read) if not sample_only or on_sample == "measured" else on_sample
                 for _, file, read, on_sample in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replaced(text: str, block: str) -> str:
    """`text` with the part between the markers replaced by `block`."""
    if START not in text or END not in text:
        raise SystemExit(f"{README} has no {START} ... {END} markers to write the table between.")
    head, rest = text.split(START, 1)
    return f"{head}{START}\n{block}\n{END}{rest.split(END, 1)[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the table into README.md between its markers")
    args = parser.parse_args()
    block = table()
    if args.write:
        text = replaced(README.read_text(), block)
        with atomic_path(README) as tmp:
            Path(tmp).write_text(text)
    print(block)


if __name__ == "__main__":
    sys.exit(main())
