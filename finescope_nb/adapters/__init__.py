"""Architecture adapters: the only place that knows architecture-specific module names.

One module per family, registered by `config.model_type`. Adding a family means writing one
`Adapter` subclass and listing it in `_ADAPTERS`.
"""

from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from ..errors import FinescopeError
from .base import Adapter, ProjSlice
from .gemma3 import Gemma3Adapter
from .gpt2 import GPT2Adapter
from .gpt_neox import GPTNeoXAdapter
from .llama import LlamaAdapter

__all__ = ["Adapter", "ProjSlice", "get_adapter", "supported_model_types", "unsupported_reason"]

_ADAPTERS = {kind: adapter for adapter in (LlamaAdapter(), Gemma3Adapter(), GPT2Adapter(), GPTNeoXAdapter()) for kind in adapter.model_types}


# model types transformers knows that the kit refuses for a reason of their own, not just "unsupported"
_REFUSED = {
    "gemma3": "the multimodal Gemma 3 ('gemma3', image and text) is not supported; use a text-only Gemma 3 model "
              "(model_type 'gemma3_text'), such as the named model gemma3-270m",
}


def supported_model_types() -> list[str]:
    return sorted(_ADAPTERS)


def unsupported_reason(model_type) -> str | None:
    """Why `model_type` cannot be used (a clause naming it and the supported ones), or None."""
    if model_type in _ADAPTERS:
        return None
    if model_type in _REFUSED:
        return _REFUSED[model_type]
    supported = ", ".join(supported_model_types())
    is_causal = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if is_causal:
        return f"architecture {model_type!r} is not supported (supported: {supported})"
    return f"model type {model_type!r} is not a decoder-only causal language model the kit supports ({supported})"


def get_adapter(model_or_config) -> Adapter:
    """The adapter for a model, a config or a model_type string."""
    model = model_or_config.get_base_model() if hasattr(model_or_config, "get_base_model") else model_or_config
    config = getattr(model, "config", model)
    model_type = config if isinstance(config, str) else getattr(config, "model_type", None)
    reason = unsupported_reason(model_type)
    if reason:
        raise FinescopeError(f"Cannot use this model: {reason}.")
    return _ADAPTERS[model_type]
