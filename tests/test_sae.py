"""SAE training through sae-lens, the SAE folder and its identity checks, held-out metrics,
corpus encoding, NaN handling, and Jacobian coordinate selection."""

import json
import warnings

import numpy as np
import pytest
import torch
from sae_lens import SAE

import tiny_models as tm
from finescope_nb.activations import ActivationConfig, capture, collect_activations
from finescope_nb.errors import FinescopeError
from finescope_nb.jacobian import jacobian_scores, select_coordinates
from finescope_nb.sae import (
    ARCHITECTURES,
    LayerSAE,
    PooledCodes,
    SAEConfig,
    encode_corpus,
    fit_sae,
    reconstruction_metrics,
    spliced_loss,
    train_sae,
)

TEXTS = tm.texts(150, seed=1)
HELDOUT = tm.texts(20, seed=2)
SMALL = dict(layer=1, d_sae=64, k=4, train_tokens=2048, batch_size=256)


def one_sentence(excinfo, *names):
    message = str(excinfo.value)
    assert "\n" not in message and message.endswith("."), message
    for name in names:
        assert str(name) in message, (name, message)


@pytest.fixture(scope="module")
def model():
    return tm.llama()


@pytest.fixture(scope="module")
def tok():
    return tm.tokenizer()


@pytest.fixture(scope="module")
def topk(model, tok):
    return train_sae(model, tok, TEXTS, SAEConfig(**SMALL), progress=False)


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_every_architecture_trains_and_round_trips(architecture, model, tok, tmp_path):
    sae = train_sae(model, tok, TEXTS, SAEConfig(**SMALL, architecture=architecture), progress=False)
    assert sae.history and all(np.isfinite(row["loss"]) for row in sae.history)
    folder = sae.save(tmp_path / "sae")
    plain = SAE.load_from_disk(folder)  # sae-lens reads our folder on its own
    loaded = LayerSAE.load(folder, model, layer=1)
    acts = torch.from_numpy(collect_activations(model, tok, HELDOUT, 1, 200, progress=False))
    assert torch.equal(sae.encode(acts), loaded.encode(acts))
    assert torch.equal(plain.encode(acts), loaded.encode(acts))
    meta = json.loads((folder / "finescope_sae.json").read_text())
    assert meta["layer"] == 1 and meta["hook_name"] == "model.layers.1" and meta["architecture"] == architecture
    assert loaded.config == sae.config and loaded.history == sae.history


def test_loading_refuses_other_model_layer_width_and_non_sae_folders(topk, model, tmp_path):
    folder = topk.save(tmp_path / "sae")
    with pytest.raises(FinescopeError) as excinfo:
        LayerSAE.load(folder, tm.llama(seed=1))
    one_sentence(excinfo, topk.model_identity)
    with pytest.raises(FinescopeError) as excinfo:
        LayerSAE.load(folder, model, layer=0)
    one_sentence(excinfo, "layer 1", "layer 0")
    with pytest.raises(FinescopeError) as excinfo:
        LayerSAE.load(folder, tm.llama(hidden=48))
    one_sentence(excinfo, "32", "48")
    with pytest.raises(FinescopeError) as excinfo:
        topk.encode(torch.zeros(3, 48))
    one_sentence(excinfo, "48", "32")
    with pytest.raises(FinescopeError) as excinfo:
        LayerSAE(topk.sae, layer=1, hook_name="x", model_identity="x", d_model=48, config=topk.config)
    one_sentence(excinfo, "32", "48")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FinescopeError) as excinfo:
        LayerSAE.load(tmp_path / "empty")
    one_sentence(excinfo, "not a finescope SAE folder")


def test_bad_configs_are_refused_in_one_sentence():
    for bad, name in ((dict(architecture="gated"), "gated"), (dict(k=64, d_sae=64), "k"), (dict(selection="pca"), "pca"),
                      (dict(train_tokens=10), "train_tokens")):
        with pytest.raises(FinescopeError) as excinfo:
            SAEConfig(**bad)
        one_sentence(excinfo, name)
    config = SAEConfig(layer=2, capture=ActivationConfig(max_length=64))
    assert SAEConfig.from_json(config.to_json()) == config


def test_nan_stops_training_and_keeps_last_good_state(monkeypatch):
    rng = np.random.default_rng(0)
    good = [torch.from_numpy(rng.normal(size=(64, 16)).astype(np.float32)) for _ in range(3)]
    config = SAEConfig(d_sae=32, k=4, batch_size=64, train_tokens=64 * 10, normalize_activations="none",
                       warmup_fraction=0.0, decay_fraction=0.0)

    def provider(batches):
        return lambda acts, batch_size, seed: iter(batches)

    monkeypatch.setattr("finescope_nb.sae.train.shuffled_batches", provider(good + [torch.full((64, 16), float("nan"))]))
    acts = np.zeros((64, 16), dtype=np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stopped_sae, history, stopped = fit_sae(acts, config, progress=False)
    assert stopped and "step 3" in stopped and any("step 3" in str(w.message) for w in caught)
    assert all(torch.isfinite(p).all() for p in stopped_sae.parameters())
    monkeypatch.setattr("finescope_nb.sae.train.shuffled_batches", provider(good))
    reference, _, none = fit_sae(acts, config.replace(train_tokens=64 * 3), progress=False)
    assert none is None
    x = torch.randn(10, 16)
    torch.testing.assert_close(stopped_sae.encode(x), reference.encode(x))


def test_metrics_follow_their_definitions(topk, model, tok):
    acts = torch.from_numpy(collect_activations(model, tok, HELDOUT, 1, 10_000, progress=False))
    metrics = reconstruction_metrics(topk, acts.split(37))
    recon = topk.reconstruct(acts)
    fvu = (acts - recon).pow(2).sum() / (acts - acts.mean(0)).pow(2).sum()
    assert metrics["explained_variance"] == pytest.approx(1 - float(fvu), abs=1e-4)
    codes = topk.encode(acts)
    assert metrics["l0"] == pytest.approx(4.0)
    assert metrics["dead_fraction"] == pytest.approx(float((codes.max(0).values <= 0).float().mean()))
    assert metrics["heldout_tokens"] == len(acts)


def test_spliced_loss_is_clean_for_a_perfect_reconstruction(topk, model, tok, monkeypatch):
    losses = spliced_loss(topk, model, tok, HELDOUT)
    assert losses["zero_ablation_loss"] != losses["clean_loss"]
    batch = next(iter(capture(model, tok, HELDOUT[:16], 1, progress=False))).tokens
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    target = batch.keep[:, 1:]
    manual = torch.nn.functional.cross_entropy(logits[:, :-1][target], batch.input_ids[:, 1:][target])
    assert spliced_loss(topk, model, tok, HELDOUT[:16])["clean_loss"] == pytest.approx(float(manual), rel=1e-5)
    monkeypatch.setattr(topk, "reconstruct", lambda x: x)
    perfect = spliced_loss(topk, model, tok, HELDOUT)
    assert perfect["spliced_loss"] == pytest.approx(perfect["clean_loss"], rel=1e-6)
    assert perfect["loss_recovered"] == pytest.approx(1.0)


def test_pooled_codes_match_token_by_token_encoding_and_round_trip(topk, model, tok, tmp_path):
    ids = [f"doc-{i}" for i in range(len(HELDOUT))]
    codes = encode_corpus(topk, model, tok, (t for t in HELDOUT), iter(ids), tmp_path / "codes", top_l=topk.d_sae,
                          config=ActivationConfig(batch_size=6), progress=False)
    assert codes.doc_ids == ids and len(codes) == len(HELDOUT)
    mean, peak = codes.dense("mean"), codes.dense("max")
    for i, text in enumerate(HELDOUT[:5]):
        token_codes = topk.encode(next(iter(capture(model, tok, [text], 1, progress=False))).acts[1])
        np.testing.assert_allclose(mean[i], token_codes.mean(0).numpy(), atol=1e-5)
        np.testing.assert_allclose(peak[i], token_codes.max(0).values.numpy(), atol=1e-5)
    again = PooledCodes.load(tmp_path / "codes")
    np.testing.assert_array_equal(again.dense("max"), peak)
    sparse = encode_corpus(topk, model, tok, HELDOUT, ids, tmp_path / "sparse", top_l=3, progress=False)
    assert sparse.indices["mean"].shape == (len(HELDOUT), 3)
    np.testing.assert_allclose(np.sort(sparse.values["mean"], 1)[:, ::-1], -np.sort(-mean, 1)[:, :3], atol=1e-5)
    with pytest.raises(FinescopeError) as excinfo:
        encode_corpus(topk, model, tok, HELDOUT, ids[:-1], tmp_path / "bad", progress=False)
    one_sentence(excinfo, "doc_ids")
    assert not (tmp_path / "bad").exists()


def planted_gpt2(live: int = 12, hidden: int = 32):
    """A GPT-2 whose layer-0 outputs >= `live` get nothing from the block but large constants, while the
    block writes strongly (x50) into the outputs < `live`.

    The residual path still passes every coordinate of the input embedding through with derivative 1,
    so no coordinate is exactly input-independent; the planted ones depend on the input only that way.
    """
    model = tm.gpt2(hidden=hidden)
    dead = slice(live, hidden)
    block = model.transformer.h[0]
    with torch.no_grad():
        model.transformer.wte.weight[:, dead] = 0
        model.transformer.wpe.weight[:, dead] = 0
        for proj in (block.attn.c_proj, block.mlp.c_proj):
            proj.weight[:, :live] *= 50
            proj.weight[:, dead] = 0  # Conv1D stores [in, out]
            proj.bias[dead] = 0
        block.mlp.c_proj.bias[dead] = 1000.0  # big and constant: magnitude picks these first
    return model


def test_jacobian_selector_ranks_input_sensitive_coordinates_first():
    model, tok = planted_gpt2(), tm.tokenizer(bos=False)
    scores = jacobian_scores(model, tok, TEXTS[:8], layer=0, probes=2)
    assert float(scores[:12].min()) > 5 * float(scores[12:].max())
    chosen = select_coordinates("jacobian", model, tok, TEXTS[:8], 0, k=12, probes=2)
    assert set(chosen.indices.tolist()) == set(range(12))
    by_magnitude = select_coordinates("magnitude", model, tok, TEXTS[:8], 0, k=12)
    assert set(by_magnitude.indices.tolist()).isdisjoint(range(12))
    assert model.config._attn_implementation != "eager"  # restored after the forward-mode pass
    random = select_coordinates("random", model, tok, TEXTS[:8], 0, k=12, seed=3)
    assert len(set(random.indices.tolist())) == 12


def test_selected_coordinates_sae_reconstructs_the_full_activation(model, tok, tmp_path):
    config = SAEConfig(**SMALL, selection="variance", n_coordinates=8)
    sae = train_sae(model, tok, TEXTS, config, heldout_texts=HELDOUT, progress=False)
    assert len(sae.coordinates) == 8 and "spliced_loss" not in sae.metrics
    acts = torch.from_numpy(collect_activations(model, tok, HELDOUT, 1, 100, progress=False))
    recon = sae.reconstruct(acts)
    assert recon.shape == acts.shape
    others = torch.ones(32, dtype=torch.bool)
    others[sae.coordinates] = False
    assert torch.equal(recon[:, others], sae.fill[others].expand(100, -1))
    assert -1 < sae.metrics["explained_variance"] < 1
    loaded = LayerSAE.load(sae.save(tmp_path / "sel"), model)
    assert torch.equal(loaded.reconstruct(acts), recon)


def test_jacobian_scores_estimate_the_exact_row_norms():
    model, tok = tm.llama(), tm.tokenizer()
    text = "the water is very long"
    estimate = jacobian_scores(model, tok, [text], layer=1, probes=300, seed=0)
    ids = tok([text], return_tensors="pt")["input_ids"]
    embeds = model.model.embed_tokens(ids).detach()

    def layer_one(e):
        return model(inputs_embeds=e, output_hidden_states=True).hidden_states[2]

    jac = torch.autograd.functional.jacobian(layer_one, embeds)[0, 1:]  # text positions (BOS dropped)
    exact = jac.pow(2).sum(dim=(-3, -2, -1)).mean(0).sqrt()
    torch.testing.assert_close(estimate, exact, rtol=0.2, atol=1e-3)


def test_spilled_training_matches_in_memory(model, tok, tmp_path):
    config = SAEConfig(**SMALL)
    in_memory = train_sae(model, tok, TEXTS, config, progress=False)
    spilled = train_sae(model, tok, TEXTS, config, spill_dir=tmp_path, progress=False)
    assert (tmp_path / "acts-layer1.npy").is_file()
    acts = torch.from_numpy(collect_activations(model, tok, HELDOUT, 1, 100, progress=False))
    torch.testing.assert_close(in_memory.encode(acts), spilled.encode(acts))


def test_cached_sae_resumes_after_capture_and_after_training(tmp_path, monkeypatch):
    import finescope_nb.sae.cache as cache

    real_evaluate = cache.evaluate_sae
    model, tok = tm.llama(), tm.tokenizer()
    config = SAEConfig(layer=1, d_sae=32, k=4, train_tokens=2048, batch_size=256,
                       capture=ActivationConfig(max_length=32, batch_size=8))
    small = dict(heldout_docs=8, heldout_tokens=256, loss_tokens=128, progress=False)
    straight = cache.cached_sae(model, tok, config, runs_dir=tmp_path / "a", **small)

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache, "train_sae", dies)  # killed while training: the captured activations stay
    with pytest.raises(KeyboardInterrupt):
        cache.cached_sae(model, tok, config, runs_dir=tmp_path / "b", **small)
    monkeypatch.undo()
    monkeypatch.setattr(cache, "capture_for_sae", dies)  # so they are not captured again
    monkeypatch.setattr(cache, "evaluate_sae", dies)  # killed while evaluating: the trained SAE stays
    with pytest.raises(KeyboardInterrupt):
        cache.cached_sae(model, tok, config, runs_dir=tmp_path / "b", **small)
    monkeypatch.setattr(cache, "evaluate_sae", real_evaluate)
    monkeypatch.setattr(cache, "train_sae", dies)  # so it is not trained again either
    resumed = cache.cached_sae(model, tok, config, runs_dir=tmp_path / "b", **small)
    for a, b in zip(resumed.sae.state_dict().values(), straight.sae.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.metrics == straight.metrics
    assert not list((tmp_path / "b" / "sae").glob("*.partial"))


def test_cached_sae_measures_metrics_as_each_caller_asks(tmp_path, monkeypatch):
    """A cached SAE never hands its first caller's metrics to a caller that asked for another measurement."""
    import finescope_nb.sae.cache as cache

    model, tok = tm.llama(), tm.tokenizer()
    config = SAEConfig(layer=1, d_sae=32, k=4, train_tokens=2048, batch_size=256,
                       capture=ActivationConfig(max_length=32, batch_size=8))
    first = cache.cached_sae(model, tok, config, runs_dir=tmp_path, heldout_docs=8, heldout_tokens=64, loss_tokens=32,
                             progress=False)
    assert first.metrics["heldout_tokens"] == 64
    more = cache.cached_sae(model, tok, config, runs_dir=tmp_path, heldout_docs=8, heldout_tokens=200, loss_tokens=32,
                            progress=False)
    assert more.metrics["heldout_tokens"] == 200 and more.metrics["evaluated_on"]["heldout_tokens"] == 200
    calls = []
    monkeypatch.setattr(cache, "evaluate_sae", lambda *a, **k: calls.append(k) or {})
    again = cache.cached_sae(model, tok, config, runs_dir=tmp_path, heldout_docs=8, heldout_tokens=200, loss_tokens=32,
                             progress=False)  # measured once, then kept beside the SAE
    back = cache.cached_sae(model, tok, config, runs_dir=tmp_path, heldout_docs=8, heldout_tokens=64, loss_tokens=32,
                            progress=False)  # the SAE's own request: its own metrics
    assert not calls and again.metrics == more.metrics and back.metrics == first.metrics


def test_decoder_bias_starting_at_the_mean_learns_offset_activations_in_few_steps():
    """A pretrained residual has a large constant offset; from zeros, a short run spends itself on it."""
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(64, 32))
    codes = rng.random((4096, 64)) * (rng.random((4096, 64)) < 0.05)
    acts = (codes @ dirs + 40.0 * np.eye(32)[0] + 25.0 * np.eye(32)[1]).astype(np.float32)  # two big, steady coordinates
    config = SAEConfig(d_sae=128, k=4, train_tokens=4096, batch_size=256, lr=1e-3)
    scores = {}
    for init in ("zeros", "mean"):
        sae, _, _ = fit_sae(acts, config.replace(decoder_bias_init=init), progress=False)
        x = torch.from_numpy(acts)
        err = (sae.decode(sae.encode(x)) - x).pow(2).sum()
        scores[init] = 1 - float(err / (x - x.mean(0)).pow(2).sum())
    assert scores["zeros"] < 0 < scores["mean"], scores  # from zeros the reconstruction is worse than the mean itself
    with pytest.raises(FinescopeError, match="decoder_bias_init"):
        SAEConfig(decoder_bias_init="median")


def test_latest_sae_is_the_newest_on_all_coordinates(tmp_path):
    import finescope_nb.sae.cache as cache

    model, tok = tm.llama(), tm.tokenizer()
    config = SAEConfig(layer=1, d_sae=32, k=4, train_tokens=2048, batch_size=256,
                       capture=ActivationConfig(max_length=32, batch_size=8))
    small = dict(heldout_docs=8, heldout_tokens=256, loss_tokens=128, progress=False)
    assert cache.latest_sae(model, runs_dir=tmp_path) is None
    full = cache.cached_sae(model, tok, config, runs_dir=tmp_path, **small)
    cache.cached_sae(model, tok, config.replace(selection="variance", n_coordinates=8), runs_dir=tmp_path, **small)  # newer
    latest = cache.latest_sae(model, runs_dir=tmp_path)
    assert latest is not None and latest.coordinates is None and latest.config == full.config
