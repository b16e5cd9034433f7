"""The llamacpp arm serves the same weights at the same precision as the other arms: the bf16
GGUF written from models/smollm2-135m holds, tensor by tensor, the shipped GGUF's weights
rounded to bf16 (what the folder holds), with the shipped file's metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from servingbench.host.config import load_config  # noqa: E402
from servingbench.host.gguf_export import SMOLLM2_GGUF_SHA256, permute_rotary, prepare_gguf  # noqa: E402
from servingbench.host.models import ModelPrepError, sha256_file, smollm2_gguf_path  # noqa: E402
from tests.conftest import REPO  # noqa: E402

BF16 = gguf.GGMLQuantizationType.BF16
F32 = gguf.GGMLQuantizationType.F32


def _bf16_values(t) -> np.ndarray:
    """A BF16 tensor of a GGUFReader as float32 (bf16 is the top half of a float32)."""
    raw = np.frombuffer(t.data.tobytes(), dtype=np.uint16).astype(np.uint32) << 16
    return raw.view(np.float32).reshape(-1)


def _round_bf16(x: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.array(x, dtype=np.float32)).to(torch.bfloat16).float().numpy()


def test_every_tensor_is_the_shipped_weight_rounded_to_bf16(smollm2_gguf):
    ours, shipped = gguf.GGUFReader(str(smollm2_gguf)), gguf.GGUFReader(str(smollm2_gguf_path()))
    assert [t.name for t in ours.tensors] == [t.name for t in shipped.tensors]
    assert len(ours.tensors) == 272  # 30 blocks x 9 + embeddings + final norm (output tied)
    for a, b in zip(ours.tensors, shipped.tensors):
        assert list(a.shape) == list(b.shape), a.name
        expected = _round_bf16(gguf.quants.dequantize(b.data, b.tensor_type).reshape(-1))
        if a.tensor_type == F32:  # 1-D norms: f32, holding the bf16 values
            assert a.data.ndim == 1 and b.tensor_type == F32, a.name
            got = np.asarray(a.data, dtype=np.float32).reshape(-1)
        else:
            assert a.tensor_type == BF16, a.name
            got = _bf16_values(a)
        assert np.array_equal(got, expected), a.name


def test_metadata_is_the_shipped_files_except_the_file_type(smollm2_gguf):
    ours, shipped = gguf.GGUFReader(str(smollm2_gguf)), gguf.GGUFReader(str(smollm2_gguf_path()))
    skip = ("GGUF.", "general.file_type")
    a = {k: f.contents() for k, f in ours.fields.items() if not k.startswith(skip)}
    b = {k: f.contents() for k, f in shipped.fields.items() if not k.startswith(skip)}
    assert a == b
    assert ours.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_BF16
    assert a["tokenizer.ggml.pre"] == "smollm" and "<|im_start|>" in a["tokenizer.chat_template"]


def test_the_file_has_the_pinned_checksum_and_a_record_of_what_it_is(smollm2_gguf, smollm2_dir):
    digest = sha256_file(smollm2_gguf)
    assert digest == SMOLLM2_GGUF_SHA256["bfloat16"]
    record = json.loads(smollm2_gguf.with_name(smollm2_gguf.name + ".json").read_text())
    assert record["sha256"] == {smollm2_gguf.name: digest}
    assert record["format"] == "gguf" and record["dtype"] == "bfloat16"
    assert record["written_from"]["sha256"] == {"model.safetensors": sha256_file(smollm2_dir / "model.safetensors")}


def test_rotary_permutation_is_llama_cpps():
    """Two heads of 4 rows: rows (0,1,2,3) -> (0,2,1,3) per head, as convert_hf_to_gguf.py permutes."""
    w = np.arange(8, dtype=np.float32).reshape(8, 1)
    assert permute_rotary(w, 2).reshape(-1).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_models_it_cannot_write_are_refused_with_a_reason(smollm2_dir, tmp_path):
    cfg = load_config(REPO / "configs" / "cpu.yaml")
    with pytest.raises(ModelPrepError, match="dummy"):
        prepare_gguf(cfg.model_copy(update={"weights": "dummy"}), "smollm2-135m", smollm2_dir, tmp_path / "x.gguf")
    hub = cfg.model_copy(update={"models": {"smollm2-135m": cfg.models["smollm2-135m"].model_copy(update={"source": "hub"})}})
    with pytest.raises(ModelPrepError, match="convert_hf_to_gguf.py"):
        prepare_gguf(hub, "smollm2-135m", smollm2_dir, tmp_path / "x.gguf")
    with pytest.raises(ModelPrepError, match="unknown model"):
        prepare_gguf(cfg, "nope", smollm2_dir, tmp_path / "x.gguf")
    assert not list(tmp_path.iterdir())
