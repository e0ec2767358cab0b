"""Sentences that state measured results, computed from the results they describe.

A notebook's prose must not go stale when its outputs change (another model, another seed draw,
fast mode), so every sentence that states a number or a comparison is written here from the
numbers themselves and displayed beside them. Each function takes plain results (a table, a
metrics dict, a benchmark's JSON) and returns Markdown.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from finescope_nb import paths

CURATION_RESULTS = paths.REPO_ROOT / "benchmarks" / "results" / "curation.json"
PAPER_ROW = "sae max max-over-seeds (paper)"
DEFAULT_ROW = "sae mean centroid (default)"


def load_benchmark(path: str | Path = CURATION_RESULTS) -> dict:
    """A benchmark's recorded results, or {} when it has not been run (a fresh clone without results/)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def recovery(table: pd.DataFrame, domain: str) -> str:
    """What pruning cost and what recovery won back, on the target domain and elsewhere.

    `table`: the pipeline's per-domain table (domain, base_ppl, pruned_ppl, recovered_ppl, retained)."""
    rows = table.set_index("domain")
    row = rows.loc[domain]
    lost = row.pruned_ppl - row.base_ppl
    if lost <= 0:
        return (f"On **{domain}**, pruning did not raise perplexity ({row.base_ppl:.2f} → {row.pruned_ppl:.2f}), "
                f"so there was nothing for recovery to win back; recovered: {row.recovered_ppl:.2f}.")
    won = (row.pruned_ppl - row.recovered_ppl) / lost
    others = rows.drop(index=domain)
    others_won = ((others.pruned_ppl - others.recovered_ppl) / (others.pruned_ppl - others.base_ppl).where(
        others.pruned_ppl > others.base_ppl)).dropna()
    verdict = ("Recovery changed little here" if abs(won) < 0.25 else
               "Recovery won back most of the loss" if won >= 0.5 else "Recovery won back part of the loss")
    text = (f"On **{domain}**, pruning raised perplexity from {row.base_ppl:.2f} to {row.pruned_ppl:.2f} "
            f"(+{lost / row.base_ppl:.1%}); recovery brought it to {row.recovered_ppl:.2f}, winning back "
            f"{won:.0%} of what pruning lost. {verdict}: the recovered model retains {row.retained:.3f} of the base "
            f"model's exp(−loss) on {domain}.")
    if len(others_won):
        text += (f" On the other domains recovery won back between {others_won.min():.0%} and {others_won.max():.0%} "
                 "of the pruning loss.")
    return text


def sae_card(metrics: dict) -> str:
    """The held-out quality numbers of an SAE in one sentence, with what they were measured on."""
    asked = (metrics.get("evaluated_on") or {}).get("heldout_tokens")
    measured = metrics["heldout_tokens"]
    basis = f"{measured:,} held-out tokens"
    if asked is not None and measured < asked:
        basis += f" (asked for {asked:,}; the held-out documents ran out first)"
    text = (f"Measured on {basis}: the SAE explains {metrics['explained_variance']:.1%} of the activations' variance "
            f"with {metrics['l0']:.1f} active features per token (L0), and {metrics['dead_fraction']:.1%} of its "
            "features never fire (dead)")
    if "loss_recovered" in metrics:
        text += f"; spliced into the model it recovers {metrics['loss_recovered']:.1%} of the zero-ablation loss gap"
    return text + "."


def v3_retrieval(bench: dict) -> str:
    """Whether the curation benchmark measured the Jacobian-selected (v3) SAE in retrieval, and what it found."""
    fine = bench.get("fine_goal") or {}
    if "v3_macro_precision" not in fine:
        return ("Whether the Jacobian selector's coordinates help *retrieval* is **not measured yet**: the recorded "
                "curation benchmark (`benchmarks/results/curation.json`) has no v3 row. "
                "`python benchmarks/curation_benchmark.py` adds one (the SAE on 128 Jacobian-selected coordinates "
                "against the SAE on all of them, on the same seed draws).")
    m = bench.get("m", {}).get("fine", "M")
    return (f"In retrieval (the curation benchmark, fine topics, macro precision@{m} on the same seed draws), the SAE "
            f"on Jacobian-selected coordinates reaches {fine['v3_macro_precision']:.3f} against {fine['sae_macro_precision']:.3f} "
            f"for the SAE on all coordinates and {fine['dense_centred_macro_precision']:.3f} for the centred dense baseline.")


def paper_departures(bench: dict, m: int) -> str:
    """Where the kit's default selector departs from the paper, with the measurement behind the choice."""
    text = (f"**Where the kit departs from the paper.** The default selector scores a document by its cosine to the "
            f"*centroid* of the seeds' codes; the paper takes the *maximum* cosine over the seeds and max-pools the "
            f"codes. The kit keeps M={m:,} documents from one SAE where the paper keeps M=100 per SAE.")
    macro = bench.get("macro") or {}
    if all(PAPER_ROW in macro.get(s, {}) and DEFAULT_ROW in macro.get(s, {}) for s in ("coarse", "fine")):
        c, f = macro["coarse"], macro["fine"]
        text += (f" Why the centroid: in the curation benchmark the default scored macro precision "
                 f"{c[DEFAULT_ROW]['precision_mean']:.3f} on domains (M={bench['m']['coarse']}) and "
                 f"{f[DEFAULT_ROW]['precision_mean']:.3f} on topics (M={bench['m']['fine']}), the paper's selector "
                 f"{c[PAPER_ROW]['precision_mean']:.3f} and {f[PAPER_ROW]['precision_mean']:.3f}.")
    return text + " `benchmarks/README.md` has the whole comparison."


def coarse_precision(table: pd.DataFrame, m: int, spread: pd.DataFrame | None = None, default: str = "sae (default)") -> str:
    """The selector-by-domain precision table in words: the default's range and the hardest domains.

    `table`: selectors as rows, target domains as columns, mean precision@m over seed draws as values;
    `spread`: the same shape, their standard deviation over the draws."""
    own = table.loc[default]
    best = table.max().sort_values()
    if own.max() - own.min() < 0.005:
        text = f"At M={m:,}, the default SAE selector's precision is {own.max():.2f} on every domain here."
    else:
        text = (f"At M={m:,}, the default SAE selector's precision ranges from {own.min():.2f} ({own.idxmin()}) to "
                f"{own.max():.2f} ({own.idxmax()}).")
    hard = [d for d in best.index[:2] if best[d] < 0.995]
    if hard:
        text += " The hardest for every selector: " + " and ".join(
            f"{d} (best {best[d]:.2f}, by {table[d].idxmax()})" for d in hard) + "."
    else:
        text += " Some selector is perfect on every domain."
    if spread is not None and spread.loc[default].notna().any():
        own_spread = spread.loc[default].fillna(0)
        text += (" The default's precision was the same on every seed draw." if own_spread.max() < 0.005 else
                 f" From one draw of seeds to another the default's precision moves with a standard deviation of up "
                 f"to {own_spread.max():.2f} ({own_spread.idxmax()}), so another draw gives a somewhat different table.")
    return text


def topic_coverage(mix: pd.DataFrame, n_seeds: int) -> str:
    """The seeds' topics against the curated set's, from `curate.topic_mix`."""
    seeded = mix[mix.seeds > 0]
    picked = mix[mix.curated > 0]
    total = int(mix.curated.sum())
    unseeded = int(mix[mix.seeds == 0].curated.sum())
    text = (f"The {n_seeds} seeds cover {len(seeded)} topics; the {total:,} curated documents come from "
            f"{len(picked)} topics, {unseeded:,} of them ({unseeded / max(total, 1):.0%}) from topics no seed has.")
    missing = mix[(mix.seeds > 0) & (mix.curated == 0)]
    if len(missing):
        text += f" Seeded topics with no curated document: {', '.join(missing.topic)}."
    return text


def ablation(results: dict) -> str:
    """The recorded ablation table in words: what pruning cost, which recovery arm won, and how FineScope
    compares with the rows the paper compares it with, per domain.

    `results`: benchmarks/results/ablation.json (its `retained` means per row and domain)."""
    retained, domains = results["retained"], results["domains"]
    mean = {row: {d: cells[d]["mean"] for d in domains} for row, cells in retained.items()}
    pruned_rows = [r for r in results["row_order"] if r.startswith(("pruned", "finescope"))]
    floor = min(mean[r][d] for r in pruned_rows for d in domains)
    per = lambda row: " / ".join(f"{mean[row][d]:.3f}" for d in domains)
    best = {d: max(pruned_rows, key=lambda r: mean[r][d]) for d in domains}
    text = (f"Every pruned row retains at least {floor:.3f} of the unpruned model's score, so pruning 30% of this model "
            "costs little to begin with. The best recovery: " +
            "; ".join(f"{best[d]} on {d} ({mean[best[d]][d]:.3f})" for d in domains) + ".")
    parts = []
    for other in ("pruned+curated", "pruned+random", "finescope-generic-calibration"):
        if other in mean and "finescope" in mean:
            above = [d for d in domains if mean["finescope"][d] > mean[other][d]]
            verdict = "above" if above else "below"
            only = f" only on {', '.join(above)}" if above and len(above) < len(domains) else ""
            parts.append(f"{verdict} {other} ({per(other)}){only}")
    if parts:
        text += f" FineScope retains {per('finescope')} ({' / '.join(domains)}): " + "; ".join(parts) + "."
    return text
