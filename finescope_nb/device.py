"""Which device the kit computes on: `--device auto|cpu|cuda` and bfloat16 compute on CUDA.

Stages never pick a device themselves: they run where the model's weights are
(`model_device`) and move their own tensors there, and bring results back to the CPU where they
become NumPy arrays or files. So choosing the device is one decision, made when the model is loaded.
"""

from __future__ import annotations

import torch

from finescope_nb.errors import FinescopeError

DEVICES = ("auto", "cpu", "cuda")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' is CUDA when torch sees a GPU, else the CPU; 'cuda' without a GPU is refused."""
    base = str(name).split(":")[0]
    if base not in DEVICES:
        raise FinescopeError(f"Unknown device {name!r}; choose one of {', '.join(DEVICES)} (or cuda:N).")
    if base == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise FinescopeError(f"--device {name} was requested but torch sees no CUDA GPU on this machine "
                             f"(torch {torch.__version__}); use --device cpu or --device auto.")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """float32 anywhere; bfloat16 compute only on CUDA (on the CPU it is slower than float32 and loses precision)."""
    if name not in DTYPES:
        raise FinescopeError(f"Unknown compute dtype {name!r}; choose one of {', '.join(DTYPES)}.")
    if name == "bfloat16" and device.type != "cuda":
        raise FinescopeError(f"bfloat16 compute is offered on CUDA only, but the device is {device}; "
                             "drop --dtype bfloat16 or use --device cuda.")
    return DTYPES[name]


def model_device(model) -> torch.device:
    """Where the model's weights are, which is where every stage computes."""
    return next(model.parameters()).device
