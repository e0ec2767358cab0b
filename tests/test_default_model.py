"""The committed base model: loads offline as float32, generates, and its recorded numbers hold."""

import json

import pytest
import torch

from finescope_nb import load_model, load_tokenizer
from finescope_nb.basemodel import forward_macs
from finescope_nb.generate import continue_texts
from finescope_nb.paths import DEFAULT_MODEL_DIR, REPO_ROOT

RESULTS = REPO_ROOT / "benchmarks" / "results" / "base_model.json"


@pytest.fixture(scope="module")
def base():
    return load_model(), load_tokenizer()


def test_loads_as_float32_llama_with_gqa(base):
    model, tok = base
    assert all(p.dtype == torch.float32 for p in model.parameters())
    cfg = model.config
    assert cfg.model_type == "llama"
    assert cfg.num_key_value_heads < cfg.num_attention_heads
    assert 8000 <= len(tok) <= 16384
    assert sum(p.numel() for p in model.parameters()) <= 15_000_000
    assert forward_macs(cfg, 256)["block_share"] >= 0.75


def test_files_are_small_and_carded():
    size = sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.iterdir())
    assert size <= 30 * 1024 * 1024
    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    assert "unigram" in card and "hardware" in card and "tokens" in card


def test_generates_reproducibly(base):
    model, tok = base
    a = continue_texts(model, tok, ["The president said", "def main("], max_new_tokens=8)
    b = continue_texts(model, tok, ["The president said", "def main("], max_new_tokens=8)
    assert a == b and all(len(t.strip()) > 0 for t in a)


def test_recorded_results_beat_unigram_everywhere():
    res = json.loads(RESULTS.read_text())
    assert {"params", "block_flops_share", "tokens_seen", "train_seconds", "hardware", "ppl", "unigram_ppl"} <= set(res)
    assert set(res["ppl"]) == {"stem", "humanities", "social_sciences", "math", "code"}
    for domain, ppl in res["ppl"].items():
        assert ppl < res["unigram_ppl"][domain], domain
    assert res["block_flops_share"] >= 0.75
