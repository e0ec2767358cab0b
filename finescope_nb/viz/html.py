"""HTML for token-level displays: text coloured by a feature's activation, and small tables.

Every token is a <span class="finescope-token"> whose background opacity is its activation over
the scale's maximum and whose title shows the value, so both a reader and a browser test can see
which tokens fired. Pure functions: strings in, an HTML string out.
"""

from __future__ import annotations

import html
from typing import Sequence

import pandas as pd

HIGHLIGHT = "255, 140, 0"  # orange: reads on light and dark notebook themes


def _visible(token: str) -> str:
    return html.escape(token.replace("\n", "↵").replace("\t", "⇥"))


def token_spans(tokens: Sequence[str], acts: Sequence[float], scale: float | None = None,
                titles: Sequence[str] | None = None) -> str:
    """Tokens as spans shaded by activation / scale (default: the largest activation shown)."""
    scale = scale if scale and scale > 0 else max([a for a in acts if a > 0], default=1.0)
    spans = []
    for i, (token, act) in enumerate(zip(tokens, acts)):
        alpha = min(max(act / scale, 0.0), 1.0)
        title = titles[i] if titles is not None else f"{act:.3g}"
        spans.append(f'<span class="finescope-token" data-activation="{act:.4g}" title="{html.escape(title)}" '
                     f'style="background: rgba({HIGHLIGHT}, {alpha:.2f}); white-space: pre; border-radius: 2px">'
                     f'{_visible(token)}</span>')
    return "".join(spans)


def examples_html(examples: list[dict], scale: float | None = None) -> str:
    """The top-activating contexts of a feature, one line each, strongest first."""
    if not examples:
        return '<div class="finescope-examples"><i>This feature never fired on the corpus.</i></div>'
    scale = scale or max(e["peak"] for e in examples)
    rows = []
    for e in examples:
        where = html.escape(f"{e['domain'] + ' · ' if e.get('domain') else ''}{e['doc_id']}")
        rows.append(f'<div class="finescope-example" style="font-family: monospace; margin: 2px 0">'
                    f'<b>{e["peak"]:.3g}</b> <span style="color: grey">[{where}]</span> '
                    f'{token_spans(e["tokens"], e["acts"], scale)}</div>')
    return '<div class="finescope-examples">' + "".join(rows) + "</div>"


def logit_table_html(table: pd.DataFrame) -> str:
    """Promoted tokens (green) and suppressed tokens (red) of a feature, side by side."""
    rows = "".join(
        f'<tr><td style="color: #1a7f37; white-space: pre">{_visible(r.promoted)}</td><td>{r.promoted_logit:+.2f}</td>'
        f'<td style="color: #cf222e; white-space: pre">{_visible(r.suppressed)}</td><td>{r.suppressed_logit:+.2f}</td></tr>'
        for r in table.itertuples())
    return ('<table class="finescope-logit-table" style="font-family: monospace"><tr><th>promoted</th><th>logit</th>'
            f'<th>suppressed</th><th>logit</th></tr>{rows}</table>')


def prompt_html(tokens: Sequence[str], acts: Sequence[float], top_features: list[list[tuple[int, float]]],
                feature: int | None = None) -> str:
    """A typed text token by token: shaded by `feature`'s activation, each token's top features in its tooltip
    and in a table below."""
    titles = [", ".join(f"#{f} {v:.2g}" for f, v in feats) or "no feature fires" for feats in top_features]
    label = f"shaded by feature #{feature}" if feature is not None else "select a feature to shade by it"
    table = "".join(
        f"<tr><td style='white-space: pre'>{_visible(t)}</td><td>{html.escape(title)}</td></tr>"
        for t, title in zip(tokens, titles))
    return (f'<div class="finescope-prompt-tokens" style="font-family: monospace; line-height: 1.8">{token_spans(tokens, acts, titles=titles)}</div>'
            f'<div style="color: grey; font-size: small">{label}; hover a token for its top features</div>'
            f'<details><summary>top features per token</summary><table class="finescope-prompt-table">{table}</table></details>')
