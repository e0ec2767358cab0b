"""benchmarks/memory.py: a reset high-water mark reports the peak of what follows, not of what came before."""

import subprocess
import sys

from benchmarks import memory
from finescope_nb.paths import REPO_ROOT

SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from benchmarks.memory import peak_kib, reset_peak, status_kib
block = bytearray(300 << 20)  # 300 MiB, touched so that it is resident
block[::4096] = b"x" * len(block[::4096])
before = peak_kib()
del block
resettable = reset_peak()
rss = status_kib("VmRSS")  # read before the new peak, which can only have grown since
print(before, int(resettable), peak_kib(), rss)
"""


def test_reset_peak_forgets_a_freed_allocation():
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(REPO_ROOT))], capture_output=True, text=True, check=True)
    before, resettable, after, rss = map(int, out.stdout.split())
    assert before > 300 << 10  # KiB: the allocation was counted
    if resettable:
        assert after < before - (200 << 10) and after >= rss  # the 300 MiB peak is gone; the new one is at least today's RSS
    else:
        assert after == before  # no reset where clear_refs is refused: the peak since start, as ru_maxrss


def test_status_fields_are_read_in_kib():
    assert 0 < memory.status_kib("VmRSS") <= memory.status_kib("VmHWM")
