"""Curation: every selector on a small labelled pool, the sparse scoring kernel, measuring, export, bad inputs."""

import json
import random

import datasets
import numpy as np
import pytest

import tiny_models as tm
from interrupts import Calls, Interrupt
from finescope_nb.curate import (DenseSelector, HashedNgramSelector, RandomSelector, SAESelector, SparseCodes, auroc,
                                 default_sae_selector, dense_embeddings, evaluate_selectors, export_selection, feature_enrichment,
                                 load_curated, precision_at_m, recall_at_m, sae_codes, summarize)
from finescope_nb.curate.baselines import ngrams
from finescope_nb.curate.measure import cut_metrics
from finescope_nb.errors import FinescopeError
from finescope_nb.sae import SAEConfig, encode_corpus, train_sae

# three "domains", each writing with its own six words
VOCAB = {d: tm.WORDS[i * 6:(i + 1) * 6] for i, d in enumerate(tm.DOMAINS)}


def domain_texts(domain, n, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choices(VOCAB[domain], k=rng.randint(15, 30))) for _ in range(n)]


POOL = [t for d in tm.DOMAINS for t in domain_texts(d, 40, seed=hash(d) % 100)]
LABELS = np.array([d for d in tm.DOMAINS for _ in range(40)])
IDS = [f"doc{i}" for i in range(len(POOL))]
SEEDS = {d: domain_texts(d, 6, seed=1000 + i) for i, d in enumerate(tm.DOMAINS)}
M = 40


def one_sentence(excinfo, *words):
    message = str(excinfo.value)
    assert message.count(". ") == 0 and message.endswith((".", ")")), message
    for word in words:
        assert word in message, message


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, tok = tm.llama(hidden=48), tm.tokenizer()
    sae = train_sae(model, tok, POOL * 3, SAEConfig(layer=1, d_sae=64, k=8, train_tokens=8192, batch_size=256, lr=3e-3), progress=False)
    codes = encode_corpus(sae, model, tok, POOL, IDS, tmp_path_factory.mktemp("codes") / "pool", top_l=24, progress=False)
    return model, tok, sae, codes


def selectors(model, tok, sae):
    return {
        "sae-mean": SAESelector(sae, model, tok, pooling="mean", top_l=24),
        "sae-max": SAESelector(sae, model, tok, pooling="max", scoring="max", top_l=24),
        "sae-idf": SAESelector(sae, model, tok, weighting="idf", top_l=24),
        "sae-enriched": SAESelector(sae, model, tok, weighting="enrichment", top_l=24),
        "dense": DenseSelector(model, tok, sae.layer, centre=False),
        "dense-centred": DenseSelector(model, tok, sae.layer, centre=True),
        "ngram": HashedNgramSelector(n_buckets=4096),
        "random": RandomSelector(seed=0),
    }


def test_every_selector_beats_random_on_a_labelled_pool(setup):
    model, tok, sae, codes = setup
    chosen = selectors(model, tok, sae)
    precision = {}
    for name, selector in chosen.items():
        pool = codes if name.startswith("sae") else POOL
        scores = [precision_at_m(selector.fit(SEEDS[d]).score(pool), LABELS == d, M) for d in tm.DOMAINS]
        precision[name] = np.mean(scores)
    for name in ("sae-mean", "sae-max", "dense", "dense-centred"):
        assert precision[name] >= precision["random"] + 0.3, precision
    assert precision["ngram"] >= precision["random"] + 0.3, precision


def test_texts_and_stored_codes_give_the_same_scores(setup):
    model, tok, sae, codes = setup
    selector = default_sae_selector(sae, model, tok, top_l=24).fit(SEEDS["math"])
    np.testing.assert_allclose(selector.score(POOL), selector.score(codes), atol=1e-5)


def test_pool_encoding_in_shards_resumes_and_equals_one_pass(setup, tmp_path, monkeypatch):
    import pandas as pd

    import finescope_nb.curate.workspace as workspace

    model, tok, sae, _ = setup
    pool = pd.DataFrame({"id": [f"d{i}" for i in range(len(POOL))], "text": POOL})
    whole = encode_corpus(sae, model, tok, POOL, list(pool["id"]), tmp_path / "whole", top_l=16, progress=False)
    monkeypatch.setattr(workspace, "encode_corpus", Calls(encode_corpus, fail_on=3))  # dies in the third shard
    with pytest.raises(Interrupt):
        workspace.cached_pool_codes(sae, model, tok, pool, top_l=16, runs_dir=tmp_path, progress=False, shard_docs=7)
    calls = Calls(encode_corpus)
    monkeypatch.setattr(workspace, "encode_corpus", calls)
    sharded = workspace.cached_pool_codes(sae, model, tok, pool, top_l=16, runs_dir=tmp_path, progress=False, shard_docs=7)
    assert calls.count == -(-len(POOL) // 7) - 2  # the two finished shards were not encoded again
    assert sharded.doc_ids == whole.doc_ids and sharded.meta["n_docs"] == len(POOL)
    for pooling in ("mean", "max"):
        np.testing.assert_allclose(sharded.dense(pooling), whole.dense(pooling), atol=1e-5)
    assert not list(tmp_path.glob("codes/*.shards"))  # merged and cleaned up


def test_sparse_kernel_matches_dense_cosine():
    rng = np.random.default_rng(0)
    dense = rng.random((200, 50)).astype(np.float32) * (rng.random((200, 50)) < 0.2)
    seeds = rng.random((7, 50)).astype(np.float32) * (rng.random((7, 50)) < 0.3)
    pool, seed_codes = SparseCodes.from_dense(dense, 50), SparseCodes.from_dense(seeds, 50)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    cos = unit(dense) @ unit(seeds).T
    by_max = SAESelector(scoring="max").fit(seed_codes)
    np.testing.assert_allclose(by_max.score(pool), cos.max(1), atol=1e-5)
    centroid = unit(unit(seeds).mean(0, keepdims=True))
    np.testing.assert_allclose(SAESelector().fit(seed_codes).score(pool), (unit(dense) @ centroid.T)[:, 0], atol=1e-5)
    masked = SAESelector(exclude=range(25)).fit(seed_codes).score(pool)
    keep = np.r_[np.zeros(25), np.ones(25)].astype(np.float32)
    expected = (unit(dense * keep) @ unit(unit(seeds * keep).mean(0, keepdims=True)).T)[:, 0]
    np.testing.assert_allclose(masked, expected, atol=1e-5)
    only = SAESelector(include=range(25, 50)).fit(seed_codes).score(pool)
    np.testing.assert_allclose(only, expected, atol=1e-5)


def test_weightings_follow_their_definitions():
    rng = np.random.default_rng(1)
    pool = SparseCodes.from_dense(rng.random((100, 30)) * (rng.random((100, 30)) < 0.3), 30)
    seeds = SparseCodes.from_dense(rng.random((5, 30)) * (rng.random((5, 30)) < 0.5), 30)
    idf = SAESelector(weighting="idf").fit(seeds).feature_weights(pool)
    df = pool.document_frequency() * 100
    np.testing.assert_allclose(idf, np.log(101 / (1 + df)) + 1, rtol=1e-5)
    enriched = SAESelector(weighting="enrichment").fit(seeds).feature_weights(pool)
    np.testing.assert_allclose(enriched, np.clip(feature_enrichment(seeds, pool), 0, None), rtol=1e-5)
    assert (enriched == 0).any() and (enriched > 0).any()


def test_selection_rules_explanations_and_determinism(setup):
    model, tok, sae, codes = setup
    selector = SAESelector(sae, model, tok, top_l=24).fit(SEEDS["code"])
    top = selector.select(codes, m=10, ids=IDS)
    assert len(top) == 10 and top.ids == [IDS[i] for i in top.rows]
    assert np.all(np.diff(top.scores[top.rows]) <= 0)
    assert all(feats and all(0 <= int(f) < sae.d_sae and c > 0 for f, c in feats) for feats in top.top_features)
    cut = float(top.scores[top.rows[-1]])
    assert selector.select(codes, threshold=cut).rows.tolist() == top.rows.tolist()
    union = SAESelector(sae, model, tok, scoring="max", top_l=24).fit(SEEDS["code"]).select(codes, per_seed_k=3)
    assert 3 <= len(union) <= 3 * len(SEEDS["code"])
    again = SAESelector(sae, model, tok, top_l=24).fit(SEEDS["code"]).select(codes, m=10, ids=IDS)
    assert again.ids == top.ids
    r1, r2 = RandomSelector(seed=3).fit(["x"]).select(POOL, m=5), RandomSelector(seed=3).fit(["y"]).select(POOL, m=5)
    assert r1.rows.tolist() == r2.rows.tolist()
    assert RandomSelector(seed=4).fit(["x"]).select(POOL, m=5).rows.tolist() != r1.rows.tolist()
    ngram = HashedNgramSelector(n_buckets=4096).fit(SEEDS["code"]).select(POOL, m=3)
    assert all(len(f) > 0 and isinstance(f[0][0], str) for f in ngram.top_features)
    dense = DenseSelector(model, tok, sae.layer).fit(SEEDS["code"]).select(POOL, m=3)
    assert all(f and f[0][0].startswith("dim ") for f in dense.top_features)


def test_hashed_ngram_score_is_a_per_ngram_average():
    selector = HashedNgramSelector(n_buckets=1024).fit(["alpha beta gamma"])
    pool = ["alpha beta", "alpha beta alpha beta alpha beta", "delta epsilon zeta", "eta theta iota kappa lambda"]
    scores = selector.score(pool)
    weights = selector._weights(selector.prepare(pool))
    expected = [np.mean([weights[selector._hash(g)] for g in ngrams(t)]) for t in pool]
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_metrics_on_known_rankings():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    relevant = np.array([True, False, True, False, False])
    assert precision_at_m(scores, relevant, 2) == 0.5
    assert recall_at_m(scores, relevant, 3) == 1.0
    assert auroc(scores, relevant) == pytest.approx(5 / 6)
    assert auroc(np.ones(5), relevant) == 0.5
    assert cut_metrics(scores, relevant, 0.7) == {"count": 3, "precision": 2 / 3, "recall": 1.0}


def test_repeated_draws_give_a_mean_and_std_per_selector_and_target(setup):
    model, tok, sae, codes = setup
    chosen = {"sae": SAESelector(sae, top_l=24), "dense": DenseSelector(), "random": RandomSelector()}
    prepared = {"sae": SparseCodes.from_pooled(codes), "dense": dense_embeddings(model, tok, POOL, sae.layer),
                "random": len(POOL)}

    def seeds_for(domain, draw):
        texts = domain_texts(domain, 4, seed=draw * 7 + len(domain))
        return {"sae": sae_codes(sae, model, tok, texts, top_l=24)["mean"],
                "dense": dense_embeddings(model, tok, texts, sae.layer), "random": texts}

    results = evaluate_selectors(chosen, prepared, LABELS, ["math", "code"], seeds_for, m=20, draws=3, progress=False)
    assert len(results) == 3 * 2 * 3
    table = summarize(results)
    assert set(table.columns) >= {"selector", "target", "precision_mean", "precision_std", "auroc_mean"}
    sae_mean = table[table.selector == "sae"].precision_mean.mean()
    assert sae_mean > table[table.selector == "random"].precision_mean.mean() + 0.3
    inside = evaluate_selectors(chosen, prepared, LABELS, ["math"], seeds_for, m=10, draws=1, progress=False,
                                candidates=lambda t: np.flatnonzero(LABELS != "stem"))
    assert set(inside.pool) == {80}


def test_export_round_trips(setup, tmp_path):
    model, tok, sae, codes = setup
    pool = datasets.Dataset.from_dict({"text": POOL, "id": IDS, "domain": LABELS.tolist()})
    selection = SAESelector(sae, model, tok, top_l=24).fit(SEEDS["stem"]).select(pool, m=12)
    folder = export_selection(selection, pool, tmp_path / "curated")
    loaded = load_curated(folder)
    assert loaded["id"] == selection.ids and loaded["text"] == [POOL[i] for i in selection.rows]
    np.testing.assert_allclose(loaded["score"], selection.scores[selection.rows], rtol=1e-6)
    lines = [json.loads(x) for x in (folder / "curated.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == selection.ids
    assert lines[0]["top_features"][0]["feature"] == selection.top_features[0][0][0]
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_bad_inputs_fail_in_one_sentence(setup, tmp_path):
    model, tok, sae, codes = setup
    selector = SAESelector(sae, model, tok, top_l=24)
    with pytest.raises(FinescopeError) as e:
        selector.fit([])
    one_sentence(e, "No seeds")
    with pytest.raises(FinescopeError) as e:
        selector.fit(["the a of", "   ", ""])
    one_sentence(e, "Seeds 1, 2", "empty")
    with pytest.warns(UserWarning, match="Seed 1 is longer than the context of 128 tokens"):
        selector.fit(["the a of", " ".join(["the"] * 200)])
    fitted = selector.fit(SEEDS["math"])
    with pytest.raises(FinescopeError) as e:
        fitted.select(codes, threshold=2.0)
    one_sentence(e, "Threshold 2", "selects no sample", "scores range from")
    with pytest.raises(FinescopeError) as e:
        fitted.select(codes, m=len(POOL) + 1)
    one_sentence(e, f"M={len(POOL) + 1}", f"pool size {len(POOL)}")
    with pytest.raises(FinescopeError) as e:
        SAESelector(sae, model, tok, include=[3, sae.d_sae])
    one_sentence(e, f"Feature {sae.d_sae}", "outside the SAE")
    with pytest.raises(FinescopeError) as e:
        fitted.score(datasets.Dataset.from_dict({"body": ["x"]}))
    one_sentence(e, "no 'text' column")
    other = tm.llama(seed=9, hidden=48)
    with pytest.raises(FinescopeError) as e:
        SAESelector(sae, other, tok)
    one_sentence(e, "trained on model")
    with pytest.raises(FinescopeError) as e:
        SAESelector(sae, model, tok, layer=0)
    one_sentence(e, "belongs to layer 1")
    foreign = SparseCodes(np.zeros((2, 3), np.int32), np.ones((2, 3), np.float32), sae.d_sae, {"model_identity": "abc"})
    with pytest.raises(FinescopeError) as e:
        fitted.score(foreign)
    one_sentence(e, "model_identity")
    with pytest.raises(FinescopeError) as e:
        SAESelector(sae, model, tok).score(codes)
    one_sentence(e, "call .fit(seeds)")
