import json

import pytest

from finescope_nb import paths, pipeline
from finescope_nb.config import CurationConfig, EvalConfig, FinetuneConfig, PruneConfig, RunConfig
from finescope_nb.errors import FinescopeError

SMALL = RunConfig(domain="math", eval=EvalConfig(domains=("math", "code"), max_docs_per_domain=4, max_length=64),
                  curation=CurationConfig(m=20), prune=PruneConfig(calibration_docs=8, max_length=64),
                  finetune=FinetuneConfig(method="full", steps=4, eval_every=2, max_length=64))
STAGES = {"eval-base", "curate", "prune", "recover", "eval-pruned", "eval-recovered"}


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "DEFAULT_RUNS_DIR", tmp_path / "runs")  # the SAE and code caches


def test_run_goes_through_every_stage_and_reuses_the_cache(tmp_path, monkeypatch):
    first = pipeline.run(SMALL, tmp_path / "run", progress=False)
    assert list(first.base_ppl["domain"]) == ["math", "code"]
    assert (first.base_ppl["ppl"] > 1).all()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["domain"] == "math" and set(summary["base_ppl"]) == {"math", "code"} and summary["curated"] == 20
    params = summary["params_non_embedding"]
    assert 0.69 < params["pruned"] / params["base"] < 0.71  # 30% pruned
    assert list(first.table.columns) == ["domain", "base_ppl", "pruned_ppl", "recovered_ppl", "retained"]
    stages = {p.name.rsplit("-", 1)[0]: p for p in (tmp_path / "run" / "stages").iterdir()}
    assert set(stages) == STAGES and all((p / "DONE").exists() for p in stages.values())

    def boom(*a, **k):
        raise AssertionError("a cached stage was recomputed")

    for name in ("domain_perplexity", "compute_importance", "prepare", "run_arm"):
        monkeypatch.setattr(pipeline, name, boom)
    again = pipeline.run(SMALL, tmp_path / "run", progress=False)
    assert again.table.round(6).equals(first.table.round(6))

    monkeypatch.undo()
    monkeypatch.setattr(paths, "DEFAULT_RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(pipeline, "compute_importance", boom)  # only recovery and its evaluation may rerun
    changed = SMALL.replace(finetune=SMALL.finetune.replace(steps=2))
    third = pipeline.run(changed, tmp_path / "run", progress=False)
    assert third.table["pruned_ppl"].round(6).tolist() == first.table["pruned_ppl"].round(6).tolist()


def test_run_refuses_a_folder_of_another_domain(tmp_path):
    folder = tmp_path / "run"
    pipeline.RunFolder(folder, SMALL)
    with pytest.raises(FinescopeError, match="different domain"):
        pipeline.run(SMALL.replace(domain="code"), folder, progress=False)


def test_fast_mode_shrinks_eval(monkeypatch):
    monkeypatch.setenv("FINESCOPE_FAST", "1")
    assert pipeline.default_config().eval.max_docs_per_domain == 24
    monkeypatch.setenv("FINESCOPE_FAST", "0")
    assert pipeline.default_config().eval.max_docs_per_domain == 200
