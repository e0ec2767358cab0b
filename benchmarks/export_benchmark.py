"""What stock loadability costs, and whether llama.cpp runs the exported model as the kit does.
Writes benchmarks/results/export.json.

    python benchmarks/export_benchmark.py --part scopes                    # per-layer vs uniform, 3 seeds
    python benchmarks/export_benchmark.py --part llama-cpp --run runs/demo-math --install

`scopes`: the embedded model pruned by 30% for math and code with the kit's default plan (per-layer,
first and last blocks whole) and with the plan stock `from_pretrained` loads (uniform, every block),
Taylor importance on the curated set; validation perplexity of the pruned model and after the
kit's recovery (self-distillation, the same steps), 3 seeds. Every cell is saved as it finishes
under runs/export-bench/.

`llama-cpp`: the GGUF export (float16) of a run's recovered model loaded by llama-cpp-python, pinned
below (`--install` builds it from the package index and records the build time; it compiles
llama.cpp, so it takes minutes and every core). 20 held-out documents of the run's domain are fed as
token ids, not text: mean absolute difference of next-token log-probabilities against the kit's
float32 model, and greedy agreement (per document, the share of the first 32 generated tokens that
are identical, averaged; target >= 0.9); generation speed of llama.cpp against the kit's float32
forward, both on 2 threads.
"""

from __future__ import annotations

import argparse
import importlib
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

import math  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.stats import mean_std  # noqa: E402
from finescope_nb.artifacts import write_json_atomic  # noqa: E402
from finescope_nb.basemodel import hardware  # noqa: E402
from finescope_nb.config import EvalConfig, FinetuneConfig, PruneConfig  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "export.json"
CELLS = ROOT / "runs" / "export-bench"
LLAMA_CPP_PIN = "llama-cpp-python==0.3.36"
PLANS = {"per_layer": PruneConfig(ratio=0.3), "uniform": PruneConfig(ratio=0.3, scope="uniform", first_layer=0, last_layer=-1)}


def scopes(args) -> dict:
    from benchmarks.common import workspace
    from finescope_nb.distill import finetune, prepare
    from finescope_nb.evaluate import domain_loss, heldout_sequences
    from finescope_nb.lm import layer_shapes, shapes_are_uniform
    from finescope_nb.prune import prune, sample_texts

    ws = workspace(argparse.Namespace(model=None, pool_per_domain=None, pool_seed=0), progress=False)  # embedded model, whole pool
    model, tokenizer = ws.model, ws.tokenizer
    val = heldout_sequences(tokenizer, EvalConfig(split="validation", domains=tuple(args.domains), max_docs_per_domain=args.val_docs))
    config = FinetuneConfig(steps=args.steps, eval_every=args.steps)
    records = []
    for domain in args.domains:
        curated = ws.curated(domain, args.m)  # kept: the same documents on any machine
        for seed in args.seeds:
            data = None
            for scope, plan in PLANS.items():
                path = args.cells / f"{domain}-{seed}-{scope}-r{plan.ratio}-s{args.steps}-m{args.m}.json"
                if not path.is_file():
                    start = time.perf_counter()
                    pruned = prune(model, tokenizer, sample_texts(curated["text"], 64, seed), plan.replace(seed=seed), progress=False)[0]
                    if data is None:
                        data = prepare(model, tokenizer, curated, curated.head(4), domain, seed=seed, progress=False)
                    recovered, _ = finetune(pruned, tokenizer, [e.prompt for e in data.examples], data.responses,
                                            config.replace(seed=seed), progress=False, checkpoint=path.with_suffix(".pt"), teacher=model)
                    write_json_atomic(path, {"pruned_loss": domain_loss(pruned, tokenizer, val[domain]),
                                             "recovered_loss": domain_loss(recovered, tokenizer, val[domain]),
                                             "uniform_shapes": shapes_are_uniform(layer_shapes(pruned)),
                                             "seconds": time.perf_counter() - start})
                cell = json.loads(path.read_text())
                records.append({"domain": domain, "seed": seed, "scope": scope, "pruned_ppl": math.exp(cell["pruned_loss"]),
                                "recovered_ppl": math.exp(cell["recovered_loss"]), "stock_loadable": cell["uniform_shapes"]})
                print(f"{domain} seed {seed} {scope:9s} pruned ppl {records[-1]['pruned_ppl']:.3f} "
                      f"recovered ppl {records[-1]['recovered_ppl']:.3f}", flush=True)
    base = {d: math.exp(domain_loss(model, tokenizer, val[d])) for d in args.domains}
    return {"ratio": 0.3, "seeds": args.seeds, "domains": args.domains, "base_ppl": base, "plans": {k: v.to_dict() for k, v in PLANS.items()},
            "pruned_ppl": mean_std(records, "pruned_ppl", ("scope", "domain")),
            "recovered_ppl": mean_std(records, "recovered_ppl", ("scope", "domain")),
            "details": {"steps": args.steps, "m": args.m, "val_docs": args.val_docs, "cells": records}}


def _llama_cpp(install: bool) -> tuple[object, dict]:
    info = {"package": LLAMA_CPP_PIN, "build_seconds": None}
    try:
        module = importlib.import_module("llama_cpp")
    except ImportError:
        if not install:
            raise SystemExit(f"llama_cpp is not installed; rerun with --install to build {LLAMA_CPP_PIN} (minutes, every core).")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-cache-dir", LLAMA_CPP_PIN], check=True)
        info["build_seconds"] = round(time.perf_counter() - start, 1)
        module = importlib.import_module("llama_cpp")
    info["version"] = module.__version__
    return module, info


def _agreement(a: list[int], b: list[int], n: int) -> float:
    """Share of the first `n` generated positions where both agree; after a generation stops (end of text) its
    positions hold "stopped", so two generations that stop at the same place agree there too."""
    pad = lambda seq: list(seq[:n]) + [None] * (n - len(seq[:n]))
    return sum(x == y for x, y in zip(pad(a), pad(b))) / n


def llama_cpp(args) -> dict:
    from finescope_nb.evaluate import heldout_sequences
    from finescope_nb.export import export
    from finescope_nb.lm import load_model, load_tokenizer
    from finescope_nb.report import load_run

    module, info = _llama_cpp(args.install)
    run = load_run(args.run)
    model = load_model(run.stages["recover"] / "model")
    tokenizer = load_tokenizer(run.stages["recover"] / "model")
    torch.set_num_threads(2)
    out = export(run.path, "gguf", "recovered", Path(tempfile.mkdtemp()) / "gguf")
    gguf_file = next(out.glob("*.gguf"))
    llm = module.Llama(model_path=str(gguf_file), n_ctx=512, n_threads=2, n_batch=512, logits_all=True, verbose=False)
    docs = heldout_sequences(tokenizer, EvalConfig(split="test", domains=(run.config.domain,), max_docs_per_domain=args.docs,
                                                   max_length=args.tokens))[run.config.domain][:args.docs]
    diffs, agreement, cpp_seconds, kit_seconds, generated = [], [], 0.0, 0.0, 0
    for doc in docs:
        ids = [int(t) for t in doc[:args.tokens]]
        llm.reset()
        llm.eval(ids)
        cpp = torch.log_softmax(torch.tensor(np.array(llm.scores[:len(ids)]), dtype=torch.float64), -1)
        with torch.no_grad():
            kit = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
        diffs.append(float((cpp - kit).abs().mean()))
        prompt = ids[:args.prompt_tokens]
        start = time.perf_counter()
        cpp_new = []
        for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            if token == llm.token_eos() or len(cpp_new) == 32:
                break
            cpp_new.append(int(token))
        cpp_seconds += time.perf_counter() - start
        start = time.perf_counter()
        with torch.no_grad():
            kit_out = model.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False, top_k=None, top_p=None,
                                     pad_token_id=tokenizer.pad_token_id)[0, len(prompt):].tolist()
        kit_seconds += time.perf_counter() - start
        kit_new = kit_out[:32]
        if tokenizer.eos_token_id in kit_new:
            kit_new = kit_new[:kit_new.index(tokenizer.eos_token_id)]
        generated += len(kit_new)
        agreement.append(_agreement(cpp_new, kit_new, 32))
    return {"llama_cpp": info, "gguf": gguf_file.name, "documents": len(diffs), "tokens_per_document": args.tokens,
            "mean_abs_logprob_diff": float(np.mean(diffs)), "greedy_agreement_32": float(np.mean(agreement)),
            "greedy_agreement_target_met": float(np.mean(agreement)) >= 0.9,
            "generation_tokens_per_s": {"llama_cpp_f16": generated / cpp_seconds, "kit_float32": generated / kit_seconds},
            "threads": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("scopes", "llama-cpp"), required=True)
    parser.add_argument("--domains", nargs="+", default=["math", "code"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--m", type=int, default=200)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--val-docs", type=int, default=120)
    parser.add_argument("--cells", type=Path, default=CELLS)
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "demo-math", help="llama-cpp: a finished run folder")
    parser.add_argument("--install", action="store_true", help=f"llama-cpp: build {LLAMA_CPP_PIN} if it is missing")
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result[args.part.replace("-", "_")] = scopes(args) if args.part == "scopes" else llama_cpp(args)
    result["hardware"] = hardware()
    write_json_atomic(args.out, result)
    print(json.dumps({k: v for k, v in result[args.part.replace("-", "_")].items() if k != "details"}, indent=2))


if __name__ == "__main__":
    main()
