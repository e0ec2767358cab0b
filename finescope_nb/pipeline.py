"""FineScope's stages end to end, each cached in the run folder by its config hash.

Used by `finescope run` and notebook 00: evaluate the base model; train (or load) the SAE; curate
the domain's documents from its seeds; prune with importance on the curated set; recover by
self-data distillation; evaluate the pruned and the recovered model. A stage's cache key is its
own config hash combined with the keys of the stages it reads, so changing, say, the pruning
ratio recomputes pruning, recovery and their evaluations, and nothing before them.

Inside a stage, the long steps keep checkpoints in the run folder (`checkpoints/<stage>-<key>/`):
the importance scores before planning, the fine-tuning state at every evaluation, each finished
metric of an evaluation. The teacher's responses, chunk by chunk, go to runs/teacher/, where a run
at another ratio of the same curated set finds them. A run killed mid-stage and started again picks
up from there; a stage that a run folder beside it finished under the same key is taken over.
`progress.json` names the folder of every finished stage of the current config, which is what
`finescope report` reads.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from finescope_nb.adapters import get_adapter
from finescope_nb.artifacts import PROGRESS_FILE, RUN_FILE, RunFolder, atomic_path, stage_key, write_json_atomic
from finescope_nb.config import RunConfig
from finescope_nb import distributed, paths
from finescope_nb.curate.workspace import cached_pool_codes, curate_top
from finescope_nb.device import resolve_dtype, run_device
from finescope_nb.distill import prepare, run_arm
from finescope_nb.evaluate import (domain_loss, domain_perplexity, evaluate as evaluate_metrics, heldout_sequences, retained,
                                   tokenize_texts)
from finescope_nb.evaluate.own_heldout import embedded_part, heldout_cloze, sequences_with_heldout
from finescope_nb.evaluate.registry import covering
from finescope_nb.hashing import text_digest
from finescope_nb.inputs import check_run_inputs, slug
from finescope_nb.lm import load_model, model_folder, model_identity, save_model
from finescope_nb.models.card import carry_provenance, read_provenance
from finescope_nb.models.registry import named_defaults
from finescope_nb.paths import DEFAULT_RUNS_DIR
from finescope_nb.prune import apply_plan, compute_importance, plan_pruning, sample_texts, save_pruned
from finescope_nb.prune.importance import ImportanceScores
from finescope_nb.sae.cache import cached_sae, corpus_sae_texts, default_sae_config, embedded_sae_source


def fast_mode() -> bool:
    """FINESCOPE_FAST=1 shrinks every stage so notebooks and CI finish in minutes."""
    return os.environ.get("FINESCOPE_FAST", "") not in ("", "0")


def notebook_model() -> str | None:
    """The model the notebooks use: FINESCOPE_MODEL (a named model such as smollm2-135m, or a model folder),
    else None, the embedded tiny Llama (what CI runs)."""
    return os.environ.get("FINESCOPE_MODEL") or None


def default_config(domain: str = "math", method: str | None = None, **overrides) -> RunConfig:
    """The kit's defaults for a domain (the full-size ones, or the FINESCOPE_FAST ones), with the registry's
    measured stage defaults when `model` names a named model (`ModelConfig(path="smollm2-135m")`).

    `method` ("lora" or "full"; default the kit's) picks the fine-tuning method first, so that a named
    model's fine-tuning defaults are that method's own, or the kit's generic ones where none were measured."""
    cfg = RunConfig(domain=domain, **overrides)
    if method is not None:
        cfg = cfg.replace(finetune=cfg.finetune.replace(method=method))
    for stage, fields in named_defaults(cfg.model.path, "run").items():
        fields = fields.get(cfg.finetune.method, {}) if stage == "finetune" else fields
        cfg = cfg.replace(**{stage: getattr(cfg, stage).replace(**fields)})
    if fast_mode():
        cfg = cfg.replace(eval=cfg.eval.replace(max_docs_per_domain=24, metric_limit=24), curation=cfg.curation.replace(m=60),
                          prune=cfg.prune.replace(calibration_docs=16, max_length=128),
                          finetune=cfg.finetune.replace(steps=12, eval_every=4, max_length=128))
    return cfg


DEMO_RUN = "demo-{domain}"  # the run folder `make demo` writes: finescope run --domain math --run-dir runs/demo-math


def demo_run_dir(config: RunConfig, runs_dir: str | Path | None = None) -> Path | None:
    """The folder `make demo` ran into when it holds a run of exactly `config`, else None.

    A notebook that runs the same configuration then loads every stage from it instead of
    recomputing them for minutes in a folder of its own. Only an exact match counts (the whole
    config's hash, not just the stage keys), so the demo's folder is never rewritten with another config."""
    folder = Path(runs_dir if runs_dir is not None else DEFAULT_RUNS_DIR) / DEMO_RUN.format(domain=slug(config.domain))
    try:
        stored = RunConfig.from_json((folder / RUN_FILE).read_text())
    except (OSError, ValueError):  # no demo run, or an unreadable run.json
        return None
    return folder if stored.config_hash() == config.config_hash() else None


def default_run_dir(config: RunConfig) -> Path:
    """Where a run without --run-dir goes: `make demo`'s folder if it holds exactly this config (so a notebook or
    a second `finescope run` of the demo's settings loads every stage instead of recomputing it elsewhere),
    else runs/<domain>-<config hash>."""
    return demo_run_dir(config) or DEFAULT_RUNS_DIR / f"{slug(config.domain)}-{config.config_hash(8)}"


@dataclass
class RunResult:
    run_dir: Path
    base_ppl: pd.DataFrame
    pool_size: int
    seconds: float
    table: pd.DataFrame | None = None  # per domain: base / pruned / recovered perplexity and retained
    metrics: pd.DataFrame | None = None  # per model (base / pruned / recovered), metric and group: score and chance
    stages: dict[str, str] = field(default_factory=dict)  # finished stage -> its folder in the run folder


def _save_frame(df: pd.DataFrame, folder: Path, name: str) -> None:
    df.to_csv(folder / name, index=False)


def _flat(data: dict, prefix: str = "") -> dict:
    """A nested config dict as {"prune.ratio": 0.3, ...}, so a difference between processes can be named."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _write_json(path: Path, data) -> None:
    if distributed.is_main():  # only the main process writes the run folder
        write_json_atomic(path, data)


def _metric_frames(model, tokenizer, cfg, checkpoints: Path) -> pd.DataFrame:
    """Every task metric of `cfg` that covers one of its domains, each saved to `checkpoints` as it finishes,
    so a rerun skips finished ones."""
    frames = []
    for name in covering(cfg.metrics, cfg.domains) if cfg.metrics else ():
        done = checkpoints / f"{name}.csv"
        with distributed.main_only(f"Metric {name}") as main:  # task metrics do not split; perplexity does
            if main and not done.is_file():
                df = evaluate_metrics(model, tokenizer, [name], cfg.domains, limit=cfg.metric_limit, batch_size=cfg.batch_size,
                                      split=cfg.split)
                with atomic_path(done) as tmp:
                    df.to_csv(tmp, index=False)
        frames.append(pd.read_csv(done))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _own_metric_frames(model, tokenizer, config: RunConfig, texts: list[str], checkpoints: Path) -> pd.DataFrame:
    """With a user's held-out file: the target's cloze on its documents (if cloze is asked for), then the task
    metrics of the other embedded domains; each saved to `checkpoints` as it finishes."""
    frames = []
    if "cloze" in config.eval.metrics:
        done = checkpoints / "heldout-cloze.csv"
        if not done.is_file():
            with atomic_path(done) as tmp:
                heldout_cloze(model, tokenizer, config.domain, texts, config.eval).to_csv(tmp, index=False)
        frames.append(pd.read_csv(done))
    rest = embedded_part(config.eval, config.domain)
    if rest is not None and rest.metrics:
        frames.append(_metric_frames(model, tokenizer, rest, checkpoints))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run(config: RunConfig | None = None, run_dir: str | Path | None = None, progress: bool = True, device: str | None = None,
        dtype: str = "float32", device_map=None) -> RunResult:
    """Run every stage on `config`, reusing cached stage results (and mid-stage checkpoints) in `run_dir`
    (default: `default_run_dir(config)`, which is `make demo`'s folder when that ran exactly this config).

    `device` (None or "auto": CUDA when there is a GPU, else the CPU) and `dtype` ("bfloat16" on CUDA only)
    say where and in what precision every stage computes; they are not part of the cache keys. `device_map`
    ("auto", ...) places a model too large for one device with Accelerate instead of `device`.

    Under `accelerate launch` every process runs this function: the launcher's device wins over
    `device`, the heavy steps split their batches over the processes, steps that do not split run on
    the main process while the others wait, and only the main process writes the run folder."""
    t0 = time.perf_counter()
    config = config or default_config()
    distributed.agree("config", _flat(config.to_dict()))  # before any work: every process must run the same config
    progress = progress and distributed.is_main()  # one set of progress bars, not one per process
    where = run_device(device, device_map)
    precision = resolve_dtype(dtype, where if where is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    placement = {"device": where} if where is not None else {"device_map": device_map}
    inputs = check_run_inputs(config, fast=fast_mode())  # every user input, before the run folder or any model work
    own = inputs.heldout  # the user's held-out file measures the target domain
    run_dir = Path(run_dir) if run_dir else default_run_dir(config)
    folder = RunFolder(run_dir, config)
    finished: dict[str, str] = {}
    _write_json(folder.path / PROGRESS_FILE, {"stages": finished})  # nothing of this config is finished yet

    def stage(name: str, key: str, compute, save, load):
        """A cached stage, recorded in progress.json once it is finished."""
        result = folder.cached(name, key, compute=lambda: compute(folder.checkpoint_dir(name, key)), save=save, load=load)
        if distributed.is_main():
            shutil.rmtree(folder.path / "checkpoints" / f"{name}-{key}", ignore_errors=True)
        finished[name] = str(folder.stage_dir(name, key).relative_to(folder.path))
        _write_json(folder.path / PROGRESS_FILE, {"stages": finished})
        return result

    pool = inputs.pool
    tokenizer = inputs.tokenizer
    model = load_model(config.model.path, dtype=precision, **placement)
    provenance = read_provenance(model_folder(config.model.path))  # a named model's origin and licence, for derived cards
    model_key = model_identity(model)
    # the held-out documents (the embedded splits, the target's from the user's file when given), tokenised only if
    # some evaluation is not cached
    sequences = functools.cache(lambda: sequences_with_heldout(tokenizer, config.eval, config.domain, own.test) if own
                                else heldout_sequences(tokenizer, config.eval))
    own_keys = (own.key,) if own else ()  # the held-out file's content is part of every evaluation's key

    def evaluate(name: str, key: str, get_model) -> tuple[pd.DataFrame, pd.DataFrame]:
        def compute(ckpt: Path):
            m = get_model()
            return (domain_perplexity(m, tokenizer, config.eval, sequences(), progress=progress),
                    _own_metric_frames(m, tokenizer, config, own.test, ckpt) if own else
                    _metric_frames(m, tokenizer, config.eval, ckpt))

        def save(result, d: Path) -> None:
            _save_frame(result[0], d, "ppl.csv")
            if len(result[1]):
                _save_frame(result[1], d, "metrics.csv")

        def load(d: Path):
            return pd.read_csv(d / "ppl.csv"), (pd.read_csv(d / "metrics.csv") if (d / "metrics.csv").is_file() else pd.DataFrame())

        return stage(f"eval-{name}", key, compute, save, load)

    base_ppl, base_metrics = evaluate("base", stage_key(config.eval, model_key, *own_keys), lambda: model)

    # the SAE learns the corpus it will search: a user's corpus trains its own (cached by the corpus's content)
    sae_config = default_sae_config(fast=fast_mode(), model=config.model.path)
    sae_texts = corpus_sae_texts(pool["text"], sae_config, config.curation.sae_mix) if config.corpus.path else None
    # the SAE's held-out card is measured on fewer tokens than the SAE benchmark uses, to keep `make demo` short
    sae = cached_sae(model, tokenizer, sae_config, progress=progress, texts=sae_texts,
                     **(dict(heldout_docs=60, heldout_tokens=4_000, loss_tokens=2_000) if fast_mode()
                        else dict(heldout_docs=500, heldout_tokens=50_000, loss_tokens=20_000)))
    seeds = inputs.seeds
    # the documents and seeds themselves, not just their ids and path: an edited corpus or seeds file recurates
    pool_key = text_digest([*pool["id"], *pool["text"], "\x01", *seeds])
    curate_key = stage_key(config.curation, model_key, sae.config.config_hash(), pool_key, config.domain)

    def curate(_ckpt: Path) -> pd.DataFrame:
        codes = cached_pool_codes(sae, model, tokenizer, pool, progress=progress)
        return curate_top(sae, model, tokenizer, pool, codes, seeds, min(config.curation.m, len(pool)))

    curated = stage("curate", curate_key, curate, save=lambda df, d: _save_frame(df, d, "curated.csv"),
                    load=lambda d: pd.read_csv(d / "curated.csv", keep_default_na=False))

    prune_key = stage_key(config.prune, curate_key)

    def prune_stage(ckpt: Path):
        saved = ckpt / "importance.pt"
        if distributed.broadcast(saved.is_file()):
            scores = ImportanceScores(**torch.load(saved, weights_only=True))
        else:  # split over the processes, whose sums are added before scoring
            texts = sample_texts(curated["text"], config.prune.calibration_docs, config.prune.seed)
            scores = compute_importance(model, tokenizer, texts, config.prune, progress=progress)
            if distributed.is_main():
                with atomic_path(saved) as tmp:
                    torch.save(vars(scores), tmp)
        with distributed.main_only("Planning and surgery") as main:
            if main:
                plan = plan_pruning(model, scores, config.prune)
                return apply_plan(model, plan), plan
        return None  # the other processes load the pruned model the main process saved

    def save_pruned_stage(result, d: Path) -> None:
        save_pruned(result[0], tokenizer, d / "model", result[1], config.prune)
        carry_provenance(provenance, d / "model", f"Pruned by finescope-nb for the {config.domain} domain: "
                         f"{result[1].removed_fraction:.1%} of the non-embedding parameters (themselves "
                         f"{result[1].budget_share:.0%} of the model's) removed ({config.prune.criterion} "
                         f"importance on the curated set, {config.prune.scope} scope), not fine-tuned.")

    pruned = stage("prune", prune_key, prune_stage, save=save_pruned_stage,
                   load=lambda d: (load_model(d / "model", dtype=precision, **placement), None))[0]

    val_config = config.eval.replace(split="validation", domains=(config.domain,), metrics=(), metric_limit=None)
    recover_key = stage_key(config.finetune, prune_key, val_config.config_hash(), *own_keys)  # validation picks kept weights

    def recover(ckpt: Path):
        # the unpruned model's responses depend on the curated set, not on pruning: kept beside the SAE cache, so a
        # run at another ratio (or recovery setting) of the same curated set reads them instead of regenerating
        teacher_file = paths.DEFAULT_RUNS_DIR / "teacher" / f"{curate_key}-{config.finetune.teacher_mode}-{config.seed}.json"
        data = prepare(model, tokenizer, curated, None, config.domain, seed=config.seed, progress=progress, mode=config.finetune.teacher_mode,
                       checkpoint=teacher_file)
        val = (tokenize_texts(tokenizer, own.validation, val_config.max_length) if own
               else heldout_sequences(tokenizer, val_config)[config.domain])
        student, history = run_arm(pruned, tokenizer, data, "self_distill", config.finetune,
                                   evaluate=lambda m: domain_loss(m, tokenizer, val), progress=progress,
                                   checkpoint=ckpt / "finetune.pt", teacher=model)
        return student, history, data.keep_rate

    def save_recovered(result, d: Path) -> None:
        student, history, keep_rate = result
        save_model(student, tokenizer, d / "model")
        carry_provenance(provenance, d / "model", f"Pruned by finescope-nb for the {config.domain} domain "
                         f"({config.prune.ratio:.0%} of the non-embedding parameters) and recovered by self-data "
                         f"distillation ({config.finetune.method}, {config.finetune.steps} steps, teacher mode "
                         f"{config.finetune.teacher_mode}).")
        _save_frame(history, d, "history.csv")
        write_json_atomic(d / "recovery.json", {"keep_rate": keep_rate})

    recovered = stage("recover", recover_key, recover, save=save_recovered,
                      load=lambda d: (load_model(d / "model", dtype=precision, **placement), pd.read_csv(d / "history.csv"),
                                      json.loads((d / "recovery.json").read_text())["keep_rate"]))[0]

    pruned_ppl, pruned_metrics = evaluate("pruned", stage_key(config.eval, prune_key, *own_keys), lambda: pruned)
    recovered_ppl, recovered_metrics = evaluate("recovered", stage_key(config.eval, recover_key, *own_keys), lambda: recovered)
    table = base_ppl[["domain", "ppl", "loss"]].rename(columns={"ppl": "base_ppl", "loss": "base_loss"})
    table["pruned_ppl"] = pruned_ppl["ppl"].to_numpy()
    table["recovered_ppl"] = recovered_ppl["ppl"].to_numpy()
    table["retained"] = [retained(loss, base) for loss, base in zip(recovered_ppl["loss"], table["base_loss"])]
    table = table.drop(columns="base_loss")
    metrics = pd.concat([df.assign(model=name) for name, df in
                         (("base", base_metrics), ("pruned", pruned_metrics), ("recovered", recovered_metrics)) if len(df)],
                        ignore_index=True) if len(base_metrics) else pd.DataFrame()
    seconds = time.perf_counter() - t0
    _write_json(folder.path / "summary.json", {
        "domain": config.domain, "model_identity": model_key, "pool_size": len(pool), "curated": len(curated),
        "curated_domain_share": float((curated["domain"] == config.domain).mean()) if "domain" in curated else None,
        "params_non_embedding": {name: get_adapter(m).non_embedding_parameters(m) for name, m in (("base", model), ("pruned", pruned))},
        "base_ppl": dict(zip(base_ppl["domain"], base_ppl["ppl"].round(3))),
        "table": table.round(4).to_dict(orient="records"),
        "metrics": metrics.round(4).to_dict(orient="records") if len(metrics) else [],
        "stages": finished, "seconds": round(seconds, 2),
        "heldout": own.summary() if own else None,
        "sae": {"trained_on": sae_texts.source if sae_texts else embedded_sae_source(), "d_sae": sae.config.d_sae,
                "metrics": {k: round(v, 4) for k, v in sae.metrics.items() if isinstance(v, (int, float))}},
    })
    return RunResult(folder.path, base_ppl, len(pool), seconds, table, metrics if len(metrics) else None, dict(finished))
