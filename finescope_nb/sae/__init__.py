"""The SAE stage: train SAEs with sae-lens on one layer, measure them, encode a corpus with them.

    from finescope_nb.sae import SAEConfig, train_sae, LayerSAE, evaluate_sae, encode_corpus

`registry` maps architecture names to sae-lens classes, `train` drives sae-lens's trainer,
`layer_sae` ties an SAE to its model and layer (and saves it in sae-lens's folder format),
`metrics` scores it on held-out text, `codes` stores pooled per-document codes for retrieval.
"""

from finescope_nb.sae.codes import PooledCodes, encode_corpus
from finescope_nb.sae.layer_sae import LayerSAE
from finescope_nb.sae.metrics import evaluate_sae, reconstruction_metrics, spliced_loss
from finescope_nb.sae.registry import ARCHITECTURES, SELECTORS, SAEConfig
from finescope_nb.sae.train import fit_sae, train_sae

__all__ = [
    "ARCHITECTURES",
    "LayerSAE",
    "PooledCodes",
    "SAEConfig",
    "SELECTORS",
    "encode_corpus",
    "evaluate_sae",
    "fit_sae",
    "reconstruction_metrics",
    "spliced_loss",
    "train_sae",
]
