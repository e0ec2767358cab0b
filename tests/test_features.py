"""Per-feature statistics: each one checked against a direct computation on the same tokens."""

import numpy as np
import pytest
import torch

import tiny_models as tm
from finescope_nb.activations import capture
from finescope_nb.errors import FinescopeError
from finescope_nb.features import FeatureStats, compute_feature_stats, encode_text, logit_effects, seed_enrichment
from finescope_nb.sae import SAEConfig, train_sae

TEXTS = tm.texts(60, seed=5)
DOMAINS = tm.domains(len(TEXTS))


@pytest.fixture(scope="module")
def setup():
    model, tok = tm.llama(), tm.tokenizer()
    sae = train_sae(model, tok, tm.texts(150, seed=1),
                    SAEConfig(layer=1, d_sae=48, k=4, train_tokens=2048, batch_size=256), progress=False)
    stats = compute_feature_stats(sae, model, tok, TEXTS, domains=DOMAINS, doc_ids=[f"d{i}" for i in range(60)],
                                  n_top=4, window=6, progress=False)
    return model, tok, sae, stats


def token_codes(sae, model, tok, texts):
    """[(doc, position, token id, codes)] for every text token, straight from capture + encode."""
    out = []
    for batch in capture(model, tok, texts, 1, progress=False):
        codes = sae.encode(batch.acts[1])
        out += list(zip(batch.doc_index.tolist(), batch.position.tolist(), batch.token_ids.tolist(), codes))
    return out


def test_counts_and_activations_match_direct_encoding(setup):
    model, tok, sae, stats = setup
    rows = token_codes(sae, model, tok, TEXTS)
    codes = torch.stack([r[3] for r in rows])
    assert stats.n_tokens == len(rows) and stats.n_docs == len(TEXTS)
    np.testing.assert_allclose(stats.density, (codes > 0).float().mean(0).numpy(), atol=1e-6)
    np.testing.assert_allclose(stats.max_activation, codes.max(0).values.numpy(), atol=1e-6)
    fired = (codes > 0).sum(0).clamp(min=1)
    np.testing.assert_allclose(stats.mean_activation, (codes.sum(0) / fired).numpy(), rtol=1e-5)
    assert stats.hist_counts.sum(1).tolist() == (codes > 0).sum(0).tolist()
    docs = torch.tensor([r[0] for r in rows])
    per_doc = torch.zeros(len(TEXTS), sae.d_sae).scatter_reduce_(0, docs[:, None].expand_as(codes), codes, "amax")
    np.testing.assert_allclose(stats.doc_density, (per_doc > 0).float().mean(0).numpy(), atol=1e-6)


def test_top_examples_are_windows_around_the_peaks(setup):
    model, tok, sae, stats = setup
    f = int(np.argmax(stats.density))
    examples = stats.examples(f)
    assert examples[0]["peak"] == pytest.approx(float(stats.max_activation[f]))
    assert [e["peak"] for e in examples] == sorted((e["peak"] for e in examples), reverse=True)
    assert len({e["doc"] for e in examples}) == len(examples)
    for e in examples:
        assert max(e["acts"]) == pytest.approx(e["peak"])
        words = TEXTS[e["doc"]].split()
        assert " ".join(e["tokens"]) in " ".join(words)
        assert e["doc_id"] == f"d{e['doc']}" and e["domain"] == DOMAINS[e["doc"]]
    dead = np.flatnonzero(stats.density == 0)
    if len(dead):
        assert stats.examples(int(dead[0])) == []


def test_logit_effects_go_through_final_norm_and_unembedding(setup):
    model, _, sae, stats = setup
    direction = sae.sae.W_dec[5].detach() * model.model.norm.weight.detach()
    logits = model.lm_head.weight.detach() @ direction
    assert stats.logit_top_ids[5].tolist() == logits.topk(10).indices.tolist()
    assert stats.logit_bottom_ids[5].tolist() == (-logits).topk(10).indices.tolist()
    top_ids, top_vals, _, _ = logit_effects(sae, model, n=3)
    np.testing.assert_allclose(top_vals[5], logits.topk(3).values.numpy(), rtol=1e-5)


def test_domain_split_and_seed_enrichment(setup):
    model, tok, sae, stats = setup
    live = stats.density > 0
    np.testing.assert_allclose(stats.domain_mass[live].sum(1), 1.0, atol=1e-5)
    assert stats.domains == sorted(set(DOMAINS))
    math_docs = [t for t, d in zip(TEXTS, DOMAINS) if d == "math"]
    seeds = compute_feature_stats(sae, model, tok, math_docs[:5], progress=False)
    enrichment = seed_enrichment(stats, seeds)
    assert enrichment.shape == (sae.d_sae,)
    best = int(np.argmax(enrichment))
    assert seeds.doc_density[best] > stats.doc_density[best]
    assert np.all(enrichment[seeds.doc_density == 0] <= 0)


def test_save_load_and_bad_inputs(setup, tmp_path):
    model, tok, sae, stats = setup
    again = FeatureStats.load(stats.save(tmp_path / "stats"))
    np.testing.assert_array_equal(again.window_ids, stats.window_ids)
    assert again.table().equals(stats.table())
    with pytest.raises(FinescopeError, match="from 0 to 47"):
        stats.examples(48)
    with pytest.raises(FinescopeError, match="one per text"):
        compute_feature_stats(sae, model, tok, TEXTS, domains=DOMAINS[:-1], progress=False)
    with pytest.raises(FinescopeError, match="no feature statistics"):
        FeatureStats.load(tmp_path)


def test_encode_text_matches_token_by_token_codes(setup):
    model, tok, sae, _ = setup
    result = encode_text(sae, model, tok, TEXTS[0])
    assert result.tokens == TEXTS[0].split()
    expected = torch.stack([r[3] for r in token_codes(sae, model, tok, [TEXTS[0]])])
    np.testing.assert_allclose(result.codes, expected.numpy(), atol=1e-6)
    assert all(len(feats) <= 3 and all(v > 0 for _, v in feats) for feats in result.top_features(3))
    with pytest.raises(FinescopeError, match="empty"):
        encode_text(sae, model, tok, "   ")


def test_contexts_merge_byte_pieces_and_tables_show_labels():
    """A feature peaking inside "é" (two byte pieces): its context reads "café", its logit table '<0xC3>'."""
    z = np.zeros
    pieces = [b"caf", b"\xc3", b"\xa9", b" x"]
    labels = ["caf", "<0xC3>", "<0xA9>", " x"]
    stats = FeatureStats(
        n_tokens=4, n_docs=1, density=np.array([0.5]), doc_density=np.array([1.0]), mean_activation=np.array([1.0]),
        max_activation=np.array([2.0]), hist_counts=z((1, 56), dtype=int), top_values=np.array([[2.0]]),
        top_docs=np.array([[0]]), window_ids=np.array([[[0, 1, 2, 3]]]), window_acts=np.array([[[0.0, 1.0, 2.0, 0.0]]]),
        logit_top_ids=np.array([[1]]), logit_top_values=np.array([[0.5]]), logit_bottom_ids=np.array([[3]]),
        logit_bottom_values=np.array([[-0.5]]), tokens=labels, token_hex=[p.hex() for p in pieces])
    assert stats.examples(0)[0]["tokens"] == ["caf", "", "é", " x"]
    assert stats.logits(0).promoted.tolist() == ["<0xC3>"]
    assert stats.table().peak_token.tolist() == ["<0xA9>"]
    legacy = FeatureStats(**{**stats.__dict__, "token_hex": []})  # saved before token bytes were kept
    assert legacy.examples(0)[0]["tokens"] == labels
