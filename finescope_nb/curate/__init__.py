"""The curation stage: find a domain's documents in an unlabelled pool from a few seed examples.

    from finescope_nb.curate import SAESelector, DenseSelector, HashedNgramSelector, RandomSelector

`base` holds the `Selector` interface and the `Selection` it returns, `codes` the sparse pooled
SAE codes and the in-memory encoders for seeds, `sae_selector` FineScope's own selector,
`baselines` the selectors every SAE claim is measured against, `measure` precision / recall /
AUROC over repeated seed draws, and `export` the curated set on disk.
"""

from finescope_nb.curate.base import Selection, Selector, check_seeds, pool_texts
from finescope_nb.curate.baselines import DenseSelector, HashedNgramSelector, RandomSelector
from finescope_nb.curate.codes import SparseCodes, dense_embeddings, enrichment_table, feature_enrichment, sae_codes
from finescope_nb.curate.export import export_selection, load_curated
from finescope_nb.curate.measure import (auroc, cut_metrics, evaluate_selectors, precision_at_m, recall_at_m, summarize,
                                       topic_mix)
from finescope_nb.curate.sae_selector import SAESelector, default_sae_selector

__all__ = [
    "DenseSelector", "HashedNgramSelector", "RandomSelector", "SAESelector", "Selection", "Selector",
    "SparseCodes", "auroc", "cut_metrics", "check_seeds", "default_sae_selector", "dense_embeddings", "enrichment_table", "evaluate_selectors",
    "export_selection", "feature_enrichment", "load_curated", "pool_texts", "precision_at_m", "recall_at_m",
    "sae_codes", "summarize", "topic_mix",
]
