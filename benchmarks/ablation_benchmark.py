"""The paper's ablation table: which part of FineScope earns its keep? Writes
benchmarks/results/ablation.json (results/<model>/ablation.json for --model).

    python benchmarks/ablation_benchmark.py                       # math and code, 3 seeds
    python benchmarks/ablation_benchmark.py --domains math --seeds 0   # one column, one seed
    python benchmarks/ablation_benchmark.py --model smollm2-135m --pool-per-domain 1000 --seeds 0 \
        --teacher-modes continue rewrite --steps 600 --eval-every 25 --patience 3 --test-docs 120 \
        --metrics cloze gsm8k humaneval mbpp --metric-limit 50

Every row starts from the same embedded model and, where it is pruned, the same 30% budget with
Taylor importance (calibration drawn by the seed). Fine-tuning rows train for the same steps with
the same LoRA settings, on prompt/response pairs cut from:
- `pruned+random`: a random pool sample of M documents;
- `pruned+pool`: the whole pool (steps x batch documents drawn from all of it, so no document repeats);
- `pruned+curated`: the curated top-M documents, original text (no distillation);
- `finescope`: the curated documents with the teacher's regenerated responses where the filter keeps
  them, the student matching the teacher's next-token distributions on them (the kit's default);
- `unpruned+curated`: the unpruned model fine-tuned like `pruned+curated` (an upper reference);
- `finescope-generic-calibration`: FineScope with importance measured on a random pool sample;
- `finescope-rewrite` (only with `--teacher-modes ... rewrite`): FineScope with the teacher restating
  the original responses through the model's chat template instead of continuing the prompts.
`unpruned` and `pruned` are not trained. Fine-tuning settings not given (method, learning rate,
batch, LoRA shape) are the model's defaults (`pipeline.default_config`, the registry's for a named
model), pruning likewise. With --patience every trained row stops when validation loss has not
improved for that many evaluations and keeps its best weights (its best step is in the cell).

Score: exp(-test loss) on the domain's held-out test documents (a per-token probability, chance 0),
and `retained` = score / unpruned score (`evaluate.retained`). Cloze accuracy (chance 0.25) is
recorded beside it; on this model pruning moves it by less than its sampling noise, so the loss
score is the one the targets are judged on; `retained_by_source` splits it by the held-out set's sources
(math's competition and templated problems, say), each against the unpruned model on the same documents. --metrics adds task metrics of `finescope_nb.evaluate`
(gsm8k, math500, humaneval, mbpp...) per cell, each covering the domains it speaks to, under
`task_metrics` with the unpruned model's score and whether it is above chance. Every cell is kept as it finishes
(benchmarks/recovery_cells.py), so the table can be built across several runs, fine-tuning resumes mid-run, and a
cell the recovery benchmark already computed with the same settings (the same --test-docs, --eval-docs,
--heldout-pick, --patience, --eval-every, --steps, --metrics and --metric-limit) is not trained again: `finescope` is its self_distill row,
`finescope-rewrite` its rewrite row, `pruned+curated` plain, `pruned+random` random and `pruned` none.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import math  # noqa: E402

import pandas as pd  # noqa: E402

from benchmarks.stats import mean_std  # noqa: E402
from finescope_nb.artifacts import write_json_atomic  # noqa: E402
from finescope_nb.basemodel import hardware  # noqa: E402
from finescope_nb.distill import prepare, split_examples  # noqa: E402
from finescope_nb.evaluate import retained, retained_table  # noqa: E402
from finescope_nb.lm import model_identity  # noqa: E402
from benchmarks.common import add_model_args, provenance, result_path, run_config, set_threads, workspace  # noqa: E402
from benchmarks.recovery_cells import Pruner, add_heldout_args, heldout_scoring, recovery_cell, teacher_checkpoint  # noqa: E402

ROWS = ("unpruned", "pruned", "pruned+random", "pruned+pool", "pruned+curated", "finescope", "unpruned+curated",
        "finescope-generic-calibration", "finescope-rewrite")
# row -> (pruning calibration, training data); None: not pruned / not trained
RECIPES = {
    "unpruned": (None, None), "pruned": ("curated", None), "pruned+random": ("curated", "random"),
    "pruned+pool": ("curated", "pool"), "pruned+curated": ("curated", "curated"), "finescope": ("curated", "distilled"),
    "unpruned+curated": (None, "curated"), "finescope-generic-calibration": ("generic", "distilled"),
    "finescope-rewrite": ("curated", "distilled-rewrite"),
}


def task_metrics(cells: dict, rows: list[str]) -> dict:
    """Per row, domain and metric/group: mean score over seeds, the unpruned score, whether that is above chance
    (`evaluate.retained_table`'s rule), and retained there."""
    out: dict = {}
    for domain in sorted({d for d, _, _ in cells}):
        frames = []
        for row in rows:
            found = [{f"{m['metric']}/{m['group']}": m for m in c["metrics"] if m["metric"] != "cloze"}
                     for (d, r, _), c in cells.items() if d == domain and r == row]
            for key in found[0] if found else ():
                metric, group = key.split("/", 1)
                frames.append({"metric": metric, "group": group, "n": found[0][key]["n"], "chance": found[0][key]["chance"],
                               "model": row, "score": sum(f[key]["score"] for f in found) / len(found)})
        if not frames:
            continue
        frame = pd.DataFrame(frames)
        for row in rows[1:]:
            if row not in set(frame["model"]):
                continue
            table = retained_table(frame[frame["model"].isin(["unpruned", row])], model=row, base="unpruned")
            out.setdefault(row, {})[domain] = {
                f"{r['metric']}/{r['group']}": {"score": float(r[row]), "base": float(r["unpruned"]), "above_chance": bool(r["above_chance"]),
                                                "retained": None if r["retained"] != r["retained"] else float(r["retained"])}
                for r in table.to_dict("records")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--domains", nargs="+", default=["math", "code"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    add_model_args(parser)
    parser.add_argument("--rows", nargs="+", default=None, choices=ROWS,
                        help="rows to build (unpruned always is; default: the first 8, and finescope-rewrite with that mode)")
    parser.add_argument("--teacher-modes", nargs="+", default=["continue"], choices=["continue", "rewrite"],
                        help="rewrite adds the finescope-rewrite row")
    parser.add_argument("--m", type=int, default=200)
    parser.add_argument("--steps", type=int, default=60, help="fine-tuning steps (the most, with --patience)")
    parser.add_argument("--eval-every", type=int, default=None, help="validation loss every this many steps (default: steps)")
    parser.add_argument("--patience", type=int, default=None, help="stop after this many evaluations without improvement")
    parser.add_argument("--eval-docs", type=int, default=30, help="validation documents per domain (for --patience)")
    parser.add_argument("--metrics", nargs="*", default=["cloze"], help="task metrics beside test loss")
    parser.add_argument("--metric-limit", type=int, default=100, help="items per metric group (cloze: all)")
    parser.add_argument("--test-docs", type=int, default=120)
    add_heldout_args(parser)
    parser.add_argument("--teacher-temperature", type=float, default=None, help="sample the teacher (default: greedy)")
    parser.add_argument("--kd-weight", type=float, default=None,
                        help="FineScope rows: share of the loss matching the teacher's distributions (default: the kit's)")
    args = parser.parse_args()
    out_path = result_path(args, "ablation.json")
    set_threads()

    defaults = run_config(args.model)
    ws = workspace(args, progress=False)
    model, tokenizer, pool = ws.model, ws.tokenizer, ws.pool
    finetune_config = defaults.finetune.replace(steps=args.steps, eval_every=args.eval_every or args.steps, patience=args.patience)
    scoring = heldout_scoring(tokenizer, args.domains, args.test_docs, args.eval_docs if args.patience is not None else None,
                              args.metrics, args.metric_limit, args.heldout_pick)
    kd_weight = finetune_config.kd_weight if args.kd_weight is None else args.kd_weight
    identity = model_identity(model)
    pruner = Pruner(model, tokenizer, defaults.prune.replace(ratio=args.ratio))
    rows = args.rows or [r for r in ROWS if r != "finescope-rewrite" or "rewrite" in args.teacher_modes]
    rows_wanted = ["unpruned"] + [r for r in rows if r != "unpruned"]  # every score is relative to it
    cells: dict[tuple[str, str, int], dict] = {}

    for domain in args.domains:
        curated = ws.curated(domain, args.m)  # kept: the same documents on any machine
        teacher: dict = {}
        for seed in args.seeds:
            pruner.release()

            def pairs(data: str):
                if data.startswith("distilled"):
                    mode = "rewrite" if data == "distilled-rewrite" else "continue"
                    sampled = args.teacher_temperature is not None
                    slot = (mode, seed if sampled else None)  # greedy responses are the same for every seed
                    if slot not in teacher:
                        how = {"do_sample": True, "temperature": args.teacher_temperature or 1.0, "seed": seed} if sampled else \
                            {"checkpoint": teacher_checkpoint(identity, curated, mode)}  # shared with the recovery benchmark
                        teacher[slot] = prepare(model, tokenizer, curated, None, domain, progress=False, mode=mode, **how)
                    return [e.prompt for e in teacher[slot].examples], teacher[slot].responses
                records = {"curated": curated, "random": pool.sample(len(curated), random_state=seed),
                           "pool": pool.sample(min(len(pool), args.steps * finetune_config.batch_size), random_state=seed)}[data]
                examples = split_examples(records, tokenizer)
                return [e.prompt for e in examples], [e.response for e in examples]

            for row in rows_wanted:
                calibration, data = RECIPES[row]
                source = None if calibration is None else curated["text"] if calibration == "curated" else pool["text"]
                cell = recovery_cell(model, tokenizer, identity, domain, seed, scoring,
                                     pruner=None if source is None else pruner,
                                     calibration=None if source is None else pruner.texts(source, seed),
                                     pairs=None if data is None else pairs(data),
                                     finetune_config=finetune_config.replace(kd_weight=kd_weight),
                                     with_teacher=data is not None and data.startswith("distilled"))
                cells[domain, row, seed] = cell
                found = {f"{r['metric']}/{r['group']}": r for r in cell["metrics"]}
                print(f"{domain} seed {seed} {row:30s} loss {cell['test_loss']:.4f} "
                      f"{ {k: round(r['score'], 3) for k, r in found.items()} } ({cell['seconds']:.0f} s)", flush=True)

    records, by_source = [], []
    for (domain, row, seed), cell in cells.items():
        base = cells[domain, "unpruned", seed]
        cloze = [r["score"] for r in cell["metrics"] if r["metric"] == "cloze"]
        trained = scoring.val is not None and RECIPES[row][1] is not None
        records.append({"row": row, "domain": domain, "seed": seed, "score": math.exp(-cell["test_loss"]),
                        "retained": retained(cell["test_loss"], base["test_loss"]), "cloze": cloze[0] if cloze else None,
                        "test_loss": cell["test_loss"], "best_step": cell["best_step"] if trained else None,
                        "seconds": cell["seconds"]})  # as the cell recorded it: a resumed cell counts from its resumption
        base_sources = base.get("test_loss_by_source") or {}  # held-out sets with several sources (absent from older cells)
        by_source += [{"row": row, "domain": domain, "source": source, "retained": retained(loss, base_sources[source])}
                      for source, loss in (cell.get("test_loss_by_source") or {}).items() if source in base_sources]
    result = provenance(args) | {
        "domains": args.domains, "ratio": args.ratio, "seeds": args.seeds, "row_order": rows_wanted,
        "metric": "exp(-test loss): per-token probability on the domain's held-out test documents",
        "chance": 0.0,
        "rows": mean_std(records, "score", ("row", "domain")),
        "retained": mean_std(records, "retained", ("row", "domain")),
        "retained_by_source": mean_std(by_source, "retained", ("row", "domain", "source")),
        "hardware": hardware(),
        "details": {"m": args.m, "steps": args.steps, "test_docs": args.test_docs, "heldout_pick": args.heldout_pick,
                    "finetune": finetune_config.to_dict(),
                    "teacher_temperature": args.teacher_temperature, "finescope_kd_weight": kd_weight, "cells": records},
    }
    if "cloze" in args.metrics:
        result["cloze"] = {"chance": 0.25, "rows": mean_std(records, "cloze", ("row", "domain"))}
    if args.patience is not None:
        result["budget"] = {"meaning": "step of the best validation loss (patience " f"{args.patience}, every {finetune_config.eval_every} steps)",
                            "rows": mean_std([r for r in records if r["best_step"] is not None], "best_step", ("row", "domain"))}
    if any(m != "cloze" for m in args.metrics):
        result["task_metrics"] = task_metrics(cells, rows_wanted)
    rows = result["rows"]
    targets = {}
    for d in args.domains:
        if "finescope" in rows and "unpruned" in rows:
            targets[f"{d}: finescope retains >= 0.9"] = result["retained"]["finescope"][d]["mean"] >= 0.9
            for other in ("pruned+random", "pruned+curated", "finescope-generic-calibration"):
                if other in rows:
                    targets[f"{d}: finescope > {other}"] = rows["finescope"][d]["mean"] > rows[other][d]["mean"]
    result["targets_met"] = targets
    write_json_atomic(out_path, result)
    print(json.dumps({k: v for k, v in result.items() if k != "details"}, indent=2))


if __name__ == "__main__":
    main()
