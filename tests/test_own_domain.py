"""Your own domain all the way: a domain name the kit does not know, its own corpus, seeds and held-out file.

One small fixture does the expensive part once: a `finescope run` on an unlabelled pool (the SAE
trains on that pool), then `finescope curate` on the same pool, which reuses the SAE and the
pool's codes. Every bad input is refused before any work, in one line, leaving no run folder.
"""

import json
from types import SimpleNamespace

import pytest
from own_domain_data import DOMAIN, write_inputs, write_jsonl

from finescope_nb import inputs, paths, pipeline
from finescope_nb.cli import main
from finescope_nb.config import CorpusConfig, CurationConfig, EvalConfig, FinetuneConfig, PruneConfig, RunConfig
from finescope_nb.errors import FinescopeError
from finescope_nb.report import write_report
from finescope_nb.sae.cache import corpus_sae_texts, default_sae_config


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(paths, "DEFAULT_RUNS_DIR", root / "runs")
        mp.setattr(pipeline, "DEFAULT_RUNS_DIR", root / "runs")
        files = write_inputs(root / "in")
        cfg = RunConfig(domain=DOMAIN, corpus=CorpusConfig(path=str(files["pool"])),
                        eval=EvalConfig(domains=("math", "code"), max_docs_per_domain=4, max_length=64, metric_limit=6,
                                        heldout=str(files["heldout"])),
                        curation=CurationConfig(m=12, seeds_path=str(files["seeds"])),
                        prune=PruneConfig(calibration_docs=8, max_length=64),
                        finetune=FinetuneConfig(method="full", steps=2, eval_every=2, max_length=96))
        result = pipeline.run(cfg, progress=False)
        out = root / "curated"
        code = main(["curate", "--corpus", str(files["pool"]), "--seeds", str(files["seeds"]), "--m", "15", "--out", str(out)])
        yield SimpleNamespace(root=root, files=files, result=result, out=out, curate_code=code)


def test_a_new_domain_is_measured_on_its_heldout_file_beside_the_embedded_ones(own):
    result, run_dir = own.result, own.result.run_dir
    assert run_dir.parent == own.root / "runs" and run_dir.name.startswith("number-puzzles-grade-7-")  # a safe slug
    assert result.table["domain"].tolist() == [DOMAIN, "math", "code"]
    assert (result.table["base_ppl"] > 1).all() and result.table["retained"].between(0.5, 1.5).all()
    cloze = result.metrics[(result.metrics["metric"] == "cloze") & (result.metrics["domain"] == DOMAIN)]
    assert set(cloze["model"]) == {"base", "pruned", "recovered"} and (cloze["n"] == 6).all()
    summary = json.loads((run_dir / "summary.json").read_text())
    # two held-out documents are pool documents: dropped and counted; every 5th kept one validates recovery
    assert summary["heldout"] == {"path": str(own.files["heldout"]), "documents": 12, "dropped_pool_overlap": 2,
                                  "test_documents": 8, "validation_documents": 2}
    assert summary["sae"]["trained_on"].startswith("your corpus (54 documents")  # 60 in the pool, 6 held out for its card
    assert list((own.root / "runs" / "sae").glob("*-c*/finescope_sae.json"))  # the corpus SAE's own folder
    curated = json.loads((run_dir / "summary.json").read_text())["curated"]
    assert curated == 12
    page = write_report(run_dir).read_text()
    assert f"FineScope run: {DOMAIN}" in page
    assert "2 of 12 held-out documents" in page and "your corpus (54 documents" in page


def test_the_corpus_sae_finds_the_target_in_an_unlabelled_pool(own):
    stage = json.loads((own.result.run_dir / "summary.json").read_text())["stages"]["curate"]
    import pandas as pd

    curated = pd.read_csv(own.result.run_dir / stage / "curated.csv", keep_default_na=False)
    share = curated["text"].isin(own.files["math"]).mean()
    assert share > 0.5  # the pool is one third math, where a selector no better than chance sits; measured 0.8 at M=20


def test_curate_exports_the_set_and_one_page_beside_the_dense_baseline(own):
    assert own.curate_code == 0
    records = [json.loads(line) for line in (own.out / "curated.jsonl").read_text().splitlines()]
    assert len(records) == 15 and (own.out / "dataset" / "dataset_info.json").is_file()
    scores = [r["score"] for r in records]
    assert scores == sorted(scores, reverse=True) and all(r["top_features"] for r in records)
    page = (own.out / "curation.html").read_text()
    assert "<script src=" not in page and page.count("<script") >= 1  # self-contained: plotly.js inlined
    for part in ("Pool scores and the cut", "finescope-token", "The features that drive the selection",
                 "finescope-feature-card", "Beside the centred dense baseline", "Only the SAE picked",
                 "Only the dense baseline picked", "your corpus (54 documents"):
        assert part in page, part
    summary = json.loads((own.out / "curation.json").read_text())
    assert summary["selected"] == 15 and 0 <= summary["dense_overlap"] <= 15
    assert f"{summary['dense_overlap']:,} of them are also in the SAE's selection" in page


def test_curate_by_threshold_reuses_the_sae_and_codes_and_refuses_a_cut_outside_the_scores(own, capsys, monkeypatch):
    import finescope_nb.curate.workspace as workspace
    import finescope_nb.sae.cache as cache

    monkeypatch.setattr(cache, "train_sae", lambda *a, **k: pytest.fail("the SAE was trained again"))
    monkeypatch.setattr(workspace, "encode_corpus", lambda *a, **k: pytest.fail("the pool was encoded again"))
    before = (own.out / "curated.jsonl").read_text()
    summary = json.loads((own.out / "curation.json").read_text())
    low, high = summary["score_range"]
    args = ["curate", "--corpus", str(own.files["pool"]), "--seeds", str(own.files["seeds"]), "--out", str(own.out)]
    assert main([*args, "--threshold", str(high + 1.0)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the model's loading bar and warnings
    assert err.startswith("finescope: error: Threshold") and "is outside the pool's scores" in err
    assert (own.out / "curated.jsonl").read_text() == before  # nothing rewritten
    cut = summary["lowest_selected_score"]
    assert main([*args, "--threshold", repr(cut)]) == 0
    kept = [json.loads(line)["score"] for line in (own.out / "curated.jsonl").read_text().splitlines()]
    assert len(kept) >= 15 and min(kept) >= cut - 1e-6


def test_notebook_05_runs_on_your_corpus_and_seeds_with_the_unlabelled_view(own, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    path = paths.REPO_ROOT / "notebooks" / "05_curate_dataset.ipynb"
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "CORPUS = None" in first.source and "SEEDS = None" in first.source  # the embedded defaults
    first.source = (first.source.replace("CORPUS = None", f"CORPUS = {str(own.files['pool'])!r}")
                    .replace("SEEDS = None", f"SEEDS = {str(own.files['seeds'])!r}"))
    monkeypatch.setenv("FINESCOPE_FAST", "1")
    monkeypatch.setenv("FINESCOPE_RUNS_DIR", str(own.root / "runs"))  # the fixture's corpus SAE and codes are reused
    saes = sorted((own.root / "runs" / "sae").iterdir())
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert "has no 'math' domain labels" in text and "shares of the default SAE selector's top 50" in text
    assert sorted((own.root / "runs" / "sae").iterdir()) == saes  # no SAE trained for the notebook


# ---- bad input: one sentence, at once, no run folder -----------------------------------------------------

def _words(n: int, offset: int = 0) -> str:
    return " ".join(f"w{offset + i}" for i in range(n))


@pytest.fixture
def small(tmp_path):
    """A 5-document pool of unrelated word runs, 4 seeds, a held-out file, and a run folder path."""
    pool = write_jsonl(tmp_path / "pool.jsonl", [_words(40, 100 * i) for i in range(5)])
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("a seed\nanother seed\na third seed\na fourth\n")
    return SimpleNamespace(tmp=tmp_path, pool=str(pool), seeds=str(seeds), run=tmp_path / "run")


def _refused(capsys, argv, *expected):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("finescope: error: ") and "\n" not in err and "Traceback" not in err, err
    for part in expected:
        assert part in err, err
    return err


def _no_work(monkeypatch):
    for name in ("load_model", "cached_sae", "domain_perplexity"):
        monkeypatch.setattr(pipeline, name, lambda *a, **k: pytest.fail("work started before the inputs were checked"))


@pytest.mark.parametrize("case", ["empty", "blank_lines", "no_text", "malformed"])
def test_a_bad_corpus_file_is_one_sentence(case, small, capsys, monkeypatch):
    _no_work(monkeypatch)
    body = {"empty": "", "blank_lines": "\n  \n", "no_text": '{"body": "x"}\n', "malformed": '{"text": "a"\n'}[case]
    bad = small.tmp / "bad.jsonl"
    bad.write_text(body)
    expected = {"empty": "is empty", "blank_lines": "is empty", "no_text": "no 'text' column",
                "malformed": "cannot be read as JSONL"}[case]
    _refused(capsys, ["run", "--corpus", str(bad), "--run-dir", str(small.run)], str(bad), expected)
    assert not small.run.exists()


def test_each_bad_run_input_is_refused_before_any_work_and_leaves_no_run_folder(small, capsys, monkeypatch):
    _no_work(monkeypatch)
    run = ["run", "--run-dir", str(small.run)]
    own = [*run, "--corpus", small.pool, "--seeds", small.seeds, "--m", "3"]
    _refused(capsys, [*run, "--corpus", small.pool, "--seeds", str(small.tmp / "missing.txt")], "missing.txt", "does not exist")
    two = small.tmp / "two.txt"
    two.write_text("one seed\n\nanother seed\n")
    _refused(capsys, [*run, "--corpus", small.pool, "--seeds", str(two), "--m", "3"], "Only 2 non-empty seeds", "at least 3")
    many = small.tmp / "many.txt"
    many.write_text("".join(f"seed {i}\n" for i in range(6)))
    _refused(capsys, [*run, "--corpus", small.pool, "--seeds", str(many), "--m", "3"], "6 seeds but only 5 pool documents")
    _refused(capsys, [*own[:-1], "9"], "M=9", "--m 5 or fewer")
    _refused(capsys, [*own, "--domain", "patents"], "Unknown domain 'patents'", "--eval HELDOUT")
    _refused(capsys, [*run, "--domain", "patents", "--corpus", small.pool], "--seeds SEEDS and --eval HELDOUT")
    inside = write_jsonl(small.tmp / "inside.jsonl", [_words(40, 100 * i) + " tail" for i in range(3)] + [_words(40, 9000)])
    _refused(capsys, [*own, "--domain", "patents", "--eval", str(inside)], "3 of the 4 documents", "share a 13-word passage")
    _refused(capsys, [*run, "--sae-mix", "0.2"], "--sae-mix", "needs --corpus")
    _refused(capsys, [*own, "--sae-mix", "1.5"], "--sae-mix", "must be in [0, 1)")
    _refused(capsys, [*own, "--model", str(small.tmp / "no-model")], "no-model")
    assert not small.run.exists()  # so the corrected command is not refused as "a run with a different model"


def test_curate_refuses_bad_input_before_loading_a_model(small, capsys, monkeypatch):
    import finescope_nb.curation_run as curation_run

    monkeypatch.setattr(curation_run, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    out = small.tmp / "out"
    args = ["curate", "--corpus", small.pool, "--seeds", small.seeds, "--out", str(out)]
    _refused(capsys, [*args, "--m", "50"], "M=50", "--m 5 or fewer")
    _refused(capsys, [*args[:4], str(small.tmp / "nope.txt"), *args[5:], "--m", "2"], "nope.txt", "does not exist")
    assert not out.exists()


# ---- the pieces ------------------------------------------------------------------------------------------

def test_slug_is_folder_safe():
    assert inputs.slug("Number puzzles / grade 7!") == "number-puzzles-grade-7"
    assert inputs.slug("../..") == "domain" and inputs.slug("Clinical_notes-v2.1") == "clinical_notes-v2.1"
    assert len(inputs.slug("x" * 100)) == 40


def test_heldout_overlap_is_the_word_13gram_test():
    pool = ["The quick brown fox jumps over the lazy dog near the river bank today."]
    held = ["THE QUICK brown fox, jumps over the lazy dog near the river bank today!",  # 13 shared words, other case
            "The quick brown fox jumps over the lazy dog near the river.",  # only 12 words
            "Nothing in common at all with that sentence about animals and rivers and banks."]
    assert inputs.inside_pool(held, pool).tolist() == [True, False, False]


def test_an_embedded_name_with_eval_is_measured_on_the_file_and_keeps_the_other_domains():
    from finescope_nb.evaluate.own_heldout import embedded_part, heldout_cloze, sequences_with_heldout
    from finescope_nb.lm import load_model, load_tokenizer

    tok = load_tokenizer()
    cfg = EvalConfig(domains=("math", "code", "stem"), max_docs_per_domain=3, max_length=32, metrics=("cloze", "gsm8k"))
    texts = [f"Problem {i}: " + _words(80, 7 * i) for i in range(5)]
    seqs = sequences_with_heldout(tok, cfg, "math", texts)
    assert list(seqs) == ["math", "code", "stem"] and len(seqs["math"]) == 3  # the target first, from the file, capped
    assert seqs["math"][0] == tok(texts[0], truncation=True, max_length=32)["input_ids"]
    assert embedded_part(cfg, "math").metrics == ("cloze",)  # gsm8k speaks only to math, measured on the file now
    assert embedded_part(cfg.replace(domains=("math",)), "math") is None
    row = heldout_cloze(load_model(), tok, "math", texts, cfg.replace(metric_limit=4)).iloc[0]
    assert (row["metric"], row["domain"], row["n"], row["chance"]) == ("cloze", "math", 4, 0.25) and 0 <= row["score"] <= 1


def test_corpus_sae_texts_hold_out_a_slice_and_mix_in_the_embedded_pool():
    config = default_sae_config(fast=True, train_tokens=3_200)  # 101 documents' worth of tokens
    corpus = [f"document {i} " + _words(20, i) for i in range(50)]
    plain = corpus_sae_texts(corpus, config)
    assert len(plain.heldout) == 5 and set(plain.train) == set(corpus) - set(plain.heldout) and len(plain.train) == 45
    mixed = corpus_sae_texts(corpus, config, mix=0.4)
    own_docs = sum(t in set(corpus) for t in mixed.train)
    assert own_docs == 45 and len(mixed.train) == 75 and mixed.key != plain.key and "40%" in mixed.source
    assert len(corpus_sae_texts(corpus * 4, config).train) == 101  # a large corpus is sampled to the budget
    assert corpus_sae_texts(corpus[:-1], config).key != plain.key  # an edited corpus trains a new SAE
    with pytest.raises(FinescopeError, match="in \\[0, 1\\)"):
        corpus_sae_texts(corpus, config, mix=1.0)
