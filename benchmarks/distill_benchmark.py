"""Recovery benchmark on the embedded model: how much of the unpruned model's domain score each
recovery arm brings back after 30% pruning, and how much batching speeds up the teacher.
Writes benchmarks/results/distill.json.

    python benchmarks/distill_benchmark.py                  # math and code, 3 seeds
    python benchmarks/distill_benchmark.py --seeds 0 --steps 60    # a quick look

Per domain: the curated set (top M under the default SAE selector from 10 seeds) is split into
prompt and response; the unpruned model regenerates every response greedily; the filter keeps
the teacher's response where it agrees with the original. Per seed: the model is pruned with
Taylor importance on a curated calibration sample drawn by the seed, then each arm fine-tunes it
for the same steps (self_distill, plain, random) or not at all (none). Score: "retained" from
`evaluate.retained`, exp(-loss) over the unpruned model's exp(-loss) on the domain's test split
(loss-based, since a 10M-parameter model sits at chance on benchmarks). Generation speed:
batched teacher generation against one prompt at a time, side by side, same prompts.
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from finescope_nb.artifacts import write_json_atomic  # noqa: E402
from finescope_nb.basemodel import hardware  # noqa: E402
from finescope_nb.config import EvalConfig  # noqa: E402
from finescope_nb.curate.workspace import curate_domain, default_workspace  # noqa: E402
from finescope_nb.distill import FinetuneConfig, keep_rate_curve, prepare, run_arm, split_examples  # noqa: E402
from finescope_nb.evaluate import domain_loss, heldout_sequences, retained  # noqa: E402
from finescope_nb.generate import continue_texts  # noqa: E402
from finescope_nb.prune import PruneConfig, prune, sample_texts  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "distill.json"
ARMS = ("self_distill", "plain", "random", "none")


def generation_speed(model, tokenizer, prompts, new_tokens: int = 32, batch_size: int = 16) -> dict:
    """Tokens/s of batched generation against one prompt at a time, same prompts, interleaved, best of two.

    Tokens are those each mode really produced (a one-prompt run stops at EOS; a batch runs on
    until its last row stops), counted by re-tokenising the generated text.
    """
    best = {"batched": (float("inf"), 0), "single": (float("inf"), 0)}
    for _ in range(2):
        for mode, size in (("batched", batch_size), ("single", 1)):
            start = time.perf_counter()
            out = continue_texts(model, tokenizer, prompts, max_new_tokens=new_tokens, batch_size=size)
            seconds = time.perf_counter() - start
            tokens = sum(len(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in out)
            if seconds < best[mode][0]:
                best[mode] = (seconds, tokens)
    rate = {mode: tokens / seconds for mode, (seconds, tokens) in best.items()}
    return {"generation_tokens_per_s_batched": rate["batched"], "generation_tokens_per_s_single": rate["single"],
            "generation_speedup_batched": rate["batched"] / rate["single"], "generation_prompts": len(prompts),
            "generation_new_tokens": new_tokens, "generation_batch_size": batch_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--domains", nargs="+", default=["math", "code"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--m", type=int, default=200)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--method", default="lora")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threshold", type=float, default=0.2)
    parser.add_argument("--eval-docs", type=int, default=30, help="validation documents per domain for the curves")
    parser.add_argument("--test-docs", type=int, default=80)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    ws = default_workspace()
    model, tokenizer, pool = ws.model, ws.tokenizer, ws.pool
    finetune_config = FinetuneConfig(method=args.method, steps=args.steps, lr=args.lr, eval_every=max(args.steps // 3, 1))
    val = heldout_sequences(tokenizer, EvalConfig(split="validation", domains=tuple(args.domains), max_docs_per_domain=args.eval_docs))
    test = heldout_sequences(tokenizer, EvalConfig(split="test", domains=tuple(args.domains), max_docs_per_domain=args.test_docs))
    base_test = {d: domain_loss(model, tokenizer, test[d]) for d in args.domains}

    rows, keep, curves, histories = [], {}, {}, {}
    for domain in args.domains:
        curated = curate_domain(ws, domain, args.m)
        start = time.perf_counter()
        data = prepare(model, tokenizer, curated, pool.sample(len(curated), random_state=0), domain, threshold=args.threshold,
                       progress=False)
        keep[domain] = data.keep_rate
        curves[domain] = keep_rate_curve(data.agreement).round(3).to_dict("list")
        print(f"{domain}: teacher regenerated {len(data.examples)} responses in {time.perf_counter() - start:.0f} s, "
              f"keep rate {data.keep_rate:.2f} at threshold {args.threshold}", flush=True)
        for seed in args.seeds:
            data.random_examples = split_examples(pool.sample(len(curated), random_state=seed), tokenizer)
            pruned, plan, _ = prune(model, tokenizer, sample_texts(curated["text"], 64, seed), PruneConfig(ratio=args.ratio, seed=seed),
                                    progress=False)
            for arm in ARMS:
                start = time.perf_counter()
                recovered, history = run_arm(pruned, tokenizer, data, arm, finetune_config.replace(seed=seed), teacher=model,
                                             evaluate=lambda m: domain_loss(m, tokenizer, val[domain]), progress=False)
                loss = domain_loss(recovered, tokenizer, test[domain])
                rows.append({"domain": domain, "seed": seed, "arm": arm, "test_loss": loss, "retained": retained(loss, base_test[domain]),
                             "seconds": time.perf_counter() - start})
                histories[f"{domain}/{seed}/{arm}"] = history.to_dict("list")
                print(f"  seed {seed} {arm:12s} test loss {loss:.3f} retained {rows[-1]['retained']:.3f} "
                      f"({rows[-1]['seconds']:.0f} s)", flush=True)

    prompts = [e.prompt for e in split_examples(curate_domain(ws, args.domains[0], 32), tokenizer)]
    speed = generation_speed(model, tokenizer, prompts)
    by = {}
    for row in rows:
        by.setdefault(row["arm"], {}).setdefault(row["domain"], []).append(row["retained"])
    retained_table = {arm: {d: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
                            for d, v in per.items()} for arm, per in by.items()}
    result = {"hardware": hardware(), "domains": args.domains, "ratio": args.ratio, "seeds": args.seeds,
              "score": "loss: retained = exp(-test loss) / exp(-unpruned test loss), evaluate.retained",
              "retained": retained_table, "keep_rate": keep,
              "generation_tokens_per_s_batched": speed["generation_tokens_per_s_batched"],
              "generation_speedup_batched": speed["generation_speedup_batched"],
              "details": {"finetune": finetune_config.to_dict(), "threshold": args.threshold, "curated_m": args.m,
                          "unpruned_test_loss": base_test, "rows": rows, "keep_rate_curve": curves, "speed": speed,
                          "histories": histories}}
    targets = {}
    for d in args.domains:
        sd = retained_table["self_distill"][d]["mean"]
        targets[f"{d}: self_distill retained >= 0.9"] = sd >= 0.9
        for other in ("plain", "random"):
            targets[f"{d}: self_distill > {other}"] = sd > retained_table[other][d]["mean"]
    targets["batched generation >= 3x"] = speed["generation_speedup_batched"] >= 3
    result["targets_met"] = targets
    write_json_atomic(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "details"}, indent=2))


if __name__ == "__main__":
    main()
