"""The in-container runtime imports only the standard library, httpx, psutil and pynvml, and
runs on Python 3.10 (seed-era images): checked statically on every module and, where a
Python 3.10 is on the machine, by importing the runtime there with everything else blocked."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "servingbench"
RUNTIME = ["runtime.spec", "runtime.sse", "runtime.client", "runtime.http1", "runtime.lifecycle", "runtime.monitor", "runtime.metrics", "runtime.cell", "runtime.pool", "runtime.providers", "runtime.provenance",
           "runtime.arrivals", "runtime.conversations", "runtime.prefix_cache", "runtime.workload_metrics",
           "runtime.results", "runtime.server_settings", "cli", "runtime.slo", "runtime.capacity", "runtime.records", "runtime.typed_json", "host.schema_gen", "runtime.frameworks", "runtime.frameworks.base",
           "runtime.frameworks.openai_api", "runtime.frameworks.vllm",
           "runtime.frameworks.transformers_serve", "runtime.frameworks.transformers_naive", "runtime.frameworks.tgi",
           "runtime.frameworks.tgi_openai", "runtime.frameworks.sglang", "runtime.prometheus", "runtime.malformed", "runtime.redaction", "runtime.errors",
           "runtime.frameworks.llamacpp"]
ALLOWED_THIRD_PARTY = {"httpx", "psutil", "pynvml"}


def _module_file(name: str) -> Path:
    p = PKG.joinpath(*name.split("."))
    return p / "__init__.py" if p.is_dir() else p.with_suffix(".py")


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported at module level or inside functions (all of them count: a runtime
    function that imports pandas would fail in a container just the same)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


# Host-only commands of the CLI import host modules lazily, inside those commands.
CLI_HOST_IMPORTS = {"servingbench"}


@pytest.mark.parametrize("name", RUNTIME)
def test_runtime_module_imports_only_allowed_packages(name):
    imports = _top_level_imports(_module_file(name))
    bad = {m for m in imports if m not in sys.stdlib_module_names and m not in ALLOWED_THIRD_PARTY
           and m != "servingbench"}
    assert not bad, f"servingbench.{name} imports {sorted(bad)}: not allowed in the container runtime"


def test_runtime_imports_no_host_module():
    """Runtime modules may import servingbench modules only from the runtime set (the CLI's
    host commands import lazily, and the test below proves the runtime still imports)."""
    host = {"config", "aggregate", "report", "workloads", "models", "compare", "publish", "derived", "intervals"}
    for name in RUNTIME:
        if name == "cli":
            continue
        tree = ast.parse(_module_file(name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("servingbench."):
                assert node.module.split(".")[1] not in host, f"{name} imports {node.module}"


BLOCKER = r"""
import sys, importlib.abc
ALLOWED = {"httpx", "psutil", "pynvml", "servingbench"}
# httpx's own dependencies are part of "httpx" as installed in an image.
ALLOWED |= {"httpcore", "anyio", "sniffio", "h11", "certifi", "idna", "h2", "hpack", "hyperframe",
            "exceptiongroup", "typing_extensions", "socksio", "brotli", "zstandard"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top in ALLOWED:
            return None
        raise ImportError(f"blocked non-runtime import: {name}")
sys.meta_path.insert(0, Block())
import importlib
for m in sys.argv[1:]:
    importlib.import_module("servingbench." + m)
from servingbench.cli import main
assert sys.version_info[:2] == (3, 10), sys.version
print("ok")
"""


def _python310() -> str | None:
    candidates = sorted(Path.home().glob(".pyenv/versions/3.10.*/bin/python3.10")) + [shutil.which("python3.10")]
    for cand in candidates:
        if cand and subprocess.run([str(cand), "-c", "pass"], capture_output=True).returncode == 0:
            return str(cand)
    return None


def test_runtime_imports_on_python_310_with_everything_else_blocked(tmp_path):
    py310 = _python310()
    if py310 is None:
        pytest.skip("no Python 3.10 on this machine")
    venv = tmp_path / "py310"
    subprocess.run([py310, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin/pip"), "install", "-q", "httpx", "psutil", "nvidia-ml-py"],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        pytest.skip(f"cannot install the runtime deps for 3.10: {pip.stderr[-300:]}")
    res = subprocess.run([str(venv / "bin/python"), "-c", BLOCKER, *RUNTIME], cwd=ROOT,
                         capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]
