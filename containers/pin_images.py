"""Read and rewrite containers/images.yaml, keeping its comments (standard library only).

images.yaml maps {profile: {arm: image}}. An image is written one of two ways:

    REGISTRY/servingbench-NAME:TAG                          built, not yet pinned
    REGISTRY/servingbench-NAME@sha256:DIGEST  # tag: TAG    pinned after a push

Apptainer (and every containers/image tool) refuses ``name:tag@sha256:...``, so a pinned entry
carries its digest alone and keeps the tag in a comment. NAME is the folder of the image's
definition and TAG starts with its profile: ``servingbench-vllm:seed-...`` is built from
``containers/vllm/seed.Dockerfile``.

    python containers/pin_images.py list [--profile P]     one line per image: REF DOCKERFILE USERS
    python containers/pin_images.py pin REF sha256:DIGEST  pin every entry built as REF
    python containers/pin_images.py registry REGISTRY      move every entry to REGISTRY (unpinned)
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images.yaml"
PLACEHOLDER_REGISTRY = "registry.invalid"

_PROFILE = re.compile(r"^([A-Za-z0-9_-]+):\s*(#.*)?$")
_ENTRY = re.compile(r"^(?P<indent>\s+)(?P<arm>[A-Za-z0-9_.-]+):\s*(?P<value>[^\s#]+)\s*(?:#\s*(?P<comment>.*))?$")
_TAG_NOTE = re.compile(r"^tag:\s*(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})\s*;?\s*(?P<rest>.*)$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_NAME = re.compile(r"^(?P<repo>(?:[^/@:]+(?::\d+)?/)*servingbench-(?P<name>[a-z0-9-]+))"
                   r"(?:(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))|(?:@(?P<digest>sha256:[0-9a-f]{64})))$")


@dataclass
class Entry:
    profile: str
    arm: str
    value: str  # what config.image_for returns
    comment: str  # the comment after it, tag note included
    lineno: int

    def _parts(self) -> re.Match[str]:
        m = _NAME.match(self.value)
        if not m:
            raise ValueError(f"images.yaml:{self.lineno}: {self.profile}.{self.arm}: {self.value!r} is not "
                             "REGISTRY/servingbench-NAME:TAG or REGISTRY/servingbench-NAME@sha256:DIGEST")
        return m

    @property
    def repo(self) -> str:
        return self._parts()["repo"]

    @property
    def name(self) -> str:
        return self._parts()["name"]

    @property
    def digest(self) -> str | None:
        return self._parts()["digest"]

    @property
    def tag(self) -> str:
        m = self._parts()
        if m["tag"]:
            return m["tag"]
        note = _TAG_NOTE.match(self.comment or "")
        if not note:
            raise ValueError(f"images.yaml:{self.lineno}: {self.profile}.{self.arm}: a pinned image needs "
                             "its tag in a comment: '# tag: TAG'")
        return note["tag"]

    @property
    def tagged(self) -> str:
        """The reference it was built and pushed as (REPO:TAG)."""
        return f"{self.repo}:{self.tag}"

    @property
    def dockerfile(self) -> Path:
        profile = self.tag.split("-", 1)[0]
        return HERE / self.name / f"{profile}.Dockerfile"


def read(path: Path = IMAGES) -> list[Entry]:
    entries, profile = [], None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if m := _PROFILE.match(line):
            profile = m[1]
        elif (m := _ENTRY.match(line)) and profile:
            entries.append(Entry(profile, m["arm"], m["value"], (m["comment"] or "").strip(), n))
        else:
            raise ValueError(f"{path.name}:{n}: cannot read {line!r}")
    return entries


def _rewrite(path: Path, change: dict[int, str]) -> None:
    lines = path.read_text().splitlines(keepends=True)
    for lineno, text in change.items():
        lines[lineno - 1] = text + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(lines))
    tmp.replace(path)


def _line(entry: Entry, value: str, comment: str) -> str:
    indent = "  "
    return f"{indent}{entry.arm}: {value}" + (f"  # {comment}" if comment else "")


def _rest_of_comment(entry: Entry) -> str:
    note = _TAG_NOTE.match(entry.comment or "")
    return note["rest"] if note else entry.comment


def pin(tagged: str, digest: str, path: Path = IMAGES) -> int:
    """Pin every entry built as ``tagged`` (REPO:TAG) to ``digest``; returns how many."""
    if not _DIGEST.match(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    change = {}
    for e in read(path):
        if e.tagged == tagged:
            rest = _rest_of_comment(e)
            change[e.lineno] = _line(e, f"{e.repo}@{digest}", f"tag: {e.tag}" + (f"; {rest}" if rest else ""))
    if not change:
        raise ValueError(f"no entry of {path.name} is built as {tagged}")
    _rewrite(path, change)
    return len(change)


def move(registry: str, path: Path = IMAGES) -> int:
    """Point every entry at ``registry`` (digests dropped: they belong to the old one)."""
    registry = registry.rstrip("/")
    change = {}
    for e in read(path):
        rest = _rest_of_comment(e)
        change[e.lineno] = _line(e, f"{registry}/servingbench-{e.name}:{e.tag}", rest)
    _rewrite(path, change)
    return len(change)


def images(profile: str | None = None, path: Path = IMAGES) -> dict[str, tuple[Path, list[str]]]:
    """{REPO:TAG: (Dockerfile, ["profile.arm", ...])}, one row per image to build."""
    out: dict[str, tuple[Path, list[str]]] = {}
    for e in read(path):
        if profile and e.profile != profile:
            continue
        out.setdefault(e.tagged, (e.dockerfile, []))[1].append(f"{e.profile}.{e.arm}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", type=Path, default=IMAGES)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list")
    p.add_argument("--profile")
    p = sub.add_parser("pin")
    p.add_argument("ref")
    p.add_argument("digest")
    p = sub.add_parser("registry")
    p.add_argument("registry")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "list":
            for ref, (dockerfile, users) in images(a.profile, a.file).items():
                print(ref, dockerfile.relative_to(HERE.parent), ",".join(users))
        elif a.cmd == "pin":
            print(f"pinned {pin(a.ref, a.digest, a.file)} entr(y/ies) of {a.file.name} to {a.digest}")
        else:
            print(f"moved {move(a.registry, a.file)} entr(y/ies) of {a.file.name} to {a.registry}")
    except ValueError as exc:
        print(f"pin_images: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
