"""Train an SAE with sae-lens's SAETrainer on activations captured by `finescope_nb.activations`.

We feed the trainer from our own shuffled iterator rather than through sae-lens's runner, because
the runner would run the whole model (no early exit) and wants a TransformerLens-style wrapper.
The loop calls the trainer's public per-step seam (`SAETrainer.step`) instead of `fit()` so that
every step can be checked: a NaN or infinite loss stops training with a warning naming the step,
and the SAE keeps the weights of the last finite step. wandb is never touched.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sae_lens import SAE, LoggingConfig, SAETrainer
from sae_lens.config import SAETrainerConfig
from tqdm.auto import tqdm

from finescope_nb.activations import check_layer, collect_activations, default_layer, shuffled_batches
from finescope_nb.errors import FinescopeError
from finescope_nb.jacobian import select_coordinates
from finescope_nb.lm import get_adapter, model_identity
from finescope_nb.sae.layer_sae import LayerSAE
from finescope_nb.sae.metrics import evaluate_sae
from finescope_nb.sae.registry import SAEConfig, build_training_sae

os.environ.setdefault("WANDB_MODE", "disabled")

HISTORY_POINTS = 100  # about this many rows of training history, whatever the run length


def _trainer_config(config: SAEConfig, total_tokens: int) -> SAETrainerConfig:
    steps = total_tokens // config.batch_size
    return SAETrainerConfig(
        total_training_samples=steps * config.batch_size, train_batch_size_samples=config.batch_size,
        lr=config.lr, lr_end=config.lr / 10, lr_scheduler_name="constant",
        lr_warm_up_steps=int(config.warmup_fraction * steps), lr_decay_steps=int(config.decay_fraction * steps),
        dead_feature_window=config.dead_feature_window, feature_sampling_window=max(steps, 1),
        n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),
    )


def _inference_sae(training_sae) -> SAE:
    """The inference form sae-lens itself would save (e.g. BatchTopK becomes JumpReLU)."""
    with tempfile.TemporaryDirectory() as tmp:
        training_sae.save_inference_model(tmp)
        return SAE.load_from_disk(tmp)


def fit_sae(acts: np.ndarray, config: SAEConfig = SAEConfig(), progress: bool = True, metadata: dict | None = None):
    """Train on a [tokens, d_in] array; returns (inference SAE, history rows, stop message or None)."""
    if acts.ndim != 2 or len(acts) < config.batch_size:
        raise FinescopeError(
            f"Need a [tokens, width] array with at least one batch ({config.batch_size}) of tokens, got shape "
            f"{tuple(acts.shape)}; collect more tokens or lower batch_size.")
    torch.manual_seed(config.seed)
    sae = build_training_sae(config, acts.shape[1], metadata)
    trainer_cfg = _trainer_config(config, config.train_tokens)
    batches = shuffled_batches(acts, config.batch_size, config.seed)
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=batches)
    sample = np.asarray(acts[:: max(1, len(acts) // 50_000)], dtype=np.float64)
    scale = 1.0
    if config.normalize_activations == "expected_average_only_in":
        # sae-lens's convention (scale so the mean norm is sqrt(d_in)), estimated on a sample of the
        # array directly rather than by its estimator, which draws batches with its own progress bar
        scale = float(sae.cfg.d_in ** 0.5 / np.linalg.norm(sample, axis=1).mean())
        trainer.activation_scaler.scaling_factor = scale
    if config.decoder_bias_init == "mean":  # in the scaled space the SAE trains in
        with torch.no_grad():
            sae.b_dec.copy_(torch.from_numpy(sample.mean(0) * scale).to(sae.b_dec.dtype))
    steps = trainer_cfg.total_training_steps
    every = max(1, steps // HISTORY_POINTS)
    history, stopped, start = [], None, time.perf_counter()
    good = {k: v.detach().clone() for k, v in sae.state_dict().items()}
    for step in tqdm(range(steps), desc=f"train {config.architecture} SAE", disable=not progress):
        out = trainer.step(next(batches))
        trainer.n_training_steps += 1
        if not (torch.isfinite(out.loss) and all(torch.isfinite(p).all() for p in sae.parameters())):
            stopped = (f"Training stopped at step {step} because the loss became {float(out.loss)}; the SAE keeps its "
                       "weights from before that step, so lower lr or check the activations for inf or NaN.")
            sae.load_state_dict(good)
            warnings.warn(stopped, stacklevel=2)
            break
        good = {k: v.detach().clone() for k, v in sae.state_dict().items()}
        if step % every == 0 or step == steps - 1:
            log = trainer.build_train_step_log_dict(out, trainer.n_training_samples)
            history.append({
                "step": step, "tokens": trainer.n_training_samples, "loss": out.loss.item(),
                "mse": float(log.get("losses/mse_loss", float("nan"))),
                "explained_variance": float(log["metrics/explained_variance"]), "l0": float(log["metrics/l0"]),
                "dead_features": int(log["sparsity/dead_features"]), "lr": float(log["details/current_learning_rate"]),
                "seconds": round(time.perf_counter() - start, 2),
            })
    if trainer.activation_scaler.scaling_factor is not None:
        sae.fold_activation_norm_scaling_factor(trainer.activation_scaler.scaling_factor)
    trainer.set_final_sae_metadata()
    return _inference_sae(sae), history, stopped


def capture_for_sae(model, tokenizer, texts, config: SAEConfig, spill_dir: Path | None = None,
                    progress: bool = True) -> np.ndarray:
    """The `config.train_tokens` activations an SAE of `config` trains on (a memory-mapped file under `spill_dir`)."""
    layer = check_layer(model, default_layer(model) if config.layer is None else config.layer)
    spill = None if spill_dir is None else os.path.join(spill_dir, f"acts-layer{layer}.npy")
    return collect_activations(model, tokenizer, texts, layer, config.train_tokens, config.capture, spill, progress)


def train_sae(model, tokenizer, texts, config: SAEConfig = SAEConfig(), heldout_texts=None, spill_dir=None,
              progress: bool = True, acts: np.ndarray | None = None) -> LayerSAE:
    """Capture `config.train_tokens` activations of the layer from `texts`, train, and evaluate.

    With `heldout_texts`, the returned SAE carries held-out metrics (`finescope_nb.sae.evaluate_sae`).
    With `spill_dir`, training activations go to a memory-mapped file there instead of RAM.
    `acts`: activations captured earlier from `texts` (see `capture_for_sae`), used instead of capturing.
    """
    layer = check_layer(model, default_layer(model) if config.layer is None else config.layer)
    adapter = get_adapter(model)
    d_model = adapter.hidden_size(model)
    if acts is None:
        acts = capture_for_sae(model, tokenizer, texts, config, None if spill_dir is None else Path(spill_dir), progress)
    if len(acts) < config.batch_size:
        raise FinescopeError(
            f"The texts gave only {len(acts)} tokens, less than one batch of {config.batch_size}; pass more texts or lower batch_size.")
    coordinates = fill = None
    train_acts = acts
    if config.selection is not None:
        if config.n_coordinates >= d_model:
            raise FinescopeError(f"n_coordinates must be below the layer width {d_model}, got {config.n_coordinates}; or set selection=None.")
        reference = list(_first(texts, config.reference_docs))
        chosen = select_coordinates(config.selection, model, tokenizer, reference, layer, config.n_coordinates,
                                    acts=acts, probes=config.jvp_probes, seed=config.seed, capture=config.capture)
        coordinates = chosen.indices.tolist()
        fill = acts.mean(0, dtype=np.float64).astype(np.float32).tolist()
        train_acts = acts[:, chosen.indices.numpy()]
    identity = model_identity(model)
    hook_name = adapter.layer_hook_name(layer)
    sae, history, stopped = fit_sae(train_acts, config.replace(layer=layer), progress,
                                    metadata={"model_name": identity, "hook_name": hook_name})
    result = LayerSAE(sae, layer=layer, hook_name=hook_name, model_identity=identity, d_model=d_model,
                      config=config.replace(layer=layer), coordinates=coordinates, fill=fill, history=history,
                      stopped_early=stopped)
    result.metrics["train_tokens"] = int(len(acts))
    if heldout_texts is not None:
        result.metrics.update(evaluate_sae(result, model, tokenizer, heldout_texts, progress=progress))
    return result


def _first(texts, n):
    for i, text in enumerate(texts):
        if i >= n:
            return
        yield text
