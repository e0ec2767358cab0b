"""Take a finished run's model out of the kit: a transformers folder or a llama.cpp GGUF file.

    from finescope_nb.export import export
    export("runs/math", format="hf", model="recovered", pad=True)

Export reads the run folder and never reruns a stage. A transformers (`hf`) export must load with
stock `AutoModelForCausalLM.from_pretrained`, which builds every block from one config: a model
whose blocks all have one shape the config can state is copied as it is; any other is either
zero-padded back to the base model's shapes (`pad=True`: exact, at the base model's size and
speed) or refused with the two ways out. A GGUF export needs no padding (llama.cpp's `deci`
architecture takes per-block shapes). Every export gets a model card (README.md) and a
`finescope_export.json` that marks the folder as the kit's, so a later export may replace it; a
folder holding anything else is left alone unless `overwrite=True`. The export is written under a
temporary name and renamed into place, so it is never half-written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from finescope_nb.artifacts import atomic_path
from finescope_nb.errors import FinescopeError
from finescope_nb.report import load_run

FORMATS = ("hf", "gguf")
MODELS = ("pruned", "recovered")
GGUF_DTYPES = ("f16", "bf16", "q8_0")
MARKER = "finescope_export.json"
_STAGE = {"pruned": "prune", "recovered": "recover"}

__all__ = ["FORMATS", "GGUF_DTYPES", "MODELS", "export"]


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise FinescopeError(f"Unknown {name} {value!r}; choose one of {', '.join(choices)}.")


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FinescopeError(f"The export folder {str(out)!r} is a file; pass a folder path with --out.")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file() and not overwrite:
        raise FinescopeError(f"The export folder {str(out)!r} already holds files that are not a finescope export; "
                             "choose another --out, or pass --overwrite to replace the folder.")


def _refusal(info, which: str, model_type: str, shapes) -> str:
    kinds = sorted({(s["num_heads"], s["num_kv_heads"], s["intermediate_size"]) for s in shapes})
    from finescope_nb.adapters import get_adapter

    rerun = (f"`finescope run --scope uniform --all-blocks --mlp-only` ({model_type}'s config cannot state those head "
             "counts, so the plan must keep every head)" if get_adapter(model_type).heads_fixed_by_config or len(kinds) == 1 else
             "`finescope run --scope uniform --all-blocks`, so every block is pruned alike")
    return (f"The {which} model of {str(info.path)!r} cannot load with stock from_pretrained: its blocks have "
            f"{'shapes its config cannot state' if len(kinds) == 1 else f'{len(kinds)} different shapes'} "
            f"(heads, KV heads, MLP width: {', '.join(map(str, kinds))}); either run again with {rerun}, or export "
            "with --pad, which zero-pads every block back to the base model's shapes (it then loads anywhere, at the "
            "base model's size and speed).")


def _shapes_line(shapes) -> str:
    def one(s):
        return f"{s['num_heads']} heads, {s['num_kv_heads']} KV heads, MLP width {s['intermediate_size']}"
    if all(s == shapes[0] for s in shapes):
        return f"all {len(shapes)} alike: {one(shapes[0])}"
    return "; ".join(f"{i}: {one(s)}" for i, s in enumerate(shapes))


def export(run, format: str = "hf", model: str = "recovered", out=None, *, pad: bool = False, dtype: str = "f16",
           overwrite: bool = False) -> Path:
    """Export the run's `model` ("pruned" or "recovered") as `format` ("hf" or "gguf") into the folder
    `out` (default RUN/exports/<model>-<format>); returns that folder."""
    from finescope_nb.adapters import get_adapter
    from finescope_nb.export.card import model_card
    from finescope_nb.lm import SHAPES_FILE, load_model, load_tokenizer, save_model
    from finescope_nb.prune import PLAN_FILE

    _check_choice("export format", format, FORMATS)
    _check_choice("model", model, MODELS)
    _check_choice("GGUF dtype", dtype, GGUF_DTYPES)
    info = load_run(run)
    if "prune" not in info.stages:
        raise FinescopeError(f"The run in {str(info.path)!r} has not finished pruning, so it has no model to export; "
                             f"finish it with `finescope run --run-dir {info.path}` first.")
    if _STAGE[model] not in info.stages:
        raise FinescopeError(f"The run in {str(info.path)!r} has not finished recovery, so it has no recovered model; "
                             f"finish it with `finescope run --run-dir {info.path}`, or export --model pruned.")
    source = info.stages[_STAGE[model]] / "model"
    if not (source / "config.json").is_file():
        raise FinescopeError(f"The {model} model's folder {str(source)!r} is missing or incomplete; delete "
                             f"{str(info.stages[_STAGE[model]])!r} and run `finescope run --run-dir {info.path}` to rebuild it.")
    out = Path(out) if out is not None else info.path / "exports" / f"{model}-{format}"
    _check_out(out, overwrite)
    plan = json.loads((info.stages["prune"] / "model" / PLAN_FILE).read_text())["plan"]
    base_shapes = plan["shapes_before"]
    stock = not (source / SHAPES_FILE).is_file()
    if format == "hf" and not stock and not pad:
        config = json.loads((source / "config.json").read_text())
        shapes = json.loads((source / SHAPES_FILE).read_text())["layers"]
        raise FinescopeError(_refusal(info, model, config.get("model_type"), shapes))

    loaded = None
    if pad or format == "gguf":
        loaded = load_model(source)
        if pad:
            adapter = get_adapter(loaded)
            for i, shape in enumerate(base_shapes):
                adapter.pad_layer(loaded, i, shape)
    details = {"padded": pad}
    if model == "recovered" and (info.stages["recover"] / "recovery.json").is_file():
        details["keep_rate"] = json.loads((info.stages["recover"] / "recovery.json").read_text()).get("keep_rate")
    with atomic_path(out) as tmp:
        if format == "hf" and loaded is None:
            shutil.copytree(source, tmp)
        elif format == "hf":
            save_model(loaded, load_tokenizer(source), tmp)
            if (tmp / SHAPES_FILE).exists():  # the adapter's config could not state the padded shapes
                raise FinescopeError(f"Padding left the {model} model with shapes its config cannot state; this is a bug "
                                     "in the adapter for this architecture, please report it.")
        else:
            from finescope_nb.export.gguf import write_gguf

            tmp.mkdir()
            details.update(write_gguf(loaded, load_tokenizer(source), tmp / f"{info.config.domain}-{model}-{dtype}.gguf",
                                      dtype, name=f"finescope {info.config.domain} {model}"))
        details["shapes_line"] = _shapes_line(base_shapes if pad else plan["shapes_after"])
        (tmp / "README.md").write_text(model_card(info, model, format, details), encoding="utf-8")
        (tmp / MARKER).write_text(json.dumps({"run": str(info.path.resolve()), "model": model, "format": format,
                                              "padded": pad, **({"dtype": dtype} if format == "gguf" else {})}, indent=1) + "\n")
    return out
