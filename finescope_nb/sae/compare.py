"""Side-by-side SAE variants on the same captured activations: what a knob or a selector changes.

Capturing activations costs more than training a small SAE, so each comparison captures once
(training and held-out sets) and trains every variant on the same arrays. Scores are on the full
held-out activation: a coordinate-selected SAE is decoded and scattered back (see LayerSAE).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from finescope_nb.activations import check_layer, collect_activations, default_layer
from finescope_nb.jacobian import select_coordinates
from finescope_nb.lm import get_adapter, model_identity
from finescope_nb.sae.layer_sae import LayerSAE
from finescope_nb.sae.metrics import reconstruction_metrics
from finescope_nb.sae.registry import SAEConfig
from finescope_nb.sae.train import fit_sae


class SharedActivations:
    """Training and held-out activations of one layer, captured once for several SAEs."""

    def __init__(self, model, tokenizer, texts, heldout_texts, config: SAEConfig, heldout_tokens: int = 20_000,
                 progress: bool = True):
        self.model, self.tokenizer, self.texts = model, tokenizer, list(texts)
        self.layer = check_layer(model, default_layer(model) if config.layer is None else config.layer)
        self.capture = config.capture
        self.train = collect_activations(model, tokenizer, self.texts, self.layer, config.train_tokens, config.capture,
                                         progress=progress)
        self.heldout = collect_activations(model, tokenizer, heldout_texts, self.layer, heldout_tokens, config.capture,
                                           progress=progress)
        self.identity = model_identity(model)
        self.hook_name = get_adapter(model).layer_hook_name(self.layer)

    def fit(self, config: SAEConfig, coordinates: torch.Tensor | None = None, progress: bool = False) -> LayerSAE:
        config = config.replace(layer=self.layer)
        data = self.train if coordinates is None else self.train[:, coordinates.numpy()]
        sae, history, stopped = fit_sae(data, config, progress)
        fill = None if coordinates is None else self.train.mean(0, dtype=np.float64).astype(np.float32).tolist()
        return LayerSAE(sae, layer=self.layer, hook_name=self.hook_name, model_identity=self.identity,
                        d_model=self.train.shape[1], config=config,
                        coordinates=None if coordinates is None else coordinates.tolist(), fill=fill,
                        history=history, stopped_early=stopped)

    def score(self, sae: LayerSAE) -> dict:
        return reconstruction_metrics(sae, torch.from_numpy(self.heldout).split(4096))


def compare_configs(shared: SharedActivations, configs: dict[str, SAEConfig], progress: bool = True) -> pd.DataFrame:
    """Held-out explained variance, L0 and dead fraction of each named config, trained on the same activations."""
    rows = []
    for name, config in configs.items():
        sae = shared.fit(config, progress=progress)
        rows.append({"variant": name, **shared.score(sae)})
    return pd.DataFrame(rows)


def compare_selectors(shared: SharedActivations, config: SAEConfig, methods=("jacobian", "variance", "magnitude", "random"),
                      reference_docs: int = 16, progress: bool = True) -> pd.DataFrame:
    """For each selector, the K coordinates it picks and the held-out full-width explained variance of an
    SAE trained on them; a full-width SAE of the same config is the reference row."""
    rows = [{"selector": "all coordinates", "k": shared.train.shape[1], **shared.score(shared.fit(config, progress=progress))}]
    for method in methods:
        chosen = select_coordinates(method, shared.model, shared.tokenizer, shared.texts[:reference_docs], shared.layer,
                                    config.n_coordinates, acts=shared.train, probes=config.jvp_probes, seed=config.seed,
                                    capture=shared.capture)
        rows.append({"selector": method, "k": config.n_coordinates,
                     **shared.score(shared.fit(config, chosen.indices, progress=progress))})
    return pd.DataFrame(rows)
