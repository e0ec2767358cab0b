"""Data-parallel stages under `accelerate launch` (2 processes, gloo on the CPU) give the one-process
results; a model placed with a device_map that keeps half its blocks on disk gives the in-memory
results; the device rule's refusals."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tiny_models as tm
import distributed_checks as checks
from finescope_nb import distributed
from finescope_nb.adapters import get_adapter
from finescope_nb.device import run_device
from finescope_nb.distill.finetune import finetune
from finescope_nb.errors import FinescopeError
from finescope_nb.lm import load_model, save_model
from finescope_nb.prune import compute_importance
from finescope_nb.sae import LayerSAE, SAEConfig, encode_corpus, train_sae

ROOT = Path(__file__).resolve().parent.parent


def one_sentence(message: str, *words):
    assert "\n" not in message and message.endswith("."), message
    for word in words:
        assert word in message, (word, message)


def free_port() -> int:
    """A port nobody listens on now (other test runs on this machine may be launching too)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def sae_folder(tmp_path_factory):
    model, tok = tm.llama(), tm.tokenizer()
    sae = train_sae(model, tok, tm.texts(150, seed=1), SAEConfig(layer=1, d_sae=64, k=4, train_tokens=2048, batch_size=256),
                    progress=False)
    return sae.save(tmp_path_factory.mktemp("sae") / "sae")


@pytest.fixture(scope="module")
def launched(sae_folder, tmp_path_factory):
    """One launcher run of every check under 2 processes; its main process's results."""
    out = tmp_path_factory.mktemp("two")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
               str(ROOT / "tests" / "distributed_checks.py"), str(out), str(sae_folder)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, torch.load(out / "results.pt", weights_only=True), done.stderr


@pytest.fixture(scope="module")
def alone(sae_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    return checks.run_checks(out, sae_folder, launched=False)


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> bool:
    return bool(((a - b).abs() <= rel * b.abs().clamp_min(1e-6)).all())


def test_two_processes_give_the_one_process_results(launched, alone):
    out, two, log = launched
    for name, value in alone["sae"].items():  # trained on the main process from activations captured by both
        torch.testing.assert_close(two["sae"][name], value, rtol=0, atol=1e-5)
    assert "SAE training (sae-lens, one process) runs on the main process" in log
    assert two["doc_ids"] == alone["doc_ids"] == list(checks.POOL["id"])  # document order kept
    for name, array in alone["codes"].items():
        if name.endswith("indices"):
            assert torch.equal(two["codes"][name], array), name
        else:
            torch.testing.assert_close(two["codes"][name], array, rtol=0, atol=1e-5)
    assert two["tokens"] == alone["tokens"]
    for kind in ("heads", "channels", "activation_channels"):
        for layer, scores in alone[kind].items():
            assert close(two[kind][layer], scores), (kind, layer)
    for name, value in alone["lora"].items():  # two LoRA steps on a global batch of 4, split 2 + 2
        torch.testing.assert_close(two["lora"][name], value, rtol=0, atol=1e-5)
    assert two["val_loss"] == pytest.approx(alone["val_loss"], rel=1e-6)  # the data-parallel evaluation inside training
    assert two["regenerated"] == alone["regenerated"]
    assert two["ppl"]["tokens"] == alone["ppl"]["tokens"]
    assert two["ppl"]["loss"] == pytest.approx(alone["ppl"]["loss"], rel=1e-9)
    assert "Merging the pool's code shards runs on the main process" in log


def test_a_run_interrupted_under_two_processes_resumes_under_one(launched, alone):
    out, two, _ = launched
    assert two["interrupted"] and (out / "finetune.pt").is_file()
    prompts, responses = checks.pairs()
    calls = []
    resumed, history = finetune(tm.llama(), tm.tokenizer(), prompts, responses, checks.RESUMED, progress=False,
                                checkpoint=out / "finetune.pt", callback=calls.append)
    assert [r["step"] for r in history.to_dict("records")] == [0, 2, 4]  # steps 1-2 came from the checkpoint
    for name, value in alone["uninterrupted"].items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=1e-5)


def test_processes_that_disagree_are_refused_before_any_work(launched):
    out, two, _ = launched
    pool, config, device_map, device = two["refusals"]
    one_sentence(pool, "Process 1", "pool", "texts")
    one_sentence(config, "Process 1", "config", "prune.ratio", "0.4", "0.3")
    one_sentence(device_map, "device_map", "launcher")
    assert device == "cpu"  # the launcher's device (gloo on a machine without GPUs)
    assert not (out / "other").exists() and not (out / "run").exists()


def half_on_disk(model) -> dict:
    """Every block in the second half on disk, the rest (and everything outside blocks) in memory."""
    names = {id(m): n for n, m in model.named_modules()}
    blocks = [names[id(b)] for b in get_adapter(model).decoder_layers(model)]
    placement = {}
    for name, _ in [*model.named_parameters(remove_duplicate=False), *model.named_buffers()]:
        block = next((i for i, b in enumerate(blocks) if name.startswith(b + ".")), None)
        if block is None:
            placement[name.rsplit(".", 1)[0]] = "cpu"
        else:
            placement[blocks[block]] = "disk" if block >= len(blocks) // 2 else "cpu"
    return placement


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_model_with_half_its_blocks_on_disk_gives_the_in_memory_codes_and_importance(arch, sae_folder, tmp_path):
    model, tok = (tm.llama() if arch == "llama" else tm.gpt2(layers=4)), tm.tokenizer()
    save_model(model, tok, tmp_path / "model")
    placement = half_on_disk(model)
    assert sorted(set(placement.values())) == ["cpu", "disk"]
    placed = load_model(tmp_path / "model", device_map=placement, offload_folder=tmp_path / "offload")
    assert any(p.device.type == "meta" for p in placed.parameters())  # the disk half is really not in memory
    if arch == "llama":
        sae = LayerSAE.load(sae_folder, model)
        ids = list(checks.POOL["id"])
        a = encode_corpus(sae, model, tok, checks.TEXTS, ids, tmp_path / "a", top_l=8, progress=False)
        b = encode_corpus(sae, placed, tok, checks.TEXTS, ids, tmp_path / "b", top_l=8, progress=False)
        for p in ("mean", "max"):
            assert (a.indices[p] == b.indices[p]).all()
            torch.testing.assert_close(torch.tensor(b.values[p][:]), torch.tensor(a.values[p][:]), rtol=0, atol=1e-5)
    last = get_adapter(model).num_layers(model) - 1
    for criterion, memory in (("taylor", "default"), ("taylor2", "bounded"), ("taylor_per_batch", "bounded"), ("activation", "default")):
        config = checks.PRUNE.replace(criterion=criterion, memory=memory, last_layer=last)
        want = compute_importance(model, tok, checks.TEXTS, config, progress=False)
        got = compute_importance(placed, tok, checks.TEXTS, config, progress=False)
        for layer in want.heads:
            assert close(got.heads[layer], want.heads[layer]) and close(got.channels[layer], want.channels[layer]), (criterion, layer)
    assert all(p.device.type == "meta" for n, p in placed.named_parameters() if placement.get(n.rsplit(".", 3)[0]) == "disk")


def test_device_map_refusals(tmp_path):
    model, tok = tm.llama(), tm.tokenizer()
    save_model(model, tok, tmp_path / "model")
    with pytest.raises(FinescopeError) as excinfo:
        load_model(tmp_path / "model", device="cpu", device_map="auto")
    one_sentence(str(excinfo.value), "device", "device_map")
    with pytest.raises(FinescopeError) as excinfo:
        run_device("cpu", "auto")
    one_sentence(str(excinfo.value), "--device cpu", "device_map")
    split = {**half_on_disk(model), "model.layers.1.mlp": "disk"}  # half a block elsewhere: the block hooks cannot follow
    with pytest.raises(FinescopeError) as excinfo:
        load_model(tmp_path / "model", device_map=split)
    one_sentence(str(excinfo.value), "model.layers.1.mlp", "whole blocks")
    assert run_device(None, None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert not distributed.launched() and distributed.shard(10, 4) == range(10)


def test_cli_refuses_device_map_with_device(tmp_path):
    out = subprocess.run([sys.executable, "-m", "finescope_nb.cli", "run", "--device", "cpu", "--device-map", "auto",
                          "--run-dir", str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "device_map" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "r").exists()
