"""Train-or-load for notebooks and later stages: SAEs cached in the runs folder by model and config.

An SAE's folder is runs/sae/<model identity>-<config hash>, so the same model and config always
find the same SAE, and a notebook reuses what an earlier notebook trained (`latest_sae`). While
it trains, `<folder>.partial/` keeps the captured activations and then the trained SAE, so an
interrupted run resumes after the last of those it finished (capture, training, evaluation).
By default training texts come from the embedded pool in a fixed shuffled order and held-out
metrics from the validation split, which never overlaps the pool. A user's corpus brings its own
`SAETexts` (`corpus_sae_texts`): the SAE must learn the corpus it will search, or features of a
domain the embedded pool lacks may not exist. Those SAEs live in a folder suffixed by the
corpus's content hash, so an edited corpus trains a new SAE.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from numpy.lib.format import open_memmap

from finescope_nb import distributed, paths
from finescope_nb.activations import ActivationConfig
from finescope_nb.corpus import load_pool, load_split
from finescope_nb.errors import FinescopeError
from finescope_nb.hashing import text_digest
from finescope_nb.lm import model_identity
from finescope_nb.models.registry import named_defaults
from finescope_nb.sae.layer_sae import META_FILE, LayerSAE
from finescope_nb.sae.metrics import evaluate_sae
from finescope_nb.sae.registry import SAEConfig
from finescope_nb.artifacts import write_json_atomic
from finescope_nb.sae.train import capture_for_sae, train_sae


def default_sae_config(fast: bool = False, model=None, **overrides) -> SAEConfig:
    """The kit's default SAE, or a small one that trains in seconds for FINESCOPE_FAST runs.

    For a named model (`model`, e.g. "smollm2-135m") the registry's measured defaults apply; in fast
    mode only its layer does, so the small SAE still trains in seconds."""
    named = named_defaults(model, "sae")
    if fast:
        base = SAEConfig(d_sae=512, k=16, train_tokens=40_960, batch_size=512, dead_feature_window=10, lr=1e-3,
                         capture=ActivationConfig(max_length=64, batch_size=16), layer=named.get("layer"))
    else:
        if "capture" in named:
            named["capture"] = ActivationConfig(**named["capture"])
        base = SAEConfig(**named)
    return base.replace(**overrides)


def sae_dir(model, config: SAEConfig, runs_dir: str | Path | None = None) -> Path:
    runs = Path(runs_dir) if runs_dir is not None else paths.DEFAULT_RUNS_DIR
    return runs / "sae" / f"{model_identity(model)}-{config.config_hash()}"


def shuffled_texts(split: str = "pool", seed: int = 0, limit: int | None = None) -> list[str]:
    """Texts of a corpus split in a fixed random order (documents arrive sorted by domain otherwise)."""
    ds = load_split(split) if split != "pool" else load_pool()
    ds = ds.shuffle(seed=seed)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return list(ds["text"])


def _docs_needed(config: SAEConfig) -> int:
    """Documents to draw for `config.train_tokens` (assuming they fill at least half a capture window)."""
    return config.train_tokens // max(config.capture.max_length // 2, 1) + 1


@dataclass(frozen=True)
class SAETexts:
    """Which texts train an SAE and which measure its quality card, and how the report names them."""

    train: list[str]
    heldout: list[str]
    source: str  # one line for the report, e.g. "your corpus (3,210 documents, sha 1a2b...), 20% embedded pool"
    key: str  # suffix of the SAE's folder name: the corpus content hash and the mix


def corpus_sae_texts(corpus: Sequence[str], config: SAEConfig, mix: float = 0.0, heldout_share: float = 0.1,
                     max_heldout: int = 2000) -> SAETexts:
    """A shuffled sample of the user's corpus for the SAE's token budget, a held-out slice of it for its card.

    `mix` is the share of training documents drawn from the embedded pool instead. A corpus with
    fewer tokens than the budget is not read twice: training draws the budget's worth of batches
    from its activations over several epochs, so the SAE takes as many training steps as the default one."""
    if not 0.0 <= mix < 1.0:
        raise FinescopeError(f"The SAE's embedded-pool share must be in [0, 1), got {mix!r}; "
                             "0 trains on your corpus alone, 0.2 mixes in a fifth of embedded documents.")
    texts = [t for t in corpus if isinstance(t, str) and t.strip()]
    if len(texts) < 2:
        raise FinescopeError(f"The SAE needs at least 2 corpus documents (one to train on, one to measure it), got {len(texts)}; "
                             "use a larger corpus.")
    digest = text_digest(texts)
    order = np.random.default_rng(config.seed).permutation(len(texts))
    n_held = min(max_heldout, max(1, round(heldout_share * len(texts))))
    heldout, own = [texts[i] for i in order[:n_held]], [texts[i] for i in order[n_held:]]
    own = own[: round((1 - mix) * _docs_needed(config))]
    n_mix = round(mix / (1 - mix) * len(own))
    train = own + shuffled_texts("pool", config.seed, n_mix) if n_mix else own
    if n_mix:
        train = [train[i] for i in np.random.default_rng(config.seed + 1).permutation(len(train))]
    source = (f"your corpus ({len(own):,} documents, content sha256 {digest}; {len(heldout):,} more held out for the card)"
              + (f", with {mix:.0%} of the training documents from the embedded pool" if n_mix else ""))
    return SAETexts(train, heldout, source, f"c{digest}" + (f"-mix{mix:g}" if n_mix else ""))


def embedded_sae_source() -> str:
    """How the report names the default SAE's training texts."""
    return "the embedded pool (shuffled); card measured on the embedded validation split"


def cached_sae(model, tokenizer, config: SAEConfig, runs_dir: str | Path | None = None, heldout_docs: int = 2000,
               heldout_tokens: int = 200_000, loss_tokens: int = 50_000, progress: bool = True,
               texts: SAETexts | None = None) -> LayerSAE:
    """Load the SAE of this model and config from the runs folder, or train, evaluate and save it.

    `texts`: a user corpus's training and held-out texts (`corpus_sae_texts`); None is the embedded pool."""
    folder = sae_dir(model, config, runs_dir)
    if texts is not None:
        folder = folder.with_name(f"{folder.name}-{texts.key}")
    request = {"heldout_docs": heldout_docs, "heldout_tokens": heldout_tokens, "loss_tokens": loss_tokens}
    heldout = texts.heldout[:heldout_docs] if texts is not None else shuffled_texts("validation", 0, heldout_docs)
    if distributed.broadcast((folder / META_FILE).is_file()):
        return _metrics_as_requested(LayerSAE.load(folder, model), folder, model, tokenizer, heldout, request, progress)
    partial = folder.with_name(folder.name + ".partial")
    train_texts = texts.train if texts is not None else shuffled_texts("pool", config.seed, _docs_needed(config))
    if distributed.launched() and not distributed.broadcast((partial / "trained" / META_FILE).is_file()):
        _capture_in_shares(model, tokenizer, train_texts, config, partial, progress)
    sae = None
    with distributed.main_only("SAE training (sae-lens, one process)") as main:
        if main:
            sae = _train_and_save(model, tokenizer, config, folder, partial, train_texts, heldout, request, progress)
    return sae if sae is not None else LayerSAE.load(folder, model)


def _metrics_as_requested(sae: LayerSAE, folder: Path, model, tokenizer, heldout: list[str], request: dict,
                          progress: bool) -> LayerSAE:
    """The cached SAE with its held-out metrics measured as `request` asks (documents and tokens).

    The SAE's own metrics were measured as its first caller asked; a caller asking for another
    measurement (notebook 02's 200,000 tokens against the pipeline's 50,000) gets it computed once
    and kept beside the SAE in metrics-<hash>.json, never someone else's numbers under its request."""
    if sae.metrics.get("evaluated_on") == request:
        return sae
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:12]
    kept = folder / f"metrics-{digest}.json"
    if not distributed.broadcast(kept.is_file()):
        with distributed.main_only("SAE evaluation (one process)") as main:
            if main:
                write_json_atomic(kept, _evaluate(sae, model, tokenizer, heldout, request, progress))
    sae.metrics.update(json.loads(kept.read_text()))
    return sae


def _evaluate(sae: LayerSAE, model, tokenizer, heldout: list[str], request: dict, progress: bool) -> dict:
    return evaluate_sae(sae, model, tokenizer, heldout, n_tokens=request["heldout_tokens"],
                        loss_tokens=request["loss_tokens"], progress=progress) | {"evaluated_on": request}


def _train_and_save(model, tokenizer, config: SAEConfig, folder: Path, partial: Path, train_texts: list[str],
                    heldout: list[str], request: dict, progress: bool) -> LayerSAE:
    if (partial / "trained" / META_FILE).is_file():
        sae = LayerSAE.load(partial / "trained", model)
    else:
        sae = train_sae(model, tokenizer, train_texts, config, progress=progress,
                        acts=_captured(model, tokenizer, train_texts, config, partial, progress))
        sae.save(partial / "trained")
    sae.metrics.update(_evaluate(sae, model, tokenizer, heldout, request, progress))
    sae.save(folder)
    shutil.rmtree(partial, ignore_errors=True)
    return sae


def _captured(model, tokenizer, texts, config: SAEConfig, partial: Path, progress: bool) -> np.ndarray:
    """The training activations: from `partial` if an earlier run finished capturing them, else captured there."""
    done = partial / "capture.json"
    if done.is_file():
        saved = json.loads(done.read_text())
        return np.load(partial / saved["file"], mmap_mode="r")[: saved["tokens"]]
    acts = capture_for_sae(model, tokenizer, texts, config, partial, progress)
    write_json_atomic(done, {"file": Path(acts.filename).name, "tokens": len(acts)})
    return acts


def _capture_in_shares(model, tokenizer, texts, config: SAEConfig, partial: Path, progress: bool) -> None:
    """Under a launcher: every process captures its contiguous share of whole batches of `texts`, and the
    main process joins the shares in text order, cut at `train_tokens` (the tokens one process would have
    captured), into the file `_captured` then finds. The shares pass through `partial` on disk."""
    if distributed.broadcast((partial / "capture.json").is_file()):
        return
    mine = distributed.shard(len(texts), config.capture.batch_size)
    share = partial / f"share-{distributed.rank()}"
    acts = capture_for_sae(model, tokenizer, texts[mine.start:mine.stop], config, share, progress) if len(mine) else None
    shares = distributed.gather_in_order([(acts.filename, len(acts)) if acts is not None else None])
    with distributed.main_only(None) as main:
        if main:
            shares = [(np.load(name, mmap_mode="r"), n) for name, n in filter(None, shares)]
            total = min(sum(n for _, n in shares), config.train_tokens)
            name = Path(shares[0][0].filename).name
            out = open_memmap(partial / name, mode="w+", dtype=np.float32, shape=(total, shares[0][0].shape[1]))
            filled = 0
            for array, n in shares:
                take = min(n, total - filled)
                out[filled:filled + take] = array[:take]
                filled += take
            out.flush()
            del out, shares
            write_json_atomic(partial / "capture.json", {"file": name, "tokens": total})
            for rank in range(distributed.world_size()):
                shutil.rmtree(partial / f"share-{rank}", ignore_errors=True)


def latest_sae(model, runs_dir: str | Path | None = None) -> LayerSAE | None:
    """The most recently saved SAE of this model trained on the embedded pool over all of the layer's coordinates,
    or None. An SAE on selected coordinates (the paper's v3, which the curation benchmark trains beside the
    default) is a comparison, not the dictionary whose features the notebooks explore."""
    runs = Path(runs_dir) if runs_dir is not None else paths.DEFAULT_RUNS_DIR
    prefix = model_identity(model)
    # only the default-text SAEs (<identity>-<12-char hash>), not those trained on a user's corpus
    found = sorted((p for p in (runs / "sae").glob(f"{prefix}-*") if (p / META_FILE).is_file() and len(p.name) == len(prefix) + 13),
                   key=lambda p: (p / META_FILE).stat().st_mtime)
    for folder in reversed(found):
        try:
            if json.loads((folder / META_FILE).read_text())["config"].get("selection") is not None:
                continue
            return LayerSAE.load(folder, model)
        except (FinescopeError, ValueError, KeyError):
            continue
    return None
