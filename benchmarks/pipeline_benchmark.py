"""Wall time of `make demo` after set-up, and of a rerun with nothing changed. Writes benchmarks/results/pipeline.json.

    python benchmarks/pipeline_benchmark.py

Runs the exact command `make demo` runs (`finescope run --domain math --run-dir ...`) as a fresh
process, with an empty runs folder (FINESCOPE_RUNS_DIR pointed at a temporary one), so the SAE
is trained and the pool encoded as on a fresh clone; then runs it again unchanged. Both times
include interpreter start and the report. Targets: demo within 20 minutes and rerun within
30 seconds, on the machine named in the result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finescope_nb.artifacts import write_json_atomic  # noqa: E402
from finescope_nb.basemodel import hardware  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "pipeline.json"
FINESCOPE = Path(sys.executable).with_name("finescope")


def timed(command: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="finescope-demo-") as tmp:
        env = {**os.environ, "FINESCOPE_RUNS_DIR": str(Path(tmp) / "runs"), "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
        command = [str(FINESCOPE), "run", "--domain", "math", "--run-dir", str(Path(tmp) / "runs" / "demo-math")]
        demo, out = timed(command, env)
        print(out, flush=True)
        rerun, _ = timed(command, env)
    result = {"demo_seconds": round(demo, 1), "rerun_seconds": round(rerun, 1), "cores": os.cpu_count(),
              "hardware": hardware(), "command": "finescope run --domain math --run-dir <tmp> (what `make demo` runs), "
              "empty runs folder: SAE trained and pool encoded in the timed run",
              "targets_met": {"demo within 20 minutes": demo <= 1200, "rerun within 30 seconds": rerun <= 30}}
    write_json_atomic(RESULT, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
