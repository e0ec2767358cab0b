"""The kit's one view of several processes: who am I, which share of the work is mine, combine.

Under `accelerate launch` (or any torch.distributed launcher that sets WORLD_SIZE) every process
runs the same code; the heavy loops take their share of whole batches (`shard`), and combine by
summing (`all_reduce_sums`, `all_reduce_numbers`) or by gathering in rank order, which is document
order because shards are contiguous (`gather_in_order`). Without a launcher every helper is the
identity and nothing from Accelerate is imported, so a single process runs exactly as before.

This is the only module that talks to Accelerate or torch.distributed: stages call these helpers
and never learn which launcher started them.
"""

from __future__ import annotations

import functools
import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from finescope_nb.errors import FinescopeError

log = logging.getLogger("finescope")


def launched() -> bool:
    """Whether a launcher started several processes (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@functools.cache
def _state():
    from accelerate import PartialState  # initialises the process group: gloo on CPU, NCCL on GPUs

    return PartialState(cpu=not torch.cuda.is_available())


def rank() -> int:
    return _state().process_index if launched() else 0


def world_size() -> int:
    return _state().num_processes if launched() else 1


def is_main() -> bool:
    return rank() == 0


def device() -> torch.device:
    """The device the launcher gave this process (its own GPU, or the CPU)."""
    where = _state().device
    return torch.device("cpu") if where.type == "cpu" else where


def shard(n: int, unit: int = 1) -> range:
    """This process's contiguous share of `n` items, cut at multiples of `unit` (whole batches).

    Shards are contiguous and in rank order, so concatenating per-rank results restores item order;
    with more processes than units the last ones get an empty range."""
    if not launched():
        return range(n)
    units = -(-n // unit)
    per = -(-units // world_size())
    start, stop = min(rank() * per, units), min((rank() + 1) * per, units)
    return range(min(start * unit, n), min(stop * unit, n))


def barrier() -> None:
    if launched():
        _state().wait_for_everyone()


def gather_in_order(items: list) -> list:
    """Every process's `items` concatenated in rank order (each process gets the whole list)."""
    if not launched():
        return list(items)
    parts: list = [None] * world_size()
    torch.distributed.all_gather_object(parts, list(items))
    return [item for part in parts for item in part]


def broadcast(value: Any) -> Any:
    """The main process's `value`, on every process (what main decided, e.g. which shards are missing)."""
    if not launched():
        return value
    _state()  # the process group exists once Accelerate's state does
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sums(sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each entry summed over processes. A process that saw no data for a key (an empty shard) adds zeros,
    so the keys may differ between processes; the result has their union."""
    if not launched():
        return sums
    shapes: list = [None] * world_size()
    torch.distributed.all_gather_object(shapes, {k: (tuple(v.shape), str(v.dtype)) for k, v in sums.items()})
    union = {k: v for part in shapes for k, v in part.items()}
    where = next((v.device for v in sums.values()), device())
    out = {}
    for key in sorted(union):
        shape, dtype = union[key]
        value = sums[key] if key in sums else torch.zeros(shape, dtype=getattr(torch, dtype.split(".")[-1]), device=where)
        torch.distributed.all_reduce(value)
        out[key] = value
    return out


def all_reduce_numbers(*numbers: float) -> list[float]:
    """Plain numbers (token counts, summed losses) added over processes, in float64."""
    if not launched():
        return list(numbers)
    value = torch.tensor(numbers, dtype=torch.float64, device=device())
    torch.distributed.all_reduce(value)
    return value.tolist()


def agree(what: str, value: dict[str, Any]) -> None:
    """Refuse, before any work, when processes hold different `value`s (their configs, their pools):
    the sentence names the first entry where a process differs from the main process."""
    if not launched():
        return
    seen = gather_in_order([value])
    for other, theirs in enumerate(seen[1:], start=1):
        for key in sorted(set(seen[0]) | set(theirs)):
            if seen[0].get(key) != theirs.get(key):
                raise FinescopeError(f"Process {other} has a different {what} from the main process at {key!r} "
                                     f"({_short(theirs.get(key))} against {_short(seen[0].get(key))}); start every "
                                     "process with the same config and data.")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@contextmanager
def main_only(what: str | None) -> Iterator[bool]:
    """A step that does not split (SAE training, planning, surgery, writing the run folder): the main
    process does it while the others wait at the end of the block; yields whether this process is main.
    `what` names the step in the log (None: a plain write, not worth a line)."""
    if launched() and is_main() and what:
        log.warning("%s runs on the main process; the other %d process(es) wait.", what, world_size() - 1)
    try:
        yield is_main()
    finally:
        barrier()


def prepare(model, optimizer):
    """(model, optimizer) ready for data-parallel training: Accelerate's DistributedDataParallel wrapper,
    which averages gradients over processes in the backward, around the same modules (train the wrapper,
    keep using the model itself for everything else); unchanged without a launcher."""
    if not launched():
        return model, optimizer
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=device().type == "cpu")
    return accelerator.prepare(model, optimizer)

