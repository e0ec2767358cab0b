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
