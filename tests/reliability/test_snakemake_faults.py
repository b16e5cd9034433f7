"""The workflow breaks: Snakemake is interrupted (SIGINT, SIGTERM) mid-run, or a server dies
in the middle of a ``--keep-going`` run. Real Snakemake, real naive server on the real
SmolLM2, a tiny config (one arm, one task, sync + stream = 2 cells), the approach of
tests/test_servers.py::test_partial_rerun_recomputes_exactly_the_missing_cell.

What Snakemake 9.27 really does, as these tests found and assert:
- Ctrl-C (SIGINT to the whole foreground process group): the running job gets SIGINT too; the
  cell stops its measurement, writes an ``interrupted`` failure record and no result; Snakemake
  deletes the job's outputs, runs ``onerror`` (pooled servers stopped, partial report).
- SIGTERM to Snakemake's pid alone (``kill PID``): Snakemake stops scheduling and waits for the
  running job, which finishes its cell normally; then ``onerror``.
- SIGINT to Snakemake's pid alone (``kill -INT PID``): also waits for the running job, but
  then marks that job's (complete) outputs as incomplete, so a plain rerun stops with
  IncompleteFilesException; ``--rerun-incomplete`` (scripts/demo-cpu.sh passes it) recomputes
  that cell.
- SIGTERM to the whole group (a batch scheduler's cancel, ``systemctl stop``): the cell gets
  SIGTERM, which run-cell turns into SystemExit: ``interrupted`` record, its own server stopped.
Every case: no server, keeper or job process left, ``results/servers/`` holds no state, no
partial result file, and the next run computes exactly the missing cells (planned with
``snakemake -n``; the keep-going case runs its resume for real). Each run has a sentinel
``HF_TOKEN`` in its environment, searched for afterwards in every file and output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from servingbench.runtime.results import failure_path
from tests.reliability.conftest import MODEL, ROOT, tiny_config_dict
from tests.reliability.standins import find_sentinels, wait_for

pytestmark = pytest.mark.fault
REQUESTS = 4
MODES = ("sync", "stream")
CELL = "results/cells/transformers-naive/{m}/chat/{mode}.json".replace("{m}", MODEL)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def sm_config() -> dict:
    cfg = tiny_config_dict(arms=("transformers-naive",), requests=REQUESTS, modes=MODES)
    cfg["run"]["request_timeout_s"] = 30
    return cfg


@pytest.fixture(scope="module")
def sm_workload(tmp_path_factory, sm_config, smollm2_dir) -> Path:
    from servingbench.host.config import parse_config
    from servingbench.host.build_workloads import build_workload

    out = tmp_path_factory.mktemp("sm-workload") / "chat.jsonl"
    build_workload(parse_config(sm_config, "tiny.yaml"), MODEL, "chat", smollm2_dir, out)
    return out


class Workdir:
    """One Snakemake working directory: tiny config, symlinked model, prebuilt workload."""

    def __init__(self, root: Path, cfg: dict, workload: Path, model_dir: Path) -> None:
        self.root = root
        (root / "tiny.yaml").write_text(yaml.safe_dump(cfg))
        (root / "models").mkdir()
        os.symlink(model_dir, root / "models" / MODEL)
        dest = root / "results" / "workloads" / MODEL / "chat.jsonl"
        dest.parent.mkdir(parents=True)
        shutil.copyfile(workload, dest)  # newer than the model: Snakemake keeps it
        self.token = f"hf_SENTINEL{uuid.uuid4().hex}"
        self.env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                    "HF_TOKEN": self.token}
        self.outputs: list[str] = []

    def cmd(self, *extra: str) -> list[str]:
        # Targets before --configfile, which takes every word after it.
        return [sys.executable, "-m", "snakemake", "--cores", "1", "--snakefile", str(ROOT / "Snakefile"),
                "--directory", str(self.root), *extra, "--configfile", str(self.root / "tiny.yaml")]

    def start(self, *extra: str) -> subprocess.Popen:
        self._log = open(self.root / f"snakemake-{len(self.outputs)}.out", "w")
        # Its own session: SIGINT to the group is what Ctrl-C in a terminal does. SIGINT back to
        # its default: a shell's background job (`cmd &` without job control) ignores it, and the
        # ignore is inherited through exec, so Snakemake would never see the Ctrl-C.
        return subprocess.Popen(self.cmd(*extra), stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True, preexec_fn=_default_sigint)

    def finish(self, proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
        rc = proc.wait(timeout=timeout)
        self._log.close()
        text = Path(self._log.name).read_text()
        self.outputs.append(text)
        return rc, text

    def run(self, *extra: str) -> tuple[int, str]:
        return self.finish(self.start(*extra))

    def cell(self, mode: str) -> Path:
        return self.root / CELL.format(mode=mode)

    def cell_log(self, mode: str) -> Path:
        return self.root / "results" / "logs" / "cells" / "transformers-naive" / MODEL / "chat" / f"{mode}.log"

    def measuring(self, mode: str) -> bool:
        """The cell's first measured request has finished (its progress line is in its log)."""
        log = self.cell_log(mode)
        return log.exists() and f" 1/{REQUESTS} requests" in log.read_text(errors="replace")

    def wait_measuring(self, proc: subprocess.Popen, modes=MODES, timeout: float = 180) -> str:
        found: list[str] = []

        def check() -> bool:
            assert proc.poll() is None, "Snakemake ended before the fault was injected"
            found[:] = [m for m in modes if self.measuring(m) and not self.cell(m).exists()]
            return bool(found)

        assert wait_for(check, timeout, step=0.05), "no cell started measuring"
        return found[0]

    def server_states(self) -> list[Path]:
        return sorted((self.root / "results" / "servers").glob("*.json"))

    def measure_jobs(self, text: str) -> int:
        """Measuring jobs a real run started."""
        return text.count("localrule measure_")

    def plan(self, *extra: str) -> dict[str, object]:
        """What the next run would do (`snakemake -n`): job counts, and the measured modes."""
        rc, out = self.run("-n", *extra)
        assert rc == 0, out[-3000:]
        counts = {}
        for line in out.split("Job stats:", 1)[1].splitlines()[3:]:
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                break
            counts[parts[0]] = int(parts[1])
        modes = sorted(m for m in MODES if f"mode={m}" in out)
        return {"measure": counts.get(f"measure_transformers_naive_{MODEL.replace('-', '_')}", 0),
                "aggregate": counts.get("aggregate", 0), "report": counts.get("report", 0), "modes": modes}

    def assert_clean(self) -> None:
        assert self.server_states() == [], "a pooled server's state is left: its server was not stopped"
        for mode in MODES:
            cell = self.cell(mode)
            leftovers = [p.name for p in cell.parent.glob(f".{cell.name}*")] if cell.parent.exists() else []
            assert not leftovers, f"partial (temporary) result files left: {leftovers}"
            if cell.exists():  # a result file is whole: it parses and says ok
                assert json.loads(cell.read_text())["status"] == "ok"

    def secret_hits(self) -> list[str]:
        texts = {f"snakemake output {i}": t for i, t in enumerate(self.outputs)}
        return find_sentinels([self.token], [self.root / "results", self.root / "report",
                                             self.root / ".snakemake" / "log"], texts)


@pytest.fixture
def workdir(tmp_path, sm_config, sm_workload, smollm2_dir, record_property):
    wd = Workdir(tmp_path, sm_config, sm_workload, smollm2_dir)
    yield wd
    hits = wd.secret_hits()
    record_property("secret_leaks", len(hits))
    assert hits == [], f"HF_TOKEN leaked into {hits}"


def _other(mode: str) -> str:
    return "stream" if mode == "sync" else "sync"


def test_ctrl_c_interrupts_the_running_cell_and_the_next_run_redoes_only_it(workdir):
    """SIGINT to Snakemake's process group during the second cell."""
    proc = workdir.start()
    assert wait_for(lambda: any(workdir.cell(m).exists() for m in MODES) or proc.poll() is not None, 240, 0.1)
    done = next(m for m in MODES if workdir.cell(m).exists())
    running = workdir.wait_measuring(proc, modes=(_other(done),))
    done_mtime = workdir.cell(done).stat().st_mtime_ns
    os.killpg(proc.pid, signal.SIGINT)
    rc, out = workdir.finish(proc)
    assert rc != 0 and "Terminating processes on user request" in out
    cut = workdir.cell(running)
    assert not cut.exists(), "an interrupted cell leaves no result file"
    record = json.loads(failure_path(cut).read_text())
    assert record["category"] == "interrupted" and record["cell"]["mode"] == running
    assert "stopped 1 pooled server" in out  # onerror
    workdir.assert_clean()
    # The partial report shows the interrupted cell; summary.csv is moved aside so the rerun redoes it.
    assert (workdir.root / "report" / "index.html").exists()
    assert not (workdir.root / "results" / "summary.csv").exists()
    assert (workdir.root / "results" / "summary.partial.csv").exists()
    assert "interrupted" in (workdir.root / "results" / "summary.partial.csv").read_text()

    assert record["reason"].startswith("interrupted by SIGINT")
    # The same command again would redo exactly the interrupted cell, then the table and report
    # (planned with -n here; the keep-going case below runs its resume for real).
    assert workdir.plan() == {"measure": 1, "aggregate": 1, "report": 1, "modes": [running]}
    assert workdir.cell(done).stat().st_mtime_ns == done_mtime


def test_sigterm_to_snakemake_waits_for_the_running_cell(workdir):
    """`kill PID` on Snakemake during the first cell: that cell finishes, no other starts."""
    proc = workdir.start()
    running = workdir.wait_measuring(proc)
    os.kill(proc.pid, signal.SIGTERM)
    rc, out = workdir.finish(proc)
    assert rc != 0 and "Will exit after finishing currently running jobs" in out
    assert workdir.cell(running).exists() and not failure_path(workdir.cell(running)).exists()
    other = workdir.cell(_other(running))
    assert not other.exists() and not failure_path(other).exists(), "no new cell starts after SIGTERM"
    assert workdir.measure_jobs(out) == 1
    workdir.assert_clean()

    assert workdir.plan() == {"measure": 1, "aggregate": 1, "report": 1, "modes": [_other(running)]}


def test_sigint_to_snakemake_alone_waits_but_marks_the_cell_incomplete(workdir):
    """`kill -INT PID` on Snakemake: like SIGTERM it waits for the running cell, whose result
    is whole; Snakemake still marks it incomplete, so the documented --rerun-incomplete redoes it."""
    proc = workdir.start()
    running = workdir.wait_measuring(proc)
    os.kill(proc.pid, signal.SIGINT)
    rc, out = workdir.finish(proc)
    assert rc != 0
    finished = json.loads(workdir.cell(running).read_text())  # whole and valid
    assert finished["status"] == "ok" and finished["windows"][0]["requests"] == REQUESTS
    workdir.assert_clean()

    rc, out = workdir.run()
    assert rc != 0 and "IncompleteFilesException" in out and CELL.format(mode=running) in out
    assert workdir.plan("--rerun-incomplete") == {"measure": 2, "aggregate": 1, "report": 1, "modes": sorted(MODES)}


def test_sigterm_to_the_job_group_stops_the_cell_and_its_own_server(workdir, sm_config):
    """A batch scheduler's cancel (SIGTERM to every process of the job), with server reuse off
    as in profiles/slurm: the cell's own server is stopped by run-cell itself."""
    cfg = json.loads(json.dumps(sm_config))
    cfg["run"]["server_reuse"] = False
    (workdir.root / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    proc = workdir.start()
    running = workdir.wait_measuring(proc)
    os.killpg(proc.pid, signal.SIGTERM)
    rc, out = workdir.finish(proc)
    assert rc != 0
    cut = workdir.cell(running)
    assert not cut.exists()
    record = json.loads(failure_path(cut).read_text())
    assert record["category"] == "interrupted" and record["reason"].startswith("interrupted by SIGTERM"), record
    # Snakemake names the job (its own message; `tee` into the job log died with the group too).
    assert "Error in rule measure_transformers_naive" in out and f"mode={running}" in out
    workdir.assert_clean()
    # The interrupted cell and the one never started.
    assert workdir.plan() == {"measure": 2, "aggregate": 1, "report": 1, "modes": sorted(MODES)}


def test_server_killed_mid_run_keep_going_finishes_the_rest(workdir):
    """The pooled server is SIGKILLed during the first cell of a --keep-going run: that cell
    fails (server_exited), the other cell runs on a fresh server, the partial report shows the
    failure with its reason, and the rerun computes only the failed cell."""
    proc = workdir.start("--keep-going")
    running = workdir.wait_measuring(proc)
    state = json.loads(workdir.server_states()[0].read_text())
    os.kill(state["server_pid"], signal.SIGKILL)
    rc, out = workdir.finish(proc)
    assert rc != 0
    cut, rest = workdir.cell(running), workdir.cell(_other(running))
    assert not cut.exists() and rest.exists(), out[-3000:]
    record = json.loads(failure_path(cut).read_text())
    assert record["category"] == "server_exited" and record["requests"]["failed"] >= 1, record
    # One clear message naming the cell and the cause, in Snakemake's output.
    assert f"cell transformers-naive/{MODEL}/chat/{running} failed (server_exited)" in out
    assert not json.loads(rest.read_text())["server"]["reused"], "the other cell got a new server"
    partial = (workdir.root / "results" / "summary.partial.csv").read_text()
    assert "server_exited: the server process died during the measurement" in partial
    assert "server_exited" in (workdir.root / "report" / "index.html").read_text()
    workdir.assert_clean()

    rest_mtime = rest.stat().st_mtime_ns
    rc, out = workdir.run("--keep-going")
    assert rc == 0, out[-3000:]
    assert workdir.measure_jobs(out) == 1 and f"mode={running}" in out
    assert rest.stat().st_mtime_ns == rest_mtime
    assert cut.exists() and not failure_path(cut).exists(), "a later success removes the failure record"
    assert (workdir.root / "results" / "summary.csv").exists() and (workdir.root / "report" / "index.html").exists()
    workdir.assert_clean()
