"""The committed corpus: loaders, labels, splits kept apart, and user corpora."""

import gzip
import importlib.util
import json

import datasets
import pandas as pd
import pytest

from finescope_nb import corpus
from finescope_nb.errors import FinescopeError
from finescope_nb.paths import DATA_DIR

spec = importlib.util.spec_from_file_location("dedup", DATA_DIR / "dedup.py")
dedup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dedup)

MATH_TYPES = {"algebra", "prealgebra", "counting_and_probability", "geometry", "number_theory",
              "intermediate_algebra", "precalculus"}


@pytest.fixture(scope="module")
def pool():
    return corpus.load_pool()


def test_pool_schema_and_domains(pool):
    assert {"id", "text", "domain", "topic", "source", "license", "doc_id", "prompt", "response"} <= set(pool.column_names)
    assert set(pool["domain"]) == set(corpus.POOL_DOMAINS)
    assert len(set(pool["id"])) == len(pool)


def test_at_least_15_topics_with_200_chunks(pool):
    counts = pool.to_pandas().groupby("topic").size()
    assert (counts >= 200).sum() >= 15, counts.sort_values().tail(20)
    math_topics = set(pool.filter(lambda r: r["domain"] == "math")["topic"])
    assert MATH_TYPES <= math_topics


def test_prompt_and_response_where_promised(pool):
    df = pool.to_pandas()
    math = df[(df.domain == "math") & df.topic.isin(MATH_TYPES)]
    assert len(math) > 1000 and (math.prompt.str.len() > 0).all() and (math.response.str.len() > 0).all()
    code = df[(df.domain == "code") & (df.prompt.str.len() > 0)]
    assert len(code) > 1000
    assert code.prompt.str.contains(r"^\s*(?:@|async def|def|class)", regex=True).mean() > 0.9
    assert all(r.prompt in r.text and r.response.strip()[:50] in r.text for r in code.head(200).itertuples())


def test_splits_share_no_document(pool):
    docs = {split: set(corpus.load_split(split)["doc_id"]) for split in ("validation", "test", "seeds")}
    docs["pool"] = set(pool["doc_id"])
    names = list(docs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not docs[a] & docs[b], (a, b)


def test_no_pool_chunk_shares_a_13gram_with_eval_or_heldout(pool):
    held = []
    for split in ("validation", "test", "seeds"):
        held += corpus.load_split(split)["text"]
    for name in corpus.EVAL_SETS:
        with gzip.open(DATA_DIR / "evals" / f"{name}.jsonl.gz", "rt") as f:
            held += [" ".join(str(v) for v in json.loads(line).values()) for line in f]
    index = dedup.ngram_index(held)
    hits = [r["id"] for r in pool if dedup.overlaps(r["text"], index)]
    assert not hits, hits[:5]


def test_heldout_and_seed_sizes():
    for split in ("validation", "test"):
        counts = corpus.load_split(split).to_pandas().groupby("domain").size()
        assert set(corpus.DOMAINS) <= set(counts.index) and counts[list(corpus.DOMAINS)].min() >= 40, (split, counts)
    seeds = corpus.load_split("seeds").to_pandas()
    style = seeds[seeds.kind == "pool_style"]
    assert style.groupby("domain").size()[list(corpus.DOMAINS)].min() >= 20
    topics = corpus.load_pool().to_pandas().groupby("topic").size()
    big = topics[topics >= 200].index
    per_topic = style.groupby("topic").size()
    assert per_topic.reindex(big, fill_value=0).min() >= 20


def test_load_seeds_draws_reproducibly():
    a = corpus.load_seeds(domain="math", n=10, seed=1)["id"]
    assert a == corpus.load_seeds(domain="math", n=10, seed=1)["id"]
    assert a != corpus.load_seeds(domain="math", n=10, seed=2)["id"]
    assert set(corpus.load_seeds(topic="algebra", n=5)["topic"]) == {"algebra"}
    with pytest.raises(FinescopeError, match="Unknown topic"):
        corpus.load_seeds(topic="alchemy")
    with pytest.raises(FinescopeError, match="ask for at most"):
        corpus.load_seeds(domain="math", n=100000)


def test_eval_sets_and_mmlu_categories():
    mmlu = corpus.load_eval_set("mmlu").to_pandas()
    cats = corpus.mmlu_categories()
    assert len(cats) == 57 and set(cats.values()) == {"stem", "humanities", "social_sciences", "other"}
    test = mmlu[mmlu.split == "test"].groupby("category").size().to_dict()
    assert test == {"stem": 3018, "humanities": 4705, "social_sciences": 3077, "other": 3242}
    math500 = corpus.load_eval_set("math500").to_pandas()
    assert len(math500) == 500
    assert {"prealgebra", "algebra", "counting_and_probability"} <= set(math500.subject)
    assert len(corpus.load_eval_set("humaneval")) == 164
    mbpp = corpus.load_eval_set("mbpp").to_pandas()
    assert not set(range(11, 61)) & set(mbpp.task_id.astype(int))
    assert len(corpus.load_eval_set("gsm8k")) == 1319
    arc = corpus.load_eval_set("arc").to_pandas()
    assert len(arc) > 500 and set(arc.subset) == {"easy", "challenge"}
    with pytest.raises(FinescopeError, match="known eval sets are mmlu"):
        corpus.load_eval_set("squad")


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "folder", "jsonl.gz", "csv.gz"])
def test_user_corpus_formats(tmp_path, fmt):
    ds = datasets.Dataset.from_dict({"text": ["alpha beta", "gamma", "  "], "domain": ["a", "b", "c"]})
    path = tmp_path / f"c.{fmt}"
    plain = tmp_path / f"plain.{fmt.removesuffix('.gz')}"
    {"jsonl": lambda: ds.to_json(str(plain)), "csv": lambda: ds.to_csv(str(plain)),
     "parquet": lambda: ds.to_parquet(str(plain)), "folder": lambda: ds.save_to_disk(str(plain))}[fmt.removesuffix(".gz")]()
    if fmt.endswith(".gz"):
        path.write_bytes(gzip.compress(plain.read_bytes()))
    else:
        plain.rename(path)
    loaded = corpus.load_user_corpus(path)
    assert loaded["text"] == ["alpha beta", "gamma"]  # whitespace-only rows dropped
    assert "id" in loaded.column_names and loaded["domain"] == ["a", "b"]


def test_user_corpus_bad_inputs(tmp_path):
    no_text = tmp_path / "x.jsonl"
    no_text.write_text('{"body": "hello"}\n')
    with pytest.raises(FinescopeError, match="no 'text' column \\(columns: body\\)"):
        corpus.load_user_corpus(no_text)
    empty = tmp_path / "e.jsonl"
    empty.write_text('{"text": ""}\n{"text": "   "}\n')
    with pytest.raises(FinescopeError, match="no non-empty text"):
        corpus.load_user_corpus(empty)
    with pytest.raises(FinescopeError, match="does not exist"):
        corpus.load_user_corpus(tmp_path / "missing.jsonl")
    odd = tmp_path / "c.txt"
    odd.write_text("hi")
    with pytest.raises(FinescopeError, match="unsupported extension"):
        corpus.load_user_corpus(odd)
    empty_gz = tmp_path / "e.jsonl.gz"
    empty_gz.write_bytes(gzip.compress(b"  \n"))
    with pytest.raises(FinescopeError, match="is empty"):
        corpus.load_user_corpus(empty_gz)
    parquet_gz = tmp_path / "c.parquet.gz"
    parquet_gz.write_bytes(gzip.compress(b"PAR1"))
    with pytest.raises(FinescopeError, match="unsupported extension '.parquet.gz'"):
        corpus.load_user_corpus(parquet_gz)
    with pytest.raises(FinescopeError, match="Unknown domain 'law'"):
        corpus.load_pool(["law"])


def test_user_seeds(tmp_path):
    assert corpus.load_user_seeds(["a", " ", "b"]) == ["a", "b"]
    f = tmp_path / "s.txt"
    f.write_text("one\n\ntwo\n")
    assert corpus.load_user_seeds(f) == ["one", "two"]
    j = tmp_path / "s.jsonl"
    j.write_text('{"text": "x"}\n{"text": "y"}\n')
    assert corpus.load_user_seeds(j) == ["x", "y"]
    with pytest.raises(FinescopeError, match="No usable seeds"):
        corpus.load_user_seeds(["", "  "])
    with pytest.raises(FinescopeError, match="does not exist"):
        corpus.load_user_seeds(str(tmp_path / "nope.txt"))


def test_new_domain_files_stay_apart_from_the_embedded_corpus(pool):
    """data/new_domain (scripture, for the own-domain check): under 5 MB, not in the pool, and no chunk shares a 13-gram
    with the embedded pool; its held-out and seed chunks share none with its own pool chunks."""
    folder = DATA_DIR / "new_domain"
    assert sum(p.stat().st_size for p in folder.iterdir()) < 5 * 2**20
    read = lambda name: [json.loads(line) for line in gzip.open(folder / name, "rt", encoding="utf-8")]
    new_pool, heldout, candidates = read("pool.jsonl.gz"), read("heldout.jsonl.gz"), read("seed_candidates.jsonl.gz")
    assert len(new_pool) >= 500 and len(heldout) >= 50 and len(candidates) >= 30
    assert {r["domain"] for r in new_pool + heldout + candidates} == {"scripture"}
    assert not {r["doc_id"] for r in new_pool} & {r["doc_id"] for r in heldout + candidates}
    assert "scripture" not in set(pool["domain"])
    own = dedup.ngram_index(r["text"] for r in new_pool)
    assert not [r["id"] for r in heldout + candidates if dedup.overlaps(r["text"], own)]
    embedded = dedup.ngram_index(pool["text"])
    assert not [r["id"] for r in new_pool + heldout if dedup.overlaps(r["text"], embedded)]
    seeds = corpus.load_user_seeds(folder / "seeds.txt")
    assert seeds == [r["text"].replace("\n", " ") for r in candidates[:len(seeds)]] and len(seeds) == 10


def test_default_seed_draw_spreads_over_topics_and_random_keeps_the_old_draw():
    stratified = corpus.load_seeds(domain="math", n=10, seed=0)
    assert len(set(stratified["topic"])) == 10  # math has fifteen topics: ten seeds, ten topics
    assert stratified["id"] == corpus.load_seeds(domain="math", n=10, seed=0, draw="stratified")["id"]
    assert stratified["id"] != corpus.load_seeds(domain="math", n=10, seed=1)["id"]
    old = corpus.load_split("seeds").filter(lambda r: r["domain"] == "math" and r["kind"] == "pool_style").shuffle(seed=0)
    assert corpus.load_seeds(domain="math", n=10, seed=0, draw="random")["id"] == old.select(range(10))["id"]
    many = corpus.load_seeds(domain="math", n=40, seed=3)  # more seeds than topics: every topic, then round again
    counts = pd.Series(many["topic"]).value_counts()
    assert counts.max() - counts.min() <= 1 and len(counts) == 15
    with pytest.raises(FinescopeError) as e:
        corpus.load_seeds(domain="math", n=10, draw="by hand")
    assert "stratified, random" in str(e.value)
