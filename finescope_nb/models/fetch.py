"""`finescope fetch-model NAME`: install the pinned packages, check the GGUF, convert it once.

transformers can read a GGUF but not save a model loaded from one (it stays marked as quantised),
so the conversion builds a plain model of the same config, copies the de-quantised weights into it
and saves that: safetensors in bfloat16 (half the disk, and float32 is what the kit computes in),
the tokenizer with its chat template, and a model card saying where the weights came from. Every
step writes under a temporary name in the models folder and renames at the end, so an interrupted
or refused fetch leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from finescope_nb.adapters import supported_model_types, unsupported_reason
from finescope_nb.errors import FinescopeError
from finescope_nb.models.card import base_card
from finescope_nb.models.registry import PROVENANCE_FILE, NamedModel, get_named, models_dir, named_folder


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def is_fetched(name: str) -> bool:
    """True when the converted folder exists and was converted from the registry's current pinned GGUF (a folder
    converted from another package version or checksum counts as not fetched, so a fetch replaces it)."""
    folder = named_folder(name)
    if not ((folder / PROVENANCE_FILE).is_file() and (folder / "config.json").is_file()):
        return False
    try:
        saved = json.loads((folder / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    current = provenance(get_named(name))
    return saved.get("gguf_sha256") == current["gguf_sha256"] and saved.get("packages") == current["packages"]


def _installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_problems(entry: NamedModel) -> list[str]:
    """Each pinned package that is missing or at another version, as "name==pinned (missing)" or "(installed X)"."""
    installed = {dist: _installed_version(dist) for dist, _ in entry.packages}
    return [f"{dist}=={version} ({'missing' if installed[dist] is None else 'installed ' + installed[dist]})"
            for dist, version in entry.packages if installed[dist] != version]


def install_packages(entry: NamedModel, progress: bool = True) -> None:
    """pip-install (without dependencies) each pinned package that is missing or at another version, then check
    that every one of them is at its pinned version."""
    problems = package_problems(entry)
    if not problems:
        return
    pins = [problem.split(" ")[0] for problem in problems]
    _say(progress, f"Installing {' '.join(pins)} from the package index (--no-deps) ...")
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q", *pins],
                          capture_output=True, text=True)
    if done.returncode != 0:
        errors = [line.strip() for line in done.stderr.splitlines() if "ERROR" in line] or done.stderr.strip().splitlines()[-1:]
        raise FinescopeError(f"Could not install {', '.join(problems)} for the named model {entry.name!r} (pip: "
                             f"{errors[-1] if errors else 'exit code ' + str(done.returncode)}); check that the package "
                             "index is reachable and run the command again (nothing was written).")
    importlib.invalidate_caches()
    left = package_problems(entry)
    if left:
        raise FinescopeError(f"After pip install, the packages {', '.join(left)} of the named model {entry.name!r} are still "
                             f"not at their pinned versions; install them with `pip install --force-reinstall --no-deps "
                             f"{' '.join(problem.split(' ')[0] for problem in left)}` (nothing was written).")


def _package_file(dist: str, rel: str) -> Path | None:
    try:
        source = Path(importlib.metadata.distribution(dist).locate_file(rel))
    except importlib.metadata.PackageNotFoundError:
        return None
    return source if source.is_file() else None


def assemble_gguf(entry: NamedModel, out: Path) -> Path:
    """Concatenate the entry's files into `out`, checking size and sha256; a mismatch deletes `out`."""
    absent = [(dist, rel) for dist, rel in entry.files if _package_file(dist, rel) is None]
    if absent:
        pins = " ".join(sorted({f"{dist}=={dict(entry.packages)[dist]}" for dist, _ in absent}))
        raise FinescopeError(f"The pieces {', '.join(f'{rel} of {dist}' for dist, rel in absent)} of the named model "
                             f"{entry.name!r} are not installed; reinstall with `pip install --force-reinstall --no-deps {pins}`.")
    digest, size = hashlib.sha256(), 0
    with open(out, "wb") as sink:
        for dist, rel in entry.files:
            with open(_package_file(dist, rel), "rb") as piece:
                for block in iter(lambda: piece.read(1 << 22), b""):
                    digest.update(block)
                    sink.write(block)
                    size += len(block)
    if digest.hexdigest() != entry.sha256:
        out.unlink()
        packages = " ".join(f"{d}=={v}" for d, v in entry.packages)
        raise FinescopeError(f"The GGUF of {entry.name!r} assembled from {packages} has sha256 {digest.hexdigest()[:16]}... "
                             f"({size:,} bytes), not the pinned {entry.sha256[:16]}... ({entry.size:,} bytes), so it was "
                             f"deleted; reinstall with `pip install --force-reinstall --no-deps {packages}`.")
    return out


def copy_notices(entry: NamedModel, out: Path) -> list[str]:
    """Copy the licence and terms files the entry's packages ship into `out`; their names."""
    names = []
    for dist, rel in entry.notices:
        source = _package_file(dist, rel)
        if source is None:
            raise FinescopeError(f"The package {dist} does not hold {rel}, the terms of the named model {entry.name!r}; "
                                 f"reinstall it with `pip install --force-reinstall --no-deps {dist}=={dict(entry.packages)[dist]}`.")
        shutil.copyfile(source, out / source.name)
        names.append(source.name)
    return names


def _gguf_config(gguf_path: Path):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except (ValueError, KeyError, OSError) as exc:
        raise FinescopeError(f"Cannot read {gguf_path.name} as a model transformers knows ({str(exc).strip().splitlines()[0]}); "
                             f"the kit supports the architectures {', '.join(supported_model_types())}.") from exc


def convert_gguf(gguf_path: str | Path, out: str | Path, provenance: dict, notices=None) -> Path:
    """De-quantise a GGUF into an ordinary Hugging Face folder `out` (bfloat16 safetensors, tokenizer, card);
    `notices(out)`, when given, copies the licence files into `out` and returns their names for the card."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out = Path(gguf_path), Path(out)
    config = _gguf_config(gguf_path)
    reason = unsupported_reason(config.model_type)
    if reason:
        raise FinescopeError(f"Cannot convert {gguf_path.name}: {reason}.")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    plain_config = loaded.config.to_dict()
    plain_config.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(type(loaded.config).from_dict(plain_config), dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    del loaded
    plain.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {**provenance, "model_type": config.model_type, "parameters": sum(p.numel() for p in plain.parameters()),
            "chat_template": bool(getattr(tokenizer, "chat_template", None)), "notices": notices(out) if notices else []}
    (out / PROVENANCE_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "README.md").write_text(base_card(info), encoding="utf-8")
    return out


def provenance(entry: NamedModel) -> dict:
    return {"name": entry.name, "packages": [f"{d}=={v}" for d, v in entry.packages], "gguf": entry.gguf_name,
            "gguf_sha256": entry.sha256, "licence": entry.licence, "terms": entry.terms, "origin": entry.origin,
            "quantisation": entry.quantisation}


def fetch_model(name: str, force: bool = False, progress: bool = True) -> Path:
    """The converted folder of a named model, installing and converting it first if needed."""
    entry = get_named(name)
    target = named_folder(name)
    if is_fetched(name) and not force:
        _say(progress, f"{name} is already fetched in {target}.")
        return target
    install_packages(entry, progress)
    models_dir().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=models_dir()))
    try:
        _say(progress, f"Checking the sha256 of {entry.gguf_name} ...")
        gguf_path = assemble_gguf(entry, staging / entry.gguf_name)
        _say(progress, f"Converting {entry.gguf_name} to a Hugging Face folder (de-quantising {entry.quantisation}) ...")
        convert_gguf(gguf_path, staging / "model", provenance(entry), notices=lambda out: copy_notices(entry, out))
        previous = staging / "previous"
        if target.exists():  # set aside, not deleted, until the new folder is in place
            target.rename(previous)
        try:
            (staging / "model").rename(target)
        except OSError:
            if previous.exists():
                previous.rename(target)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _say(progress, f"{name} is ready in {target}; use it with --model {name} or load_model({name!r}).")
    return target
