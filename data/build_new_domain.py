#!/usr/bin/env python
"""Build the files of the new-domain check: scripture (the King James Bible), a domain the embedded corpus lacks.

    .venv/bin/python data/build_new_domain.py            # fetch, verify, build (about a minute)
    .venv/bin/python data/build_new_domain.py --relock   # after a deliberate version bump

The kit's own-domain path (`finescope curate` / `finescope run --corpus --seeds --eval`) has to work
on a domain the kit has never seen, so its benchmark needs one that none of the embedded sources
holds. The embedded corpus has fiction, religion essays (Brown genre D), speeches, science, law
items, math and code, but no scripture text; the build checks that with the same 13-gram test the
corpus build uses and drops (and counts) every chunk that overlaps an embedded corpus file or eval
set anyway.

Source: Debian's `bible-kjv-text` (the text, compressed in its own format) read by the `bible`
program of Debian's `bible-kjv`, both pinned by version here and by sha256 in
data/new_domain/sources.lock.json. The text is public domain; the reader program is GPL-2+ and is
only run, never shipped. Needs apt-get and dpkg-deb (a Debian or Ubuntu machine); CI never runs it.

Whole books are the hold-out unit, as whole documents are in the embedded corpus: books drawn with
a fixed seed go to the held-out file until HELDOUT_CHARS, the next ones give the seed candidates,
and the rest give the pool, whole books until POOL_CHARS. Parallel passages (Kings and Chronicles,
the gospels) repeat long runs of words across books, so held-out and seed chunks that overlap the
pool are dropped too. Outputs (deterministic; `data/new_domain/README.md` is the data sheet):

    pool.jsonl.gz             chunks to mix, unlabelled, into a pool (not part of the embedded pool)
    heldout.jsonl.gz          held-out chunks of other books, for `--eval`
    seed_candidates.jsonl.gz  chunks of yet other books: the benchmark draws its seeds from these
    seeds.txt                 the first draw of ten, one per line, for `--seeds`
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent
sys.path.insert(0, str(DATA))

import build_corpus as bc  # noqa: E402
import corpus_sources as cs  # noqa: E402
from dedup import NGRAM, ngram_index, overlaps  # noqa: E402

OUT = DATA / "new_domain"
LOCK_FILE = OUT / "sources.lock.json"
PINS = {"bible-kjv-text": ("deb", "4.38"), "bible-kjv": ("deb", "4.38")}
DOMAIN, TOPIC, SOURCE = "scripture", "kjv", "bible_kjv"
LICENSE = "public domain (King James Version, 1611)"
SEED = 2505
POOL_CHARS = 900_000
HELDOUT_CHARS = 150_000
SEED_CANDIDATES = 50
SEEDS_TXT = 10
_HEADER = re.compile(r"^(\S.*) (\d+)$")
_VERSE = re.compile(r"^\s+\d+ (.*)$")


def kjv_text(paths: dict[str, Path]) -> str:
    """The whole text as Debian's `bible` program prints it: a "Book N" line per chapter, then numbered verses."""
    text_dir = bc.unpack("bible-kjv-text", paths["bible-kjv-text"]) / "usr" / "lib"
    program = bc.unpack("bible-kjv", paths["bible-kjv"]) / "usr" / "bin" / "bible"
    result = subprocess.run([str(program), "-p", str(text_dir), "Gen1:1-Rev22:21"], capture_output=True, text=True,
                            env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})
    if result.returncode != 0 or not result.stdout:
        raise SystemExit(f"Debian's bible program could not print the text ({result.stderr.strip()[-300:]}).")
    return result.stdout


def books(text: str) -> list[cs.Document]:
    """One document per book, one unit per chapter (its verses joined, verse numbers left out)."""
    chapters: dict[str, list[list[str]]] = {}
    lines = text.splitlines()
    verses: list[str] | None = None
    for i, line in enumerate(lines):
        header = _HEADER.match(line)
        if header and (i == 0 or not lines[i - 1].strip()):
            verses = []
            chapters.setdefault(header.group(1), []).append(verses)
        elif (verse := _VERSE.match(line)) and verses is not None:
            verses.append(verse.group(1).strip())
        elif line.strip() and verses:
            verses[-1] += " " + line.strip()
    n_chapters = sum(map(len, chapters.values()))
    if len(chapters) != 66 or n_chapters != 1189:
        raise SystemExit(f"Parsed {len(chapters)} books and {n_chapters} chapters, not 66 and 1,189: the program's output changed.")
    return [cs.prose(cs.slug(name), DOMAIN, TOPIC, SOURCE, LICENSE, (" ".join(v) for v in chs))
            for name, chs in chapters.items()]


def embedded_index() -> set[int]:
    """13-gram fingerprints of every committed corpus file and eval set (every string field of every record)."""
    files = sorted((DATA / "corpus").glob("*.jsonl.gz")) + sorted((DATA / "evals").glob("*.jsonl.gz"))

    def texts():
        for path in files:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                for line in f:
                    record = json.loads(line)
                    yield " ".join(str(v) for v in record.values() if isinstance(v, (str, list)))
    return ngram_index(texts())


def split_books(chunked: list[bc.Chunked]) -> dict[str, list[bc.Chunked]]:
    """Whole books in a seeded order: held-out first, then seed books, then the pool up to its budget."""
    order = sorted(chunked, key=lambda c: c.doc.doc_id)
    random.Random(SEED).shuffle(order)
    parts = {"heldout": [], "seeds": [], "pool": []}
    budgets = {"heldout": HELDOUT_CHARS, "seeds": SEED_CANDIDATES * bc.CHUNK_CHARS, "pool": POOL_CHARS}
    part = iter(parts)
    current = next(part)
    for item in order:
        while current and sum(c.chars for c in parts[current]) >= budgets[current]:
            current = next(part, None)
        if current is None:
            break
        parts[current].append(item)
    return parts


def build(relock: bool) -> dict:
    lock = json.loads(LOCK_FILE.read_text()) if LOCK_FILE.is_file() else {}
    paths = bc.fetch_all(lock, relock, PINS)
    documents = books(kjv_text(paths))
    chunked = [bc.Chunked(doc, bc.chunk_units(doc.units)) for doc in documents]
    records = {name: [bc.record(item, i, chunk) for item in items for i, chunk in enumerate(item.chunks)]
               for name, items in split_books(chunked).items()}
    index = embedded_index()
    dropped = {}
    for name in records:
        records[name], gone = bc.drop_overlapping(records[name], index)
        dropped[f"{name}_overlapping_embedded"] = len(gone)
    pool_index = ngram_index(r["text"] for r in records["pool"])
    for name in ("heldout", "seeds"):
        records[name], gone = bc.drop_overlapping(records[name], pool_index)
        dropped[f"{name}_overlapping_pool"] = len(gone)
    candidates = random.Random(SEED).sample(records["seeds"], min(SEED_CANDIDATES, len(records["seeds"])))
    OUT.mkdir(exist_ok=True)
    bc.write_jsonl_gz(OUT / "pool.jsonl.gz", records["pool"])
    bc.write_jsonl_gz(OUT / "heldout.jsonl.gz", records["heldout"])
    bc.write_jsonl_gz(OUT / "seed_candidates.jsonl.gz", candidates)
    bc.write_text(OUT / "seeds.txt", "".join(r["text"].replace("\n", " ") + "\n" for r in candidates[:SEEDS_TXT]))
    bc.write_text(LOCK_FILE, json.dumps(lock, indent=1, sort_keys=True) + "\n")
    return {"books": {name: sorted({r["doc_id"] for r in recs}) for name, recs in
                      (("pool", records["pool"]), ("heldout", records["heldout"]), ("seeds", candidates))},
            "chunks": {"pool": len(records["pool"]), "heldout": len(records["heldout"]), "seed_candidates": len(candidates)},
            "characters": {name: sum(len(r["text"]) for r in recs) for name, recs in
                           (("pool", records["pool"]), ("heldout", records["heldout"]), ("seed_candidates", candidates))},
            "dropped_by_13gram_overlap": dropped, "ngram": NGRAM, "seed": SEED, "packages": lock["packages"]}


def datasheet(summary: dict) -> str:
    rows = "\n".join(f"| `{name}` | {summary['chunks'][key]:,} | {summary['characters'][key] / 1e6:.2f} MB | "
                     f"{len(summary['books'][book])} ({', '.join(summary['books'][book])}) |"
                     for name, key, book in (("pool.jsonl.gz", "pool", "pool"), ("heldout.jsonl.gz", "heldout", "heldout"),
                                             ("seed_candidates.jsonl.gz", "seed_candidates", "seeds")))
    dropped = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in summary["dropped_by_13gram_overlap"].items())
    packages = ", ".join(f"Debian `{n}` {p['version']} (sha256 {p['sha256'][:12]}...)" for n, p in summary["packages"].items())
    return f"""# data/new_domain/: a domain the embedded corpus does not hold

Written by `data/build_new_domain.py` (this file too). Scripture: the King James Version of the Bible
(1611), **public domain**, from {packages}. The text package holds it in its own compressed format;
the build runs the reader program (GPL-2+) to print it and ships only the text.

Why this domain: none of the embedded sources holds scripture text (the humanities pool has Brown's
religion essays, fiction and Jane Austen; stem has PubMedQA abstracts; humanities has law items), and
its register is far from all of them, while religion essays make close distractors. The build checks
this: every chunk with a {summary['ngram']}-gram in common with any committed corpus file or eval set is
dropped ({dropped}).

These files are **not** part of the embedded pool. The own-domain benchmark
(`benchmarks/own_domain_benchmark.py`) mixes the pool chunks, unlabelled, into the embedded pool.

| file | chunks | characters | books |
|---|---|---|---|
{rows}
| `seeds.txt` | {SEEDS_TXT} | | the first {SEEDS_TXT} seed candidates, one per line |

Records use the embedded corpus's schema (`domain` = `{DOMAIN}`, `topic` = `{TOPIC}`); chunks are about
{bc.CHUNK_CHARS:,} characters, packed chapter by chapter (verses joined, verse numbers left out). Whole
books are the hold-out unit, drawn with seed {summary['seed']}.

Try it on the tiny default model: `python benchmarks/own_domain_benchmark.py --no-run` writes the mixed,
unlabelled corpus to `runs/own-domain-bench/corpus.jsonl` (and measures retrieval); then

    finescope curate --corpus runs/own-domain-bench/corpus.jsonl --seeds data/new_domain/seeds.txt --out runs/scripture-curated
    finescope run --corpus runs/own-domain-bench/corpus.jsonl --seeds data/new_domain/seeds.txt --domain scripture \\
        --eval data/new_domain/heldout.jsonl.gz
"""


def main(argv: list[str] | None = None) -> None:
    bc.ensure_hash_seed()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relock", action="store_true", help="record new sha256s instead of failing on them")
    summary = build(parser.parse_args(argv).relock)
    bc.write_text(OUT / "README.md", datasheet(summary))
    print(json.dumps({k: summary[k] for k in ("chunks", "characters", "dropped_by_13gram_overlap")}, indent=1))


if __name__ == "__main__":
    main()
