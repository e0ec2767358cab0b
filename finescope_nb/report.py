"""The run report and the run comparison, read from run folders alone.

A run folder is a set of stage folders named by config hashes; nobody should have to open them
one by one to learn what a run found. `write_report` turns one folder into a single HTML page
that opens anywhere with no network (plotly.js is inlined once), and `compare_runs` lines up
finished runs domain by domain. Both only read CSV and JSON files, never model weights, so they
are quick and work on a copy of a run folder without its models. A run that stopped early still
gets a report: it shows what exists and says which stages are missing.
"""

from __future__ import annotations

import html
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from finescope_nb.artifacts import PROGRESS_FILE, RUN_FILE, STAGE_ORDER, write_text_atomic
from finescope_nb.config import RunConfig
from finescope_nb.errors import FinescopeError
from finescope_nb.viz.plots import pipeline_summary

MODELS = ("base", "pruned", "recovered")
SUMMARY_FILE = "summary.json"
PLAN_FILE = "finescope_prune.json"  # finescope_nb.prune.PLAN_FILE; not imported, since prune pulls in torch
TOP_TEXTS, TEXT_CHARS = 5, 400


@dataclass
class RunInfo:
    """What a run folder holds for the config in its run.json: finished stages and the summary."""

    path: Path
    config: RunConfig
    summary: dict | None  # None until every stage of this config finished (an older summary.json is ignored)
    stages: dict[str, Path]  # finished stage name -> its folder, in pipeline order
    missing: tuple[str, ...]  # stages not finished for this config, in pipeline order

    @property
    def name(self) -> str:
        return self.path.name


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise FinescopeError(f"{str(path)!r} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                             "delete it and run `finescope run` again to rewrite it.") from None


def _newest_done(run_dir: Path) -> dict[str, Path]:
    """Without progress.json: per stage name, the folder whose DONE marker is newest."""
    found: dict[str, tuple[float, Path]] = {}
    for done in (run_dir / "stages").glob("*/DONE"):
        name = done.parent.name.rsplit("-", 1)[0]
        if name in STAGE_ORDER and (name not in found or done.stat().st_mtime > found[name][0]):
            found[name] = (done.stat().st_mtime, done.parent)
    return {name: folder for name, (_, folder) in found.items()}


def load_run(path: str | Path) -> RunInfo:
    """Read a run folder: its config, summary (None if not written yet) and which stages finished.

    progress.json, when present, names the folders of the current config's finished stages (older
    configs' folders may sit beside them); without it the newest finished folder per stage is used.
    """
    run_dir = Path(path)
    if not (run_dir / RUN_FILE).is_file():
        raise FinescopeError(f"{str(run_dir)!r} is not a finescope run folder (it has no {RUN_FILE}); "
                             "pass a folder that `finescope run` created, such as runs/math-<hash>.")
    try:
        config = RunConfig.from_json((run_dir / RUN_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise FinescopeError(f"{str(run_dir / RUN_FILE)!r} is not valid JSON ({exc.msg}); "
                             "run `finescope run` on this folder again to rewrite it.") from None
    if (run_dir / PROGRESS_FILE).is_file():
        listed = _read_json(run_dir / PROGRESS_FILE).get("stages", {})
        found = {name: run_dir / rel for name, rel in listed.items() if (run_dir / rel / "DONE").is_file()}
    else:
        found = _newest_done(run_dir)
    missing = tuple(n for n in STAGE_ORDER if n not in found)
    # summary.json is written last and names the stage folders it summarises: while stages are missing,
    # or when it names other folders, it describes an earlier config
    summary = _read_json(run_dir / SUMMARY_FILE) if not missing and (run_dir / SUMMARY_FILE).is_file() else None
    if summary is not None and "stages" in summary and {n: run_dir / rel for n, rel in summary["stages"].items()} != found:
        summary = None
    return RunInfo(run_dir, config, summary, {n: found[n] for n in STAGE_ORDER if n in found}, missing)


def domain_table(info: RunInfo) -> pd.DataFrame | None:
    """Per-domain perplexity: the summary's table for a finished run; else the evaluations that exist."""
    if info.summary and info.summary.get("table"):
        table = pd.DataFrame(info.summary["table"])
        first = [c for c in ("domain", "base_ppl", "pruned_ppl", "recovered_ppl", "retained") if c in table]
        return table[first + [c for c in table if c not in first]]
    table = None
    for model in MODELS:
        if f"eval-{model}" in info.stages:
            ppl = pd.read_csv(info.stages[f"eval-{model}"] / "ppl.csv")[["domain", "ppl"]].rename(columns={"ppl": f"{model}_ppl"})
            table = ppl if table is None else table.merge(ppl, on="domain", how="outer")
    return table


def metrics_table(info: RunInfo) -> pd.DataFrame | None:
    """Task metrics (cloze accuracy and the like) per model, from the summary or the eval stages' metrics.csv."""
    if info.summary and "metrics" in info.summary:
        if not info.summary["metrics"]:
            return None  # the run measured perplexity only
        records = pd.DataFrame(info.summary["metrics"])
    else:
        frames = [pd.read_csv(info.stages[f"eval-{m}"] / "metrics.csv").assign(model=m) for m in MODELS
                  if f"eval-{m}" in info.stages and (info.stages[f"eval-{m}"] / "metrics.csv").is_file()]
        if not frames:
            return None
        records = pd.concat(frames, ignore_index=True)
    keys = [k for k in ("metric", "domain", "group") if k in records]
    records[keys] = records[keys].astype(object).fillna("")  # pivot_table drops rows whose keys are missing
    wide = records.pivot_table(index=keys, columns="model", values="score", aggfunc="first")
    wide = wide[[m for m in MODELS if m in wide.columns]]
    wide.columns.name = None  # else the HTML table grows an empty "model" column
    if "chance" in records:
        wide.insert(0, "chance", records.groupby(keys)["chance"].first())
    return wide.reset_index()


def output_path(path: str | Path) -> Path:
    """Refuse an output path that is a folder, which an atomic rename would otherwise replace."""
    path = Path(path)
    if path.is_dir():
        raise FinescopeError(f"Output {str(path)!r} is a folder; give a file name inside it instead, such as {str(path / 'report.html')!r}.")
    return path


# ---- the HTML page ------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #1f2328; }
table { border-collapse: collapse; margin: 0.5em 0 1em; } th, td { padding: 3px 10px; border-bottom: 1px solid #d0d7de; text-align: right; }
th { background: #f6f8fa; } td:first-child, th:first-child { text-align: left; }
.missing { background: #fff8c5; border: 1px solid #d4a72c; padding: 0.6em 1em; border-radius: 6px; }
.doc { white-space: pre-wrap; background: #f6f8fa; padding: 0.5em; border-radius: 6px; font-size: 0.9em; }
"""


class Figures:
    """Renders figures as HTML fragments; plotly.js goes inline into the first one only."""

    def __init__(self):
        self.js_done = False

    def __call__(self, fig: go.Figure) -> str:
        part = fig.to_html(full_html=False, include_plotlyjs=not self.js_done, default_height=f"{fig.layout.height or 450}px")
        self.js_done = True
        return part


def escape(value) -> str:
    """Any value as HTML text: the report and the curation page show user text (documents, domain names)."""
    return html.escape(str(value))


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, na_rep="–", float_format=lambda v: f"{v:.3f}")  # escapes cells and headers


def key_value_table(pairs: Iterable[tuple[str, object]]) -> str:
    """A two-column HTML table of (name, value) pairs, both escaped."""
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in pairs) + "</table>"


def _model_name(config: RunConfig) -> str:
    return config.model.path or "embedded tiny Llama"


def missing_sentence(info: RunInfo) -> str:
    """What the run lacks and the command that finishes it (finished stages are reused)."""
    return (f"Missing stages: {', '.join(info.missing)} — run `finescope run --domain {shlex.quote(info.config.domain)} "
            f"--run-dir {info.path}` again, with the options the run was started with, to finish; finished stages are reused.")


def _config_section(info: RunInfo) -> str:
    c, s = info.config, info.summary or {}
    pairs = [("domain", c.domain), ("model", _model_name(c)), ("corpus", c.corpus.path or "embedded labelled pool"),
             ("curated documents (M)", c.curation.m), ("seeds", c.curation.seeds_path or f"{c.curation.n_seeds} held-out seeds ({c.curation.seed_draw} draw)"),
             ("pruning ratio", f"{c.prune.ratio:.0%} of non-embedding parameters"), ("importance criterion", c.prune.criterion),
             ("pruning scope", c.prune.scope), ("recovery", f"{c.finetune.method}, {c.finetune.steps} steps, lr {c.finetune.lr:g}"),
             ("evaluation split", c.eval.split), ("seed", c.seed)]
    if "pool_size" in s:
        pairs.insert(3, ("pool size", f"{s['pool_size']:,}"))
    if c.eval.heldout:
        held = s.get("heldout") or {}
        pairs.insert(4, ("held-out set", c.eval.heldout if not held else
                         f"{c.eval.heldout}: {held['test_documents']:,} documents measured, {held['validation_documents']:,} "
                         f"validate recovery; {held['dropped_pool_overlap']:,} of {held['documents']:,} held-out documents "
                         "dropped for sharing a 13-word passage with the pool"))
    if s.get("sae"):
        pairs.insert(4, ("SAE trained on", s["sae"]["trained_on"]))
    if "seconds" in s:
        pairs.append(("run time", f"{s['seconds'] / 60:.1f} min"))
    return "<h2>Configuration</h2>" + key_value_table(pairs)


def _results_section(info: RunInfo, fig) -> str:
    table = domain_table(info)
    if table is None:
        return ""
    out = ["<h2>Perplexity per domain</h2><p>Lower is better"
           + ("; retained = exp(-loss) / exp(-base loss), the share of the unpruned model's per-token probability kept"
              if "retained" in table else "") + ".</p>", _table(table)]
    if {"base_ppl", "pruned_ppl", "recovered_ppl"} <= set(table.columns):
        out.append(fig(pipeline_summary(table, info.config.domain)))
    metrics = metrics_table(info)
    if metrics is not None:
        out += ["<h2>Task metrics</h2>", "<p>Score per model; chance is what guessing gets.</p>", _table(metrics)]
    return "".join(out)


def _curation_section(info: RunInfo, fig) -> str:
    if "curate" not in info.stages:
        return ""
    curated = pd.read_csv(info.stages["curate"] / "curated.csv", keep_default_na=False)
    domain = info.config.domain
    out = ["<h2>Curation</h2>", f"<p>{len(curated):,} documents curated for {escape(domain)}"]
    if "domain" in curated:
        counts = curated["domain"].value_counts().rename_axis("domain").reset_index(name="documents")
        out.append(f"; {(curated['domain'] == domain).mean():.1%} of them are labelled {escape(domain)}.</p>")
        bars = px.bar(counts, x="domain", y="documents", color=counts["domain"].eq(domain).map({True: "target", False: "other"}),
                      color_discrete_map={"target": "#2da44e", "other": "#9aa5b1"}, title="Curated documents per labelled domain")
        out.append(fig(bars.update_layout(legend_title_text="", height=340)))
    else:
        out.append(" (the corpus has no domain labels, so precision cannot be measured).</p>")
    top = curated.sort_values("score", ascending=False) if "score" in curated else curated
    out.append(f"<h3>Top {min(TOP_TEXTS, len(top))} curated documents</h3>")
    for _, row in top.head(TOP_TEXTS).iterrows():
        text = str(row["text"])
        text = text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + " …"
        label = " · ".join(f"{k}: {row[k]:.3f}" if isinstance(row[k], float) else f"{k}: {row[k]}"
                           for k in ("id", "domain", "score") if k in row)
        out.append(f"<p><b>{escape(label)}</b></p><div class='doc'>{escape(text)}</div>")
    return "".join(out)


def kept_per_block(plan: dict) -> go.Figure:
    """Share of query heads, KV heads and MLP channels each block keeps, from a saved pruning plan."""
    fig = go.Figure()
    for key, name, color in (("num_heads", "query heads", "#8172b2"), ("num_kv_heads", "KV heads", "#4c72b0"),
                             ("intermediate_size", "MLP channels", "#dd8452")):
        before = [s[key] for s in plan["shapes_before"]]
        after = [s[key] for s in plan["shapes_after"]]
        fig.add_bar(x=list(range(len(before))), y=[a / b for a, b in zip(after, before)], name=name, marker_color=color,
                    text=[f"{a}/{b}" for a, b in zip(after, before)], hovertemplate="block %{x}: %{text} kept<extra>" + name + "</extra>")
    fig.update_layout(barmode="group", title="Kept per block (after / before)", xaxis_title="block",
                      yaxis_title="share kept", yaxis_range=[0, 1.05], height=360)
    return fig


def _prune_section(info: RunInfo, fig) -> str:
    plan_file = info.stages["prune"] / "model" / PLAN_FILE if "prune" in info.stages else None
    if plan_file is None or not plan_file.is_file():
        return ""
    plan = _read_json(plan_file)["plan"]
    before, after, total = plan["params_before"], plan["params_after"], plan.get("params_total_before")
    share = f" ({before / total:.0%} of the whole model's {total:,}: the pruning ratio is a share of this budget)" if total else ""
    return ("<h2>Pruning</h2>" + key_value_table([("non-embedding parameters before", f"{before:,}{share}"),
                                                  ("non-embedding parameters after", f"{after:,}"),
                                                  ("removed", f"{1 - after / before:.1%}"), ("head unit", plan["head_unit"])])
            + fig(kept_per_block(plan)))


def _recovery_section(info: RunInfo, fig) -> str:
    if "recover" not in info.stages:
        return ""
    folder = info.stages["recover"]
    out = ["<h2>Recovery by self-distillation</h2>"]
    if (folder / "recovery.json").is_file():
        keep = _read_json(folder / "recovery.json")["keep_rate"]
        out.append(f"<p>The agreement filter kept the teacher's regenerated answer for {keep:.1%} of the curated documents; "
                   "the others train on their original text.</p>")
    if (folder / "history.csv").is_file():
        history = pd.read_csv(folder / "history.csv")
        curve = go.Figure()
        for column, name in (("train_loss", "train loss"), ("val_loss", f"validation loss ({info.config.domain})")):
            part = history.dropna(subset=[column]) if column in history else history.iloc[:0]
            if len(part):
                curve.add_scatter(x=part["step"], y=part[column], mode="lines+markers", name=name)
        curve.update_layout(title="Recovery curve", xaxis_title="step", yaxis_title="loss (nats/token)", height=360)
        out.append(fig(curve))
    return "".join(out)


def render_report(info: RunInfo) -> str:
    """The report page for a loaded run, as one HTML string."""
    fig = Figures()
    title = f"FineScope run: {info.config.domain} on {_model_name(info.config)}"
    missing = f"<div class='missing'><p>{escape(missing_sentence(info))}</p></div>" if info.missing else ""
    body = "".join([missing, _config_section(info), _results_section(info, fig), _curation_section(info, fig),
                    _prune_section(info, fig), _recovery_section(info, fig)])
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title><style>{STYLE}</style></head>"
            f"<body><h1>{escape(title)}</h1><p>Run folder: <code>{escape(info.path)}</code></p>{body}</body></html>\n")


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's report as one self-contained HTML file (default `<run>/report.html`); return its path."""
    info = load_run(run_dir)
    return write_text_atomic(output_path(out) if out else info.path / "report.html", render_report(info))


# ---- several runs -------------------------------------------------------------------------------

COMPARE_COLUMNS = ["run", "run_domain", "ratio", "criterion", "params_after", "target_retained",
                   "domain", "base_ppl", "pruned_ppl", "recovered_ppl", "retained"]


def compare_runs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Finished runs side by side: one row per (run, evaluated domain).

    Unfinished runs are refused rather than shown with gaps, because a half-filled row would
    compare one run's recovered model with another's base model without saying so.
    """
    infos = [load_run(p) for p in paths]
    if not infos:
        raise FinescopeError("No run folders to compare; pass one or more folders that `finescope run` created.")
    names = [i.name for i in infos]
    if len(set(names)) < len(names):
        names = [str(i.path) for i in infos]
    frames = []
    for name, info in zip(names, infos):
        if info.missing:
            raise FinescopeError(f"Run {name!r} is unfinished (missing stages: {', '.join(info.missing)}); "
                                 "finish it with `finescope run` or leave it out of the comparison.")
        table = domain_table(info)
        if table is None or "retained" not in table:
            raise FinescopeError(f"Run {name!r} has no per-domain table in {SUMMARY_FILE}; "
                                 "run `finescope run` on it again to write one.")
        target = table.loc[table["domain"] == info.config.domain, "retained"]
        frames.append(table.assign(run=name, run_domain=info.config.domain, ratio=info.config.prune.ratio,
                                   criterion=info.config.prune.criterion,
                                   params_after=(info.summary.get("params_non_embedding") or {}).get("pruned"),
                                   target_retained=target.iloc[0] if len(target) else float("nan")))
    return pd.concat(frames, ignore_index=True).reindex(columns=COMPARE_COLUMNS)


def compare_figure(df: pd.DataFrame) -> go.Figure:
    """Retained share per domain, one bar colour per run; each run's own target domain is hatched."""
    fig = go.Figure()
    for run, part in df.groupby("run", sort=False):
        fig.add_bar(x=part["domain"], y=part["retained"], name=run,
                    marker_pattern_shape=["/" if d == t else "" for d, t in zip(part["domain"], part["run_domain"])],
                    customdata=part[["ratio", "criterion", "recovered_ppl"]],
                    hovertemplate="%{x}: retained %{y:.3f}<br>ratio %{customdata[0]}, %{customdata[1]}, "
                                  "recovered ppl %{customdata[2]:.2f}<extra>%{fullData.name}</extra>")
    fig.add_hline(y=1, line_dash="dash", line_color="#57606a", annotation_text="unpruned")
    fig.update_layout(barmode="group", xaxis_title="domain", yaxis_title="retained",
                      title="Retained share of the unpruned model per domain, by run (hatched: the run's target domain)")
    return fig
