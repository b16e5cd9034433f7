"""The package's folders are its import rule. ``servingbench/runtime/`` is what runs inside a
framework container: every module there imports only the standard library, httpx, psutil and
pynvml, nothing from ``servingbench/host/``, and runs on Python 3.10 (seed-era images).
``servingbench/host/`` is the rest; ``servingbench/cli.py``, the one command of both, imports the
host only inside its commands. Checked statically on every file of the folder and, where a
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
ALLOWED_THIRD_PARTY = {"httpx", "psutil", "pynvml"}
# Programs a framework's container runs as its server process (torch, transformers): adapters
# start them with `python -m`, nothing in the runtime imports them (checked below).
SERVERS = "servingbench.runtime.frameworks.servers"


def module_name(path: Path, pkg: Path = PKG) -> str:
    parts = path.relative_to(pkg.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_files(pkg: Path = PKG) -> dict[str, Path]:
    """Every module under runtime/ but the framework server programs."""
    files = {module_name(p, pkg): p for p in sorted((pkg / "runtime").rglob("*.py"))}
    return {m: p for m, p in files.items() if not (m == SERVERS or m.startswith(SERVERS + "."))}


def imports(path: Path, pkg: Path = PKG, top_level_only: bool = False) -> set[str]:
    """The modules ``path`` imports, relative imports resolved; ``from a import b`` counts as
    ``a.b`` where b is a module of the package. Imports inside functions count too unless
    ``top_level_only`` (a runtime function that imports pandas fails in a container just the same)."""
    package = module_name(path, pkg) if path.name == "__init__.py" else module_name(path, pkg).rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                is_module = pkg.parent.joinpath(*sub.split(".")).with_suffix(".py").is_file() \
                    or pkg.parent.joinpath(*sub.split(".")).is_dir()
                found.add(sub if is_module else base)
    return found


def violations(path: Path, pkg: Path = PKG) -> list[str]:
    """What ``path``, a runtime module, imports that the container does not have."""
    bad = []
    for mod in sorted(imports(path, pkg)):
        top = mod.split(".")[0]
        if top == pkg.name:
            if mod != pkg.name and not mod.startswith(f"{pkg.name}.runtime"):
                bad.append(f"{mod} (outside runtime/)")
            elif mod == SERVERS or mod.startswith(SERVERS + "."):
                bad.append(f"{mod} (a framework's server program: start it, do not import it)")
        elif top not in sys.stdlib_module_names and top not in ALLOWED_THIRD_PARTY:
            bad.append(f"{mod} (not in the container runtime)")
    return bad


RUNTIME = runtime_files()


@pytest.mark.parametrize("name", sorted(RUNTIME))
def test_runtime_module_imports_only_the_runtime(name):
    bad = violations(RUNTIME[name])
    assert not bad, f"{name} imports {bad}: a runtime module imports the standard library, " \
                    f"{sorted(ALLOWED_THIRD_PARTY)} and servingbench.runtime only"


def test_the_folder_rule_sees_what_it_forbids(tmp_path):
    """The check itself: a pandas import, a host import (lazy, relative) and a server program
    import are each caught; the standard library, httpx and runtime imports are not."""
    pkg = tmp_path / "servingbench"
    for folder in ("runtime/frameworks/servers", "host"):
        (pkg / folder).mkdir(parents=True)
    for init in ("", "runtime", "runtime/frameworks", "runtime/frameworks/servers", "host"):
        (pkg / init / "__init__.py").write_text("")
    (pkg / "host" / "config.py").write_text("")
    (pkg / "runtime" / "frameworks" / "servers" / "naive.py").write_text("import torch\n")
    (pkg / "runtime" / "spec.py").write_text("import json, httpx\n")
    ok = pkg / "runtime" / "ok.py"
    ok.write_text("import servingbench\nfrom servingbench.runtime import spec\nfrom . import spec\n")
    bad = pkg / "runtime" / "bad.py"
    bad.write_text("import pandas\ndef f():\n    from ..host import config\n"
                   "from servingbench.runtime.frameworks.servers import naive\n")
    assert violations(ok, pkg) == []
    assert [v.split(" ")[0] for v in violations(bad, pkg)] == [
        "pandas", "servingbench.host.config", "servingbench.runtime.frameworks.servers.naive"]
    assert set(runtime_files(pkg)) == {"servingbench.runtime", "servingbench.runtime.frameworks",
                                       "servingbench.runtime.spec", "servingbench.runtime.ok",
                                       "servingbench.runtime.bad"}


def test_the_cli_imports_the_host_only_inside_its_commands():
    """`servingbench run-cell` runs in a container: cli.py's module-level imports are runtime ones."""
    top = imports(PKG / "cli.py", top_level_only=True)
    outside = sorted(m for m in top if m.startswith("servingbench.") and not m.startswith("servingbench.runtime"))
    assert not outside, f"cli.py imports {outside} at module level: import them inside the command"
    third = sorted(m for m in top if m.split(".")[0] not in sys.stdlib_module_names | ALLOWED_THIRD_PARTY
                   and m.split(".")[0] != "servingbench")
    assert not third, f"cli.py imports {third} at module level"


def test_the_package_root_holds_only_the_two_folders_the_command_and_data():
    """A new module goes to runtime/ or host/, so which side it is on shows in its path."""
    code = sorted(p.name for p in PKG.iterdir() if p.suffix == ".py" or (p.is_dir() and p.name != "__pycache__"))
    assert code == ["__init__.py", "cli.py", "data", "host", "runtime", "schemas"], code


BLOCKER = r"""
import sys, importlib.abc
ALLOWED = {"httpx", "psutil", "pynvml", "servingbench"}
# httpx's own dependencies are part of "httpx" as installed in an image.
ALLOWED |= {"httpcore", "anyio", "sniffio", "h11", "certifi", "idna", "h2", "hpack", "hyperframe",
            "exceptiongroup", "typing_extensions", "socksio", "brotli", "zstandard"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        if name.startswith("servingbench.host"):
            raise ImportError(f"blocked host import: {name}")
        if top in sys.stdlib_module_names or top in ALLOWED:
            return None
        raise ImportError(f"blocked non-runtime import: {name}")
sys.meta_path.insert(0, Block())
import importlib
for m in sys.argv[1:]:
    importlib.import_module(m)
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
    res = subprocess.run([str(venv / "bin/python"), "-c", BLOCKER, *sorted(RUNTIME), "servingbench.cli"], cwd=ROOT,
                         capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]
