"""Package a finished run for publication: the report, the tidy table, the config and a MANIFEST.

The folder (or ``.tar.gz``) holds ``index.html``, ``summary.csv``, ``summary.parquet``, the
config file under its own name, and ``MANIFEST``: one ``<sha256>  <name>`` line per file, the
format ``sha256sum -c MANIFEST`` checks. The archive is reproducible: fixed order, times and
owners, so the same inputs give the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

MANIFEST = "MANIFEST"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def collect(results_dir: str | Path, report_html: str | Path, config_path: str | Path) -> dict[str, bytes]:
    """name -> bytes of every file to publish, MANIFEST last; a missing input is a clear error."""
    results_dir = Path(results_dir)
    sources = {"index.html": Path(report_html), "summary.csv": results_dir / "summary.csv",
               "summary.parquet": results_dir / "summary.parquet"}
    config_path = Path(config_path)
    if config_path.name in sources or config_path.name == MANIFEST:
        raise ValueError(f"{config_path}: a config named {config_path.name!r} would clash with a published file")
    sources[config_path.name] = config_path
    files: dict[str, bytes] = {}
    for name, path in sources.items():
        if not path.is_file():
            hint = " (run `servingbench aggregate` first)" if name.startswith("summary") else ""
            raise FileNotFoundError(f"{path}: not found, cannot publish{hint}")
        files[name] = path.read_bytes()
    files[MANIFEST] = "".join(f"{_sha256(data)}  {name}\n" for name, data in sorted(files.items())).encode()
    return files


def _write_tar(files: dict[str, bytes], out: Path, top: str) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"{top}/{name}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.getvalue())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_dir(files: dict[str, bytes], out: Path, overwrite: bool) -> None:
    # Build beside the target, then rename: a reader never sees a half-written folder.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
            os.chmod(tmp / name, 0o644)
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish(results_dir: str | Path, report_html: str | Path, config_path: str | Path, out: str | Path,
            overwrite: bool = False) -> Path:
    """Write the publishable folder, or a ``.tar.gz`` / ``.tgz`` when ``out`` ends so. Returns ``out``."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass overwrite=True to replace it)")
    files = collect(results_dir, report_html, config_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.name.endswith((".tar.gz", ".tgz")):
        top = out.name.removesuffix(".tar.gz").removesuffix(".tgz")
        _write_tar(files, out, top)
    else:
        _write_dir(files, out, overwrite)
    return out


def verify(folder: str | Path) -> list[str]:
    """Names whose sha256 does not match the MANIFEST of a published folder ([] when all match)."""
    folder = Path(folder)
    bad = []
    for line in (folder / MANIFEST).read_text().splitlines():
        digest, name = line.split("  ", 1)
        path = folder / name
        if not path.is_file() or _sha256(path.read_bytes()) != digest:
            bad.append(name)
    return bad
