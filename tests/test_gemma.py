"""Gemma 3 where it departs from Llama, on a tiny random model built like Gemma 3 270M: one key-value head per
block, head_dim stated apart from hidden / heads, q/k norms, sliding-window and global layers, a scaled embedding,
(1 + weight) norms and an optional soft-capped LM head. The shared tests (test_lm, test_prune,
test_importance_bounded) run the gemma3_text family of tests/tiny_models.py through everything else."""

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma3TextConfig

import tiny_models as tm
from finescope_nb.adapters import get_adapter
from finescope_nb.errors import FinescopeError
from finescope_nb.evaluate.choice import option_logprobs
from finescope_nb.evaluate.perplexity import token_nll
from finescope_nb.lm import layer_shapes, load_model, run_until_layer
from finescope_nb.logprobs import next_token_logprobs
from finescope_nb.prune import PruneConfig, apply_plan, compute_importance, plan_pruning, prune, save_pruned
from finescope_nb.prune.bounded import chunked_lm_loss

TEXTS = tm.texts(12, seed=3, min_words=8, max_words=20)
ALL_LAYERS = dict(first_layer=0, last_layer=tm.LAYERS - 1)


@pytest.fixture(scope="module")
def tok():
    return tm.tokenizer()


def gemma(kv_heads: int = 1, softcap: float | None = None, seed: int = 0):
    """A tiny Gemma 3 with one key-value head (as 270M has) and randomised norms."""
    torch.manual_seed(seed)
    config = Gemma3TextConfig(**{**tm.LLAMA_LIKE, "num_key_value_heads": kv_heads, "head_dim": 16, "query_pre_attn_scalar": 16,
                                 "sliding_window": 4, "layer_types": tm.GEMMA_LAYER_TYPES, "final_logit_softcapping": softcap})
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(0, 0.5)
    return model


def logits(model, tok, texts=TEXTS[:4]):
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    return out * enc["attention_mask"].unsqueeze(-1)


def one_sentence(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message and message.endswith("."), message
    for word in words:
        assert word in message, (word, message)


def test_the_adapter_reads_gemmas_own_head_dim_and_its_single_kv_group():
    model = gemma()
    adapter = get_adapter(model)
    assert adapter.head_dim(model) == 16 != tm.HIDDEN // tm.HEADS
    assert layer_shapes(model) == [{"num_heads": 4, "num_kv_heads": 1, "intermediate_size": tm.INTER}] * tm.LAYERS
    assert adapter.query_heads_by_group(model, 0) == [[0, 1, 2, 3]]
    attention = adapter.decoder_layers(model)[0].self_attn
    assert attention.q_norm.weight.shape == attention.k_norm.weight.shape == (16,)  # per head_dim, shared by the heads


def test_early_exit_and_the_embedding_reproduce_the_models_own_hidden_states(tok):
    model = gemma()
    adapter = get_adapter(model)
    enc = tok(TEXTS[:3], padding=True, return_tensors="pt")  # longer than the sliding window of 4 tokens
    assert enc["input_ids"].shape[1] > 4
    with torch.no_grad():
        full = model(**enc, output_hidden_states=True).hidden_states
        # the embedding module scales by sqrt(hidden) itself: what it returns is what the first block receives
        torch.testing.assert_close(adapter.embedding(model)(enc["input_ids"]), full[0], rtol=0, atol=0)
        assert not torch.allclose(full[0], torch.nn.functional.embedding(enc["input_ids"], adapter.embedding(model).weight))
        for layer in range(tm.LAYERS - 1):  # sliding, then global: each block gets its own mask and rotary table
            torch.testing.assert_close(run_until_layer(model, enc["input_ids"], enc["attention_mask"], layer), full[layer + 1],
                                       rtol=0, atol=0)


def test_the_final_norm_scale_is_one_plus_its_weight():
    model = gemma()
    adapter = get_adapter(model)
    x = torch.randn(5, tm.HIDDEN)
    normalised = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + model.config.rms_norm_eps)
    with torch.no_grad():
        torch.testing.assert_close(adapter.final_norm(model)(x), normalised * adapter.final_norm_scale(model))


def test_query_heads_are_pruned_and_the_only_kv_group_stays(tok):
    model = gemma()
    adapter = get_adapter(model)
    norms = {name: p.detach().clone() for name, p in model.named_parameters() if "q_norm" in name or "k_norm" in name}
    pruned, plan, _ = prune(model, tok, TEXTS, PruneConfig(ratio=0.3, head_unit="query", **ALL_LAYERS), progress=False)
    assert all(s["num_kv_heads"] == 1 for s in plan.shapes_after) and any(s["num_heads"] < 4 for s in plan.shapes_after)
    assert adapter.non_embedding_parameters(pruned) == plan.params_after
    for name, p in pruned.named_parameters():  # the q/k norms act per head_dim: carried through unchanged
        if name in norms:
            assert torch.equal(p, norms[name])
    for i, layer in enumerate(adapter.decoder_layers(pruned)):
        assert layer.self_attn.num_key_value_groups == plan.shapes_after[i]["num_heads"]
    # removing query heads equals zeroing their features before o_proj in the unpruned model
    handles = []
    for i, kept in plan.keep_heads.items():
        gone = [h for h in range(4) if h not in kept]
        index = torch.tensor([h * 16 + d for h in gone for d in range(16)], dtype=torch.long)

        def zero(module, args, index=index):
            x = args[0].clone()
            x[..., index] = 0
            return (x,)
        handles.append(adapter.decoder_layers(model)[i].self_attn.o_proj.register_forward_pre_hook(zero))
        gone_channels = torch.tensor([c for c in range(tm.INTER) if c not in plan.keep_channels[i]], dtype=torch.long)

        def zero_channels(module, args, index=gone_channels):
            x = args[0].clone()
            x[..., index] = 0
            return (x,)
        handles.append(adapter.decoder_layers(model)[i].mlp.down_proj.register_forward_pre_hook(zero_channels))
    try:
        masked = logits(model, tok)
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(logits(pruned, tok), masked, rtol=1e-4, atol=1e-5)


def test_head_groups_never_remove_the_only_kv_group(tok, tmp_path):
    model = gemma()
    config = PruneConfig(ratio=0.3, head_unit="group", **ALL_LAYERS)
    pruned, plan, scores = prune(model, tok, TEXTS, config, progress=False)
    assert all(s["num_heads"] == 4 and s["num_kv_heads"] == 1 for s in plan.shapes_after)  # only MLP channels went
    assert abs(plan.removed_fraction - 0.3) < 0.05
    reloaded = load_model(save_pruned(pruned, tok, tmp_path / "pruned", plan, config))
    torch.testing.assert_close(logits(reloaded, tok), logits(pruned, tok), rtol=0, atol=0)

    by_hand = plan_pruning(model, scores, config)
    by_hand.keep_heads[1] = []
    with pytest.raises(FinescopeError) as excinfo:
        apply_plan(model, by_hand)
    one_sentence(excinfo, "block 1", "only key-value group", "head_unit='query'")

    uniform = PruneConfig(ratio=0.1, scope="uniform", num_heads=2, **ALL_LAYERS)
    with pytest.raises(FinescopeError) as excinfo:
        plan_pruning(model, compute_importance(model, tok, TEXTS, uniform, progress=False), uniform)
    one_sentence(excinfo, "num_heads=2", "only KV head", "head_unit='query'", "valid counts are 4")


def test_the_budget_share_of_the_whole_model_is_in_the_plan_and_the_report(tok, tmp_path):
    from types import SimpleNamespace

    from finescope_nb.report import _prune_section

    model = gemma()
    config = PruneConfig(ratio=0.2, head_unit="query", **ALL_LAYERS)
    pruned, plan, _ = prune(model, tok, TEXTS, config, progress=False)
    adapter = get_adapter(model)
    total = sum(p.numel() for p in model.parameters())  # the LM head is tied: counted once
    assert plan.params_total_before == total == model.num_parameters()
    assert plan.budget_share == adapter.non_embedding_parameters(model) / total
    save_pruned(pruned, tok, tmp_path / "prune" / "model", plan, config)
    section = _prune_section(SimpleNamespace(stages={"prune": tmp_path / "prune"}), lambda figure: "")
    assert f"({plan.budget_share:.0%} of the whole model&#x27;s {total:,}" in section


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_sliced_log_probabilities_equal_the_models_own(softcap, tok):
    model = gemma(softcap=softcap)
    enc = tok(TEXTS[:4], padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        full = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        expected = full[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1) * mask[:, 1:]
        torch.testing.assert_close(next_token_logprobs(model, ids, mask, chunk_positions=3), expected, rtol=1e-5, atol=1e-6)
        sequences = [row[row_mask.bool()].tolist() for row, row_mask in zip(ids, mask)]
        total, count = token_nll(model, sequences, batch_size=2, pad_id=1)
        assert count == int(mask[:, 1:].sum())
        torch.testing.assert_close(torch.tensor(total), -expected.sum(), rtol=1e-5, atol=1e-4)
        contexts, options = [sequences[0][:4]], [[sequences[0][4:6], sequences[1][4:6]]]
        scores = option_logprobs(model, contexts, options, pad_id=1)
        torch.testing.assert_close(torch.tensor(scores[0][0]), expected[0, 3:5].sum().double(), rtol=1e-5, atol=1e-5)
    labels = ids.masked_fill(mask == 0, -100)
    torch.testing.assert_close(chunked_lm_loss(model, ids, mask, labels, chunk_positions=5),
                               model(input_ids=ids, attention_mask=mask, labels=labels).loss, rtol=1e-5, atol=1e-6)


def test_the_head_runs_only_where_a_score_is_wanted(tok, monkeypatch):
    from finescope_nb import logprobs

    model = gemma()
    enc = tok(TEXTS[:3], padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    wanted = torch.zeros(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool)
    wanted[:, 2:4] = True
    rows = []
    head = logprobs._slice_logprobs
    monkeypatch.setattr(logprobs, "_slice_logprobs", lambda adapter, m, r, t: rows.append(len(r)) or head(adapter, m, r, t))
    with torch.no_grad():
        every = logprobs.next_token_logprobs(model, ids, mask)
        assert sum(rows) == int(mask[:, 1:].sum())
        rows.clear()
        some = logprobs.next_token_logprobs(model, ids, mask, wanted=wanted)
    assert sum(rows) == int((wanted & mask[:, 1:].bool()).sum())  # the head saw the wanted rows only
    torch.testing.assert_close(some[wanted & mask[:, 1:].bool()], every[wanted & mask[:, 1:].bool()], rtol=1e-5, atol=1e-6)
    assert not some[~wanted].any()


def test_lora_targets_every_projection_of_a_gemma_block():
    from peft import LoraConfig, get_peft_model

    model = gemma()
    adapter = get_adapter(model)
    targets = adapter.lora_target_modules(model)
    assert set(targets) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=targets))
    wrapped = {name.split(".lora_A")[0].rsplit(".", 1)[-1] for name, _ in peft_model.named_parameters() if "lora_A" in name}
    assert wrapped == set(targets)
    assert get_adapter(peft_model) is adapter and adapter.decoder_layers(peft_model)[0].self_attn.q_norm is not None


def test_the_multimodal_gemma3_is_refused_in_one_sentence(tmp_path):
    with pytest.raises(FinescopeError) as excinfo:
        get_adapter("gemma3")
    one_sentence(excinfo, "multimodal", "'gemma3_text'", "gemma3-270m")
    (tmp_path / "config.json").write_text('{"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"]}')
    with pytest.raises(FinescopeError) as excinfo:
        load_model(tmp_path)
    one_sentence(excinfo, "multimodal", "'gemma3_text'")


@pytest.mark.parametrize("kd_weight", [0.0, 0.4])
def test_sliced_fine_tuning_loss_and_gradient_equal_the_whole_logit_ones(kd_weight, tok):
    """Fine-tuning with Gemma's vocabulary forms its logits in slices (distill.finetune); the loss and the
    gradient must be the whole-logit ones, through the soft-capped head and the teacher's KL alike."""
    from finescope_nb.distill import collate, encode_pairs
    from finescope_nb.distill.finetune import _loss
    from finescope_nb.logprobs import response_loss

    teacher, student = gemma(softcap=5.0, seed=0), gemma(softcap=5.0, seed=1).train()
    prompts, responses = [t[:15] for t in TEXTS[:4]], TEXTS[4:8]
    batch = collate(encode_pairs(tok, prompts, responses, 48), 1)
    whole = lambda: _loss(student, teacher, batch, kd_weight, sliced=False)  # noqa: E731
    # slices of 3 positions, so rows, targets and the teacher's rows must line up across many slice boundaries
    sliced = lambda: response_loss(student, batch["input_ids"], batch["attention_mask"], batch["labels"],  # noqa: E731
                                   teacher, kd_weight, chunk_positions=3)
    grads = []
    for loss_of in (whole, sliced):
        student.zero_grad()
        loss = loss_of()
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in student.parameters()]))
    (whole, whole_grads), (sliced_loss, sliced_grads) = grads
    torch.testing.assert_close(sliced_loss, whole, rtol=1e-5, atol=1e-6)
    for a, b in zip(whole_grads, sliced_grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
