"""The pruning stage on tiny random models of every family: importance, plans, surgery, saving."""

import pytest
import torch
from transformers import AutoModelForCausalLM, OPTConfig

import tiny_models as tm
from finescope_nb.adapters import get_adapter
from finescope_nb.errors import FinescopeError
from finescope_nb.lm import SHAPES_FILE, layer_shapes, load_model, model_identity
from finescope_nb.prune import (CRITERIA, PruneConfig, compute_importance, plan_pruning, prune, sample_texts,
                                save_pruned, unit_cost)

TEXTS = tm.texts(12, seed=3, min_words=8, max_words=20)
ALL_LAYERS = dict(first_layer=0, last_layer=tm.LAYERS - 1)


@pytest.fixture(scope="module")
def tok():
    return tm.tokenizer()


def logits(model, tok, texts=TEXTS[:4]):
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    return out * enc["attention_mask"].unsqueeze(-1)  # padded positions are not compared


def masked_logits(model, tok, plan):
    """The unpruned model with the removed heads' and channels' features zeroed before the output projections."""
    adapter = get_adapter(model)
    root = adapter.root(model)
    slice_heads = adapter.head_group_slices if plan.head_unit == "group" else adapter.query_head_slices
    handles = []
    for i in plan.keep_heads:
        n_heads = plan.shapes_before[i]["num_kv_heads" if plan.head_unit == "group" else "num_heads"]
        gone_heads = [h for h in range(n_heads) if h not in plan.keep_heads[i]]
        gone_channels = [c for c in range(plan.shapes_before[i]["intermediate_size"]) if c not in plan.keep_channels[i]]
        for piece in slice_heads(model, i, gone_heads) + adapter.mlp_channel_slices(model, i, gone_channels):
            if piece.side == "in":
                def hook(module, args, index=piece.index):
                    x = args[0].clone()
                    x[..., index] = 0
                    return (x,)
                handles.append(root.get_submodule(piece.module).register_forward_pre_hook(hook))
    try:
        return logits(model, tok)
    finally:
        for h in handles:
            h.remove()


def assert_one_sentence(excinfo, *names):
    message = str(excinfo.value)
    assert "\n" not in message and message.endswith("."), message
    for name in names:
        assert str(name) in message, (name, message)


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_ratio_zero_gives_identical_logits(arch, tok):
    model = tm.make_model(arch)
    pruned, plan, _ = prune(model, tok, TEXTS, PruneConfig(ratio=0.0, **ALL_LAYERS), progress=False)
    assert plan.params_after == plan.params_before
    torch.testing.assert_close(logits(pruned, tok), logits(model, tok), rtol=0, atol=0)


@pytest.mark.parametrize("arch", tm.ARCHS)
@pytest.mark.parametrize("scope", ["per_layer", "global", "uniform"])
def test_surgery_equals_masking_and_counts_are_exact(arch, scope, tok):
    model = tm.make_model(arch)
    config = PruneConfig(ratio=0.4, scope=scope, **ALL_LAYERS)
    pruned, plan, scores = prune(model, tok, TEXTS, config, progress=False)
    adapter = get_adapter(model)
    assert adapter.non_embedding_parameters(pruned) == plan.params_after
    removed = plan.params_before - plan.params_after
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in pruned.parameters()) == removed
    assert 0.4 <= plan.removed_fraction < 0.4 + max(unit_cost(model, 0, "group"), unit_cost(model, 0, "mlp")) * 3 / plan.params_before
    assert layer_shapes(pruned) == plan.shapes_after != plan.shapes_before
    assert layer_shapes(model) == plan.shapes_before  # the original is untouched
    masked = masked_logits(model, tok, plan)
    assert (masked - logits(model, tok)).abs().max() > 1e-3  # the oracle really removes something
    torch.testing.assert_close(logits(pruned, tok), masked, rtol=1e-4, atol=1e-5)
    enc = tok(TEXTS[:2], padding=True, return_tensors="pt")
    out = pruned.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=1)
    assert out.shape[1] == enc["input_ids"].shape[1] + 4


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_query_heads_within_gqa_groups(arch, tok):
    model = tm.make_model(arch)
    config = PruneConfig(ratio=0.2, scope="uniform", head_unit="query", num_heads=2, criterion="magnitude", **ALL_LAYERS)
    pruned, plan, _ = prune(model, tok, TEXTS, config, progress=False)
    assert all(s["num_heads"] == 2 and s["num_kv_heads"] == 2 for s in plan.shapes_after)
    assert all(layer.self_attn.num_key_value_groups == 1 for layer in pruned.model.layers)
    torch.testing.assert_close(logits(pruned, tok), masked_logits(model, tok, plan), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", tm.ARCHS)
def test_save_and_reload_give_identical_logits(arch, tok, tmp_path):
    model = tm.make_model(arch)
    config = PruneConfig(ratio=0.3, **ALL_LAYERS)
    pruned, plan, _ = prune(model, tok, TEXTS, config, progress=False)
    folder = save_pruned(pruned, tok, tmp_path / "pruned", plan, config)
    reloaded = load_model(folder)
    assert layer_shapes(reloaded) == plan.shapes_after
    torch.testing.assert_close(logits(reloaded, tok), logits(pruned, tok), rtol=0, atol=0)
    assert model_identity(reloaded) == model_identity(pruned)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gemma3_text", "gpt2", "gpt_neox"])
def test_uniform_pruning_loads_with_stock_from_pretrained(arch, tok, tmp_path):
    model = tm.make_model(arch)
    # GPT-2 and GPT-NeoX tie head counts to hidden_size in their configs: only channels keep them stock-loadable
    attention = arch in ("llama", "qwen2", "mistral", "gemma3_text")
    config = PruneConfig(ratio=0.3, scope="uniform", prune_attention=attention, **ALL_LAYERS)
    pruned, plan, _ = prune(model, tok, TEXTS, config, progress=False)
    folder = save_pruned(pruned, tok, tmp_path / "pruned", plan, config)
    assert not (folder / SHAPES_FILE).exists()
    stock = AutoModelForCausalLM.from_pretrained(folder).eval()
    torch.testing.assert_close(logits(stock, tok), logits(pruned, tok), rtol=0, atol=0)


@pytest.mark.parametrize("criterion", list(CRITERIA))
def test_importance_is_deterministic_from_a_seed(criterion, tok):
    model = tm.make_model("llama")
    config = PruneConfig(criterion=criterion, seed=5, **ALL_LAYERS)
    a = compute_importance(model, tok, TEXTS, config, progress=False)
    b = compute_importance(model, tok, TEXTS, config, progress=False)
    for i in a.heads:
        assert torch.equal(a.heads[i], b.heads[i]) and torch.equal(a.channels[i], b.channels[i])
    if criterion == "random":
        c = compute_importance(model, tok, TEXTS, config.replace(seed=6), progress=False)
        assert not torch.equal(a.channels[0], c.channels[0])
    assert sample_texts(TEXTS, 5, seed=1) == sample_texts(TEXTS, 5, seed=1) != sample_texts(TEXTS, 5, seed=2)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_unit_scores_sum_exactly_the_features_each_unit_owns(arch, tok):
    """Per-unit magnitude equals |w| summed over the adapter's slices of that unit (fused and transposed layouts)."""
    model = tm.make_model(arch)
    adapter = get_adapter(model)
    root = adapter.root(model)
    scores = compute_importance(model, tok, TEXTS, PruneConfig(criterion="magnitude", **ALL_LAYERS), progress=False)
    for unit in range(adapter.num_head_groups(model, 1)):
        expected = 0.0
        for piece in adapter.head_group_slices(model, 1, [unit]):
            module = root.get_submodule(piece.module)
            expected += module.weight.abs().index_select(piece.weight_dim, piece.index).sum().item()
            if piece.side == "out" and module.bias is not None:
                expected += module.bias.abs()[piece.index].sum().item()
        assert scores.heads[1][unit].item() == pytest.approx(expected, rel=1e-5)


def test_taylor_scores_match_autograd_by_hand(tok):
    model = tm.make_model("llama")
    scores = compute_importance(model, tok, TEXTS[:4], PruneConfig(criterion="taylor", batch_size=4, **ALL_LAYERS), progress=False)
    enc = tok(TEXTS[:4], padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    model(**enc, labels=labels).loss.backward()
    up, gate, down = (model.model.layers[2].mlp.up_proj, model.model.layers[2].mlp.gate_proj, model.model.layers[2].mlp.down_proj)
    by_hand = ((up.weight * up.weight.grad).abs().sum(1) + (gate.weight * gate.weight.grad).abs().sum(1)
               + (down.weight * down.weight.grad).abs().sum(0))
    torch.testing.assert_close(scores.channels[2], by_hand.detach(), rtol=1e-4, atol=1e-7)


def test_a_planted_dead_head_group_is_pruned_first(tok):
    """Zeroing KV group 1 of layer 1 makes it the least important unit there for Taylor and magnitude."""
    model = tm.make_model("llama")
    with torch.no_grad():
        for piece in get_adapter(model).head_group_slices(model, 1, [1]):
            weight = model.get_submodule(piece.module).weight
            weight.index_fill_(piece.weight_dim, piece.index, 0.0)
    for criterion in ("taylor", "magnitude", "activation"):
        scores = compute_importance(model, tok, TEXTS, PruneConfig(criterion=criterion, **ALL_LAYERS), progress=False)
        assert int(scores.heads[1].argmin()) == 1, criterion
        plan = plan_pruning(model, scores, PruneConfig(criterion=criterion, ratio=0.05, scope="uniform", prune_mlp=False, **ALL_LAYERS))
        assert 1 not in plan.keep_heads[1]


def test_default_layer_range_keeps_first_and_last_blocks_whole(tok):
    model = tm.make_model("llama")
    assert list(PruneConfig().layer_range(8)) == [1, 2, 3, 4, 5, 6]
    assert list(PruneConfig().layer_range(32)) == list(range(4, 31))
    pruned, plan, _ = prune(model, tok, TEXTS, PruneConfig(ratio=0.2, first_layer=1, last_layer=1), progress=False)
    assert plan.shapes_after[0] == plan.shapes_before[0] and plan.shapes_after[2] == plan.shapes_before[2]
    assert plan.shapes_after[1] != plan.shapes_before[1]


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratio_outside_range(ratio):
    with pytest.raises(FinescopeError) as excinfo:
        PruneConfig(ratio=ratio)
    assert_one_sentence(excinfo, ratio, "[0, 1)")


def test_ratio_that_would_empty_a_block(tok):
    model = tm.make_model("llama")
    config = PruneConfig(ratio=0.9, **ALL_LAYERS)
    scores = compute_importance(model, tok, TEXTS, config, progress=False)
    for scope in ("per_layer", "global", "uniform"):
        with pytest.raises(FinescopeError) as excinfo:
            plan_pruning(model, scores, config.replace(scope=scope))
        assert_one_sentence(excinfo, "0.9", "no head or no channel", "lower the ratio")


def test_layer_range_outside_the_model(tok):
    model = tm.make_model("llama")
    with pytest.raises(FinescopeError) as excinfo:
        compute_importance(model, tok, TEXTS, PruneConfig(first_layer=0, last_layer=7), progress=False)
    assert_one_sentence(excinfo, "last_layer=7", "0-2")
    with pytest.raises(FinescopeError) as excinfo:
        PruneConfig(first_layer=2, last_layer=1).layer_range(3)
    assert_one_sentence(excinfo, "empty")


@pytest.mark.parametrize("texts", [[], ["", "   "], "one string"])
def test_empty_calibration_set(texts, tok):
    with pytest.raises(FinescopeError) as excinfo:
        compute_importance(tm.make_model("llama"), tok, texts, PruneConfig(**ALL_LAYERS), progress=False)
    assert_one_sentence(excinfo, "calibration set")


def test_a_model_the_adapters_do_not_know(tok):
    torch.manual_seed(0)
    opt = AutoModelForCausalLM.from_config(OPTConfig(vocab_size=tm.VOCAB, hidden_size=16, num_hidden_layers=2, ffn_dim=32,
                                                     num_attention_heads=2, word_embed_proj_dim=16))
    with pytest.raises(FinescopeError) as excinfo:
        compute_importance(opt, tok, TEXTS, PruneConfig(), progress=False)
    assert_one_sentence(excinfo, "opt", "llama")


def test_head_count_that_breaks_gqa_lists_the_valid_ones(tok):
    model = tm.make_model("llama")  # 4 query heads over 2 KV heads
    config = PruneConfig(scope="uniform", num_heads=3, ratio=0.1, **ALL_LAYERS)
    scores = compute_importance(model, tok, TEXTS, config, progress=False)
    with pytest.raises(FinescopeError) as excinfo:
        plan_pruning(model, scores, config)
    assert_one_sentence(excinfo, "num_heads=3", "valid counts are 2, 4")
    with pytest.raises(FinescopeError) as excinfo:
        PruneConfig(num_heads=2)
    assert_one_sentence(excinfo, "uniform")


def test_unknown_criterion_and_mismatched_scores(tok):
    from finescope_nb.config import PRUNE_CRITERIA

    assert tuple(CRITERIA) == PRUNE_CRITERIA  # the config validates names against the registry's
    with pytest.raises(FinescopeError) as excinfo:
        PruneConfig(criterion="l2")
    assert_one_sentence(excinfo, "l2", "taylor")
    model = tm.make_model("llama")
    scores = compute_importance(model, tok, TEXTS, PruneConfig(first_layer=1, last_layer=1), progress=False)
    with pytest.raises(FinescopeError) as excinfo:
        plan_pruning(model, scores, PruneConfig(**ALL_LAYERS))
    assert_one_sentence(excinfo, "recompute importance")


# -- figures and the ratio picker ------------------------------------------------------------------


def test_figures_show_the_plan(tok):
    from finescope_nb.viz import prune_plots

    model = tm.make_model("llama")
    config = PruneConfig(ratio=0.3, **ALL_LAYERS)
    scores = compute_importance(model, tok, TEXTS, config, progress=False)
    plan = plan_pruning(model, scores, config)
    heat = prune_plots.head_heatmap(scores, plan)
    crossed = sum(len(scores.heads[i]) - len(plan.keep_heads[i]) for i in plan.keep_heads)
    assert len(heat.data[1].x) == crossed
    bars = prune_plots.params_per_layer(plan)
    assert list(bars.data[1].y) == plan.layer_params_after
    other = plan_pruning(model, compute_importance(model, tok, TEXTS[::-1][:3], config.replace(criterion="random"), progress=False), config)
    overlap = prune_plots.kept_overlap({"a": plan, "b": plan})
    assert all(v == 1.0 for trace in overlap.data for v in trace.y)
    assert any(v < 1.0 for trace in prune_plots.kept_overlap({"a": plan, "b": other}).data for v in trace.y)
    assert len(prune_plots.channel_distributions(scores, plan).data) >= len(scores.channels)


def test_ratio_picker_replans_in_place(tok):
    from finescope_nb.viz.prune_widgets import RatioPicker

    model = tm.make_model("llama")
    config = PruneConfig(ratio=0.2, **ALL_LAYERS)
    picker = RatioPicker(model, compute_importance(model, tok, TEXTS, config, progress=False), config)
    first = picker.plan.params_after
    picker.slider.value = 0.4  # the observer calls set_ratio
    assert picker.plan.params_after < first and f"{picker.plan.params_after:,}" in picker.readout.value
    assert list(picker.figure.data[1].y) == picker.plan.layer_params_after
    assert picker.set_ratio(0.79) is None and "lower the ratio" in picker.readout.value


@pytest.mark.parametrize("scope", ["per_layer", "global"])
def test_kept_channels_rounded_to_a_multiple_and_the_removed_share_reported(scope, tok):
    model = tm.make_model("llama")
    exact = prune(model, tok, TEXTS, PruneConfig(ratio=0.4, scope=scope, criterion="magnitude", **ALL_LAYERS), progress=False)[1]
    pruned, plan, scores = prune(model, tok, TEXTS, PruneConfig(ratio=0.4, scope=scope, criterion="magnitude", channel_multiple=16,
                                                                 **ALL_LAYERS), progress=False)
    kept = [s["intermediate_size"] for s in plan.shapes_after]
    assert all(k % 16 == 0 and k >= 16 for k in kept) and kept != [s["intermediate_size"] for s in exact.shapes_after]
    assert get_adapter(model).non_embedding_parameters(pruned) == plan.params_after  # the share reported is the real one
    assert abs(plan.removed_fraction - 0.4) < 0.1
    for i, channels in plan.keep_channels.items():  # the kept ones are still the most important of their block
        assert float(scores.channels[i][channels].min()) >= float(scores.channels[i].sort(descending=True).values[len(channels) - 1])
    torch.testing.assert_close(logits(pruned, tok), masked_logits(model, tok, plan), rtol=1e-4, atol=1e-5)
    with pytest.raises(FinescopeError, match="channel_multiple must be at least 1"):
        PruneConfig(channel_multiple=0)
