"""Exports that stock transformers and gguf read back, from run folders built with real tiny models.

A run folder here holds what the pipeline writes (run.json, progress.json, stage folders with DONE,
the pruned and recovered models, curated.csv, the evaluations, summary.json) but its models are
tiny random ones pruned by the real pruning code, so every export path is exercised in seconds.
"""

import json
import math

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

import tiny_models as tm
from finescope_nb.config import EvalConfig, ModelConfig, PruneConfig, RunConfig
from finescope_nb.errors import FinescopeError
from finescope_nb.export import MARKER, export
from finescope_nb.lm import SHAPES_FILE, layer_shapes, load_model, load_tokenizer, save_model
from finescope_nb.prune import prune, save_pruned

TEXTS = tm.texts(8, seed=1)
ALL_UNIFORM = dict(scope="uniform", first_layer=0, last_layer=-1)
TABLE = [{"domain": "math", "base_ppl": 16.3761, "pruned_ppl": 16.7893, "recovered_ppl": 16.8381, "retained": 0.9725},
         {"domain": "code", "base_ppl": 138.1829, "pruned_ppl": 147.4961, "recovered_ppl": 147.5699, "retained": 0.9363}]
METRICS = [{"model": m, "metric": "cloze", "domain": "math", "group": "math", "n": 50, "score": s, "chance": 0.25}
           for m, s in (("base", 0.62), ("pruned", 0.48), ("recovered", 0.555))]


def make_run(root, arch="llama", prune_config=PruneConfig(ratio=0.2), model=None, tokenizer=None, stages=None):
    """A finished run folder whose pruned model is `model` (a tiny `arch`) pruned by `prune_config`."""
    model = model if model is not None else tm.make_model(arch)
    tok = tokenizer if tokenizer is not None else tm.tokenizer(bos=arch != "gpt2")
    base = save_model(model, tok, root / "base")
    (base / "README.md").write_text("---\nlicense: apache-2.0\nlicense_link: https://example.org/terms\n---\n# tiny base\n")
    pruned, plan, _ = prune(model, tok, TEXTS, prune_config, progress=False)
    run = root / "run"
    config = RunConfig(domain="math", model=ModelConfig(path=str(base)), eval=EvalConfig(domains=("math", "code")),
                       prune=prune_config)
    run.mkdir()
    (run / "run.json").write_text(config.to_json())
    folders = {}
    for stage in stages or ("eval-base", "curate", "prune", "recover", "eval-pruned", "eval-recovered"):
        folder = folders[stage] = run / "stages" / f"{stage}-abc123"
        folder.mkdir(parents=True)
        if stage.startswith("eval-"):
            ppl = {row["domain"]: row[f"{stage[5:]}_ppl"] for row in TABLE}
            (folder / "ppl.csv").write_text("domain,tokens,loss,ppl\n" + "".join(
                f"{d},1000,{math.log(p)},{p}\n" for d, p in ppl.items()))
        elif stage == "curate":
            (folder / "curated.csv").write_text("id,text,domain,score\na,x,math,0.9\nb,y,math,0.8\nc,z,code,0.7\n")
        elif stage == "prune":
            save_pruned(pruned, tok, folder / "model", plan, prune_config)
        elif stage == "recover":
            with torch.no_grad():  # recovery changes the weights, never the shapes
                pruned.get_output_embeddings().weight.mul_(1.01)
            save_model(pruned, tok, folder / "model")
            (folder / "recovery.json").write_text('{"keep_rate": 0.342}')
        (folder / "DONE").write_text("abc123\n")
    (run / "progress.json").write_text(json.dumps({"stages": {s: f"stages/{f.name}" for s, f in folders.items()}}))
    if len(folders) == 6:
        (run / "summary.json").write_text(json.dumps({
            "domain": "math", "curated": 3, "curated_domain_share": 2 / 3, "table": TABLE, "metrics": METRICS,
            "params_non_embedding": {"base": plan.params_before, "pruned": plan.params_after},
            "stages": {s: f"stages/{f.name}" for s, f in folders.items()}}))
    return run


def _logits(model, seed=0):
    ids = torch.randint(3, tm.VOCAB, (2, 12), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(input_ids=ids).logits


def _stock(folder):
    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()


@pytest.mark.parametrize("arch, extra", [("llama", {}), ("qwen2", {}), ("gpt2", {"prune_attention": False}),
                                         ("gpt_neox", {"prune_attention": False})])
def test_hf_export_of_a_uniform_plan_loads_with_stock_from_pretrained(tmp_path, arch, extra):
    run = make_run(tmp_path, arch, PruneConfig(ratio=0.2, **ALL_UNIFORM, **extra))
    source = next((run / "stages").glob("recover-*")) / "model"
    out = export(run, "hf")
    assert out == run / "exports" / "recovered-hf" and not (out / SHAPES_FILE).exists()
    stock, kit = _stock(out), load_model(source)
    assert layer_shapes(stock) == layer_shapes(kit) != layer_shapes(tm.make_model(arch))  # smaller, as pruned
    assert torch.allclose(_logits(stock), _logits(kit), atol=1e-5, rtol=0)
    assert (out / "README.md").is_file() and json.loads((out / MARKER).read_text())["padded"] is False


@pytest.mark.parametrize("arch, head_unit", [("llama", "group"), ("llama", "query"), ("qwen2", "group"), ("gpt2", "group"),
                                             ("gpt_neox", "group")])
def test_padded_export_of_a_non_uniform_run_computes_what_the_pruned_model_does(tmp_path, arch, head_unit):
    run = make_run(tmp_path, arch, PruneConfig(ratio=0.25, head_unit=head_unit, first_layer=0, last_layer=1))
    source = next((run / "stages").glob("prune-*")) / "model"
    kit = load_model(source)
    assert len({tuple(s.values()) for s in layer_shapes(kit)}) > 1
    out = export(run, "hf", "pruned", pad=True)
    stock = _stock(out)
    assert layer_shapes(stock) == layer_shapes(tm.make_model(arch))  # back at the base model's shapes
    assert torch.allclose(_logits(stock), _logits(kit), atol=1e-5, rtol=0)
    assert "zero-padded back to the base model's shapes" in (out / "README.md").read_text()


def test_a_uniform_head_count_the_config_cannot_state_is_refused_then_padded(tmp_path):
    torch.manual_seed(0)  # 4 heads of 8 over a hidden size of 32: one head less leaves 3, which LlamaConfig refuses
    model = AutoModelForCausalLM.from_config(LlamaConfig(**{**tm.LLAMA_LIKE, "num_key_value_heads": 4})).eval()
    run = make_run(tmp_path, model=model, prune_config=PruneConfig(ratio=0.3, **ALL_UNIFORM))
    source = next((run / "stages").glob("recover-*")) / "model"
    assert {s["num_heads"] for s in layer_shapes(load_model(source))} == {3} and (source / SHAPES_FILE).is_file()
    with pytest.raises(FinescopeError, match="shapes its config cannot state .*--all-blocks --mlp-only"):
        export(run, "hf")
    assert torch.allclose(_logits(_stock(export(run, "hf", pad=True))), _logits(load_model(source)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_non_uniform_run_without_pad_is_refused_with_both_ways_out(tmp_path, arch):
    run = make_run(tmp_path, arch, PruneConfig(ratio=0.25))
    with pytest.raises(FinescopeError) as excinfo:
        export(run, "hf")
    text = str(excinfo.value)
    assert "cannot load with stock from_pretrained" in text and "--pad" in text and "--scope uniform --all-blocks" in text
    assert "base model's size and speed" in text and text.count(". ") == 0
    assert ("--mlp-only" in text) == (arch == "gpt2")
    assert not (run / "exports").exists()


def _field(reader, key):
    return reader.fields[key].contents()


def _unpair(weight, heads, head_dim):
    """Undo llama.cpp's pair interleaving of query/key rows (row 2j came from j, row 2j+1 from j + head_dim/2)."""
    return weight.reshape(heads, head_dim // 2, 2, -1).transpose(0, 2, 1, 3).reshape(weight.shape)


@pytest.mark.parametrize("dtype", ["f16", "bf16", "q8_0"])
def test_gguf_export_of_a_non_uniform_llama_reads_back_as_deci(tmp_path, dtype):
    tok = load_tokenizer()  # the kit's own byte-level BPE
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**{**tm.LLAMA_LIKE, "vocab_size": len(tok)})).eval()
    run = make_run(tmp_path, model=model, tokenizer=tok, prune_config=PruneConfig(ratio=0.3, scope="global", first_layer=0))
    kit = load_model(next((run / "stages").glob("recover-*")) / "model")
    shapes = layer_shapes(kit)
    assert len({tuple(s.values()) for s in shapes}) > 1
    out = export(run, "gguf", dtype=dtype)
    reader = gguf.GGUFReader(out / f"math-recovered-{dtype}.gguf")
    assert _field(reader, "general.architecture") == "deci"
    assert _field(reader, "deci.attention.head_count") == [s["num_heads"] for s in shapes]
    assert _field(reader, "deci.attention.head_count_kv") == [s["num_kv_heads"] for s in shapes]
    assert _field(reader, "deci.feed_forward_length") == [s["intermediate_size"] for s in shapes]
    assert _field(reader, "deci.attention.key_length") == tm.HEAD_DIM and _field(reader, "deci.block_count") == 3
    assert _field(reader, "tokenizer.ggml.model") == "gpt2" and _field(reader, "tokenizer.ggml.pre") == "gpt-2"
    assert _field(reader, "tokenizer.ggml.tokens")[:3] == ["<|endoftext|>", "<|pad|>", tok.convert_ids_to_tokens(2)]
    assert len(_field(reader, "tokenizer.ggml.merges")) > 1000 and _field(reader, "tokenizer.ggml.add_bos_token") is True
    assert _field(reader, "tokenizer.ggml.bos_token_id") == tok.bos_token_id and "messages" in _field(reader, "tokenizer.chat_template")
    tensors = {t.name: t for t in reader.tensors}
    qtype = {"f16": gguf.GGMLQuantizationType.F16, "bf16": gguf.GGMLQuantizationType.BF16, "q8_0": gguf.GGMLQuantizationType.Q8_0}[dtype]
    for i, (shape, layer) in enumerate(zip(shapes, kit.model.layers)):
        expected = {"attn_q": _unpair, "attn_k": _unpair, "attn_v": None, "attn_output": None,
                    "ffn_gate": None, "ffn_up": None, "ffn_down": None}
        modules = {"attn_q": layer.self_attn.q_proj, "attn_k": layer.self_attn.k_proj, "attn_v": layer.self_attn.v_proj,
                   "attn_output": layer.self_attn.o_proj, "ffn_gate": layer.mlp.gate_proj, "ffn_up": layer.mlp.up_proj,
                   "ffn_down": layer.mlp.down_proj}
        for name, undo in expected.items():
            t = tensors[f"blk.{i}.{name}.weight"]
            want = modules[name].weight.detach().numpy()
            whole_blocks = dtype != "q8_0" or want.shape[-1] % 32 == 0  # Q8_0 packs rows in blocks of 32, else float16
            assert t.tensor_type == (qtype if whole_blocks else gguf.GGMLQuantizationType.F16)
            assert list(t.shape) == list(want.shape[::-1])  # GGML lists dimensions inner first
            got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(want.shape)
            if undo:
                got = undo(got, shape["num_heads"] if name == "attn_q" else shape["num_kv_heads"], tm.HEAD_DIM)
            step = np.abs(want).max() / 127 if dtype == "q8_0" and whole_blocks else 0  # a Q8_0 step at most
            assert np.allclose(got, want, rtol=2 ** -8 if dtype == "bf16" else 2 ** -10, atol=step + 1e-6)
        norm = tensors[f"blk.{i}.attn_norm.weight"]
        assert norm.tensor_type == gguf.GGMLQuantizationType.F32
        assert np.array_equal(norm.data, layer.input_layernorm.weight.detach().numpy())
    assert tensors["output.weight"].n_elements == tensors["token_embd.weight"].n_elements == len(tok) * tm.HIDDEN
    card = (out / "README.md").read_text()
    assert "`deci`" in card and f"math-recovered-{dtype}.gguf" in card and "llama-cli" in card


def _llama_cpp_forward(reader, ids):
    """Logits of a GGUF file computed the way llama.cpp's llama/deci graphs do (numpy, float64): RoPE on
    consecutive feature pairs, per-block head counts and widths from the metadata, query head h reading
    KV head h // (heads / KV heads)."""
    arch = _field(reader, "general.architecture")

    def meta(key, i=None):
        value = _field(reader, f"{arch}.{key}")
        return value[i] if isinstance(value, list) and i is not None else value

    w = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).reshape(t.shape[::-1]).astype(np.float64) for t in reader.tensors}
    eps, d, base = meta("attention.layer_norm_rms_epsilon"), meta("attention.key_length"), meta("rope.freq_base")

    def rms(x, weight):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight

    def rope(x):  # [tokens, heads, d]
        angle = np.arange(len(x))[:, None] * base ** (-np.arange(0, d, 2) / d)
        pairs = x.reshape(*x.shape[:2], d // 2, 2)
        cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
        return np.stack([pairs[..., 0] * cos - pairs[..., 1] * sin, pairs[..., 0] * sin + pairs[..., 1] * cos], -1).reshape(x.shape)

    x, n = w["token_embd.weight"][ids], len(ids)
    for i in range(meta("block_count")):
        heads, kv = meta("attention.head_count", i), meta("attention.head_count_kv", i)
        h = rms(x, w[f"blk.{i}.attn_norm.weight"])
        q = rope((h @ w[f"blk.{i}.attn_q.weight"].T).reshape(n, heads, d))
        k = rope((h @ w[f"blk.{i}.attn_k.weight"].T).reshape(n, kv, d))
        v = (h @ w[f"blk.{i}.attn_v.weight"].T).reshape(n, kv, d)
        k, v = np.repeat(k, heads // kv, axis=1), np.repeat(v, heads // kv, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d) + np.triu(np.full((n, n), -np.inf), 1)
        att = np.exp(scores - scores.max(-1, keepdims=True))
        out = np.einsum("hqk,khd->qhd", att / att.sum(-1, keepdims=True), v).reshape(n, heads * d)
        x = x + out @ w[f"blk.{i}.attn_output.weight"].T
        h = rms(x, w[f"blk.{i}.ffn_norm.weight"])
        gate = h @ w[f"blk.{i}.ffn_gate.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * (h @ w[f"blk.{i}.ffn_up.weight"].T)) @ w[f"blk.{i}.ffn_down.weight"].T
    return rms(x, w["output_norm.weight"]) @ w["output.weight"].T


def test_the_gguf_run_by_llama_cpp_conventions_gives_the_kits_logits(tmp_path):
    tok = load_tokenizer()
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**{**tm.LLAMA_LIKE, "vocab_size": len(tok)})).eval()
    run = make_run(tmp_path, model=model, tokenizer=tok, prune_config=PruneConfig(ratio=0.25, head_unit="query", first_layer=1, last_layer=2))
    kit = load_model(next((run / "stages").glob("recover-*")) / "model")
    assert len({tuple(s.values()) for s in layer_shapes(kit)}) > 1
    with torch.no_grad():  # the kit's model with the float16 rounding the file applies to matrices (norms stay float32)
        for p in kit.parameters():
            if p.dim() == 2:
                p.copy_(p.half().float())
    ids = tok("the sum of two and three is five, so the answer is 5")["input_ids"]
    want = _logits_of(kit, ids)
    got = _llama_cpp_forward(gguf.GGUFReader(export(run, "gguf") / "math-recovered-f16.gguf"), np.array(ids))
    assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()


def _logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].double().numpy()


def test_gguf_export_of_a_uniform_llama_is_the_llama_architecture(tmp_path):
    tok = load_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**{**tm.LLAMA_LIKE, "vocab_size": len(tok)})).eval()
    run = make_run(tmp_path, model=model, tokenizer=tok, prune_config=PruneConfig(ratio=0.2, **ALL_UNIFORM))
    reader = gguf.GGUFReader(export(run, "gguf", "pruned") / "math-pruned-f16.gguf")
    shape = layer_shapes(load_model(next((run / "stages").glob("prune-*")) / "model"))[0]
    assert _field(reader, "general.architecture") == "llama"
    assert _field(reader, "llama.attention.head_count") == shape["num_heads"]
    assert _field(reader, "llama.feed_forward_length") == shape["intermediate_size"]


def test_the_model_card_holds_every_field_with_the_runs_numbers(tmp_path):
    run = make_run(tmp_path, "llama", PruneConfig(ratio=0.2, **ALL_UNIFORM))
    card = (export(run, "hf") / "README.md").read_text()
    header = card.split("---\n")[1]
    assert "license: apache-2.0" in header and "license_link: https://example.org/terms" in header
    assert "library_name: transformers" in header and "pipeline_tag: text-generation" in header and "- math" in header
    plan = json.loads(next((run / "stages").glob("prune-*/model/finescope_prune.json")).read_text())["plan"]
    for text in ("base", "apache-2.0", "Domain: math", "held-out seed examples of the embedded math seed set", "sha256",
                 "Curated set: 3 documents", "0.667", "ratio 0.2", "scope uniform", "criterion taylor",
                 f"{plan['params_before']:,} -> {plan['params_after']:,}", "blocks 0-2 of 0-2", "self_distill",
                 "keep rate 0.342", "lora fine-tuning for 60 steps", "16.38", "16.84", "0.9725", "147.6", "0.555",
                 "from_pretrained", "retained"):
        assert text in card, text
    seeds_file = tmp_path / "seeds.txt"
    seeds_file.write_text("one seed\nanother seed\n")
    config = json.loads((run / "run.json").read_text())
    config["curation"]["seeds_path"] = str(seeds_file)
    (run / "run.json").write_text(json.dumps(config))
    card = (export(run, "hf", "pruned") / "README.md").read_text()
    import hashlib

    assert hashlib.sha256(seeds_file.read_bytes()).hexdigest() in card and "Recovery: none" in card


def test_bad_input_is_refused_in_one_sentence_and_nothing_is_half_written(tmp_path, monkeypatch):
    half = make_run(tmp_path / "half", "llama", PruneConfig(ratio=0.2, **ALL_UNIFORM), stages=("eval-base", "curate"))
    with pytest.raises(FinescopeError, match="has not finished pruning"):
        export(half, "hf")
    pruned_only = make_run(tmp_path / "p", "llama", PruneConfig(ratio=0.2, **ALL_UNIFORM), stages=("eval-base", "curate", "prune"))
    with pytest.raises(FinescopeError, match="has not finished recovery.*--model pruned"):
        export(pruned_only, "hf")
    assert (export(pruned_only, "hf", "pruned") / "README.md").is_file()  # the card says what the run has
    with pytest.raises(FinescopeError, match="Unknown export format 'onnx'; choose one of hf, gguf"):
        export(pruned_only, "onnx", "pruned")
    with pytest.raises(FinescopeError, match="Unknown model 'base'"):
        export(pruned_only, "hf", "base")
    with pytest.raises(FinescopeError, match="not a finescope run folder"):
        export(tmp_path, "hf")

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(FinescopeError, match="pass --overwrite to replace"):
        export(pruned_only, "hf", "pruned", taken)
    assert (taken / "notes.txt").read_text() == "mine"
    assert (export(pruned_only, "hf", "pruned", taken, overwrite=True) / MARKER).is_file()
    assert not (taken / "notes.txt").exists()

    gpt2 = make_run(tmp_path / "g", "gpt2", PruneConfig(ratio=0.2, prune_attention=False, **ALL_UNIFORM))
    with pytest.raises(FinescopeError, match="'gpt2' has no GGUF writer in the kit \\(supported: llama, mistral\\)"):
        export(gpt2, "gguf")
    assert not (gpt2 / "exports" / "recovered-gguf").exists()

    import finescope_nb.export.card as card

    previous = export(gpt2, "hf")
    monkeypatch.setattr(card, "model_card", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        export(gpt2, "hf")  # interrupted after the weights were written: the earlier export is untouched
    assert sorted(p.name for p in previous.iterdir()) == sorted(p.name for p in (gpt2 / "exports" / "recovered-hf").iterdir())
    assert [p.name for p in (gpt2 / "exports").iterdir()] == ["recovered-hf"]


def test_cli_exports_and_refuses_in_one_line(tmp_path, capsys):
    from finescope_nb.cli import main

    run = make_run(tmp_path, "llama", PruneConfig(ratio=0.25))
    capsys.readouterr()
    assert main(["export", str(run), "--format", "hf"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("finescope: error: The recovered model of") and "\n" not in err
    assert main(["export", str(run), "--format", "hf", "--pad", "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    assert math.isclose(_logits(_stock(tmp_path / "out"))[0, 0, 0].item(),
                        _logits(load_model(next((run / "stages").glob("recover-*")) / "model"))[0, 0, 0].item(), abs_tol=1e-5)
