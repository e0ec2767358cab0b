"""Importance in bounded memory: the same scores as the plain pass, the chunked loss, the per-batch Taylor estimate."""

import pytest
import torch

import tiny_models as tm
from finescope_nb.adapters import get_adapter
from finescope_nb.errors import FinescopeError
from finescope_nb.prune import PruneConfig, bounded, compute_importance
from finescope_nb.prune.bounded import chunked_lm_loss
from finescope_nb.prune.calibration import collect

TEXTS = tm.texts(12, seed=3, min_words=8, max_words=20)
ALL_LAYERS = dict(first_layer=0, last_layer=tm.LAYERS - 1, batch_size=4)


@pytest.fixture(scope="module")
def tok():
    return tm.tokenizer()


@pytest.fixture
def small_slices(monkeypatch):
    """Loss slices of 7 positions, so every batch's loss is computed in several slices."""
    monkeypatch.setattr(bounded, "LOSS_CHUNK_ELEMENTS", 7 * tm.VOCAB)
    return 7


def padded_batch(tok, texts):
    enc = tok(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"], enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("criterion", ["taylor", "taylor2", "taylor_per_batch", "activation"])
def test_bounded_mode_gives_the_default_scores(arch, criterion, tok, small_slices):
    model = tm.make_model(arch)
    config = PruneConfig(criterion=criterion, **ALL_LAYERS)
    plain = compute_importance(model, tok, TEXTS, config, progress=False)
    low = compute_importance(model, tok, TEXTS, config.replace(memory="bounded"), progress=False)
    assert low.calibration_tokens == plain.calibration_tokens
    for i in plain.heads:
        torch.testing.assert_close(low.heads[i], plain.heads[i], rtol=1e-5, atol=0)
        torch.testing.assert_close(low.channels[i], plain.channels[i], rtol=1e-5, atol=0)
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_chunked_loss_equals_the_models_loss_and_gradients(arch, tok):
    model = tm.make_model(arch)
    ids, mask, labels = padded_batch(tok, TEXTS[:4])
    proj = get_adapter(model).projection_names(model, 1)[0]
    weight = model.get_submodule(proj).weight
    full = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
    (expected,) = torch.autograd.grad(full, weight)
    chunked = chunked_lm_loss(model, ids, mask, labels, chunk_positions=5)
    (got,) = torch.autograd.grad(chunked, weight)
    torch.testing.assert_close(chunked, full, rtol=1e-6, atol=0)
    # Summing the loss in slices reorders float32 sums: entries near zero move by a few 1e-8, so the
    # absolute tolerance is scaled to the gradient's largest entry (a dropped slice moves it by ~1e-2).
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_bounded_mode_never_holds_full_logits_and_recomputes_the_blocks(tok, small_slices):
    model = tm.make_model("llama")
    logits, forwards = [], []
    model.lm_head.register_forward_hook(lambda m, a, out: logits.append(tuple(out.shape)))
    model.model.layers[1].mlp.up_proj.register_forward_hook(lambda m, a, out: forwards.append(1))
    config = PruneConfig(**ALL_LAYERS, memory="bounded")
    compute_importance(model, tok, TEXTS, config, progress=False)
    assert logits and all(len(shape) == 2 and shape[0] <= small_slices for shape in logits)
    assert len(forwards) == 2 * 3  # 3 batches, each block run again in the backward
    forwards.clear(), logits.clear()
    compute_importance(model, tok, TEXTS, config.replace(criterion="activation"), progress=False)
    assert len(forwards) == 3 and logits == []  # input norms: the blocks alone, once, and no LM head


@pytest.mark.parametrize("memory", ["default", "bounded"])
def test_gradients_are_freed_as_they_come_and_only_needed_sums_are_kept(memory, tok):
    """Bounded: when a projection's gradient arrives, no other projection's gradient is still alive."""
    model = tm.make_model("llama")
    modules = get_adapter(model).projection_names(model, 1) + get_adapter(model).projection_names(model, 2)
    params = [p for name in modules for p in model.get_submodule(name).parameters()]
    alive = []
    for p in params:  # registered before the calibration's own hooks, so they run first
        p.register_post_accumulate_grad_hook(lambda p: alive.append(sum(q.grad is not None for q in params)))
    stats = collect(model, tok, TEXTS[:4], modules, {"grad"}, memory=memory, batch_size=4, progress=False)
    assert len(alive) == len(params)
    if memory == "bounded":
        assert max(alive) == 1 and stats.grad_sq == {}
    else:
        assert max(alive) == len(params) and set(stats.grad_sq) == set(modules)
    assert set(stats.grad) == set(modules)


@pytest.mark.parametrize("memory", ["default", "bounded"])
def test_per_batch_taylor_is_the_sum_of_each_batchs_taylor_scores(memory, tok):
    model = tm.make_model("llama")
    config = PruneConfig(criterion="taylor_per_batch", calibration_docs=8, memory=memory, **ALL_LAYERS)
    scores = compute_importance(model, tok, TEXTS, config, progress=False)
    mlp = model.model.layers[2].mlp
    by_hand = 0
    for batch in (TEXTS[:4], TEXTS[4:8]):
        ids, mask, labels = padded_batch(tok, batch)
        model.zero_grad()
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        by_hand = by_hand + ((mlp.up_proj.weight * mlp.up_proj.weight.grad).abs().sum(1)
                             + (mlp.gate_proj.weight * mlp.gate_proj.weight.grad).abs().sum(1)
                             + (mlp.down_proj.weight * mlp.down_proj.weight.grad).abs().sum(0)).detach()
    torch.testing.assert_close(scores.channels[2], by_hand, rtol=1e-5, atol=1e-8)
    summed_first = compute_importance(model, tok, TEXTS, config.replace(criterion="taylor"), progress=False)
    assert torch.all(scores.channels[2] >= summed_first.channels[2] * (1 - 1e-5))  # |sum| <= sum of ||
    assert not torch.allclose(scores.channels[2], summed_first.channels[2])


def test_unknown_memory_mode_is_one_sentence():
    with pytest.raises(FinescopeError) as excinfo:
        PruneConfig(memory="low")
    message = str(excinfo.value)
    assert "\n" not in message and message.endswith(".") and "'low'" in message and "bounded" in message


def test_cli_run_passes_the_memory_mode_to_the_prune_config(monkeypatch, tmp_path):
    from finescope_nb import pipeline
    from finescope_nb.cli import main

    seen = []

    def stop(cfg, run_dir, **options):
        seen.append(cfg)
        raise FinescopeError("Stopped before any work.")

    monkeypatch.setattr(pipeline, "run", stop)
    assert main(["run", "--importance-memory", "bounded", "--run-dir", str(tmp_path / "run")]) == 2
    assert main(["run", "--run-dir", str(tmp_path / "run")]) == 2
    assert [cfg.prune.memory for cfg in seen] == ["bounded", "default"]
