import subprocess
import sys

import pytest

from finescope_nb.cli import main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "finescope_nb.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["train-base", "--help"]])
def test_help_has_examples(args):
    out = _run(*args)
    assert out.returncode == 0
    assert "example" in out.stdout


def test_unknown_domain_is_one_line_exit_2(capsys):
    assert main(["run", "--domain", "poetry"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("finescope: error: Unknown domain 'poetry'")
    assert "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["run", "train-base"])
def test_a_negative_seed_is_refused_in_one_line(command, capsys):
    with pytest.raises(SystemExit) as excinfo:
        main([command, "--seed", "-1"])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("argument --seed: seeds must be 0 or more, got -1; give a seed such as 0")


def test_missing_model_path_is_one_line(tmp_path, capsys):
    code = main(["run", "--model", str(tmp_path / "no-model"), "--run-dir", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "no-model" in err and "\n" not in err


def test_corpus_without_text_column(tmp_path, capsys):
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"body": "hello"}\n')
    assert main(["run", "--corpus", str(bad), "--run-dir", str(tmp_path / "run")]) == 2
    assert "no 'text' column" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["report", "compare"])
def test_report_and_compare_help_have_examples(command):
    out = _run(command, "--help")
    assert out.returncode == 0
    assert "example" in out.stdout


def test_report_prints_the_path_and_missing_stages(tmp_path, capsys):
    from test_report import make_run

    finished, half = make_run(tmp_path, "done"), make_run(tmp_path, "half", stages=("eval-base", "curate"))
    assert main(["report", str(finished)]) == 0
    assert capsys.readouterr().out.strip() == str(finished / "report.html")
    assert main(["report", str(half), "--out", str(tmp_path / "half.html")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == str(tmp_path / "half.html") and (tmp_path / "half.html").is_file()
    assert lines[1].startswith("Missing stages: prune, recover, eval-pruned, eval-recovered")


def test_compare_prints_the_table_and_writes_csv(tmp_path, capsys):
    from test_report import make_run

    runs = [make_run(tmp_path, "math-run", "math"), make_run(tmp_path, "code-run", "code", ratio=0.4)]
    assert main(["compare", *map(str, runs), "--csv", str(tmp_path / "c.csv")]) == 0
    out = capsys.readouterr().out
    assert "math-run" in out and "code-run" in out and "retained" in out and "16.789" in out
    assert len((tmp_path / "c.csv").read_text().splitlines()) == 5


@pytest.mark.parametrize("command", ["report", "compare"])
def test_report_and_compare_refuse_a_non_run_in_one_line(command, tmp_path, capsys):
    assert main([command, str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a finescope run folder" in err and "\n" not in err and "Traceback" not in err


def test_run_refuses_an_unknown_metric_in_one_line(tmp_path, capsys):
    from finescope_nb.cli import main

    assert main(["run", "--metrics", "cloze", "bleu", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Unknown metric 'bleu'; known metrics are perplexity" in err
    assert not (tmp_path / "run").exists()


def test_run_options_for_a_stock_loadable_plan(monkeypatch, capsys):
    from finescope_nb import pipeline
    from finescope_nb.errors import FinescopeError

    seen = []

    def stop(config, run_dir, **options):
        seen.append(config.prune)
        raise FinescopeError("stopped here.")

    monkeypatch.setattr(pipeline, "run", stop)
    assert main(["run", "--scope", "uniform", "--all-blocks", "--mlp-only"]) == 2
    assert main(["run"]) == 2
    assert main(["run", "--ratio", "0"]) == 2
    uniform, default, unpruned = seen
    assert unpruned.ratio == 0  # a zero is a value, not "not given"
    assert (uniform.scope, uniform.first_layer, uniform.last_layer, uniform.prune_attention) == ("uniform", 0, -1, False)
    assert list(uniform.layer_range(8)) == list(range(8)) and list(default.layer_range(8)) == list(range(1, 7))
    assert (default.scope, default.prune_attention) == ("per_layer", True)
    with pytest.raises(SystemExit):
        main(["run", "--scope", "layerwise"])
    assert "invalid choice: 'layerwise'" in capsys.readouterr().err
