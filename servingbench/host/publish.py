"""Package a finished run for publication: the report, the tidy table, the config and a MANIFEST.

The folder (or ``.tar.gz``) holds ``index.html``, ``summary.csv``, ``summary.parquet``, the
config file under its own name, and ``MANIFEST``: one ``<sha256>  <name>`` line per file, the
format ``sha256sum -c MANIFEST`` checks. The archive is reproducible: fixed order, times and
owners, so the same inputs give the same bytes.

Nothing that looks like a credential is published (servingbench.runtime.redaction): the config is
copied with any credential masked (a token in a comment, say), and a report or summary that
holds one is refused, since masking the generated files would hide where it came from.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path

from servingbench.runtime.errors import UserError
from servingbench.runtime.redaction import looks_like_token, redact, secret_values
from servingbench.runtime.results import atomic_dir, atomic_write_bytes, summary_path

MANIFEST = "MANIFEST"


class PublishError(UserError):
    """Inputs that cannot be published as they are; the message names the file."""


class OutputExists(PublishError, FileExistsError):
    pass


class InputMissing(PublishError, FileNotFoundError):
    pass


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def collect(results_dir: str | Path, report_html: str | Path, config_path: str | Path) -> dict[str, bytes]:
    """name -> bytes of every file to publish, MANIFEST last; a missing input is a clear error."""
    results_dir = Path(results_dir)
    sources = {"index.html": Path(report_html), "summary.csv": summary_path(results_dir),
               "summary.parquet": summary_path(results_dir, "parquet")}
    config_path = Path(config_path)
    if config_path.name in sources or config_path.name == MANIFEST:
        raise PublishError(f"{config_path}: a config named {config_path.name!r} would clash with a published file")
    sources[config_path.name] = config_path
    files: dict[str, bytes] = {}
    for name, path in sources.items():
        if not path.is_file():
            hint = {"index.html": " (run `servingbench report` first)"}.get(
                name, " (run `servingbench aggregate` first)" if name.startswith("summary") else "")
            raise InputMissing(f"{path}: not found, cannot publish{hint}")
        files[name] = path.read_bytes()
    files[config_path.name] = _masked_config(config_path, files[config_path.name])
    values = secret_values()
    for name in ("index.html", "summary.csv"):
        text = files[name].decode("utf-8", "replace")
        if looks_like_token(text) or any(v in text for v in values):
            raise PublishError(f"{sources[name]}: holds something that looks like a credential; not published. "
                               "Find and remove it where it came from, then rerun aggregate and report")
    files[MANIFEST] = "".join(f"{_sha256(data)}  {name}\n" for name, data in sorted(files.items())).encode()
    return files


def _masked_config(path: Path, data: bytes) -> bytes:
    """The config as published: every credential in it masked (it was refused as a config
    unless it sits in a comment or a key the kit does not read)."""
    text = data.decode("utf-8", "surrogateescape")
    masked = redact(text)
    if masked != text:
        print(f"servingbench publish: {path}: credentials masked in the published copy; the file itself "
              "still holds them (remove them, and revoke them if they were ever shared)", file=sys.stderr)
    return masked.encode("utf-8", "surrogateescape")


def _write_tar(files: dict[str, bytes], out: Path, top: str) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"{top}/{name}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    atomic_write_bytes(out, buf.getvalue())


def _write_dir(files: dict[str, bytes], out: Path) -> None:
    with atomic_dir(out) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
            os.chmod(tmp / name, 0o644)


def publish(results_dir: str | Path, report_html: str | Path, config_path: str | Path, out: str | Path,
            overwrite: bool = False) -> Path:
    """Write the publishable folder, or a ``.tar.gz`` / ``.tgz`` when ``out`` ends so. Returns ``out``."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExists(f"{out}: already exists; pass --overwrite (overwrite=True) to replace it")
    files = collect(results_dir, report_html, config_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.name.endswith((".tar.gz", ".tgz")):
        top = out.name.removesuffix(".tar.gz").removesuffix(".tgz")
        _write_tar(files, out, top)
    else:
        _write_dir(files, out)
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
