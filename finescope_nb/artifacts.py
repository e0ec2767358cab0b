"""The run folder: atomic writes and a per-stage cache keyed by config hash.

A run folder holds one run's artifacts. Each stage writes into `stages/<name>-<key>/`, where the
key hashes the stage's own config together with the keys of the stages it read from, so changing
one knob recomputes that stage and everything downstream of it, and nothing else. Artifacts are
written under a temporary name and renamed into place, so an interrupted stage never leaves a
half-written file that a later run would mistake for a result. Because a key names everything its
stage depends on besides the run's domain, model and corpus, a finished stage in a sibling run folder
of the same three (another ratio of the same curated set, say) is that stage's result here too: it is
taken over, its files hard-linked where the disk allows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from finescope_nb import distributed
from finescope_nb.config import Config, RunConfig
from finescope_nb.errors import FinescopeError

R = TypeVar("R")

RUN_FILE = "run.json"
PROGRESS_FILE = "progress.json"  # the finished stages of the current config and their folders
STAGE_ORDER = ("eval-base", "curate", "prune", "recover", "eval-pruned", "eval-recovered")  # a run's stages
IDENTITY_FIELDS = ("domain", "model", "corpus")


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it over `target`.

    Works for files and folders. If the body raises, the temporary is removed and the old
    `target` (if any) is left exactly as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.rmdir()  # the caller decides whether it becomes a file or a folder
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text_atomic(target: str | Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def write_json_atomic(target: str | Path, data: Any) -> Path:
    return write_text_atomic(target, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _link_or_copy(source: str, target: str) -> None:
    """A hard link (stage files are never rewritten in place, only replaced), a copy across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def stage_key(config: Config, *upstream_keys: str) -> str:
    """The cache key of a stage: its config hash combined with the keys of its inputs."""
    h = hashlib.sha256(config.config_hash(64).encode())
    for key in upstream_keys:
        h.update(b"|" + key.encode())
    return h.hexdigest()[:12]


def _identity(config: RunConfig) -> dict[str, Any]:
    data = config.to_dict()
    return {name: data[name] for name in IDENTITY_FIELDS}


class RunFolder:
    """One run's folder. Refuses to mix runs whose model, corpus or domain differ."""

    def __init__(self, path: str | Path, config: RunConfig):
        self.path = Path(path)
        self.config = config
        run_file = self.path / RUN_FILE
        if run_file.exists():
            stored = RunConfig.from_json(run_file.read_text())
            if _identity(stored) != _identity(config):
                changed = [k for k in IDENTITY_FIELDS if _identity(stored)[k] != _identity(config)[k]]
                raise FinescopeError(
                    f"Run folder {str(self.path)!r} holds a run with a different {changed[0]} "
                    f"({stored.to_dict()[changed[0]]!r}); pass a new --run-dir, or delete the folder "
                    "to start fresh."
                )
        elif self.path.exists() and any(self.path.iterdir()):
            raise FinescopeError(
                f"Folder {str(self.path)!r} is not empty and is not a finescope run folder; "
                "choose an empty or new folder for the run."
            )
        distributed.barrier()  # every process has checked the folder before the main process writes into it
        if distributed.is_main():
            write_text_atomic(run_file, config.to_json())

    def stage_dir(self, name: str, key: str) -> Path:
        return self.path / "stages" / f"{name}-{key}"

    def cached(
        self,
        name: str,
        key: str,
        compute: Callable[[], R],
        save: Callable[[R, Path], None],
        load: Callable[[Path], R],
    ) -> R:
        """Load stage `name` under `key` if it finished before; else compute, save atomically, return.

        Under a launcher every process computes (the stage splits its work inside) and only the main
        process saves; a compute that returns None on the other processes (a step only the main process
        does) has them load what the main process saved."""
        folder = self.stage_dir(name, key)
        with distributed.main_only(None) as main:
            if main and not (folder / "DONE").exists():
                self._adopt(folder)
        if distributed.broadcast((folder / "DONE").exists()):
            return load(folder)
        result = compute()
        with distributed.main_only(None) as main:
            if main:
                with atomic_path(folder) as tmp:
                    tmp.mkdir(parents=True)
                    save(result, tmp)
                    (tmp / "DONE").write_text(key + "\n")
        return result if result is not None else load(folder)

    def _adopt(self, folder: Path) -> None:
        """Take over the same stage under the same key from a run folder beside this one that finished it and
        holds a run of the same domain, model and corpus (the keys assume those fixed, as one folder does).
        Best effort: a sibling that cannot be read or copied is passed over, and the stage is computed."""
        try:
            siblings = sorted(self.path.parent.iterdir())
        except OSError:
            return
        for sibling in siblings:
            try:
                done = sibling / "stages" / folder.name
                if sibling == self.path or not (done / "DONE").is_file() or not (sibling / RUN_FILE).is_file():
                    continue
                if _identity(RunConfig.from_json((sibling / RUN_FILE).read_text())) != _identity(self.config):
                    continue
                with atomic_path(folder) as tmp:
                    shutil.copytree(done, tmp, copy_function=_link_or_copy)
                return
            except (OSError, ValueError, TypeError, KeyError, FinescopeError):  # unreadable or not a run of this kit
                continue

    def checkpoint_dir(self, name: str, key: str) -> Path:
        """A scratch folder where a long stage keeps checkpoints to resume after interruption."""
        path = self.path / "checkpoints" / f"{name}-{key}"
        path.mkdir(parents=True, exist_ok=True)
        return path
