import pytest
import torch

from finescope_nb import basemodel
from finescope_nb.config import BaseModelConfig
from finescope_nb.corpus import load_pool
from finescope_nb.errors import FinescopeError

TINY = BaseModelConfig(vocab_size=400, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                       intermediate_size=64, seq_len=32, batch_size=4, max_steps=6, warmup_steps=2,
                       checkpoint_every=2, max_train_minutes=None)


@pytest.fixture(scope="module")
def pool_slice():
    pool = load_pool()
    return pool.shuffle(seed=0).select(range(60))["text"]


def test_trains_and_resume_matches_uninterrupted_run(tmp_path, pool_slice):
    model_a, tok, state_a = basemodel.train(TINY, pool_slice, tmp_path / "a", progress=False)
    assert state_a.step == TINY.max_steps
    first, last = state_a.history[0][1], state_a.history[-1][1]
    assert last < first  # it learns something in six steps

    class Stop(Exception):
        pass

    def interrupt(step, loss):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        basemodel.train(TINY, pool_slice, tmp_path / "b", on_step=interrupt, progress=False)
    model_b, _, state_b = basemodel.train(TINY, pool_slice, tmp_path / "b", progress=False)
    assert state_b.step == TINY.max_steps
    assert [h[1] for h in state_b.history] == [h[1] for h in state_a.history]
    for (name, pa), pb in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_tokenizer_prepends_eos_and_round_trips(pool_slice):
    tok = basemodel.train_tokenizer(pool_slice, 400)
    text = "def f(x):\n    return x ** 2  # é"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_default_shape_is_block_dominated():
    cfg = BaseModelConfig()
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                         intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
                         num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads)
    assert basemodel.forward_macs(config, cfg.seq_len)["block_share"] >= 0.75


def test_resume_with_other_config_is_refused(tmp_path, pool_slice):
    basemodel.train(TINY.replace(max_steps=2), pool_slice, tmp_path / "c", progress=False)
    with pytest.raises(FinescopeError, match="different training config"):
        basemodel.train(TINY.replace(max_steps=2, lr=1e-4), pool_slice, tmp_path / "c", progress=False)


def test_damaged_checkpoint_is_one_sentence(tmp_path, pool_slice):
    basemodel.train(TINY.replace(max_steps=2), pool_slice, tmp_path / "d", progress=False)
    state = tmp_path / "d" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    with pytest.raises(FinescopeError, match="cannot be read") as excinfo:
        basemodel.train(TINY.replace(max_steps=4), pool_slice, tmp_path / "d", progress=False)
    assert "\n" not in str(excinfo.value) and str(state) in str(excinfo.value)


def test_bad_gqa_shape(pool_slice):
    tok = basemodel.train_tokenizer(pool_slice[:5], 300)
    with pytest.raises(FinescopeError, match="grouped-query"):
        basemodel.model_config(TINY.replace(num_heads=4, num_kv_heads=3), tok)


def test_empty_texts(tmp_path):
    with pytest.raises(FinescopeError, match="non-empty pool"):
        basemodel.train(TINY, [], tmp_path)
