"""Run untrusted, model-written Python in a throwaway process that cannot harm the kit.

Code benchmarks execute whatever the model wrote, so every program goes through `run_program`,
which stacks independent layers (where one is unavailable, the others still hold):

* a separate `python -I -B` process in its own session (so its own process group), with a
  minimal environment, a fresh temporary working directory (also HOME and TMPDIR) deleted
  afterwards, stdin closed and output captured into files bounded by the file-size limit;
* fresh network and PID namespaces where the system allows them (as root, or through an
  unprivileged user namespace): no network at all, and when the program's first process ends,
  the kernel kills everything it started; in every case the socket constructors are also
  replaced by a function that raises (a speed bump only: ctypes gets around it, the namespace
  does not let it through);
* resource limits set before any untrusted line runs: CPU seconds, address space, file size,
  process count, open files, no core dumps;
* when the kit runs as root, the program drops to `nobody`, so it cannot write the kit's files
  or signal the kit;
* a wall-clock limit enforced by a guard process that outranks the program, with the kit
  killing the whole process group afterwards as a backstop. Without namespaces, a process that
  left the group (setsid) can outlive the run until its CPU limit.

The layers are put in place by a small trusted runner (the `_RUNNER` script) in the child
interpreter. It enters the namespaces and stays behind as the guard (deadline, verdict). It forks
the namespace's init, which reaps orphans, records the program's exit status and dies with the
guard. The init forks the program's process (the program is not init itself: init ignores every
signal it has no handler for, SIGXCPU from the CPU limit included), which sets the limits, drops
privileges, installs the socket guard and only then runs the program with `runpy`. Nothing runs
in the forked kit process itself, since `preexec_fn` is unsafe next to torch's threads.
"""

from __future__ import annotations

import functools
import json
import math
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from finescope_nb.errors import FinescopeError

SETUP_FAILED = 111  # the runner's exit code when it could not put a layer in place; the program never ran
TAIL_CHARS = 2000
GRACE_S = 5.0  # the kit's backstop waits this much longer than the runner's own deadline

_RUNNER = r'''
import json, os, resource, select, sys, time

CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, PR_SET_PDEATHSIG = 0x10000000, 0x20000000, 0x40000000, 1

with open(sys.argv[1]) as f:
    cfg = json.load(f)
state = cfg["state"]


def libc():
    import ctypes
    return ctypes.CDLL(None, use_errno=True)


def enter_namespaces():
    flags = CLONE_NEWNET | CLONE_NEWPID | (0 if os.geteuid() == 0 else CLONE_NEWUSER)
    try:
        return libc().unshare(flags) == 0
    except Exception:
        return False


def guard(pid, namespaces):
    deadline = time.monotonic() + cfg["timeout_s"]
    timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() >= deadline:
            os.kill(pid, 9)
            timed_out = True
            status = os.waitpid(pid, 0)[1]
            break
        time.sleep(0.005)
    program_status = os.path.join(state, "program_status")
    if os.path.exists(program_status):
        with open(program_status) as f:
            status = int(f.read())
    with open(os.path.join(state, "verdict.json"), "w") as f:
        json.dump({"status": status, "timed_out": timed_out, "namespaces": namespaces}, f)
    os._exit(0)


def reap(program, guard_alive):
    libc().prctl(PR_SET_PDEATHSIG, 9)  # if the guard is killed, so is this init, and the namespace with it
    if select.select([guard_alive], [], [], 0)[0]:  # end of file: the guard died before prctl took effect
        os._exit(1)
    while True:
        pid, status = os.wait()
        if pid == program:
            with open(os.path.join(state, "program_status.tmp"), "w") as f:
                f.write(str(status))
            os.replace(os.path.join(state, "program_status.tmp"), os.path.join(state, "program_status"))  # never half-written
            os._exit(0)


def refuse(*args, **kwargs):
    raise PermissionError("network access is disabled in the finescope sandbox")


def confine():
    resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu_s"], cfg["cpu_s"] + 1))
    for limit, value in ((resource.RLIMIT_AS, cfg["memory"]), (resource.RLIMIT_FSIZE, cfg["fsize"]),
                         (resource.RLIMIT_NPROC, cfg["nproc"]), (resource.RLIMIT_NOFILE, 64),
                         (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))
    if cfg["uid"] >= 0:
        os.setgroups([])
        os.setgid(cfg["gid"])
        os.setuid(cfg["uid"])
        if os.getuid() != cfg["uid"] or os.geteuid() != cfg["uid"] or os.getegid() != cfg["gid"]:
            raise RuntimeError("privilege drop did not take effect")
    import socket, _socket
    for module in (socket, _socket):
        for name in ("socket", "SocketType", "create_connection", "create_server", "socketpair", "fromfd"):
            if hasattr(module, name):
                setattr(module, name, refuse)


namespaces = enter_namespaces()
guard_alive, guard_holds = os.pipe()  # never written: it reads as end of file once the guard is gone
init = os.fork()
if init:
    guard(init, namespaces)
os.close(guard_holds)
program = os.fork()
if program:
    reap(program, guard_alive)
os.close(guard_alive)
try:
    confine()
except BaseException as exc:
    sys.stderr.write("sandbox setup failed: " + repr(exc) + "\n")
    os._exit(%d)
sys.argv = [cfg["program"]]
import runpy
runpy.run_path(sys.argv[0], run_name="__main__")
''' % SETUP_FAILED


@dataclass(frozen=True)
class SandboxLimits:
    """How much one program may use; the defaults suit one benchmark test file."""

    timeout_s: float = 5.0  # wall clock
    cpu_s: int | None = None  # None: the wall-clock limit rounded up, plus one second
    memory_mb: int = 1024  # address space
    file_size_mb: int = 16
    processes: int = 64  # RLIMIT_NPROC: counts every process of the sandbox user, so keep it generous

    def check(self) -> "SandboxLimits":
        if not self.timeout_s > 0:
            raise FinescopeError(f"Sandbox timeout_s={self.timeout_s} is not positive; "
                                 "give the seconds a program may run.")
        for name in ("cpu_s", "memory_mb", "file_size_mb", "processes"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise FinescopeError(f"Sandbox {name}={getattr(self, name)} is below 1; give a positive limit.")
        return self


@dataclass(frozen=True)
class SandboxResult:
    """What became of one program; the stderr tail holds the traceback of a failing test."""

    passed: bool
    status: str  # passed | failed (nonzero exit, fatal signal) | timeout (wall or CPU limit) | error (sandbox setup)
    returncode: int | None
    seconds: float
    stdout_tail: str
    stderr_tail: str


@dataclass(frozen=True)
class Isolation:
    """Which layers this machine gives, found once by running a probe, so reports can say what pass@1 ran under."""

    user: str | None  # the unprivileged user programs run as; None when the kit is not root
    namespaces: bool  # fresh network and PID namespaces (no network at all; every leftover process dies with the run)
    python: str  # the interpreter programs run under: the kit's own unless the sandbox user cannot read it


_PROBE = "import collections, itertools, json, math, re, typing"


@functools.cache
def isolation() -> Isolation:
    """Probe once: `nobody` when we are root, whether namespaces work, and a Python that user can run.

    The kit's interpreter may live where `nobody` cannot read its standard library (a pyenv under
    /root, say); then the system's python3 runs the programs, which only need the standard library.
    """
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("nobody").pw_name
        except KeyError:
            user = None
    system_python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    candidates = list(dict.fromkeys([sys.executable] + ([system_python] if system_python else [])))
    for python in candidates:
        result, namespaces = _execute(Isolation(user, False, python), _PROBE, SandboxLimits(timeout_s=20))
        if result.passed:
            return Isolation(user, namespaces, python)
    last_line = (result.stderr_tail.strip().splitlines() or ["no output"])[-1]
    raise FinescopeError(f"Sandboxed programs cannot run as user {user or 'of the kit'} under {', '.join(candidates)} "
                         f"(last error: {last_line}); make a python3 and the temporary folder "
                         f"{tempfile.gettempdir()} readable by that user.")


def run_program(source: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `source` as a script in the sandbox; it passes when it exits with status 0 within the limits."""
    return _execute(isolation(), source, limits.check())[0]


def _execute(iso: Isolation, source: str, limits: SandboxLimits) -> tuple[SandboxResult, bool]:
    """One run; also says whether the runner managed to enter fresh namespaces."""
    uid, gid = (-1, -1)
    if iso.user is not None:
        entry = pwd.getpwnam(iso.user)
        uid, gid = entry.pw_uid, entry.pw_gid
    base = Path(tempfile.mkdtemp(prefix="finescope-sandbox-"))
    try:
        work = base / "work"
        work.mkdir()
        (base / "runner.py").write_text(_RUNNER)
        (base / "program.py").write_text(source)
        config = {"state": str(base), "program": str(base / "program.py"), "uid": uid, "gid": gid,
                  "timeout_s": limits.timeout_s, "cpu_s": limits.cpu_s or math.ceil(limits.timeout_s) + 1,
                  "memory": limits.memory_mb << 20, "fsize": limits.file_size_mb << 20, "nproc": limits.processes}
        (base / "config.json").write_text(json.dumps(config))
        if uid >= 0:
            os.chmod(base, 0o711)  # the program may reach its own folder and read its source, not list or change ours
            os.chmod(base / "program.py", 0o644)
            os.chown(work, uid, gid)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8"}
        with open(base / "stdout", "w+b") as out, open(base / "stderr", "w+b") as err:
            start = time.monotonic()
            proc = subprocess.Popen([iso.python, "-I", "-B", str(base / "runner.py"), str(base / "config.json")],
                                    cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)
            try:
                proc.wait(timeout=limits.timeout_s + GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            finally:
                _kill_all(proc)
            proc.wait()
            seconds = time.monotonic() - start
            stdout, stderr = _tail(out), _tail(err)
        verdict_file = base / "verdict.json"
        verdict = json.loads(verdict_file.read_text()) if verdict_file.exists() else None
    finally:
        shutil.rmtree(base, onerror=_force_remove)
    return _result(verdict, seconds, stdout, stderr), bool(verdict and verdict["namespaces"])


def _result(verdict: dict | None, seconds: float, stdout: str, stderr: str) -> SandboxResult:
    if verdict is None:  # the guard itself did not finish: it could not start, or the kit's backstop killed it
        return SandboxResult(False, "error", None, seconds, stdout, stderr + "\n[the sandbox runner did not report]")
    code = os.waitstatus_to_exitcode(verdict["status"])
    if verdict["timed_out"] or code == -signal.SIGXCPU:
        status = "timeout"
    elif code == SETUP_FAILED and stderr.startswith("sandbox setup failed"):
        status = "error"
    else:
        status = "passed" if code == 0 else "failed"
    if verdict["timed_out"]:
        stderr += "\n[killed at the wall-clock limit]"
    elif code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:  # a real-time signal has no name
            name = f"signal {-code}"
        stderr += f"\n[killed by {name}]"
    return SandboxResult(status == "passed", status, code, seconds, stdout, stderr)


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL the runner's process group: the backstop for anything that outlived the guard's own deadline."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(f) -> str:
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - TAIL_CHARS * 4))
    return f.read().decode("utf-8", "replace")[-TAIL_CHARS:]


def _force_remove(func, path, exc_info) -> None:
    """rmtree's error hook: the program may have made its files read-only; make them removable and retry."""
    os.chmod(os.path.dirname(path), 0o700)
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o700)
        shutil.rmtree(path, onerror=_force_remove)
    else:
        os.unlink(path)
