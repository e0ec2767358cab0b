"""Load, save and identify causal LMs; run them up to one layer.

Models come from, in this order: a named model of the registry (`finescope_nb.models`, converted
once by `finescope fetch-model`), a local folder (the embedded default when none is named), or,
offline, the Hugging Face cache; nothing is downloaded. Pruned models can have different head and channel
counts per layer, which stock `from_pretrained` cannot build: such folders carry
`finescope_shapes.json`, and `load_model` resizes each layer to those shapes as the model is
constructed, before from_pretrained reads the weights (strictly). Architecture-specific names
live in `finescope_nb.adapters`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerFast
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from .adapters import Adapter, get_adapter, unsupported_reason
from .device import parameter_values, resolve_device
from .errors import FinescopeError
from .paths import DEFAULT_MODEL_DIR

__all__ = [
    "SHAPES_FILE",
    "get_adapter",
    "layer_shapes",
    "load_model",
    "load_tokenizer",
    "model_folder",
    "model_identity",
    "run_until_layer",
    "save_model",
    "shapes_are_uniform",
]

SHAPES_FILE = "finescope_shapes.json"
_GENERIC_TOKENIZERS = {"TokenizersBackend", "PreTrainedTokenizerFast"}
_SHAPE_KEYS = ("num_heads", "num_kv_heads", "intermediate_size")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
# Bookkeeping and runtime switches that do not change what the model computes.
_VOLATILE_CONFIG_KEYS = {
    "_name_or_path", "transformers_version", "architectures", "dtype", "torch_dtype",
    "use_cache", "output_hidden_states", "output_attentions", "return_dict",
}
# Config fields that a pruned model's saved config rewrites; model_identity hashes the real shapes instead.
_SHAPE_CONFIG_KEYS = {"num_attention_heads", "num_key_value_heads", "intermediate_size", "head_dim", "n_inner", "n_head"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__


def _named(path_or_id) -> Path | None:
    """The converted folder of a named model (registry first), or None when it is not a registry name."""
    from finescope_nb.models import NAMED_MODELS, is_fetched, named_folder

    if not isinstance(path_or_id, str) or path_or_id not in NAMED_MODELS:
        return None
    if not is_fetched(path_or_id):
        raise FinescopeError(f"The named model {path_or_id!r} is not fetched yet (looked in {str(named_folder(path_or_id))!r}); "
                             f"run `finescope fetch-model {path_or_id}` once, then try again.")
    return named_folder(path_or_id)


def _resolve(path_or_id) -> Path:
    """The folder of a named model (registry), a local path, a cached hub id, or None (the embedded default)."""
    named = _named(path_or_id)
    if named is not None:
        return named
    if path_or_id is None:
        if not DEFAULT_MODEL_DIR.is_dir():
            raise FinescopeError(
                f"The embedded default model is missing at {DEFAULT_MODEL_DIR}; "
                "build it with `finescope train-base` or pass a model folder."
            )
        return DEFAULT_MODEL_DIR
    if not isinstance(path_or_id, (str, os.PathLike)):
        raise FinescopeError(f"Expected a model folder or hub id, got {path_or_id!r}; pass a path or a string.")
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise FinescopeError(f"Model path {str(path)!r} is a file, not a folder; pass the folder written by save_pretrained.")
    if isinstance(path_or_id, str) and _HUB_ID.fullmatch(path_or_id):
        try:
            return Path(snapshot_download(path_or_id, local_files_only=True))
        except (OSError, ValueError) as exc:
            from finescope_nb.models import NAMED_MODELS

            raise FinescopeError(
                f"{path_or_id!r} is neither a named model ({', '.join(sorted(NAMED_MODELS))}), a local folder nor in the "
                "Hugging Face cache, and the kit cannot download it (offline); pass a named model or a local model folder."
            ) from exc
    raise FinescopeError(f"Model path {str(path)!r} does not exist; pass an existing folder written by save_pretrained.")


def model_folder(path_or_id=None) -> Path:
    """The local folder a model name, path or cached hub id resolves to (see `load_model`)."""
    return _resolve(path_or_id)


def _read_config(folder: Path):
    """The folder's config after checking that it describes a supported causal LM."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FinescopeError(f"{str(folder)!r} has no config.json, so it is not a model folder; point at a folder written by save_pretrained.")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FinescopeError(f"{str(config_path)!r} is not valid JSON ({_first_line(exc)}); rewrite it with save_pretrained.") from exc
    reason = unsupported_reason(raw.get("model_type") if isinstance(raw, dict) else None)
    if reason:
        raise FinescopeError(f"Cannot load {str(folder)!r}: {reason}.")
    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise FinescopeError(f"Cannot read {str(config_path)!r} ({_first_line(exc)}); rewrite it with save_pretrained.") from exc


def _read_shapes(path: Path, num_layers: int) -> list[dict[str, int]]:
    try:
        layers = json.loads(path.read_text(encoding="utf-8"))["layers"]
        shapes = [{key: int(layer[key]) for key in _SHAPE_KEYS} for layer in layers]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise FinescopeError(
            f"{str(path)!r} is malformed ({_first_line(exc)}); it must be "
            '{"layers": [{"num_heads": int, "num_kv_heads": int, "intermediate_size": int}, ...]}.'
        ) from exc
    if len(shapes) != num_layers:
        raise FinescopeError(f"{str(path)!r} lists {len(shapes)} layers but the config has {num_layers}; save the model again with save_model.")
    return shapes


def _reshaped_class(config, adapter: Adapter, shapes: list[dict[str, int]]):
    """The model class of `config`, resizing its layers to `shapes` right after construction.

    Resizing before the weights are read lets stock from_pretrained do the loading, with its key
    renames (e.g. GPT-NeoX's embed_out -> lm_head), tied weights, shards and dtype handling.
    The subclass keeps the class name, which transformers uses to find those renames.
    """
    base = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]

    def __init__(self, config, *args, **kwargs):
        base.__init__(self, config, *args, **kwargs)
        for i, shape in enumerate(shapes):
            adapter.resize_layer(self, i, shape)

    return type(base.__name__, (base,), {"__init__": __init__, "__module__": base.__module__})


def _load_weights(folder: Path, config, adapter: Adapter, dtype: torch.dtype, **placement) -> PreTrainedModel:
    """from_pretrained, reshaped per finescope_shapes.json when present, and strict about keys."""
    model_class = AutoModelForCausalLM
    shapes_path = folder / SHAPES_FILE
    if shapes_path.is_file():
        shapes = _read_shapes(shapes_path, config.num_hidden_layers)
        for i, shape in enumerate(shapes):
            try:
                adapter.check_shape(shape, i)
            except ValueError as exc:
                raise FinescopeError(f"{str(shapes_path)!r} is invalid: {exc}.") from exc
        model_class = _reshaped_class(config, adapter, shapes)
    try:
        model, info = model_class.from_pretrained(
            folder, config=config, dtype=dtype, use_safetensors=True, local_files_only=True, output_loading_info=True,
            **placement)
    except (OSError, RuntimeError, ValueError, SafetensorError) as exc:  # SafetensorError: a damaged weights file
        raise FinescopeError(f"Cannot load the model in {str(folder)!r} ({_first_line(exc)}); check that its weights match config.json and {SHAPES_FILE}.") from exc
    problems = {kind: sorted(keys)[:3] for kind, keys in info.items() if keys}
    if problems:
        raise FinescopeError(f"The weights in {str(folder)!r} do not match the model ({problems}); save the model again with save_model.")
    model.__class__ = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]  # drop the construction-time subclass
    return model


def load_model(path_or_id=None, *, dtype: torch.dtype = torch.float32, device=None, device_map=None,
               offload_folder: str | Path | None = None) -> PreTrainedModel:
    """A causal LM in eval mode from a local folder, a cached hub id, or the embedded default (None).

    Safetensors only, no remote code, and strict: a missing, unexpected or misshapen weight is an
    error rather than a randomly initialised tensor. Folders with finescope_shapes.json (pruned
    models whose config cannot describe their layers) get their layers resized before loading.

    `device` puts the whole model on one device: 'cpu' (the default), 'cuda', 'cuda:N' or 'auto', read by
    `device.resolve_device`, so CUDA asked for on a machine without a GPU is refused in one sentence.
    `device_map` instead places it with Accelerate for a model that fits no single device: "auto",
    "balanced", "sequential", or a {module name: device | "cpu" | "disk"} dict whose entries are whole
    decoder blocks or modules outside them; "disk" entries are kept in `offload_folder` (a temporary
    folder when not given) and read in as their block runs. The two are exclusive.
    """
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise FinescopeError(f"dtype must be a floating torch.dtype such as torch.float32, got {dtype!r}.")
    if device is not None and device_map is not None:
        raise FinescopeError(f"Pass either device ({device!r}) or device_map, not both: a device_map already says where "
                             "every part of the model goes.")
    device = torch.device("cpu") if device is None else resolve_device(str(device))  # "cuda" without a GPU: one sentence
    folder = _resolve(path_or_id)
    config = _read_config(folder)
    adapter = get_adapter(config)
    if not any(folder.glob("*.safetensors")):
        raise FinescopeError(f"{str(folder)!r} has no *.safetensors weights; the kit loads only safetensors, so re-save the model with save_pretrained.")
    if device_map is None:
        return _load_weights(folder, config, adapter, dtype).to(device).eval()
    placement = placement_kwargs(config, adapter, device_map, offload_folder)
    return _load_weights(folder, config, adapter, dtype, **placement).eval()


def placement_kwargs(config, adapter: Adapter, device_map, offload_folder) -> dict:
    """from_pretrained's placement arguments, after refusing a map that cuts a decoder block in parts:
    the kit's hooks (capture, importance, early exit) act on whole blocks, whose inputs and outputs
    Accelerate moves between devices, but not on the insides of one."""
    if isinstance(device_map, str):
        if device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
            raise FinescopeError(f"Unknown device_map {device_map!r}; use 'auto', 'balanced', 'sequential' or a "
                                 "{module name: device} dict.")
    elif isinstance(device_map, dict):
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
        names = {id(m): n for n, m in skeleton.named_modules()}
        blocks = [names[id(b)] for b in adapter.decoder_layers(skeleton)]
        inside = next((k for k in device_map for b in blocks if k.startswith(b + ".")), None)
        if inside is not None:
            raise FinescopeError(f"device_map entry {inside!r} places part of a decoder block; place whole blocks "
                                 f"(such as {blocks[0]!r}) so that the kit's hooks see each block on one device.")
    else:
        raise FinescopeError(f"device_map must be a string such as 'auto' or a dict of module name -> device, got {device_map!r}.")
    kwargs = {"device_map": device_map}
    if isinstance(device_map, str) or "disk" in device_map.values():
        kwargs["offload_folder"] = str(offload_folder or tempfile.mkdtemp(prefix="finescope-offload-"))
    return kwargs


def _declared_tokenizer_class(folder: Path):
    try:
        return json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None  # AutoTokenizer then decides, and reports a missing tokenizer itself


def load_tokenizer(path_or_id=None, *, padding_side: str = "right"):
    """The tokenizer of a model folder or cached hub id, with a pad token (eos when it has none)."""
    if padding_side not in ("left", "right"):
        raise FinescopeError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
    folder = _resolve(path_or_id)
    # A tokenizer built with the `tokenizers` library declares the generic class; AutoTokenizer
    # would override it for some model types (e.g. qwen2 -> Qwen2Tokenizer) and mangle it.
    loader = PreTrainedTokenizerFast if _declared_tokenizer_class(folder) in _GENERIC_TOKENIZERS else AutoTokenizer
    try:
        tokenizer = loader.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise FinescopeError(f"Cannot load a tokenizer from {str(folder)!r} ({_first_line(exc)}); the folder needs the files written by tokenizer.save_pretrained.") from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise FinescopeError(f"The tokenizer in {str(folder)!r} has neither a pad nor an eos token; add one and save it again.")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def max_positions(model) -> int | None:
    """The positions the model can embed (its config's max_position_embeddings), None where it does not say."""
    try:
        config = get_adapter(model).root(model).config
    except FinescopeError:  # an architecture without an adapter: its own config, if it has one
        config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None)


def layer_shapes(model) -> list[dict[str, int]]:
    """Per-layer {"num_heads", "num_kv_heads", "intermediate_size"}, read from the weights."""
    adapter = get_adapter(model)
    return [adapter.layer_shape(model, i) for i in range(adapter.num_layers(model))]


def shapes_are_uniform(shapes) -> bool:
    return all(shape == shapes[0] for shape in shapes)


def save_model(model, tokenizer, path, shapes=None) -> Path:
    """Write model (safetensors) and tokenizer (may be None) to `path`, replacing it atomically.

    When the config class can describe the layer shapes (uniform, and head counts the
    architecture allows) the saved config is updated so stock from_pretrained loads the folder;
    otherwise the original config is kept and finescope_shapes.json is added. `shapes`, if given,
    is checked against the weights, so a caller's bookkeeping cannot silently disagree with them.
    """
    target = Path(path)
    adapter = get_adapter(model)
    actual = layer_shapes(model)
    if shapes is not None and [dict(shape) for shape in shapes] != actual:
        raise FinescopeError(f"The shapes passed to save_model do not match the model's weights {actual}; pass shapes=None.")
    if target.exists() and not target.is_dir():
        raise FinescopeError(f"Cannot save the model to {str(target)!r}: it is a file; choose a folder path.")
    config = adapter.config_for_shapes(adapter.root(model).config, actual)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        adapter.root(model).save_pretrained(tmp)
        if config is None:
            (tmp / SHAPES_FILE).write_text(json.dumps({"layers": actual}, indent=1), encoding="utf-8")
        else:
            config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_identity(model) -> str:
    """A short hash of the config and weights, so later stages can refuse another model's artifacts.

    The config's head and channel counts are replaced by the shapes read from the weights (a pruned
    model's saved config rewrites those fields), and bookkeeping keys are left out.
    """
    adapter = get_adapter(model)
    root = adapter.root(model)
    config = {k: v for k, v in root.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS | _SHAPE_CONFIG_KEYS}
    config["finescope_shapes"] = {"head_dim": adapter.head_dim(model), "layers": layer_shapes(model)}
    digest = hashlib.sha256()
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(root.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        if tensor.device.type == "meta":  # offloaded under a device_map: its values are in the offload store
            module, _, own = name.rpartition(".")
            tensor = parameter_values(root.get_submodule(module))[own]
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


class _StopForward(Exception):
    """Raised by a forward hook to end the forward pass once the wanted layer has run."""


def run_until_layer(model, input_ids, attention_mask, layer: int, inputs_embeds=None) -> torch.Tensor:
    """The residual stream after block `layer` ([batch, seq, hidden]), skipping the later blocks.

    A forward hook on that block stores its output and raises to stop the pass. Blocks return a
    plain tensor in transformers 5 (Llama, GPT-2, NeoX) but may return a tuple elsewhere: taking
    output[0] of a tensor would silently keep only the first batch row, so the type is checked.
    Gradients flow as usual, so this also serves Jacobian estimates (pass `inputs_embeds` and
    input_ids=None to differentiate with respect to the embeddings).
    """
    adapter = get_adapter(model)
    n = adapter.num_layers(model)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise FinescopeError(f"layer must be an int from 0 to {n - 1} for this model, got {layer!r}.")
    captured = []

    def stop(module, args, output):
        captured.append(output if isinstance(output, torch.Tensor) else output[0])
        raise _StopForward

    handle = adapter.decoder_layers(model)[layer].register_forward_hook(stop)
    try:
        model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured[0]
