"""The page `finescope curate` writes: why these documents, and what the dense baseline would have taken.

One self-contained HTML file (plotly.js inlined once, as in the run report): the pool's score
histogram with the cut; the top documents with each one's strongest selection feature shaded
token by token; the features that drive the selection, each with its card (top contexts, logit
effects, activation histogram, and how its mass splits between curated and other documents);
and the centred dense baseline's selection of the same size beside it: the overlap, and the
documents only one of the two picked. A user tuning a threshold reads this page, not the codes.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from finescope_nb.features import compute_feature_stats, encode_text
from finescope_nb.report import STYLE, TEXT_CHARS, Figures, escape, key_value_table
from finescope_nb.viz.curation_plots import score_histogram
from finescope_nb.viz.feature_card import domain_figure, feature_card_html, histogram_figure
from finescope_nb.viz.html import token_spans

TOP_DOCS, TOP_FEATURES, ONLY_ONE = 8, 5, 5
CARD_DOCS = 200  # documents the feature cards are computed on: the best curated ones and as many others


def driving_features(selection, n: int = TOP_FEATURES) -> list[tuple[int, float]]:
    """The features contributing most to the selected documents' scores, summed over the selection."""
    total: Counter = Counter()
    for feats in selection.top_features:
        for feature, contribution in feats:
            total[int(feature)] += contribution
    return total.most_common(n)


def _snippet(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + " …"


def _top_documents(result, sae, model, tokenizer) -> str:
    sel, texts = result.selection, result.pool["text"].tolist()
    out = [f"<h2>Top {min(TOP_DOCS, len(sel))} curated documents</h2><p>Each is shaded by the activation of the SAE "
           "feature that contributed most to its score; hover a token for its value.</p>"]
    for row, doc_id, feats in list(zip(sel.rows.tolist(), sel.ids, sel.top_features))[:TOP_DOCS]:
        label = f"id {doc_id} · score {sel.scores[row]:.4f}"
        if feats:
            codes = encode_text(sae, model, tokenizer, texts[row])
            feature = int(feats[0][0])
            label += " · features " + ", ".join(f"#{f} ({c:.3f})" for f, c in feats)
            body = token_spans(codes.tokens, codes.codes[:, feature].tolist())
            out.append(f"<p><b>{escape(label)}</b> — shaded by #{feature}</p><div class='doc'>{body}</div>")
        else:
            out.append(f"<p><b>{escape(label)}</b></p><div class='doc'>{escape(_snippet(texts[row]))}</div>")
    return "".join(out)


def _feature_cards(result, sae, model, tokenizer, fig, progress: bool) -> str:
    features = driving_features(result.selection)
    if not features:
        return ""
    chosen = set(result.selection.rows.tolist())
    rest = [i for i in np.random.default_rng(0).permutation(len(result.pool)).tolist() if i not in chosen]
    rows = result.selection.rows.tolist()[: CARD_DOCS // 2] + rest[: CARD_DOCS // 2]
    texts = result.pool["text"].tolist()
    stats = compute_feature_stats(sae, model, tokenizer, [texts[i] for i in rows],
                                  domains=["curated" if i in chosen else "not curated" for i in rows],
                                  doc_ids=[str(result.pool["id"].iloc[i]) for i in rows], progress=progress)
    out = [f"<h2>The features that drive the selection</h2><p>Summed contribution to the curated documents' scores; "
           f"each card is computed on {len(rows)} documents ({min(len(chosen), CARD_DOCS // 2)} curated, the rest not).</p>"]
    for feature, total in features:
        out += [f"<h3>Feature #{feature} (total contribution {total:.3f})</h3>", feature_card_html(stats, feature),
                fig(histogram_figure(stats, feature)), fig(domain_figure(stats, feature))]
    return "".join(out)


def _only_one(title: str, selection, rows: list[int], texts: list[str]) -> str:
    best = sorted(rows, key=lambda r: -selection.scores[r])[:ONLY_ONE]
    parts = [f"<h3>{escape(title)} ({len(rows):,}; the {len(best)} it scores highest)</h3>"]
    parts += [f"<p><b>row {r} · score {selection.scores[r]:.4f}</b></p><div class='doc'>{escape(_snippet(texts[r]))}</div>"
              for r in best]
    return "".join(parts)


def _dense_comparison(result) -> str:
    sae_rows, dense_rows = set(result.selection.rows.tolist()), set(result.dense.rows.tolist())
    texts = result.pool["text"].tolist()
    return ("<h2>Beside the centred dense baseline</h2>"
            f"<p>The LM's own mean hidden state at the SAE's layer, centred on the pool's mean, picks the same number of "
            f"documents ({len(dense_rows):,}); {result.overlap:,} of them are also in the SAE's selection "
            f"({result.overlap / max(len(sae_rows), 1):.0%}).</p>"
            + _only_one("Only the SAE picked", result.selection, sorted(sae_rows - dense_rows), texts)
            + _only_one("Only the dense baseline picked", result.dense, sorted(dense_rows - sae_rows), texts))


def render_curation_page(result, sae, model, tokenizer, seeds: list[str], progress: bool = True) -> str:
    """The whole page as one HTML string."""
    fig = Figures()
    sel = result.selection
    cut = float(sel.scores[sel.rows[-1]]) if "m" in sel.rule else float(sel.rule["threshold"])
    labels = result.pool["domain"].astype(str).tolist() if "domain" in result.pool else None
    summary = key_value_table([("corpus documents", f"{result.pool_size:,}"), ("seeds", len(seeds)),
                               ("curated", f"{len(sel):,} ({result.cut_description})"),
                               ("score range", f"{sel.scores.min():.4f} to {sel.scores.max():.4f}"),
                               ("SAE trained on", result.sae_source)])
    histogram = score_histogram(sel.scores, labels, cut, title="Pool scores and the cut (curated: right of the line)")
    body = "".join([summary, "<h2>Scores</h2>", fig(histogram),
                    "" if labels else "<p>The corpus has no domain labels, so the histogram shows the whole pool in one colour.</p>",
                    _top_documents(result, sae, model, tokenizer), _feature_cards(result, sae, model, tokenizer, fig, progress),
                    _dense_comparison(result)])
    title = f"FineScope curation: {len(sel):,} of {result.pool_size:,} documents"
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title><style>{STYLE}</style></head>"
            f"<body><h1>{escape(title)}</h1><p>Output folder: <code>{escape(result.out)}</code></p>{body}</body></html>\n")
