"""What the CPU demo's capacity searches cost: windows and wall time per arm, and what they found.

    python benchmarks/capacity_search_cost.py [--config configs/cpu.yaml] [--results DIR]

Without ``--results`` it runs every capacity search of the config with Snakemake in a fresh
working directory (the prepared ``models/`` is linked in; workloads are built first and not
timed), then reads the result files. With ``--results DIR`` it only reads the capacity files a
finished run left there (e.g. the demo's ``results/``). Prints one line per search: search
windows (and how many the client could not deliver), the search's own wall time, the job's
wall time (server start included) when it ran here, the single-stream service time, and per
SLO set the capacity, its interval and the search's status. Figures, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_searches(config: Path) -> tuple[Path, float]:
    """Run the config's capacity searches with Snakemake; return the results folder and wall time."""
    cfg = yaml.safe_load(config.read_text())
    work = Path(tempfile.mkdtemp(prefix="sb-capacity-"))
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    (work / "models").mkdir()
    for model in cfg["models"]:
        src = ROOT / "models" / model
        if not src.is_dir():
            raise SystemExit(f"{src}: prepare the model first (servingbench prepare-model, or the CPU demo)")
        for prepared in (src, *(ROOT / "models").glob(f"{model}.gguf*")):  # the llamacpp arm's GGUF too
            os.symlink(prepared.resolve(), work / "models" / prepared.name)
    tasks = cfg["sweeps"]["capacity"]["tasks"]
    targets = [f"results/sweeps/{arm}/{model}/capacity-{task}.json"
               for arm in cfg["frameworks"] for model in cfg["models"] for task in tasks]
    base = [sys.executable, "-m", "snakemake", *targets, "--cores", "1", "--snakefile", str(ROOT / "Snakefile"),
            "--directory", str(work), "--configfile", str(work / "config.yaml")]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # Untimed: what the searches read (workloads, and a GGUF the llamacpp arm would otherwise convert).
    prep = [f"results/workloads/{model}/{task}.jsonl" for model in cfg["models"] for task in tasks]
    if any(arm.get("framework") == "llamacpp" for arm in cfg["frameworks"].values()):
        prep += [f"models/{model}.gguf" for model in cfg["models"]]
    subprocess.run(base[:3] + prep + base[3 + len(targets):], cwd=work, env=env, check=True, capture_output=True)
    t0 = time.perf_counter()
    res = subprocess.run(base, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    subprocess.run([sys.executable, "-m", "servingbench.cli", "stop-servers", "--results", str(work / "results")],
                   env=env, capture_output=True)
    if res.returncode != 0:
        print(res.stdout[-3000:], res.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"snakemake failed in {work}")
    return work / "results", wall


def job_wall_s(result) -> float | None:
    """The measuring job's wall time, from the result's own start and finish stamps."""
    from datetime import datetime

    prov = result.provenance
    try:
        start = datetime.fromisoformat(prov.started_at.replace("Z", "+00:00"))
        end = datetime.fromisoformat(prov.finished_at.replace("Z", "+00:00"))
    except (AttributeError, ValueError):  # a stamp missing (None) or not ISO
        return None
    return (end - start).total_seconds()


def report(results: Path) -> list[dict]:
    from servingbench.host.derived import capacity_interval
    from servingbench.host.result_files import load_result
    from servingbench.runtime.records import CELL_SCHEMA, RequestRecord, from_json

    rows = []
    for path in sorted((results / "sweeps").rglob("capacity-*.json")):
        if path.name.endswith(".failed.json"):
            continue
        result = load_result(path, CELL_SCHEMA)
        req = path.parent / (result.requests_file or "")
        records = [from_json(RequestRecord, json.loads(x)) for x in req.read_text().splitlines() if x.strip()] \
            if result.requests_file and req.exists() else []
        cap = result.capacity
        search = [w for w in result.windows if w.phase == "search"]
        row = {"search": f"{result.cell.arm}/{result.cell.model}/{path.stem}",
               "windows": cap.search_windows, "not_counted": sum(1 for w in search if not w.valid),
               "search_wall_s": cap.wall_s, "job_wall_s": job_wall_s(result),
               "service_time_s": cap.service_time_s, "per": cap.per, "slo": {}}
        for name, res in cap.results.items():
            lo, hi = capacity_interval(result, records, name)
            row["slo"][name] = {"status": res.status, "capacity_req_s": res.capacity_req_s, "interval": [lo, hi]}
        rows.append(row)
    return rows


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3g}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu.yaml")
    ap.add_argument("--results", type=Path, help="read a finished run's capacity files instead of running")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = ap.parse_args()
    if a.results:
        results, total = a.results, None
    else:
        results, total = run_searches(a.config)
    rows = report(results)
    if a.json:
        print(json.dumps({"rows": rows, "snakemake_wall_s": total}, indent=2))
        return 0
    print(f"{'search':48} {'windows':>7} {'not cnt':>7} {'search s':>8} {'job s':>6} {'S (s)':>6}  capacity per server [interval] status")
    for r in rows:
        caps = "; ".join(f"{n} {_fmt(s['capacity_req_s'])} [{_fmt(s['interval'][0])}–{_fmt(s['interval'][1])}] {s['status']}"
                         for n, s in r["slo"].items())
        print(f"{r['search']:48} {r['windows']:>7} {r['not_counted']:>7} {r['search_wall_s']:>8.1f} "
              f"{_fmt(r['job_wall_s']):>6} {r['service_time_s']:>6.2f}  {caps}")
    if total is not None:
        print(f"snakemake, every capacity search of {a.config.name}: {total:.0f} s wall time")
        if results.parent.name.startswith("sb-capacity-"):
            shutil.rmtree(results.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
