"""The model card written beside every export: where the model came from and what it does.

A derived model carries its base model's licence and terms, so the card names the base model and
quotes the licence its own card declares (the `license:` of its metadata header). The rest comes
from the run folder alone: the domain and its seeds, the curated set, the pruning and recovery
settings, and the run's own per-domain measurements against the base model.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import pandas as pd

from finescope_nb.errors import FinescopeError
from finescope_nb.inputs import read_seeds
from finescope_nb.lm import model_folder
from finescope_nb.paths import DEFAULT_MODEL_DIR
from finescope_nb.report import RunInfo, domain_table, metrics_table

_HEADER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)


def base_model_terms(path) -> dict:
    """{"name", "short_name", "hub_id", "card", "license", "license_name", "license_link"} of the run's base model,
    read from its folder's README.md metadata header where there is one."""
    name = DEFAULT_MODEL_DIR.name if path is None else str(path)
    terms = {"name": name, "short_name": Path(name).name, "hub_id": None, "card": None, "license": None, "license_name": None, "license_link": None}
    if path is not None and not Path(path).expanduser().exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", str(path)):
        terms["hub_id"] = terms["short_name"] = str(path)
    try:
        readme = model_folder(path) / "README.md"
    except FinescopeError:  # the base model is no longer on this machine: the card says so
        return terms
    if readme.is_file():
        terms["card"] = str(readme)
        header = _HEADER.match(readme.read_text(encoding="utf-8"))
        for line in header.group(1).splitlines() if header else ():
            key, _, value = line.partition(":")
            if key.strip() in ("license", "license_name", "license_link") and value.strip():
                terms[key.strip()] = value.strip().strip("'\"")
    return terms


def _markdown(table: pd.DataFrame) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) and not math.isnan(v) else "" if isinstance(v, float) else str(v)
    rows = [list(table.columns), ["---"] * len(table.columns)] + [[cell(v) for v in row] for row in table.itertuples(index=False)]
    return "\n".join("| " + " | ".join(map(str, row)) + " |" for row in rows)


def _seeds_line(info: RunInfo) -> str:
    cur = info.config.curation
    if cur.seeds_path:
        path = Path(cur.seeds_path)
        if not path.is_file():
            return f"the user's seeds file `{cur.seeds_path}` (no longer found, so its sha256 is unknown)"
        return f"the user's seeds file `{path.name}`, sha256 `{hashlib.sha256(path.read_bytes()).hexdigest()}`"
    texts = read_seeds(None, info.config.domain, cur.n_seeds, cur.seed, cur.seed_draw)
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    return (f"{len(texts)} held-out seed examples of the embedded {info.config.domain} seed set, drawn with seed {cur.seed} "
            f"(sha256 of their texts joined by newlines: `{digest}`)")


def _curated_lines(info: RunInfo) -> list[str]:
    summary = info.summary or {}
    curated = None
    if "curate" in info.stages and (info.stages["curate"] / "curated.csv").is_file():
        curated = pd.read_csv(info.stages["curate"] / "curated.csv", keep_default_na=False)
    size = summary.get("curated", len(curated) if curated is not None else None)
    share = summary.get("curated_domain_share")
    if share is None and curated is not None and "domain" in curated and (curated["domain"] != "").all():
        share = float((curated["domain"] == info.config.domain).mean())
    precision = (f"{share:.3f} (the share of curated documents whose corpus label is {info.config.domain})"
                 if share is not None else "not measured: the corpus has no domain labels")
    return [f"- Curated set: {size} documents" if size is not None else "- Curated set: not recorded",
            f"- Curation precision: {precision}"]


def model_card(info: RunInfo, which: str, fmt: str, details: dict) -> str:
    """README.md for an export of the run's `which` model ("pruned" or "recovered") in format `fmt`."""
    cfg = info.config
    terms = base_model_terms(cfg.model.path)
    plan = json.loads((info.stages["prune"] / "model" / "finescope_prune.json").read_text())["plan"]
    n_layers = len(plan["shapes_before"])
    layers = cfg.prune.layer_range(n_layers)
    header = ["---", f"license: {terms['license'] or 'other'}"]
    header += [f"{k}: {terms[k]}" for k in ("license_name", "license_link") if terms[k]]
    if terms["hub_id"]:
        header.append(f"base_model: {terms['hub_id']}")
    header += [f"library_name: {'transformers' if fmt == 'hf' else 'gguf'}", "pipeline_tag: text-generation",
               "tags:", "- finescope", "- pruned", f"- {cfg.domain}", *(["- gguf"] if fmt == "gguf" else []), "---", ""]
    licence = (f"{terms['license']}" + (f" ({terms['license_name']})" if terms["license_name"] else "")
               + (f", {terms['license_link']}" if terms["license_link"] else "") if terms["license"] else
               "none declared in the base model's card" if terms["card"] else "unknown: the base model's card was not found")
    body = [
        f"# {cfg.domain} specialist of {terms['short_name']}, {which} by FineScope",
        "",
        f"The {which} model of a [finescope-nb](https://arxiv.org/abs/2505.00624) run: the base model pruned for the "
        f"**{cfg.domain}** domain with importance measured on SAE-curated {cfg.domain} documents"
        + (", then recovered by self-data distillation." if which == "recovered" else ", before any recovery."),
        "",
        "## Base model and terms",
        f"- Base model: `{terms['name']}`" + (f" (card: `{terms['card']}`)" if terms["card"] else ""),
        f"- Licence: {licence}. This model is derived from the base model, so the base model's licence and terms "
        "apply to it as well.",
        "",
        "## How it was made",
        f"- Domain: {cfg.domain}",
        f"- Seeds: {_seeds_line(info)}",
        *_curated_lines(info),
        f"- Pruning: ratio {cfg.prune.ratio} of the non-embedding parameters "
        f"({1 - plan['params_after'] / plan['params_before']:.1%} removed: {plan['params_before']:,} -> {plan['params_after']:,}), "
        f"scope {cfg.prune.scope}, criterion {cfg.prune.criterion}, head unit {cfg.prune.head_unit}, "
        f"blocks {layers.start}-{layers.stop - 1} of 0-{n_layers - 1}",
        ("- Recovery: the self_distill arm (the unpruned teacher regenerates the curated answers, kept where they agree "
         f"with the originals), {cfg.finetune.method} fine-tuning for {cfg.finetune.steps} steps, kd_weight {cfg.finetune.kd_weight}"
         + (f", keep rate {details['keep_rate']:.3f}" if details.get("keep_rate") is not None else "")
         if which == "recovered" else "- Recovery: none (this is the pruned model before recovery)"),
        f"- Export: {_export_line(fmt, details)}",
        "",
        f"## Measured in the run ({cfg.eval.split} split)",
    ]
    table = domain_table(info)
    if table is not None:
        body += ["Perplexity on held-out documents per domain, base model against pruned and recovered; "
                 "retained = exp(base loss - recovered loss).", "", _markdown(table), ""]
    metrics = metrics_table(info)
    if metrics is not None:
        body += ["Task metrics (accuracy or pass rate; chance is what guessing scores):", "", _markdown(metrics), ""]
    if table is None and metrics is None:
        body += ["The run has no finished evaluation yet.", ""]
    body += ["## How to load it", "", _loading(fmt, details), ""]
    return "\n".join(header + body)


def _export_line(fmt: str, details: dict) -> str:
    padded = (" zero-padded back to the base model's shapes (it loads anywhere, at the base model's size and speed)"
              if details.get("padded") else "")
    if fmt == "hf":
        return f"transformers folder (safetensors){padded}; blocks {details['shapes_line']}"
    return (f"GGUF `{details['file']}`, {details['dtype']}, llama.cpp architecture `{details['arch']}`{padded}; "
            f"blocks {details['shapes_line']}; pre-tokenizer {details['pre_tokenizer']}; chat template "
            + ("the tokenizer's own" if details["chat_template"] else "messages written back to back (a base model continues text)"))


def _loading(fmt: str, details: dict) -> str:
    if fmt == "hf":
        return "\n".join(["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                          'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")',
                          'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")', "```",
                          "No finescope code and no trust_remote_code are needed."])
    return "\n".join(["```sh", f"llama-cli -m {details['file']} -p \"Solve 2x + 3 = 7.\" -n 64",
                      "```", "or, from Python with llama-cpp-python:", "```python", "from llama_cpp import Llama", "",
                      f'llm = Llama(model_path="{details["file"]}")', 'print(llm("Solve 2x + 3 = 7.", max_tokens=64)["choices"][0]["text"])',
                      "```"])
