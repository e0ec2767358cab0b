import math

import numpy as np
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


def test_stratified_pick_gives_each_source_its_share_in_stored_order_and_is_seeded():
    from finescope_nb.evaluate import pick_documents

    rows = [{"id": i, "source": "a"} for i in range(60)] + [{"id": 60 + i, "source": "b"} for i in range(30)] \
        + [{"id": 90 + i, "source": "c"} for i in range(10)]
    assert [r["id"] for r in pick_documents(rows, 10)] == list(range(10))  # first: one source only
    picked = pick_documents(rows, 10, "stratified", seed=0)
    assert [r["source"] for r in picked] == ["a"] * 6 + ["b"] * 3 + ["c"]  # 60/30/10 of 10, in stored order
    assert [r["id"] for r in picked] == sorted(r["id"] for r in picked)
    assert pick_documents(rows, 10, "stratified", seed=0) == picked
    assert pick_documents(rows, 10, "stratified", seed=1) != picked
    assert len(pick_documents(rows, 7, "stratified")) == 7  # remainders fill the count exactly
    assert pick_documents(rows, None, "stratified") == rows == pick_documents(rows, 500, "stratified")
    with pytest.raises(FinescopeError, match="Unknown held-out pick 'middle'; choose one of first, stratified"):
        pick_documents(rows, 10, "middle")


def test_the_stratified_math_validation_pick_is_not_all_competition_problems():
    """The embedded validation split opens math with competition problems only; the stratified pick mixes in the
    templated ones in proportion (88 of 220 documents)."""
    from finescope_nb.evaluate import heldout_documents

    cfg = EvalConfig(split="validation", domains=("math",), max_docs_per_domain=30)
    assert {r["source"] for r in heldout_documents(cfg)["math"]} == {"math_test"}
    sources = [r["source"] for r in heldout_documents(cfg, "stratified")["math"]]
    assert sources.count("mathematics_dataset") == 12 and sources.count("math_test") == 18


# -- multiple choice, cloze and the metric registry --------------------------------------------------------


def test_option_scores_equal_a_hand_computation_and_ignore_padding(tiny):
    from finescope_nb.evaluate.choice import option_logprobs

    model, _ = tiny
    contexts, options = [[5, 6, 7], [8, 9]], [[[10, 11], [12]], [[13, 14, 15], [16, 17]]]
    scores = option_logprobs(model, contexts, options, pad_id=0, batch_size=3)
    for context, opts, got in zip(contexts, options, scores):
        for option, value in zip(opts, got):
            ids = torch.tensor([context + option])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0], -1)
            want = sum(float(logp[len(context) - 1 + i, tok]) for i, tok in enumerate(option))
            assert value == pytest.approx(want, abs=1e-4)


def test_cloze_items_hide_the_true_continuation_among_same_length_distractors():
    from finescope_nb.evaluate.cloze import make_items

    docs = [[d * 100 + i for i in range(80)] for d in range(10)]  # token values say which document they came from
    items = make_items(docs, context_tokens=48, continuation_tokens=16, seed=3)
    assert len(items) == 10 and {it.answer for it in items} > {0}
    for it in items:
        assert len(it.options) == 4 and all(len(o) == 16 for o in it.options)
        truth = it.options[it.answer]
        assert truth[0] == it.context[-1] + 1 and truth[0] // 100 == it.doc  # the context's own continuation
        others = [o[0] // 100 for j, o in enumerate(it.options) if j != it.answer]
        assert it.doc not in others and len(set(others)) == 3  # three other documents
    assert [it.answer for it in make_items(docs, seed=3)] == [it.answer for it in items]  # reproducible from the seed
    with pytest.raises(FinescopeError, match="Only 2 held-out documents have 64 tokens"):
        make_items(docs[:2] + [[1, 2, 3]], seed=0)


def test_accuracy_is_perfect_for_an_oracle_and_near_chance_for_noise():
    from finescope_nb.evaluate.choice import accuracy

    rng = np.random.default_rng(0)
    answers = rng.integers(0, 4, 400)
    assert accuracy([np.eye(4)[a] for a in answers], answers) == 1.0
    assert abs(accuracy([rng.normal(size=4) for _ in answers], answers) - 0.25) < 0.06


def test_the_embedded_model_follows_math_passages_and_a_random_one_does_not():
    from finescope_nb.evaluate.cloze import cloze_accuracy, domain_items
    from finescope_nb.lm import load_model, load_tokenizer

    model, tok = load_model(), load_tokenizer()
    items = domain_items(tok, "math", limit=60, seed=0)
    assert len(items) == 60
    assert cloze_accuracy(model, items, tok.pad_token_id) > 0.45  # measured 0.68 on all 216 items; chance is 0.25
    torch.manual_seed(0)
    scrambled = LlamaForCausalLM(model.config).eval()  # same shapes, random weights
    assert abs(cloze_accuracy(scrambled, items, tok.pad_token_id) - 0.25) < 0.2


def test_evaluate_runs_the_choice_metrics_with_their_chance_levels(tiny):
    from finescope_nb.evaluate import evaluate

    model, tok = tiny
    df = evaluate(model, tok, ["cloze", "mmlu", "arc"], domains=["stem", "math"], limit=3)
    assert list(df.columns[:7]) == ["metric", "domain", "group", "n", "score", "chance", "higher_is_better"]
    assert set(df["metric"]) == {"cloze", "mmlu", "arc"} and (df["n"] <= 3).all() and df["score"].between(0, 1).all()
    assert set(df[df["metric"] == "arc"]["group"]) == {"easy", "challenge"}
    assert df[df["metric"] == "mmlu"]["group"].tolist() == ["stem"]  # only the categories asked for
    assert (df[df["metric"].isin(["cloze", "mmlu", "arc"])]["chance"] == 0.25).all()


def test_bad_metric_domain_and_limit_are_refused(tiny):
    from finescope_nb.evaluate import evaluate

    model, tok = tiny
    with pytest.raises(FinescopeError, match="Unknown metric 'bleu'; known metrics are perplexity, cloze, mmlu, arc, gsm8k"):
        evaluate(model, tok, ["bleu"])
    with pytest.raises(FinescopeError, match="Unknown domain 'poetry'; known domains are stem"):
        evaluate(model, tok, ["cloze"], domains=["poetry"])
    with pytest.raises(FinescopeError, match="limit=0 leaves nothing"):
        evaluate(model, tok, ["cloze"], limit=0)
    with pytest.raises(FinescopeError, match="None of the metrics arc covers the domains code"):
        evaluate(model, tok, ["arc"], domains=["code"])


def test_retained_for_accuracy_counts_only_skill_above_chance():
    import pandas as pd

    from finescope_nb.evaluate import retained_accuracy
    from finescope_nb.evaluate.registry import retained_table

    assert retained_accuracy(0.55, 0.65, 0.25) == pytest.approx(0.75)
    with pytest.raises(FinescopeError, match="not above chance"):
        retained_accuracy(0.2, 0.25, 0.25)
    rows = [("cloze", "math", 400, 0.25, "base", 0.65), ("cloze", "math", 400, 0.25, "recovered", 0.55),
            ("mmlu", "stem", 40, 0.25, "base", 0.30), ("mmlu", "stem", 40, 0.25, "recovered", 0.20),
            ("gsm8k", "gsm8k", 10, 0.0, "base", 0.0), ("gsm8k", "gsm8k", 10, 0.0, "recovered", 0.0)]
    metrics = pd.DataFrame(rows, columns=["metric", "group", "n", "chance", "model", "score"])
    table = retained_table(metrics).set_index("metric")
    assert table.loc["cloze", "retained"] == pytest.approx(0.75) and table.loc["cloze", "above_chance"]
    assert not table.loc["mmlu", "above_chance"] and np.isnan(table.loc["mmlu", "retained"])  # 0.30 is within noise of 0.25 on 40 items
    assert not table.loc["gsm8k", "above_chance"]


def test_unigram_counts_of_a_pretrained_models_tokenizer_count_text_tokens_only():
    import tiny_models as tm
    from finescope_nb.evaluate import unigram_counts

    tok = tm.tokenizer(bos=True)  # prepends a BOS, which the counts must leave out
    counts = unigram_counts(tok, ["the a the", "of the", ""])
    ids = tok.convert_tokens_to_ids
    assert counts == {ids("the"): 3, ids("a"): 1, ids("of"): 1}
