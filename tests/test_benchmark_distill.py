"""The recovery benchmark's rows: which arm runs with which teacher mode, and under what name."""

import pytest

from benchmarks.distill_benchmark import arm_runs, method_configs, row_name
from finescope_nb.config import FinetuneConfig


def test_every_arm_runs_once_and_self_distill_once_per_teacher_mode():
    assert arm_runs(("self_distill", "plain", "random", "none"), ["continue", "rewrite"]) == [
        ("self_distill", "continue"), ("self_distill", "rewrite"), ("plain", "continue"), ("random", "continue"),
        ("none", "continue")]


def test_a_pilot_runs_only_the_arms_it_names_in_the_usual_order():
    assert arm_runs(["self_distill"], ["continue"]) == [("self_distill", "continue")]
    assert arm_runs(["none", "plain"], ["rewrite", "continue"]) == [("plain", "rewrite"), ("none", "rewrite")]


def test_rows_are_named_by_mode_and_method_beyond_the_first():
    assert row_name("self_distill", "continue", ["continue", "rewrite"], "lora", ["lora", "full"]) == "self_distill"
    assert row_name("self_distill", "rewrite", ["continue", "rewrite"], "full", ["lora", "full"]) == "self_distill (rewrite) [full]"
    assert row_name("plain", "continue", ["continue"], "full", ["lora", "full"]) == "plain [full]"


def test_learning_rates_are_each_methods_own_one_for_all_or_one_per_method():
    defaults = {"lora": FinetuneConfig(lr=1e-3, steps=250), "full": FinetuneConfig(method="full", lr=1e-4)}
    assert {m: c.lr for m, c in method_configs(defaults, None, steps=5).items()} == {"lora": 1e-3, "full": 1e-4}
    assert {m: c.lr for m, c in method_configs(defaults, [3e-4], steps=5).items()} == {"lora": 3e-4, "full": 3e-4}
    configs = method_configs(defaults, [1e-3, 2e-5], steps=5, patience=3)
    assert (configs["lora"].lr, configs["lora"].method, configs["full"].lr, configs["full"].method) == (1e-3, "lora", 2e-5, "full")
    assert configs["lora"].steps == configs["full"].steps == 5 and configs["full"].patience == 3  # the script's own, for both
    with pytest.raises(ValueError, match="one per method"):
        method_configs(defaults, [1e-3, 1e-4, 1e-5])
