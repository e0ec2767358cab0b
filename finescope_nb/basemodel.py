"""Train the embedded tiny Llama and its BPE tokenizer from the pool, reproducibly.

The kit must run with no hub, so it ships its own base model. Its shape follows one rule from
docs/ARCHITECTURE.md ("The embedded default"): in a tiny model the LM head can cost more compute
than all decoder blocks together, and then pruning heads and channels cannot make it faster. So
the vocabulary stays small (8k), the embedding is tied, and the budget goes into depth and MLP
width, keeping the blocks at 75%+ of the forward pass's multiply-adds (`forward_macs`).

Training is resumable: every `checkpoint_every` steps the model, optimizer and step are saved
atomically, and the batch of step t depends only on (seed, t), so an interrupted run that
resumes ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from finescope_nb.artifacts import atomic_path, write_json_atomic
from finescope_nb.config import BaseModelConfig
from finescope_nb.errors import FinescopeError

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (no unknown tokens, any text round-trips) that prepends EOS as BOS."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    eos_id = tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{EOS} $A", pair=f"{EOS} $A {EOS} $B", special_tokens=[(EOS, eos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD, model_max_length=2048
    )


def model_config(cfg: BaseModelConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    if cfg.num_kv_heads >= cfg.num_heads or cfg.num_heads % cfg.num_kv_heads:
        raise FinescopeError(
            f"num_kv_heads={cfg.num_kv_heads} must divide num_heads={cfg.num_heads} and be smaller "
            "(grouped-query attention); e.g. 8 heads with 2 or 4 KV heads."
        )
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=max(512, cfg.seq_len),
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        rms_norm_eps=1e-5, initializer_range=0.02,
    )


def forward_macs(config, seq_len: int) -> dict[str, float]:
    """Multiply-adds per token of a Llama-style forward pass (Gemma 3 too) at context `seq_len`, split blocks vs
    LM head: pruning shrinks only the blocks, so their share bounds what it can speed up.

    Attention score and value products are counted at the average causal context (seq_len / 2).
    """
    d, ff = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q_out = config.num_attention_heads * head_dim
    kv_out = config.num_key_value_heads * head_dim
    attn_proj = d * (2 * q_out + 2 * kv_out)
    attn_ctx = 2 * q_out * (seq_len / 2)
    mlp = 3 * d * ff
    blocks = config.num_hidden_layers * (attn_proj + attn_ctx + mlp)
    head = d * config.vocab_size
    return {"blocks": blocks, "lm_head": head, "block_share": blocks / (blocks + head)}


def token_stream(tokenizer, texts: Sequence[str], batch: int = 1000) -> np.ndarray:
    """All texts as one uint16/int32 token stream, documents separated by EOS."""
    eos = tokenizer.eos_token_id
    parts = []
    for start in range(0, len(texts), batch):
        for ids in tokenizer(list(texts[start:start + batch]), add_special_tokens=False)["input_ids"]:
            parts.append(np.asarray(ids + [eos], dtype=np.int32))
    stream = np.concatenate(parts)
    return stream.astype(np.uint16) if len(tokenizer) < 65536 else stream


def batch_at(stream: np.ndarray, step: int, cfg: BaseModelConfig) -> torch.Tensor:
    """The training batch of `step`: random windows drawn from a generator seeded by (seed, step)."""
    rng = np.random.default_rng([cfg.seed, step])
    starts = rng.integers(0, len(stream) - cfg.seq_len - 1, size=cfg.batch_size)
    rows = np.stack([stream[s: s + cfg.seq_len + 1] for s in starts]).astype(np.int64)
    return torch.from_numpy(rows)


def lr_at(step: int, cfg: BaseModelConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, cfg: BaseModelConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8,
    )


def hardware() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads"


@dataclass
class TrainState:
    """What a checkpoint holds besides the weights and optimizer: enough to resume exactly."""

    step: int = 0
    elapsed: float = 0.0
    history: list = field(default_factory=list)


def _save_checkpoint(path: Path, model, optimizer, state: TrainState, cfg: BaseModelConfig) -> None:
    with atomic_path(path / "state.pt") as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": state.step, "elapsed": state.elapsed,
                    "history": json.dumps(state.history), "config": cfg.to_json()}, tmp)


def _load_checkpoint(path: Path, model, optimizer, cfg: BaseModelConfig) -> TrainState:
    try:
        blob = torch.load(path / "state.pt", weights_only=True)
    except Exception as exc:  # torch raises several kinds for a truncated or foreign file
        raise FinescopeError(f"Checkpoint {str(path / 'state.pt')!r} cannot be read ({type(exc).__name__}); delete that "
                             "folder to start over.") from exc
    # the time budget and checkpoint interval do not change the weights, so they may differ on resume
    same = {"max_train_minutes": cfg.max_train_minutes, "checkpoint_every": cfg.checkpoint_every}
    if BaseModelConfig.from_json(blob["config"]).replace(**same) != cfg:
        raise FinescopeError(
            f"Checkpoint {str(path)!r} was made with a different training config; delete that folder "
            "to start over, or rerun with the config it was made with."
        )
    model.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    return TrainState(step=int(blob["step"]), elapsed=float(blob["elapsed"]),
                      history=json.loads(blob["history"]))


def train(cfg: BaseModelConfig, texts: Sequence[str], checkpoint_dir: str | Path,
          on_step: Callable[[int, float], None] | None = None, progress: bool = True):
    """Train tokenizer (once, cached in the checkpoint folder) and model; resume if a checkpoint exists.

    Returns (model, tokenizer, TrainState). `on_step(step, loss)` is called after every step.
    """
    if not texts:
        raise FinescopeError("No training texts; train-base needs a non-empty pool.")
    ckpt = Path(checkpoint_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    tok_dir = ckpt / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        tokenizer = train_tokenizer(texts, cfg.vocab_size)
        with atomic_path(tok_dir) as tmp:
            tokenizer.save_pretrained(tmp)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    stream_file = ckpt / "stream.npy"
    if not stream_file.exists():
        with atomic_path(stream_file) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, token_stream(tokenizer, texts))
    stream = np.load(stream_file)
    if len(stream) <= cfg.seq_len + 1:
        raise FinescopeError(
            f"The training text has only {len(stream)} tokens, fewer than seq_len={cfg.seq_len}; "
            "give more text or a shorter seq_len."
        )

    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(model_config(cfg, tokenizer))
    optimizer = make_optimizer(model, cfg)
    state = TrainState()
    if (ckpt / "state.pt").exists():
        state = _load_checkpoint(ckpt, model, optimizer, cfg)
    model.train()
    bar = tqdm(total=cfg.max_steps, initial=state.step, desc="train-base", disable=not progress)
    t0 = time.perf_counter() - state.elapsed
    while state.step < cfg.max_steps:
        if cfg.max_train_minutes is not None and state.elapsed > cfg.max_train_minutes * 60:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(state.step, cfg)
        batch = batch_at(stream, state.step, cfg)
        logits = model(input_ids=batch[:, :-1], use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        if not torch.isfinite(loss):
            raise FinescopeError(
                f"Training loss became {float(loss)} at step {state.step}; lower lr (now {cfg.lr}) and "
                "resume from the last checkpoint."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        state.step += 1
        state.elapsed = time.perf_counter() - t0
        value = loss.item()
        state.history.append([state.step, round(value, 4), round(state.elapsed, 1)])
        bar.update(1)
        bar.set_postfix(loss=f"{value:.3f}")
        if state.step % cfg.checkpoint_every == 0 or state.step == cfg.max_steps:
            _save_checkpoint(ckpt, model, optimizer, state, cfg)
        if on_step is not None:
            on_step(state.step, value)
    bar.close()
    _save_checkpoint(ckpt, model, optimizer, state, cfg)
    model.eval()
    return model, tokenizer, state


def save_base_model(model, tokenizer, out_dir: str | Path, card: str, log: dict) -> Path:
    """Write weights as bfloat16 (half the bytes), a config that loads them as float32, and the card."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        model.to(torch.bfloat16).save_pretrained(tmp)
        model.to(torch.float32)
        cfg_file = tmp / "config.json"
        config = json.loads(cfg_file.read_text())
        config["dtype"] = "float32"
        cfg_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(card)
        write_json_atomic(tmp / "training_log.json", log)
    return out_dir
