"""Repack what the GPU machine needs into transport folders .t1, .t2, ... of at most MAX bytes.

Run by pack-transport.sh (read its header). Inputs, in the repository root:
  .gw-dl/  the gpu-wheelhouse download (vLLM + transformers serve): SHA256SUMS lists its files
  .sg-dl/  the sglang-wheelhouse download: SHA256SUMS lists its files (wheels, the repacked
           sglang-kernel, an optional JIT cache), plus KERNEL_WHEEL and KERNEL_RECORD_SHA256
  .gwk/    the kit's own wheels (scripts/device/make-kit-wheels.sh)
The install scripts travel too: each wheelhouse's install-on-device.sh (from its first transport
folder, .gw1 or .sg1, else from the shared tools folder), unchanged; they are called on the device
by scripts/device/install.sh, never copied into the kit.

Output: .tN/{gw,sg,kit}/ (hard links where possible), every folder holding each wheelhouse's
metadata (SHA256SUMS, a MANIFEST of where each file travels, the install script) so that any
folder's contents are enough to say what is missing. A file larger than a folder is split into
``NAME.part-aa``, ``-ab``, ... (each wheelhouse's install-on-device.sh reassembles ``*.part-*`` in
name order and checks the whole file's sha256 from SHA256SUMS, which is carried unchanged).
Folders are packed first-fit decreasing, largest first, so the last device call carries the
least and has room for the tree that every call carries.

Standard library only; Python 3.8+.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from pathlib import Path

# What each wheelhouse contributes: download folder, destination on the device, metadata files.
HOUSES = {
    "gw": {"dl": ".gw-dl", "first": ".gw1", "tool": "gpu-wheelhouse",
           "meta": ("install-on-device.sh", "make_dummy_model.py"), "optional": ()},
    "sg": {"dl": ".sg-dl", "first": ".sg1", "tool": "sglang-wheelhouse",
           "meta": ("install-on-device.sh",), "optional": ("KERNEL_WHEEL", "KERNEL_RECORD_SHA256"),
           "cache": ("tvm_ffi_cache.tar.gz",)},
}
MANIFEST_LINE = 96  # bytes a MANIFEST line may take (".tNN NAME SIZE"), to keep room for them


class PackError(RuntimeError):
    pass


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def listed_files(dl: Path) -> list[str]:
    """The files a wheelhouse's SHA256SUMS names (what its install script verifies)."""
    sums = dl / "SHA256SUMS"
    if not sums.is_file():
        raise PackError(f"{sums}: missing; run that wheelhouse's make-wheelhouse.sh first")
    names = [line.split(None, 1)[1].strip().lstrip("*") for line in sums.read_text().splitlines() if line.strip()]
    missing = [n for n in names if not (dl / n).is_file()]
    if missing:
        raise PackError(f"{dl}: files listed in SHA256SUMS are missing: {', '.join(missing[:3])}"
                        + (" ..." if len(missing) > 3 else ""))
    return names


def find_meta(root: Path, house: dict, name: str, shared: Path | None) -> Path | None:
    for cand in (root / house["first"] / name, root / house["dl"] / name,
                 *((shared / house["tool"] / name,) if shared else ())):
        if cand.is_file():
            return cand
    return None


def split_file(src: Path, part_size: int, parts_dir: Path) -> list[Path]:
    """``src`` cut into ``NAME.part-aa``, ``-ab``, ... (as split(1) names them), cached by sha256."""
    parts_dir.mkdir(parents=True, exist_ok=True)
    stamp = parts_dir / f"{src.name}.stamp"
    key = f"{sha256(src)} {part_size}"
    existing = sorted(parts_dir.glob(f"{src.name}.part-*"))
    if stamp.is_file() and stamp.read_text() == key and existing:
        return existing
    for p in existing:
        p.unlink()
    out = []
    with src.open("rb") as fh:
        i = 0
        while True:
            block = fh.read(part_size)
            if not block:
                break
            suffix = chr(ord("a") + i // 26) + chr(ord("a") + i % 26)
            part = parts_dir / f"{src.name}.part-{suffix}"
            part.write_bytes(block)
            out.append(part)
            i += 1
    stamp.write_text(key)
    return out


def plan(items: list[tuple[str, Path, int]], cap: int) -> list[list[tuple[str, Path, int]]]:
    """First-fit decreasing into bins of ``cap`` bytes; bins ordered largest first."""
    bins: list[list] = []
    for item in sorted(items, key=lambda it: (-it[2], it[0], it[1].name)):
        for b in bins:
            if b[0] + item[2] <= cap:
                b[0] += item[2]
                b[1].append(item)
                break
        else:
            bins.append([item[2], [item]])
    bins.sort(key=lambda b: -b[0])
    return [b[1] for b in bins]


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def pack(root: Path, max_bytes: int, shared: Path | None, houses: list[str], kit: bool) -> list[Path]:
    """Build the .tN folders; return them in device-call order."""
    cache = root / ".t-parts"
    files: list[tuple[str, Path]] = []  # (device dir key, file to carry)
    meta: dict[str, list[Path]] = {}
    for key in houses:
        house = HOUSES[key]
        dl = root / house["dl"]
        files += [(key, dl / name) for name in listed_files(dl)]
        # An earlier lease's JIT-kernel cache (wait.sh brings it back; install.sh unpacks it).
        files += [(key, dl / name) for name in house.get("cache", ()) if (dl / name).is_file()]
        meta[key] = [dl / "SHA256SUMS"]
        for name in house["meta"] + house["optional"]:
            found = find_meta(root, house, name, shared)
            if found is None and name in house["meta"]:
                raise PackError(f"{key}: {name} not found in {house['first']}/, {house['dl']}/ or the shared "
                                f"tools folder ({shared}); set SHARED_TOOLS")
            if found is not None:
                meta[key].append(found)
    if kit:
        kdir = root / ".gwk"
        wheels = sorted(p for p in kdir.glob("*") if p.is_file() and p.name != "SHA256SUMS") if kdir.is_dir() else []
        if not wheels:
            raise PackError(".gwk/: no kit wheels; run scripts/device/make-kit-wheels.sh first (or --no-kit)")
        files += [("kit", w) for w in wheels]
        (cache / "kit").mkdir(parents=True, exist_ok=True)
        sums = cache / "kit" / "SHA256SUMS"
        sums.write_text("".join(f"{sha256(w)}  {w.name}\n" for w in wheels))
        meta["kit"] = [sums]
    # Every folder holds all the metadata and all the MANIFESTs: what is left is for the files.
    total = sum(p.stat().st_size for _, p in files)
    meta_bytes = sum(f.stat().st_size for fs in meta.values() for f in fs)
    cap = max_bytes - meta_bytes - MANIFEST_LINE * (len(files) + total // max(max_bytes // 2, 1) + 1) - 4096
    if cap < max_bytes // 2:
        raise PackError(f"folders of {max_bytes} bytes leave too little room beside the metadata "
                        f"({meta_bytes} bytes): raise MAX_MIB")
    items: list[tuple[str, Path, int]] = []  # (device dir key, file or part to carry, size)
    for key, src in files:
        size = src.stat().st_size
        if size > cap and key == "kit":
            raise PackError(f"{src}: larger than a transport folder")
        if size > cap:
            items += [(key, p, p.stat().st_size) for p in split_file(src, cap, cache / key)]
        else:
            items.append((key, src, size))
    bins = plan(items, cap)
    for old in root.glob(".t[0-9]*"):
        if old.is_dir():
            shutil.rmtree(old)
    folders = [root / f".t{n}" for n in range(1, len(bins) + 1)]
    manifests = {key: [] for key in meta}
    for folder, content in zip(folders, bins):
        for key, src, size in content:
            manifests[key].append(f"{folder.name} {src.name} {size}\n")
    for folder, content in zip(folders, bins):
        for key, src, _ in content:
            link(src, folder / key / src.name)
        for key, files in meta.items():
            for f in files:
                link(f, folder / key / f.name)
            (folder / key / "MANIFEST").write_text("".join(manifests[key]))
    return folders


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--root", default=".", help="repository root holding .gw-dl, .sg-dl, .gwk")
    ap.add_argument("--max-bytes", type=int, default=None,
                    help="per transport folder (default: what a call leaves beside the tree, at most 48 MiB)")
    ap.add_argument("--shared-tools", default=os.environ.get("SHARED_TOOLS"),
                    help="the shared tools folder (gpu-wheelhouse/, sglang-wheelhouse/), for the install scripts")
    ap.add_argument("--houses", default="gw,sg", help="wheelhouses to carry (gw, sg)")
    ap.add_argument("--no-kit", action="store_true", help="leave out the kit wheels (.gwk)")
    ap.add_argument("--tree-bytes", type=int, default=0, help="what every call carries besides (the tree)")
    ap.add_argument("--limit-bytes", type=int, default=64 << 20, help="one device call's limit")
    # The device tool counts a call's size its own way: it refused a call of 63.1 MiB as counted
    # here (the tracked files' bytes plus the folder's; H200 lease 6) and took 59.1 MiB.
    ap.add_argument("--spare-bytes", type=int, default=4 << 20,
                    help="kept free below the limit, since the tool's count differs from ours")
    ap.add_argument("--start-args", default="vllm sglang transformers-serve transformers-naive",
                    help="arguments of scripts/device/start.sh in the last call")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    houses = [h for h in args.houses.split(",") if h]
    bad = [h for h in houses if h not in HOUSES]
    if bad:
        print(f"pack-transport: unknown wheelhouse {bad[0]!r}; allowed: {', '.join(HOUSES)}", file=sys.stderr)
        return 2
    shared = Path(args.shared_tools) if args.shared_tools else None
    room = args.limit_bytes - args.spare_bytes  # what one call may carry, as counted here
    if args.max_bytes is None:
        args.max_bytes = min(48 << 20, (room - args.tree_bytes) >> 20 << 20)  # whole MiB
        if args.max_bytes < 1 << 20:
            print(f"pack-transport: the tree ({args.tree_bytes / 2**20:.1f} MiB) leaves less than 1 MiB of a "
                  f"call's {room / 2**20:.0f} MiB: make it smaller (ignore what the device does not need)",
                  file=sys.stderr)
            return 3
    try:
        folders = pack(root, args.max_bytes, shared, houses, not args.no_kit)
    except PackError as exc:
        print(f"pack-transport: {exc}", file=sys.stderr)
        return 2
    worst = 0
    print(f"[pack] {len(folders)} transport folders (at most {args.max_bytes / 2**20:.1f} MiB each):")
    for f in folders:
        size = folder_bytes(f)
        worst = max(worst, size)
        carried = {k: sum(1 for line in (f / k / "MANIFEST").read_text().splitlines() if line.startswith(f.name + " "))
                   for k in ("gw", "sg", "kit") if (f / k / "MANIFEST").is_file()}
        print(f"  {f.name:<5} {size / 2**20:6.1f} MiB  (" + ", ".join(f"{k}: {n} files" for k, n in carried.items() if n) + ")")
    if args.tree_bytes:
        total = args.tree_bytes + worst
        print(f"[pack] every call also carries the tree: {args.tree_bytes / 2**20:.1f} MiB; largest call "
              f"{total / 2**20:.1f} MiB of {room / 2**20:.0f} MiB ({args.limit_bytes / 2**20:.0f} MiB, "
              f"less {args.spare_bytes / 2**20:.0f} spare)")
        if total > room:
            print("pack-transport: a call would exceed the device limit: lower --max-bytes (MAX_MIB)", file=sys.stderr)
            return 3
    print("\nDevice calls, back to back (the machine keeps /tmp only while warm, ~30 s after a call):")
    last = len(folders)
    for n, f in enumerate(folders, 1):
        recv = f"bash scripts/device/receive.sh {f.name}"
        if n < last:
            print(f"  {n}. carry [\"{f.name}\"]:  {recv}")
        else:
            print(f"  {n}. carry [\"{f.name}\"], timeout_s 600:")
            print(f"     {recv} && bash scripts/device/install.sh && bash scripts/device/start.sh {args.start_args}")
    print("  then, each call up to 600 s until it prints `done`:  bash scripts/device/wait.sh 540")
    print("  (each wait call leaves $OUT/results.tar.gz: what has finished so far)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
