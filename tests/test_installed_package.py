"""An installed servingbench (a built wheel, not an editable install or the checkout) aggregates a
results folder and renders its report from a folder outside the repository: the schemas, the
container image table, the prompt data and the report templates travel inside the package.

The wheel goes into a fresh venv (no system site-packages); its third-party dependencies
(pandas, pydantic, Jinja2, ...) come from this interpreter's site-packages through a ``.pth``
line, which adds the folder to the path without running its own ``.pth`` files (so this
environment's editable servingbench stays out).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "h200-dummy"
ANYWHERE = shutil.ignore_patterns(".git", ".snakemake", "__pycache__", "*.egg-info")
TOP_LEVEL = {"results", "report", "examples", "models", ".venv", "build", "dist"}  # a run's outputs


def _skip(folder: str, names: list[str]) -> set[str]:
    return set(ANYWHERE(folder, names)) | (TOP_LEVEL & set(names) if Path(folder) == REPO else set())


def _run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding servingbench installed from a wheel of a copy of the checkout."""
    work = tmp_path_factory.mktemp("installed")
    src = work / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=_skip)
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                  "-w", str(work / "dist"), str(src)], work)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((work / "dist").glob("servingbench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("servingbench/schemas/cell-v1.schema.json", "servingbench/schemas/failure-v1.schema.json",
                    "servingbench/data/images.yaml", "servingbench/host/report/templates/report.css"):
        assert shipped in names, f"{shipped} not in the wheel"
    venv = work / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], work)
    assert made.returncode == 0, made.stderr
    inst = _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                 "--no-deps", str(wheel)], work)
    assert inst.returncode == 0, inst.stderr[-3000:]
    venv_site = next(venv.glob("lib/python3*/site-packages"))
    (venv_site / "host-deps.pth").write_text("".join(p + "\n" for p in site.getsitepackages()))
    return venv


def test_an_installed_servingbench_aggregates_and_reports_outside_the_checkout(installed: Path, tmp_path: Path):
    run_dir = tmp_path / "run"  # outside the repository: nothing of the checkout is reachable from here
    shutil.copytree(EXAMPLE, run_dir, ignore=shutil.ignore_patterns("summary.csv", "summary.parquet", "report.html"))
    where = _run([str(installed / "bin" / "python"), "-c", "import servingbench; print(servingbench.__file__)"],
                 run_dir)
    assert where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(installed), where.stdout + where.stderr
    exe = str(installed / "bin" / "servingbench")

    agg = _run([exe, "aggregate", "--config", "config.yaml", "--results", "results"], run_dir)
    assert agg.returncode == 0, agg.stderr[-3000:]
    rep = _run([exe, "report", "--config", "config.yaml", "--results", "results", "--out", "out/index.html"], run_dir)
    assert rep.returncode == 0, rep.stderr[-3000:]

    summary, html = _checkout_run(tmp_path / "checkout")
    assert summary.count("\n") > 1000 and "<h2>Provenance</h2>" in html
    assert (run_dir / "results" / "summary.csv").read_text() == summary
    assert (run_dir / "out" / "index.html").read_text() == html  # the report is deterministic


def _checkout_run(where: Path) -> tuple[str, str]:
    """The summary and report the checkout itself (PYTHONPATH=REPO) makes of the same results."""
    shutil.copytree(EXAMPLE, where, ignore=shutil.ignore_patterns("summary.csv", "summary.parquet", "report.html"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for cmd in (["aggregate"], ["report", "--out", "out/index.html"]):
        res = subprocess.run([sys.executable, "-m", "servingbench.cli", *cmd, "--config", "config.yaml",
                              "--results", "results"], cwd=where, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
    return (where / "results" / "summary.csv").read_text(), (where / "out" / "index.html").read_text()
