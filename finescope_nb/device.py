"""Which device the kit computes on: `--device auto|cpu|cuda` and bfloat16 compute on CUDA.

Stages never pick a device themselves: they run where the model's weights are
(`model_device`) and move their own tensors there, and bring results back to the CPU where they
become NumPy arrays or files. So choosing the device is one decision, made when the model is loaded.
"""

from __future__ import annotations

import logging

import torch

from finescope_nb import distributed
from finescope_nb.errors import FinescopeError

log = logging.getLogger("finescope")

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
    try:
        device = torch.device(name)
    except RuntimeError:
        raise FinescopeError(f"Device {name!r} is not a device name torch reads; use cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise FinescopeError(f"--device {name} names GPU {device.index}, but torch sees {torch.cuda.device_count()} "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); pick one of those.")
    return device


def run_device(device: str | None = None, device_map=None) -> torch.device | None:
    """The one device rule. Under a launcher each process computes on the device the launcher gave it
    (a `device` naming another is overruled, with a warning); without one `device` applies ('auto' when
    None). A `device_map` places one model over several devices instead (None is returned), and is
    refused together with a `device` and under a launcher."""
    if device is not None and device_map is not None:
        raise FinescopeError(f"--device {device} and a device_map were both given; a device_map already places every "
                             "block, so pass one of them.")
    if device_map is not None:
        if distributed.launched():
            raise FinescopeError("A device_map spreads one model over devices, but under a launcher every process holds "
                                 "its own whole model; run a device_map model in one process.")
        return None
    if not distributed.launched():
        return resolve_device(device or "auto")
    given = distributed.device()
    if device not in (None, "auto") and resolve_device(device) != given:
        log.warning("--device %s is overruled under the launcher: process %d computes on %s.", device, distributed.rank(), given)
    return given


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """float32 anywhere; bfloat16 compute only on CUDA (on the CPU it is slower than float32 and loses precision)."""
    if name not in DTYPES:
        raise FinescopeError(f"Unknown compute dtype {name!r}; choose one of {', '.join(DTYPES)}.")
    if name == "bfloat16" and device.type != "cuda":
        raise FinescopeError(f"bfloat16 compute is offered on CUDA only, but the device is {device}; "
                             "drop --dtype bfloat16 or use --device cuda.")
    return DTYPES[name]


def model_device(model) -> torch.device:
    """Where the model's weights are, which is where every stage computes. For a model placed with a
    device_map (`load_model(..., device_map=...)`) it is where its inputs go: the first accelerator in
    the map, or the CPU when the map holds only the CPU and the disk (offloaded blocks run there)."""
    placement = getattr(model, "hf_device_map", None)
    if placement and len(set(placement.values())) > 1 or placement and "disk" in placement.values():
        on = [d for d in placement.values() if d not in ("cpu", "disk")]
        return torch.device(f"cuda:{on[0]}" if isinstance(on[0], int) else on[0]) if on else torch.device("cpu")
    return next(model.parameters()).device


def offloaded(module) -> bool:
    """Whether this module's own weights are kept off the device (CPU or disk offload under a device_map):
    they are read in only for the module's forward, so they hold no values between calls and gather no .grad."""
    return any(p.device.type == "meta" for p in module.parameters(recurse=False))


def parameter_values(module) -> dict[str, torch.Tensor]:
    """The module's own weights by name, with values even when they are offloaded (read from the
    offload store that Accelerate's placement hook keeps beside the module)."""
    store = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
    return {name: store[name] if p.device.type == "meta" and store is not None else p.detach()
            for name, p in module.named_parameters(recurse=False)}
