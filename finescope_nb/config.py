"""Typed, hashable configs: one dataclass per stage, plus `RunConfig` that holds them all.

Every stage result in a run folder is keyed by the hash of the config that produced it, so a
rerun recomputes exactly what changed. The hash must therefore be stable across processes and
Python versions: it is taken over canonical JSON (sorted keys, no whitespace), never over
`hash()` or pickle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from finescope_nb.errors import FinescopeError

T = TypeVar("T", bound="Config")

DOMAINS = ("stem", "humanities", "social_sciences", "math", "code")
SEED_DRAWS = ("stratified", "random")  # corpus.SEED_DRAWS, by name


class Config:
    """Mixin giving dataclass configs JSON round-trip and a stable content hash."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        if not isinstance(data, dict):
            raise FinescopeError(
                f"{cls.__name__} expects a JSON object, got {type(data).__name__}; "
                "pass a dict of field names to values."
            )
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise FinescopeError(
                f"{cls.__name__} has no field {unknown[0]!r}; known fields are "
                f"{', '.join(sorted(known))}."
            )
        kwargs = {name: _coerce(hints[name], value) for name, value in data.items()}
        return cls(**kwargs)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return cls.from_dict(json.loads(text))

    def config_hash(self, length: int = 12) -> str:
        """A hash of the canonical JSON: equal configs give equal hashes in any process."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:length]

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def __post_init__(self):
        """Every config's `seed` goes to NumPy and torch, which refuse negative seeds deep inside;
        refuse them here, in one sentence, whether the config came from the CLI, JSON or code."""
        seed = getattr(self, "seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise FinescopeError(f"{type(self).__name__}.seed must be a whole number 0 or more, got {seed!r}; "
                                 "give a seed such as 0.")


def _coerce(hint: Any, value: Any) -> Any:
    """Turn JSON values back into the annotated types (nested configs, tuples, optionals)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value) if len(args) == 1 else value
    if isinstance(hint, type) and issubclass(hint, Config) and isinstance(value, dict):
        return hint.from_dict(value)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


@dataclass(frozen=True)
class CorpusConfig(Config):
    """Which pool to read: the embedded one (path None) or a user's file or datasets folder."""

    path: str | None = None
    max_docs_per_domain: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class ModelConfig(Config):
    """Which causal LM to start from: None is the embedded tiny Llama under data/models/."""

    path: str | None = None


@dataclass(frozen=True)
class EvalConfig(Config):
    """Per-domain perplexity on held-out whole documents (the one loss score), plus task metrics."""

    split: str = "test"
    domains: tuple[str, ...] = DOMAINS
    max_docs_per_domain: int | None = 200
    max_length: int = 256
    batch_size: int = 8
    metrics: tuple[str, ...] = ("cloze",)  # beside perplexity; any of finescope_nb.evaluate.METRICS
    metric_limit: int | None = 100  # items per group for those metrics (sampled by seed); None: all
    heldout: str | None = None  # a user's held-out file of the target domain (measured instead of the embedded split)

    def __post_init__(self):
        super().__post_init__()
        for name, low in (("max_docs_per_domain", 1), ("metric_limit", 1), ("batch_size", 1), ("max_length", 2)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise FinescopeError(f"Evaluation setting {name} must be at least {low}, got {value}; "
                                     f"raise it{' or leave it unset for all items' if name in ('max_docs_per_domain', 'metric_limit') else ''}.")


@dataclass(frozen=True)
class BaseModelConfig(Config):
    """Shape and training budget of the embedded tiny Llama (see basemodel.py for why)."""

    vocab_size: int = 8192
    hidden_size: int = 256
    num_layers: int = 8
    num_heads: int = 8
    num_kv_heads: int = 4
    intermediate_size: int = 1024
    seq_len: int = 256
    batch_size: int = 16
    max_steps: int = 1000
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 60
    weight_decay: float = 0.1
    checkpoint_every: int = 100
    max_train_minutes: float | None = 85.0
    seed: int = 0


@dataclass(frozen=True)
class CurationConfig(Config):
    """How the domain's curated set is chosen: `n_seeds` held-out seed examples (or the user's seeds
    file), the default SAE selector, the top `m` pool documents.

    `seed_draw`: "stratified" spreads the held-out seeds over the domain's topics (one per topic in
    turn); "random" draws them at random, seed for seed as the kit did before (corpus.load_seeds)."""

    m: int = 500
    n_seeds: int = 10
    seeds_path: str | None = None
    sae_mix: float = 0.0  # with a user corpus: share of the SAE's training documents drawn from the embedded pool
    seed: int = 0
    seed_draw: str = "stratified"

    def __post_init__(self):
        super().__post_init__()
        if self.seed_draw not in SEED_DRAWS:
            raise FinescopeError(f"Unknown seed draw {self.seed_draw!r} (--seed-draw); use one of {', '.join(SEED_DRAWS)}.")
        if not isinstance(self.sae_mix, (int, float)) or not 0 <= self.sae_mix < 1:
            raise FinescopeError(f"The SAE's embedded-pool share (--sae-mix) must be in [0, 1), got {self.sae_mix!r}; "
                                 "0 trains on your corpus alone, 0.2 mixes in a fifth of embedded documents.")


PRUNE_CRITERIA = ("taylor", "taylor2", "taylor_per_batch", "magnitude", "activation", "random")  # prune.importance.CRITERIA, by name
IMPORTANCE_MEMORY = ("default", "bounded")
SCOPES = ("per_layer", "global", "uniform")
HEAD_UNITS = ("group", "query")


@dataclass(frozen=True)
class PruneConfig(Config):
    """Structured pruning of attention heads and MLP channels, calibrated on a text list.

    `ratio` is always the share of the model's non-embedding parameters to remove (embeddings and
    the LM head cannot shrink). `first_layer` / `last_layer` bound the prunable blocks
    (inclusive, negative ones counted from the end; None keeps LLM-Pruner's habit of leaving the
    first eighth of the blocks, at least one, and the last block whole). `scope`: "per_layer" removes the same share of every prunable
    block, ranking its heads and channels together by importance per parameter; "global" ranks
    all units of all prunable blocks at once; "uniform" removes the same head and channel counts
    from every prunable block, so that when every block is pruned the result loads with stock
    `from_pretrained`. `head_unit`: "group" removes a KV head with its query heads, "query" removes
    the same number of query heads from every KV group and keeps the KV heads. `num_heads`
    (uniform scope only) fixes the query heads each prunable block keeps; the rest of the ratio
    then comes from MLP channels. `memory`: "bounded" gathers the same importance sums while keeping
    only those sums, one block's activations and one slice of logits alive (each gradient folded and
    freed as it is produced, blocks checkpointed, the loss computed in slices; see
    prune.calibration), at the cost of a second forward of every block; "default" is the plain pass.
    `criterion="taylor_per_batch"` is the first-order Taylor estimate whose state is one number per unit.
    """

    ratio: float = 0.3
    criterion: str = "taylor"
    scope: str = "per_layer"
    head_unit: str = "group"
    first_layer: int | None = None
    last_layer: int | None = None
    prune_attention: bool = True
    prune_mlp: bool = True
    num_heads: int | None = None
    calibration_docs: int = 64
    max_length: int = 256
    batch_size: int = 8
    seed: int = 0
    memory: str = "default"
    # round each pruned block's kept MLP channels to a multiple of this (matrix kernels run fastest on
    # round widths); rounding wins over the exact ratio, and the plan reports the share really removed
    channel_multiple: int = 1

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.ratio, (int, float)) or not 0 <= self.ratio < 1:
            raise FinescopeError(f"The pruning ratio must be in [0, 1), got {self.ratio!r}; it is the share of non-embedding parameters to remove.")
        if self.criterion not in PRUNE_CRITERIA:
            raise FinescopeError(f"Unknown importance criterion {self.criterion!r}; choose one of {', '.join(PRUNE_CRITERIA)}.")
        if self.scope not in SCOPES:
            raise FinescopeError(f"Unknown pruning scope {self.scope!r}; choose one of {', '.join(SCOPES)}.")
        if self.head_unit not in HEAD_UNITS:
            raise FinescopeError(f"head_unit must be one of {', '.join(HEAD_UNITS)}, got {self.head_unit!r}.")
        if self.memory not in IMPORTANCE_MEMORY:
            raise FinescopeError(f"Unknown importance memory mode {self.memory!r}; choose one of {', '.join(IMPORTANCE_MEMORY)}.")
        if self.num_heads is not None and self.scope != "uniform":
            raise FinescopeError(f"num_heads={self.num_heads} needs scope='uniform' (the same head count in every block), got scope={self.scope!r}.")
        if not (self.prune_attention or self.prune_mlp):
            raise FinescopeError("prune_attention and prune_mlp are both False, so nothing can be pruned; enable at least one.")
        for name in ("calibration_docs", "max_length", "batch_size", "channel_multiple"):
            if getattr(self, name) < 1:
                raise FinescopeError(f"{name} must be at least 1, got {getattr(self, name)}.")

    def layer_range(self, num_layers: int) -> range:
        """The prunable blocks of a model with `num_layers` blocks; a negative bound counts from the end
        (last_layer=-1 is the last block), so "every block" can be said without knowing the model."""
        first = max(1, num_layers // 8) if self.first_layer is None else self.first_layer
        last = num_layers - 2 if self.last_layer is None else self.last_layer
        first, last = (value + num_layers if value < 0 else value for value in (first, last))
        if num_layers < 3 and self.first_layer is None and self.last_layer is None:
            first, last = 0, num_layers - 1  # too few blocks to keep any whole
        for name, value in (("first_layer", first), ("last_layer", last)):
            if not 0 <= value < num_layers:
                raise FinescopeError(f"{name}={value} is outside the model's blocks 0-{num_layers - 1}; choose a layer inside them.")
        if first > last:
            raise FinescopeError(f"first_layer={first} is after last_layer={last}; the prunable range is empty.")
        return range(first, last + 1)


METHODS = ("lora", "full")
TEACHER_MODES = ("continue", "rewrite")  # how distill.teacher prompts the teacher


@dataclass(frozen=True)
class FinetuneConfig(Config):
    """How the student is trained: method, LoRA shape, steps, batch, learning rate, evaluation cadence."""

    method: str = "lora"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_targets: tuple[str, ...] | None = None  # None: every projection the architecture adapter names
    steps: int = 60
    batch_size: int = 8
    lr: float = 1e-4
    warmup_steps: int = 10
    max_length: int = 192
    eval_every: int = 20
    patience: int | None = None  # evaluations without improvement before stopping; None: never stop early
    # with a teacher (the self_distill arm): share of the loss that matches the teacher's next-token
    # distributions on its regenerated responses rather than their text (0: the text alone)
    kd_weight: float = 1.0
    # how the teacher writes the responses: "continue" them from the prompt, or "rewrite" the originals
    # in its own words (needs a chat template); see distill.teacher
    teacher_mode: str = "continue"
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.kd_weight <= 1.0:
            raise FinescopeError(f"kd_weight must be between 0 and 1, got {self.kd_weight}; 0 trains on text only, "
                                 "1 only matches the teacher's distributions.")
        if self.teacher_mode not in TEACHER_MODES:
            raise FinescopeError(f"Unknown teacher mode {self.teacher_mode!r}; choose one of {', '.join(TEACHER_MODES)}.")
        if self.method not in METHODS:
            raise FinescopeError(f"Unknown fine-tuning method {self.method!r}; choose one of {', '.join(METHODS)}.")
        for name in ("lora_rank", "steps", "batch_size", "max_length", "eval_every"):
            if getattr(self, name) < 1:
                raise FinescopeError(f"{name} must be at least 1, got {getattr(self, name)}.")


@dataclass(frozen=True)
class RunConfig(Config):
    """Everything one `finescope run` depends on; its hash names the run folder's contents."""

    domain: str = "math"
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    curation: CurationConfig = field(default_factory=CurationConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    seed: int = 0


def load_config(path: str | Path, cls: type[T]) -> T:
    """Read a config JSON file, failing with one sentence when it is missing or malformed."""
    p = Path(path)
    if not p.is_file():
        raise FinescopeError(f"Config file {str(p)!r} does not exist; check the path.")
    try:
        return cls.from_json(p.read_text())
    except json.JSONDecodeError as exc:
        raise FinescopeError(
            f"Config file {str(p)!r} is not valid JSON ({exc.msg} at line {exc.lineno}); fix or delete it."
        ) from None
