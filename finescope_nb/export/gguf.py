"""One GGUF file that llama.cpp (and what is built on it) loads: weights, tokenizer and chat template.

Llama-family blocks that all have the same shape are written as llama.cpp's `llama` architecture;
blocks of different head counts or MLP widths (the default plan prunes some blocks and not others,
each by its own share) as its `deci` architecture, whose loader reads the head counts and the
feed-forward width of every block from per-block arrays, where `llama` builds every block like the
first. The key length is written explicitly because pruning heads breaks hidden_size / heads.

The tokenizer must be a byte-level BPE with GPT-2's pre-tokenization, like the kit's own: llama.cpp
runs its own copy of the tokenizer, picked by the `tokenizer.ggml.pre` name, and cannot take a
regex from the file. Whether BOS/EOS are added is read off the tokenizer's own output.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import torch

from finescope_nb.adapters import get_adapter
from finescope_nb.errors import FinescopeError
from finescope_nb.lm import layer_shapes, shapes_are_uniform

GGUF_MODEL_TYPES = ("llama", "mistral")  # Llama-family configs without projection biases
DTYPES = {"f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
          "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
          "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0)}
# Given when a tokenizer has no template: the kit's models are base models that continue text, and
# recovery trains them on prompt and response written back to back, so a chat is its messages in a row.
PLAIN_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def unsupported_reason(model) -> str | None:
    """Why this model cannot be written as GGUF (a clause), or None when it can."""
    adapter, config = get_adapter(model), get_adapter(model).root(model).config
    if config.model_type not in GGUF_MODEL_TYPES or adapter.gguf_tensors(model) is None:
        return f"architecture {config.model_type!r} has no GGUF writer in the kit (supported: {', '.join(GGUF_MODEL_TYPES)})"
    modules = [m for i in range(adapter.num_layers(model))
               for m in (*adapter.attention_modules(model, i).values(), *adapter.mlp_modules(model, i).values())]
    if any(m.bias is not None for m in modules):
        return "its projections have biases, which llama.cpp's llama and deci architectures do not read"
    window = getattr(config, "sliding_window", None)
    if window and window < config.max_position_embeddings:
        return f"it attends through a sliding window of {window} tokens, which llama.cpp's llama architecture does not apply"
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        return f"its rotary embedding is scaled ({rope.get('rope_type')!r}), which the kit's GGUF writer does not describe"
    return None


def _tokenizer_fields(tokenizer, vocab_size: int) -> dict:
    """Token list, types, merges, special ids and the pre-tokenizer name for llama.cpp's BPE."""
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise FinescopeError(f"GGUF export needs a fast (tokenizers) tokenizer, but this one is {type(tokenizer).__name__}; "
                             "export it with --format hf instead.")
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    model, pre = backend["model"], backend.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        raise FinescopeError(
            f"GGUF export needs a byte-level BPE tokenizer with GPT-2 pre-tokenization, like the kit's own, but this "
            f"one is {model.get('type')} with pre-tokenizer {pre.get('type')}; export it with --format hf instead.")
    special = {t["id"] for t in backend.get("added_tokens", []) if t.get("special")}
    added = {t["id"] for t in backend.get("added_tokens", [])}
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    if len(by_id) > vocab_size:
        raise FinescopeError(f"The tokenizer has {len(by_id)} tokens but the model only {vocab_size} embeddings; "
                             "export the model with the tokenizer it was trained with.")
    tokens, types = [], []
    for i in range(vocab_size):  # embedding rows beyond the tokenizer get placeholder tokens, as llama.cpp expects
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        types.append(gguf.TokenType.UNUSED if i not in by_id else gguf.TokenType.CONTROL if i in special
                     else gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    with_special, without = tokenizer("a")["input_ids"], tokenizer("a", add_special_tokens=False)["input_ids"]
    return {"tokens": tokens, "types": types, "merges": merges, "pre": "gpt-2",
            "bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id,
            "unk": tokenizer.unk_token_id,
            "add_bos": len(with_special) > len(without) and with_special[0] == tokenizer.bos_token_id,
            "add_eos": len(with_special) > len(without) and with_special[-1] == tokenizer.eos_token_id,
            "chat_template": tokenizer.chat_template or PLAIN_TEMPLATE}


def _tensor_data(tensor: torch.Tensor, qtype) -> tuple[np.ndarray, object]:
    """The array to store and its GGML type: norms (1-D) stay float32, as llama.cpp keeps them;
    a matrix whose rows do not fill whole Q8_0 blocks falls back to float16."""
    data = tensor.detach().to(torch.float32).cpu().contiguous().numpy()
    if data.ndim == 1:
        return data, None
    if qtype == gguf.GGMLQuantizationType.F16 or (qtype == gguf.GGMLQuantizationType.Q8_0
                                                   and data.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]):
        return data.astype(np.float16), None
    return gguf.quants.quantize(data, qtype), qtype


def write_gguf(model, tokenizer, path: str | Path, dtype: str = "f16", name: str = "finescope") -> dict:
    """Write `model` and `tokenizer` to the GGUF file `path`; returns what was written (for the model card)."""
    if dtype not in DTYPES:
        raise FinescopeError(f"Unknown GGUF dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    reason = unsupported_reason(model)
    if reason:
        raise FinescopeError(f"Cannot write this model as GGUF: {reason}; export it with --format hf instead.")
    adapter = get_adapter(model)
    config, shapes = adapter.root(model).config, layer_shapes(model)
    uniform = shapes_are_uniform(shapes)
    arch = "llama" if uniform else "deci"
    qtype, file_type = DTYPES[dtype]
    head_dim = adapter.head_dim(model)
    vocab_size = adapter.embedding(model).weight.shape[0]
    tok = _tokenizer_fields(tokenizer, vocab_size)

    def per_block(key):
        values = [shape[key] for shape in shapes]
        return values[0] if uniform else values

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(adapter.hidden_size(model))
    writer.add_block_count(len(shapes))
    writer.add_feed_forward_length(per_block("intermediate_size"))
    writer.add_head_count(per_block("num_heads"))
    writer.add_head_count_kv(per_block("num_kv_heads"))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(vocab_size)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(tok["pre"])
    writer.add_token_list(tok["tokens"])
    writer.add_token_types(tok["types"])
    writer.add_token_merges(tok["merges"])
    for key, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                     ("pad", writer.add_pad_token_id), ("unk", writer.add_unk_token_id)):
        if tok[key] is not None:
            add(tok[key])
    writer.add_add_bos_token(tok["add_bos"])
    writer.add_add_eos_token(tok["add_eos"])
    writer.add_chat_template(tok["chat_template"])
    with torch.no_grad():
        for tensor_name, tensor in adapter.gguf_tensors(model):
            data, raw = _tensor_data(tensor, qtype)
            writer.add_tensor(tensor_name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"arch": arch, "dtype": dtype, "file": Path(path).name, "pre_tokenizer": tok["pre"],
            "chat_template": tokenizer.chat_template is not None}
