"""Every data-parallel stage on one set of tiny inputs; run once alone and once under a launcher.

tests/test_distributed.py runs `run_checks` in its own process (the reference) and this file under
`accelerate launch --multi_gpu --num_processes 2` (gloo on the CPU); the main process saves what
each stage produced to <out>/results.pt for the test to compare. Under the launcher it also leaves
a fine-tuning checkpoint from a run interrupted mid-way, and records the sentences with which
processes that disagree on their pool or config are refused.
"""

import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_models as tm  # noqa: E402
from interrupts import Interrupt  # noqa: E402

from finescope_nb import distributed  # noqa: E402
from finescope_nb.config import FinetuneConfig, PruneConfig  # noqa: E402
from finescope_nb.curate.workspace import cached_pool_codes  # noqa: E402
from finescope_nb.device import run_device  # noqa: E402
from finescope_nb.distill.finetune import finetune  # noqa: E402
from finescope_nb.distill.split import Example  # noqa: E402
from finescope_nb.distill.teacher import regenerate  # noqa: E402
from finescope_nb.errors import FinescopeError  # noqa: E402
from finescope_nb.evaluate.perplexity import domain_loss, domain_perplexity, tokenize_texts  # noqa: E402
from finescope_nb.prune import compute_importance  # noqa: E402
from finescope_nb.activations import ActivationConfig  # noqa: E402
from finescope_nb.sae import LayerSAE, SAEConfig  # noqa: E402
from finescope_nb.sae.cache import cached_sae  # noqa: E402

TEXTS = tm.texts(30, seed=4)
POOL = pd.DataFrame({"id": [f"d{i}" for i in range(len(TEXTS))], "text": TEXTS})
PRUNE = PruneConfig(calibration_docs=30, batch_size=4, first_layer=0, last_layer=2, criterion="taylor2")
LORA = FinetuneConfig(method="lora", lora_rank=4, steps=2, batch_size=4, eval_every=1, lr=1e-2, warmup_steps=1, max_length=64)
SAE = SAEConfig(layer=1, d_sae=32, k=4, train_tokens=1024, batch_size=128, capture=ActivationConfig(max_length=32, batch_size=8))
RESUMED = LORA.replace(steps=4, eval_every=2)  # interrupted at step 4 under the launcher, after the step-2 checkpoint


def pairs():
    return TEXTS[:8], tm.texts(8, seed=5)


def heldout(tok):
    return tokenize_texts(tok, tm.texts(10, seed=6), 64)


def trained_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run_checks(out: Path, sae_folder: Path, launched: bool) -> dict:
    model, tok = tm.llama(), tm.tokenizer()
    trained = cached_sae(model, tok, SAE, runs_dir=out / "sae-runs", heldout_docs=8, heldout_tokens=200, loss_tokens=100,
                         progress=False)  # capture split over the processes, training on the main one
    sae = LayerSAE.load(sae_folder, model)
    codes = cached_pool_codes(sae, model, tok, POOL, top_l=8, runs_dir=out / "runs", progress=False, shard_docs=12)
    scores = compute_importance(model, tok, TEXTS, PRUNE, progress=False)
    activation = compute_importance(model, tok, TEXTS, PRUNE.replace(criterion="activation"), progress=False)
    prompts, responses = pairs()
    seqs = heldout(tok)
    tuned, history = finetune(model, tok, prompts, responses, LORA, progress=False,
                              evaluate=lambda m: domain_loss(m, tok, seqs, batch_size=2))
    examples = [Example(p, r) for p, r in zip(prompts, responses)]
    regenerated = regenerate(model, tok, examples, max_new_tokens=6, batch_size=1, progress=False)  # two chunks of 4
    ppl = domain_perplexity(model, tok, sequences={"math": seqs, "code": seqs[:5]}, progress=False)
    results = {
        "sae": {k: v.detach().clone() for k, v in trained.sae.state_dict().items()},
        "doc_ids": list(codes.doc_ids),
        "codes": {f"{p}_{kind}": torch.from_numpy(getattr(codes, kind)[p][:].copy()) for p in ("mean", "max")
                  for kind in ("indices", "values")},
        "heads": scores.heads, "channels": scores.channels, "tokens": scores.calibration_tokens,
        "activation_channels": activation.channels,
        "lora": trained_state(tuned), "val_loss": [float(v) for v in history["val_loss"]],
        "regenerated": regenerated, "ppl": ppl.to_dict(orient="list"),
    }
    if launched:
        results["interrupted"] = _interrupted(model, tok, out)
        results["refusals"] = _refusals(sae, model, tok, out)
    else:
        resumed, _ = finetune(model, tok, prompts, responses, RESUMED, progress=False)
        results["uninterrupted"] = trained_state(resumed)
    if distributed.is_main():
        torch.save(results, out / "results.pt")
    return results


def _interrupted(model, tok, out: Path) -> bool:
    def stop(record):
        if record["step"] == 4:
            raise Interrupt
    prompts, responses = pairs()
    try:
        finetune(model, tok, prompts, responses, RESUMED, progress=False, callback=stop, checkpoint=out / "finetune.pt")
    except Interrupt:
        return True
    return False


def _refusals(sae, model, tok, out: Path) -> list[str]:
    """The sentences for processes that hold different pools and different configs (empty if none is refused)."""
    from finescope_nb import pipeline

    said = []
    pool = POOL.copy()
    if distributed.rank() == 1:
        pool.loc[3, "text"] = "a different document"
    try:
        cached_pool_codes(sae, model, tok, pool, top_l=8, runs_dir=out / "other", progress=False, shard_docs=12)
    except FinescopeError as exc:
        said.append(str(exc))
    config = pipeline.default_config("math")
    if distributed.rank() == 1:
        config = config.replace(prune=config.prune.replace(ratio=0.4))
    try:
        pipeline.run(config, out / "run", progress=False)
    except FinescopeError as exc:
        said.append(str(exc))
    try:
        run_device(None, "auto")  # a device_map spreads one model; data-parallel processes each hold a whole one
    except FinescopeError as exc:
        said.append(str(exc))
    said.append(str(run_device("auto")))  # the launcher's device
    return said


if __name__ == "__main__":
    run_checks(Path(sys.argv[1]), Path(sys.argv[2]), launched=True)
