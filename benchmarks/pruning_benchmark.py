"""Pruning benchmark on the embedded model: which criterion and calibration set hurt a domain least,
and how much faster the pruned model runs. Writes benchmarks/results/pruning.json.

    python benchmarks/pruning_benchmark.py                 # 30%, math and code, 3 calibration seeds
    python benchmarks/pruning_benchmark.py --seeds 0 --eval-docs 40    # a quick look

For each domain, the curated set is the top M pool documents under the kit's default SAE selector
from 10 held-out seeds; each arm prunes 30% of the non-embedding parameters with a calibration
sample of N documents drawn by the seed, and is scored by validation perplexity (before any
recovery) on both domains. Target (issue 5): Taylor on the curated set beats magnitude, random,
and Taylor on a random pool sample of the same size, per domain. Speed: forward throughput of the
pruned model against the unpruned one on batch 8 x 256 tokens, interleaved, best of several
rounds; `blocks_speedup` times the decoder blocks alone (no LM head).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
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
from finescope_nb.config import EvalConfig  # noqa: E402
from finescope_nb.curate.workspace import curate_domain, default_workspace  # noqa: E402
from finescope_nb.evaluate import domain_perplexity  # noqa: E402
from finescope_nb.lm import run_until_layer  # noqa: E402
from finescope_nb.prune import PruneConfig, prune  # noqa: E402
from finescope_nb.prune.compare import Arm, calibration_source, compare_arms  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "pruning.json"


def arms(ratio: float, curated, pool, n: int, scope: str) -> dict[str, Arm]:
    base = PruneConfig(ratio=ratio, scope=scope, calibration_docs=n)
    curated_texts = calibration_source(curated["text"], n)
    random_texts = calibration_source(pool["text"], n)
    generic_texts = calibration_source(pool[pool["domain"] == "general"]["text"], n)
    return {
        "taylor/curated": Arm(base, curated_texts),
        "taylor/random": Arm(base, random_texts),
        "taylor/generic": Arm(base, generic_texts),
        "taylor2/curated": Arm(base.replace(criterion="taylor2"), curated_texts),
        "activation/curated": Arm(base.replace(criterion="activation"), curated_texts),
        "magnitude": Arm(base.replace(criterion="magnitude"), curated_texts),
        "random": Arm(base.replace(criterion="random"), curated_texts),
    }


def throughput(models: dict, vocab: int, rounds: int = 5, batch: int = 8, length: int = 256) -> dict:
    """Best-of-`rounds` seconds per forward of each model (whole model, and blocks only), interleaved."""
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    best = {(name, part): float("inf") for name in models for part in ("forward", "blocks")}
    with torch.no_grad():
        for _ in range(rounds):
            for name, model in models.items():
                last = get_adapter(model).num_layers(model) - 1
                for part, run in (("forward", lambda: model(input_ids=ids, attention_mask=mask, use_cache=False)),
                                  ("blocks", lambda: run_until_layer(model, ids, mask, last))):
                    start = time.perf_counter()
                    run()
                    best[name, part] = min(best[name, part], time.perf_counter() - start)
    return {f"{name}_{part}_tokens_per_s": batch * length / t for (name, part), t in best.items()}


def speed_model(ws, args):
    """The model whose speed is reported: Taylor on the first domain's curated set, the first seed."""
    texts = calibration_source(curate_domain(ws, args.domains[0], args.m)["text"], args.calibration_docs)(args.seeds[0])
    pruned, plan, _ = prune(ws.model, ws.tokenizer, texts, PruneConfig(ratio=args.ratio, scope=args.scope,
                                                                       calibration_docs=args.calibration_docs), progress=False)
    return pruned, plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--domains", nargs="+", default=["math", "code"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--m", type=int, default=500, help="curated set size")
    parser.add_argument("--calibration-docs", type=int, default=64)
    parser.add_argument("--eval-docs", type=int, default=100, help="validation documents per domain")
    parser.add_argument("--scope", default="per_layer")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--speed-only", action="store_true",
                        help="only re-measure the speedups (on a quiet machine) and update them in --out")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    ws = default_workspace()
    model, tokenizer, pool = ws.model, ws.tokenizer, ws.pool
    pruned, plan = speed_model(ws, args)
    speed = throughput({"unpruned": model, "pruned": pruned}, model.config.vocab_size, args.rounds)
    if args.speed_only:
        result = json.loads(args.out.read_text())
        result.update(forward_speedup=speed["pruned_forward_tokens_per_s"] / speed["unpruned_forward_tokens_per_s"],
                      blocks_speedup=speed["pruned_blocks_tokens_per_s"] / speed["unpruned_blocks_tokens_per_s"])
        result["details"]["speed"] = speed | {"rounds": args.rounds, "hardware": hardware()}
        result["targets_met"]["forward_speedup >= 1.25"] = result["forward_speedup"] >= 1.25
        write_json_atomic(args.out, result)
        print(json.dumps(speed | {k: result[k] for k in ("forward_speedup", "blocks_speedup")}, indent=2))
        return
    eval_config = EvalConfig(split="validation", domains=tuple(args.domains), max_docs_per_domain=args.eval_docs)
    base = domain_perplexity(model, tokenizer, eval_config, progress=False)
    ppl_base = dict(zip(base["domain"], base["ppl"]))
    print("unpruned validation perplexity:", {k: round(v, 2) for k, v in ppl_base.items()}, flush=True)

    tables, curated_precision = [], {}
    for domain in args.domains:
        curated = curate_domain(ws, domain, args.m)
        curated_precision[domain] = float((curated["domain"] == domain).mean())
        start = time.perf_counter()
        table = compare_arms(model, tokenizer, arms(args.ratio, curated, pool, args.calibration_docs, args.scope), args.seeds, eval_config)
        tables.append(table.assign(calibrated_for=domain))
        own = table[table["domain"] == domain].groupby("arm", sort=False)["ppl"].agg(["mean", "std"])
        print(f"{domain} ({time.perf_counter() - start:.0f} s, curated precision {curated_precision[domain]:.2f}):\n{own.round(2)}", flush=True)
    results = pd.concat(tables, ignore_index=True)

    own = results[results["domain"] == results["calibrated_for"]]
    ppl_pruned = {arm: {d: {"mean": float(g["ppl"].mean()), "std": float(g["ppl"].std(ddof=1)) if len(g) > 1 else 0.0}
                        for d, g in part.groupby("domain")} for arm, part in own.groupby("arm", sort=False)}
    cross = results[results["domain"] != results["calibrated_for"]]
    cross_ppl = {f"{arm} for {cal}": {d: float(g["ppl"].mean()) for d, g in part.groupby("domain")}
                 for (arm, cal), part in cross.groupby(["arm", "calibrated_for"], sort=False)}

    result = {
        "hardware": hardware(), "ratio": args.ratio, "scope": args.scope, "params_before": plan.params_before,
        "params_after": plan.params_after,
        "forward_speedup": speed["pruned_forward_tokens_per_s"] / speed["unpruned_forward_tokens_per_s"],
        "blocks_speedup": speed["pruned_blocks_tokens_per_s"] / speed["unpruned_blocks_tokens_per_s"],
        "domains": args.domains, "seeds": args.seeds, "ppl_base": ppl_base, "ppl_pruned": ppl_pruned,
        "details": {"speed": speed, "calibration_docs": args.calibration_docs, "curated_m": args.m,
                    "curated_precision": curated_precision, "eval": eval_config.to_dict(),
                    "shapes_after_taylor_curated_seed0": plan.shapes_after,
                    "ppl_on_the_other_domain": cross_ppl},
    }
    targets = {}
    for d in args.domains:
        best = ppl_pruned["taylor/curated"][d]["mean"]
        for other in ("magnitude", "random", "taylor/random"):
            targets[f"{d}: taylor/curated < {other}"] = best < ppl_pruned[other][d]["mean"]
    targets["forward_speedup >= 1.25"] = result["forward_speedup"] >= 1.25
    result["targets_met"] = targets
    write_json_atomic(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "details"}, indent=2))


if __name__ == "__main__":
    main()
