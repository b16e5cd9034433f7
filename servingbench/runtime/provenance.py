"""Where a result came from: versions, host, device, commit. Runtime module."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import servingbench
from servingbench.runtime.frameworks import adapters
from servingbench.runtime.frameworks.base import Adapter

# Distribution names whose versions matter to any figure, besides every framework's own
# (``Adapter.distributions`` and ``kernel_distributions``); absent ones are simply not listed.
COMMON_DISTS = ("torch", "transformers", "httpx", "psutil", "nvidia-ml-py", "tokenizers", "accelerate")
# The marker servingbench.host.models writes into every prepared model folder.
MODEL_MARKER = "servingbench-model.json"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def tracked_dists() -> tuple[str, ...]:
    """The distributions a result lists the versions of: the common ones and every framework's."""
    names = list(COMMON_DISTS)
    for adapter in adapters().values():
        names += [d for d in (*adapter.distributions, *adapter.kernel_distributions) if d not in names]
    return tuple(names)


def versions(search_path: list[str] | None = None) -> dict[str, str]:
    """Versions of the distributions that matter, as found on ``search_path`` (default sys.path)."""
    out = {"python": platform.python_version()}
    for dist in tracked_dists():
        found = next(iter(md.distributions(name=dist, path=search_path or sys.path)), None)
        if found is not None:
            out[dist] = found.version
    return out


def server_search_path(server_env: Mapping[str, str]) -> list[str] | None:
    """The import path a server started with ``server_env`` sees, when that environment sets its
    own PYTHONPATH (an arm whose packages live apart, e.g. SGLang's); None when it does not.
    Its PYTHONPATH replaces ours: our own PYTHONPATH entries are dropped from sys.path."""
    if "PYTHONPATH" not in server_env:
        return None
    ours = {os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    theirs = [p for p in server_env["PYTHONPATH"].split(os.pathsep) if p]
    return theirs + [p for p in sys.path if p and os.path.abspath(p) not in ours]


def kernel_versions(adapter: Adapter, found: dict[str, str]) -> str | None:
    """``name version`` of each kernel package of the framework that is installed."""
    kernels = [f"{d} {found[d]}" for d in adapter.kernel_distributions if d in found]
    return ", ".join(kernels) or None


def framework_version(adapter: Adapter, found: dict[str, str]) -> str | None:
    """The framework's version: its first installed distribution, else what the adapter says."""
    for dist in adapter.distributions:
        if dist in found:
            return found[dist]
    return adapter.framework_version()


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


def collect(adapter: Adapter, gpu_info: dict[str, Any] | None, config_hash: str, image: str,
            profile: str, server_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Provenance of a result of ``adapter``'s framework; versions as the server's own import
    path sees them."""
    found = versions(server_search_path(server_env or {}))
    gpu_info = gpu_info or {}
    return {
        "servingbench_version": servingbench.__version__,
        "framework_version": framework_version(adapter, found),
        "framework_kernels": kernel_versions(adapter, found),
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
