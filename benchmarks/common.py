"""What every benchmark shares: which model it measures, where its result goes, the pool sample it measures on.

`--model` takes what `load_model` takes (a named model such as smollm2-135m, a folder, a cached hub
id; default: the embedded tiny Llama). The embedded model's results go to benchmarks/results/<file>
(results/embedded-pool<N>/<file> when measured on a pool sample), any other model's to
benchmarks/results/<name>/<file>, in the same shape plus a "model" key, so the columns of the
README's side-by-side table come from files of one shape. Stage settings a
script does not set itself come from the kit's defaults for that model (`default_sae_config`,
`pipeline.default_config`), which for a named model carry the registry's measured defaults: no
benchmark hard-codes one model's numbers. `--pool-per-domain N` measures on N random pool documents
per domain (`pool_sample(N, seed)`), the same documents whichever model is measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from functools import cached_property
from pathlib import Path

import pandas as pd
import torch

from finescope_nb import paths
from finescope_nb.artifacts import atomic_path, write_json_atomic
from finescope_nb.config import ModelConfig, RunConfig
from finescope_nb.curate.workspace import cached_pool_codes, curate_domain, pool_sample
from finescope_nb.hashing import text_digest
from finescope_nb.lm import load_model, load_tokenizer, model_identity
from finescope_nb.models.registry import NAMED_MODELS
from finescope_nb.pipeline import default_config, fast_mode
from finescope_nb.sae import SAEConfig
from finescope_nb.sae.cache import cached_sae, default_sae_config

RESULTS = Path(__file__).resolve().parent / "results"
# Kept steps committed to git (benchmarks/carry_steps.py copies them here): runs/ stays on the machine it was
# written on, so a benchmark that spans sessions on fresh machines resumes from these.
CARRIED_STEPS = Path(__file__).resolve().parent / "steps"


def add_model_args(parser: argparse.ArgumentParser, pool: bool = True) -> None:
    """--model and --out (and, for scripts that curate from the pool, --pool-per-domain and --pool-seed)."""
    parser.add_argument("--model", default=None,
                        help="a named model (e.g. smollm2-135m), a model folder or a cached hub id (default: the embedded model)")
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default: benchmarks/results/<file>, or benchmarks/results/<model>/<file> for another model)")
    if pool:
        parser.add_argument("--pool-per-domain", type=int, default=None,
                            help="measure on N random pool documents per domain (default: the whole pool)")
        parser.add_argument("--pool-seed", type=int, default=0, help="the seed that draws the pool sample")


def model_label(model: str | None) -> str:
    """"embedded" for the embedded model, the registry name for a named one, else the folder's or hub id's last part."""
    if model is None:
        return "embedded"
    return model if model in NAMED_MODELS else Path(str(model).rstrip("/")).name


def result_path(args: argparse.Namespace, file_name: str) -> Path:
    """--out, else results/<file> (the embedded model on the whole pool), results/embedded-pool<N>[-seed<S>]/<file>
    (the embedded model on a pool sample, so the committed whole-pool files stay), or results/<model>/<file>."""
    if args.out is not None:
        return args.out
    if args.model is not None:
        return RESULTS / model_label(args.model) / file_name
    per_domain = getattr(args, "pool_per_domain", None)
    if per_domain is None:
        return RESULTS / file_name
    return RESULTS / f"embedded-pool{per_domain}{f'-seed{args.pool_seed}' if args.pool_seed else ''}" / file_name


def sae_config(model: str | None, **overrides) -> SAEConfig:
    """The kit's default SAE for this model (the small one under FINESCOPE_FAST, for smoke runs)."""
    return default_sae_config(fast=fast_mode(), model=model, **overrides)


def run_config(model: str | None, method: str | None = None) -> RunConfig:
    """The kit's stage configs for this model (the registry's measured ones for a named model, fine-tuning's
    for `method`); the prune and finetune configs the benchmarks read do not depend on the domain."""
    return default_config("math", method=method, model=ModelConfig(path=model))


class BenchmarkWorkspace:
    """Model, tokenizer and pool at once; the SAE and the pool's codes only when a curated set is not kept yet.

    The SAE is trained anew on each machine, and float sums on another CPU move a few documents across
    the top-M cut (a fresh machine's top 200 shared 191 of math's and 178 of code's with the last one's). Every
    recovery cell is keyed by the texts it trains on, so `curated` keeps each set as its ordered pool ids,
    carried like any step: on a fresh machine the same documents come back without the half hour of
    SAE training and pool encoding (SmolLM2) that would otherwise precede them.
    Under FINESCOPE_FAST (smoke runs) the small SAE is trained and scored on a few thousand tokens."""

    def __init__(self, args: argparse.Namespace, progress: bool = True):
        self.model, self.tokenizer = load_model(args.model), load_tokenizer(args.model)
        self.pool = pool_sample(args.pool_per_domain, args.pool_seed)
        self._model_name, self._progress = args.model, progress

    @cached_property
    def identity(self) -> str:
        return model_identity(self.model)

    @cached_property
    def sae(self):
        small = dict(heldout_docs=60, heldout_tokens=4_000, loss_tokens=2_000) if fast_mode() else {}
        return cached_sae(self.model, self.tokenizer, sae_config(self._model_name), progress=self._progress, **small)

    @cached_property
    def codes(self):
        return cached_pool_codes(self.sae, self.model, self.tokenizer, self.pool, progress=self._progress)

    def curated(self, domain: str, m: int, draw: str = "random") -> pd.DataFrame:
        """FineScope's curated set for `domain` (`curate_domain`; the random seed draw the recorded results used),
        kept under runs/benchmark-steps/curated/ as its pool ids in rank order."""
        key = {"model": self.identity, "sae": sae_config(self._model_name).config_hash(), "fast": fast_mode(),
               "pool": text_digest(self.pool["id"], length=64), "domain": domain, "m": m, "draw": draw}
        ids = resumable("curated", key, lambda: curate_domain(self, domain, m, draw=draw)["id"].tolist())
        return self.pool.set_index("id").loc[ids].reset_index()


def workspace(args: argparse.Namespace, progress: bool = True) -> BenchmarkWorkspace:
    """Model, its default SAE, the pool (or the stated sample of it) and the pool's codes, all cached."""
    return BenchmarkWorkspace(args, progress)


def provenance(args: argparse.Namespace) -> dict:
    """The keys every result file carries about what was measured: the model and the pool sample."""
    out = {"model": model_label(args.model), "fast": fast_mode()}
    if hasattr(args, "pool_per_domain"):
        out["pool"] = {"per_domain": args.pool_per_domain, "seed": args.pool_seed} if args.pool_per_domain else "whole pool"
    return out


def set_threads() -> int:
    """Two torch threads (the machine the results were measured on), fewer where OMP_NUM_THREADS or the CPU says so."""
    cap = int(os.environ.get("OMP_NUM_THREADS") or 2)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1, cap)))
    return torch.get_num_threads()


def step_path(benchmark: str, key: dict, suffix: str = ".json") -> Path:
    """Where one step of a benchmark keeps its result (or, with another suffix, its training checkpoint):
    runs/benchmark-steps/<benchmark>/<hash of key><suffix>. A step carried in git (`CARRIED_STEPS`) that runs/
    lacks is copied there first, so a benchmark resumes on a fresh machine from what an earlier one finished."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = paths.DEFAULT_RUNS_DIR / "benchmark-steps" / benchmark / f"{digest}{suffix}"
    carried = CARRIED_STEPS / benchmark / path.name
    if not path.is_file() and carried.is_file():
        with atomic_path(path) as tmp:
            shutil.copyfile(carried, tmp)
    return path


def resumable(benchmark: str, key: dict, compute):
    """`compute()`'s JSON-able result, kept at `step_path(benchmark, key)`; `key` must name everything the
    result depends on (model identity, texts, configs, seed), so a benchmark that spans sessions redoes only
    the steps it had not finished (on another machine too, once carried: benchmarks/carry_steps.py).
    Written atomically: an interrupted step leaves nothing."""
    path = step_path(benchmark, key)
    if not path.is_file():
        write_json_atomic(path, {"key": key, "result": compute()})
    return json.loads(path.read_text())["result"]  # read back, so a first run and a resumed one see the same values
