"""A stand-in disk: one cell measured into a tiny tmpfs that fills up or turns read-only
while the cell runs, for the faults a real results disk gives only by accident.

Run inside a private mount namespace (``unshare --map-root-user --mount``, so no root is
needed outside), this script mounts a tmpfs of ``--size`` on ``--results``, serves the cell
from a FaultServer in this process, and when request ``--at`` arrives either fills the tmpfs
(``full``: writes until ENOSPC) or remounts it read-only (``readonly``). It writes what
happened (the exception, the files left) as JSON to ``--report``, outside the tmpfs.

    unshare -rm python tiny_disk.py {full|readonly|readonly-before} --results DIR --spec FILE \\
        --workload FILE --report FILE [--size 512k] [--at 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from servingbench.runtime.cell import CellFailed, run_cell  # noqa: E402
from servingbench.runtime.errors import UserError  # noqa: E402
from servingbench.runtime.providers import external_server  # noqa: E402
from servingbench.runtime.results import cell_path  # noqa: E402
from servingbench.runtime.spec import CellSpec  # noqa: E402
from tests.reliability.standins import FaultServer, http_json  # noqa: E402

NAIVE_OK = {"text": "a b c d e", "generated_tokens": 5, "prompt_tokens": 3, "finish_reason": "length"}


def fill(folder: Path) -> None:
    """Write until the disk is full (the close fails too: its last flush has no room)."""
    try:
        with open(folder / "filler", "wb", buffering=0) as fh:
            while True:
                fh.write(b"x" * 4096)
    except OSError:
        pass


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("fault", choices=["full", "readonly", "readonly-before"])
    ap.add_argument("--results", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--size", default="512k")
    ap.add_argument("--at", type=int, default=2)
    a = ap.parse_args()
    results = Path(a.results)
    results.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={a.size}", "tmpfs", str(results)], check=True)
    (results / "cells").mkdir()
    if a.fault == "readonly-before":
        subprocess.run(["mount", "-o", "remount,ro", str(results)], check=True)
    spec = CellSpec.from_json(Path(a.spec).read_text())
    out = cell_path(results, spec.arm, spec.model, spec.task, spec.mode)

    def plan(path: str, body: bytes, n: int) -> list:
        if n == a.at:
            if a.fault == "full":
                fill(results)
            elif a.fault == "readonly":
                subprocess.run(["mount", "-o", "remount,ro", str(results)], check=True)
        return [http_json(200, json.dumps(NAIVE_OK).encode(), "OK")]

    report: dict = {"error": None, "message": None}
    with FaultServer(plan) as srv:
        try:
            run_cell(spec, a.workload, out, results, provider=external_server(srv.url))
        except (CellFailed, UserError) as exc:
            report.update(error=type(exc).__name__, message=str(exc),
                          category=getattr(exc, "category", None), kept=str(getattr(exc, "kept", None) or ""))
        except Exception as exc:  # noqa: BLE001 - the test reports it as the failure it is
            report.update(error=type(exc).__name__, message=traceback.format_exc())
        report["requests_served"] = srv.count
    report["files"] = sorted(str(p.relative_to(results)) for p in results.rglob("*") if p.is_file())
    Path(a.report).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
