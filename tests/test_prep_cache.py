"""servingbench.host.prep_cache: a prepared model folder is built once per machine, then copied."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from servingbench.host import models, prep_cache
from servingbench.host.config import load_config
from servingbench.host.models import SMOLLM2_SHA256, SMOLLM2_WEIGHTS, prepare_model, read_marker, sha256_file

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(prep_cache.CACHE_ENV, str(root))
    return root


def _builder(calls: list[int], text: str):
    def build(out: Path) -> dict:
        calls.append(1)
        (out / "w.bin").write_text(text)
        (out / "sub").mkdir()
        (out / "sub" / "t.json").write_text("{}")
        return {"built": text}
    return build


def _fresh(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    return d


def test_second_build_is_a_copy(cache, tmp_path):
    calls: list[int] = []
    first = prep_cache.cached_build("k", ["a"], _builder(calls, "x"), _fresh(tmp_path, "one"))
    second = prep_cache.cached_build("k", ["a"], _builder(calls, "x"), _fresh(tmp_path, "two"))
    assert calls == [1] and first == second == {"built": "x"}
    assert (tmp_path / "two" / "w.bin").read_text() == "x" and (tmp_path / "two" / "sub" / "t.json").exists()
    assert not (tmp_path / "two" / prep_cache.INFO).exists()  # the cache's bookkeeping stays in the cache
    prep_cache.cached_build("k", ["b"], _builder(calls, "y"), _fresh(tmp_path, "three"))  # another key builds
    assert calls == [1, 1] and (tmp_path / "three" / "w.bin").read_text() == "y"


def test_an_entry_that_fails_its_check_is_rebuilt_and_replaced(cache, tmp_path):
    calls: list[int] = []
    good = lambda d: (d / "w.bin").read_text() == "x"  # noqa: E731
    prep_cache.cached_build("k", ["a"], _builder(calls, "x"), _fresh(tmp_path, "one"), check=good)
    entry = cache / "k" / prep_cache.cache_key(["a"])
    (entry / "w.bin").write_text("damaged")
    info = prep_cache.cached_build("k", ["a"], _builder(calls, "x"), _fresh(tmp_path, "two"), check=good)
    assert calls == [1, 1] and info == {"built": "x"}
    assert (tmp_path / "two" / "w.bin").read_text() == "x" and (entry / "w.bin").read_text() == "x"


def test_an_unwritable_cache_still_builds(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(prep_cache.CACHE_ENV, str(blocker / "cache"))  # under a file: cannot be created
    calls: list[int] = []
    info = prep_cache.cached_build("k", ["a"], _builder(calls, "x"), _fresh(tmp_path, "one"))
    assert calls == [1] and info == {"built": "x"}


def test_prepare_model_copies_smollm2_from_the_cache(cache, smollm2_dir, tmp_path, monkeypatch):
    """An entry under the key prepare_model computes is used, the weights checksum-checked; the
    conversion itself (_build_smollm2) is not called."""
    cfg = load_config(REPO / "configs" / "cpu.yaml")
    seen: dict = {}

    def fake_cached_build(kind, key_parts, build, out, check):
        seen.update(kind=kind, key=key_parts)
        raise RuntimeError("stop")

    monkeypatch.setattr(models, "cached_build", fake_cached_build)
    with pytest.raises(RuntimeError):
        prepare_model(cfg, "smollm2-135m", tmp_path / "probe")
    monkeypatch.undo()
    monkeypatch.setenv(prep_cache.CACHE_ENV, str(cache))
    entry = cache / seen["kind"] / prep_cache.cache_key(seen["key"])
    shutil.copytree(smollm2_dir, entry, ignore=shutil.ignore_patterns(models.MARKER))
    marker = read_marker(smollm2_dir)
    info = {k: marker[k] for k in ("source", "weights", "tokenizer", "sha256", "gguf")}
    (entry / prep_cache.INFO).write_text(json.dumps(info))
    monkeypatch.setattr(models, "_build_smollm2", lambda out: pytest.fail("converted instead of copied"))
    out = prepare_model(cfg, "smollm2-135m", tmp_path / "smollm2-135m")
    assert sha256_file(out / SMOLLM2_WEIGHTS) == SMOLLM2_SHA256
    assert read_marker(out) == marker


def test_prepare_gguf_writes_once_then_copies(cache, smollm2_dir, tmp_path, monkeypatch):
    """The bf16 GGUF is written once per machine; a second prepare-gguf copies it (no write_gguf),
    with the same pinned checksum and its own sidecar."""
    from servingbench.host import gguf_export

    cfg = load_config(REPO / "configs" / "cpu.yaml")
    first = gguf_export.prepare_gguf(cfg, "smollm2-135m", smollm2_dir, tmp_path / "a" / "m.gguf")
    monkeypatch.setattr(gguf_export, "write_gguf", lambda *a: pytest.fail("written instead of copied"))
    second = gguf_export.prepare_gguf(cfg, "smollm2-135m", smollm2_dir, tmp_path / "b" / "m.gguf")
    want = gguf_export.SMOLLM2_GGUF_SHA256["bfloat16"]
    assert sha256_file(first) == sha256_file(second) == want
    assert json.loads((tmp_path / "b" / "m.gguf.json").read_text())["sha256"] == {"m.gguf": want}
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["m.gguf", "m.gguf.json"]  # no leftovers


def test_prepare_gguf_hashes_a_cached_copy_once_and_still_rejects_a_damaged_one(cache, smollm2_dir, tmp_path,
                                                                                 monkeypatch):
    """On a cache hit the ~270 MB GGUF is read once: the cache's check and the pinned-checksum check
    share the digest. A damaged entry still fails that check and is rewritten (then hashed anew)."""
    from servingbench.host import gguf_export

    cfg = load_config(REPO / "configs" / "cpu.yaml")
    want = gguf_export.SMOLLM2_GGUF_SHA256["bfloat16"]
    gguf_export.prepare_gguf(cfg, "smollm2-135m", smollm2_dir, tmp_path / "a" / "m.gguf")
    hashed: list[str] = []

    def counting_sha256(path):
        hashed.append(Path(path).name)
        return sha256_file(path)

    monkeypatch.setattr(gguf_export, "sha256_file", counting_sha256)
    out = gguf_export.prepare_gguf(cfg, "smollm2-135m", smollm2_dir, tmp_path / "b" / "m.gguf")
    assert hashed == ["model.gguf"] and sha256_file(out) == want
    (entry,) = (cache / "gguf").iterdir()
    with open(entry / "model.gguf", "r+b") as fh:  # one byte of the cached copy changed
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 1]))
    hashed.clear()
    writes: list[int] = []
    real_write = gguf_export.write_gguf
    monkeypatch.setattr(gguf_export, "write_gguf", lambda *a: (writes.append(1), real_write(*a))[1])
    out = gguf_export.prepare_gguf(cfg, "smollm2-135m", smollm2_dir, tmp_path / "c" / "m.gguf")
    assert writes == [1] and len(hashed) == 2 and sha256_file(out) == want
    assert sha256_file(entry / "model.gguf") == want  # the entry was replaced by the good file
    assert json.loads((tmp_path / "c" / "m.gguf.json").read_text())["sha256"] == {"m.gguf": want}
