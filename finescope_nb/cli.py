"""`finescope`: the command-line face of the kit.

Every command catches `FinescopeError` and prints its one sentence (exit 2) instead of a
traceback, because bad input is the user's to fix and the sentence says how.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

from finescope_nb.errors import FinescopeError

EPILOG = textwrap.dedent("""\
    examples:
      finescope run                          # the embedded default: math domain, tiny Llama
      finescope run --domain code --run-dir runs/code
      finescope run --model path/to/local/model --corpus my_corpus.jsonl
      finescope train-base --max-steps 50    # retrain the embedded base model (resumable)
    """)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finescope", description="FineScope on your laptop: SAE-curated domain data, pruning, recovery.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="run the pipeline (cached per stage) and print a summary",
        epilog="example: finescope run --domain math --run-dir runs/math",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--domain", default="math", help="target domain (default: math)")
    run.add_argument("--model", default=None, help="local model folder or hub id (default: embedded tiny Llama)")
    run.add_argument("--corpus", default=None, help="JSONL/CSV/parquet/datasets folder with a 'text' column")
    run.add_argument("--run-dir", default=None, help="run folder (default: runs/<domain>-<config hash>)")
    run.add_argument("--ratio", type=float, default=None, help="share of non-embedding parameters to prune (default: 0.3)")
    run.add_argument("--seeds", default=None, help="a text file of your own seed examples, one per line (default: 10 held-out seeds)")
    run.add_argument("--seed", type=int, default=0)

    tb = sub.add_parser(
        "train-base", help="train the embedded tokenizer and tiny Llama from the pool (resumable)",
        epilog="example: finescope train-base --max-steps 1000 --minutes 85",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tb.add_argument("--out", default=None, help="output folder (default: data/models/finescope-tiny-llama)")
    tb.add_argument("--checkpoint-dir", default=None, help="where checkpoints go (default: <out>.ckpt)")
    tb.add_argument("--max-steps", type=int, default=None)
    tb.add_argument("--minutes", type=float, default=None, help="stop training after this many minutes")
    tb.add_argument("--seed", type=int, default=None)
    return parser


def _cmd_run(args) -> None:
    from finescope_nb import pipeline
    from finescope_nb.config import CorpusConfig, ModelConfig

    cfg = pipeline.default_config(
        args.domain, model=ModelConfig(path=args.model), corpus=CorpusConfig(path=args.corpus), seed=args.seed,
    )
    if args.ratio is not None:
        cfg = cfg.replace(prune=cfg.prune.replace(ratio=args.ratio))
    if args.seeds is not None:
        cfg = cfg.replace(curation=cfg.curation.replace(seeds_path=args.seeds))
    result = pipeline.run(cfg, args.run_dir)
    print(f"\nPerplexity per domain ({cfg.eval.split} split): base model, pruned by {cfg.prune.ratio:.0%} for {cfg.domain}, "
          "recovered by self-distillation; retained = exp(-loss) / exp(-base loss):")
    print(result.table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nRun folder: {result.run_dir}")


def _cmd_train_base(args) -> None:
    from finescope_nb.train_base import main as train_main

    train_main(out=args.out, checkpoint_dir=args.checkpoint_dir, max_steps=args.max_steps,
               minutes=args.minutes, seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("WANDB_MODE", "disabled")
    args = _parser().parse_args(argv)
    try:
        {"run": _cmd_run, "train-base": _cmd_train_base}[args.command](args)
    except FinescopeError as exc:
        print(f"finescope: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
