"""Data-parallel benchmark: pool encoding and importance with 1 and 2 processes, and a projection.
Writes the `data_parallel` section of benchmarks/results/scaling.json, keeping the other sections.

    python benchmarks/distributed_benchmark.py                 # embedded tiny Llama, 2 CPU cores
    python benchmarks/distributed_benchmark.py --docs 512 --calibration-docs 64

On a 2-core CPU machine this shows correctness and overhead, not speed-up: each process gets one
thread (OMP_NUM_THREADS=1), the 1-process run uses one core and the 2-process run
(`accelerate launch --multi_gpu --num_processes 2`, gloo) two, so "efficiency" is the 1-process
time divided by twice the 2-process time (1.0: no overhead from splitting and combining). Both runs
compute the same pool codes and importance scores, which the parent compares. The SAE is a small
one trained here on the embedded model's layer (encoding cost does not depend on how well it is
trained). The projection at the end is a formula with stated assumptions, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from finescope_nb import distributed  # noqa: E402
from finescope_nb.artifacts import write_json_atomic  # noqa: E402
from finescope_nb.basemodel import hardware  # noqa: E402
from finescope_nb.config import PruneConfig  # noqa: E402
from finescope_nb.curate.workspace import pool_sample  # noqa: E402
from finescope_nb.lm import load_model, load_tokenizer  # noqa: E402
from finescope_nb.prune import compute_importance  # noqa: E402
from finescope_nb.sae import LayerSAE, encode_corpus  # noqa: E402
from finescope_nb.sae.cache import default_sae_config  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "scaling.json"
MODEL = ROOT / "data" / "models" / "finescope-tiny-llama"


def worker(args) -> None:
    """One measurement (alone, or as one process of a launch): times, and the main process saves results."""
    torch.set_num_threads(1)
    model, tok = load_model(MODEL), load_tokenizer(MODEL)
    sae = LayerSAE.load(args.sae, model)
    pool = pool_sample(None).head(args.docs)
    texts, ids = pool["text"].tolist(), [str(i) for i in pool["id"]]
    distributed.barrier()
    t0 = time.perf_counter()
    codes = encode_corpus(sae, model, tok, texts, ids, args.work / f"codes-{distributed.world_size()}", top_l=32, progress=False)
    t1 = time.perf_counter()
    config = PruneConfig(calibration_docs=args.calibration_docs, batch_size=8, max_length=args.max_length)
    scores = compute_importance(model, tok, texts[: args.calibration_docs], config, progress=False)
    t2 = time.perf_counter()
    if distributed.is_main():
        torch.save({"encode_s": t1 - t0, "importance_s": t2 - t1, "tokens": scores.calibration_tokens,
                    "indices": torch.tensor(codes.indices["mean"][:]), "values": torch.tensor(codes.values["mean"][:]),
                    "heads": scores.heads, "channels": scores.channels}, args.work / f"result-{distributed.world_size()}.pt")


def _run(command: list[str], threads: int = 1) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])


def projection(encode_docs_s: float, importance_tokens_s: float, efficiency: dict) -> dict:
    """Wall time of a 1M-document pool and a 7B model on 8 GPUs, from a FLOP count and stated assumptions."""
    a = {"params": 7e9, "layers": 32, "sae_layer": 16, "docs": 1_000_000, "tokens_per_doc": 128,
         "calibration_tokens": 1024 * 256, "gpus": 8, "peak_flops_per_gpu": 989e12, "utilisation": 0.35,
         "data_parallel_efficiency": round(min(efficiency.values()), 3), "interconnect_bytes_s": 300e9}
    effective = a["gpus"] * a["peak_flops_per_gpu"] * a["utilisation"] * a["data_parallel_efficiency"]
    encode_flops = 2 * a["params"] * a["sae_layer"] / a["layers"] * a["docs"] * a["tokens_per_doc"]
    importance_flops = 6 * a["params"] * a["calibration_tokens"]
    reduce_s = 2 * (a["gpus"] - 1) / a["gpus"] * 4 * a["params"] / a["interconnect_bytes_s"]  # fp32 gradient sums, ring
    return {
        "label": "PROJECTION, not a measurement: a FLOP count divided by an assumed effective throughput",
        "assumptions": a,
        "formula": {
            "effective_flops_s": "gpus * peak_flops_per_gpu * utilisation * data_parallel_efficiency",
            "pool_encoding_s": "2 * params * (sae_layer / layers) * docs * tokens_per_doc / effective_flops_s "
                               "(forward only, early exit at the SAE's layer; the SAE and pooling are negligible)",
            "importance_s": "6 * params * calibration_tokens / effective_flops_s + 2 * (gpus - 1) / gpus * 4 * params "
                            "/ interconnect_bytes_s (forward + backward, then one ring all-reduce of the fp32 gradient sums)",
        },
        "pool_encoding_s": round(encode_flops / effective, 1),
        "importance_s": round(importance_flops / effective + reduce_s, 2),
        "data_parallel_efficiency_source": "the lowest measured efficiency of the 2-process CPU runs above",
        "measured_cpu_throughput": {"encode_docs_s_1proc": encode_docs_s, "importance_tokens_s_1proc": importance_tokens_s},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=256)
    parser.add_argument("--calibration-docs", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sae", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    from finescope_nb.sae import train_sae
    from finescope_nb.corpus import load_pool

    work = Path(tempfile.mkdtemp(prefix="finescope-dp-"))
    torch.set_num_threads(1)
    model, tok = load_model(MODEL), load_tokenizer(MODEL)
    config = default_sae_config(fast=True).replace(train_tokens=8192)
    train_texts = load_pool().to_pandas()["text"].tolist()[-400:]
    train_sae(model, tok, train_texts, config, progress=False).save(work / "sae")
    own = [sys.executable, str(Path(__file__).resolve()), "--worker", "--sae", str(work / "sae"), "--work", str(work),
           "--docs", str(args.docs), "--calibration-docs", str(args.calibration_docs), "--max-length", str(args.max_length)]
    _run(own)
    _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29531", *own[1:]])
    one, two = (torch.load(work / f"result-{n}.pt", weights_only=True) for n in (1, 2))
    worst = max(float(((two[k][i] - one[k][i]).abs() / one[k][i].abs().clamp_min(1e-12)).max())
                for k in ("heads", "channels") for i in one[k])
    efficiency = {stage: one[f"{stage}_s"] / (2 * two[f"{stage}_s"]) for stage in ("encode", "importance")}
    section = {
        "hardware": hardware(), "model": "embedded tiny Llama", "threads_per_process": 1,
        "launcher": "accelerate launch --multi_gpu --num_processes 2 (gloo on the CPU)",
        "pool_encoding": {"docs": args.docs, "seconds_1proc": round(one["encode_s"], 2), "seconds_2proc": round(two["encode_s"], 2),
                          "docs_s_1proc": round(args.docs / one["encode_s"], 1), "docs_s_2proc": round(args.docs / two["encode_s"], 1),
                          "indices_equal": bool(torch.equal(one["indices"], two["indices"])),
                          "max_abs_value_difference": float((one["values"] - two["values"]).abs().max())},
        "importance": {"calibration_docs": args.calibration_docs, "batch": f"8 x {args.max_length}", "tokens": one["tokens"],
                       "seconds_1proc": round(one["importance_s"], 2), "seconds_2proc": round(two["importance_s"], 2),
                       "tokens_s_1proc": round(one["tokens"] / one["importance_s"], 1),
                       "tokens_s_2proc": round(two["tokens"] / two["importance_s"], 1),
                       "max_relative_score_difference": worst},
        "efficiency": {k: round(v, 3) for k, v in efficiency.items()},
        "efficiency_definition": "1-process seconds / (2 x 2-process seconds); 1.0 = no splitting overhead (2 CPU cores shared with other work)",
    }
    section["projection_7b_8gpu"] = projection(section["pool_encoding"]["docs_s_1proc"], section["importance"]["tokens_s_1proc"],
                                               efficiency)
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result["data_parallel"] = section
    write_json_atomic(args.out, result)
    print(json.dumps(section, indent=2))


if __name__ == "__main__":
    main()
