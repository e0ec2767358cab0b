"""Scaling benchmark: what pruning importance costs in memory, and what the per-batch Taylor estimate changes.
Writes its sections into benchmarks/results/scaling.json, keeping the sections it did not run.

    python benchmarks/scaling_benchmark.py memory                          # embedded tiny Llama
    python benchmarks/scaling_benchmark.py memory --model PATH --batches 1 # e.g. a SmolLM2-135M folder
    python benchmarks/scaling_benchmark.py per-batch --seeds 0 1 2

memory: importance at batch 8 x 256 tokens, `PruneConfig.memory` "default" against "bounded", each
mode in a fresh Python process (so neither inherits the other's allocator state). A process loads
the model and the calibration texts, then reads VmRSS from /proc/self/status, resets the
high-water mark (writing 5 to /proc/self/clear_refs), runs `compute_importance` and reads VmHWM:
the figure is that peak minus the RSS after loading and a warm-up on two short texts (which
pages in the code a first backward needs), i.e. what importance itself adds; the figure from
the RSS after loading alone is kept beside it. Where clear_refs cannot be written, ru_maxrss (the
peak since the process started) stands in, and the result says so. Each pair is measured twice:
with glibc malloc as it comes, whose mmap threshold rises after large frees so that later
transient tensors come from a heap that fragments (what a user sees on CPU, and noisy), and with
MALLOC_MMAP_THRESHOLD_=131072, which maps every tensor over 128 KiB and returns it when freed, so
that RSS follows the live tensors. The scores of the two modes are compared in the parent (largest relative
difference over all units). Target (issue 17): bounded <= 0.5x default, with equal scores.

per-batch: on the embedded model, first-order Taylor with the gradient summed over the calibration
set (`taylor`, the default) against the sum over batches of |w*g| (`taylor_per_batch`, whose state
is one number per unit): Spearman correlation of the unit scores and of importance per parameter
(what the plan ranks), the share of removed units the two plans share at 30%, and validation
perplexity after pruning 30% with each (before any recovery). Calibration: 64 documents of the
domain's pool drawn by the seed (for math the kit's curated set has precision 1.00, see
results/curation.json, so this stands in for it without training an SAE).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from finescope_nb.adapters import get_adapter  # noqa: E402
from finescope_nb.artifacts import write_json_atomic  # noqa: E402
from finescope_nb.basemodel import hardware  # noqa: E402
from finescope_nb.config import EvalConfig, PruneConfig  # noqa: E402
from finescope_nb.corpus import load_split  # noqa: E402
from finescope_nb.evaluate import domain_perplexity  # noqa: E402
from finescope_nb.lm import load_model, load_tokenizer  # noqa: E402
from finescope_nb.prune import apply_plan, compute_importance, plan_pruning, sample_texts, unit_cost  # noqa: E402
from benchmarks.memory import peak_kib, reset_peak, status_kib  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "scaling.json"
CONDITIONS = ("2 CPU cores shared with other workers' experiments, no GPU; every run kept short "
              "(a few batches), so the figures are single measurements, not best-of-several")


# -- memory -----------------------------------------------------------------------------------------


def calibration_texts(tokenizer, n: int, length: int, domain: str = "math") -> list[str]:
    """`n` texts of at least `length` tokens: consecutive pool documents joined until they are that long."""
    out, parts, size = [], [], 0
    for text in load_split("pool", [domain])["text"]:
        parts.append(text)
        size += len(tokenizer(text)["input_ids"])
        if size >= length:
            out.append("\n\n".join(parts))
            parts, size = [], 0
            if len(out) == n:
                return out
    raise SystemExit(f"the {domain} pool has fewer than {n} texts of {length} tokens")


def measure_child(args) -> None:
    """One mode in this (fresh) process: writes {"figures": ..., "scores": ...} to args.child_out with torch.save."""
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # truncation of the joined texts to the context is intended
    model, tokenizer = load_model(args.model), load_tokenizer(args.model)
    texts = calibration_texts(tokenizer, args.batch_size * args.batches, args.max_length)
    config = PruneConfig(criterion=args.criterion, memory=args.child, calibration_docs=len(texts),
                         batch_size=args.batch_size, max_length=args.max_length)
    gc.collect()
    loaded_kib = status_kib("VmRSS")
    # a warm-up on two short texts pages in the code and lazily built state a first backward needs,
    # so that the figure is what the batch size and the model's shapes cost, not a one-off
    compute_importance(model, tokenizer, [t[:200] for t in texts[:2]], config.replace(batch_size=2), progress=False)
    gc.collect()
    warm_kib = status_kib("VmRSS")
    resettable = reset_peak()
    start = time.perf_counter()
    scores = compute_importance(model, tokenizer, texts, config, progress=False)
    seconds = time.perf_counter() - start
    peak = peak_kib(resettable)
    figures = {"rss_after_load_mb": loaded_kib / 1024, "warm_up_mb": (warm_kib - loaded_kib) / 1024, "peak_rss_mb": peak / 1024,
               "importance_mb": (peak - warm_kib) / 1024, "importance_mb_from_load": (peak - loaded_kib) / 1024, "seconds": seconds, "tokens": scores.calibration_tokens,
               "peak_source": "VmHWM after clear_refs" if resettable else "ru_maxrss (peak since start; clear_refs not allowed)"}
    torch.save({"figures": figures, "scores": {"heads": scores.heads, "channels": scores.channels}}, args.child_out)


def _relative_difference(a: dict, b: dict) -> float:
    worst = 0.0
    for part in ("heads", "channels"):
        for i, x in a[part].items():
            worst = max(worst, float(((x - b[part][i]).abs() / x.abs().clamp_min(1e-30)).max()))
    return worst


def _shown(path) -> str:
    """The model path as recorded: relative to the repository when inside it."""
    path = Path(path).resolve() if Path(path).exists() else Path(path)
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def model_sizes(path, batch: int, length: int) -> dict:
    """What the default pass must hold at most, for reading the measurements: logits, gradients, activations' scale."""
    model = load_model(path)
    adapter = get_adapter(model)
    layers = PruneConfig().layer_range(adapter.num_layers(model))
    root = adapter.root(model)
    prunable = sum(p.numel() for i in layers for name in adapter.projection_names(model, i)
                   for p in root.get_submodule(name).parameters())
    vocab = adapter.lm_head(model).weight.shape[0]
    return {"parameters": sum(p.numel() for p in model.parameters()), "prunable_projection_parameters": prunable,
            "prunable_blocks": f"{layers.start}-{layers.stop - 1} of {adapter.num_layers(model)}", "vocab_size": vocab,
            "float32_logits_of_one_batch_mb": batch * length * vocab * 4 / 2**20,
            "float32_prunable_gradients_mb": prunable * 4 / 2**20}


ALLOCATORS = {  # glibc malloc as it comes, and with its mmap threshold fixed (see the module docstring)
    "glibc_default": {},
    "mmap_threshold_128k": {"MALLOC_MMAP_THRESHOLD_": "131072"},
}


def memory(args) -> dict:
    runs, scores = {}, {}
    for allocator, env in ALLOCATORS.items():
        for criterion in args.criteria:
            for mode in ("default", "bounded"):
                with tempfile.TemporaryDirectory() as tmp:
                    out = Path(tmp) / "result.pt"
                    command = [sys.executable, __file__, "memory", "--child", mode, "--child-out", str(out), "--criterion", criterion,
                               "--model", str(args.model), "--batches", str(args.batches), "--batch-size", str(args.batch_size),
                               "--max-length", str(args.max_length), "--threads", str(args.threads)]
                    subprocess.run(command, check=True, env=os.environ | env)
                    result = torch.load(out)
                runs[f"{allocator}/{criterion}/{mode}"] = result["figures"]
                scores[allocator, criterion, mode] = result["scores"]
                print(allocator, criterion, mode, {k: round(v, 1) if isinstance(v, float) else v for k, v in result["figures"].items()},
                      flush=True)
    keys = [(a, c) for a in ALLOCATORS for c in args.criteria]
    ratios = {f"{a}/{c}": runs[f"{a}/{c}/bounded"]["importance_mb"] / runs[f"{a}/{c}/default"]["importance_mb"] for a, c in keys}
    differences = {f"{a}/{c}": _relative_difference(scores[a, c, "default"], scores[a, c, "bounded"]) for a, c in keys}
    return {
        "model": _shown(args.model), "batch": f"{args.batch_size} x {args.max_length} tokens", "batches": args.batches,
        "threads": args.threads, "allocators": {a: env or "unchanged" for a, env in ALLOCATORS.items()},
        "sizes": model_sizes(args.model, args.batch_size, args.max_length), "runs": runs,
        "bounded_over_default": ratios, "max_relative_score_difference": differences,
        "targets_met": {f"{k}: bounded <= 0.5x default and scores within 1e-5": ratios[k] <= 0.5 and differences[k] <= 1e-5
                        for k in ratios},
    }


# -- per-batch Taylor against the default -----------------------------------------------------------


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = pd.Series(a.double().numpy()), pd.Series(b.double().numpy())
    return float(a.rank().corr(b.rank()))


def _per_parameter(model, scores, layers) -> dict[int, torch.Tensor]:
    """Each block's head units and channels as one vector of importance per parameter, as the plan ranks them."""
    return {i: torch.cat([scores.heads[i] / unit_cost(model, i, scores.head_unit), scores.channels[i] / unit_cost(model, i, "mlp")])
            for i in layers}


def _removed(plan) -> set:
    heads = {("h", i, h) for i, keep in plan.keep_heads.items() for h in range(plan.shapes_before[i]["num_kv_heads"]) if h not in keep}
    channels = {("c", i, c) for i, keep in plan.keep_channels.items()
                for c in range(plan.shapes_before[i]["intermediate_size"]) if c not in keep}
    return heads | channels


def per_batch(args) -> dict:
    model, tokenizer = load_model(args.model), load_tokenizer(args.model)
    pool = load_split("pool", [args.domain])["text"]
    eval_config = EvalConfig(split="validation", domains=(args.domain,), max_docs_per_domain=args.eval_docs)
    base = float(domain_perplexity(model, tokenizer, eval_config, progress=False)["ppl"].iloc[0])
    layers = PruneConfig().layer_range(get_adapter(model).num_layers(model))
    rows = []
    for seed in args.seeds:
        texts = sample_texts(pool, args.calibration_docs, seed)
        config = PruneConfig(ratio=args.ratio, calibration_docs=args.calibration_docs, seed=seed)
        found = {c: compute_importance(model, tokenizer, texts, config.replace(criterion=c), progress=False)
                 for c in ("taylor", "taylor_per_batch")}
        plans = {c: plan_pruning(model, s, config) for c, s in found.items()}
        ppl = {c: float(domain_perplexity(apply_plan(model, p), tokenizer, eval_config, progress=False)["ppl"].iloc[0])
               for c, p in plans.items()}
        a, b = found["taylor"], found["taylor_per_batch"]
        va, vb = _per_parameter(model, a, layers), _per_parameter(model, b, layers)
        gone_a, gone_b = _removed(plans["taylor"]), _removed(plans["taylor_per_batch"])
        rows.append({
            "seed": seed, "ppl_taylor": ppl["taylor"], "ppl_taylor_per_batch": ppl["taylor_per_batch"],
            "spearman_heads": _spearman(torch.cat([a.heads[i] for i in layers]), torch.cat([b.heads[i] for i in layers])),
            "spearman_channels": _spearman(torch.cat([a.channels[i] for i in layers]), torch.cat([b.channels[i] for i in layers])),
            "spearman_per_parameter_within_block": sum(_spearman(va[i], vb[i]) for i in layers) / len(layers),
            "removed_units_shared": len(gone_a & gone_b) / max(len(gone_a | gone_b), 1),
        })
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    table = pd.DataFrame(rows)
    return {"model": _shown(args.model), "domain": args.domain, "ratio": args.ratio, "calibration_docs": args.calibration_docs,
            "eval": eval_config.to_dict(), "ppl_unpruned": base, "seeds": rows,
            "mean": {k: float(v) for k, v in table.drop(columns="seed").mean().items()},
            "note": "removed_units_shared is |removed by both| / |removed by either| (Jaccard) at the given ratio"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=("memory", "per-batch"))
    parser.add_argument("--model", default=str(ROOT / "data" / "models" / "finescope-tiny-llama"),
                        help="model folder, named model (e.g. smollm2-135m) or hub id; a model other than the embedded "
                             "one is recorded in its own section, e.g. memory_smollm2-135m")
    parser.add_argument("--conditions", default=CONDITIONS, help="how busy the machine was, recorded with the figures")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--criteria", nargs="+", default=["taylor", "taylor_per_batch"], help="memory: criteria to measure")
    parser.add_argument("--batches", type=int, default=2, help="memory: calibration batches")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--criterion", default="taylor", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("default", "bounded"), help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="per-batch: calibration draws")
    parser.add_argument("--domain", default="math")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--calibration-docs", type=int, default=64)
    parser.add_argument("--eval-docs", type=int, default=100, help="per-batch: validation documents")
    args = parser.parse_args()
    if args.child:
        measure_child(args)
        return
    torch.set_num_threads(args.threads)
    section = memory(args) if args.section == "memory" else per_batch(args)
    section.update(hardware=hardware(), conditions=args.conditions, date=time.strftime("%Y-%m-%d"))
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    embedded = Path(args.model).resolve() == (ROOT / "data" / "models" / "finescope-tiny-llama").resolve()
    result[args.section.replace("-", "_") + ("" if embedded else f"_{Path(args.model).name}")] = section
    write_json_atomic(args.out, result)
    print(json.dumps({k: v for k, v in section.items() if k not in ("runs", "seeds")}, indent=2))


if __name__ == "__main__":
    main()
