"""Residual-stream activations of chosen layers, captured with early exit and streamed in batches.

An SAE sees one layer's output, so running the blocks after it (and the LM head, which costs
as much as several blocks in a small-vocabulary model) is wasted work: capture stops the forward
pass right after the deepest requested layer. Only real text tokens after the first are kept: padding, the special
tokens a tokenizer adds by itself (our tokenizer prepends EOS as BOS, GPT-2's and SmolLM2's add
nothing), and the first position of every text are dropped. The first position is the attention
sink: with a BOS it is that token, without one it is the first word, and in a pretrained model its
residual can be a hundred times the norm of the others (SmolLM2 after block 14: ~23,000 against
~150), an outlier that no feature should spend capacity on and that would swamp the scaling. Everything is a generator over batches, so memory does not grow with the corpus;
`collect_activations` can write into a memory-mapped file instead of RAM for large training sets.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

from finescope_nb.config import Config
from finescope_nb.device import model_device
from finescope_nb.errors import FinescopeError, warn_once
from finescope_nb.lm import get_adapter, max_positions, run_until_layer

__all__ = [
    "ActivationBatch",
    "ActivationConfig",
    "capture",
    "check_layer",
    "collect_activations",
    "context_length",
    "default_layer",
    "pool_per_document",
    "shuffled_batches",
    "tokenize_batches",
]


@dataclass(frozen=True)
class ActivationConfig(Config):
    """How documents become activation batches: tokens kept per document and documents per forward pass."""

    max_length: int = 128
    batch_size: int = 16
    # drop each text's first position (the attention sink, see above); a field, so SAEs and codes cached
    # before the kit dropped it are not mistaken for ones captured this way
    drop_first: bool = True


@dataclass
class TokenBatch:
    """One padded batch of documents and which of its positions are real text tokens."""

    doc_index: torch.Tensor  # [batch] position of each row's document in the input stream
    input_ids: torch.Tensor  # [batch, seq]
    attention_mask: torch.Tensor  # [batch, seq]
    keep: torch.Tensor  # [batch, seq] bool: not padding, not an added special token, not the first position


@dataclass
class ActivationBatch:
    """Activations of the kept tokens of one batch, flattened to [tokens, hidden] per layer."""

    acts: dict[int, torch.Tensor]
    doc_index: torch.Tensor  # [tokens] document of each token (index in the input stream)
    position: torch.Tensor  # [tokens] position of each token in its (tokenized) document
    token_ids: torch.Tensor  # [tokens]
    tokens: TokenBatch  # the padded batch, for callers that need the [batch, seq] layout


def default_layer(model) -> int:
    """A middle layer below n_layers / 2: deep enough for abstract features, cheap to reach."""
    return (get_adapter(model).num_layers(model) - 1) // 2


def check_layer(model, layer) -> int:
    n = get_adapter(model).num_layers(model)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < n:
        raise FinescopeError(f"Layer {layer!r} is outside this model; pass an int from 0 to {n - 1} (it has {n} layers).")
    return int(layer)


def context_length(model, max_length: int) -> int:
    """`max_length` capped by the positions the model can embed."""
    limit = max_positions(model) or max_length
    if max_length < 2:
        raise FinescopeError(f"max_length must be at least 2 tokens, got {max_length}; use e.g. 128.")
    return min(max_length, limit)


def tokenize_batches(tokenizer, texts: Iterable[str], batch_size: int, max_length: int,
                     drop_first: bool = True) -> Iterator[TokenBatch]:
    """Padded batches of at most `max_length` tokens per text, with the mask of real text tokens.

    Texts longer than that are truncated, with one warning per call. An empty input is an error,
    found when the stream ends without a single text.
    """
    if batch_size < 1:
        raise FinescopeError(f"batch_size must be at least 1, got {batch_size}.")
    warned = False
    start = 0
    iterator = iter(texts)
    while True:
        chunk = list(itertools.islice(iterator, batch_size))
        if not chunk:
            break
        bad = next((t for t in chunk if not isinstance(t, str)), None)
        if bad is not None:
            raise FinescopeError(f"Texts must be strings, got {type(bad).__name__} ({bad!r:.40}); pass a list of str.")
        enc = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                        return_special_tokens_mask=True, return_overflowing_tokens=False)
        if not warned and int(enc["attention_mask"].sum(1).max()) >= max_length:
            if any(len(tokenizer(t, add_special_tokens=True)["input_ids"]) > max_length for t in chunk):
                warn_once(("truncated", max_length),
                          f"Some texts are longer than the context of {max_length} tokens and were truncated to it; "
                          "raise max_length to keep more of each text (said once per session).")
                warned = True
        mask = enc["attention_mask"]
        keep = mask.bool() & ~enc["special_tokens_mask"].bool()
        if drop_first:
            keep[torch.arange(len(mask)), mask.argmax(1)] = False  # each text's first position: the attention sink
        yield TokenBatch(torch.arange(start, start + len(chunk)), enc["input_ids"], mask, keep)
        start += len(chunk)
    if start == 0:
        raise FinescopeError("The text list is empty; pass at least one non-empty text.")


def _layer_outputs(model, batch: TokenBatch, layers: Sequence[int], early_exit: bool) -> dict[int, torch.Tensor]:
    """{layer: [batch, seq, hidden]}: hooks on the shallower layers, early exit after the deepest."""
    adapter = get_adapter(model)
    deepest = max(layers)
    captured: dict[int, torch.Tensor] = {}

    def keeper(i):
        def hook(module, args, output):
            captured[i] = output if isinstance(output, torch.Tensor) else output[0]
        return hook

    device = model_device(model)
    ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
    hooked = [i for i in layers if i != deepest or not early_exit]
    handles = [adapter.decoder_layers(model)[i].register_forward_hook(keeper(i)) for i in hooked]
    try:
        if early_exit:
            captured[deepest] = run_until_layer(model, ids, mask, deepest)
        else:
            model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def capture(model, tokenizer, texts: Iterable[str], layers, config: ActivationConfig = ActivationConfig(),
            early_exit: bool = True, progress: bool = True, total: int | None = None) -> Iterator[ActivationBatch]:
    """A stream of the kept-token activations of `layers` (an int or a list), one batch of documents at a time.

    Arguments are checked now, not when the stream is first read.

    `early_exit=False` runs the whole model, LM head included, and exists to measure what early
    exit saves and to check that both give the same activations.
    """
    layers = list(layers) if isinstance(layers, (list, tuple, range)) else [layers]
    if not layers:
        raise FinescopeError("No layers were given; pass a layer index or a list of them.")
    layers = [check_layer(model, i) for i in layers]
    max_length = context_length(model, config.max_length)
    if total is None and isinstance(texts, Sequence):
        total = len(texts)
    return _capture_stream(model, tokenizer, texts, layers, config.batch_size, max_length, early_exit, progress, total,
                           config.drop_first)


@torch.no_grad()  # as a decorator, so grad mode is restored whenever the generator is suspended
def _capture_stream(model, tokenizer, texts, layers, batch_size, max_length, early_exit, progress, total, drop_first):
    bar = tqdm(total=total, desc=f"capture layer {','.join(map(str, layers))}", unit="doc", disable=not progress)
    try:
        for batch in tokenize_batches(tokenizer, texts, batch_size, max_length, drop_first):
            outputs = _layer_outputs(model, batch, layers, early_exit)
            rows, cols = batch.keep.nonzero(as_tuple=True)
            yield ActivationBatch(
                acts={i: outputs[i][rows.to(outputs[i].device), cols.to(outputs[i].device)].float().cpu() for i in layers},
                doc_index=batch.doc_index[rows], position=cols, token_ids=batch.input_ids[rows, cols],
                tokens=batch,
            )
            bar.update(len(batch.doc_index))
    finally:
        bar.close()


def collect_activations(model, tokenizer, texts: Iterable[str], layer: int, n_tokens: int,
                        config: ActivationConfig = ActivationConfig(), spill_to: str | Path | None = None,
                        progress: bool = True) -> np.ndarray:
    """Up to `n_tokens` activations of one layer as a float32 [tokens, hidden] array.

    With `spill_to` the array is a memory-mapped .npy file written batch by batch, so collecting
    millions of tokens needs no more RAM than one batch (the OS pages the file in and out).
    Collection stops as soon as enough tokens are in; fewer are returned when the texts run out.
    """
    if n_tokens < 1:
        raise FinescopeError(f"n_tokens must be at least 1, got {n_tokens}.")
    hidden = get_adapter(model).hidden_size(model)
    if spill_to is not None:
        Path(spill_to).parent.mkdir(parents=True, exist_ok=True)
        out = open_memmap(spill_to, mode="w+", dtype=np.float32, shape=(n_tokens, hidden))
    else:
        out = np.empty((n_tokens, hidden), dtype=np.float32)
    filled = 0
    stream = capture(model, tokenizer, texts, layer, config, progress=progress)
    try:
        for batch in stream:
            acts = batch.acts[layer].numpy()
            take = min(len(acts), n_tokens - filled)
            out[filled:filled + take] = acts[:take]
            filled += take
            if filled >= n_tokens:
                break
    finally:
        stream.close()
    if isinstance(out, np.memmap):
        out.flush()
    return out[:filled]


def shuffled_batches(acts: np.ndarray, batch_size: int, seed: int = 0) -> Iterator[torch.Tensor]:
    """An endless stream of float32 batches drawn without replacement, reshuffled every epoch.

    This is the data provider sae-lens's trainer pulls from. Indices are sorted within a batch
    so a memory-mapped array is read in file order.
    """
    if len(acts) < batch_size:
        raise FinescopeError(f"Only {len(acts)} activations for a batch of {batch_size}; collect more tokens or lower batch_size.")
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(acts))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield torch.from_numpy(np.asarray(acts[np.sort(order[start:start + batch_size])], dtype=np.float32))


def pool_per_document(codes: torch.Tensor, doc_index: torch.Tensor, n_docs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, max) of token codes per document: [n_docs, width] each.

    `doc_index` holds values 0..n_docs-1 (positions within the batch); a document with no kept
    token gets zeros. Codes are non-negative for every SAE here, so a zero start is a valid max.
    """
    width = codes.shape[1]
    total = torch.zeros(n_docs, width, dtype=codes.dtype).index_add_(0, doc_index, codes)
    counts = torch.bincount(doc_index, minlength=n_docs).clamp(min=1).to(codes.dtype)
    peak = torch.zeros(n_docs, width, dtype=codes.dtype).scatter_reduce_(
        0, doc_index[:, None].expand(-1, width), codes, reduce="amax", include_self=True)
    return total / counts[:, None], peak
