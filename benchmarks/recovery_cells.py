"""One recovered (or untouched) model scored once, whichever benchmark asks for it first.

The recovery benchmark (distill_benchmark.py) and the ablation (ablation_benchmark.py) train many of
the same models: FineScope in each teacher mode, plain fine-tuning on the curated text, fine-tuning
on a random pool sample, the pruned model untrained. On a real model each is tens of minutes of
fine-tuning, so both keep their cells here, keyed by content: the pruning config and the digest of
its calibration texts, the digest of the prompt/response pairs trained on, whether the teacher's
distributions were matched, the fine-tuning config, and what the cell was scored on. Two benchmarks
that ask for the same model with the same evaluation settings (--test-docs, --eval-docs,
--metrics, --metric-limit) get one training run between them; anything else that differs is a
different key, so a cell is never reused for a model it does not describe.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from finescope_nb.artifacts import atomic_path, write_json_atomic
from finescope_nb.config import EvalConfig, FinetuneConfig, PruneConfig
from finescope_nb.distill import finetune
from finescope_nb.evaluate import (HELDOUT_PICKS, domain_loss, evaluate, grouped_loss, heldout_documents, heldout_sequences,
                                   sequences_by_source)
from finescope_nb.evaluate.registry import METRICS
from finescope_nb.hashing import text_digest
from finescope_nb.prune import prune, sample_texts
from benchmarks.common import resumable, step_path

DEFAULT_FINETUNE = FinetuneConfig()


@dataclass(frozen=True)
class Scoring:
    """What every cell of one benchmark run is scored on: test token sequences per domain and source (each cell
    gets a test loss and one per source from them), validation sequences per domain for early stopping, described
    by `test_docs` / `val_docs` / `pick` (how the documents were chosen, `evaluate.pick_documents`) for the key,
    and the metrics (cloze on all of the domain's items, the others on at most `metric_limit` per group)."""

    test: dict
    val: dict | None
    test_docs: int
    val_docs: int | None
    metrics: tuple[str, ...]
    metric_limit: int
    pick: str = "first"

    def key(self, domain: str, trained: bool) -> dict:
        """Only what can change this domain's scores: the metrics that cover it, the limit where a metric reads it,
        and the validation set where a model was trained against it. The pick is named only when it is not the
        first documents, so cells kept before picks existed keep their keys."""
        covering = sorted(m for m in self.metrics if domain in METRICS[m].domains)
        picked = {} if self.pick == "first" else {"pick": self.pick}
        return {"test_docs": self.test_docs, "val_docs": self.val_docs if trained else None, "metrics": covering,
                "metric_limit": self.metric_limit if any(m != "cloze" for m in covering) else None} | picked


def add_heldout_args(parser) -> None:
    """--heldout-pick: which held-out documents score the cells (the first ones stay the default, so recorded
    commands reproduce their results)."""
    parser.add_argument("--heldout-pick", default="first", choices=HELDOUT_PICKS,
                        help="first: the first --test-docs / --eval-docs documents per domain; stratified: each source's share, "
                             "drawn by seed 0 (the splits are stored in blocks by source)")


def heldout_scoring(tokenizer, domains: Sequence[str], test_docs: int, val_docs: int | None, metrics: Sequence[str],
                    metric_limit: int, pick: str) -> Scoring:
    """The Scoring of a benchmark run: `test_docs` test and (unless None) `val_docs` validation documents per domain,
    chosen by `pick`, with the test documents' losses per source."""
    test = heldout_documents(EvalConfig(split="test", domains=tuple(domains), max_docs_per_domain=test_docs), pick)
    val = None if val_docs is None else heldout_sequences(
        tokenizer, EvalConfig(split="validation", domains=tuple(domains), max_docs_per_domain=val_docs), pick)
    return Scoring({d: sequences_by_source(tokenizer, rows, EvalConfig().max_length) for d, rows in test.items()}, val,
                   test_docs, val_docs, tuple(metrics), metric_limit, pick)


class Pruner:
    """The pruned model per calibration text list, pruned on first use (a resumed run whose cells are all
    kept never prunes), and the key that names it. A benchmark calls `release()` as it moves to the next
    seed or domain, so memory holds only the pruned models that are still to be trained."""

    def __init__(self, model, tokenizer, config: PruneConfig):
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self._done: dict[str, object] = {}

    def release(self) -> None:
        self._done.clear()

    def texts(self, source: Sequence[str], seed: int) -> list[str]:
        return sample_texts(list(source), self.config.calibration_docs, seed)

    def key(self, texts: Sequence[str], seed: int) -> dict:
        return {"config": self.config.replace(seed=seed).to_dict(), "calibration": text_digest(texts, length=64)}

    def __call__(self, texts: Sequence[str], seed: int):
        digest = text_digest([seed, *texts], length=64)
        if digest not in self._done:
            self._done[digest] = prune(self.model, self.tokenizer, texts, self.config.replace(seed=seed), progress=False)[0]
        return self._done[digest]


def task_frame(model, tokenizer, domain: str, metrics: Sequence[str], limit: int) -> list[dict]:
    """The metrics that cover `domain` as records (metric, group, n, score, chance): cloze on every item, the others on
    at most `limit` per group."""
    covering = [m for m in metrics if domain in METRICS[m].domains]
    frames = []
    if "cloze" in covering:
        frames.append(evaluate(model, tokenizer, metrics=["cloze"], domains=[domain], limit=None))
    others = [m for m in covering if m != "cloze"]
    if others:
        frames.append(evaluate(model, tokenizer, metrics=others, domains=[domain], limit=limit))
    return [{"metric": r.metric, "group": r.group, "n": int(r.n), "score": float(r.score), "chance": float(r.chance)}
            for frame in frames for r in frame.itertuples()]


def recovery_cell(model, tokenizer, identity: str, domain: str, seed: int, scoring: Scoring, *,
                  pruner: Pruner | None = None, calibration: Sequence[str] | None = None,
                  pairs: tuple[Sequence[str], Sequence[str]] | None = None, finetune_config: FinetuneConfig | None = None,
                  with_teacher: bool = False) -> dict:
    """The scored cell of one model: `model` itself, or pruned by `pruner` on `calibration`, then fine-tuned on
    `pairs` (prompts, responses) with `finetune_config`, matching the unpruned model's distributions when `with_teacher`.

    Returns test_loss, test_loss_by_source, best_step (step of the best validation loss, 0 untrained), steps_run,
    history, metrics (records of `task_frame`) and seconds; kept under runs/benchmark-steps/recovery/."""
    if pairs is not None:  # settings training does not read are left at their defaults, so they cannot split a shared cell
        unread = {"teacher_mode": DEFAULT_FINETUNE.teacher_mode}  # the responses it chose are in the pairs
        if not with_teacher:
            unread["kd_weight"] = DEFAULT_FINETUNE.kd_weight
        finetune_config = finetune_config.replace(seed=seed, **unread)
    key = {"model": identity, "domain": domain, "seed": None if pruner is None and pairs is None else seed,
           "scoring": scoring.key(domain, trained=pairs is not None),
           "prune": None if pruner is None else pruner.key(calibration, seed),
           "pairs": None if pairs is None else text_digest([*pairs[0], "\x01", *pairs[1]], length=64),
           "finetune": None if pairs is None else finetune_config.to_dict(), "teacher": with_teacher}

    def compute() -> dict:
        start = time.perf_counter()
        student = model if pruner is None else pruner(calibration, seed)
        training = {"history": {"step": [], "train_loss": [], "val_loss": []}, "best_step": 0, "steps_run": 0}
        if pairs is not None:
            # the trained weights are kept apart from the scores: asking for other metrics scores them again, never retrains
            train_key = {k: v for k, v in key.items() if k != "scoring"} | {
                k: v for k, v in key["scoring"].items() if k in ("val_docs", "pick")}
            val = scoring.val[domain] if scoring.val is not None else None
            student, training = _trained(model, tokenizer, student, pairs, finetune_config, with_teacher, val, train_key)
        test_loss, by_source = grouped_loss(student, tokenizer, scoring.test[domain])
        return {"test_loss": float(test_loss), "test_loss_by_source": by_source, **training,
                "metrics": task_frame(student, tokenizer, domain, scoring.metrics, scoring.metric_limit),
                "seconds": time.perf_counter() - start}

    return resumable("recovery", key, compute)


def _trained(model, tokenizer, student, pairs, config: FinetuneConfig, with_teacher: bool, val, train_key: dict):
    """`student` fine-tuned on `pairs`, and its training record (history, best_step, steps_run): trained once per
    `train_key`, its weights kept under runs/benchmark-steps/recovery-model/ (its fine-tuning checkpointed mid-run)."""
    weights, record = step_path("recovery-model", train_key, ".pt"), step_path("recovery-model", train_key)
    if weights.is_file() and record.is_file():
        trained = copy.deepcopy(student)
        trained.load_state_dict(torch.load(weights, weights_only=True))
        return trained.eval(), json.loads(record.read_text())
    prompts, responses = pairs
    trained, frame = finetune(student, tokenizer, prompts, responses, config, progress=False,
                              evaluate=None if val is None else (lambda m: domain_loss(m, tokenizer, val)),
                              checkpoint=step_path("recovery-model", train_key, ".ckpt"), teacher=model if with_teacher else None)
    evaluated = frame.dropna(subset=["val_loss"])
    training = {"history": frame.to_dict("list"), "steps_run": int(frame["step"].max()) if len(frame) else 0,
                "best_step": int(evaluated.loc[evaluated["val_loss"].astype(float).idxmin(), "step"]) if len(evaluated) else 0}
    with atomic_path(weights) as tmp:
        torch.save(trained.state_dict(), tmp)
    write_json_atomic(record, training)
    return trained, json.loads(record.read_text())  # read back, so a first run and a resumed one see the same values


def teacher_checkpoint(identity: str, curated, mode: str):
    """Where the unpruned model's greedy responses to a curated set are kept as they come, shared by both benchmarks."""
    return step_path("distill-teacher", {"model": identity, "curated": text_digest(curated["text"], length=64), "mode": mode})
