"""`finescope train-base`: train, measure and write the embedded base model with its card.

Kept apart from basemodel.py (the training mechanics) because this is the reporting side: the
per-domain held-out perplexity against a unigram baseline measured in the same run, the model
card, and benchmarks/results/base_model.json.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import torch

from finescope_nb import basemodel
from finescope_nb.artifacts import write_json_atomic
from finescope_nb.config import BaseModelConfig, EvalConfig
from finescope_nb.corpus import load_pool
from finescope_nb.evaluate import domain_perplexity, heldout_sequences, unigram_perplexity
from finescope_nb.lm import load_model, load_tokenizer
from finescope_nb.paths import DEFAULT_MODEL_DIR, REPO_ROOT

RESULTS = REPO_ROOT / "benchmarks" / "results" / "base_model.json"


def measure(model_dir: Path, counts, eval_cfg: EvalConfig):
    """Perplexity of the saved model (as reloaded, float32) and of the unigram baseline on the same tokens."""
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    seqs = heldout_sequences(tokenizer, eval_cfg)
    ppl = domain_perplexity(model, tokenizer, eval_cfg, sequences=seqs)
    uni = unigram_perplexity(counts, len(tokenizer), seqs)
    return ppl.merge(uni, on=["domain", "tokens"], suffixes=("", "_unigram"))


def model_card(cfg: BaseModelConfig, config, params: int, share: float, state, hw: str, table) -> str:
    rows = "\n".join(
        f"| {r.domain} | {r.tokens} | {r.ppl:.2f} | {r.ppl_unigram:.2f} |" for r in table.itertuples()
    )
    tokens = state.step * cfg.batch_size * cfg.seq_len
    stopped = (f" (the {cfg.max_train_minutes:g}-minute budget stopped it at step {state.step} of {cfg.max_steps})"
               if state.step < cfg.max_steps else "")
    return f"""# finescope-tiny-llama

The embedded base model of finescope-nb, trained from scratch by `finescope train-base`
(finescope_nb/basemodel.py) on the pool in data/corpus/pool.jsonl.gz only. It exists so that the kit
runs with no model hub; it is tiny and under-trained, a teaching and testing model.

| | |
|---|---|
| architecture | Llama (RMSNorm, RoPE, SwiGLU), grouped-query attention |
| layers / hidden / MLP | {config.num_hidden_layers} / {config.hidden_size} / {config.intermediate_size} |
| heads / KV heads / head dim | {config.num_attention_heads} / {config.num_key_value_heads} / {config.hidden_size // config.num_attention_heads} |
| vocabulary | {config.vocab_size} byte-level BPE (tied embedding) |
| parameters | {params:,} |
| decoder blocks' share of forward multiply-adds (context {cfg.seq_len}) | {share:.3f} |
| training | {state.step} steps x {cfg.batch_size} x {cfg.seq_len} tokens = {tokens:,} tokens, AdamW lr {cfg.lr} cosine to {cfg.min_lr} |
| training time | {state.elapsed / 60:.1f} min{stopped} |
| hardware | {hw} |
| seed | {cfg.seed} |
| weights on disk | bfloat16 (loaded as float32) |

## Held-out perplexity (test split, whole held-out documents, first {EvalConfig().max_length} tokens of each chunk)

The unigram baseline uses add-one-smoothed token frequencies of the training pool and scores
exactly the same tokens.

| domain | scored tokens | model | unigram |
|---|---|---|---|
{rows}

Training config: `{cfg.to_json(indent=None)}`
"""


def main(out: str | None = None, checkpoint_dir: str | None = None, max_steps: int | None = None,
         minutes: float | None = None, seed: int | None = None, write_results: bool | None = None) -> dict:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = BaseModelConfig()
    if max_steps is not None:
        cfg = cfg.replace(max_steps=max_steps)
    if minutes is not None:
        cfg = cfg.replace(max_train_minutes=minutes)
    if seed is not None:
        cfg = cfg.replace(seed=seed)
    out_dir = Path(out) if out else DEFAULT_MODEL_DIR
    ckpt = Path(checkpoint_dir) if checkpoint_dir else out_dir.with_name(out_dir.name + ".ckpt")
    pool = load_pool()
    texts = pool["text"]
    model, tokenizer, state = basemodel.train(cfg, texts, ckpt)
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    share = basemodel.forward_macs(config, cfg.seq_len)["block_share"]
    counts = dict(enumerate(np.bincount(np.load(ckpt / "stream.npy"), minlength=len(tokenizer)).tolist()))
    hw = basemodel.hardware()
    log = {"history": state.history, "config": cfg.to_dict()}
    basemodel.save_base_model(model, tokenizer, out_dir, card="(measuring)\n", log=log)
    table = measure(out_dir, counts, EvalConfig(split="test"))
    card = model_card(cfg, config, params, share, state, hw, table)
    basemodel.save_base_model(model, tokenizer, out_dir, card=card, log=log)
    write_json_atomic(out_dir / "unigram_counts.json", {str(k): v for k, v in counts.items() if v})
    result = {
        "params": params, "block_flops_share": round(share, 4),
        "tokens_seen": state.step * cfg.batch_size * cfg.seq_len,
        "train_seconds": round(state.elapsed, 1), "hardware": hw,
        "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
        "ppl": {r.domain: round(r.ppl, 3) for r in table.itertuples()},
        "unigram_ppl": {r.domain: round(r.ppl_unigram, 3) for r in table.itertuples()},
    }
    if write_results if write_results is not None else out is None:
        write_json_atomic(RESULTS, result)
    print(table.to_string(index=False))
    print(f"Model written to {out_dir}")
    return result
