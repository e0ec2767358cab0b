"""Per-domain perplexity on held-out whole documents: the one scoring function of the kit.

Every later stage (pruning, recovery, the ablation table) compares models with these numbers,
so they are computed one way only: each held-out chunk is tokenised with the model's own
tokenizer, truncated to `max_length` tokens, and every token after the first is scored. The
unigram baseline scores exactly the same tokens, so "beats unigram" means the model learned
context, not just token frequencies.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from finescope_nb import distributed
from finescope_nb.config import EvalConfig
from finescope_nb.corpus import DOMAINS, check_domain, load_split
from finescope_nb.device import model_device
from finescope_nb.errors import FinescopeError
from finescope_nb.evaluate.registry import EvalOptions, register
from finescope_nb.logprobs import next_token_logprobs


def tokenize_texts(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text (the tokenizer's own special tokens), truncated to `max_length`."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)
    return [ids for ids in enc["input_ids"] if len(ids) >= 2]


@torch.no_grad()
def token_nll(model, sequences: Sequence[Sequence[int]], batch_size: int = 8,
              pad_id: int = 0, desc: str | None = None) -> tuple[float, int]:
    """Summed next-token negative log-likelihood (nats) and the number of scored tokens.

    Under a launcher each process scores its contiguous share of the (length-sorted) batches and the
    sums are added, so every process gets the one-process numbers."""
    model.eval()
    device = model_device(model)
    order = np.argsort([-len(s) for s in sequences], kind="stable")  # similar lengths together: less padding
    total, count = 0.0, 0
    mine = distributed.shard(len(order), batch_size)
    for start in tqdm(range(mine.start, mine.stop, batch_size), desc=desc, disable=desc is None, leave=False):
        batch = [sequences[i] for i in order[start:start + batch_size]]
        width = max(len(s) for s in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        ids, mask = ids.to(device), mask.to(device)
        logprobs = next_token_logprobs(model, ids, mask)  # logits a slice of positions at a time
        total -= float(logprobs.sum())
        count += int(mask[:, 1:].sum())
    total, count = distributed.all_reduce_numbers(total, count)
    return total, int(count)


def unigram_counts(tokenizer, texts: Sequence[str]) -> dict[int, int]:
    """How often each token id occurs in `texts` (no special tokens): the unigram baseline's statistics for a
    model that, unlike the embedded one, did not record them from its own training stream."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    counts = np.bincount(np.concatenate([np.asarray(x, dtype=np.int64) for x in ids if x]), minlength=len(tokenizer))
    return {i: int(c) for i, c in enumerate(counts) if c}


def unigram_nll(counts: Mapping[int, int], vocab_size: int, sequences: Sequence[Sequence[int]]) -> tuple[float, int]:
    """Summed NLL of the same scored tokens under add-one-smoothed unigram frequencies."""
    total = sum(counts.values()) + vocab_size
    nll, n = 0.0, 0
    for seq in sequences:
        for tok in seq[1:]:
            nll -= math.log((counts.get(tok, 0) + 1) / total)
            n += 1
    return nll, n


HELDOUT_PICKS = ("first", "stratified")


def pick_documents(rows: Sequence[Mapping], n: int | None, pick: str = "first", seed: int = 0) -> list[Mapping]:
    """`n` of `rows` (all when None), in their stored order.

    "first" takes the first `n`. "stratified" takes from each `source` its share of `n` (largest remainder),
    drawn by `seed`: the embedded splits are stored in blocks by source, so the first documents of a domain
    can all come from one source (the first 30 math validation documents are all competition problems)."""
    if pick not in HELDOUT_PICKS:
        raise FinescopeError(f"Unknown held-out pick {pick!r}; choose one of {', '.join(HELDOUT_PICKS)}.")
    if n is None or n >= len(rows):
        return list(rows)
    if pick == "first":
        return list(rows[:n])
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(str(row.get("source", "")), []).append(i)
    shares = {s: n * len(idx) / len(rows) for s, idx in groups.items()}
    quota = {s: int(v) for s, v in shares.items()}
    for s in sorted(shares, key=lambda s: (quota[s] - shares[s], s))[: n - sum(quota.values())]:
        quota[s] += 1  # largest remainders first; ties by name, so the pick does not depend on dict order
    rng = np.random.default_rng(seed)
    chosen = [i for s in sorted(groups) for i in rng.permutation(groups[s])[: quota[s]].tolist()]
    return [rows[i] for i in sorted(chosen)]


def heldout_documents(cfg: EvalConfig, pick: str = "first", seed: int = 0) -> dict[str, list[Mapping]]:
    """The held-out records per domain (text, source, ...), `cfg.max_docs_per_domain` of each chosen by `pick`."""
    if cfg.split not in ("validation", "test"):
        raise FinescopeError(
            f"Perplexity is measured on held-out splits only, got split={cfg.split!r}; use 'validation' or 'test'."
        )
    if not cfg.domains:
        raise FinescopeError("No domains to evaluate; name at least one of " + ", ".join(DOMAINS) + ".")
    data = load_split(cfg.split)
    out = {}
    for domain in cfg.domains:
        check_domain(domain)
        out[domain] = pick_documents([r for r in data if r["domain"] == domain], cfg.max_docs_per_domain, pick, seed)
    return out


def heldout_sequences(tokenizer, cfg: EvalConfig, pick: str = "first", seed: int = 0) -> dict[str, list[list[int]]]:
    """Tokenised held-out chunks per domain, `cfg.max_docs_per_domain` of each (see `pick_documents`)."""
    docs = heldout_documents(cfg, pick, seed)
    return {domain: tokenize_texts(tokenizer, [r["text"] for r in rows], cfg.max_length) for domain, rows in docs.items()}


def sequences_by_source(tokenizer, docs: Sequence[Mapping], max_length: int) -> dict[str, list[list[int]]]:
    """Tokenised `docs` grouped by their `source`: one loss per source shows whether a change in a domain's loss
    comes from all of it or from one kind of document."""
    groups: dict[str, list[str]] = {}
    for r in docs:
        groups.setdefault(str(r.get("source", "")), []).append(r["text"])
    return {s: tokenize_texts(tokenizer, texts, max_length) for s, texts in sorted(groups.items())}


def domain_perplexity(model, tokenizer, cfg: EvalConfig = EvalConfig(),
                      sequences: dict[str, list[list[int]]] | None = None,
                      progress: bool = True) -> pd.DataFrame:
    """Perplexity per domain on the held-out split: columns domain, tokens, loss (nats/token), ppl."""
    sequences = sequences if sequences is not None else heldout_sequences(tokenizer, cfg)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = []
    for domain, seqs in sequences.items():
        nll, n = token_nll(model, seqs, cfg.batch_size, pad, desc=f"ppl {domain}" if progress else None)
        loss = nll / max(n, 1)
        rows.append({"domain": domain, "tokens": n, "loss": loss, "ppl": math.exp(loss)})
    return pd.DataFrame(rows)


def domain_loss(model, tokenizer, sequences: Sequence[Sequence[int]], batch_size: int = 8) -> float:
    """Mean next-token loss (nats/token) of `model` on tokenised held-out sequences of one domain."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    nll, n = token_nll(model, sequences, batch_size, pad)
    return nll / max(n, 1)


def grouped_loss(model, tokenizer, groups: Mapping[str, Sequence[Sequence[int]]],
                 batch_size: int = 8) -> tuple[float, dict[str, float]]:
    """Mean next-token loss over all of `groups`' sequences and per group (e.g. per source), from one pass: the
    whole is the groups' summed NLL over their summed tokens, as `domain_loss` of all the sequences would give."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    sums = {name: token_nll(model, seqs, batch_size, pad) for name, seqs in groups.items()}
    total = sum(nll for nll, _ in sums.values()) / max(sum(n for _, n in sums.values()), 1)
    return total, {name: nll / max(n, 1) for name, (nll, n) in sums.items()}


def retained(loss: float, base_loss: float) -> float:
    """How much of the unpruned model's score a model keeps, the kit's one definition for loss metrics:
    exp(-loss) / exp(-base_loss), i.e. the ratio of per-token probabilities (geometric mean); 1.0 is
    as good as the unpruned model. (For accuracy metrics above chance the same role is played by
    (accuracy - chance) / (base accuracy - chance).)"""
    return math.exp(base_loss - loss)


def unigram_perplexity(counts: Mapping[int, int], vocab_size: int,
                       sequences: dict[str, list[list[int]]]) -> pd.DataFrame:
    rows = []
    for domain, seqs in sequences.items():
        nll, n = unigram_nll(counts, vocab_size, seqs)
        loss = nll / max(n, 1)
        rows.append({"domain": domain, "tokens": n, "loss": loss, "ppl": math.exp(loss)})
    return pd.DataFrame(rows)


@register("perplexity", DOMAINS, chance=float("nan"), higher_is_better=False,
          description="held-out whole documents per domain, perplexity of every token after the first")
def _perplexity_metric(model, tokenizer, options: EvalOptions) -> pd.DataFrame:
    cfg = EvalConfig(split=options.split, domains=options.domains, max_docs_per_domain=options.limit, batch_size=options.batch_size)
    df = domain_perplexity(model, tokenizer, cfg, progress=False)
    return pd.DataFrame({"domain": df["domain"], "group": df["domain"], "n": df["tokens"], "score": df["ppl"], "loss": df["loss"]})
