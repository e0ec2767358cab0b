"""How good an SAE is, on held-out text: reconstruction, sparsity, dead features, and LM loss.

Explained variance (1 - FVU) pools every held-out token: 1 - sum |x - x_hat|^2 / sum |x - mean|^2.
A feature is dead when it never fires on any of those tokens, so the dead fraction only means
something over many tokens (the benchmark uses 200k). The spliced loss is the LM's next-token
loss when the layer's output is replaced by the SAE's reconstruction at the positions the SAE
was trained on (text tokens after the first; BOS, the first position and padding keep their true activations); clean (no change)
and zero-ablation (those positions zeroed) losses bracket it, and `loss_recovered` is the
fraction of the zero-to-clean gap the SAE closes.
"""

from __future__ import annotations

import torch

from finescope_nb.activations import ActivationConfig, capture, context_length, tokenize_batches
from finescope_nb.device import model_device
from finescope_nb.errors import FinescopeError
from finescope_nb.lm import get_adapter
from finescope_nb.logprobs import next_token_logprobs
from finescope_nb.sae.layer_sae import LayerSAE


@torch.no_grad()
def reconstruction_metrics(sae: LayerSAE, batches) -> dict:
    """Explained variance, mean L0 and dead fraction over an iterable of [tokens, d_model] batches."""
    n, sq_err, total, total_sq = 0, 0.0, None, 0.0
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    l0_sum = 0.0
    for x in batches:
        x = x.float()
        codes = sae.encode(x)
        recon = sae.decode(codes)
        active = codes > 0
        fired |= active.any(0)
        l0_sum += float(active.sum())
        sq_err += float((x - recon).double().pow(2).sum())
        xd = x.double()
        total = xd.sum(0) if total is None else total + xd.sum(0)
        total_sq += float(xd.pow(2).sum())
        n += len(x)
    if n == 0:
        raise FinescopeError("No held-out tokens to evaluate on; pass at least one non-empty text.")
    variance = total_sq - float(total.pow(2).sum()) / n
    return {
        "explained_variance": 1.0 - sq_err / variance, "l0": l0_sum / n,
        "dead_fraction": float((~fired).float().mean()), "dead_features": int((~fired).sum()), "heldout_tokens": n,
    }


def _next_token_loss(model, input_ids: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> tuple[float, int]:
    """Summed cross-entropy of predicting each kept token from its prefix, and how many there were (the logits
    formed a slice of positions at a time, as a large vocabulary needs)."""
    targets = keep[:, 1:]
    return -float(next_token_logprobs(model, input_ids, mask, wanted=targets)[targets].sum()), int(targets.sum())


@torch.no_grad()
def spliced_loss(sae: LayerSAE, model, tokenizer, texts, config: ActivationConfig = ActivationConfig(),
                 max_tokens: int = 50_000) -> dict:
    """Clean, spliced and zero-ablation next-token loss (nats/token) and the fraction of the gap recovered."""
    block = get_adapter(model).decoder_layers(model)[sae.layer]
    mode = {"value": "clean", "keep": None}

    def splice(module, args, output):
        hidden = output if isinstance(output, torch.Tensor) else output[0]
        if mode["value"] == "clean":
            return None
        new = hidden.clone()
        rows = mode["keep"]
        new[rows] = 0.0 if mode["value"] == "zero" else sae.reconstruct(hidden[rows].float().cpu()).to(hidden)
        return new if isinstance(output, torch.Tensor) else (new, *output[1:])

    sums = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
    count = 0
    handle = block.register_forward_hook(splice)
    try:
        batches = tokenize_batches(tokenizer, texts, config.batch_size, context_length(model, config.max_length),
                                   config.drop_first)
        device = model_device(model)
        for batch in batches:
            ids, mask, keep = batch.input_ids.to(device), batch.attention_mask.to(device), batch.keep.to(device)
            mode["keep"] = keep
            for name in sums:
                mode["value"] = name
                loss, n = _next_token_loss(model, ids, mask, keep)
                sums[name] += loss
            count += n
            if count >= max_tokens:
                batches.close()
                break
    finally:
        handle.remove()
    if count == 0:
        raise FinescopeError("The held-out texts have no tokens to predict; pass texts of at least two tokens.")
    clean, spliced, zero = (sums[k] / count for k in ("clean", "spliced", "zero"))
    return {"clean_loss": clean, "spliced_loss": spliced, "zero_ablation_loss": zero,
            "loss_recovered": (zero - spliced) / (zero - clean) if zero != clean else float("nan"), "loss_tokens": count}


def evaluate_sae(sae: LayerSAE, model, tokenizer, texts, config: ActivationConfig | None = None,
                 n_tokens: int = 200_000, loss_tokens: int = 50_000, progress: bool = True) -> dict:
    """Held-out metrics: reconstruction and sparsity on up to `n_tokens`, LM losses on up to `loss_tokens`.

    Spliced loss is left out for coordinate-selected SAEs: the coordinates they do not see would
    be replaced by constants, which measures the selection rather than the SAE.
    """
    sae.check_model(model)
    config = config or sae.config.capture
    texts = list(texts)  # read twice: once for reconstruction, once for the LM losses
    stream = capture(model, tokenizer, texts, sae.layer, config, progress=progress)
    def limited():
        seen = 0
        for batch in stream:
            acts = batch.acts[sae.layer]
            yield acts[: n_tokens - seen]
            seen += len(acts)
            if seen >= n_tokens:
                stream.close()
                return

    metrics = reconstruction_metrics(sae, limited())
    if sae.coordinates is None and loss_tokens > 0:
        metrics.update(spliced_loss(sae, model, tokenizer, texts, config, loss_tokens))
    return metrics
