"""FineScope's stages end to end, each cached in the run folder by its config hash.

Used by `finescope run` and notebook 00: evaluate the base model; train (or load) the SAE; curate
the domain's documents from its seeds; prune with importance on the curated set; recover by
self-data distillation; evaluate the pruned and the recovered model. A stage's cache key is its
own config hash combined with the keys of the stages it reads, so changing, say, the pruning
ratio recomputes pruning, recovery and their evaluations, and nothing before them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from finescope_nb.adapters import get_adapter
from finescope_nb.artifacts import RunFolder, stage_key, write_json_atomic
from finescope_nb.config import RunConfig
from finescope_nb.corpus import check_domain, load_seeds, load_user_corpus, load_user_seeds
from finescope_nb.curate.workspace import cached_pool_codes, curate_top, pool_sample
from finescope_nb.distill import prepare, run_arm
from finescope_nb.evaluate import domain_loss, domain_perplexity, heldout_sequences, retained
from finescope_nb.lm import load_model, load_tokenizer, model_identity, save_model
from finescope_nb.paths import DEFAULT_RUNS_DIR
from finescope_nb.prune import apply_plan, compute_importance, plan_pruning, sample_texts, save_pruned
from finescope_nb.sae.cache import cached_sae, default_sae_config


def fast_mode() -> bool:
    """FINESCOPE_FAST=1 shrinks every stage so notebooks and CI finish in minutes."""
    return os.environ.get("FINESCOPE_FAST", "") not in ("", "0")


def default_config(domain: str = "math", **overrides) -> RunConfig:
    """The kit's defaults for a domain (the full-size ones, or the FINESCOPE_FAST ones)."""
    cfg = RunConfig(domain=domain, **overrides)
    if fast_mode():
        cfg = cfg.replace(eval=cfg.eval.replace(max_docs_per_domain=24), curation=cfg.curation.replace(m=60),
                          prune=cfg.prune.replace(calibration_docs=16, max_length=128),
                          finetune=cfg.finetune.replace(steps=12, eval_every=4, max_length=128))
    return cfg


@dataclass
class RunResult:
    run_dir: Path
    base_ppl: pd.DataFrame
    pool_size: int
    seconds: float
    table: pd.DataFrame | None = None  # per domain: base / pruned / recovered perplexity and retained


def _pool(config: RunConfig) -> pd.DataFrame:
    if config.corpus.path:
        df = load_user_corpus(config.corpus.path).to_pandas()
        df["id"] = df["id"].astype(str)
        return df
    return pool_sample(24 if fast_mode() else config.corpus.max_docs_per_domain, seed=config.corpus.seed)


def _seeds(config: RunConfig) -> list[str]:
    if config.curation.seeds_path:
        return load_user_seeds(config.curation.seeds_path)
    return list(load_seeds(domain=config.domain, n=config.curation.n_seeds, seed=config.curation.seed)["text"])


def _save_frame(df: pd.DataFrame, folder: Path, name: str) -> None:
    df.to_csv(folder / name, index=False)


def run(config: RunConfig | None = None, run_dir: str | Path | None = None, progress: bool = True) -> RunResult:
    """Run every stage on `config`, reusing cached stage results in `run_dir`."""
    t0 = time.perf_counter()
    config = config or default_config()
    check_domain(config.domain)
    run_dir = Path(run_dir) if run_dir else DEFAULT_RUNS_DIR / f"{config.domain}-{config.config_hash(8)}"
    folder = RunFolder(run_dir, config)
    pool = _pool(config)
    model, tokenizer = load_model(config.model.path), load_tokenizer(config.model.path)
    model_key = model_identity(model)
    # the embedded held-out splits (also for a user's corpus), tokenised only if some evaluation is not cached
    sequences = functools.cache(lambda: heldout_sequences(tokenizer, config.eval))

    def evaluate(name: str, key: str, get_model) -> pd.DataFrame:
        return folder.cached(f"eval-{name}", key, compute=lambda: domain_perplexity(get_model(), tokenizer, config.eval, sequences(),
                                                                                    progress=progress),
                             save=lambda df, d: _save_frame(df, d, "ppl.csv"), load=lambda d: pd.read_csv(d / "ppl.csv"))

    base_ppl = evaluate("base", stage_key(config.eval, model_key), lambda: model)

    sae = cached_sae(model, tokenizer, default_sae_config(fast=fast_mode()), progress=progress,
                     **(dict(heldout_docs=60, heldout_tokens=4_000, loss_tokens=2_000) if fast_mode() else {}))
    pool_key = hashlib.sha256("\n".join(pool["id"]).encode()).hexdigest()[:12]
    curate_key = stage_key(config.curation, model_key, sae.config.config_hash(), pool_key, config.domain)

    def curate() -> pd.DataFrame:
        codes = cached_pool_codes(sae, model, tokenizer, pool, progress=progress)
        return curate_top(sae, model, tokenizer, pool, codes, _seeds(config), min(config.curation.m, len(pool)))

    curated = folder.cached("curate", curate_key, compute=curate, save=lambda df, d: _save_frame(df, d, "curated.csv"),
                            load=lambda d: pd.read_csv(d / "curated.csv", keep_default_na=False))

    prune_key = stage_key(config.prune, curate_key)

    def prune_stage():
        texts = sample_texts(curated["text"], config.prune.calibration_docs, config.prune.seed)
        scores = compute_importance(model, tokenizer, texts, config.prune, progress=progress)
        plan = plan_pruning(model, scores, config.prune)
        return apply_plan(model, plan), plan

    pruned = folder.cached("prune", prune_key, compute=prune_stage,
                           save=lambda result, d: save_pruned(result[0], tokenizer, d / "model", result[1], config.prune),
                           load=lambda d: (load_model(d / "model"), None))[0]

    recover_key = stage_key(config.finetune, prune_key)

    def recover():
        random_records = pool.sample(len(curated), random_state=config.seed)
        data = prepare(model, tokenizer, curated, random_records, config.domain, seed=config.seed, progress=progress)
        val = heldout_sequences(tokenizer, config.eval.replace(split="validation", domains=(config.domain,)))[config.domain]
        student, history = run_arm(pruned, tokenizer, data, "self_distill", config.finetune,
                                   evaluate=lambda m: domain_loss(m, tokenizer, val), progress=progress)
        return student, history, data.keep_rate

    def save_recovered(result, d: Path) -> None:
        student, history, keep_rate = result
        save_model(student, tokenizer, d / "model")
        _save_frame(history, d, "history.csv")
        write_json_atomic(d / "recovery.json", {"keep_rate": keep_rate})

    recovered = folder.cached("recover", recover_key, compute=recover, save=save_recovered,
                              load=lambda d: (load_model(d / "model"), pd.read_csv(d / "history.csv"),
                                              json.loads((d / "recovery.json").read_text())["keep_rate"]))[0]

    pruned_ppl = evaluate("pruned", stage_key(config.eval, prune_key), lambda: pruned)
    recovered_ppl = evaluate("recovered", stage_key(config.eval, recover_key), lambda: recovered)
    table = base_ppl[["domain", "ppl", "loss"]].rename(columns={"ppl": "base_ppl", "loss": "base_loss"})
    table["pruned_ppl"] = pruned_ppl["ppl"].to_numpy()
    table["recovered_ppl"] = recovered_ppl["ppl"].to_numpy()
    table["retained"] = [retained(loss, base) for loss, base in zip(recovered_ppl["loss"], table["base_loss"])]
    table = table.drop(columns="base_loss")
    write_json_atomic(folder.path / "summary.json", {
        "domain": config.domain, "model_identity": model_key, "pool_size": len(pool), "curated": len(curated),
        "curated_domain_share": float((curated["domain"] == config.domain).mean()) if "domain" in curated else None,
        "params_non_embedding": {name: get_adapter(m).non_embedding_parameters(m) for name, m in (("base", model), ("pruned", pruned))},
        "base_ppl": dict(zip(base_ppl["domain"], base_ppl["ppl"].round(3))),
        "table": table.round(4).to_dict(orient="records"),
    })
    return RunResult(folder.path, base_ppl, len(pool), time.perf_counter() - t0, table)

