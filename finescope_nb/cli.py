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
      finescope report runs/code             # one HTML page: tables, figures, what is missing
      finescope compare runs/code runs/math  # finished runs side by side, per domain
      finescope export runs/code --format gguf   # the recovered model for llama.cpp
      finescope train-base --max-steps 50    # retrain the embedded base model (resumable)

    `finescope COMMAND --help` shows each command's options and more examples.
    """)
RUN_EXAMPLES = textwrap.dedent("""\
    examples:
      finescope run --domain math --run-dir runs/math   # rerun after a stop: it resumes where it was
      finescope run --domain code --ratio 0.4           # prune 40% of the non-embedding parameters
      finescope run --seeds my_seeds.txt                # your own seed examples, one per line
      finescope run --metrics cloze mmlu gsm8k humaneval --metric-limit 20   # more metrics, 20 items per group
      finescope run --model path/to/local/model --corpus my_corpus.jsonl --domain math
      finescope run --scope uniform --all-blocks --mlp-only   # every block pruned alike: stock from_pretrained loads it
    """)
EXPORT_EXAMPLES = textwrap.dedent("""\
    examples:
      finescope export runs/math --format gguf                 # RUN/exports/recovered-gguf/: llama.cpp, float16
      finescope export runs/math --format gguf --dtype q8_0    # 8-bit, about half the size
      finescope export runs/math --format hf --pad             # any run, zero-padded to the base model's shapes
      finescope export runs/math-uniform --format hf --out ~/math-model   # a uniform run as it is
      (a transformers export loads with AutoModelForCausalLM.from_pretrained(DIR), no finescope needed)
    """)
TRAIN_BASE_EXAMPLES = textwrap.dedent("""\
    examples:
      finescope train-base --max-steps 1000 --minutes 85   # the embedded model's own budget
      finescope train-base --max-steps 50 --out /tmp/tiny  # a quick try that leaves data/ alone
      (rerun an interrupted command as it was: it resumes from the checkpoints in <out>.ckpt)
    """)
REPORT_EXAMPLES = textwrap.dedent("""\
    examples:
      finescope report runs/math                           # writes runs/math/report.html
      finescope report runs/math --out ~/math-report.html  # one file that opens offline in any browser
      finescope run --run-dir runs/math && finescope report runs/math
      (an unfinished run is reported too, with the stages it still misses)
    """)
COMPARE_EXAMPLES = textwrap.dedent("""\
    examples:
      finescope compare runs/math runs/code                # per run and domain: ppl and retained
      finescope compare runs/math-* --csv comparison.csv   # also save the table as CSV
    """)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finescope", description="FineScope on your laptop: SAE-curated domain data, pruning, recovery.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="run the pipeline (cached per stage) and print a summary",
        epilog=RUN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--domain", default="math", help="target domain (default: math)")
    run.add_argument("--model", default=None, help="local model folder or hub id (default: embedded tiny Llama)")
    run.add_argument("--corpus", default=None, help="JSONL/CSV/parquet/datasets folder with a 'text' column")
    run.add_argument("--run-dir", default=None, help="run folder (default: runs/<domain>-<config hash>)")
    run.add_argument("--ratio", type=float, default=None, help="share of non-embedding parameters to prune (default: 0.3)")
    run.add_argument("--seeds", default=None, help="a text file of your own seed examples, one per line (default: 10 held-out seeds)")
    run.add_argument("--seed", type=int, default=0, help="one seed for every stage: seed draw, calibration sample, "
                                                            "fine-tuning order (default: 0)")
    run.add_argument("--metrics", nargs="+", default=None, metavar="METRIC",
                     help="task metrics beside perplexity (default: cloze); any of perplexity, cloze, mmlu, arc, gsm8k, "
                          "math500, humaneval, mbpp")
    run.add_argument("--metric-limit", type=int, default=None, help="items per group for those metrics (default: 100)")
    run.add_argument("--scope", choices=("per_layer", "global", "uniform"), default=None,
                     help="per_layer: the same share of every prunable block (default); global: rank all blocks' units "
                          "together; uniform: the same head and channel counts in every prunable block")
    run.add_argument("--all-blocks", action="store_true",
                     help="prune every block (default: keep the first eighth and the last block whole); with "
                          "--scope uniform (and --mlp-only, or a head count the config can state) the model then "
                          "loads with stock from_pretrained")
    run.add_argument("--mlp-only", action="store_true", help="prune MLP channels only and keep every attention head "
                                                             "(what a stock GPT-2 or GPT-NeoX config can state)")

    tb = sub.add_parser(
        "train-base", help="train the embedded tokenizer and tiny Llama from the pool (resumable)",
        epilog=TRAIN_BASE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tb.add_argument("--out", default=None, help="output folder (default: data/models/finescope-tiny-llama)")
    tb.add_argument("--checkpoint-dir", default=None, help="where checkpoints go (default: <out>.ckpt)")
    tb.add_argument("--max-steps", type=int, default=None)
    tb.add_argument("--minutes", type=float, default=None, help="stop training after this many minutes")
    tb.add_argument("--seed", type=int, default=None)

    report = sub.add_parser(
        "report", help="write a run's report: one self-contained HTML file with tables and figures",
        epilog=REPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("run", metavar="RUN", help="a run folder that `finescope run` created")
    report.add_argument("--out", default=None, help="HTML file to write (default: RUN/report.html)")

    compare = sub.add_parser(
        "compare", help="finished runs side by side: perplexity and retained share per domain",
        epilog=COMPARE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("runs", metavar="RUN", nargs="+", help="finished run folders")
    compare.add_argument("--csv", default=None, help="also write the table to this CSV file")

    exp = sub.add_parser(
        "export", help="write a run's model for transformers or llama.cpp, with a model card",
        epilog=EXPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    exp.add_argument("run", metavar="RUN", help="a run folder that `finescope run` created (pruning finished)")
    exp.add_argument("--format", required=True, choices=("hf", "gguf"),
                     help="hf: a folder stock transformers loads; gguf: one file for llama.cpp")
    exp.add_argument("--model", default="recovered", choices=("pruned", "recovered"), help="which model (default: recovered)")
    exp.add_argument("--out", default=None, help="export folder (default: RUN/exports/<model>-<format>)")
    exp.add_argument("--pad", action="store_true", help="zero-pad every block back to the base model's shapes, so "
                                                        "any run loads anywhere (at the base model's size and speed)")
    exp.add_argument("--dtype", default="f16", choices=("f16", "bf16", "q8_0"), help="GGUF weight type (default: f16)")
    exp.add_argument("--overwrite", action="store_true", help="replace an --out folder that holds other files")
    return parser


def _cmd_run(args) -> None:
    from finescope_nb import pipeline
    from finescope_nb.config import CorpusConfig, ModelConfig
    from finescope_nb.report import write_report

    cfg = pipeline.default_config(
        args.domain, model=ModelConfig(path=args.model), corpus=CorpusConfig(path=args.corpus), seed=args.seed,
    )
    cfg = cfg.replace(curation=cfg.curation.replace(seed=args.seed), prune=cfg.prune.replace(seed=args.seed),
                      finetune=cfg.finetune.replace(seed=args.seed))  # one seed for every stage
    if args.ratio is not None:
        cfg = cfg.replace(prune=cfg.prune.replace(ratio=args.ratio))
    if args.seeds is not None:
        cfg = cfg.replace(curation=cfg.curation.replace(seeds_path=args.seeds))
    if args.metrics is not None:
        cfg = cfg.replace(eval=cfg.eval.replace(metrics=tuple(m for m in args.metrics if m != "perplexity")))
    if args.metric_limit is not None:
        cfg = cfg.replace(eval=cfg.eval.replace(metric_limit=args.metric_limit))
    if args.scope is not None:
        cfg = cfg.replace(prune=cfg.prune.replace(scope=args.scope))
    if args.all_blocks:
        cfg = cfg.replace(prune=cfg.prune.replace(first_layer=0, last_layer=-1))
    if args.mlp_only:
        cfg = cfg.replace(prune=cfg.prune.replace(prune_attention=False))
    result = pipeline.run(cfg, args.run_dir)
    print(f"\nPerplexity per domain ({cfg.eval.split} split): base model, pruned by {cfg.prune.ratio:.0%} for {cfg.domain}, "
          "recovered by self-distillation; retained = exp(-loss) / exp(-base loss):")
    print(result.table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if result.metrics is not None:
        wide = result.metrics.pivot_table(index=["metric", "group", "chance"], columns="model", values="score", sort=False)
        print("\nTask metrics (accuracy or pass rate; chance is what guessing scores):")
        print(wide.reset_index()[["metric", "group", "chance", "base", "pruned", "recovered"]]
              .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nRun folder: {result.run_dir}")
    print(f"Report: {write_report(result.run_dir)}")


def _cmd_train_base(args) -> None:
    from finescope_nb.train_base import main as train_main

    train_main(out=args.out, checkpoint_dir=args.checkpoint_dir, max_steps=args.max_steps,
               minutes=args.minutes, seed=args.seed)


def _cmd_report(args) -> None:
    from finescope_nb.report import load_run, missing_sentence, write_report

    print(write_report(args.run, args.out))
    info = load_run(args.run)
    if info.missing:
        print(missing_sentence(info))


def _cmd_compare(args) -> None:
    from finescope_nb.artifacts import write_text_atomic
    from finescope_nb.report import compare_runs, output_path

    table = compare_runs(args.runs)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if args.csv:
        print(f"\nTable written to {write_text_atomic(output_path(args.csv), table.to_csv(index=False))}")


def _cmd_export(args) -> None:
    from finescope_nb.export import export

    out = export(args.run, args.format, args.model, args.out, pad=args.pad, dtype=args.dtype, overwrite=args.overwrite)
    print(out)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("WANDB_MODE", "disabled")
    args = _parser().parse_args(argv)
    try:
        {"run": _cmd_run, "train-base": _cmd_train_base, "report": _cmd_report,
         "compare": _cmd_compare, "export": _cmd_export}[args.command](args)
    except FinescopeError as exc:
        print(f"finescope: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
