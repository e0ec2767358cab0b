import json

import pytest

from finescope_nb import pipeline
from finescope_nb.config import EvalConfig, RunConfig
from finescope_nb.errors import FinescopeError

SMALL = RunConfig(domain="math", eval=EvalConfig(domains=("math", "code"), max_docs_per_domain=4, max_length=64))


def test_run_writes_folder_and_reuses_cached_stage(tmp_path, monkeypatch):
    first = pipeline.run(SMALL, tmp_path / "run", progress=False)
    assert list(first.base_ppl["domain"]) == ["math", "code"]
    assert (first.base_ppl["ppl"] > 1).all()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["domain"] == "math" and set(summary["base_ppl"]) == {"math", "code"}
    stages = list((tmp_path / "run" / "stages").iterdir())
    assert len(stages) == 1 and (stages[0] / "DONE").exists()

    def boom(*a, **k):
        raise AssertionError("the cached stage was recomputed")

    monkeypatch.setattr(pipeline, "domain_perplexity", boom)
    again = pipeline.run(SMALL, tmp_path / "run", progress=False)
    assert again.base_ppl["ppl"].round(6).tolist() == first.base_ppl["ppl"].round(6).tolist()


def test_run_refuses_a_folder_of_another_domain(tmp_path):
    pipeline.run(SMALL, tmp_path / "run", progress=False)
    with pytest.raises(FinescopeError, match="different domain"):
        pipeline.run(SMALL.replace(domain="code"), tmp_path / "run", progress=False)


def test_fast_mode_shrinks_eval(monkeypatch):
    monkeypatch.setenv("FINESCOPE_FAST", "1")
    assert pipeline.default_config().eval.max_docs_per_domain == 24
    monkeypatch.setenv("FINESCOPE_FAST", "0")
    assert pipeline.default_config().eval.max_docs_per_domain == 200
