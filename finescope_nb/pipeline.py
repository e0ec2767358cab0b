"""FineScope's stages end to end, each cached in the run folder by its config hash.

Used by `finescope run` and notebook 00: evaluate the base model; train (or load) the SAE; curate
the domain's documents from its seeds; prune with importance on the curated set; recover by
self-data distillation; evaluate the pruned and the recovered model. A stage's cache key is its
own config hash combined with the keys of the stages it reads, so changing, say, the pruning
ratio recomputes pruning, recovery and their evaluations, and nothing before them.

Inside a stage, the long steps keep checkpoints in the run folder (`checkpoints/<stage>-<key>/`):
the importance scores before planning, the teacher's responses chunk by chunk, the fine-tuning
state at every evaluation, each finished metric of an evaluation. A run killed mid-stage and
started again picks up from there. `progress.json` names the folder of every finished stage of
the current config, which is what `finescope report` reads.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from finescope_nb.adapters import get_adapter
from finescope_nb.artifacts import PROGRESS_FILE, RunFolder, atomic_path, stage_key, write_json_atomic
from finescope_nb.config import RunConfig
from finescope_nb.corpus import check_domain, load_seeds, load_user_corpus, load_user_seeds
from finescope_nb.curate.workspace import cached_pool_codes, curate_top, pool_sample
from finescope_nb.distill import prepare, run_arm
from finescope_nb.evaluate import domain_loss, domain_perplexity, evaluate as evaluate_metrics, heldout_sequences, retained
from finescope_nb.evaluate.registry import covering
from finescope_nb.lm import load_model, load_tokenizer, model_identity, save_model
from finescope_nb.paths import DEFAULT_RUNS_DIR
from finescope_nb.prune import apply_plan, compute_importance, plan_pruning, sample_texts, save_pruned
from finescope_nb.prune.importance import ImportanceScores
from finescope_nb.sae.cache import cached_sae, default_sae_config


def fast_mode() -> bool:
    """FINESCOPE_FAST=1 shrinks every stage so notebooks and CI finish in minutes."""
    return os.environ.get("FINESCOPE_FAST", "") not in ("", "0")


def default_config(domain: str = "math", **overrides) -> RunConfig:
    """The kit's defaults for a domain (the full-size ones, or the FINESCOPE_FAST ones)."""
    cfg = RunConfig(domain=domain, **overrides)
    if fast_mode():
        cfg = cfg.replace(eval=cfg.eval.replace(max_docs_per_domain=24, metric_limit=24), curation=cfg.curation.replace(m=60),
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
    metrics: pd.DataFrame | None = None  # per model (base / pruned / recovered), metric and group: score and chance
    stages: dict[str, str] = field(default_factory=dict)  # finished stage -> its folder in the run folder


def _pool(config: RunConfig) -> pd.DataFrame:
    if config.corpus.path:
        df = load_user_corpus(config.corpus.path).to_pandas()
        df["id"] = df["id"].astype(str)
        return df
    return pool_sample(24 if fast_mode() else config.corpus.max_docs_per_domain, seed=config.corpus.seed)


def seed_texts(config: RunConfig) -> list[str]:
    """The seed examples the run curates from: the user's seeds file, or held-out seeds of the domain."""
    if config.curation.seeds_path:
        return load_user_seeds(config.curation.seeds_path)
    return list(load_seeds(domain=config.domain, n=config.curation.n_seeds, seed=config.curation.seed)["text"])


def _save_frame(df: pd.DataFrame, folder: Path, name: str) -> None:
    df.to_csv(folder / name, index=False)


def _metric_frames(model, tokenizer, cfg, checkpoints: Path) -> pd.DataFrame:
    """Every task metric of `cfg` that covers one of its domains, each saved to `checkpoints` as it finishes,
    so a rerun skips finished ones."""
    frames = []
    for name in covering(cfg.metrics, cfg.domains) if cfg.metrics else ():
        done = checkpoints / f"{name}.csv"
        if not done.is_file():
            df = evaluate_metrics(model, tokenizer, [name], cfg.domains, limit=cfg.metric_limit, batch_size=cfg.batch_size,
                                  split=cfg.split)
            with atomic_path(done) as tmp:
                df.to_csv(tmp, index=False)
        frames.append(pd.read_csv(done))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run(config: RunConfig | None = None, run_dir: str | Path | None = None, progress: bool = True) -> RunResult:
    """Run every stage on `config`, reusing cached stage results (and mid-stage checkpoints) in `run_dir`."""
    t0 = time.perf_counter()
    config = config or default_config()
    check_domain(config.domain)
    if config.eval.metrics:
        covering(config.eval.metrics, config.eval.domains)  # unknown or useless metrics fail before any work
    run_dir = Path(run_dir) if run_dir else DEFAULT_RUNS_DIR / f"{config.domain}-{config.config_hash(8)}"
    folder = RunFolder(run_dir, config)
    finished: dict[str, str] = {}
    write_json_atomic(folder.path / PROGRESS_FILE, {"stages": finished})  # nothing of this config is finished yet

    def stage(name: str, key: str, compute, save, load):
        """A cached stage, recorded in progress.json once it is finished."""
        result = folder.cached(name, key, compute=lambda: compute(folder.checkpoint_dir(name, key)), save=save, load=load)
        shutil.rmtree(folder.path / "checkpoints" / f"{name}-{key}", ignore_errors=True)
        finished[name] = str(folder.stage_dir(name, key).relative_to(folder.path))
        write_json_atomic(folder.path / PROGRESS_FILE, {"stages": finished})
        return result

    pool = _pool(config)
    model, tokenizer = load_model(config.model.path), load_tokenizer(config.model.path)
    model_key = model_identity(model)
    # the embedded held-out splits (also for a user's corpus), tokenised only if some evaluation is not cached
    sequences = functools.cache(lambda: heldout_sequences(tokenizer, config.eval))

    def evaluate(name: str, key: str, get_model) -> tuple[pd.DataFrame, pd.DataFrame]:
        def compute(ckpt: Path):
            m = get_model()
            return (domain_perplexity(m, tokenizer, config.eval, sequences(), progress=progress),
                    _metric_frames(m, tokenizer, config.eval, ckpt))

        def save(result, d: Path) -> None:
            _save_frame(result[0], d, "ppl.csv")
            if len(result[1]):
                _save_frame(result[1], d, "metrics.csv")

        def load(d: Path):
            return pd.read_csv(d / "ppl.csv"), (pd.read_csv(d / "metrics.csv") if (d / "metrics.csv").is_file() else pd.DataFrame())

        return stage(f"eval-{name}", key, compute, save, load)

    base_ppl, base_metrics = evaluate("base", stage_key(config.eval, model_key), lambda: model)

    # the SAE's held-out card is measured on fewer tokens than the SAE benchmark uses, to keep `make demo` short
    sae = cached_sae(model, tokenizer, default_sae_config(fast=fast_mode()), progress=progress,
                     **(dict(heldout_docs=60, heldout_tokens=4_000, loss_tokens=2_000) if fast_mode()
                        else dict(heldout_docs=500, heldout_tokens=50_000, loss_tokens=20_000)))
    seeds = seed_texts(config)
    # the documents and seeds themselves, not just their ids and path: an edited corpus or seeds file recurates
    pool_key = hashlib.sha256("\x00".join([*pool["id"], *pool["text"], "\x01", *seeds]).encode()).hexdigest()[:12]
    curate_key = stage_key(config.curation, model_key, sae.config.config_hash(), pool_key, config.domain)

    def curate(_ckpt: Path) -> pd.DataFrame:
        codes = cached_pool_codes(sae, model, tokenizer, pool, progress=progress)
        return curate_top(sae, model, tokenizer, pool, codes, seeds, min(config.curation.m, len(pool)))

    curated = stage("curate", curate_key, curate, save=lambda df, d: _save_frame(df, d, "curated.csv"),
                    load=lambda d: pd.read_csv(d / "curated.csv", keep_default_na=False))

    prune_key = stage_key(config.prune, curate_key)

    def prune_stage(ckpt: Path):
        saved = ckpt / "importance.pt"
        if saved.is_file():
            scores = ImportanceScores(**torch.load(saved, weights_only=True))
        else:
            texts = sample_texts(curated["text"], config.prune.calibration_docs, config.prune.seed)
            scores = compute_importance(model, tokenizer, texts, config.prune, progress=progress)
            with atomic_path(saved) as tmp:
                torch.save(vars(scores), tmp)
        plan = plan_pruning(model, scores, config.prune)
        return apply_plan(model, plan), plan

    pruned = stage("prune", prune_key, prune_stage,
                   save=lambda result, d: save_pruned(result[0], tokenizer, d / "model", result[1], config.prune),
                   load=lambda d: (load_model(d / "model"), None))[0]

    val_config = config.eval.replace(split="validation", domains=(config.domain,), metrics=(), metric_limit=None)
    recover_key = stage_key(config.finetune, prune_key, val_config.config_hash())  # validation picks kept weights

    def recover(ckpt: Path):
        data = prepare(model, tokenizer, curated, None, config.domain, seed=config.seed, progress=progress,
                       checkpoint=ckpt / "teacher.json")
        val = heldout_sequences(tokenizer, val_config)[config.domain]
        student, history = run_arm(pruned, tokenizer, data, "self_distill", config.finetune,
                                   evaluate=lambda m: domain_loss(m, tokenizer, val), progress=progress,
                                   checkpoint=ckpt / "finetune.pt", teacher=model)
        return student, history, data.keep_rate

    def save_recovered(result, d: Path) -> None:
        student, history, keep_rate = result
        save_model(student, tokenizer, d / "model")
        _save_frame(history, d, "history.csv")
        write_json_atomic(d / "recovery.json", {"keep_rate": keep_rate})

    recovered = stage("recover", recover_key, recover, save=save_recovered,
                      load=lambda d: (load_model(d / "model"), pd.read_csv(d / "history.csv"),
                                      json.loads((d / "recovery.json").read_text())["keep_rate"]))[0]

    pruned_ppl, pruned_metrics = evaluate("pruned", stage_key(config.eval, prune_key), lambda: pruned)
    recovered_ppl, recovered_metrics = evaluate("recovered", stage_key(config.eval, recover_key), lambda: recovered)
    table = base_ppl[["domain", "ppl", "loss"]].rename(columns={"ppl": "base_ppl", "loss": "base_loss"})
    table["pruned_ppl"] = pruned_ppl["ppl"].to_numpy()
    table["recovered_ppl"] = recovered_ppl["ppl"].to_numpy()
    table["retained"] = [retained(loss, base) for loss, base in zip(recovered_ppl["loss"], table["base_loss"])]
    table = table.drop(columns="base_loss")
    metrics = pd.concat([df.assign(model=name) for name, df in
                         (("base", base_metrics), ("pruned", pruned_metrics), ("recovered", recovered_metrics)) if len(df)],
                        ignore_index=True) if len(base_metrics) else pd.DataFrame()
    seconds = time.perf_counter() - t0
    write_json_atomic(folder.path / "summary.json", {
        "domain": config.domain, "model_identity": model_key, "pool_size": len(pool), "curated": len(curated),
        "curated_domain_share": float((curated["domain"] == config.domain).mean()) if "domain" in curated else None,
        "params_non_embedding": {name: get_adapter(m).non_embedding_parameters(m) for name, m in (("base", model), ("pruned", pruned))},
        "base_ppl": dict(zip(base_ppl["domain"], base_ppl["ppl"].round(3))),
        "table": table.round(4).to_dict(orient="records"),
        "metrics": metrics.round(4).to_dict(orient="records") if len(metrics) else [],
        "stages": finished, "seconds": round(seconds, 2),
    })
    return RunResult(folder.path, base_ppl, len(pool), seconds, table, metrics if len(metrics) else None, dict(finished))
