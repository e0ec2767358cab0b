"""GSM8K/MATH answer extraction and matching, HumanEval/MBPP pass@1 through the sandbox, and the four metrics."""

import pytest

from finescope_nb.corpus import load_eval_set
from finescope_nb.errors import FinescopeError
from finescope_nb.evaluate import METRICS, EvalOptions, code_tasks, evaluate, generation
from finescope_nb.evaluate.code_tasks import humaneval_tasks, mbpp_tasks, pass_at_1
from finescope_nb.evaluate.generation import (cut_at_stops, extract_gsm8k, extract_math, is_match, last_boxed,
                                              normalise, pick_items)
from finescope_nb.evaluate.sandbox import SandboxLimits


@pytest.mark.parametrize("text, expected", [
    ("so the total is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("first \\boxed{3}, then \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("\\boxed{\\begin{pmatrix} {1} \\\\ {2} \\end{pmatrix}} done", "\\begin{pmatrix} {1} \\\\ {2} \\end{pmatrix}"),
    ("the answer is $\\boxed 5$", "5"),
    ("\\fbox{x^{2}}", "x^{2}"),
    ("cut short \\boxed{\\frac{1}{", None),
    ("no box here", None),
])
def test_last_boxed_balances_nested_braces(text, expected):
    assert last_boxed(text) == expected


def test_extract_math_falls_back_to_the_last_number():
    assert extract_math("We get 12 apples, then 1,250.5 more") == "1,250.5"
    assert extract_math("nothing numeric") is None


@pytest.mark.parametrize("text, expected", [
    ("She sells 9 eggs.\n#### 18", "18"),
    ("#### 1,234 dollars, not 7", "1,234"),
    ("3 + 4 = 7, so the answer is -12.50.", "-12.50"),
    ("no answer", None),
])
def test_extract_gsm8k(text, expected):
    assert extract_gsm8k(text) == expected


@pytest.mark.parametrize("a, b", [
    ("1,234", "1234"), ("$18.00", "18"), ("18.", "18"), (".5", "0.5"), ("\\dfrac{3}{4}", "\\frac{3}{4}"),
    ("\\frac12", "\\frac{1}{2}"), ("3/4", "\\frac{3}{4}"), ("-3/4", "-\\frac{3}{4}"), ("x = 5", "5"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"), ("76^\\circ", "76"), ("50\\%", "50"),
    ("15\\mbox{ cm}^2", "15"), ("\\text{(B)}", "(B)"), ("2 \\sqrt{5}", "2\\sqrt5"), ("-0.0", "0"),
])
def test_normalise_identifies_typesetting_variants(a, b):
    assert normalise(a) == normalise(b)
    assert is_match(a, b)


@pytest.mark.parametrize("prediction, reference", [
    ("17", "18"), ("0.5", "\\frac{1}{2}"), ("(2,1)", "-2,1"), ("12", "1,2"), (None, "0"), ("", "0"),
])
def test_is_match_rejects_different_answers(prediction, reference):
    assert not is_match(prediction, reference)


def test_reference_solutions_extract_to_their_answers():
    gsm = load_eval_set("gsm8k").select(range(50))
    assert all(is_match(extract_gsm8k(s), a) for s, a in zip(gsm["solution"], gsm["answer"]))
    math = load_eval_set("math500").select(range(50))
    assert all(is_match(extract_math(s), a) for s, a in zip(math["solution"], math["answer"]))


def test_cut_at_stops_and_pick_items():
    assert cut_at_stops(" 18\n\nQuestion: next", generation.GSM8K_STOPS) == " 18"
    assert cut_at_stops("no stop", ("\n\n",)) == "no stop"
    picked = pick_items(range(100), 5, seed=3)
    assert picked == pick_items(range(100), 5, seed=3) == sorted(picked) and len(set(picked)) == 5
    assert picked != pick_items(range(100), 5, seed=4)
    assert pick_items(range(4), None, 0) == pick_items(range(4), 10, 0) == [0, 1, 2, 3]


def test_reference_solutions_pass_and_planted_mistakes_fail():
    human = [t for t in humaneval_tasks() if t.task_id in ("HumanEval/0", "HumanEval/2", "HumanEval/12")]
    mbpp = [t for t in mbpp_tasks() if t.task_id in ("mbpp/61", "mbpp/62", "mbpp/63")]
    tasks = human + mbpp
    good = pass_at_1(tasks, [t.reference for t in tasks])
    assert good["passed"].all(), good[~good["passed"]].to_dict("records")
    trailing = pass_at_1(human[:1], [human[0].reference + "\ndef leftover(:\n"])  # cut at the stop, so still valid
    assert trailing["passed"].all()
    wrong = pass_at_1([human[0], mbpp[0]], ["    return False\n", "def count_Substrings(s, n):\n    return 0\n"])
    assert not wrong["passed"].any() and set(wrong["status"]) == {"failed"}
    assert "AssertionError" in wrong["stderr_tail"][0]
    looping = pass_at_1(human[:1], ["    while True:\n        pass\n"], SandboxLimits(timeout_s=1.0))
    assert looping["status"].tolist() == ["timeout"]


def test_pass_at_1_needs_one_completion_per_task():
    with pytest.raises(FinescopeError, match="one completion per task"):
        pass_at_1(humaneval_tasks(limit=2), ["    return 1\n"])


def test_mbpp_prompt_shows_the_first_test():
    task = mbpp_tasks(limit=1, seed=0)[0]
    first_test = task.tests.splitlines()[1]
    assert task.prompt.startswith('"""') and first_test in task.prompt and task.prefix == ""


def _oracle(answers_by_prompt):
    """A stand-in for generation that answers every prompt with its reference: scoring must then give 1."""
    def fake(model, tokenizer, prompts, **kwargs):
        return [answers_by_prompt[p] for p in prompts]
    return fake


def test_metrics_score_reference_answers_as_correct(monkeypatch):
    options = EvalOptions(domains=("math", "code"), limit=2, seed=1)
    gsm = load_eval_set("gsm8k")
    oracle = {generation.gsm8k_prompt(q): f" {s}\n\nQuestion: more" for q, s in zip(gsm["question"], gsm["solution"])}
    math = load_eval_set("math500")
    oracle.update({generation.math_prompt(p): f" {s}" for p, s in zip(math["problem"], math["solution"])})
    monkeypatch.setattr(generation, "continue_texts", _oracle(oracle))
    assert METRICS["gsm8k"].run(None, None, options)["score"].tolist() == [1.0]
    assert (METRICS["math500"].run(None, None, options)["score"] == 1.0).all()
    code = {t.prompt: t.reference for t in humaneval_tasks() + mbpp_tasks()}
    monkeypatch.setattr(code_tasks, "continue_texts", _oracle(code))
    assert METRICS["humaneval"].run(None, None, options)["score"].tolist() == [1.0]
    assert METRICS["mbpp"].run(None, None, options)["score"].tolist() == [1.0]


@pytest.fixture(scope="module")
def embedded():
    from finescope_nb.lm import load_model, load_tokenizer
    return load_model(None), load_tokenizer(None)


def test_metrics_run_end_to_end_on_the_embedded_model(embedded):
    model, tok = embedded
    options = EvalOptions(domains=("math", "code"), limit=2, max_new_tokens=32)
    math = METRICS["math500"].run(model, tok, options)
    subjects = sorted({i.split("/")[1] for i in load_eval_set("math500")["id"]})
    assert math["group"].tolist() == subjects and (math["n"] == 2).all()
    assert math["score"].between(0, 1).all() and (math["domain"] == "math").all()
    mbpp = METRICS["mbpp"].run(model, tok, options)
    assert mbpp[["domain", "group", "n"]].values.tolist() == [["code", "mbpp", 2]] and 0 <= mbpp["score"][0] <= 1
    df = evaluate(model, tok, ["gsm8k", "humaneval"], domains=["math", "code"], limit=2, max_new_tokens=32)
    assert df[["metric", "domain", "group", "n"]].values.tolist() == [["gsm8k", "math", "gsm8k", 2],
                                                                     ["humaneval", "code", "humaneval", 2]]
    assert df["score"].between(0, 1).all() and (df["chance"] == 0).all() and df["higher_is_better"].all()
    assert list(df.columns[:7]) == ["metric", "domain", "group", "n", "score", "chance", "higher_is_better"]
