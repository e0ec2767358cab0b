import pytest

from finescope_nb.artifacts import RunFolder, atomic_path, stage_key, write_text_atomic
from finescope_nb.config import EvalConfig, ModelConfig, RunConfig
from finescope_nb.errors import FinescopeError


def test_interrupted_atomic_write_keeps_old_file(tmp_path):
    target = tmp_path / "result.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"]


def test_interrupted_folder_write_keeps_old_folder(tmp_path):
    target = tmp_path / "stage"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("v1")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "a.txt").write_text("v2")
            raise KeyboardInterrupt
    assert (target / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]


def test_stage_cache_recomputes_only_on_change(tmp_path):
    folder = RunFolder(tmp_path / "run", RunConfig())
    calls = []

    def compute():
        calls.append(1)
        return "value"

    def save(v, d):
        (d / "v.txt").write_text(v)

    def load(d):
        return (d / "v.txt").read_text()

    key = stage_key(EvalConfig(), "model-a")
    assert folder.cached("eval", key, compute, save, load) == "value"
    assert folder.cached("eval", key, compute, save, load) == "value"
    assert len(calls) == 1
    folder.cached("eval", stage_key(EvalConfig(max_length=64), "model-a"), compute, save, load)
    folder.cached("eval", stage_key(EvalConfig(), "model-b"), compute, save, load)
    assert len(calls) == 3


def test_failed_stage_leaves_no_result(tmp_path):
    folder = RunFolder(tmp_path / "run", RunConfig())

    def boom():
        raise RuntimeError("stage crashed")

    with pytest.raises(RuntimeError):
        folder.cached("eval", "k", boom, lambda v, d: None, lambda d: None)
    assert not folder.stage_dir("eval", "k").exists()


def test_run_folder_refuses_another_config(tmp_path):
    RunFolder(tmp_path / "run", RunConfig(domain="math"))
    RunFolder(tmp_path / "run", RunConfig(domain="math", seed=4))  # same identity: reused
    with pytest.raises(FinescopeError, match="different domain") as err:
        RunFolder(tmp_path / "run", RunConfig(domain="code"))
    assert "start fresh" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(FinescopeError, match="different model"):
        RunFolder(tmp_path / "run", RunConfig(domain="math", model=ModelConfig(path="/elsewhere")))


def test_run_folder_refuses_foreign_nonempty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(FinescopeError, match="not a finescope run folder"):
        RunFolder(tmp_path / "x", RunConfig())


def test_a_stage_finished_in_a_sibling_run_is_taken_over_unfinished_ones_are_not(tmp_path):
    def save(v, d):
        (d / "v.txt").write_text(v)

    def load(d):
        return (d / "v.txt").read_text()

    a = RunFolder(tmp_path / "runs" / "a", RunConfig())
    a.cached("curate", "k1", lambda: "from a", save, load)
    a.checkpoint_dir("prune", "k2")  # begun, never finished
    a.stage_dir("prune", "k2").mkdir(parents=True)  # a stage folder without DONE
    (tmp_path / "runs" / "not-a-run" / "stages" / "prune-k2").mkdir(parents=True)
    (tmp_path / "runs" / "not-a-run" / "stages" / "prune-k2" / "DONE").write_text("k2\n")

    b = RunFolder(tmp_path / "runs" / "b", RunConfig())
    assert b.cached("curate", "k1", lambda: pytest.fail("recomputed a finished sibling stage"), save, load) == "from a"
    assert (b.stage_dir("curate", "k1") / "v.txt").stat().st_ino == (a.stage_dir("curate", "k1") / "v.txt").stat().st_ino
    assert b.cached("prune", "k2", lambda: "computed", save, load) == "computed"  # neither unfinished nor non-run folders count
    assert b.cached("curate", "other", lambda: "computed", save, load) == "computed"  # another key is another result
    code = RunFolder(tmp_path / "runs" / "c", RunConfig(domain="code"))  # keys assume one domain, model and corpus
    assert code.cached("curate", "k1", lambda: "computed", save, load) == "computed"
