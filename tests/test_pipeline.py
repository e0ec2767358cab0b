import json

import pytest

from interrupts import Calls, Interrupt

from finescope_nb import paths, pipeline
from finescope_nb.config import CurationConfig, EvalConfig, FinetuneConfig, PruneConfig, RunConfig
from finescope_nb.errors import FinescopeError
from finescope_nb.report import write_report

SMALL = RunConfig(domain="math", eval=EvalConfig(domains=("math", "code"), max_docs_per_domain=4, max_length=64, metric_limit=6),
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
    progress = json.loads((tmp_path / "run" / "progress.json").read_text())["stages"]
    assert progress == summary["stages"] == {name: f"stages/{p.name}" for name, p in stages.items()}
    cloze = first.metrics[first.metrics["metric"] == "cloze"]
    assert set(cloze["model"]) == {"base", "pruned", "recovered"} and (cloze["n"] == 6).all()
    assert cloze["score"].between(0, 1).all() and (cloze["chance"] == 0.25).all()
    page = write_report(tmp_path / "run").read_text()  # the report reads what the pipeline really wrote
    assert "Missing stages" not in page and "cloze" in page and f"{first.table['retained'].iloc[0]:.3f}" in page

    def boom(*a, **k):
        raise AssertionError("a cached stage was recomputed")

    for name in ("domain_perplexity", "evaluate_metrics", "compute_importance", "prepare", "run_arm"):
        monkeypatch.setattr(pipeline, name, boom)
    again = pipeline.run(SMALL, tmp_path / "run", progress=False)
    assert again.table.round(6).equals(first.table.round(6))

    monkeypatch.undo()
    monkeypatch.setattr(paths, "DEFAULT_RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(pipeline, "compute_importance", boom)  # only recovery and its evaluation may rerun
    changed = SMALL.replace(finetune=SMALL.finetune.replace(steps=2))
    third = pipeline.run(changed, tmp_path / "run", progress=False)
    assert third.table["pruned_ppl"].round(6).tolist() == first.table["pruned_ppl"].round(6).tolist()


def test_a_run_beside_another_takes_over_its_finished_stages_and_teacher_responses(tmp_path, monkeypatch):
    import finescope_nb.distill.teacher as teacher

    first = pipeline.run(SMALL, tmp_path / "sweep" / "ratio30", progress=False)
    monkeypatch.setattr(teacher, "continue_texts", lambda *a, **k: pytest.fail("the teacher regenerated the same curated set"))
    calls = Calls(pipeline.curate_top)
    monkeypatch.setattr(pipeline, "curate_top", calls)
    half = pipeline.run(SMALL.replace(prune=SMALL.prune.replace(ratio=0.5)), tmp_path / "sweep" / "ratio50", progress=False)
    assert calls.count == 0  # curation (and the base model's evaluation) taken over from ratio30
    assert half.base_ppl.equals(first.base_ppl)
    for name in ("eval-base", "curate"):
        mine, theirs = (tmp_path / "sweep" / run / half.stages[name] for run in ("ratio50", "ratio30"))
        assert half.stages[name] == first.stages[name] and (mine / "DONE").stat().st_ino == (theirs / "DONE").stat().st_ino
    assert half.stages["prune"] != first.stages["prune"]  # another ratio: pruned and recovered anew
    assert half.table["pruned_ppl"].iloc[0] > first.table["pruned_ppl"].iloc[0]


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


def test_a_run_killed_inside_pruning_or_recovery_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    import finescope_nb.distill.teacher as teacher

    straight = pipeline.run(SMALL, tmp_path / "apart" / "straight", progress=False)  # not beside "run": nothing to take over

    def dies(*args, **kwargs):
        raise Interrupt

    monkeypatch.setattr(pipeline, "plan_pruning", dies)  # killed inside pruning, after importance was scored
    with pytest.raises(Interrupt):
        pipeline.run(SMALL, tmp_path / "run", progress=False)
    assert list((tmp_path / "run" / "checkpoints").glob("prune-*/importance.pt"))
    monkeypatch.undo()
    monkeypatch.setattr(paths, "DEFAULT_RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(pipeline, "compute_importance", dies)  # the saved scores are used, not recomputed

    real_loss = pipeline.domain_loss
    monkeypatch.setattr(pipeline, "domain_loss", Calls(real_loss, fail_on=3))  # recovery evaluates at steps 0, 2, 4
    with pytest.raises(Interrupt):
        pipeline.run(SMALL, tmp_path / "run", progress=False)
    progress = json.loads((tmp_path / "run" / "progress.json").read_text())["stages"]
    assert set(progress) == {"eval-base", "curate", "prune"}  # recovery did not finish
    assert list((tmp_path / "run" / "checkpoints").glob("recover-*/finetune.pt"))

    calls = Calls(real_loss)
    monkeypatch.setattr(pipeline, "domain_loss", calls)
    monkeypatch.setattr(teacher, "continue_texts", lambda *a, **k: pytest.fail("the teacher ran again"))
    resumed = pipeline.run(SMALL, tmp_path / "run", progress=False)
    assert calls.count == 1  # only the evaluation at step 4: steps 1-2 came from the checkpoint
    assert resumed.table.round(6).equals(straight.table.round(6))
    assert not list((tmp_path / "run" / "checkpoints").glob("*/*"))  # finished stages clear their checkpoints


def test_unknown_metric_is_refused_before_any_work(tmp_path):
    bad = SMALL.replace(eval=SMALL.eval.replace(metrics=("cloze", "bleu")))
    with pytest.raises(FinescopeError, match="Unknown metric 'bleu'; known metrics are perplexity, "):
        pipeline.run(bad, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_an_evaluation_resumes_after_its_last_finished_metric(tmp_path, monkeypatch):
    import pandas as pd

    cfg = EvalConfig(domains=("stem",), metrics=("cloze", "mmlu", "gsm8k"))  # gsm8k covers no evaluated domain
    pd.DataFrame([{"metric": "cloze", "domain": "stem", "group": "stem", "n": 5, "score": 0.6}]).to_csv(
        tmp_path / "cloze.csv", index=False)  # finished before the interruption
    computed = []

    def fake(model, tokenizer, names, domains, **kwargs):
        computed.extend(names)
        return pd.DataFrame([{"metric": names[0], "domain": "stem", "group": "stem", "n": 5, "score": 0.3}])

    monkeypatch.setattr(pipeline, "evaluate_metrics", fake)
    frame = pipeline._metric_frames(None, None, cfg, tmp_path)
    assert computed == ["mmlu"]  # cloze came from its checkpoint, gsm8k was skipped
    assert frame["metric"].tolist() == ["cloze", "mmlu"] and frame["score"].tolist() == [0.6, 0.3]
    assert (tmp_path / "mmlu.csv").is_file()


def test_demo_run_dir_is_reused_only_for_the_same_config(tmp_path):
    config = pipeline.default_config("math")
    assert pipeline.demo_run_dir(config, tmp_path) is None  # no demo run yet
    demo = tmp_path / "demo-math"
    demo.mkdir()
    (demo / "run.json").write_text(config.to_json())
    assert pipeline.demo_run_dir(config, tmp_path) == demo
    other = config.replace(prune=config.prune.replace(ratio=0.2))
    assert pipeline.demo_run_dir(other, tmp_path) is None
    (demo / "run.json").write_text("{not json")
    assert pipeline.demo_run_dir(config, tmp_path) is None


def test_a_run_without_a_folder_goes_to_the_demo_folder_only_when_it_ran_the_same_config(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "DEFAULT_RUNS_DIR", tmp_path)
    config = pipeline.default_config("math")
    own = tmp_path / f"math-{config.config_hash(8)}"
    assert pipeline.default_run_dir(config) == own  # no demo run yet
    (tmp_path / "demo-math").mkdir()
    (tmp_path / "demo-math" / "run.json").write_text(config.to_json())
    assert pipeline.default_run_dir(config) == tmp_path / "demo-math"
    other = config.replace(prune=config.prune.replace(ratio=0.2))
    assert pipeline.default_run_dir(other) == tmp_path / f"math-{other.config_hash(8)}"


def test_run_method_picks_full_fine_tuning_with_that_methods_defaults(monkeypatch):
    from finescope_nb import cli

    monkeypatch.delenv("FINESCOPE_FAST", raising=False)  # the full-size budgets, not fast mode's 12 steps

    args = cli._parser().parse_args(["run", "--method", "full", "--model", "smollm2-135m"])
    finetune = cli._run_config(args).finetune
    # SmolLM2's rates were measured per method: 1e-3 for LoRA's adapters, 1e-4 for every weight
    assert (finetune.method, finetune.lr, finetune.steps) == ("full", 1e-4, 250)
    lora = cli._run_config(cli._parser().parse_args(["run", "--model", "smollm2-135m"])).finetune
    assert (lora.method, lora.lr, lora.steps) == ("lora", 1e-3, 250)


def test_make_demo_runs_the_config_notebook_00_runs():
    """Notebook 00 reuses runs/demo-math only if `make demo`'s command builds exactly its config."""
    from finescope_nb import cli
    from finescope_nb.config import ModelConfig

    args = cli._parser().parse_args(["run", "--domain", "math", "--run-dir", "runs/demo-math"])  # the Makefile's demo
    assert cli._run_config(args).config_hash() == pipeline.default_config("math", model=ModelConfig(path=None)).config_hash()
