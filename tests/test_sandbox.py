"""The sandbox holds against what a model's code could do by accident or by design, and the kit survives it."""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from finescope_nb.errors import FinescopeError
from finescope_nb.evaluate.sandbox import SandboxLimits, isolation, run_program

ROOT = Path(__file__).resolve().parent.parent
SHORT = SandboxLimits(timeout_s=2.0)
MARGIN_S = 3.0  # the machine may be busy; a runaway program would take far longer than this

needs_drop = pytest.mark.skipif(isolation().user is None, reason="the kit is not root, so programs keep its user")
needs_namespaces = pytest.mark.skipif(not isolation().namespaces, reason="this system refuses new namespaces")


def _processes_of(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def test_a_normal_program_passes_and_a_failing_one_does_not():
    ok = run_program("print(sum(range(10)))")
    assert ok.passed and ok.status == "passed" and ok.returncode == 0 and ok.stdout_tail.strip() == "45"
    bad = run_program("assert 1 + 1 == 3")
    assert not bad.passed and bad.status == "failed" and "AssertionError" in bad.stderr_tail
    syntax = run_program("def f(:\n    pass")
    assert syntax.status == "failed" and "SyntaxError" in syntax.stderr_tail


def test_infinite_loop_is_killed_at_the_time_limit():
    start = time.monotonic()
    result = run_program("while True:\n    pass", SandboxLimits(timeout_s=1.5))
    elapsed = time.monotonic() - start
    assert not result.passed and result.status == "timeout"
    assert elapsed < 1.5 + MARGIN_S
    sleeper = run_program("import time\ntime.sleep(600)", SandboxLimits(timeout_s=1.0))
    assert sleeper.status == "timeout" and sleeper.seconds < 1.0 + MARGIN_S


def _sandbox_processes_left() -> list[int]:
    """Processes of the sandbox user still alive a few seconds after a run (none expected)."""
    if isolation().user is None:
        return []
    uid = pwd.getpwnam(isolation().user).pw_uid
    deadline = time.monotonic() + 5
    while _processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _processes_of(uid)


def test_fork_bomb_is_contained_and_leaves_nothing_behind():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.monotonic()
    result = run_program(bomb, SHORT)
    assert not result.passed and result.status in ("timeout", "failed")
    assert time.monotonic() - start < SHORT.timeout_s + MARGIN_S
    assert _sandbox_processes_left() == []
    assert subprocess.run(["true"]).returncode == 0  # the test process can still start processes


@needs_namespaces
def test_a_process_that_leaves_the_group_dies_with_the_run():
    escape = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\n"
    assert run_program(escape, SHORT).passed
    assert _sandbox_processes_left() == []


@needs_drop
def test_program_runs_as_an_unprivileged_user_and_cannot_write_outside_its_folder():
    assert run_program("import os\nassert os.getuid() != 0 and os.geteuid() != 0 and os.getgroups() == []").passed
    outside = Path(tempfile.mkdtemp(prefix="finescope-sandbox-test-"))
    try:
        os.chmod(outside, 0o755)  # reachable by anyone, writable only by root
        for target in (outside / "planted.txt", ROOT / f"planted-{uuid.uuid4().hex}.txt"):
            try:
                result = run_program(f"open({str(target)!r}, 'w').write('x')")
                assert not result.passed and "PermissionError" in result.stderr_tail
                assert not target.exists()
            finally:
                target.unlink(missing_ok=True)
    finally:
        shutil.rmtree(outside)


def test_working_folder_is_fresh_private_and_deleted_afterwards():
    result = run_program("import os\nprint(os.getcwd())\nprint(os.environ['HOME'])\nprint(sorted(os.environ))\n"
                         "open('scratch.txt', 'w').write('x')\nassert os.listdir('.') == ['scratch.txt']")
    assert result.passed, result.stderr_tail
    cwd, home, names = result.stdout_tail.splitlines()
    assert cwd == home and not Path(cwd).exists()
    assert "HF_HOME" not in names and "FINESCOPE_FAST" not in names  # the kit's environment does not leak in


def test_sockets_are_refused_and_nothing_reaches_a_local_listener():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        created = run_program("import socket\nsocket.socket()")
        assert not created.passed and "network access is disabled" in created.stderr_tail
        connect = run_program(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)")
        assert not connect.passed
        with pytest.raises(BlockingIOError):
            listener.accept()


@needs_namespaces
def test_network_namespace_stops_a_raw_libc_connect():
    raw = ("import ctypes, struct, sys\nlibc = ctypes.CDLL(None, use_errno=True)\nfd = libc.socket(2, 1, 0)\n"
           "assert fd >= 0, 'no socket at all'\n"
           "addr = struct.pack('=H', 2) + struct.pack('!H', {port}) + bytes([127, 0, 0, 1]) + bytes(8)\n"
           "rc = libc.connect(fd, ctypes.create_string_buffer(addr, 16), 16)\n"
           "sys.exit('connected' if rc == 0 else 'refused, errno %d' % ctypes.get_errno())\n")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        result = run_program(raw.format(port=listener.getsockname()[1]))
        assert not result.passed and "refused" in result.stderr_tail
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_memory_and_file_size_are_capped():
    memory = run_program("blob = bytearray(8 << 30)", SandboxLimits(memory_mb=512))
    assert not memory.passed and "MemoryError" in memory.stderr_tail
    big = run_program("open('big.bin', 'wb').write(bytes(64 << 20))", SandboxLimits(file_size_mb=4))
    assert not big.passed and "File too large" in big.stderr_tail


def test_bad_limits_are_refused():
    with pytest.raises(FinescopeError, match="timeout_s"):
        run_program("pass", SandboxLimits(timeout_s=0))
    with pytest.raises(FinescopeError, match="memory_mb"):
        run_program("pass", SandboxLimits(memory_mb=0))


def test_kit_still_works_after_the_abuse():
    assert run_program("import json, math\nassert json.loads('[1]') == [1] and math.isclose(math.e, 2.71828, rel_tol=1e-5)").passed
