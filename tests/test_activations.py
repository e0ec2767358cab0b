"""Activation capture: early exit gives the full forward's activations, special tokens and padding
are skipped, memory-mapped collection, per-document pooling, and the bad inputs."""

import warnings

import numpy as np
import pytest
import torch

import tiny_models as tm
from finescope_nb.activations import (
    ActivationConfig,
    capture,
    collect_activations,
    default_layer,
    pool_per_document,
    shuffled_batches,
)
from finescope_nb.errors import FinescopeError

TEXTS = tm.texts(10, seed=3)


def one_sentence(excinfo, *names):
    message = str(excinfo.value)
    assert "\n" not in message and message.endswith("."), message
    for name in names:
        assert str(name) in message, (name, message)


@pytest.mark.parametrize("make, bos", [(tm.llama, True), (lambda: tm.gpt2(layers=3), False)], ids=["llama", "gpt2"])
def test_early_exit_equals_full_forward_hidden_states(make, bos):
    model, tok = make(), tm.tokenizer(bos=bos)
    layers = [0, 1]  # below the last layer, whose hidden_states entry has the final norm applied
    batches = list(capture(model, tok, TEXTS, layers, ActivationConfig(batch_size=4), progress=False))
    full = list(capture(model, tok, TEXTS, layers, ActivationConfig(batch_size=4), early_exit=False, progress=False))
    for batch, whole in zip(batches, full):
        tb = batch.tokens
        with torch.no_grad():
            hidden = model(input_ids=tb.input_ids, attention_mask=tb.attention_mask, output_hidden_states=True).hidden_states
        rows = batch.doc_index - tb.doc_index[0]
        for layer in layers:
            expected = hidden[layer + 1][rows, batch.position]
            torch.testing.assert_close(batch.acts[layer], expected, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(whole.acts[layer], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bos", [True, False])
def test_bos_first_position_and_padding_are_skipped(bos):
    """The first position is the attention sink: with a BOS that token is dropped, without one the first word."""
    model, tok = tm.llama(), tm.tokenizer(bos=bos)
    assert (tok("the a")["input_ids"][0] == tok.bos_token_id) is bos
    batches = list(capture(model, tok, TEXTS, 0, ActivationConfig(batch_size=3), progress=False))
    n_tokens = sum(len(b.token_ids) for b in batches)
    assert n_tokens == sum(len(t.split()) - (0 if bos else 1) for t in TEXTS)
    first = batches[0]
    assert int(first.position[first.doc_index == 0].min()) == 1
    assert not (torch.cat([b.token_ids for b in batches]) == tok.pad_token_id).any()
    kept = list(capture(model, tok, TEXTS, 0, ActivationConfig(batch_size=3, drop_first=False), progress=False))
    assert int(kept[0].position[kept[0].doc_index == 0].min()) == (1 if bos else 0)  # the older rule, on request
    assert ActivationConfig().config_hash() != ActivationConfig(drop_first=False).config_hash()


def test_layer_outside_model_names_valid_range():
    model, tok = tm.llama(), tm.tokenizer()
    for bad in (3, -1, "1", True):
        with pytest.raises(FinescopeError) as excinfo:
            capture(model, tok, TEXTS, bad)
        one_sentence(excinfo, "0 to 2")
    assert default_layer(model) == 1


def test_empty_text_list_is_a_clear_error():
    model, tok = tm.llama(), tm.tokenizer()
    for empty in ([], iter([])):
        with pytest.raises(FinescopeError) as excinfo:
            list(capture(model, tok, empty, 0, progress=False))
        one_sentence(excinfo, "empty")


def test_long_texts_are_truncated_with_one_warning():
    model, tok = tm.llama(), tm.tokenizer()
    texts = tm.texts(12, min_words=20, max_words=40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(capture(model, tok, texts, 0, ActivationConfig(max_length=8, batch_size=4), progress=False))
    assert len([w for w in caught if "truncated" in str(w.message)]) == 1
    assert max(int(b.position.max()) for b in batches) == 7


def test_spilled_collection_equals_in_memory(tmp_path):
    model, tok = tm.llama(), tm.tokenizer()
    in_memory = collect_activations(model, tok, TEXTS, 1, 50, progress=False)
    spilled = collect_activations(model, tok, TEXTS, 1, 50, spill_to=tmp_path / "acts.npy", progress=False)
    assert isinstance(spilled, np.memmap) and in_memory.shape == (50, 32)
    np.testing.assert_array_equal(in_memory, spilled)
    np.testing.assert_array_equal(np.load(tmp_path / "acts.npy")[:50], in_memory)


def test_pool_per_document_matches_loops():
    codes = torch.rand(9, 5) * (torch.rand(9, 5) > 0.5)
    doc = torch.tensor([0, 0, 0, 2, 2, 2, 2, 3, 3])
    mean, peak = pool_per_document(codes, doc, 5)
    for d in range(5):
        rows = codes[doc == d]
        torch.testing.assert_close(mean[d], rows.mean(0) if len(rows) else torch.zeros(5))
        torch.testing.assert_close(peak[d], rows.max(0).values if len(rows) else torch.zeros(5))


def test_shuffled_batches_cover_every_row_each_epoch():
    acts = np.arange(40, dtype=np.float32).reshape(20, 2)
    stream = shuffled_batches(acts, 5, seed=1)
    first_epoch = torch.cat([next(stream) for _ in range(4)])
    assert sorted(first_epoch[:, 0].tolist()) == list(range(0, 40, 2))
    with pytest.raises(FinescopeError):
        next(shuffled_batches(acts, 21))


def test_a_suspended_capture_stream_leaves_grad_mode_alone():
    stream = capture(tm.llama(), tm.tokenizer(), TEXTS, 0, ActivationConfig(batch_size=2), progress=False)
    batch = next(stream)
    assert torch.is_grad_enabled() and not batch.acts[0].requires_grad
    stream.close()


def test_truncation_is_said_once_per_session():
    model, tok = tm.llama(), tm.tokenizer()
    texts = tm.texts(8, min_words=20, max_words=40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):  # three calls, as a notebook's seed draws make
            list(capture(model, tok, texts, 0, ActivationConfig(max_length=8, batch_size=4), progress=False))
        list(capture(model, tok, texts, 0, ActivationConfig(max_length=9, batch_size=4), progress=False))
    messages = [str(w.message) for w in caught if "truncated" in str(w.message)]
    assert len(messages) == 2 and "context of 8 tokens" in messages[0] and "context of 9 tokens" in messages[1]
