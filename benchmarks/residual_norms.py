"""Where a model's residual stream has outliers: the norm of each block's output by position, and the
coordinates that dominate it. Writes results/<model>/residual_norms.json (results/residual_norms.json for
the embedded model).

    python benchmarks/residual_norms.py --model gemma3-270m --docs 120

Pretrained models park huge activations on the first token (the attention sink) and on a few
coordinates, from some block on; an SAE trained where they are spends its capacity on them
(benchmarks/results/smollm2-135m/exploration.json: block 14 of SmolLM2 has first-token norms near
25,000 against 150 elsewhere). This is the measurement behind a named model's SAE layer: a block
whose few outlier tokens carry little of the variance, as early as that allows, since early-exit
capture pays more the earlier the block.
Runs a few minutes on 2 CPU cores (one full forward over `--docs` documents of `--max-length` tokens).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finescope_nb.artifacts import write_json_atomic  # noqa: E402
from finescope_nb.basemodel import hardware  # noqa: E402
from finescope_nb.lm import load_model, load_tokenizer  # noqa: E402
from finescope_nb.sae.cache import shuffled_texts  # noqa: E402
from benchmarks.common import add_model_args, provenance, result_path  # noqa: E402


def block_norms(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 8) -> dict[int, dict]:
    """Per block: the mean norm at position 0, at positions 1-3 and later, the largest norm after position 0,
    the share of the variance the 0.1% largest tokens after position 0 carry, and the three coordinates with
    the largest mean |activation| against the median coordinate's."""
    per_block: dict[int, list[torch.Tensor]] = {}
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length)
        with torch.no_grad():
            hidden = model(**enc, output_hidden_states=True, use_cache=False).hidden_states[1:]  # each block's output
        mask = enc["attention_mask"].bool()
        for block, h in enumerate(hidden):
            per_block.setdefault(block, []).append(torch.cat([h[i][mask[i]] for i in range(len(h))]).float())
        lengths = mask.sum(1)
        per_block.setdefault(-1, []).append(torch.cat([torch.arange(n) for n in lengths.tolist()]))
    positions = torch.cat(per_block.pop(-1))
    out = {}
    for block, parts in per_block.items():
        acts = torch.cat(parts)
        norms = acts.norm(dim=1)
        later = positions > 0
        rest = acts[later]
        centred = (rest - rest.mean(0)).pow(2).sum(1)
        top = centred.topk(max(1, len(centred) // 1000)).values.sum() / centred.sum()
        coordinate = rest.abs().mean(0)
        order = coordinate.argsort(descending=True)[:3]
        out[block] = {"position_0": round(float(norms[positions == 0].mean()), 1),
                      "positions_1_3": round(float(norms[(positions >= 1) & (positions <= 3)].mean()), 1),
                      "later": round(float(norms[positions > 3].mean()), 1),
                      "max_after_position_0": round(float(norms[later].max()), 1),
                      "variance_share_of_top_0.1pct_tokens": round(float(top), 3),
                      "top_coordinates": {int(c): round(float(coordinate[c]), 1) for c in order},
                      "median_coordinate": round(float(coordinate.median()), 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser, pool=False)
    parser.add_argument("--docs", type=int, default=120, help="pool documents (shuffled with seed 0)")
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    if args.docs < 1 or args.max_length < 8:
        parser.error(f"--docs must be at least 1 and --max-length at least 8 (got {args.docs} and {args.max_length}); "
                     "positions 0, 1-3 and later are reported apart")
    model, tokenizer = load_model(args.model), load_tokenizer(args.model)
    texts = shuffled_texts("pool", 0, args.docs)
    by_block = block_norms(model, tokenizer, texts, args.max_length)
    result = provenance(args) | {"hardware": hardware(), "sample": f"{args.docs} pool documents (shuffle seed 0), "
                                                                   f"first {args.max_length} tokens each",
                                 "blocks": by_block,
                                 "note": "block i is the output of decoder block i (transformers' hidden_states[i + 1]); "
                                         "the last block's entry is after the final norm, which transformers applies there"}
    write_json_atomic(result_path(args, "residual_norms.json"), result)
    for block, row in by_block.items():
        print(block, row, flush=True)


if __name__ == "__main__":
    main()
