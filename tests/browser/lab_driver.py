"""Start a throwaway JupyterLab and drive notebooks in it from a headless Debian chromium.

Why a helper: the widget tests must see what a user sees, so they need a real server, a real kernel
and a real browser, and all three must go away whatever happens. The server runs in its own process
group with every Jupyter folder, the runs folder and the token private to one test session, in fast
mode and offline. It serves a temporary copy of notebooks/: JupyterLab autosaves open notebooks, and
the committed ones must stay without outputs. The browser is Debian's chromium launched by Playwright
(no downloaded browser).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_PATH = "/usr/bin/chromium"  # Debian's package, which `make setup` installs
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Lab settings for a test session: every cell stays in the DOM (no windowing), the notebook's kernel
# starts without a "Select Kernel" dialog, and no news or update pop-up can cover a widget.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none", "autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """`jupyter lab` on 127.0.0.1, a free port and a random token, serving a copy of notebooks/;
    `stop()` ends it and its kernels."""

    def __init__(self, workdir: Path, startup_timeout: float = 90):
        self.workdir, self.port, self.token = workdir, free_port(), secrets.token_hex(16)
        home, served = workdir / "jupyter", workdir / "served"
        (served / "notebooks").mkdir(parents=True)
        for notebook in (ROOT / "notebooks").glob("*.ipynb"):
            shutil.copy(notebook, served / "notebooks" / notebook.name)
        for name, body in LAB_SETTINGS.items():
            path = home / "config" / "lab" / "user-settings" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(body))
        env = dict(os.environ, FINESCOPE_FAST="1", FINESCOPE_RUNS_DIR=str(workdir / "runs"), HF_HUB_OFFLINE="1",
                   TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled",
                   JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
                   JUPYTER_RUNTIME_DIR=str(home / "runtime"), IPYTHONDIR=str(home / "ipython"),
                   MPLCONFIGDIR=str(home / "mpl"))
        command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip", "127.0.0.1", "--port", str(self.port),
                   "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                   f"--ServerApp.root_dir={served}"]
        if os.geteuid() == 0:
            command.append("--allow-root")  # Jupyter refuses to run as root without it
        self.log = workdir / "jupyterlab.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, cwd=served, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        try:
            self._wait_until_up(startup_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notebook_url(self, relative: str) -> str:
        """The notebook alone in a workspace of its own, so that no earlier test's notebook is restored beside it."""
        workspace = Path(relative).stem
        return f"{self.base_url}/lab/workspaces/{workspace}/tree/{relative}?token={self.token}"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/api/status?token={self.token}", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer on port {self.port} within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the server's group (the server then shuts its kernels down), then kill whatever is left,
        kernels included: jupyter_client starts each kernel in a session of its own, outside the group."""
        try:
            family = [self.process, *psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        for proc in family[1:]:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def launch_chromium(playwright, profile_dir: Path):
    """Debian's chromium, headless, on a fresh profile; a context whose pages are big enough for the widgets."""
    return playwright.chromium.launch_persistent_context(
        user_data_dir=str(profile_dir), executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1500, "height": 1600})


# In JupyterLab an input prompt reads "[ ]:" before a run, "[*]:" while queued or running, "[7]:" once done.
_PROMPTS = "[...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')].map(p => p.textContent.trim())"


def run_all_cells(page, url: str, timeout_s: float) -> None:
    """Open a notebook, run it with the Run menu's "Run All Cells", and wait until no cell is pending.

    Fails with the notebook's error output when a cell raised (Run All then leaves later cells unrun)."""
    page.goto(url)
    page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=60_000)
    # Run All before the kernel is connected does nothing: wait for the status bar's "| Idle".
    page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"\| Idle$")).wait_for(timeout=120_000)
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item[data-command='runmenu:run-all']:not(.lm-mod-disabled)").click()
    page.wait_for_function(f"{_PROMPTS}.some(p => p !== '[ ]:')", timeout=60_000)
    try:
        page.wait_for_function(f"!{_PROMPTS}.includes('[*]:')", timeout=timeout_s * 1000, polling=1000)
    except PlaywrightTimeoutError:
        raise AssertionError(f"{url.split('?')[0]} was still running after {timeout_s:.0f} s: "
                             f"prompts {page.evaluate(_PROMPTS)}") from None
    prompts = page.evaluate(_PROMPTS)
    if "[ ]:" in prompts:
        stderr = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
        tracebacks = "\n".join(t for t in stderr if "Traceback" in t) or "(no traceback shown)"
        raise AssertionError(f"{url.split('?')[0]} stopped at cell {prompts.index('[ ]:') + 1} of {len(prompts)}:\n"
                             + tracebacks[-3000:])


def wait_for_value(page, selector: str, condition: str, arg=None, attribute: str | None = None,
                   timeout_s: float = 30) -> str | None:
    """The first `selector` element's text (or `attribute`) once the JS predicate `condition(value, arg)`
    holds, or its value when `timeout_s` passes first: the caller asserts, with its own message."""
    read = ("(sel, attr) => { const el = document.querySelector(sel);"
            " return el ? (attr ? el.getAttribute(attr) : el.textContent) : null; }")
    try:
        page.wait_for_function(f"([sel, attr, arg]) => ({condition})(({read})(sel, attr), arg)",
                               arg=[selector, attribute, arg], timeout=timeout_s * 1000)
    except PlaywrightTimeoutError:
        pass
    return page.evaluate(f"([sel, attr]) => ({read})(sel, attr)", [selector, attribute])


CHANGED = "(value, before) => value !== before"
CONTAINS = "(value, wanted) => value !== null && value.includes(wanted)"
