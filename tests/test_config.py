import json
import subprocess
import sys

import pytest

from finescope_nb.config import BaseModelConfig, EvalConfig, RunConfig, load_config
from finescope_nb.errors import FinescopeError


def test_round_trip_nested_config():
    cfg = RunConfig(domain="code", eval=EvalConfig(domains=("math", "code"), max_docs_per_domain=5), seed=3)
    back = RunConfig.from_json(cfg.to_json())
    assert back == cfg
    assert isinstance(back.eval, EvalConfig) and back.eval.domains == ("math", "code")


def test_hash_is_stable_and_sensitive():
    a, b = RunConfig(), RunConfig()
    assert a.config_hash() == b.config_hash()
    assert a.config_hash() != a.replace(seed=1).config_hash()
    assert a.config_hash() != a.replace(eval=a.eval.replace(max_length=128)).config_hash()


def test_hash_is_the_same_in_another_process():
    code = "from finescope_nb.config import RunConfig; print(RunConfig().config_hash())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == RunConfig().config_hash()


def test_unknown_field_is_one_sentence():
    with pytest.raises(FinescopeError, match="no field 'hidden'") as err:
        BaseModelConfig.from_dict({"hidden": 3})
    assert "\n" not in str(err.value)


def test_load_config_errors(tmp_path):
    with pytest.raises(FinescopeError, match="does not exist"):
        load_config(tmp_path / "nope.json", RunConfig)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FinescopeError, match="not valid JSON"):
        load_config(bad, RunConfig)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(RunConfig(domain="stem").to_dict()))
    assert load_config(good, RunConfig).domain == "stem"


def test_seed_draw_is_checked_and_stratified_by_default():
    from finescope_nb.config import CurationConfig

    assert CurationConfig().seed_draw == "stratified"
    with pytest.raises(FinescopeError) as e:
        CurationConfig(seed_draw="sorted")
    assert "--seed-draw" in str(e.value) and "stratified, random" in str(e.value)


@pytest.mark.parametrize("make", [lambda: RunConfig(seed=-1), lambda: BaseModelConfig(seed=-3),
                                  lambda: RunConfig.from_dict({"prune": {"seed": -1}}),
                                  lambda: RunConfig.from_dict({"finetune": {"seed": 1.5}})])
def test_a_negative_or_fractional_seed_is_one_sentence_from_any_config(make):
    """NumPy would refuse a negative seed only once a stage runs, with its own traceback."""
    with pytest.raises(FinescopeError, match=r"seed must be a whole number 0 or more") as err:
        make()
    assert "\n" not in str(err.value)


def test_the_sae_config_checks_its_seed_beside_its_own_fields():
    from finescope_nb.sae.registry import SAEConfig

    assert SAEConfig(seed=7).seed == 7
    with pytest.raises(FinescopeError, match="SAEConfig.seed"):
        SAEConfig(seed=-1)
