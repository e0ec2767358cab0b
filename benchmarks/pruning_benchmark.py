"""Pruning benchmark: which criterion and calibration set hurt a domain least, how much faster the
pruned model runs, and which rounding of the kept MLP widths runs fastest. Writes
benchmarks/results/pruning.json (results/<model>/pruning.json for --model).

    python benchmarks/pruning_benchmark.py                 # 30%, math and code, 3 calibration seeds
    python benchmarks/pruning_benchmark.py --seeds 0 --eval-docs 40    # a quick look
    python benchmarks/pruning_benchmark.py --model smollm2-135m --pool-per-domain 1000 --ratios 0.2 0.3 0.5 \
        --channel-multiples 1 8 32 64 128

For each domain, the curated set is the top M pool documents under the kit's default SAE selector
from 10 held-out seeds; each arm measures importance once per calibration seed (a sample of N
documents drawn by the seed) and prunes every ratio in --ratios from it (the share of the
non-embedding parameters), each pruned model scored by validation perplexity (before any recovery)
on both domains. Pruning settings the script does not set (head unit, channel rounding, batch) are
the model's defaults (`pipeline.default_config`, the registry's for a named model). Target (issue
5): Taylor on the curated set beats magnitude, random, and Taylor on a random pool sample of the
same size, per domain. Speed, at --speed-ratio: forward throughput of the pruned model against the
unpruned one on batch 8 x 256 tokens, interleaved, best of several rounds; `blocks_speedup` times
the decoder blocks alone (no LM head), and `forward_ceiling` is the whole forward's speed-up if the
blocks sped up that much and the rest (embedding, final norm, LM head) not at all:
1 / (head_share + blocks_share / blocks_speedup), the shares measured on the unpruned model.
--channel-multiples re-plans the speed model from the same importance with the kept MLP channels
rounded to each multiple, and reports per multiple the ratio really removed and the speed; every arm
is then pruned at the multiple whose blocks ran fastest (rounding wins over the exact ratio; each
row records the share really removed), and the speed-up at that multiple is measured once more.
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
from finescope_nb.evaluate import domain_perplexity, heldout_sequences  # noqa: E402
from finescope_nb.hashing import text_digest  # noqa: E402
from finescope_nb.lm import model_identity, run_until_layer  # noqa: E402
from finescope_nb.prune import PruneConfig, apply_plan, compute_importance, plan_pruning  # noqa: E402
from finescope_nb.prune.compare import Arm, calibration_source  # noqa: E402
from finescope_nb.prune.importance import CRITERIA  # noqa: E402
from benchmarks.common import add_model_args, provenance, result_path, resumable, run_config, set_threads, workspace  # noqa: E402


def arms(base: PruneConfig, curated, pool, n: int) -> dict[str, Arm]:
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


def score_arms(model, tokenizer, arms: dict[str, Arm], seeds, ratios, eval_config: EvalConfig) -> pd.DataFrame:
    """Importance once per arm and seed, then every ratio planned from it and scored: columns arm, seed, ratio,
    domain, loss, ppl, params_after, removed (the share of non-embedding parameters really removed). Each arm and
    seed is kept as it finishes (`resumable`), so a run that spans sessions picks up where it stopped."""
    sequences = heldout_sequences(tokenizer, eval_config)
    identity = model_identity(model)
    rows = []
    for name, arm in arms.items():
        for seed in seeds:
            config = arm.config.replace(seed=seed)
            texts = arm.texts(seed)

            def step():
                scores = compute_importance(model, tokenizer, texts, config, progress=False)
                out = []
                for ratio in ratios:
                    plan = plan_pruning(model, scores, config.replace(ratio=ratio))
                    ppl = domain_perplexity(apply_plan(model, plan), tokenizer, eval_config, sequences=sequences, progress=False)
                    out += [{"arm": name, "seed": seed, "ratio": ratio, "domain": r.domain, "loss": float(r.loss),
                             "ppl": float(r.ppl), "params_after": int(plan.params_after), "removed": float(plan.removed_fraction)} for r in ppl.itertuples()]
                return out

            # a criterion that reads no data (magnitude, random) prunes alike whatever the texts, so its step is
            # shared between the domains' runs instead of computed once per curated set
            digest = text_digest(texts, length=64) if CRITERIA[config.criterion].needs else None
            key = {"model": identity, "arm": name, "config": config.to_dict(), "ratios": list(ratios),
                   "texts": digest, "eval": eval_config.to_dict()}
            rows += resumable("pruning", key, step)
    return pd.DataFrame(rows)


def speed_summary(speed: dict, pruned: str = "pruned", unpruned: str = "unpruned") -> dict:
    """Forward and blocks speed-ups, the blocks' and the rest's shares of the unpruned forward, and the ceiling."""
    forward = speed[f"{pruned}_forward_tokens_per_s"] / speed[f"{unpruned}_forward_tokens_per_s"]
    blocks = speed[f"{pruned}_blocks_tokens_per_s"] / speed[f"{unpruned}_blocks_tokens_per_s"]
    blocks_share = min(1.0, speed[f"{unpruned}_forward_tokens_per_s"] / speed[f"{unpruned}_blocks_tokens_per_s"])
    head_share = 1.0 - blocks_share
    return {"forward_speedup": forward, "blocks_speedup": blocks, "blocks_share": blocks_share, "head_share": head_share,
            "forward_ceiling": 1.0 / (head_share + blocks_share / blocks)}


def speed_scores(ws, args, base: PruneConfig):
    """Importance of the speed model: Taylor on the first domain's curated set, the first seed."""
    texts = calibration_source(ws.curated(args.domains[0], args.m)["text"], base.calibration_docs)(args.seeds[0])
    return compute_importance(ws.model, ws.tokenizer, texts, base.replace(seed=args.seeds[0]), progress=False)


def channel_sweep(model, scores, base: PruneConfig, multiples, rounds: int) -> dict:
    """Per channel multiple: the ratio really removed, the kept MLP widths, and the speed against the unpruned model."""
    plans = {m: plan_pruning(model, scores, base.replace(channel_multiple=m)) for m in multiples}
    models = {"unpruned": model} | {f"m{m}": apply_plan(model, plan) for m, plan in plans.items()}
    speed = throughput(models, model.config.vocab_size, rounds)
    out = {}
    for m, plan in plans.items():
        summary = speed_summary(speed, pruned=f"m{m}")
        out[str(m)] = {"removed": plan.removed_fraction, "params_after": plan.params_after,
                       "mlp_widths": sorted({b["intermediate_size"] for b in plan.shapes_after}),
                       "blocks_tokens_per_s": speed[f"m{m}_blocks_tokens_per_s"],
                       "forward_tokens_per_s": speed[f"m{m}_forward_tokens_per_s"]} | summary
    fastest = max(out, key=lambda m: out[m]["blocks_speedup"])
    return {"ratio": base.ratio, "by_multiple": out, "fastest_blocks": int(fastest),
            "unpruned_tokens_per_s": {part: speed[f"unpruned_{part}_tokens_per_s"] for part in ("forward", "blocks")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.3], help="shares of non-embedding parameters to remove")
    parser.add_argument("--speed-ratio", type=float, default=0.3, help="the ratio whose speed is measured")
    parser.add_argument("--domains", nargs="+", default=["math", "code"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--m", type=int, default=500, help="curated set size")
    parser.add_argument("--calibration-docs", type=int, default=None, help="default: the model's pruning default")
    parser.add_argument("--eval-docs", type=int, default=100, help="validation documents per domain")
    parser.add_argument("--scope", default=None, help="default: the model's pruning default")
    parser.add_argument("--channel-multiples", nargs="*", type=int, default=[],
                        help="also measure the speed at --speed-ratio with kept MLP channels rounded to each multiple")
    parser.add_argument("--channel-multiple", type=int, default=None,
                        help="prune every arm at this channel multiple (default: the sweep's fastest, else the model's default)")
    parser.add_argument("--speed-only", action="store_true",
                        help="only re-measure the speedups (on a quiet machine) and update them in the result file")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    out_path = result_path(args, "pruning.json")
    recorded = json.loads(out_path.read_text()) if args.speed_only else None  # the file --speed-only updates
    set_threads()

    base = run_config(args.model).prune
    base = base.replace(**{k: v for k, v in (("calibration_docs", args.calibration_docs), ("scope", args.scope)) if v is not None})
    ws = workspace(args)
    model, tokenizer, pool = ws.model, ws.tokenizer, ws.pool
    scores = speed_scores(ws, args, base)
    sweep = None
    if args.channel_multiples:
        def measure():
            return channel_sweep(model, scores, base.replace(ratio=args.speed_ratio), args.channel_multiples, args.rounds)
        # kept, so that a resumed run prunes its remaining arms at the multiple its first run chose (timings are noisy);
        # --speed-only measures afresh
        sweep_key = {"model": model_identity(model), "prune": base.replace(ratio=args.speed_ratio).to_dict(), "domain": args.domains[0],
                     "m": args.m, "seed": args.seeds[0], "multiples": args.channel_multiples, "rounds": args.rounds}
        sweep = measure() if args.speed_only else resumable("pruning-sweep", sweep_key, measure)
    if args.channel_multiple is not None:
        base = base.replace(channel_multiple=args.channel_multiple)
    elif args.speed_only:  # the speed-up of the model whose perplexities the file holds
        base = base.replace(channel_multiple=recorded["details"]["prune"]["channel_multiple"])
    elif sweep is not None:  # every arm keeps MLP widths rounded to the multiple that ran fastest, whatever it costs in exact budget
        base = base.replace(channel_multiple=sweep["fastest_blocks"])
    # measured again, not read off the sweep: the fastest of several noisy timings overstates its own speed-up
    plan = plan_pruning(model, scores, base.replace(ratio=args.speed_ratio))
    speed = throughput({"unpruned": model, "pruned": apply_plan(model, plan)}, model.config.vocab_size, args.rounds)
    summary = speed_summary(speed)
    print({k: round(v, 3) for k, v in summary.items()}, flush=True)
    if args.speed_only:
        result = recorded
        result.update(summary)
        result["details"]["speed"] = speed | {"rounds": args.rounds, "hardware": hardware()}
        if sweep is not None:
            result["channel_multiples"] = sweep
        result["targets_met"]["forward_speedup >= 1.25"] = result["forward_speedup"] >= 1.25
        result["targets_met"]["blocks_speedup >= 1.3"] = result["blocks_speedup"] >= 1.3
        write_json_atomic(out_path, result)
        print(json.dumps(speed | summary, indent=2))
        return
    eval_config = EvalConfig(split="validation", domains=tuple(args.domains), max_docs_per_domain=args.eval_docs)
    base_ppl = domain_perplexity(model, tokenizer, eval_config, progress=False)
    ppl_base = dict(zip(base_ppl["domain"], base_ppl["ppl"]))
    print("unpruned validation perplexity:", {k: round(v, 2) for k, v in ppl_base.items()}, flush=True)

    tables, curated_precision = [], {}
    for domain in args.domains:
        curated = ws.curated(domain, args.m)  # kept: the same documents on any machine
        curated_precision[domain] = float((curated["domain"] == domain).mean())
        start = time.perf_counter()
        table = score_arms(model, tokenizer, arms(base, curated, pool, base.calibration_docs), args.seeds, args.ratios, eval_config)
        tables.append(table.assign(calibrated_for=domain))
        own = table[table["domain"] == domain].groupby(["ratio", "arm"], sort=False)["ppl"].agg(["mean", "std"])
        print(f"{domain} ({time.perf_counter() - start:.0f} s, curated precision {curated_precision[domain]:.2f}):\n{own.round(2)}", flush=True)
    results = pd.concat(tables, ignore_index=True)

    def tables_at(ratio):
        at = results[results["ratio"] == ratio]
        own = at[at["domain"] == at["calibrated_for"]]
        ppl = {arm: {d: {"mean": float(g["ppl"].mean()), "std": float(g["ppl"].std(ddof=1)) if len(g) > 1 else 0.0}
                     for d, g in part.groupby("domain")} for arm, part in own.groupby("arm", sort=False)}
        cross = at[at["domain"] != at["calibrated_for"]]
        cross_ppl = {f"{arm} for {cal}": {d: float(g["ppl"].mean()) for d, g in part.groupby("domain")}
                     for (arm, cal), part in cross.groupby(["arm", "calibrated_for"], sort=False)}
        removed = float(own[own["arm"] == "taylor/curated"]["removed"].mean())
        return ppl, cross_ppl, removed

    by_ratio = {}
    for ratio in args.ratios:
        ppl, cross, removed = tables_at(ratio)
        by_ratio[str(ratio)] = {"ppl_pruned": ppl, "ppl_on_the_other_domain": cross, "removed": removed}
    main_ratio = args.speed_ratio if args.speed_ratio in args.ratios else args.ratios[0]
    ppl_pruned, cross_ppl, _ = tables_at(main_ratio)
    result = provenance(args) | {
        "hardware": hardware(), "ratio": main_ratio, "ratios": args.ratios, "scope": base.scope,
        "params_before": plan.params_before, "params_after": plan.params_after, "speed_ratio": args.speed_ratio,
        "removed_at_speed_ratio": plan.removed_fraction, **summary,
        "domains": args.domains, "seeds": args.seeds, "ppl_base": ppl_base, "ppl_pruned": ppl_pruned, "by_ratio": by_ratio,
        "details": {"speed": speed, "calibration_docs": base.calibration_docs, "curated_m": args.m, "prune": base.to_dict(),
                    "curated_precision": curated_precision, "eval": eval_config.to_dict(),
                    "shapes_after_taylor_curated_seed0": plan.shapes_after,
                    "ppl_on_the_other_domain": cross_ppl},
    }
    if sweep is not None:
        result["channel_multiples"] = sweep
    targets = {}
    for ratio in args.ratios:
        ppl = by_ratio[str(ratio)]["ppl_pruned"]
        for d in args.domains:
            for other in ("magnitude", "random", "taylor/random"):
                key = f"{d}: taylor/curated < {other}" + ("" if ratio == main_ratio else f" at {ratio}")
                targets[key] = ppl["taylor/curated"][d]["mean"] < ppl[other][d]["mean"]
    targets["forward_speedup >= 1.25"] = result["forward_speedup"] >= 1.25
    targets["blocks_speedup >= 1.3"] = result["blocks_speedup"] >= 1.3
    result["targets_met"] = targets
    write_json_atomic(out_path, result)
    print(json.dumps({k: v for k, v in result.items() if k != "details"}, indent=2))


if __name__ == "__main__":
    main()
