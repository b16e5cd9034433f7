"""A per-machine cache of prepared model folders and GGUF files (host side).

Converting SmolLM2's GGUF into a bf16 folder costs about 30 CPU-seconds (torch, Transformers,
dequantising, saving), writing the llamacpp arm's bf16 GGUF from it about 7, and both give
byte-identical files every time (their checksums are pinned).
So a second clone, a rerun from scratch or the test suite on the same machine copies the result
instead: ``${SERVINGBENCH_CACHE:-${XDG_CACHE_HOME:-~/.cache}/servingbench}/KIND/KEY/``, where
KEY hashes everything that defines the build (the caller says what), as the llama-server build
cache does (containers/llamacpp/build-llama-server.sh). A cached copy is checked as a fresh
build is (the caller's ``check``); one that fails is dropped and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

CACHE_ENV = "SERVINGBENCH_CACHE"
INFO = ".servingbench-cache.json"  # in each entry: what build() returned


def cache_root() -> Path:
    """The servingbench cache folder of this user (shared with the llama-server build cache)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "servingbench"


def cache_key(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:16]


def _copy_into(src: Path, dst: Path, skip: str | None = None) -> None:
    for item in src.iterdir():
        if item.name == skip:
            continue
        if item.is_dir():
            shutil.copytree(item, dst / item.name, dirs_exist_ok=True)
        else:
            shutil.copyfile(item, dst / item.name)


def _clear(folder: Path) -> None:
    for item in folder.iterdir():
        shutil.rmtree(item) if item.is_dir() else item.unlink()


def cached_build(kind: str, key_parts: list[str], build: Callable[[Path], dict[str, Any]], out: Path,
                 check: Callable[[Path], bool] = lambda _: True) -> dict[str, Any]:
    """Fill the empty folder ``out`` with what ``build(out)`` writes and return what it returns,
    copied from the cache when an entry with the same key passes ``check``."""
    entry = cache_root() / kind / cache_key(key_parts)
    if (entry / INFO).is_file():
        try:
            info = json.loads((entry / INFO).read_text(encoding="utf-8"))
            _copy_into(entry, out, skip=INFO)
            if check(out):
                return info
        except (OSError, ValueError):
            pass
        _clear(out)  # a damaged entry: build afresh, and replace it below
        shutil.rmtree(entry, ignore_errors=True)
    info = build(out)
    tmp = entry.with_name(f".{entry.name}.tmp-{os.getpid()}")
    try:  # a cache that cannot be written costs the next run a build, nothing else
        entry.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(out, tmp)
        (tmp / INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return info
