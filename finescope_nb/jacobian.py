"""Choose K coordinates of a layer's output for the SAE (FineScope v3), and the baselines it beats.

The Jacobian selector scores coordinate j by s_j = ||d a_j / d e(x)||, how strongly the
activation responds to the input embeddings. The full Jacobian is [hidden x seq*hidden] per
text, so it is estimated: for a random Gaussian direction v in embedding space, one
Jacobian-vector product J v (torch.func.jvp, forward mode, one pass) gives (J v)_j whose square
has expectation ||J_j||^2. Averaging over R probes, all positions and a reference set of texts
gives s_j^2. Coordinates that carry a constant offset or barely react to the input score low
even when their activations are large, which is what separates it from the magnitude and
variance selectors. Forward-mode AD needs eager attention (SDPA has no forward derivative on
CPU), so the model runs eagerly for the duration.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import jvp

from finescope_nb.activations import ActivationConfig, check_layer, collect_activations, context_length, tokenize_batches
from finescope_nb.errors import FinescopeError
from finescope_nb.lm import get_adapter, run_until_layer

__all__ = ["CoordinateSelection", "jacobian_scores", "select_coordinates"]


@dataclass
class CoordinateSelection:
    method: str
    indices: torch.Tensor  # [K] chosen coordinates, best first
    scores: torch.Tensor  # [hidden] score of every coordinate (higher is better)


@contextlib.contextmanager
def _eager_attention(model):
    root = get_adapter(model).root(model)
    before = root.config._attn_implementation
    if before != "eager":
        root.set_attn_implementation("eager")
    try:
        yield
    finally:
        if before != "eager":
            root.set_attn_implementation(before)


def jacobian_scores(model, tokenizer, texts, layer: int, probes: int = 4, seed: int = 0,
                    config: ActivationConfig = ActivationConfig()) -> torch.Tensor:
    """s_j = sqrt(E ||d a_j / d e||^2) per coordinate of layer `layer`, over the text tokens of `texts`."""
    layer = check_layer(model, layer)
    if probes < 1:
        raise FinescopeError(f"probes must be at least 1, got {probes}.")
    adapter = get_adapter(model)
    embed = adapter.embedding(model)
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(adapter.hidden_size(model), dtype=torch.float64)
    count = 0
    with _eager_attention(model), torch.no_grad():
        for batch in tokenize_batches(tokenizer, texts, config.batch_size, context_length(model, config.max_length),
                                      config.drop_first):
            embeds = embed(batch.input_ids.to(embed.weight.device))
            mask, keep = batch.attention_mask.to(embeds.device), batch.keep.to(embeds.device)

            def layer_output(e, mask=mask):
                return run_until_layer(model, None, mask, layer, inputs_embeds=e)

            for _ in range(probes):
                direction = torch.randn(embeds.shape, generator=generator, dtype=embeds.dtype).to(embeds.device)
                _, tangent = jvp(layer_output, (embeds,), (direction,))
                total += tangent[keep].double().pow(2).sum(0).cpu()
            count += int(batch.keep.sum()) * probes
    return (total / max(count, 1)).sqrt().float()


def select_coordinates(method: str, model, tokenizer, texts, layer: int, k: int, acts: np.ndarray | None = None,
                       probes: int = 4, seed: int = 0, capture: ActivationConfig = ActivationConfig(),
                       n_tokens: int = 20_000) -> CoordinateSelection:
    """The `k` best coordinates of `layer` by `method`: jacobian, random, magnitude (mean |a_j|) or variance.

    `acts` ([tokens, hidden]) feeds the magnitude and variance selectors; without it they
    capture up to `n_tokens` from `texts`. The Jacobian selector uses `texts` as its reference set.
    """
    hidden = get_adapter(model).hidden_size(model)
    if not 1 <= k <= hidden:
        raise FinescopeError(f"k must be between 1 and the layer width {hidden}, got {k}.")
    if method == "jacobian":
        scores = jacobian_scores(model, tokenizer, texts, layer, probes, seed, capture)
    elif method == "random":
        scores = torch.rand(hidden, generator=torch.Generator().manual_seed(seed))
    elif method in ("magnitude", "variance"):
        data = acts if acts is not None else collect_activations(model, tokenizer, texts, layer, n_tokens, capture, progress=False)
        data = torch.from_numpy(np.asarray(data, dtype=np.float32))
        scores = data.abs().mean(0) if method == "magnitude" else data.var(0)
    else:
        raise FinescopeError(f"Unknown coordinate selector {method!r}; choose jacobian, random, magnitude or variance.")
    return CoordinateSelection(method, scores.argsort(descending=True)[:k], scores)
