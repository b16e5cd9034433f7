"""The CPU demo matrix with and without the server pool: server starts and wall time, one run each.

    python benchmarks/pool_wall_time.py [--config configs/cpu.yaml] [--keep]

Each run gets a fresh working directory (the prepared model is linked in, so model conversion
is not timed), runs `snakemake --cores 1` on every cell and sweep of the config, and counts
server starts from the server logs. Prints both runs and the ratio; the goal is that the pooled
run saves at least the start-up time of the starts it avoids.
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


def run(config: dict, model_dir: Path, reuse: bool, keep: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"sb-pool-{'on' if reuse else 'off'}-"))
    cfg = json.loads(json.dumps(config))
    cfg.setdefault("run", {})["server_reuse"] = reuse
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    (work / "models").mkdir()
    os.symlink(model_dir.resolve(), work / "models" / model_dir.name)
    # Targets before the options: --configfile and --until take every word after them.
    base = [sys.executable, "-m", "snakemake", "results/summary.csv", "--cores", "1",
            "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
            "--configfile", str(work / "config.yaml")]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # Workloads first, untimed: both runs measure the same thing, the cells.
    subprocess.run(base + ["--until", "build_workload"], cwd=work, env=env, check=True, capture_output=True)
    t0 = time.perf_counter()
    res = subprocess.run(base, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        print(res.stdout[-3000:], res.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"snakemake failed in {work}")
    starts = sum(p.read_text(errors="replace").count("# servingbench: starting")
                 for p in (work / "results" / "logs").rglob("*.server.log"))
    files = [p for d in ("cells", "sweeps") for p in (work / "results" / d).rglob("*.json")
             if not p.name.endswith(".failed.json")]
    results = [json.loads(p.read_text()) for p in files]
    startup = sum(r["server"]["startup_s"] or 0 for r in results if not r["server"]["reused"])
    out = {"reuse": reuse, "wall_s": wall, "server_starts": starts, "jobs": len(results),
           "startup_s_total": startup, "workdir": str(work)}
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "cpu.yaml"))
    ap.add_argument("--model-dir", default=str(ROOT / "models" / "smollm2-135m"))
    ap.add_argument("--keep", action="store_true", help="keep both working directories")
    ap.add_argument("--tasks", nargs="+", help="only these tasks (a smaller matrix, same arms and modes)")
    ap.add_argument("--no-sweeps", action="store_true", help="cells only")
    a = ap.parse_args()
    config = yaml.safe_load(Path(a.config).read_text())
    if a.tasks:
        config["tasks"] = {t: config["tasks"][t] for t in a.tasks}
        config["generation"] = {m: {t: g[t] for t in a.tasks} for m, g in config["generation"].items()}
        if config.get("sweeps", {}).get("concurrency") and config["sweeps"]["concurrency"].get("task") not in a.tasks:
            config["sweeps"]["concurrency"]["task"] = a.tasks[0]
    if a.no_sweeps:
        config["sweeps"] = {"concurrency": None, "context": None}
    model_dir = Path(a.model_dir)
    if not (model_dir / "config.json").exists():
        raise SystemExit(f"{model_dir}: prepare the model first (servingbench prepare-model)")
    rows = [run(config, model_dir, reuse, a.keep) for reuse in (False, True)]
    print(f"{'server pool':<12} {'jobs':>5} {'starts':>7} {'start-up s':>11} {'wall s':>8}")
    for r in rows:
        print(f"{'on' if r['reuse'] else 'off':<12} {r['jobs']:>5} {r['server_starts']:>7} "
              f"{r['startup_s_total']:>11.1f} {r['wall_s']:>8.1f}")
    off, on = rows
    saved = off["wall_s"] - on["wall_s"]
    avoided = off["startup_s_total"] - on["startup_s_total"]
    print(f"wall time ratio (pool on / off): {on['wall_s'] / off['wall_s']:.2f}; "
          f"saved {saved:.1f} s against {avoided:.1f} s of avoided start-up "
          f"({'goal met' if saved >= avoided else 'goal NOT met'})")


if __name__ == "__main__":
    main()
