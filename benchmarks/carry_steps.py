"""Copy the kept steps of benchmarks into git, so that a benchmark longer than one session resumes on
another machine. Kept steps live under runs/benchmark-steps/<benchmark>/ (`common.resumable`), and runs/
is not committed: a session on a fresh machine would start the benchmark again. This copies each step's
JSON (its key and result, or the teacher's responses so far; a few kB; never the trained weights or
checkpoints beside them) to benchmarks/steps/<benchmark>/, from where `common.step_path` copies a step back
into a runs/ that lacks it. A step is only reused where its key matches, model identity and texts included,
so a carried step never stands in for another model's. Delete a benchmark's carried steps once its results
file is written.

    python benchmarks/carry_steps.py curated pruning pruning-sweep     # then commit benchmarks/steps/
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finescope_nb import paths  # noqa: E402
from finescope_nb.artifacts import atomic_path  # noqa: E402
from benchmarks.common import CARRIED_STEPS  # noqa: E402


def carry(benchmarks: list[str], runs: Path | None = None, into: Path = CARRIED_STEPS) -> dict[str, int]:
    """Copy every kept JSON step of `benchmarks` not yet carried; returns the number copied per benchmark."""
    source = (runs or paths.DEFAULT_RUNS_DIR) / "benchmark-steps"
    copied = {}
    for name in benchmarks:
        kept = sorted((source / name).glob("*.json"))
        if not kept:
            raise SystemExit(f"No kept steps of {name!r} under {source}; the benchmarks with kept steps there are: "
                             f"{', '.join(sorted(p.name for p in source.glob('*') if p.is_dir())) or 'none'}.")
        copied[name] = 0
        for step in kept:
            target = into / name / step.name
            if not target.is_file():
                with atomic_path(target) as tmp:
                    shutil.copyfile(step, tmp)
                copied[name] += 1
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="+", help="names of kept-step folders, e.g. pruning pruning-sweep recovery")
    args = parser.parse_args()
    for name, n in carry(args.benchmarks).items():
        print(f"{name}: {n} new steps carried into {CARRIED_STEPS / name}")


if __name__ == "__main__":
    main()
