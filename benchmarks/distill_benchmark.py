"""Recovery benchmark: how much of the unpruned model's domain score each recovery arm brings back
after 30% pruning, and how much batching speeds up the teacher. Writes benchmarks/results/distill.json
(results/<model>/distill.json for --model).

    python benchmarks/distill_benchmark.py                  # math and code, 3 seeds
    python benchmarks/distill_benchmark.py --seeds 0 --steps 60    # a quick look
    python benchmarks/distill_benchmark.py --model smollm2-135m --pool-per-domain 1000 --seeds 0 \
        --teacher-modes continue rewrite --methods lora full --steps 600 --eval-every 25 --patience 3 --test-docs 120 \
        --metrics cloze gsm8k humaneval mbpp --metric-limit 50 --heldout-pick stratified

Per domain: the curated set (top M under the default SAE selector from 10 seeds) is split into
prompt and response; the unpruned model regenerates every response greedily; the filter keeps
the teacher's response where it agrees with the original. Per seed: the model is pruned with
Taylor importance on a curated calibration sample drawn by the seed, then each arm fine-tunes it
for the same steps (self_distill, plain, random) or not at all (none). Score: "retained" from
`evaluate.retained`, exp(-loss) over the unpruned model's exp(-loss) on the domain's test split
(loss-based, since a 10M-parameter model sits at chance on benchmarks). Beside it, --metrics (task
metrics of `finescope_nb.evaluate`, e.g. cloze, gsm8k, humaneval) per row, with retained only where
the unpruned model is above chance. Each --teacher-modes mode ("continue": the teacher continues
the prompt; "rewrite": it restates the original response, which needs a chat template) is its own
self_distill row ("self_distill" is the first mode's); each --methods method (lora, full) its own set
of rows. --patience N stops an arm when validation loss has not improved for N evaluations (every
--eval-every steps) and keeps its best weights: with a generous --steps, the step of the best
validation loss per arm is the recovery budget the model needs (`budget`). --arms runs some arms only (a pilot of
one setting, e.g. --arms self_distill --lr 5e-4 --out FILE). Settings not given
(method, learning rate, batch) are the model's fine-tuning defaults (`pipeline.default_config`);
--steps and --eval-every are always the script's own.
--heldout-pick stratified scores (and early-stops) on each source's share of the held-out documents, drawn by
seed 0, and records each arm's test loss per source (`retained_by_source`): the splits are stored in blocks by
source, so the first documents of a domain can be one kind only. The default, the first documents, keeps the
earlier results reproducible.
Generation speed: batched teacher generation against one prompt at a time, side by side, same prompts.
Every arm is a cell of benchmarks/recovery_cells.py, which the ablation shares when its flags match.
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
import pandas as pd  # noqa: E402

from finescope_nb.artifacts import write_json_atomic  # noqa: E402
from finescope_nb.basemodel import hardware  # noqa: E402
from finescope_nb.config import FinetuneConfig  # noqa: E402
from finescope_nb.distill import ARMS, keep_rate_curve, prepare, split_examples  # noqa: E402
from finescope_nb.evaluate import retained, retained_table  # noqa: E402
from finescope_nb.generate import continue_texts  # noqa: E402
from finescope_nb.lm import model_identity  # noqa: E402
from benchmarks.common import add_model_args, provenance, result_path, run_config, set_threads, workspace  # noqa: E402
from benchmarks.recovery_cells import Pruner, add_heldout_args, heldout_scoring, recovery_cell, teacher_checkpoint  # noqa: E402


def retained_metrics(base: list[dict], row: list[dict]) -> dict:
    """Per metric/group: the row's score, the unpruned one, whether that is above chance, and retained there."""
    if not base:
        return {}
    both = pd.concat([pd.DataFrame(base).assign(model="base"), pd.DataFrame(row).assign(model="row")])
    table = retained_table(both, model="row", base="base")
    return {f"{r.metric}/{r.group}": {"score": float(r.row), "base": float(r.base), "above_chance": bool(r.above_chance),
                                      "retained": None if r.retained != r.retained else float(r.retained)}
            for r in table.itertuples()}


def row_name(arm: str, mode: str, modes, method: str, methods) -> str:
    """"self_distill" for the first teacher mode, "self_distill (rewrite)" for another; " [full]" for a second method."""
    name = arm if arm != "self_distill" or mode == modes[0] else f"{arm} ({mode})"
    return name if method == methods[0] else f"{name} [{method}]"


def arm_runs(arms, modes) -> list[tuple[str, str]]:
    """(arm, teacher mode) per row, in ARMS order: self_distill once per mode, every other arm with the first mode."""
    return [(arm, mode) for arm in ARMS if arm in arms for mode in (modes if arm == "self_distill" else modes[:1])]


def method_configs(defaults: dict[str, FinetuneConfig], lrs, **shared) -> dict[str, FinetuneConfig]:
    """Each method's fine-tuning config: the model's defaults for that method (`defaults`) with the `shared`
    fields and one learning rate for all, one per method in order, or (None) each method's own."""
    methods = list(defaults)
    if lrs and len(lrs) not in (1, len(methods)):
        raise ValueError(f"--lr takes one learning rate, or one per method ({' '.join(methods)}); it got {len(lrs)}.")
    lrs = [None] * len(methods) if not lrs else lrs * len(methods) if len(lrs) == 1 else lrs
    return {method: config.replace(**shared, **({} if lr is None else {"lr": lr}))
            for (method, config), lr in zip(defaults.items(), lrs)}


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
    add_model_args(parser)
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--domains", nargs="+", default=["math", "code"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--m", type=int, default=200)
    parser.add_argument("--steps", type=int, default=60, help="fine-tuning steps (the most, with --patience)")
    parser.add_argument("--eval-every", type=int, default=None, help="validation loss every this many steps (default: steps / 3)")
    parser.add_argument("--patience", type=int, default=None, help="stop after this many evaluations without improvement")
    parser.add_argument("--methods", nargs="+", default=None, help="lora and/or full (default: the model's fine-tuning method)")
    parser.add_argument("--lr", nargs="+", type=float, default=None,
                        help="one learning rate for every method, or one per --methods in order (default: the model's)")
    parser.add_argument("--threshold", type=float, default=0.2)
    parser.add_argument("--teacher-modes", nargs="+", default=["continue"], choices=["continue", "rewrite"])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS,
                        help="the arms to run (a pilot of one setting may run self_distill alone; write it with --out)")
    parser.add_argument("--metrics", nargs="*", default=[], help="task metrics beside test loss (e.g. cloze gsm8k humaneval)")
    parser.add_argument("--metric-limit", type=int, default=100, help="items per metric group (cloze: all)")
    parser.add_argument("--eval-docs", type=int, default=30, help="validation documents per domain for the curves")
    parser.add_argument("--test-docs", type=int, default=80)
    add_heldout_args(parser)
    parser.add_argument("--speed-prompts", type=int, default=32, help="prompts of the generation speed comparison")
    args = parser.parse_args()
    arms = tuple(arm for arm in ARMS if arm in args.arms)  # in ARMS order, each once
    if arms != ARMS and args.out is None:
        parser.error("--arms with some of the arms writes a pilot; give it --out FILE, so distill.json keeps every arm.")
    out_path = result_path(args, "distill.json")
    set_threads()

    defaults = run_config(args.model)
    methods = args.methods or [defaults.finetune.method]
    try:
        finetune_configs = method_configs({m: run_config(args.model, m).finetune for m in methods}, args.lr, steps=args.steps,
                                          eval_every=args.eval_every or max(args.steps // 3, 1), patience=args.patience)
    except ValueError as error:
        parser.error(str(error))
    ws = workspace(args)
    model, tokenizer, pool = ws.model, ws.tokenizer, ws.pool
    scoring = heldout_scoring(tokenizer, args.domains, args.test_docs, args.eval_docs, args.metrics, args.metric_limit, args.heldout_pick)
    identity = model_identity(model)
    base = {d: recovery_cell(model, tokenizer, identity, d, 0, scoring) for d in args.domains}
    pruner = Pruner(model, tokenizer, defaults.prune.replace(ratio=args.ratio))

    rows, keep, curves, histories = [], {}, {}, {}
    for domain in args.domains:
        curated = ws.curated(domain, args.m)  # kept: the same documents on any machine
        data = {}
        for mode in args.teacher_modes:
            start = time.perf_counter()
            data[mode] = prepare(model, tokenizer, curated, None, domain, threshold=args.threshold, progress=False, mode=mode,
                                 checkpoint=teacher_checkpoint(identity, curated, mode))  # responses kept as they come
            keep.setdefault(mode, {})[domain] = data[mode].keep_rate
            curves.setdefault(mode, {})[domain] = keep_rate_curve(data[mode].agreement).round(3).to_dict("list")
            print(f"{domain}: teacher ({mode}) regenerated {len(data[mode].examples)} responses in {time.perf_counter() - start:.0f} s, "
                  f"keep rate {data[mode].keep_rate:.2f} at threshold {args.threshold}", flush=True)
        for seed in args.seeds:
            pruner.release()
            calibration = pruner.texts(curated["text"], seed)
            random_examples = split_examples(pool.sample(len(curated), random_state=seed), tokenizer)
            random_pairs = [e.prompt for e in random_examples], [e.response for e in random_examples]
            for method in methods:
                for arm, mode in arm_runs(arms, args.teacher_modes):
                    if arm == "none" and method != methods[0]:
                        continue  # not trained: the same model whatever the method
                    name = row_name(arm, mode, args.teacher_modes, method, methods)
                    cell = recovery_cell(model, tokenizer, identity, domain, seed, scoring, pruner=pruner, calibration=calibration,
                                         pairs=None if arm == "none" else random_pairs if arm == "random" else data[mode].pairs(arm),
                                         finetune_config=finetune_configs[method],
                                         with_teacher=arm == "self_distill")  # each kept as it finishes; training resumes mid-run
                    rows.append({"domain": domain, "seed": seed, "arm": name, "test_loss": cell["test_loss"],
                                 "test_loss_by_source": cell.get("test_loss_by_source"),  # absent from cells kept before it existed
                                 "retained": float(retained(cell["test_loss"], base[domain]["test_loss"])),
                                 "best_step": cell["best_step"], "steps_run": cell["steps_run"],
                                 "metrics": retained_metrics(base[domain]["metrics"], cell["metrics"]), "seconds": cell["seconds"]})
                    histories[f"{domain}/{seed}/{name}"] = cell["history"]
                    print(f"  seed {seed} {name:28s} test loss {rows[-1]['test_loss']:.3f} retained {rows[-1]['retained']:.3f} "
                          f"best step {rows[-1]['best_step']} ({rows[-1]['seconds']:.0f} s) "
                          f"{ {k: round(c['score'], 3) for k, c in rows[-1]['metrics'].items()} } "
                          f"by source { {k: round(v, 3) for k, v in (rows[-1]['test_loss_by_source'] or {}).items()} }", flush=True)

    prompts = [e.prompt for e in split_examples(ws.curated(args.domains[0], args.m).head(args.speed_prompts), tokenizer)]
    speed = generation_speed(model, tokenizer, prompts)
    by, by_source, budget, task = {}, {}, {}, {}
    for row in rows:
        by.setdefault(row["arm"], {}).setdefault(row["domain"], []).append(row["retained"])
        base_sources = base[row["domain"]].get("test_loss_by_source") or {}
        for source, loss in (row["test_loss_by_source"] or {}).items():
            if source in base_sources:
                by_source.setdefault(row["arm"], {}).setdefault(row["domain"], {}).setdefault(source, []).append(
                    retained(loss, base_sources[source]))
        if row["steps_run"]:  # trained arms only
            budget.setdefault(row["arm"], {}).setdefault(row["domain"], []).append(row["best_step"])
        for key, cell in row["metrics"].items():
            task.setdefault(row["arm"], {}).setdefault(row["domain"], {}).setdefault(key, []).append(cell)
    retained_table_ = {arm: {d: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}
                             for d, v in per.items()} for arm, per in by.items()}
    task_table = {arm: {d: {key: {"score": float(np.mean([c["score"] for c in cells])), "base": cells[0]["base"],
                                  "above_chance": cells[0]["above_chance"],
                                  "retained": float(np.mean([c["retained"] for c in cells])) if cells[0]["above_chance"] else None}
                            for key, cells in per_key.items()} for d, per_key in per.items()} for arm, per in task.items()}
    result = provenance(args) | {
        "hardware": hardware(), "domains": args.domains, "ratio": args.ratio, "seeds": args.seeds,
        "heldout_pick": args.heldout_pick, "test_docs": args.test_docs, "eval_docs": args.eval_docs,
        "score": "loss: retained = exp(-test loss) / exp(-unpruned test loss), evaluate.retained",
        "retained": retained_table_,
        "retained_by_source": {arm: {d: {s: float(np.mean(v)) for s, v in per_s.items()} for d, per_s in per.items()}
                               for arm, per in by_source.items()},
        "keep_rate": keep[args.teacher_modes[0]], "keep_rate_by_mode": keep,
        "teacher_modes": args.teacher_modes, "methods": methods, "arms": list(arms),
        "budget": {"meaning": "step of the best validation loss per arm, per seed" + ("" if args.patience else
                                                                                       " (no --patience: the run did not stop early)"),
                   "steps": budget},
        "task_metrics": task_table,
        "generation_tokens_per_s_batched": speed["generation_tokens_per_s_batched"],
        "generation_speedup_batched": speed["generation_speedup_batched"],
        "details": {"finetune": {m: c.to_dict() for m, c in finetune_configs.items()}, "threshold": args.threshold, "curated_m": args.m,
                    "unpruned_test_loss": {d: cell["test_loss"] for d, cell in base.items()},
                    "unpruned_test_loss_by_source": {d: cell.get("test_loss_by_source") for d, cell in base.items()},
                    "rows": rows, "keep_rate_curve": curves, "speed": speed,
                    "metric_limit": args.metric_limit, "histories": histories}}
    targets = {}
    for d in args.domains if "self_distill" in arms else ():
        sd = retained_table_["self_distill"][d]["mean"]
        targets[f"{d}: self_distill retained >= 0.9"] = sd >= 0.9
        for other in ("plain", "random"):
            if other in arms:
                targets[f"{d}: self_distill > {other}"] = sd > retained_table_[other][d]["mean"]
    targets["batched generation >= 3x"] = speed["generation_speedup_batched"] >= 3
    result["targets_met"] = targets
    write_json_atomic(out_path, result)
    print(json.dumps({k: v for k, v in result.items() if k != "details"}, indent=2))


if __name__ == "__main__":
    main()
