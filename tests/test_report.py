"""The run report and comparison, on small run folders built by hand (the real pipeline is too slow here)."""

import json
import math
import os
import re

import pytest

from finescope_nb.config import PruneConfig, RunConfig
from finescope_nb.errors import FinescopeError
from finescope_nb.report import STAGE_ORDER, compare_figure, compare_runs, load_run, write_report

LOSSES = {"base": {"math": 2.7958, "code": 4.9286}, "pruned": {"math": 2.8178, "code": 4.9936},
          "recovered": {"math": 2.8207, "code": 4.9941}}
SHAPES_BEFORE = [{"num_heads": 8, "num_kv_heads": 4, "intermediate_size": 1024}] * 3
SHAPES_AFTER = [SHAPES_BEFORE[0], {"num_heads": 6, "num_kv_heads": 3, "intermediate_size": 511}, SHAPES_BEFORE[0]]


def _stage(run, name, key="aaaaaaaaaaaa"):
    folder = run / "stages" / f"{name}-{key}"
    folder.mkdir(parents=True)
    (folder / "DONE").write_text(key + "\n")
    return folder


def make_run(root, name="math-run", domain="math", ratio=0.3, stages=STAGE_ORDER, progress=True, metrics=False):
    """A run folder with the files each stage writes; summary.json only when every stage finished."""
    run = root / name
    run.mkdir(parents=True)
    (run / "run.json").write_text(RunConfig(domain=domain, prune=PruneConfig(ratio=ratio)).to_json())
    folders = {}
    for stage in stages:
        folder = folders[stage] = _stage(run, stage)
        if stage.startswith("eval-"):
            rows = [f"{d},1000,{loss},{math.exp(loss)}" for d, loss in LOSSES[stage[5:]].items()]
            (folder / "ppl.csv").write_text("domain,tokens,loss,ppl\n" + "\n".join(rows) + "\n")
        elif stage == "curate":
            (folder / "curated.csv").write_text(
                "id,text,domain,score\n"
                'a#0,"Solve 2*x = 4 for x.<script>alert(1)</script>",math,0.97\n'
                f'b#0,"{"long text " * 100}",math,0.95\n'
                "c#0,def f(): pass,code,0.90\n")
        elif stage == "prune":
            (folder / "model").mkdir()
            plan = {"head_unit": "group", "shapes_before": SHAPES_BEFORE, "shapes_after": SHAPES_AFTER,
                    "params_before": 3000000, "params_after": 2100000, "keep_heads": {"1": [0, 1, 3]}}
            (folder / "model" / "finescope_prune.json").write_text(json.dumps({"plan": plan, "config": None}))
        elif stage == "recover":
            (folder / "history.csv").write_text("step,train_loss,val_loss\n0,,2.76\n20,1.93,2.75\n40,1.90,2.74\n")
            (folder / "recovery.json").write_text('{"keep_rate": 0.342}')
    if progress:
        (run / "progress.json").write_text(json.dumps({"stages": {s: f"stages/{f.name}" for s, f in folders.items()}}))
    if set(stages) == set(STAGE_ORDER):
        table = [{"domain": d, "base_ppl": round(math.exp(LOSSES["base"][d]), 4),
                  "pruned_ppl": round(math.exp(LOSSES["pruned"][d]), 4),
                  "recovered_ppl": round(math.exp(LOSSES["recovered"][d]), 4),
                  "retained": round(math.exp(LOSSES["base"][d] - LOSSES["recovered"][d]), 4)} for d in LOSSES["base"]]
        summary = {"domain": domain, "pool_size": 1234, "curated": 3, "curated_domain_share": 2 / 3, "seconds": 90.0,
                   "params_non_embedding": {"base": 3000000, "pruned": 2100000}, "table": table}
        if metrics:
            summary["metrics"] = [{"model": m, "metric": "cloze", "domain": domain, "group": None, "n": 50,
                                   "score": s, "chance": 0.25, "higher_is_better": True}
                                  for m, s in (("base", 0.62), ("pruned", 0.48), ("recovered", 0.555))]
        (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_report_is_one_offline_html_file(tmp_path):
    run = make_run(tmp_path, metrics=True)
    path = write_report(run)
    assert path == run / "report.html"
    assert [p.name for p in run.iterdir() if p.suffix == ".html"] == ["report.html"]
    page = path.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", page)  # nothing fetched: plotly.js is inline
    assert page.count("plotly.js v") == 1
    assert page.count('class="plotly-graph-div"') == 4  # domains, curated per domain, kept per block, recovery
    for value in ("16.376", "16.789", "0.975", "0.555", "2,100,000", "34.2%", "lora, 60 steps"):
        assert value in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    assert "long text " * 20 in page and "long text " * 60 not in page  # truncated
    assert "Missing stages" not in page


def test_unfinished_run_names_missing_stages(tmp_path):
    run = make_run(tmp_path, stages=STAGE_ORDER[:3])
    (run / "summary.json").write_text(json.dumps({"domain": "math", "table": [{"domain": "math", "base_ppl": 99.0}]}))
    (run / "stages" / "eval-base-aaaaaaaaaaaa" / "metrics.csv").write_text(
        "metric,domain,group,n,score,chance,higher_is_better\ncloze,math,,40,0.6125,0.25,True\n")
    info = load_run(run)
    assert info.missing == ("recover", "eval-pruned", "eval-recovered")
    assert info.summary is None  # written by an earlier config, so not trusted
    page = write_report(run, tmp_path / "out" / "r.html").read_text()
    assert "Missing stages: recover, eval-pruned, eval-recovered" in page
    assert f"--run-dir {run}" in page
    assert "16.376" in page and "99.000" not in page  # base perplexity from the eval stage, not the stale summary
    assert "0.613" in page  # the base model's cloze accuracy from the stage's metrics.csv


def test_progress_json_picks_the_current_configs_folders(tmp_path):
    run = make_run(tmp_path, stages=("eval-base",))
    newer = _stage(run, "eval-base", "bbbbbbbbbbbb")
    _stage(run, "curate", "cccccccccccc")
    assert load_run(run).stages == {"eval-base": run / "stages" / "eval-base-aaaaaaaaaaaa"}
    (run / "progress.json").unlink()
    os.utime(newer / "DONE", (2e9, 2e9))
    assert load_run(run).stages == {"eval-base": newer, "curate": run / "stages" / "curate-cccccccccccc"}


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(FinescopeError, match="is not a finescope run folder"):
        load_run(tmp_path)
    with pytest.raises(FinescopeError, match="is a folder"):
        write_report(make_run(tmp_path), out=tmp_path)


def test_compare_two_runs(tmp_path):
    math_run = make_run(tmp_path, "math-run", "math", 0.3)
    code_run = make_run(tmp_path, "code-run", "code", 0.4)
    df = compare_runs([math_run, code_run])
    assert list(zip(df["run"], df["domain"])) == [("math-run", "math"), ("math-run", "code"),
                                                  ("code-run", "math"), ("code-run", "code")]
    math_row = df[(df["run"] == "math-run") & (df["domain"] == "math")].iloc[0]
    assert math_row["ratio"] == 0.3 and math_row["params_after"] == 2100000
    assert math_row["retained"] == pytest.approx(math.exp(2.7958 - 2.8207), abs=1e-4)
    assert set(df.loc[df["run"] == "code-run", "target_retained"]) == {round(math.exp(4.9286 - 4.9941), 4)}
    assert set(df.loc[df["run"] == "code-run", "ratio"]) == {0.4}
    assert {t.name for t in compare_figure(df).data} == {"math-run", "code-run"}


def test_compare_refuses_an_unfinished_run(tmp_path):
    done = make_run(tmp_path, "done")
    half = make_run(tmp_path, "half", stages=STAGE_ORDER[:4])
    with pytest.raises(FinescopeError, match=r"Run 'half' is unfinished \(missing stages: eval-pruned, eval-recovered\)"):
        compare_runs([done, half])


def test_a_run_without_task_metrics_and_a_summary_of_other_folders(tmp_path):
    from finescope_nb.report import metrics_table

    run = make_run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    summary["metrics"] = []  # a perplexity-only run: no metrics.csv anywhere
    summary["stages"] = json.loads((run / "progress.json").read_text())["stages"]
    (run / "summary.json").write_text(json.dumps(summary))
    info = load_run(run)
    assert info.summary is not None and metrics_table(info) is None
    assert "Missing stages" not in write_report(run).read_text()
    summary["stages"] = {**summary["stages"], "recover": "stages/recover-bbbbbbbbbbbb"}  # written for another config
    (run / "summary.json").write_text(json.dumps(summary))
    assert load_run(run).summary is None
