"""scripts/device/pack-transport.sh and receive.sh on dummy files (never the real wheels): every
folder stays under its limit, every carried file comes back byte for byte where the wheelhouses'
own install scripts look for it, with the metadata those scripts check, and the device calls are
printed. The install itself needs the GPU machine and is not run here."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / "scripts" / "device" / "pack-transport.sh"
RECEIVE = ROOT / "scripts" / "device" / "receive.sh"
MAX = 48 * 1024  # folder limit for the test (the real one is 48 MiB)


def _file(path: Path, size: int, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    path.write_bytes(data[:size])
    return hashlib.sha256(data[:size]).hexdigest()


def _house(repo: Path, dl: str, first: str, files: dict[str, int], meta: dict[str, str]) -> dict[str, str]:
    sums = {name: _file(repo / dl / name, size, i) for i, (name, size) in enumerate(files.items())}
    (repo / dl / "SHA256SUMS").write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))
    (repo / dl / "unlisted-cache-file.whl").write_bytes(b"not listed: never carried")
    for name, text in meta.items():
        (repo / first).mkdir(parents=True, exist_ok=True)
        (repo / first / name).write_text(text)
    return sums


@pytest.fixture()
def repo(tmp_path: Path) -> dict:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".git" / "info" / "exclude").write_text("/.gw*/\n/.sg*/\n")  # as make-wheelhouse.sh leaves it
    (repo / "tracked.txt").write_text("x" * 1000)
    subprocess.run(["git", "-C", str(repo), "add", "tracked.txt"], check=True)
    gw = _house(repo, ".gw-dl", ".gw1",
                {"vllm-0.20.2-cp38-abi3-manylinux_2_35_x86_64.whl": 130_000, "pydantic-2.13.4-py3-none-any.whl": 9_000,
                 "fastapi-0.136.1-py3-none-any.whl": 30_000, "uvicorn-0.46.0-py3-none-any.whl": 1_000},
                {"install-on-device.sh": "echo gw\n", "make_dummy_model.py": "print()\n"})
    sg = _house(repo, ".sg-dl", ".sg1",
                {"sglang-0.5.16-cp312-cp312-manylinux_2_34_x86_64.whl": 40_000,
                 "sglang_kernel-0.4.5.flash_ops.so.xz": 100_000, "sglang_kernel-0.4.5.rest.tar.xz": 20_000,
                 "pydantic-2.13.4-py3-none-any.whl": 9_000},
                {"install-on-device.sh": "echo sg\n"})
    (repo / ".sg-dl" / "KERNEL_WHEEL").write_text("sglang_kernel-0.4.5-cp310-abi3.whl abc\n")
    (repo / ".sg-dl" / "KERNEL_RECORD_SHA256").write_text("def\n")
    kit = {n: _file(repo / ".gwk" / n, 5_000, i + 50) for i, n in enumerate(["snakemake-9.27.1-py3-none-any.whl",
                                                                             "pyyaml-6.0-py3-none-any.whl"])}
    return {"repo": repo, "gw": gw, "sg": sg, "kit": kit}


def pack(repo: Path, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "MAX_BYTES": str(MAX), "SHARED_TOOLS": "/nonexistent", **env}
    return subprocess.run(["bash", str(PACK)], cwd=repo, env=full, capture_output=True, text=True)


def test_folders_fit_and_carry_every_file_back_byte_for_byte(repo: dict, tmp_path: Path) -> None:
    root = repo["repo"]
    res = pack(root)
    assert res.returncode == 0, res.stderr
    folders = sorted((p for p in root.glob(".t[0-9]*") if p.is_dir()), key=lambda p: int(p.name[2:]))
    assert len(folders) >= 8  # 130 kB of vLLM and 100 kB of FA3 in 48 kB folders: both were split
    for f in folders:
        size = sum(p.stat().st_size for p in f.rglob("*") if p.is_file())
        assert size <= MAX, f"{f.name}: {size} bytes"
        for house, names in (("gw", ["SHA256SUMS", "MANIFEST", "install-on-device.sh", "make_dummy_model.py"]),
                             ("sg", ["SHA256SUMS", "MANIFEST", "install-on-device.sh", "KERNEL_WHEEL",
                                     "KERNEL_RECORD_SHA256"]), ("kit", ["SHA256SUMS", "MANIFEST"])):
            for name in names:
                assert (f / house / name).is_file(), f"{f.name}/{house}/{name}"
        check = subprocess.run(["git", "check-ignore", "-q", f.name + "/"], cwd=root)
        assert check.returncode == 0, f"{f.name} is not git-ignored"
    assert not any("unlisted" in p.name for f in folders for p in f.rglob("*"))
    # The MANIFEST of each wheelhouse names, for every carried file, the folder that holds it.
    for house in ("gw", "sg", "kit"):
        for line in (folders[0] / house / "MANIFEST").read_text().splitlines():
            folder, name, size = line.split()
            assert (root / folder / house / name).stat().st_size == int(size)
    # On the device: every folder through receive.sh, then what the install scripts do first
    # (reassemble *.part-*, check every sha256 against SHA256SUMS).
    dest = tmp_path / "device"
    for f in folders:
        out = subprocess.run(["bash", str(RECEIVE), f.name], cwd=root, env={**os.environ, "DEST_ROOT": str(dest)},
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    for house, sums, sub in (("gw", repo["gw"], "gw"), ("sg", repo["sg"], "sg"), ("kit", repo["kit"], "gwk")):
        d = dest / sub
        for first in d.glob("*.part-aa"):
            whole = first.name[: -len(".part-aa")]
            (d / whole).write_bytes(b"".join(p.read_bytes() for p in sorted(d.glob(whole + ".part-*"))))
        assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=d).returncode == 0, house
        assert set(sums) <= {p.name for p in d.iterdir()}
    assert (dest / "gw" / "install-on-device.sh").read_text() == "echo gw\n"
    # The calls: one per folder, the last installs and starts the run.
    calls = re.findall(r"^\s+(\d+)\. carry \[\"(\.t\d+)\"\]", res.stdout, re.M)
    assert [c[1] for c in calls] == [f.name for f in folders]
    assert "scripts/device/install.sh && bash scripts/device/start.sh vllm sglang" in res.stdout


def test_a_call_that_would_not_fit_beside_the_tree_is_refused(repo: dict) -> None:
    # MAX_MIB = 1 MiB folders; the limit of a call is 64 MiB: an oversized tree makes it fail.
    res = pack(repo["repo"], MAX_BYTES="", MAX_MIB="1")
    assert res.returncode == 0, res.stderr
    assert "largest call" in res.stdout
    big = repo["repo"] / "big.bin"
    big.write_bytes(b"\0" * (64 * 2**20))  # untracked but not ignored: every call carries it too
    res = pack(repo["repo"], MAX_BYTES="", MAX_MIB="1")
    assert res.returncode == 3 and "exceed the device limit" in res.stderr


def test_folders_fill_what_the_tree_leaves_with_spare(repo: dict) -> None:
    """Without MAX_MIB a folder holds what a call leaves beside the tree, 4 MiB kept spare: the
    device tool refused a call of 63.1 MiB as counted here (H200 lease 6)."""
    root = repo["repo"]
    (root / "big.bin").write_bytes(b"\0" * (58 * 2**20 + 12345))  # the tree: 58 MiB and a bit
    res = pack(root, MAX_BYTES="")
    assert res.returncode == 0, res.stderr
    assert "(at most 1.0 MiB each)" in res.stdout  # 64 - 4 spare - 58.0x MiB, in whole MiB
    assert all(sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) <= 2**20 for d in root.glob(".t[0-9]*"))
    assert "of 60 MiB (64 MiB, less 4 spare)" in res.stdout
    (root / "big.bin").write_bytes(b"\0" * (59 * 2**20 + 12345))  # less than 1 MiB left
    res = pack(root, MAX_BYTES="")
    assert res.returncode == 3 and "leaves less than 1 MiB" in res.stderr
    (root / "big.bin").write_bytes(b"\0" * (int(59.9 * 2**20)))  # + a folder of ~0.3 MiB: over 60
    res = pack(root, MAX_BYTES="", MAX_MIB="1")  # a size given by hand is checked against 60 MiB too
    assert res.returncode == 3 and "exceed the device limit" in res.stderr


def test_missing_downloads_are_named(repo: dict) -> None:
    (repo["repo"] / ".sg-dl" / "SHA256SUMS").unlink()
    res = pack(repo["repo"])
    assert res.returncode == 2 and ".sg-dl/SHA256SUMS: missing" in res.stderr
    res = pack(repo["repo"], HOUSES="gw", KIT="0")
    assert res.returncode == 0, res.stderr
    assert not any((f / "sg").exists() for f in repo["repo"].glob(".t[0-9]*"))
