"""The SAE stage's config and the architectures it can train, each mapped to its sae-lens classes.

sae-lens implements the SAEs; this table only says which of its training classes a name means
and which of our knobs that class reads. Adding an architecture is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from sae_lens import (
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    JumpReLUTrainingSAE,
    JumpReLUTrainingSAEConfig,
    StandardTrainingSAE,
    StandardTrainingSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
)

from finescope_nb.activations import ActivationConfig
from finescope_nb.config import Config
from finescope_nb.errors import FinescopeError

SELECTORS = ("jacobian", "random", "magnitude", "variance")
NORMALIZATIONS = ("none", "expected_average_only_in")
DECODER_BIAS_INITS = ("zeros", "mean")


@dataclass(frozen=True)
class SAEConfig(Config):
    """One SAE on one layer: architecture, width, sparsity, training budget, optional coordinate selection.

    layer None means the model's middle layer (`activations.default_layer`). `dead_feature_window`
    is in training steps: TopK's auxiliary loss revives only features that have been silent that
    long, so it must be well below the number of steps or it never acts (sae-lens's default of
    1000 steps exceeds a whole CPU run). `selection` names a coordinate selector (the paper's v3
    option, "jacobian", or a baseline); the SAE then sees only `n_coordinates` of the layer's outputs.
    """

    layer: int | None = None
    architecture: str = "topk"
    d_sae: int = 1024
    k: int = 32
    aux_loss_coefficient: float = 1.0
    l1_coefficient: float = 1.0
    l0_coefficient: float = 1.0
    train_tokens: int = 1_200_000
    batch_size: int = 4096
    lr: float = 5e-4
    warmup_fraction: float = 0.05
    decay_fraction: float = 0.2
    dead_feature_window: int = 50
    normalize_activations: str = "expected_average_only_in"
    # "mean" starts the decoder bias (which apply_b_dec_to_input subtracts before encoding) at the activations'
    # mean: a pretrained model's residual has a few large, nearly constant coordinates (SmolLM2: two of ~70 in a
    # norm of ~140), and from zeros the features spend the first steps, or a short run, reconstructing that offset
    decoder_bias_init: str = "zeros"
    selection: str | None = None
    n_coordinates: int = 128
    jvp_probes: int = 4
    reference_docs: int = 32
    capture: ActivationConfig = field(default_factory=ActivationConfig)
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.architecture not in ARCHITECTURES:
            raise FinescopeError(f"Unknown SAE architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}.")
        if self.selection is not None and self.selection not in SELECTORS:
            raise FinescopeError(f"Unknown coordinate selector {self.selection!r}; choose one of {', '.join(SELECTORS)} or None.")
        if self.decoder_bias_init not in DECODER_BIAS_INITS:
            raise FinescopeError(f"decoder_bias_init must be one of {', '.join(DECODER_BIAS_INITS)}, got {self.decoder_bias_init!r}.")
        if self.normalize_activations not in NORMALIZATIONS:
            raise FinescopeError(f"normalize_activations must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize_activations!r}.")
        for name in ("d_sae", "train_tokens", "batch_size", "dead_feature_window", "n_coordinates", "jvp_probes", "reference_docs"):
            if getattr(self, name) < 1:
                raise FinescopeError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.architecture in ("topk", "batchtopk") and not 1 <= self.k < self.d_sae:
            raise FinescopeError(f"k must be between 1 and d_sae - 1 = {self.d_sae - 1}, got {self.k}; lower k or widen the SAE.")
        if self.train_tokens < self.batch_size:
            raise FinescopeError(f"train_tokens ({self.train_tokens}) must be at least one batch ({self.batch_size}); raise it or lower batch_size.")
        if not 0 <= self.warmup_fraction + self.decay_fraction < 1:
            raise FinescopeError("warmup_fraction + decay_fraction must lie in [0, 1); e.g. 0.05 and 0.2.")


@dataclass(frozen=True)
class Architecture:
    training_class: type
    config_class: type
    knobs: Callable[[SAEConfig], dict]


def _topk(c: SAEConfig) -> dict:
    return {"k": c.k, "aux_loss_coefficient": c.aux_loss_coefficient}


ARCHITECTURES: dict[str, Architecture] = {
    "topk": Architecture(TopKTrainingSAE, TopKTrainingSAEConfig, _topk),
    "batchtopk": Architecture(BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, _topk),
    "standard": Architecture(StandardTrainingSAE, StandardTrainingSAEConfig, lambda c: {"l1_coefficient": c.l1_coefficient}),
    "jumprelu": Architecture(JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig, lambda c: {"l0_coefficient": c.l0_coefficient}),
}


def build_training_sae(config: SAEConfig, d_in: int, metadata: dict | None = None):
    """A freshly initialised sae-lens training SAE for `config` on inputs of width `d_in`."""
    arch = ARCHITECTURES[config.architecture]
    sae_cfg = arch.config_class(d_in=d_in, d_sae=config.d_sae, normalize_activations=config.normalize_activations,
                                **arch.knobs(config))
    for key, value in (metadata or {}).items():
        sae_cfg.metadata[key] = value
    return arch.training_class(sae_cfg)
