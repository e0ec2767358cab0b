"""finescope-nb: FineScope (arXiv 2505.00624) as an explorable, notebook-first kit.

From a causal LM, an unlabelled corpus and about ten seed examples, derive a smaller model
specialised for a domain: SAE features -> curated data -> structured pruning -> self-distillation.
"""

from finescope_nb.errors import FinescopeError

__all__ = ["FinescopeError", "load_model", "load_tokenizer"]
__version__ = "0.1.0"


def __getattr__(name):
    # Loading models pulls in torch and transformers; importing the package for its configs or
    # errors should not, so these two are resolved on first use.
    if name in ("load_model", "load_tokenizer"):
        from finescope_nb import lm

        return getattr(lm, name)
    raise AttributeError(f"module 'finescope_nb' has no attribute {name!r}")
