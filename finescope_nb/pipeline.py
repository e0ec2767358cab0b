"""FineScope's stages end to end, each cached in the run folder by its config hash.

Used by `finescope run` and notebook 00. Stages that exist so far: load the corpus and the base
model, then evaluate the base model per domain. Later stages (SAE, curation, pruning, recovery)
slot in between as further cached calls with the same shape.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from finescope_nb.artifacts import RunFolder, stage_key, write_json_atomic
from finescope_nb.config import RunConfig
from finescope_nb.corpus import check_domain, load_pool, load_user_corpus
from finescope_nb.evaluate import domain_perplexity
from finescope_nb.lm import load_model, load_tokenizer, model_identity
from finescope_nb.paths import DEFAULT_RUNS_DIR


def fast_mode() -> bool:
    """FINESCOPE_FAST=1 shrinks every stage so notebooks and CI finish in minutes."""
    return os.environ.get("FINESCOPE_FAST", "") not in ("", "0")


def default_config(domain: str = "math", **overrides) -> RunConfig:
    cfg = RunConfig(domain=domain, **overrides)
    if fast_mode():
        cfg = cfg.replace(eval=cfg.eval.replace(max_docs_per_domain=24))
    return cfg


@dataclass
class RunResult:
    run_dir: Path
    base_ppl: pd.DataFrame
    pool_size: int
    seconds: float


def run(config: RunConfig | None = None, run_dir: str | Path | None = None, progress: bool = True) -> RunResult:
    """Run every stage that exists on `config`, reusing cached stage results in `run_dir`."""
    t0 = time.perf_counter()
    config = config or default_config()
    check_domain(config.domain)
    run_dir = Path(run_dir) if run_dir else DEFAULT_RUNS_DIR / f"{config.domain}-{config.config_hash(8)}"
    folder = RunFolder(run_dir, config)
    pool = load_user_corpus(config.corpus.path) if config.corpus.path else load_pool()
    model = load_model(config.model.path)
    tokenizer = load_tokenizer(config.model.path)
    model_key = model_identity(model)

    base_ppl = folder.cached(
        "eval-base", stage_key(config.eval, model_key),
        compute=lambda: domain_perplexity(model, tokenizer, config.eval, progress=progress),
        save=lambda df, d: df.to_csv(d / "ppl.csv", index=False),
        load=lambda d: pd.read_csv(d / "ppl.csv"),
    )
    write_json_atomic(folder.path / "summary.json", {
        "domain": config.domain, "model_identity": model_key, "pool_size": len(pool),
        "base_ppl": dict(zip(base_ppl["domain"], base_ppl["ppl"].round(3))),
    })
    return RunResult(folder.path, base_ppl, len(pool), time.perf_counter() - t0)

