"""`--device` and `--dtype`: what resolves to what, and the refusals (on any machine, GPU or not)."""

import subprocess
import sys

import pytest
import torch

from finescope_nb.device import model_device, resolve_device, resolve_dtype
from finescope_nb.errors import FinescopeError
import tiny_models as tm


def test_auto_is_the_cpu_without_a_gpu_and_cuda_with_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda:1")


def test_cuda_without_a_gpu_and_unknown_names_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for bad, words in (("cuda", ("no CUDA GPU", "--device cpu")), ("tpu", ("auto, cpu, cuda",))):
        with pytest.raises(FinescopeError) as excinfo:
            resolve_device(bad)
        message = str(excinfo.value)
        assert "\n" not in message and message.endswith(".") and all(w in message for w in words), message


def test_device_names_torch_cannot_read_or_gpus_that_are_not_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for bad, words in (("cuda:abc", ("cpu, cuda or cuda:N",)), ("cuda:7", ("GPU 7", "cuda:0 to cuda:0"))):
        with pytest.raises(FinescopeError) as excinfo:
            resolve_device(bad)
        message = str(excinfo.value)
        assert "\n" not in message and message.endswith(".") and all(w in message for w in words), message


def test_bfloat16_compute_only_on_cuda():
    assert resolve_dtype("float32", torch.device("cpu")) is torch.float32
    assert resolve_dtype("bfloat16", torch.device("cuda")) is torch.bfloat16
    with pytest.raises(FinescopeError, match="CUDA only"):
        resolve_dtype("bfloat16", torch.device("cpu"))


def test_stages_compute_where_the_model_is():
    model = tm.make_model("llama")
    assert model_device(model) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_run_with_cuda_on_a_cpu_machine_is_refused_before_any_work(tmp_path):
    out = subprocess.run([sys.executable, "-m", "finescope_nb.cli", "run", "--device", "cuda", "--run-dir", str(tmp_path / "r")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "no CUDA GPU" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()
