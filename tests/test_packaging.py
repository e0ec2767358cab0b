"""The two install routes agree, the console script exists, and the repository stays small."""

import re
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _names(requirements):
    return {re.split(r"[=<>\[ ]", r.strip(), maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def _environment_pip_list():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return [p for p in pip if not p.startswith("-")]  # skip --extra-index-url and -e .


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = _names(project["dependencies"]) | _names(extras["test"]) | _names(extras["docs"])
    listed = _names(_environment_pip_list())
    assert listed == wanted, f"differ: {sorted(listed ^ wanted)}"


def test_pins_agree_between_pyproject_and_environment_yml():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pins = {r for r in project["dependencies"] + extras["test"] + extras["docs"] if "==" in r}
    assert pins <= set(_environment_pip_list()), sorted(pins - set(_environment_pip_list()))


def test_console_script_and_anywidget_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["finescope"] == "finescope_nb.cli:main"
    assert "anywidget" in _names(project["dependencies"])


def test_tracked_repository_is_under_60_mb():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    total = sum((ROOT / f).stat().st_size for f in files.decode().split("\0") if f and (ROOT / f).is_file())
    assert total < 60 * 1024 * 1024, f"tracked files take {total / 2**20:.1f} MiB"
    assert total > 0
