"""Resident memory from /proc/self/status (Linux), for the benchmarks that measure a peak in a fresh process.

Kept to the standard library, so that importing it into the small scripts those benchmarks run in a
subprocess adds nothing of its own to the peak they report.
"""

from __future__ import annotations

import resource
from pathlib import Path


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB: VmRSS (now) or VmHWM (the high-water mark)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} is not in /proc/self/status")


def reset_peak() -> bool:
    """Make VmHWM the current RSS (so that what follows measures its own peak); False where the kernel or
    sandbox does not allow writing /proc/self/clear_refs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_kib(resettable: bool = True) -> int:
    """The peak since the last reset, or since the process started (ru_maxrss) where no reset was possible."""
    return status_kib("VmHWM") if resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
