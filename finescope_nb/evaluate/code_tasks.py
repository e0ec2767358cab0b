"""HumanEval and MBPP: pass@1 of greedy completions, every program run in the sandbox.

A `CodeTask` says what the model is asked to continue, where its answer ends (the usual stop
sequences: a new top-level statement means the function is finished), and how the answer becomes
a program together with the benchmark's tests. `pass_at_1` scores any completions, so the
reference solutions, planted mistakes or another model's outputs can be checked without
generating anything.

HumanEval: the model continues the function signature and docstring; the program is prompt +
completion + the task's `check` function called on the entry point. MBPP: the model reads the
task text and the first test (the usual way to tell it the function's name and signature) and
writes the whole function; the program is that code, then the task's setup code (which, in the
one MBPP task that has any, builds objects from classes the solution defines), then every assert.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pandas as pd

from finescope_nb.corpus import load_eval_set
from finescope_nb.errors import FinescopeError
from finescope_nb.evaluate.generation import cut_at_stops, pick_items
from finescope_nb.evaluate.registry import EvalOptions, register
from finescope_nb.evaluate.sandbox import SandboxLimits, isolation, run_program
from finescope_nb.generate import continue_texts

HUMANEVAL_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")
MBPP_STOPS = ('\n"""', "\nassert ", "\nprint(", "\nif __name__", "\n# Test", "\n```")
CODE_LIMITS = SandboxLimits(timeout_s=10.0)  # the slowest MBPP reference takes 4 s on a busy 2-core machine


@dataclass(frozen=True)
class CodeTask:
    task_id: str
    prompt: str  # what the model continues
    stops: tuple[str, ...]  # where its answer ends
    prefix: str  # what precedes the answer in the program (HumanEval: the prompt)
    tests: str  # what follows it
    reference: str  # the benchmark's own solution, written as a completion

    def program(self, completion: str) -> str:
        return f"{self.prefix}{cut_at_stops(completion, self.stops)}\n\n{self.tests}\n"


def humaneval_tasks(limit: int | None = None, seed: int = 0) -> list[CodeTask]:
    ds = load_eval_set("humaneval")
    return [CodeTask(t["task_id"], t["prompt"], HUMANEVAL_STOPS, t["prompt"],
                     f"{t['test']}\n\ncheck({t['entry_point']})", t["canonical_solution"])
            for t in ds.select(pick_items(range(len(ds)), limit, seed))]


def mbpp_prompt(text: str, first_test: str) -> str:
    return f'"""\n{text.strip()}\nYour code should pass this test:\n{first_test.strip()}\n"""\n'


def mbpp_tasks(limit: int | None = None, seed: int = 0) -> list[CodeTask]:
    ds = load_eval_set("mbpp")
    return [CodeTask(f"mbpp/{t['task_id']}", mbpp_prompt(t["text"], t["test_list"][0]), MBPP_STOPS, "",
                     "\n".join([t["test_setup_code"], *t["test_list"]]), t["code"])
            for t in ds.select(pick_items(range(len(ds)), limit, seed))]


def pass_at_1(tasks: Sequence[CodeTask], completions: Sequence[str], limits: SandboxLimits = CODE_LIMITS,
              workers: int | None = None) -> pd.DataFrame:
    """One row per task: whether its program passed in the sandbox, the status and the error's tail."""
    if len(tasks) != len(completions):
        raise FinescopeError(f"Got {len(completions)} completions for {len(tasks)} tasks; pass exactly one completion "
                             "per task, in the same order.")
    programs = [task.program(c) for task, c in zip(tasks, completions)]
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        results = list(pool.map(lambda p: run_program(p, limits), programs))
    return pd.DataFrame({"task_id": [t.task_id for t in tasks], "passed": [r.passed for r in results],
                         "status": [r.status for r in results], "stderr_tail": [r.stderr_tail for r in results]})


def _score(name: str, tasks: list[CodeTask], model, tokenizer, options: EvalOptions) -> pd.DataFrame:
    shared = {t.stops for t in tasks}  # one metric's tasks share their stops; rows stop early only then
    completions = continue_texts(model, tokenizer, [t.prompt for t in tasks], max_new_tokens=options.max_new_tokens,
                                 do_sample=False, seed=options.seed, batch_size=options.batch_size,
                                 stops=shared.pop() if len(shared) == 1 else ())
    runs = pass_at_1(tasks, completions)
    iso = isolation()
    layers = f"user={iso.user or 'kit user'}, namespaces={'yes' if iso.namespaces else 'no'}"
    return pd.DataFrame([{"domain": "code", "group": name, "n": len(runs), "score": float(runs["passed"].mean()),
                          "timeouts": float((runs["status"] == "timeout").mean()), "sandbox": layers}])


@register("humaneval", ("code",), chance=0.0,
          description="HumanEval function completion, greedy pass@1, tests run in the sandbox")
def _humaneval_metric(model, tokenizer, options: EvalOptions) -> pd.DataFrame:
    return _score("humaneval", humaneval_tasks(options.limit, options.seed), model, tokenizer, options)


@register("mbpp", ("code",), chance=0.0,
          description="MBPP function from its description and first test, greedy pass@1, tests run in the sandbox")
def _mbpp_metric(model, tokenizer, options: EvalOptions) -> pd.DataFrame:
    return _score("mbpp", mbpp_tasks(options.limit, options.seed), model, tokenizer, options)
