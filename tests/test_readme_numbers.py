"""The README's measured numbers are the recorded results': each is formatted from benchmarks/results here."""

import json
import math

from finescope_nb.paths import REPO_ROOT

# whitespace folded, so rewrapping a paragraph never breaks a check
README = " ".join((REPO_ROOT / "README.md").read_text().split())
RESULTS = REPO_ROOT / "benchmarks" / "results"


def test_sae_numbers_match_sae_json():
    sae = json.loads((RESULTS / "sae.json").read_text())
    recovered = (sae["zero_ablation_loss"] - sae["spliced_loss"]) / (sae["zero_ablation_loss"] - sae["clean_loss"])
    assert (f"explained variance {sae['explained_variance']:.3f}, {sae['dead_fraction']:.1%} dead, "
            f"{recovered:.1%} of the loss gap recovered") in README


def test_curation_numbers_match_curation_json():
    bench = json.loads((RESULTS / "curation.json").read_text())
    p = bench["precision_at_m"]["coarse"]["sae mean centroid (default)"]
    assert (f"precision@500](docs/GLOSSARY.md#precision-at-m) is {p['code']:.2f} on code and {p['math']:.2f} on math, "
            f"{p['stem']:.2f} on stem, {p['humanities']:.2f} on humanities and {p['social_sciences']:.2f} on social sciences") in README
    fine = bench["fine_goal"]
    assert f"it reaches {fine['sae_macro_precision']:.2f} against {fine['dense_centred_macro_precision']:.2f}" in README
    spread = max(bench["precision_std"]["coarse"]["sae mean centroid (default)"].values())
    assert f"standard deviation of up to {spread:.2f}" in README
    macro = bench["macro"]
    default, paper = "sae mean centroid (default)", "sae max max-over-seeds (paper)"
    assert (f"centroid scored macro precision {macro['coarse'][default]['precision_mean']:.3f} on the five domains") in README
    assert (f"{macro['fine'][default]['precision_mean']:.3f} on the fine topics (precision@100), the paper's selector "
            f"{macro['coarse'][paper]['precision_mean']:.3f} and {macro['fine'][paper]['precision_mean']:.3f}") in README


def test_ablation_table_matches_ablation_json():
    retained = json.loads((RESULTS / "ablation.json").read_text())["retained"]
    for row, cells in retained.items():
        if row == "unpruned":
            continue
        for domain in ("math", "code"):
            cell = cells[domain]
            assert f"{cell['mean']:.4f} ± {cell['std']:.4f}" in README, (row, domain)


def test_own_domain_numbers_match_own_domain_json():
    bench = json.loads((RESULTS / "own_domain.json").read_text())
    selectors, run = bench["retrieval"]["selectors"], bench["run"]
    cells = lambda name: " / ".join(f"{selectors[name][k]['mean']:.2f}" for k in ("precision_at_500", "precision_at_1000", "recall_at_1000"))
    assert f"the SAE selector {cells('sae default selector, SAE without the new corpus')} with the default SAE" in README
    assert f"and {cells('sae default selector, SAE with the new corpus')} with the SAE trained on that corpus" in README
    assert f"dense baseline {cells('dense centred centroid')}, n-gram {cells('ngram dsir (per-ngram mean)')}, random {cells('random')}" in README
    assert f"retains {run['retained']:.3f} on the held-out books" in README


def test_llama_cpp_numbers_match_export_json():
    cpp = json.loads((RESULTS / "export.json").read_text())["llama_cpp"]
    assert f"kit's float32 model by {cpp['mean_abs_logprob_diff']:.1e} on average" in README
    assert f"agree on {cpp['greedy_agreement_32']:.1%} of the first 32" in README
    speed = cpp["generation_tokens_per_s"]
    assert f"It generates {speed['llama_cpp_f16']:.0f} tokens/s against the kit's {speed['kit_float32']:.0f}" in README


def test_scope_numbers_match_export_json():
    scopes = json.loads((RESULTS / "export.json").read_text())["scopes"]
    pruned, recovered = scopes["pruned_ppl"], scopes["recovered_ppl"]
    for domain in ("math", "code"):
        for plan in ("per_layer", "uniform"):
            assert f"{pruned[plan][domain]['mean']:.2f}" in README and f"{recovered[plan][domain]['mean']:.2f}" in README
    cost = recovered["uniform"]["math"]["mean"] / recovered["per_layer"]["math"]["mean"] - 1
    assert f"perplexity is {cost:.0%} higher on math" in README


def test_side_by_side_table_is_the_one_the_results_give():
    from benchmarks.side_by_side import END, START, table

    raw = (REPO_ROOT / "README.md").read_text()  # unfolded: a table's line breaks are part of it
    assert f"{START}\n{table()}\n{END}" in raw, "run `python benchmarks/side_by_side.py --write`"


def test_smollm2_run_numbers_match_its_pipeline_json():
    run = json.loads((RESULTS / "smollm2-135m" / "pipeline.json").read_text())
    math = next(row for row in run["table"] if row["domain"] == "math")
    assert f"took {run['demo_seconds'] / 60:.1f} minutes (target 90)" in README
    assert f"{run['stage_seconds']['curate'] / 60:.1f} of them curating" in README
    assert f"and {run['stage_seconds']['recover'] / 60:.1f} recovering" in README
    code = next(row for row in run["table"] if row["domain"] == "code")
    assert (f"Math test perplexity went {math['base_ppl']:.2f} → {math['pruned_ppl']:.2f} (pruned 30%, kept MLP widths in "
            f"multiples of 128) → {math['recovered_ppl']:.2f} (recovered by 250 LoRA steps at lr 1e-3): retained "
            f"{math['retained']:.3f}") in README
    assert f"(code retained {code['retained']:.2f})" in README
    sae = json.loads((RESULTS / "smollm2-135m" / "sae.json").read_text())
    recovered = (sae["zero_ablation_loss"] - sae["spliced_loss"]) / (sae["zero_ablation_loss"] - sae["clean_loss"])
    assert f"explains {sae['explained_variance']:.3f} of the variance of 200k held-out tokens" in README
    assert f"recovers {recovered:.1%} of the loss gap" in README
    assert f"is {sae['capture_speedup_vs_full_forward']:.2f}x a full forward" in README


def test_gemma_fine_tuning_memory_matches_its_json():
    bench = json.loads((RESULTS / "gemma3-270m" / "finetune_memory.json").read_text())
    gib = {name: arm["peak_rss_mib"] / 1024 for name, arm in bench["arms"].items()}
    loading = bench["arms"]["whole logits"]["peak_while_loading_mib"] / 1024
    assert f"teacher and student loaded ({loading:.1f} GiB before training)" in README
    assert (f"peaks at {gib['sliced logits']:.1f} GiB instead of {gib['whole logits']:.1f} GiB, at "
            f"{bench['step_time_ratio_sliced_to_whole']:.2f}x the step time") in README


def test_gemma_run_numbers_match_its_pipeline_json():
    run = json.loads((RESULTS / "gemma3-270m" / "pipeline.json").read_text())
    rows = {row["domain"]: row for row in run["table"]}
    minutes = {stage: round(seconds / 60) for stage, seconds in run["stage_seconds"].items()}
    assert f"took **{run['demo_seconds'] / 60:.0f} minutes**" in README
    assert f"changed {run['rerun_seconds']:.0f} s" in README
    assert (f"base evaluation {minutes['eval-base']} min (model load included), SAE and pool encoding {minutes['curate']}, "
            f"pruning {minutes['prune']}, recovery {minutes['recover']}") in README
    assert f"recovered models' evaluation {minutes['eval-pruned']} and {minutes['eval-recovered']}" in README
    math, code, stem = rows["math"], rows["code"], rows["stem"]
    assert (f"math {math['base_ppl']:.1f} → {math['pruned_ppl']:.1f} → {math['recovered_ppl']:.1f} (retained {math['retained']:.2f}), "
            f"code {code['base_ppl']:.1f} → {code['pruned_ppl']:.0f} → {code['recovered_ppl']:.0f} ({code['retained']:.2f}), "
            f"stem {stem['base_ppl']:.0f} → {stem['pruned_ppl']:.0f} → {stem['recovered_ppl']:.0f} ({stem['retained']:.2f})") in README
    speed = json.loads((RESULTS / "gemma3-270m" / "choice_speed.json").read_text())
    assert f"{speed['speedup_option_tokens']:.2f}x as many cloze items a second with the same scores" in README
    assert speed["max_score_difference"] == 0.0


def test_smollm2_math_recovery_numbers_match_its_distill_json():
    """The stratified-pick recovery run: each arm's retained and FineScope's and plain's share per source."""
    bench = json.loads((RESULTS / "smollm2-135m" / "distill.json").read_text())
    assert bench["heldout_pick"] == "stratified"
    r = {arm: bench["retained"][arm]["math"]["mean"] for arm in ("self_distill", "plain", "random", "none")}
    assert (f"FineScope's arm retains {r['self_distill']:.3f} (target 0.9: not met), plain fine-tuning on the curated "
            f"text {r['plain']:.3f}, a random pool sample {r['random']:.3f} and the untrained pruned model {r['none']:.3f}") in README
    base = bench["details"]["unpruned_test_loss_by_source"]["math"]
    share = {row["arm"]: {s: math.exp(base[s] - loss) for s, loss in row["test_loss_by_source"].items()}
             for row in bench["details"]["rows"] if row["domain"] == "math"}
    assert (f"FineScope keeps the most of any arm ({share['self_distill']['math_test']:.3f}; plain "
            f"{share['plain']['math_test']:.3f}, random {share['random']['math_test']:.3f})") in README
    assert (f"({share['plain']['mathematics_dataset']:.2f} of the unpruned model's probability there, "
            f"FineScope {share['self_distill']['mathematics_dataset']:.2f})") in README
    rewrite = next(row for row in bench["details"]["rows"]
                   if row["arm"] == "self_distill (rewrite)" and row["domain"] == "math")
    assert (f"With the rewrite teacher FineScope's arm retains {bench['retained']['self_distill (rewrite)']['math']['mean']:.3f} "
            f"(best step {rewrite['best_step']}; competition problems {share['self_distill (rewrite)']['math_test']:.3f}, "
            f"templated {share['self_distill (rewrite)']['mathematics_dataset']:.2f})") in README


def test_smollm2_code_recovery_numbers_match_its_distill_json():
    """Code's arms in the same run, and the claims that FineScope beats plain fine-tuning overall and per source."""
    bench = json.loads((RESULTS / "smollm2-135m" / "distill.json").read_text())
    r = {arm: bench["retained"][arm]["code"]["mean"] for arm in bench["retained"]}
    assert (f"it retains {r['self_distill']:.3f} with the continuation teacher and {r['self_distill (rewrite)']:.3f} "
            f"with the rewrite teacher, against plain fine-tuning {r['plain']:.3f}, a random pool sample "
            f"{r['random']:.3f} and the untrained pruned model {r['none']:.3f}") in README
    assert min(r["self_distill"], r["self_distill (rewrite)"]) > max(r["plain"], r["random"], r["none"])
    rows = {row["arm"]: row for row in bench["details"]["rows"] if row["domain"] == "code"}
    sources = rows["plain"]["test_loss_by_source"]
    assert len(sources) == 3
    assert all(rows["self_distill"]["test_loss_by_source"][s] < sources[s] for s in sources)
    mbpp = {arm: row["metrics"]["mbpp/mbpp"] for arm, row in rows.items()}
    assert f"MBPP falls from {round(mbpp['none']['base'] * 50)} of 50 unpruned to 0 in every pruned arm" in README
    assert all(m["score"] == 0 for m in mbpp.values())




def test_smollm2_ablation_numbers_match_its_json():
    bench = json.loads((RESULTS / "smollm2-135m" / "ablation.json").read_text())
    r = {row: {d: cell["mean"] for d, cell in per.items()} for row, per in bench["retained"].items()}
    fs, generic = r["finescope"], r["finescope-generic-calibration"]
    assert (f"FineScope beats generic calibration (math {fs['math']:.3f} against {generic['math']:.3f}, "
            f"code {fs['code']:.3f} against {generic['code']:.3f})") in README
    assert all(fs[d] > max(generic[d], r["pruned+random"][d]) for d in ("math", "code"))
    pruned_rows = [row for row in r if row.startswith(("pruned", "finescope"))]
    assert max(pruned_rows, key=lambda row: r[row]["code"]).startswith("finescope")
    assert max(pruned_rows, key=lambda row: r[row]["math"]) == "pruned+pool"
    assert f"on math fine-tuning on the whole pool sample keeps more ({r['pruned+pool']['math']:.3f})" in README
    by_source = bench["retained_by_source"]
    assert by_source["pruned+pool"]["math"]["math_test"]["mean"] > by_source["finescope"]["math"]["math_test"]["mean"]
    hours = sum(cell["seconds"] for cell in bench["details"]["cells"]) / 3600
    assert f"its 18 cells took {hours:.1f} hours" in README and len(bench["details"]["cells"]) == 18

def _smollm2_pilot(name):
    return json.loads((RESULTS / "smollm2-135m" / "pilots" / name).read_text())

def _retained_by_arm(bench, domain):
    return {arm: bench["retained"][arm][domain]["mean"] for arm in bench["retained"]}

def test_smollm2_full_fine_tuning_pilot_matches_its_json():
    pilot = _smollm2_pilot("distill-full-lr1e-4.json")
    assert pilot["methods"] == ["full"] and pilot["details"]["finetune"]["full"]["lr"] == 1e-4
    retained = pilot["retained"]["self_distill"]["math"]["mean"]
    assert f"(math, lr 1e-4, 200 steps, `pilots/distill-full-lr1e-4.json`) retains {retained:.3f}" in README
    curve = _smollm2_pilot("distill-full-lr1e-4-curve.json")
    best = curve["budget"]["steps"]["self_distill"]["math"][0]
    assert (f"its curve (`pilots/distill-full-lr1e-4-curve.json`) has its best validation loss at step {best}, as LoRA's, "
            f"and retains {curve['retained']['self_distill']['math']['mean']:.3f}") in README
    from finescope_nb.models.registry import named_defaults
    full = named_defaults("smollm2-135m", "run")["finetune"]["full"]
    assert (full["lr"], full["steps"]) == (curve["details"]["finetune"]["full"]["lr"], best)
    code = _smollm2_pilot("distill-full-lr1e-4-curve-code.json")
    code_best, history = code["budget"]["steps"]["self_distill"]["code"][0], code["details"]["histories"]["code/0/self_distill"]
    assert history["step"][history["val_loss"].index(min(history["val_loss"]))] == code_best
    assert (f"full fine-tuning's best validation loss comes at step {code_best} of {history['step'][-1]} and it retains "
            f"{code['retained']['self_distill']['code']['mean']:.3f} (LoRA 0.656)") in README

def test_smollm2_full_fine_tuning_control_arms_match_their_json():
    for domain, suffix in (("math", ""), ("code", "-code")):
        kept = _retained_by_arm(_smollm2_pilot(f"distill-full-lr1e-4-arms-{domain}.json"), domain)
        curve = _retained_by_arm(_smollm2_pilot(f"distill-full-lr1e-4-curve{suffix}.json"), domain)
        assert kept["self_distill"] == curve["self_distill"]  # the curve's cell read back
    code = _smollm2_pilot("distill-full-lr1e-4-arms-code.json")
    kept = _retained_by_arm(code, "code")
    assert (f"ahead of full fine-tuning's plain ({kept['plain']:.3f}) and random-sample ({kept['random']:.3f}) arms") in README
    by_source = code["retained_by_source"]
    assert all(by_source["self_distill"]["code"][src] > max(by_source[arm]["code"][src] for arm in ("plain", "random", "none"))
               for src in by_source["self_distill"]["code"])
    maths = _smollm2_pilot("distill-full-lr1e-4-arms-math.json")
    kept = _retained_by_arm(maths, "math")
    assert kept["plain"] > kept["self_distill"] > kept["random"] > kept["none"]
    competition = {arm: maths["retained_by_source"][arm]["math"]["math_test"] for arm in kept}
    assert max(competition, key=competition.get) == "self_distill"
    assert (f"plain fine-tuning again keeps more ({kept['plain']:.3f}, random sample {kept['random']:.3f}; "
            f"`pilots/distill-full-lr1e-4-arms-math.json`), and FineScope again keeps the most of the competition "
            f"problems ({competition['self_distill']:.3f} against {competition['plain']:.3f})") in README

def test_gemma_pruning_numbers_match_its_pruning_json():
    bench = json.loads((RESULTS / "gemma3-270m" / "pruning.json").read_text())
    at = bench["by_ratio"]["0.3"]["ppl_pruned"]
    base, curated, sample = bench["ppl_base"], at["taylor/curated"], at["taylor/random"]
    assert (f"takes math {base['math']:.2f} → {curated['math']['mean']:.1f} ± {curated['math']['std']:.1f} and code "
            f"{base['code']:.1f} → {curated['code']['mean']:.0f} ± {curated['code']['std']:.0f}") in README
    assert f"gives math {sample['math']['mean']:.0f} and code {sample['code']['mean']:,.0f}" in README
    assert (f"The decoder blocks run {bench['blocks_speedup']:.2f}x faster; the whole forward {bench['forward_speedup']:.2f}x, "
            f"at its ceiling of {bench['forward_ceiling']:.2f}x") in README
    assert f"{bench['head_share']:.0%} of the forward's time" in README
