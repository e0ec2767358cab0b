"""Sentences computed from results: each one says what the numbers beside it say, and changes when they do."""

import json

import pandas as pd

from finescope_nb import readouts
from finescope_nb.curate import topic_mix


def _table(recovered_math: float) -> pd.DataFrame:
    return pd.DataFrame({"domain": ["math", "code"], "base_ppl": [16.0, 40.0], "pruned_ppl": [16.73, 44.0],
                         "recovered_ppl": [recovered_math, 42.0], "retained": [0.99, 0.97]})


def test_recovery_says_how_much_of_the_pruning_loss_came_back():
    little = readouts.recovery(_table(16.69), "math")
    assert "16.00 to 16.73" in little and "16.69" in little and "winning back 5%" in little
    assert "changed little" in little and "between 50% and 50%" in little
    most = readouts.recovery(_table(16.1), "math")
    assert "winning back 86%" in most and "most of the loss" in most
    none = readouts.recovery(_table(16.0).assign(pruned_ppl=[15.9, 44.0]), "math")
    assert "did not raise perplexity" in none


def test_sae_card_names_what_it_was_measured_on():
    metrics = {"explained_variance": 0.9608, "l0": 32.0, "dead_fraction": 0.0908, "loss_recovered": 0.9937,
               "heldout_tokens": 200_000, "evaluated_on": {"heldout_tokens": 200_000}}
    text = readouts.sae_card(metrics)
    assert "200,000 held-out tokens:" in text and "96.1%" in text and "9.1%" in text and "99.4%" in text
    short = readouts.sae_card(metrics | {"heldout_tokens": 51_000})
    assert "asked for 200,000" in short


def test_v3_retrieval_is_reported_only_when_measured(tmp_path):
    assert "not measured yet" in readouts.v3_retrieval({})
    bench = {"m": {"fine": 100}, "fine_goal": {"v3_macro_precision": 0.41, "sae_macro_precision": 0.44,
                                               "dense_centred_macro_precision": 0.49}}
    text = readouts.v3_retrieval(bench)
    assert "precision@100" in text and "0.410" in text and "0.440" in text and "not measured" not in text
    path = tmp_path / "curation.json"
    path.write_text(json.dumps(bench))
    assert readouts.load_benchmark(path) == bench and readouts.load_benchmark(tmp_path / "none.json") == {}


def test_paper_departures_cite_the_recorded_comparison():
    bench = readouts.load_benchmark()
    text = readouts.paper_departures(bench, 500)
    assert "centroid" in text and "M=500" in text and "M=100 per SAE" in text
    macro = bench["macro"]
    assert f"{macro['coarse'][readouts.DEFAULT_ROW]['precision_mean']:.3f}" in text
    assert f"{macro['fine'][readouts.PAPER_ROW]['precision_mean']:.3f}" in text
    assert "Why the centroid" not in readouts.paper_departures({}, 500)


def test_coarse_precision_names_the_range_and_the_hardest_domains():
    table = pd.DataFrame({"math": [1.0, 0.9], "humanities": [0.61, 0.74], "social_sciences": [0.59, 0.58]},
                         index=["sae (default)", "dense centred"])
    text = readouts.coarse_precision(table, 500)
    assert "from 0.59 (social_sciences) to 1.00 (math)" in text
    assert "social_sciences (best 0.59, by sae (default)) and humanities (best 0.74, by dense centred)." in text
    perfect = readouts.coarse_precision(table[["math"]].clip(upper=1.0) * 0 + 1.0, 50, table[["math"]] * 0)
    assert "1.00 on every domain" in perfect and "perfect on every domain" in perfect and "same on every seed draw" in perfect
    spread = table * 0 + pd.DataFrame({"math": [0.0, 0.0], "humanities": [0.12, 0.1], "social_sciences": [0.1, 0.2]},
                                      index=table.index)
    assert "deviation of up to 0.12 (humanities)" in readouts.coarse_precision(table, 500, spread)


def test_topic_mix_and_its_sentence():
    mix = topic_mix(["drill_algebra"] * 8 + ["algebra"] * 2, ["drill_algebra", "drill_algebra", "geometry"])
    assert mix.set_index("topic").loc["drill_algebra", "curated"] == 8
    assert mix.set_index("topic").loc["geometry", "seeds"] == 1 and mix.curated_share.sum() == 1.0
    text = readouts.topic_coverage(mix, 3)
    assert "cover 2 topics" in text and "from 2 topics, 2 of them (20%)" in text and "no curated document: geometry" in text


def test_ablation_reads_the_recorded_comparisons():
    recorded = json.loads((readouts.CURATION_RESULTS.parent / "ablation.json").read_text())
    text = readouts.ablation(recorded)
    assert "retains at least 0.978" in text and "pruned+curated on math (0.990)" in text
    assert "FineScope retains 0.984 / 0.982 (math / code): below pruned+curated (0.990 / 0.985)" in text
    assert "; above finescope-generic-calibration (0.981 / 0.979)." in text
    flipped = json.loads(json.dumps(recorded))
    flipped["retained"]["finescope"]["math"]["mean"] = 0.999
    assert "above pruned+curated (0.990 / 0.985) only on math" in readouts.ablation(flipped)
