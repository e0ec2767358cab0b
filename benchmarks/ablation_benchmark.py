"""The paper's ablation table on the embedded default: which part of FineScope earns its keep?
Writes benchmarks/results/ablation.json.

    python benchmarks/ablation_benchmark.py                       # math and code, 3 seeds
    python benchmarks/ablation_benchmark.py --domains math --seeds 0   # one column, one seed

Every row starts from the same embedded model and, where it is pruned, the same 30% budget with
Taylor importance (calibration drawn by the seed). Fine-tuning rows train for the same steps with
the same LoRA settings, on prompt/response pairs cut from:
- `pruned+random`: a random pool sample of M documents;
- `pruned+pool`: the whole pool (steps x batch documents drawn from all of it, so no document repeats);
- `pruned+curated`: the curated top-M documents, original text (no distillation);
- `finescope`: the curated documents with the teacher's regenerated responses where the filter keeps
  them, the student matching the teacher's next-token distributions on them (the kit's default);
- `unpruned+curated`: the unpruned model fine-tuned like `pruned+curated` (an upper reference);
- `finescope-generic-calibration`: FineScope with importance measured on a random pool sample.
`unpruned` and `pruned` are not trained.

Score: exp(-test loss) on the domain's held-out test documents (a per-token probability, chance 0),
and `retained` = score / unpruned score (`evaluate.retained`). Cloze accuracy (chance 0.25) is
recorded beside it; on this model pruning moves it by less than its sampling noise, so the loss
score is the one the targets are judged on. Every cell is saved as it finishes under
runs/ablation/, so the table can be built across several runs; fine-tuning resumes mid-run.
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

import math  # noqa: E402

import torch  # noqa: E402

from benchmarks.stats import mean_std  # noqa: E402
from finescope_nb.artifacts import write_json_atomic  # noqa: E402
from finescope_nb.basemodel import hardware  # noqa: E402
from finescope_nb.config import EvalConfig  # noqa: E402
from finescope_nb.curate.workspace import curate_domain, default_workspace  # noqa: E402
from finescope_nb.distill import FinetuneConfig, finetune, prepare, split_examples  # noqa: E402
from finescope_nb.evaluate import domain_loss, heldout_sequences, retained  # noqa: E402
from finescope_nb.evaluate.cloze import cloze_accuracy, domain_items  # noqa: E402
from finescope_nb.lm import model_identity  # noqa: E402
from finescope_nb.prune import PruneConfig, prune, sample_texts  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "ablation.json"
CELLS = ROOT / "runs" / "ablation"
ROWS = ("unpruned", "pruned", "pruned+random", "pruned+pool", "pruned+curated", "finescope", "unpruned+curated",
        "finescope-generic-calibration")
# row -> (pruning calibration, training data); None: not pruned / not trained
RECIPES = {
    "unpruned": (None, None), "pruned": ("curated", None), "pruned+random": ("curated", "random"),
    "pruned+pool": ("curated", "pool"), "pruned+curated": ("curated", "curated"), "finescope": ("curated", "distilled"),
    "unpruned+curated": (None, "curated"), "finescope-generic-calibration": ("generic", "distilled"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--domains", nargs="+", default=["math", "code"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, help="rows to build (unpruned always is)")
    parser.add_argument("--m", type=int, default=200)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--test-docs", type=int, default=120)
    parser.add_argument("--teacher-temperature", type=float, default=None, help="sample the teacher (default: greedy)")
    parser.add_argument("--kd-weight", type=float, default=None,
                        help="FineScope rows: share of the loss matching the teacher's distributions (default: the kit's)")
    parser.add_argument("--cells", type=Path, default=CELLS)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    ws = default_workspace(progress=False)
    model, tokenizer, pool = ws.model, ws.tokenizer, ws.pool
    finetune_config = FinetuneConfig(steps=args.steps, eval_every=args.steps)
    test = heldout_sequences(tokenizer, EvalConfig(split="test", domains=tuple(args.domains), max_docs_per_domain=args.test_docs))
    kd_weight = finetune_config.kd_weight if args.kd_weight is None else args.kd_weight
    tag = f"{model_identity(model)}-r{args.ratio}-m{args.m}-s{args.steps}-t{args.teacher_temperature}-kd{kd_weight}-d{args.test_docs}"
    rows_wanted = ["unpruned"] + [r for r in args.rows if r != "unpruned"]  # every score is relative to it
    cells: dict[tuple[str, str, int], dict] = {}

    for domain in args.domains:
        items = domain_items(tokenizer, domain)
        curated = curate_domain(ws, domain, args.m)
        for seed in args.seeds:
            cache: dict = {}

            def pruned(calibration: str):
                if calibration not in cache:
                    texts = curated["text"] if calibration == "curated" else pool["text"]
                    cache[calibration] = prune(model, tokenizer, sample_texts(texts, 64, seed),
                                               PruneConfig(ratio=args.ratio, seed=seed), progress=False)[0]
                return cache[calibration]

            def pairs(data: str):
                if data == "distilled":
                    if "distilled" not in cache:
                        sampled = args.teacher_temperature is not None
                        cache["distilled"] = prepare(model, tokenizer, curated, curated.head(4), domain, do_sample=sampled,
                                                     temperature=args.teacher_temperature or 1.0, seed=seed, progress=False)
                    d = cache["distilled"]
                    return [e.prompt for e in d.examples], d.responses
                records = {"curated": curated, "random": pool.sample(len(curated), random_state=seed),
                           "pool": pool.sample(args.steps * finetune_config.batch_size, random_state=seed)}[data]
                examples = split_examples(records, tokenizer)
                return [e.prompt for e in examples], [e.response for e in examples]

            for row in rows_wanted:
                path = args.cells / tag / f"{domain}-{seed}-{row}.json"
                if path.is_file():
                    cells[domain, row, seed] = json.loads(path.read_text())
                    continue
                start = time.perf_counter()
                calibration, data = RECIPES[row]
                student = model if calibration is None else pruned(calibration)
                if data is not None:
                    prompts, responses = pairs(data)
                    student, _ = finetune(student, tokenizer, prompts, responses,
                                          finetune_config.replace(seed=seed, kd_weight=kd_weight), progress=False,
                                          checkpoint=path.with_suffix(".pt"), teacher=model if data == "distilled" else None)
                cell = {"test_loss": domain_loss(student, tokenizer, test[domain]), "cloze": cloze_accuracy(student, items),
                        "seconds": time.perf_counter() - start}
                write_json_atomic(path, cell)
                cells[domain, row, seed] = cell
                print(f"{domain} seed {seed} {row:30s} loss {cell['test_loss']:.4f} cloze {cell['cloze']:.3f} "
                      f"({cell['seconds']:.0f} s)", flush=True)

    records = []
    for (domain, row, seed), cell in cells.items():
        base = cells[domain, "unpruned", seed]
        records.append({"row": row, "domain": domain, "seed": seed, "score": math.exp(-cell["test_loss"]),
                        "retained": retained(cell["test_loss"], base["test_loss"]), "cloze": cell["cloze"],
                        "test_loss": cell["test_loss"]})
    result = {
        "domains": args.domains, "ratio": args.ratio, "seeds": args.seeds, "row_order": rows_wanted,
        "metric": "exp(-test loss): per-token probability on the domain's held-out test documents",
        "chance": 0.0,
        "rows": mean_std(records, "score", ("row", "domain")),
        "retained": mean_std(records, "retained", ("row", "domain")),
        "cloze": {"chance": 0.25, "rows": mean_std(records, "cloze", ("row", "domain"))},
        "hardware": hardware(),
        "details": {"m": args.m, "steps": args.steps, "test_docs": args.test_docs, "finetune": finetune_config.to_dict(),
                    "teacher_temperature": args.teacher_temperature, "finescope_kd_weight": kd_weight, "cells": records},
    }
    rows = result["rows"]
    targets = {}
    for d in args.domains:
        if "finescope" in rows and "unpruned" in rows:
            targets[f"{d}: finescope retains >= 0.9"] = result["retained"]["finescope"][d]["mean"] >= 0.9
            for other in ("pruned+random", "pruned+curated", "finescope-generic-calibration"):
                if other in rows:
                    targets[f"{d}: finescope > {other}"] = rows["finescope"][d]["mean"] > rows[other][d]["mean"]
    result["targets_met"] = targets
    write_json_atomic(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "details"}, indent=2))


if __name__ == "__main__":
    main()
