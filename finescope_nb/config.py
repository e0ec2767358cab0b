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
    """Per-domain perplexity on held-out whole documents (the one scoring function)."""

    split: str = "test"
    domains: tuple[str, ...] = DOMAINS
    max_docs_per_domain: int | None = 200
    max_length: int = 256
    batch_size: int = 8


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
class RunConfig(Config):
    """Everything one `finescope run` depends on; its hash names the run folder's contents."""

    domain: str = "math"
    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
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
