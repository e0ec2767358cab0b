"""The recovery stage on tiny models: splitting, the filter, masking, LoRA, live curves, failure modes."""

import importlib

import numpy as np
import pandas as pd
import pytest
import torch

import tiny_models as tm
from interrupts import Calls, Interrupt
from finescope_nb.distill import (Example, FinetuneConfig, agreement, check_same_tokenizer, collate, encode_pairs,
                                  filter_responses, final_answer, finetune, keep_rate_curve, lora_targets, prepare, run_arm,
                                  split_examples, word_f1)
from finescope_nb.distill.teacher import regenerate
from finescope_nb.errors import FinescopeError
from finescope_nb.evaluate import retained
from finescope_nb.viz.distill_plots import RecoveryCurves

TEXTS = tm.texts(16, seed=4, min_words=10, max_words=24)


@pytest.fixture(scope="module")
def tok():
    return tm.tokenizer()


def assert_one_sentence(excinfo, *names):
    message = str(excinfo.value)
    assert "\n" not in message and message.endswith("."), message
    for name in names:
        assert str(name) in message, (name, message)


def test_records_with_fields_keep_them_and_free_text_is_cut_into_exact_halves(tok):
    records = [{"id": "p", "prompt": "What is 2+2?", "response": "It is 4."}, {"id": "t", "text": TEXTS[0]}]
    fielded, cut = split_examples(records, tok, max_prompt_tokens=5, max_response_tokens=4)
    assert fielded == Example("What is 2+2?", "It is 4.", "p", structured=True) and not cut.structured
    assert TEXTS[0].startswith(cut.prompt + cut.response)
    assert len(tok(cut.prompt, add_special_tokens=False)["input_ids"]) == 5
    assert len(tok(cut.response, add_special_tokens=False)["input_ids"]) == 4


def test_filter_keeps_agreeing_teacher_responses_and_falls_back_elsewhere():
    examples = [Example("q1", "so the answer is 12", structured=True), Example("q2", "#### 7", structured=True),
                Example("t", "the water was very long"), Example("u", "the water was very long"),
                Example("v", "then x is 12 and", structured=False)]
    teacher = ["we get 12", "the answer is 8", "the water was long", "people made words", "so we get 12"]
    responses, kept, scores = filter_responses(examples, teacher, "math", threshold=0.5)
    assert kept.tolist() == [True, False, True, False, False]  # prose cut mid-text is judged by words, not its last number
    assert responses == ["we get 12", "#### 7", "the water was long", "the water was very long", "then x is 12 and"]
    assert final_answer("x = 1,200.") == final_answer("1200") and final_answer("no digits") is None
    assert word_f1("a b c", "a b c") == 1.0 and word_f1("a", "b") == 0.0
    assert agreement("the answer is 3", "3", math=False) < 1.0 == agreement("the answer is 3", "3", math=True)
    curve = keep_rate_curve(scores, [0.0, 0.5, 1.01])
    assert curve["keep_rate"].tolist() == [1.0, 0.4, 0.0]


def test_prompt_tokens_carry_no_loss(tok):
    pairs = encode_pairs(tok, ["the cat", "a"], ["sat on it", "dog was here now"], max_length=64)
    batch = collate(pairs, pad_id=1)
    for row, (ids, n_prompt) in enumerate(pairs):
        assert (batch["labels"][row, :n_prompt] == -100).all()
        assert batch["labels"][row, n_prompt:len(ids)].tolist() == ids[n_prompt:]
        assert (batch["labels"][row, len(ids):] == -100).all()
    model = tm.make_model("llama")
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch["input_ids"][:, 1:], reduction="none")
        response = torch.zeros_like(nll, dtype=torch.bool)
        for row, (ids, n_prompt) in enumerate(pairs):
            response[row, n_prompt - 1: len(ids) - 1] = True  # position t predicts token t + 1
        assert float(model(**batch).loss) == pytest.approx(float(nll[response].mean()), rel=1e-5)
        assert float(nll[response].mean()) != pytest.approx(float(nll[batch["attention_mask"][:, 1:].bool()].mean()), rel=1e-3)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_lora_merge_equals_the_unmerged_model(arch, tok):
    from peft import LoraConfig, get_peft_model

    model = tm.make_model(arch)
    targets = lora_targets(model, None)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, fan_in_fan_out=arch == "gpt2"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)  # a trained-looking adapter, not the zero init
    enc = tok(TEXTS[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        unmerged = peft_model(**enc).logits
        merged = peft_model.merge_and_unload()(**enc).logits
    assert (unmerged - tm.make_model(arch)(**enc).logits).abs().max() > 1e-3
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_finetune_lowers_the_response_loss_and_logs_every_n_steps(method, tok):
    model = tm.make_model("llama")
    prompts, responses = [t[:20] for t in TEXTS], ["the water was very long"] * len(TEXTS)
    pairs = collate(encode_pairs(tok, prompts, responses, 64), 1)
    evaluate = lambda m: float(m(**pairs).loss)  # noqa: E731
    seen = []
    config = FinetuneConfig(method=method, steps=30, eval_every=10, lr=1e-2, batch_size=4)
    trained, history = finetune(model, tok, prompts, responses, config, evaluate=evaluate, callback=seen.append, progress=False)
    assert history["step"].tolist() == [r["step"] for r in seen] == [0, 10, 20, 30]
    assert history["val_loss"].tolist() == [r["val_loss"] for r in seen]
    assert history["val_loss"].iloc[-1] < 0.5 * history["val_loss"].iloc[0]
    assert type(trained) is type(model)  # LoRA merged back into a plain model
    assert evaluate(model) == pytest.approx(history["val_loss"].iloc[0])  # the student passed in is untouched


def test_live_curve_appends_points_in_place():
    curves = RecoveryCurves("math", unpruned_loss=3.0, pruned_loss=4.0, steps=20)
    callback = curves.callback("self_distill")
    callback({"step": 0, "train_loss": None, "val_loss": 4.0})
    callback({"step": 10, "train_loss": 3.9, "val_loss": 3.5})
    curves.callback("plain")({"step": 10, "train_loss": 3.9, "val_loss": 3.7})
    traces = {t.name: t for t in curves.figure.data}
    assert list(traces["self_distill"].x) == [0, 10] and list(traces["self_distill"].y) == [4.0, 3.5]
    assert list(traces["plain"].y) == [3.7]
    assert len(curves.figure.layout.shapes) == 2  # the unpruned and pruned levels


def test_nan_loss_stops_training_and_keeps_the_last_good_weights(tok):
    model = tm.make_model("llama")
    calls = {"n": 0}

    def poison(module, args, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 3 else output

    model.lm_head.register_forward_hook(poison)
    config = FinetuneConfig(method="full", steps=10, eval_every=5, batch_size=2)
    with pytest.warns(UserWarning, match="at step 3"):
        trained, history = finetune(model, tok, TEXTS[:4], TEXTS[4:8], config, progress=False)
    assert history.attrs["stopped"] and all(torch.isfinite(p).all() for p in trained.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(trained.parameters(), model.parameters()))  # steps 1-2 did train


def test_distribution_matching_pulls_the_student_toward_the_teacher(tok):
    from finescope_nb.distill.finetune import _loss

    teacher, student = tm.make_model("llama", seed=0), tm.make_model("llama", seed=1)
    prompts, responses = [t[:20] for t in TEXTS], TEXTS[::-1]
    batch = collate(encode_pairs(tok, prompts, responses, 64), 1)
    assert float(_loss(teacher, teacher, batch, 1.0)) == pytest.approx(0.0, abs=1e-6)  # KL of a model to itself
    before = float(_loss(student, teacher, batch, 1.0))
    config = FinetuneConfig(method="full", steps=20, eval_every=20, lr=3e-3, batch_size=4, kd_weight=1.0)
    trained, _ = finetune(student, tok, prompts, responses, config, progress=False, teacher=teacher)
    assert float(_loss(trained, teacher, batch, 1.0)) < 0.7 * before
    text_only, _ = finetune(student, tok, prompts, responses, config, progress=False)  # no teacher: kd_weight unused
    assert float(_loss(text_only, teacher, batch, 1.0)) > float(_loss(trained, teacher, batch, 1.0))
    with pytest.raises(FinescopeError, match="kd_weight must be between 0 and 1, got 1.5"):
        FinetuneConfig(kd_weight=1.5)


@pytest.mark.parametrize("arch,method", [("llama", "lora"), ("gpt2", "full")])  # GPT-2 trains with dropout on
def test_training_interrupted_mid_run_resumes_to_the_same_weights(arch, method, tok, tmp_path):
    prompts, responses = [t[:20] for t in TEXTS], TEXTS[::-1]
    config = FinetuneConfig(method=method, steps=8, eval_every=2, lr=1e-2, batch_size=3)
    evaluate = lambda m: float(m(**collate(encode_pairs(tok, prompts, responses, 64), 1)).loss)  # noqa: E731
    straight, straight_history = finetune(tm.make_model(arch), tok, prompts, responses, config, evaluate=evaluate, progress=False)

    def stop_at_6(record):
        if record["step"] == 6:
            raise Interrupt

    ckpt = tmp_path / "finetune.pt"
    with pytest.raises(Interrupt):
        finetune(tm.make_model(arch), tok, prompts, responses, config, evaluate=evaluate, callback=stop_at_6,
                 progress=False, checkpoint=ckpt)
    assert torch.load(ckpt, weights_only=True)["step"] == 4  # the last evaluation before the interruption
    replayed = []
    resumed, history = finetune(tm.make_model(arch), tok, prompts, responses, config, evaluate=evaluate,
                                callback=replayed.append, progress=False, checkpoint=ckpt)
    assert [r["step"] for r in replayed] == [0, 2, 4, 6, 8]  # the saved history replays to the live curve, then training goes on
    pd.testing.assert_frame_equal(history, straight_history)
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not ckpt.exists()  # a finished training leaves no checkpoint behind


def test_teacher_resumes_after_the_last_saved_chunk(tok, tmp_path, monkeypatch):
    import finescope_nb.distill.teacher as teacher_mod

    teacher = tm.make_model("llama")
    examples = split_examples([{"text": t} for t in TEXTS * 3], tok, max_prompt_tokens=6, max_response_tokens=5)
    full = regenerate(teacher, tok, examples, max_new_tokens=4, batch_size=2, progress=False)
    real = teacher_mod.continue_texts
    monkeypatch.setattr(teacher_mod, "continue_texts", Calls(real, fail_on=2))  # dies in the second chunk
    ckpt = tmp_path / "teacher.json"
    with pytest.raises(Interrupt):
        regenerate(teacher, tok, examples, max_new_tokens=4, batch_size=2, progress=False, checkpoint=ckpt)
    calls = Calls(real)
    monkeypatch.setattr(teacher_mod, "continue_texts", calls)
    assert regenerate(teacher, tok, examples, max_new_tokens=4, batch_size=2, progress=False, checkpoint=ckpt) == full
    assert calls.count == -(-len(examples) // 8) - 1  # every chunk but the first, which was saved


def test_prepare_and_arms_on_a_tiny_teacher(tok):
    teacher = tm.make_model("llama")
    data = prepare(teacher, tok, [{"text": t} for t in TEXTS[:6]], [{"text": t} for t in TEXTS[6:12]], "stem",
                   threshold=0.0, max_prompt_tokens=6, max_response_tokens=5, progress=False)
    assert len(data.regenerated) == 6 and data.keep_rate == 1.0  # threshold 0 keeps every teacher response
    assert data.pairs("self_distill")[1] == data.regenerated and data.pairs("plain")[1] == [e.response for e in data.examples]
    student, history = run_arm(teacher, tok, data, "none", FinetuneConfig())
    assert student is teacher and history.empty
    trained, history = run_arm(teacher, tok, data, "random", FinetuneConfig(method="full", steps=3, eval_every=3), progress=False)
    assert history["step"].tolist() == [0, 3]
    assert retained(2.0, 2.0) == 1.0 and retained(2.5, 2.0) == pytest.approx(np.exp(-0.5))


# -- bad input ------------------------------------------------------------------------------------


def test_empty_curated_set(tok):
    with pytest.raises(FinescopeError) as excinfo:
        split_examples([], tok)
    assert_one_sentence(excinfo, "curated set is empty")


def test_lora_targets_the_pruned_model_lacks(tok):
    with pytest.raises(FinescopeError) as excinfo:
        lora_targets(tm.make_model("gpt2"), ["q_proj"])
    assert_one_sentence(excinfo, "q_proj", "c_attn")


def test_response_mask_that_leaves_nothing_to_train(tok):
    with pytest.raises(FinescopeError) as excinfo:
        encode_pairs(tok, [" ".join(["the"] * 20)], ["cat"], max_length=8)
    assert_one_sentence(excinfo, "max_length=8", "response")


def test_teacher_and_student_with_different_tokenizers(tok):
    check_same_tokenizer(tok, tm.tokenizer())  # equal vocabularies are fine
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0, "x": 1}, unk_token="[UNK]")))
    with pytest.raises(FinescopeError) as excinfo:
        check_same_tokenizer(tok, other)
    assert_one_sentence(excinfo, "different tokenizers")


def test_unknown_method_and_arm(tok):
    with pytest.raises(FinescopeError) as excinfo:
        FinetuneConfig(method="qlora")
    assert_one_sentence(excinfo, "qlora", "lora")
    data = prepare(tm.make_model("llama"), tok, [{"text": TEXTS[0]}], [{"text": TEXTS[1]}], "stem", progress=False)
    with pytest.raises(FinescopeError) as excinfo:
        run_arm(tm.make_model("llama"), tok, data, "kd", FinetuneConfig())
    assert_one_sentence(excinfo, "kd", "self_distill")


CHAT = "{% for m in messages %}<|endoftext|> {{ m['role'] }} {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}assistant{% endif %}"


def test_rewrite_mode_needs_a_chat_template(tok):
    from finescope_nb.distill.teacher import check_mode

    with pytest.raises(FinescopeError) as excinfo:
        check_mode("rewrite", tok)
    assert_one_sentence(excinfo, "chat template", "teacher_mode='continue'")
    with pytest.raises(FinescopeError) as excinfo:
        FinetuneConfig(teacher_mode="paraphrase")
    assert_one_sentence(excinfo, "continue, rewrite")


def test_chat_prompts_keep_the_order_and_skip_the_added_special_tokens(monkeypatch):
    import copy

    import finescope_nb.distill.teacher as teacher_mod
    from finescope_nb.distill.teacher import teacher_prompts

    chat_tok = copy.deepcopy(tm.tokenizer())
    chat_tok.chat_template = CHAT
    teacher = tm.make_model("llama")
    examples = [Example("what is the time", "it was", structured=i % 2 == 0) for i in range(5)]
    prompts, formatted = teacher_prompts(chat_tok, examples, "continue")
    assert formatted == [True, False, True, False, True] and prompts[1] == "what is the time"
    assert prompts[0].endswith("assistant") and "user what is the time" in prompts[0]
    seen = []
    real = teacher_mod.continue_texts

    def spy(model, tokenizer, texts, **kw):
        seen.append((list(texts), kw["add_special_tokens"]))
        return real(model, tokenizer, texts, **kw)

    monkeypatch.setattr(teacher_mod, "continue_texts", spy)
    out = regenerate(teacher, chat_tok, examples, max_new_tokens=3, batch_size=2, progress=False)
    assert seen == [(prompts[1::2], True), (prompts[0::2], False)]  # chat prompts already carry their special tokens
    from finescope_nb.generate import continue_texts

    assert out[1] == continue_texts(teacher, chat_tok, [prompts[1]], max_new_tokens=3)[0]
    assert out[0] == continue_texts(teacher, chat_tok, [prompts[0]], max_new_tokens=3, add_special_tokens=False)[0]
    rewrite, flags = teacher_prompts(chat_tok, examples[:1], "rewrite")
    assert flags == [True] and "Continuation:\nit was" in rewrite[0] and "Rewrite the continuation" in rewrite[0]


def test_fine_tuning_with_sliced_logits_trains_the_same_weights(tok, monkeypatch):
    """Under WHOLE_LOGITS_ELEMENTS the loss forms logits a slice at a time; the trained model is the same."""
    finetune_module = importlib.import_module("finescope_nb.distill.finetune")  # the package exports the function
    teacher, student = tm.make_model("llama", seed=0), tm.make_model("llama", seed=1)
    prompts, responses = [t[:20] for t in TEXTS], TEXTS[::-1]
    config = FinetuneConfig(method="lora", steps=4, eval_every=4, lr=3e-3, batch_size=4, kd_weight=0.5)
    whole, _ = finetune(student, tok, prompts, responses, config, progress=False, teacher=teacher)
    monkeypatch.setattr(finetune_module, "WHOLE_LOGITS_ELEMENTS", 0)
    monkeypatch.setattr(finetune_module, "response_loss", Calls(finetune_module.response_loss))
    sliced, _ = finetune(student, tok, prompts, responses, config, progress=False, teacher=teacher)
    assert finetune_module.response_loss.count == config.steps
    for a, b in zip(whole.parameters(), sliced.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
