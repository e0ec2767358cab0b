import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from finescope_nb.basemodel import train_tokenizer
from finescope_nb.config import EvalConfig
from finescope_nb.errors import FinescopeError
from finescope_nb.evaluate import token_nll, unigram_nll

TEXTS = ["the cat sat on the mat", "a dog ran in the park and the cat ran too", "x = 1 + 2"] * 5


@pytest.fixture(scope="module")
def tiny():
    tok = train_tokenizer(TEXTS, 300)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    return model.eval(), tok


def test_batched_padded_nll_equals_per_sequence_loss(tiny):
    model, tok = tiny
    seqs = [tok(t)["input_ids"] for t in TEXTS[:3]]
    total, count = token_nll(model, seqs, batch_size=3, pad_id=tok.pad_token_id)
    expected, n = 0.0, 0
    for s in seqs:
        ids = torch.tensor([s])
        loss = model(input_ids=ids, labels=ids).loss.item()
        expected += loss * (len(s) - 1)
        n += len(s) - 1
    assert count == n
    assert total == pytest.approx(expected, rel=1e-5)


def test_unigram_nll_by_hand():
    counts = {1: 3, 2: 1}
    nll, n = unigram_nll(counts, vocab_size=4, sequences=[[0, 1, 2]])
    total = 4 + 4
    assert n == 2
    assert nll == pytest.approx(-math.log(4 / total) - math.log(2 / total))


def test_heldout_split_and_domain_checks(tiny):
    from finescope_nb.evaluate import heldout_sequences

    _, tok = tiny
    with pytest.raises(FinescopeError, match="held-out splits only"):
        heldout_sequences(tok, EvalConfig(split="pool"))
    with pytest.raises(FinescopeError, match="Unknown domain 'poetry'; known domains are stem"):
        heldout_sequences(tok, EvalConfig(domains=("poetry",)))
