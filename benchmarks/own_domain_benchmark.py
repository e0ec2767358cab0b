"""A domain the kit has never seen, end to end: scripture mixed unlabelled into the embedded pool.
Writes benchmarks/results/own_domain.json.

    python benchmarks/own_domain_benchmark.py              # retrieval, then one `finescope run` (about 40 min, 2 cores)
    python benchmarks/own_domain_benchmark.py --no-run     # retrieval only

The pool is the whole embedded pool plus the pool chunks of data/new_domain/ (the King James Bible,
built by data/build_new_domain.py), shuffled, written to runs/own-domain-bench/corpus.jsonl with
`text` alone (no ids, which would name the domain): what a user would hand to `--corpus`. Scripture documents are the target;
every other document is a distractor. Retrieval is measured with the labels the kit never sees:
precision@500, precision@1000 and recall@1000 of the scripture chunks, for
- the default SAE selector on the kit's default SAE (trained on the embedded pool: without the new
  corpus) and on the SAE `finescope curate --corpus` trains (on the user's corpus: with it),
- the dense centred-centroid, hashed n-gram (DSIR-style) and random baselines,
each over 5 draws of 10 seeds from data/new_domain/seed_candidates.jsonl.gz (books the pool lacks).
Then one `finescope run --corpus ... --seeds data/new_domain/seeds.txt --domain scripture --eval
data/new_domain/heldout.jsonl.gz` on the embedded model; its retained score on the held-out file
is recorded with the run's base, pruned and recovered perplexities.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import sae_config, set_threads  # noqa: E402
from benchmarks.curation_benchmark import embed  # noqa: E402
from finescope_nb import paths  # noqa: E402
from finescope_nb.artifacts import write_json_atomic  # noqa: E402
from finescope_nb.corpus import load_pool  # noqa: E402
from finescope_nb.curate import (DenseSelector, HashedNgramSelector, RandomSelector, SAESelector, SparseCodes,  # noqa: E402
                                 default_sae_selector, evaluate_selectors, summarize)

NEW = ROOT / "data" / "new_domain"
WORK = paths.DEFAULT_RUNS_DIR / "own-domain-bench"
RESULT = ROOT / "benchmarks" / "results" / "own_domain.json"
DOMAIN, SEEDS_PER_DRAW, DRAWS, MS = "scripture", 10, 5, (500, 1000)
# What `finescope curate` measures a corpus SAE's card on (curation_run.curate_corpus), so the run reuses this SAE.
CARD = dict(heldout_docs=500, heldout_tokens=50_000, loss_tokens=20_000)


def read_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def mixed_pool(seed: int = 0) -> pd.DataFrame:
    """The embedded pool and the new domain's pool chunks, shuffled; `target` marks the new domain's."""
    embedded = load_pool().to_pandas()[["id", "text"]].assign(target=False)
    new = pd.DataFrame(read_gz(NEW / "pool.jsonl.gz"))[["id", "text"]].assign(target=True)
    pool = pd.concat([embedded, new], ignore_index=True)
    return pool.iloc[np.random.default_rng(seed).permutation(len(pool))].reset_index(drop=True)


def write_corpus(pool: pd.DataFrame) -> Path:
    """The pool as a user's unlabelled corpus file (written once; the run and the SAE cache key on its content)."""
    path = WORK / "corpus.jsonl"
    if not path.is_file():
        WORK.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in pool["text"]), encoding="utf-8")
        tmp.replace(path)
    return path


def retrieval(pool: pd.DataFrame, progress: bool = True) -> dict:
    from finescope_nb.lm import load_model, load_tokenizer
    from finescope_nb.sae.cache import cached_sae, corpus_sae_texts

    model, tokenizer = load_model(None), load_tokenizer(None)
    config = sae_config(None)
    texts = pool["text"].tolist()
    saes = {"without": cached_sae(model, tokenizer, config, progress=progress),
            "with": cached_sae(model, tokenizer, config, progress=progress, texts=corpus_sae_texts(texts, config), **CARD)}
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:12]
    cache = WORK / f"codes-{'-'.join(s.config.config_hash() for s in saes.values())}-{digest}.npz"
    if cache.is_file():
        data = np.load(cache)
        dense = data["dense"]
        codes = {(k, "mean"): SparseCodes(data[f"{k}_indices"], data[f"{k}_values"], saes[k].d_sae) for k in saes}
    else:
        dense, codes = embed(saes, model, tokenizer, texts, progress)
        np.savez(cache, dense=dense, **{f"{k}_{a}": getattr(codes[k, "mean"], a) for k in saes for a in ("indices", "values")})
    selectors = {"sae default selector, SAE without the new corpus": default_sae_selector(),
                 "sae default selector, SAE with the new corpus": default_sae_selector(),
                 "dense centred centroid": DenseSelector(centre=True), "ngram dsir (per-ngram mean)": HashedNgramSelector(),
                 "random": RandomSelector(seed=0)}
    sae_of = {name: "with" if "with the" in name else "without" for name in selectors if name.startswith("sae")}

    def represent(name, dense_x, codes_x, texts_x):
        selector = selectors[name]
        if isinstance(selector, SAESelector):
            return codes_x[sae_of[name], "mean"]
        if isinstance(selector, DenseSelector):
            return dense_x
        return selector.prepare(texts_x) if isinstance(selector, HashedNgramSelector) else len(texts_x)

    prepared = {name: represent(name, dense, codes, texts) for name in selectors}
    candidates = read_gz(NEW / "seed_candidates.jsonl.gz")
    drawn = {}

    def seeds_for(target, draw):
        if draw not in drawn:
            rows = np.random.default_rng(draw).choice(len(candidates), SEEDS_PER_DRAW, replace=False)
            seed_texts = [candidates[i]["text"] for i in rows]
            seed_dense, seed_codes = embed(saes, model, tokenizer, seed_texts)
            drawn[draw] = {name: represent(name, seed_dense, seed_codes, seed_texts) for name in selectors}
        return drawn[draw]

    labels = np.where(pool["target"].to_numpy(), DOMAIN, "other")
    table = {name: {"top_500_by_source_draw_0": top_sources(selector, prepared[name], seeds_for(DOMAIN, 0)[name], pool)}
             for name, selector in selectors.items()}
    for m in MS:
        results = summarize(evaluate_selectors(selectors, prepared, labels, [DOMAIN], seeds_for, m=m, draws=DRAWS,
                                               progress=progress))
        for row in results.itertuples():
            entry = table[row.selector]
            entry[f"precision_at_{m}"] = {"mean": round(row.precision_mean, 4), "std": round(row.precision_std, 4)}
            if m == 1000:
                entry["recall_at_1000"] = {"mean": round(row.recall_mean, 4), "std": round(row.recall_std, 4)}
                entry["auroc"] = {"mean": round(row.auroc_mean, 4), "std": round(row.auroc_std, 4)}
    n_target = int(pool["target"].sum())
    return {"pool_docs": len(pool), "target_docs": n_target, "seeds_per_draw": SEEDS_PER_DRAW, "draws": DRAWS,
            "ceiling": {"precision_at_500": min(1.0, n_target / 500), "precision_at_1000": min(1.0, n_target / 1000),
                        "recall_at_1000": min(1.0, 1000 / n_target)},
            "sae": {k: {"trained_on": "the embedded pool" if k == "without" else "the mixed corpus (the user's --corpus)",
                        "layer": s.layer, "d_sae": s.d_sae,
                        "metrics": {m: s.metrics.get(m) for m in ("explained_variance", "l0", "dead_fraction", "loss_recovered")}}
                    for k, s in saes.items()},
            "selectors": table}


def top_sources(selector, prepared, seeds, pool: pd.DataFrame, m: int = 500) -> dict:
    """Where a selection's documents come from: the embedded domain in each pool id (a label the selector never sees)."""
    top = np.argsort(-selector.fit(seeds).score(prepared), kind="stable")[:m]
    source = pool["id"].iloc[top].str.split("/").str[0]
    return {k: int(v) for k, v in source.value_counts().items()}


def one_run(corpus: Path) -> dict:
    """`finescope run` on the new domain with the user's inputs, then its retained score on the held-out file."""
    from finescope_nb.report import compare_runs

    run_dir = WORK / "run"
    command = [sys.executable, "-m", "finescope_nb.cli", "run", "--corpus", str(corpus), "--seeds", str(NEW / "seeds.txt"),
               "--domain", DOMAIN, "--eval", str(NEW / "heldout.jsonl.gz"), "--run-dir", str(run_dir)]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    row = compare_runs([run_dir]).set_index("domain").loc[DOMAIN]
    rel = lambda p: str(Path(p).relative_to(ROOT)) if Path(p).is_relative_to(ROOT) else str(p)
    return {"command": "finescope " + " ".join(rel(c) if "/" in c else c for c in command[3:]),
            "wall_seconds_this_call": round(time.perf_counter() - start, 1),
            "wall_note": "a resumed run counts only what this call did",
            **{k: round(float(row[k]), 4) for k in ("base_ppl", "pruned_ppl", "recovered_ppl", "retained")},
            "ratio": float(row["ratio"]), "criterion": row["criterion"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-run", action="store_true", help="retrieval only; no finescope run")
    args = parser.parse_args()
    set_threads()
    out = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
    pool = mixed_pool()
    corpus = write_corpus(pool)
    out["data"] = json.loads((NEW / "sources.lock.json").read_text()) | {
        "domain": DOMAIN, "built_by": "data/build_new_domain.py", "data_sheet": "data/new_domain/README.md"}
    out["retrieval"] = retrieval(pool)
    write_json_atomic(RESULT, out)
    if not args.no_run:
        out["run"] = one_run(corpus)
    out["hardware"] = {"machine": platform.machine(), "threads": torch.get_num_threads(), "python": platform.python_version(),
                       "torch": torch.__version__}
    write_json_atomic(RESULT, out)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
