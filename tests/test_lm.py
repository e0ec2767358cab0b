"""lm.py and the architecture adapters on tiny random models of every supported family."""

import json

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    BertConfig,
    OPTConfig,
    PreTrainedTokenizerFast,
)

from finescope_nb import lm
from tiny_models import CONFIGS, HEAD_DIM, HEADS, HIDDEN, INTER, LAYERS, VOCAB, make_model
from finescope_nb.errors import FinescopeError
from finescope_nb.lm import (
    SHAPES_FILE,
    get_adapter,
    layer_shapes,
    load_model,
    load_tokenizer,
    model_identity,
    run_until_layer,
    save_model,
    shapes_are_uniform,
)

ARCHS = list(CONFIGS)
KV_HEADS = {"llama": 2, "qwen2": 2, "mistral": 2, "gemma3_text": 2, "gpt2": HEADS, "gpt_neox": HEADS}
HEAD_DIMS = {"gemma3_text": 2 * HEAD_DIM}  # Gemma states head_dim apart from hidden / heads; the others derive it
# Written out independently of the adapters, for the masking oracle.
O_PROJ = {"llama": "self_attn.o_proj", "gpt2": "attn.c_proj", "gpt_neox": "attention.dense"}
DOWN_PROJ = {"llama": "mlp.down_proj", "gpt2": "mlp.c_proj", "gpt_neox": "mlp.dense_4h_to_h"}
FAMILY = {"llama": "llama", "qwen2": "llama", "mistral": "llama", "gemma3_text": "llama", "gpt2": "gpt2", "gpt_neox": "gpt_neox"}


def batch():
    ids = torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # right padding in the second row
    return ids, mask


def logits(model):
    ids, mask = batch()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def assert_one_sentence(excinfo, *names):
    message = str(excinfo.value)
    assert "\n" not in message and message.endswith("."), message
    for name in names:
        assert str(name) in message, (name, message)


@pytest.fixture
def tokenizer():
    words = ["<pad>", "<unk>", "<eos>", "the", "cat", "sat", "on", "mat", "a", "dog"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


# -- adapters -------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_adapter_reads_shapes_from_weights(arch):
    model = make_model(arch)
    adapter = get_adapter(model)
    assert adapter is get_adapter(model.config) is get_adapter(arch)
    assert adapter.num_layers(model) == LAYERS and adapter.hidden_size(model) == HIDDEN
    assert adapter.head_dim(model) == HEAD_DIMS.get(arch, HEAD_DIM)
    for i in range(LAYERS):
        assert adapter.num_heads(model, i) == HEADS
        assert adapter.num_kv_heads(model, i) == adapter.num_head_groups(model, i) == KV_HEADS[arch]
        assert adapter.intermediate_size(model, i) == INTER
    shape = {"num_heads": HEADS, "num_kv_heads": KV_HEADS[arch], "intermediate_size": INTER}
    assert layer_shapes(model) == [shape] * LAYERS and shapes_are_uniform(layer_shapes(model))
    n_rep = HEADS // KV_HEADS[arch]
    assert adapter.query_heads_by_group(model, 0)[1] == list(range(n_rep, 2 * n_rep))


@pytest.mark.parametrize("arch", ARCHS)
def test_names_parts_and_parameter_count(arch):
    model = make_model(arch)
    adapter = get_adapter(model)
    for i in range(LAYERS):
        assert model.get_submodule(adapter.layer_hook_name(i)) is adapter.decoder_layers(model)[i]
    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert set(adapter.lora_target_modules(model)) <= leaves
    parts = {**adapter.attention_modules(model, 0), **adapter.mlp_modules(model, 0)}
    assert set(parts) <= set(adapter.lora_target_modules(model))
    assert model.get_output_embeddings() is adapter.lm_head(model)
    assert model.get_input_embeddings() is adapter.embedding(model)
    blocks = sum(p.numel() for p in adapter.decoder_layers(model).parameters())
    norm = sum(p.numel() for p in adapter.final_norm(model).parameters())
    assert adapter.non_embedding_parameters(model) == blocks + norm
    embeddings = {id(p): p.numel() for m in (adapter.embedding(model), adapter.lm_head(model),
                                              adapter.position_embedding(model)) if m is not None
                  for p in m.parameters()}
    assert model.num_parameters() - adapter.non_embedding_parameters(model) == sum(embeddings.values())


def test_head_group_slices_match_hand_written_layouts():
    expected = {
        "llama": {"self_attn.q_proj": range(16, 32), "self_attn.k_proj": range(8, 16),
                  "self_attn.v_proj": range(8, 16), "self_attn.o_proj": range(16, 32)},
        "gpt2": {"attn.c_attn": [*range(8, 16), *range(40, 48), *range(72, 80)], "attn.c_proj": range(8, 16)},
        "gpt_neox": {"attention.query_key_value": range(24, 48), "attention.dense": range(8, 16)},
    }
    for arch, modules in expected.items():
        model = make_model(arch)
        adapter = get_adapter(model)
        slices = adapter.head_group_slices(model, 2, [1])
        prefix = adapter.layer_hook_name(2) + "."
        assert {s.module.removeprefix(prefix): s.index.tolist() for s in slices} == {k: list(v) for k, v in modules.items()}
        assert [s.side for s in slices][-1] == "in"
        channels = adapter.mlp_channel_slices(model, 0, [3, 1])
        assert all(s.index.tolist() == [1, 3] for s in channels)


@pytest.mark.parametrize("arch", ARCHS)
def test_run_until_layer_equals_full_forward_hidden_states(arch):
    model = make_model(arch)
    ids, mask = batch()
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        for i in range(LAYERS - 1):  # the last entry has the final norm applied
            early = run_until_layer(model, ids, mask, i)
            assert early.shape == (2, 7, HIDDEN)
            torch.testing.assert_close(early, full[i + 1], rtol=0, atol=1e-6)
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, logits(model))
    assert run_until_layer(model, ids, mask, 0).requires_grad  # usable for Jacobians


# -- save / load ----------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip(arch, tmp_path, tokenizer):
    model = make_model(arch)
    save_model(model, tokenizer, tmp_path / "m")
    assert not (tmp_path / "m" / SHAPES_FILE).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    loaded = load_model(tmp_path / "m")
    assert not loaded.training and loaded.dtype == torch.float32
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=0)
    assert model_identity(loaded) == model_identity(model)
    with torch.no_grad():
        next(loaded.parameters()).add_(1e-3)
    assert model_identity(loaded) != model_identity(model)
    assert model_identity(make_model(arch, seed=1)) != model_identity(model)

    tok = load_tokenizer(tmp_path / "m")
    assert tok.pad_token == "<eos>" and tok.padding_side == "right"
    assert tok("the cat sat")["input_ids"] == tokenizer("the cat sat")["input_ids"]
    assert load_tokenizer(str(tmp_path / "m"), padding_side="left").padding_side == "left"


def test_save_replaces_an_existing_folder_atomically(tmp_path):
    model = make_model("llama")
    target = tmp_path / "m"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    save_model(model, None, target)
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    torch.testing.assert_close(logits(load_model(target)), logits(model), rtol=0, atol=0)


def _write_pruned(model, folder, drop_groups, drop_channels):
    """Slice the state dict by hand (kept units only) and write config, weights and shapes."""
    adapter = get_adapter(model)
    state = {k: v for k, v in model.state_dict().items() if k not in model.all_tied_weights_keys}
    shapes = layer_shapes(model)
    for i in range(LAYERS):
        groups = [g for g in range(adapter.num_head_groups(model, i)) if g not in drop_groups.get(i, [])]
        channels = [c for c in range(INTER) if c not in drop_channels.get(i, [])]
        for piece in adapter.head_group_slices(model, i, groups) + adapter.mlp_channel_slices(model, i, channels):
            weight = piece.module + ".weight"
            state[weight] = state[weight].index_select(piece.weight_dim, piece.index)
            bias = state.get(piece.module + ".bias")
            if piece.side == "out" and bias is not None:
                state[piece.module + ".bias"] = bias.index_select(0, piece.index)
        n_rep = shapes[i]["num_heads"] // shapes[i]["num_kv_heads"]  # 1 without GQA: a group is a head
        shapes[i] = {"num_heads": len(groups) * n_rep, "num_kv_heads": len(groups), "intermediate_size": len(channels)}
    folder.mkdir()
    model.config.save_pretrained(folder)
    save_file({k: v.contiguous().clone() for k, v in state.items()}, folder / "model.safetensors")
    (folder / SHAPES_FILE).write_text(json.dumps({"layers": shapes}))
    return shapes


def _masked_logits(model, arch, drop_groups, drop_channels):
    """The original model with the dropped heads' outputs and channels zeroed before the output projections."""
    n_rep, head_dim = HEADS // KV_HEADS[arch], HEAD_DIMS.get(arch, HEAD_DIM)
    layers = get_adapter(model).decoder_layers(model)
    handles = []

    def zero(features):
        def hook(module, args):
            x = args[0].clone()
            x[..., features] = 0
            return (x,)
        return hook

    for i, groups in drop_groups.items():
        heads = [h for g in groups for h in range(g * n_rep, (g + 1) * n_rep)]
        features = [h * head_dim + d for h in heads for d in range(head_dim)]
        handles.append(layers[i].get_submodule(O_PROJ[FAMILY[arch]]).register_forward_pre_hook(zero(features)))
    for i, channels in drop_channels.items():
        handles.append(layers[i].get_submodule(DOWN_PROJ[FAMILY[arch]]).register_forward_pre_hook(zero(channels)))
    try:
        return logits(model)
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("arch", ARCHS)
def test_non_uniform_shapes_load_and_match_masking(arch, tmp_path):
    model = make_model(arch)
    drop_groups, drop_channels = {0: [1]}, {1: [0, 5, 7, 30]}
    shapes = _write_pruned(model, tmp_path / "hand", drop_groups, drop_channels)
    assert not shapes_are_uniform(shapes)
    pruned = load_model(tmp_path / "hand")
    assert layer_shapes(pruned) == shapes
    masked = _masked_logits(model, arch, drop_groups, drop_channels)
    assert (masked - logits(model)).abs().max() > 1e-2  # the oracle really removes something
    torch.testing.assert_close(logits(pruned), masked, rtol=1e-5, atol=1e-5)
    ids, mask = batch()
    with torch.no_grad():
        hidden = pruned(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        torch.testing.assert_close(run_until_layer(pruned, ids, mask, 1), hidden[2], rtol=0, atol=1e-6)

    save_model(pruned, None, tmp_path / "saved", shapes=shapes)
    assert json.loads((tmp_path / "saved" / SHAPES_FILE).read_text())["layers"] == shapes
    reloaded = load_model(tmp_path / "saved")
    torch.testing.assert_close(logits(reloaded), logits(pruned), rtol=0, atol=0)
    assert model_identity(reloaded) == model_identity(pruned) != model_identity(model)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_pruning_query_heads_within_gqa_groups_updates_the_group_size(arch, tmp_path):
    """Dropping query heads 1 and 3 of layer 0 (one per KV head) halves num_key_value_groups."""
    model = make_model(arch)
    state = dict(model.state_dict())
    keep = torch.tensor([h * HEAD_DIM + d for h in (0, 2) for d in range(HEAD_DIM)])
    for name, dim in [("q_proj.weight", 0), ("q_proj.bias", 0), ("o_proj.weight", 1)]:
        key = f"model.layers.0.self_attn.{name}"
        if key in state:
            state[key] = state[key].index_select(dim, keep)
    adapter = get_adapter(model)
    assert [p.index.tolist() for p in adapter.query_head_slices(model, 0, [0, 2])] == [keep.tolist()] * 2
    shapes = layer_shapes(model)
    shapes[0] = {"num_heads": 2, "num_kv_heads": 2, "intermediate_size": INTER}
    folder = tmp_path / "hand"
    folder.mkdir()
    model.config.save_pretrained(folder)
    save_file({k: v.contiguous().clone() for k, v in state.items()}, folder / "model.safetensors")
    (folder / SHAPES_FILE).write_text(json.dumps({"layers": shapes}))
    pruned = load_model(folder)
    assert pruned.model.layers[0].self_attn.num_key_value_groups == 1
    assert pruned.model.layers[1].self_attn.num_key_value_groups == 2
    handle = model.model.layers[0].self_attn.o_proj.register_forward_pre_hook(
        lambda module, args: (args[0] * torch.isin(torch.arange(HEADS * HEAD_DIM), keep),))
    try:
        masked = logits(model)
    finally:
        handle.remove()
    torch.testing.assert_close(logits(pruned), masked, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_uniform_pruned_model_is_stock_loadable_when_the_config_can_say_so(arch, tmp_path):
    model = make_model(arch)
    drop_channels = {i: [2, 3, 11] for i in range(LAYERS)}
    drop_groups = {i: [0] for i in range(LAYERS)} if FAMILY[arch] == "llama" else {}
    _write_pruned(model, tmp_path / "hand", drop_groups, drop_channels)
    pruned = load_model(tmp_path / "hand")
    save_model(pruned, None, tmp_path / "saved")
    assert not (tmp_path / "saved" / SHAPES_FILE).exists()
    stock = AutoModelForCausalLM.from_pretrained(tmp_path / "saved").eval()
    torch.testing.assert_close(logits(stock), logits(pruned), rtol=0, atol=0)
    assert model_identity(stock) == model_identity(pruned)


def test_pruned_heads_that_the_config_cannot_describe_get_a_shapes_file(tmp_path):
    model = make_model("gpt2")
    _write_pruned(model, tmp_path / "hand", {i: [3] for i in range(LAYERS)}, {})
    save_model(load_model(tmp_path / "hand"), None, tmp_path / "saved")
    assert (tmp_path / "saved" / SHAPES_FILE).exists()
    assert layer_shapes(load_model(tmp_path / "saved"))[0]["num_heads"] == HEADS - 1


# -- bad inputs -----------------------------------------------------------------------------------


def test_missing_default_model_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setattr(lm, "DEFAULT_MODEL_DIR", tmp_path / "absent")
    with pytest.raises(FinescopeError) as excinfo:
        load_model()
    assert_one_sentence(excinfo, "finescope train-base", tmp_path / "absent")


def test_nonexistent_path(tmp_path):
    with pytest.raises(FinescopeError) as excinfo:
        load_model(tmp_path / "nope")
    assert_one_sentence(excinfo, tmp_path / "nope")


def test_folder_without_config(tmp_path):
    with pytest.raises(FinescopeError) as excinfo:
        load_model(tmp_path)
    assert_one_sentence(excinfo, tmp_path, "config.json")


def test_folder_without_safetensors(tmp_path):
    make_model("llama").config.save_pretrained(tmp_path)
    with pytest.raises(FinescopeError) as excinfo:
        load_model(tmp_path)
    assert_one_sentence(excinfo, tmp_path, "safetensors")


def test_bert_is_not_a_causal_lm(tmp_path):
    BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=INTER).save_pretrained(tmp_path)
    with pytest.raises(FinescopeError) as excinfo:
        load_model(tmp_path)
    assert_one_sentence(excinfo, tmp_path, "'bert'", "causal")


def test_unknown_architecture_names_the_supported_ones(tmp_path):
    config = OPTConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=2, ffn_dim=INTER)
    config.save_pretrained(tmp_path)
    with pytest.raises(FinescopeError) as excinfo:
        load_model(tmp_path)
    assert_one_sentence(excinfo, tmp_path, "'opt'", "gpt2", "gpt_neox", "llama", "mistral", "qwen2")
    with pytest.raises(FinescopeError) as excinfo:
        get_adapter(config)
    assert_one_sentence(excinfo, "'opt'", "llama")


@pytest.mark.parametrize("loader", [load_model, load_tokenizer])
def test_hub_id_offline(loader):
    with pytest.raises(FinescopeError) as excinfo:
        loader("no-such-org/no-such-model")
    assert_one_sentence(excinfo, "no-such-org/no-such-model", "offline")


def test_bad_arguments(tmp_path):
    model = make_model("llama")
    ids, mask = batch()
    for layer in (-1, LAYERS, "1"):
        with pytest.raises(FinescopeError) as excinfo:
            run_until_layer(model, ids, mask, layer)
        assert_one_sentence(excinfo, repr(layer))
    with pytest.raises(FinescopeError) as excinfo:
        save_model(model, None, tmp_path / "m", shapes=[{"num_heads": 1, "num_kv_heads": 1, "intermediate_size": 1}])
    assert_one_sentence(excinfo, "shapes")
    with pytest.raises(FinescopeError) as excinfo:
        load_model(tmp_path, dtype="float32")
    assert_one_sentence(excinfo, "'float32'")
    with pytest.raises(FinescopeError) as excinfo:
        load_tokenizer(tmp_path, padding_side="middle")
    assert_one_sentence(excinfo, "'middle'")


def test_malformed_shapes_file(tmp_path):
    save_model(make_model("llama"), None, tmp_path / "m")
    (tmp_path / "m" / SHAPES_FILE).write_text(json.dumps({"layers": [{"num_heads": 4}]}))
    with pytest.raises(FinescopeError) as excinfo:
        load_model(tmp_path / "m")
    assert_one_sentence(excinfo, SHAPES_FILE)
    shape = {"num_heads": 3, "num_kv_heads": 2, "intermediate_size": INTER}
    (tmp_path / "m" / SHAPES_FILE).write_text(json.dumps({"layers": [shape] * LAYERS}))
    with pytest.raises(FinescopeError) as excinfo:
        load_model(tmp_path / "m")
    assert_one_sentence(excinfo, SHAPES_FILE, "num_heads")


def test_weights_that_do_not_fit_are_an_error_not_random_init(tmp_path):
    model = make_model("llama")
    save_model(model, None, tmp_path / "m")
    shapes = [{"num_heads": HEADS, "num_kv_heads": 2, "intermediate_size": 40}] * LAYERS
    (tmp_path / "m" / SHAPES_FILE).write_text(json.dumps({"layers": shapes}))
    with pytest.raises(FinescopeError) as excinfo:
        load_model(tmp_path / "m")
    assert_one_sentence(excinfo, tmp_path / "m")
    (tmp_path / "m" / SHAPES_FILE).unlink()
    state = {k: v.clone() for k, v in model.state_dict().items() if k != "model.norm.weight"}
    save_file(state, tmp_path / "m" / "model.safetensors")
    with pytest.raises(FinescopeError) as excinfo:
        load_model(tmp_path / "m")
    assert_one_sentence(excinfo, tmp_path / "m", "model.norm.weight")


def test_dtype_and_device(tmp_path):
    save_model(make_model("gpt2"), None, tmp_path / "m")
    assert load_model(tmp_path / "m", dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(FinescopeError) as excinfo:
        load_model(tmp_path / "m", device="nowhere")
    assert_one_sentence(excinfo, "'nowhere'")


def test_cuda_without_a_gpu_and_damaged_weights_are_one_sentence(tmp_path, monkeypatch):
    save_model(make_model("gpt2"), None, tmp_path / "m")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FinescopeError) as excinfo:
        load_model(tmp_path / "m", device="cuda")
    assert_one_sentence(excinfo, "no CUDA GPU")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a download cut short
    with pytest.raises(FinescopeError) as excinfo:
        load_model(tmp_path / "m")
    assert_one_sentence(excinfo, tmp_path / "m")
