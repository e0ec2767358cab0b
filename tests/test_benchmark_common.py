"""benchmarks/common.py: where each model's results go and what every result file says about its model and pool."""

import argparse
from pathlib import Path

import pytest

from benchmarks import common
from finescope_nb.config import PruneConfig
from finescope_nb.sae.cache import default_sae_config


def _args(argv):
    parser = argparse.ArgumentParser()
    common.add_model_args(parser)
    return parser.parse_args(argv)


def test_result_path_per_model():
    assert common.result_path(_args([]), "pruning.json") == common.RESULTS / "pruning.json"
    assert common.result_path(_args(["--model", "smollm2-135m"]), "pruning.json") == common.RESULTS / "smollm2-135m" / "pruning.json"
    assert common.result_path(_args(["--model", "/models/my-llama/"]), "sae.json") == common.RESULTS / "my-llama" / "sae.json"
    assert common.result_path(_args(["--model", "smollm2-135m", "--out", "/tmp/x.json"]), "sae.json") == Path("/tmp/x.json")
    # the embedded model on a pool sample never overwrites its committed whole-pool file
    assert common.result_path(_args(["--pool-per-domain", "1000"]), "curation.json") == common.RESULTS / "embedded-pool1000" / "curation.json"
    assert common.result_path(_args(["--pool-per-domain", "1000", "--pool-seed", "2"]), "curation.json") == \
        common.RESULTS / "embedded-pool1000-seed2" / "curation.json"
    assert common.result_path(_args(["--model", "smollm2-135m", "--pool-per-domain", "1000"]), "curation.json") == \
        common.RESULTS / "smollm2-135m" / "curation.json"


def test_provenance_names_model_and_pool_sample(monkeypatch):
    monkeypatch.delenv("FINESCOPE_FAST", raising=False)
    assert common.provenance(_args([])) == {"model": "embedded", "fast": False, "pool": "whole pool"}
    got = common.provenance(_args(["--model", "smollm2-135m", "--pool-per-domain", "1000", "--pool-seed", "3"]))
    assert got == {"model": "smollm2-135m", "fast": False, "pool": {"per_domain": 1000, "seed": 3}}


def test_stage_defaults_come_from_the_registry(monkeypatch):
    monkeypatch.delenv("FINESCOPE_FAST", raising=False)
    from finescope_nb.models import registry

    entry = registry.NAMED_MODELS["smollm2-135m"]
    measured = {"sae": {"layer": 14, "d_sae": 2048}, "run": {"prune": {"channel_multiple": 64, "head_unit": "query"}}}
    monkeypatch.setitem(registry.NAMED_MODELS, "smollm2-135m", type(entry)(**{**vars(entry), "defaults": measured}))
    assert common.sae_config("smollm2-135m") == default_sae_config(model="smollm2-135m")
    assert (common.sae_config("smollm2-135m").layer, common.sae_config("smollm2-135m").d_sae) == (14, 2048)
    assert common.run_config("smollm2-135m").prune == PruneConfig(channel_multiple=64, head_unit="query")
    assert common.run_config(None).prune == PruneConfig()


@pytest.mark.parametrize("omp, expected", [("1", 1), ("", 2)])
def test_threads_capped_by_omp(monkeypatch, omp, expected):
    import os

    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    try:
        assert common.set_threads() == min(expected, os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)


def test_resumable_computes_each_step_once_and_keeps_nothing_from_a_failed_one(tmp_path, monkeypatch):
    monkeypatch.setattr(common.paths, "DEFAULT_RUNS_DIR", tmp_path)
    calls = []

    def step(value):
        def compute():
            calls.append(value)
            return [{"ppl": value, "seed": 0}]
        return compute

    key = {"model": "abc", "seed": 0, "texts": "d1"}
    assert common.resumable("pruning", key, step(1.5)) == [{"ppl": 1.5, "seed": 0}]
    assert common.resumable("pruning", dict(key), step(9.0)) == [{"ppl": 1.5, "seed": 0}]  # a second session: read back
    assert common.resumable("pruning", key | {"seed": 1}, step(2.5)) == [{"ppl": 2.5, "seed": 0}]  # another key: computed
    assert calls == [1.5, 2.5]

    def broken():
        raise KeyboardInterrupt  # a session ending mid-step
    with pytest.raises(KeyboardInterrupt):
        common.resumable("pruning", key | {"seed": 2}, broken)
    assert len(list((tmp_path / "benchmark-steps" / "pruning").iterdir())) == 2  # nothing written for the interrupted step


def test_a_carried_step_resumes_on_a_machine_whose_runs_folder_lacks_it(tmp_path, monkeypatch):
    from benchmarks import carry_steps
    first, fresh, carried = tmp_path / "first", tmp_path / "fresh", tmp_path / "carried"
    monkeypatch.setattr(common, "CARRIED_STEPS", carried)
    monkeypatch.setattr(common.paths, "DEFAULT_RUNS_DIR", first)
    key = {"model": "abc", "seed": 0}
    common.resumable("pruning", key, lambda: [{"ppl": 1.5}])
    common.step_path("pruning", key, ".pt").write_bytes(b"weights")  # never carried
    assert carry_steps.carry(["pruning"], runs=first, into=carried) == {"pruning": 1}
    assert carry_steps.carry(["pruning"], runs=first, into=carried) == {"pruning": 0}  # already carried
    assert [p.name for p in (carried / "pruning").iterdir()] == [common.step_path("pruning", key).name]

    monkeypatch.setattr(common.paths, "DEFAULT_RUNS_DIR", fresh)  # the next session, on a fresh machine
    def must_not_run():
        raise AssertionError("a carried step was computed again")
    assert common.resumable("pruning", key, must_not_run) == [{"ppl": 1.5}]
    assert common.step_path("pruning", key).is_file()  # copied into the fresh runs folder
    assert common.resumable("pruning", key | {"seed": 1}, lambda: [{"ppl": 2.5}]) == [{"ppl": 2.5}]  # another key: computed
    with pytest.raises(SystemExit, match="No kept steps of 'recovery'.*pruning"):
        carry_steps.carry(["recovery"], runs=fresh, into=carried)


def test_pruning_steps_of_data_free_criteria_are_shared_between_domains(tmp_path, monkeypatch):
    """Magnitude and random prune alike whatever the calibration texts, so the second domain reads their steps back."""
    import pandas as pd
    from benchmarks import pruning_benchmark as bench
    from finescope_nb.config import EvalConfig
    from finescope_nb.prune.compare import Arm, calibration_source
    from tests import tiny_models

    monkeypatch.setattr(common.paths, "DEFAULT_RUNS_DIR", tmp_path)
    monkeypatch.setattr(bench, "heldout_sequences", lambda tokenizer, config: None)
    monkeypatch.setattr(bench, "domain_perplexity", lambda model, tokenizer, config, sequences, progress:
                        pd.DataFrame({"domain": ["math"], "loss": [1.0], "ppl": [2.7]}))
    computed = []
    real = bench.compute_importance
    monkeypatch.setattr(bench, "compute_importance", lambda model, tok, texts, config, progress:
                        computed.append(config.criterion) or real(model, tok, texts, config, progress=progress))
    model, tok = tiny_models.llama(), tiny_models.tokenizer()
    base = PruneConfig(ratio=0.3, calibration_docs=2, batch_size=2, max_length=16, first_layer=0, last_layer=2)

    def arms(curated):
        texts = calibration_source(curated, 2)
        return {c: Arm(base.replace(criterion=c), texts) for c in ("taylor", "magnitude", "random")}
    eval_config = EvalConfig(domains=("math",), max_docs_per_domain=2)
    first = bench.score_arms(model, tok, arms(tiny_models.texts(4, seed=0)), [0], [0.3], eval_config)
    second = bench.score_arms(model, tok, arms(tiny_models.texts(4, seed=1)), [0], [0.3], eval_config)
    assert computed == ["taylor", "magnitude", "random", "taylor"]  # the other curated set: only Taylor again
    assert first[["arm", "removed"]].equals(second[["arm", "removed"]])


def test_a_curated_set_is_kept_as_pool_ids_so_a_fresh_machine_needs_no_sae(tmp_path, monkeypatch):
    """The SAE is trained only when a curated set is not kept; a kept one comes back document for document."""
    first, fresh, carried = tmp_path / "first", tmp_path / "fresh", tmp_path / "carried"
    monkeypatch.setattr(common, "CARRIED_STEPS", carried)
    monkeypatch.setattr(common.paths, "DEFAULT_RUNS_DIR", first)
    monkeypatch.setattr(common, "cached_sae", lambda *a, **k: pytest.fail("the SAE was trained for a kept curated set"))
    picks = []

    def curate(ws, domain, m, draw):  # stands in for the SAE selector: the last m documents of the domain, reversed
        picks.append((domain, m))
        return ws.pool[ws.pool["domain"] == domain].iloc[::-1].head(m)

    monkeypatch.setattr(common, "curate_domain", curate)
    ws = common.workspace(argparse.Namespace(model=None, pool_per_domain=5, pool_seed=0), progress=False)
    curated = ws.curated("math", 3)
    assert picks == [("math", 3)] and list(curated.columns) == list(ws.pool.columns)
    assert curated["id"].tolist() == ws.pool[ws.pool["domain"] == "math"]["id"].tolist()[::-1][:3]  # in the picked order
    assert ws.curated("math", 3).equals(curated) and picks == [("math", 3)]  # kept: not picked again
    ws.curated("code", 3)
    assert picks == [("math", 3), ("code", 3)]  # another domain is another set

    from benchmarks import carry_steps
    carry_steps.carry(["curated"], runs=first, into=carried)
    monkeypatch.setattr(common.paths, "DEFAULT_RUNS_DIR", fresh)  # the next session, on a fresh machine
    again = common.workspace(argparse.Namespace(model=None, pool_per_domain=5, pool_seed=0), progress=False)
    assert again.curated("math", 3).equals(curated) and len(picks) == 2
