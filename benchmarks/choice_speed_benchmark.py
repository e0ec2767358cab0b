"""Multiple-choice speed: the LM head run on the option tokens only (the kit's scoring) against every
position of context and option (the scoring before it), on the same cloze items. Writes
results/<model>/choice_speed.json (results/choice_speed.json for the embedded model).

    python benchmarks/choice_speed_benchmark.py --model gemma3-270m

A cloze item is a 48-token context and four 16-token options, so scoring every position forms three
rows of logits for each one an option needs. On a large vocabulary the LM head is most of a forward
(Gemma 3: 262,144 x 640 against about 100M decoder parameters), and every task metric scored by
log-likelihood (cloze, MMLU, ARC) pays it. Both ways score the same items in the same batches,
interleaved, best of --rounds; the file records items per second of each, their ratio, and the largest
difference between the two ways' option scores (the same numbers up to float rounding).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from finescope_nb import logprobs  # noqa: E402
from finescope_nb.artifacts import write_json_atomic  # noqa: E402
from finescope_nb.basemodel import hardware  # noqa: E402
from finescope_nb.evaluate import choice  # noqa: E402
from finescope_nb.evaluate.cloze import domain_items  # noqa: E402
from finescope_nb.lm import load_model, load_tokenizer  # noqa: E402
from benchmarks.common import add_model_args, provenance, result_path, set_threads  # noqa: E402


def every_position(model, input_ids, attention_mask, wanted=None):
    """The scoring before: log-probabilities at every position, whatever the caller reads."""
    return logprobs.next_token_logprobs(model, input_ids, attention_mask)


def score(model, items, pad: int, batch_size: int, every: bool) -> tuple[float, list[np.ndarray]]:
    """Seconds to score every option of `items`, and the scores."""
    kept = choice.next_token_logprobs
    choice.next_token_logprobs = every_position if every else kept
    try:
        start = time.perf_counter()
        scores = choice.option_logprobs(model, [it.context for it in items], [it.options for it in items], pad, batch_size)
        return time.perf_counter() - start, scores
    finally:
        choice.next_token_logprobs = kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser, pool=False)
    parser.add_argument("--domain", default="math")
    parser.add_argument("--items", type=int, default=64, help="cloze items of --domain's test split")
    parser.add_argument("--batch-size", type=int, default=32, help="option rows per forward (the cloze metric's)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    set_threads()
    model, tokenizer = load_model(args.model).eval(), load_tokenizer(args.model)
    items = domain_items(tokenizer, args.domain, limit=args.items)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    best = {"option tokens": float("inf"), "every position": float("inf")}
    scores = {}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name in best:
                seconds, scores[name] = score(model, items, pad, args.batch_size, every=name == "every position")
                best[name] = min(best[name], seconds)
    gap = max(float(np.abs(a - b).max()) for a, b in zip(scores["option tokens"], scores["every position"]))
    rate = {name: len(items) / seconds for name, seconds in best.items()}
    result = provenance(args) | {
        "hardware": hardware(), "domain": args.domain, "items": len(items), "options_per_item": len(items[0].options),
        "batch_size": args.batch_size, "rounds": args.rounds, "items_per_s": rate,
        "speedup_option_tokens": rate["option tokens"] / rate["every position"],
        "max_score_difference": gap, "vocabulary": int(model.config.vocab_size)}
    write_json_atomic(result_path(args, "choice_speed.json"), result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
