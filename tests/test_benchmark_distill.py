"""The recovery benchmark's rows: which arm runs with which teacher mode, and under what name."""

from benchmarks.distill_benchmark import arm_runs, row_name


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
