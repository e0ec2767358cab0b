"""finescope_nb/generate.py: rows come back in prompt order, prompts fit the context, stop sequences end rows early
without changing the text before the stop."""

import pytest

from finescope_nb import load_model, load_tokenizer
from finescope_nb.evaluate.generation import cut_at_stops
from finescope_nb.errors import FinescopeError
from finescope_nb.generate import continue_texts, fit_prompts
from finescope_nb.lm import max_positions

PROMPTS = ["The president said", "def main(", "Question: What is 3 + 4?\nAnswer:", "In 1850 the river"]


@pytest.fixture(scope="module")
def base():
    return load_model(), load_tokenizer()


def _forward_calls(model):
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def test_a_stopped_row_keeps_its_text_up_to_the_stop(base):
    model, tok = base
    free = continue_texts(model, tok, PROMPTS, max_new_tokens=40)
    words = free[0].split()
    stop = " " + words[len(words) // 2]  # a word from the middle of row 0's free continuation
    stopped = continue_texts(model, tok, PROMPTS, max_new_tokens=40, stops=[stop])
    assert [cut_at_stops(t, [stop]) for t in stopped] == [cut_at_stops(t, [stop]) for t in free]
    assert stop in stopped[0] and len(stopped[0]) < len(free[0])  # row 0 ended at its stop


def test_the_batch_ends_when_every_row_has_stopped(base):
    model, tok = base
    calls, handle = _forward_calls(model)
    try:
        continue_texts(model, tok, PROMPTS, max_new_tokens=40)
        free_steps = len(calls)
        calls.clear()
        stopped = continue_texts(model, tok, PROMPTS, max_new_tokens=40, stops=[" "])  # every row soon writes a space
    finally:
        handle.remove()
    assert free_steps == 40 and len(calls) < 20
    assert all(" " in t for t in stopped)


def test_rows_come_back_in_prompt_order_whatever_their_lengths(base):
    model, tok = base
    prompts = ["Question: " + "How many apples are there in the basket " * 6 + "?", "The", "def main(", "In 1850 the river"]
    # one row a batch, so every row sees exactly the computation it sees alone: only the order is under test
    together = continue_texts(model, tok, prompts, max_new_tokens=8, batch_size=1)  # run shortest first
    assert together == [continue_texts(model, tok, [p], max_new_tokens=8)[0] for p in prompts]


def test_a_prompt_longer_than_the_context_keeps_its_end(base):
    model, tok = base
    limit = max_positions(model)
    long = " ".join(f"word{i}" for i in range(limit))  # well past the context in tokens
    full = tok(long)["input_ids"]
    with pytest.warns(UserWarning, match=f"1 of 2 prompts are longer than this model's context of {limit}"):
        ids, short = fit_prompts(model, tok, [long, "The"], max_new_tokens=40)
    assert len(full) > limit and len(ids) == limit - 40
    assert ids[0] == tok.bos_token_id and ids[1:] == full[len(full) - len(ids) + 1:]  # BOS, then the prompt's end
    assert short == tok("The")["input_ids"]
    texts = continue_texts(model, tok, [long, "The"], max_new_tokens=40)  # (the warning is said once per session)
    assert all(isinstance(t, str) and t for t in texts)
    with pytest.raises(FinescopeError, match=f"max_new_tokens={limit} leaves no room"):
        continue_texts(model, tok, ["The"], max_new_tokens=limit)
