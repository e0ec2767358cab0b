"""The labelled pool, its held-out splits, seed sets and eval sets, as `datasets.Dataset`.

The embedded corpus under data/corpus/ carries domain and topic labels so the kit can measure a
selection's precision, which FineScope's own setting (an unlabelled pool) never could. A user's
own corpus needs only a `text` column; `domain` is optional and, when present, turns on the same
measurements.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterable, Sequence

import datasets
import numpy as np
import pandas as pd

from finescope_nb.errors import FinescopeError
from finescope_nb.paths import CORPUS_DIR, EVALS_DIR

DOMAINS = ("stem", "humanities", "social_sciences", "math", "code")
POOL_DOMAINS = DOMAINS + ("general",)
SPLITS = ("pool", "validation", "test", "seeds")
EVAL_SETS = ("mmlu", "arc", "gsm8k", "math500", "humaneval", "mbpp")
USER_FORMATS = (".jsonl", ".json", ".csv", ".parquet")
SEED_DRAWS = ("stratified", "random")  # how `load_seeds` draws n seeds: spread over topics, or seed for seed at random

datasets.disable_progress_bars()


def _read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def check_domain(domain: str, known: Sequence[str] = POOL_DOMAINS) -> str:
    """Return `domain` if it is known, else fail naming the known ones."""
    if domain not in known:
        raise FinescopeError(
            f"Unknown domain {domain!r}; known domains are {', '.join(known)}."
        )
    return domain


def load_split(split: str = "pool", domains: Iterable[str] | None = None,
               corpus_dir: str | Path = CORPUS_DIR) -> datasets.Dataset:
    """One split of the embedded corpus (`pool`, `validation`, `test` or `seeds`), optionally filtered by domain."""
    if split not in SPLITS:
        raise FinescopeError(f"Unknown split {split!r}; known splits are {', '.join(SPLITS)}.")
    path = Path(corpus_dir) / f"{split}.jsonl.gz"
    if not path.is_file():
        raise FinescopeError(
            f"Corpus file {str(path)!r} is missing; restore data/ from the repository "
            "(or rebuild it with data/build_corpus.py)."
        )
    ds = datasets.Dataset.from_list(_read_jsonl_gz(path))
    if domains is not None:
        wanted = {check_domain(d) for d in domains}
        ds = ds.filter(lambda r: r["domain"] in wanted)
    return ds


def load_pool(domains: Iterable[str] | None = None) -> datasets.Dataset:
    return load_split("pool", domains)


def load_seeds(domain: str | None = None, topic: str | None = None, kind: str = "pool_style",
               n: int | None = None, seed: int = 0, draw: str = "stratified") -> datasets.Dataset:
    """Seed examples from held-out documents (never in the pool), by domain and/or topic.

    `n` draws that many with `seed`, so that repeated draws can be compared. `draw="stratified"` (the
    default) spreads them over the domain's topics: the topics in a random order, one seed from each
    in turn, so ten math seeds cover ten of its fifteen topics instead of, by chance, only its drills.
    `draw="random"` is a plain random sample, seed for seed the draw the kit made before stratifying.
    """
    if draw not in SEED_DRAWS:
        raise FinescopeError(f"Unknown seed draw {draw!r}; use one of {', '.join(SEED_DRAWS)}.")
    ds = load_split("seeds")
    if domain is not None:
        check_domain(domain)
        ds = ds.filter(lambda r: r["domain"] == domain)
    if topic is not None:
        topics = sorted(set(load_split("seeds")["topic"]))
        if topic not in topics:
            raise FinescopeError(f"Unknown topic {topic!r}; known topics are {', '.join(topics)}.")
        ds = ds.filter(lambda r: r["topic"] == topic)
    if kind is not None:
        ds = ds.filter(lambda r: r["kind"] == kind)
    if n is not None:
        if n > len(ds):
            raise FinescopeError(
                f"Asked for {n} seeds but only {len(ds)} exist for domain={domain!r}, topic={topic!r}; "
                f"ask for at most {len(ds)}."
            )
        ds = ds.shuffle(seed=seed).select(range(n)) if draw == "random" else ds.select(_stratified(ds["topic"], n, seed))
    return ds


def _stratified(topics: Sequence[str], n: int, seed: int) -> list[int]:
    """`n` row indices spread over `topics`: topics in a random order, each giving its next random row in turn."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[int]] = {}
    for i, t in enumerate(topics):
        rows.setdefault(t, []).append(i)
    queues = [list(rng.permutation(rows[t])) for t in rng.permutation(sorted(rows))]
    picked: list[int] = []
    while len(picked) < n:
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(int(queue.pop()))
    return picked


def load_eval_set(name: str) -> datasets.Dataset:
    """A benchmark's items (MMLU, ARC, GSM8K, MATH-500, HumanEval, MBPP) from data/evals/."""
    if name not in EVAL_SETS:
        raise FinescopeError(f"Unknown eval set {name!r}; known eval sets are {', '.join(EVAL_SETS)}.")
    return datasets.Dataset.from_list(_read_jsonl_gz(EVALS_DIR / f"{name}.jsonl.gz"))


def mmlu_categories() -> dict[str, str]:
    """The original MMLU subject -> category map (stem, humanities, social_sciences, other)."""
    return json.loads((EVALS_DIR / "mmlu_categories.json").read_text())


def load_user_corpus(path: str | Path, what: str = "Corpus") -> datasets.Dataset:
    """A user's corpus: JSONL, JSON, CSV, parquet, or a `datasets` folder, with a `text` column.

    Records get an `id` (row number) when they have none, and `domain` stays optional. `what`
    names the file in error messages ("Corpus", "Held-out file").
    """
    p = Path(path)
    if not p.exists():
        raise FinescopeError(f"{what} path {str(p)!r} does not exist; check the path.")
    if p.is_dir():
        try:
            ds = datasets.load_from_disk(str(p))
        except FileNotFoundError:
            raise FinescopeError(
                f"Folder {str(p)!r} is not a saved `datasets` folder; save one with "
                "Dataset.save_to_disk or pass a JSONL, CSV or parquet file."
            ) from None
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[next(iter(ds))]
    elif _format(p) not in USER_FORMATS:
        raise FinescopeError(
            f"{what} file {str(p)!r} has an unsupported extension {''.join(p.suffixes[-2:]) or '(none)'!r}; use one of "
            f"{', '.join(USER_FORMATS)} (gzipped or not) or a datasets folder."
        )
    elif _blank(p):
        raise FinescopeError(f"{what} file {str(p)!r} is empty; it needs at least one document in a 'text' column.")
    else:
        reader = {".jsonl": datasets.Dataset.from_json, ".json": datasets.Dataset.from_json,
                  ".csv": datasets.Dataset.from_csv, ".parquet": datasets.Dataset.from_parquet}[_format(p)]
        try:
            ds = reader(str(p))
        except (StopIteration, ValueError, datasets.exceptions.DatasetsError) as exc:
            cause = exc.__cause__ or exc  # datasets wraps the parser's message in a generic one
            detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            raise FinescopeError(f"{what} file {str(p)!r} cannot be read as {_format(p)[1:].upper()} ({detail}); "
                                 "fix the file so every record has a 'text' field.") from None
    return _check_user_corpus(ds, p, what)


def user_pool(path: str | Path) -> pd.DataFrame:
    """A user's corpus as the DataFrame the stages take: `id` (as text), `text` and its other columns."""
    df = load_user_corpus(path).to_pandas()
    df["id"] = df["id"].astype(str)
    return df


def _format(path: Path) -> str:
    """The format a user file is read as: its extension, or for a gzipped text format the one before `.gz`
    (datasets reads gzip itself; parquet compresses inside the file, so `.parquet.gz` is not a format)."""
    inner = path.suffixes[-2] if len(path.suffixes) > 1 and path.suffix == ".gz" else None
    return inner if inner in (".jsonl", ".json", ".csv") else path.suffix


def _blank(path: Path, chunk: int = 1 << 16) -> bool:
    """True when a file holds nothing but whitespace (read until the first other byte, through gzip for `.gz`)."""
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        while block := f.read(chunk):
            if block.strip():
                return False
    return True


def _check_user_corpus(ds: datasets.Dataset, path: Path, what: str = "Corpus") -> datasets.Dataset:
    if "text" not in ds.column_names:
        raise FinescopeError(
            f"{what} {str(path)!r} has no 'text' column (columns: {', '.join(ds.column_names) or 'none'}); "
            "rename the column holding the documents to 'text'."
        )
    ds = ds.filter(lambda r: isinstance(r["text"], str) and r["text"].strip() != "")
    if len(ds) == 0:
        raise FinescopeError(
            f"{what} {str(path)!r} has no non-empty text; it needs at least one document in its 'text' column."
        )
    if "id" not in ds.column_names:
        ds = ds.add_column("id", [str(i) for i in range(len(ds))])
    return ds


def load_user_seeds(seeds: str | Path | Sequence[str]) -> list[str]:
    """A user's seed examples: a list of strings, or a file (one per line, or JSONL with `text`)."""
    if isinstance(seeds, (str, Path)) and Path(seeds).is_file():
        lines = Path(seeds).read_text(encoding="utf-8").splitlines()
        if lines and lines[0].lstrip().startswith("{"):
            texts = [json.loads(line).get("text", "") for line in lines if line.strip()]
        else:
            texts = lines
    elif isinstance(seeds, str):
        raise FinescopeError(
            f"Seed file {seeds!r} does not exist; pass a path to an existing file or a list of strings."
        )
    else:
        texts = list(seeds)
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise FinescopeError(
            "No usable seeds: every seed was empty or whitespace; give at least one non-empty example text."
        )
    return texts


def composition(ds: datasets.Dataset) -> pd.DataFrame:
    """Documents, chunks and characters per (domain, source): the datasheet's table, recomputed."""
    df = ds.select_columns(["domain", "source", "doc_id", "text"]).to_pandas()
    df["characters"] = df["text"].str.len()
    out = df.groupby(["domain", "source"], as_index=False).agg(
        documents=("doc_id", "nunique"), chunks=("text", "size"), characters=("characters", "sum"))
    return out.sort_values(["domain", "characters"], ascending=[True, False], ignore_index=True)


def chunk_lengths(ds: datasets.Dataset) -> pd.DataFrame:
    df = ds.select_columns(["domain", "text"]).to_pandas()
    return pd.DataFrame({"domain": df["domain"], "characters": df["text"].str.len()})
