"""benchmarks/recovery_cells.py: the recovery and ablation benchmarks train each model once between them,
and never take a cell for a model it does not describe."""

import pytest

from benchmarks import common, recovery_cells
from benchmarks.recovery_cells import Pruner, Scoring, recovery_cell
from finescope_nb.config import FinetuneConfig, PruneConfig
from tests import tiny_models


def _setup(tmp_path, monkeypatch):
    monkeypatch.setattr(common.paths, "DEFAULT_RUNS_DIR", tmp_path)
    model, tok = tiny_models.llama(), tiny_models.tokenizer()
    texts = tiny_models.texts(8)
    scoring = Scoring({"math": {"toy": [tok(t)["input_ids"] for t in texts[:4]]}}, None, 4, None, (), 10)
    calls = {"finetune": 0, "prune": 0}
    finetune, prune = recovery_cells.finetune, recovery_cells.prune

    def counted(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(recovery_cells, "finetune", counted("finetune", finetune))
    monkeypatch.setattr(recovery_cells, "prune", counted("prune", prune))
    pruner = Pruner(model, tok, PruneConfig(ratio=0.1, criterion="taylor", first_layer=0, calibration_docs=2, max_length=32, batch_size=2))
    return model, tok, texts, scoring, calls, pruner


def test_the_same_model_is_trained_once_and_a_different_one_is_not_taken_for_it(tmp_path, monkeypatch):
    model, tok, texts, scoring, calls, pruner = _setup(tmp_path, monkeypatch)
    config = FinetuneConfig(method="full", steps=2, eval_every=2, batch_size=2, max_length=32)

    def cell(pairs, seed=0, config=config, teacher=False):
        return recovery_cell(model, tok, "tiny", "math", seed, scoring, pruner=pruner, calibration=pruner.texts(texts, seed),
                             pairs=pairs, finetune_config=config, with_teacher=teacher)

    pairs = (texts[:4], texts[4:])
    first = cell(pairs)
    assert cell(pairs) == first and calls["finetune"] == 1  # asked again (by the other benchmark): read back
    # settings training does not read without a teacher (the ablation sets them on every row) do not split the cell
    assert cell(pairs, config=config.replace(kd_weight=0.5, teacher_mode="rewrite")) == first and calls["finetune"] == 1
    assert first["steps_run"] == 2 and first["test_loss"] > 0
    # scored under another key (here the same documents, labelled differently): a new cell from the kept weights, which
    # score exactly as the trained model did, and no second training
    relabelled = Scoring(scoring.test, None, 5, None, (), 10)
    rescored = recovery_cell(model, tok, "tiny", "math", 0, relabelled, pruner=pruner, calibration=pruner.texts(texts, 0),
                             pairs=pairs, finetune_config=config)
    assert calls["finetune"] == 1 and rescored["history"] == first["history"] and rescored["test_loss"] == first["test_loss"]
    for other in (lambda: cell((texts[:4], texts[:4])),           # other training pairs
                  lambda: cell(pairs, seed=1),                     # another calibration seed
                  lambda: cell(pairs, config=config.replace(lr=1e-3)),
                  lambda: cell(pairs, teacher=True)):              # matching the teacher's distributions
        before = calls["finetune"]
        other()
        assert calls["finetune"] == before + 1
    assert len(list((tmp_path / "benchmark-steps" / "recovery").glob("*.json"))) == 6
    assert len(list((tmp_path / "benchmark-steps" / "recovery-model").glob("*.pt"))) == 5  # one set of weights per trained model


def test_untrained_cells_and_pruned_models_are_shared_where_nothing_differs(tmp_path, monkeypatch):
    model, tok, texts, scoring, calls, pruner = _setup(tmp_path, monkeypatch)
    # the unpruned model does not depend on the seed: one cell for every seed
    assert recovery_cell(model, tok, "tiny", "math", 0, scoring) == recovery_cell(model, tok, "tiny", "math", 3, scoring)
    pruned = [recovery_cell(model, tok, "tiny", "math", seed, scoring, pruner=pruner, calibration=pruner.texts(texts, seed))
              for seed in (0, 0, 1)]
    assert pruned[0] == pruned[1] and calls["prune"] == 2  # each seed's pruned model pruned once
    assert len(list((tmp_path / "benchmark-steps" / "recovery").glob("*.json"))) == 3


def test_a_stratified_pick_is_its_own_cell_and_the_test_loss_is_the_sources_losses_together(tmp_path, monkeypatch):
    from finescope_nb.evaluate import domain_loss

    model, tok, texts, scoring, calls, pruner = _setup(tmp_path, monkeypatch)
    config = FinetuneConfig(method="full", steps=2, eval_every=2, batch_size=2, max_length=32)
    ids = [tok(t)["input_ids"] for t in texts[:4]]
    first = Scoring({"math": {"a": ids[:1], "b": ids[1:]}}, {"math": ids[:2]}, 4, 2, (), 10)
    stratified = Scoring({"math": {"a": ids[:1], "b": ids[1:]}}, {"math": ids[2:]}, 4, 2, (), 10, "stratified")

    def cell(scoring):
        return recovery_cell(model, tok, "tiny", "math", 0, scoring, pruner=pruner, calibration=pruner.texts(texts, 0),
                             pairs=(texts[:4], texts[4:]), finetune_config=config)

    cell(first)
    picked = cell(stratified)
    assert calls["finetune"] == 2  # another validation set: trained again, never read back from the first pick's weights
    by_source = picked["test_loss_by_source"]
    assert set(by_source) == {"a", "b"} and min(by_source.values()) < picked["test_loss"] < max(by_source.values())
    # the whole is what one pass over every test sequence gives (the untrained model: the same weights here)
    untouched = recovery_cell(model, tok, "tiny", "math", 0, stratified)
    assert untouched["test_loss"] == pytest.approx(domain_loss(model, tok, ids), rel=1e-5)
