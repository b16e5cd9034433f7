"""The reliability suite's fixtures: a leftover scan after every case, a small real config,
and the summary line (faults tried and survived, bad configs rejected, secret leaks).

Every case runs with a marker variable in its environment (``SERVINGBENCH_RELIABILITY_CASE``),
which every process it starts inherits (servers, keepers, Snakemake and its jobs). After the
case, ``no_leftovers`` looks for live processes that carry the marker, whose command line or
working directory is inside the case's tmp dir, or that descend from the test process; any it
finds (and the ports they listen on) fail the case, and are then killed by pid so that one
leak does not spill into the next case.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MARK = "SERVINGBENCH_RELIABILITY_CASE"
MODEL = "smollm2-135m"
KINDS = ("fault", "bad_config", "secrets")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fault: a reliability case: a fault the kit must survive")
    config.addinivalue_line("markers", "bad_config: a reliability case: a bad config rejected before any server starts")
    config.addinivalue_line("markers", "secrets: a reliability case: a token must not reach any written file")


# -- leftovers ----------------------------------------------------------------------------------
def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(p: psutil.Process) -> str:
    try:
        return f"pid {p.pid}: {' '.join(p.cmdline())[:160]}"
    except psutil.Error:
        return f"pid {p.pid}"


def listening_ports(pids: set[int]) -> dict[int, list[int]]:
    """pid -> TCP ports it listens on (only the given pids)."""
    out: dict[int, list[int]] = {}
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.Error:
            continue
        ports = sorted({c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN})
        if ports:
            out[pid] = ports
    return out


def suspects(case: str, tmp: Path, baseline_children: set[int]) -> list[psutil.Process]:
    """Live processes this case started: marker in env, tmp dir in cmdline/cwd, or our descendants."""
    me = os.getpid()
    found: dict[int, psutil.Process] = {}
    try:
        for child in psutil.Process(me).children(recursive=True):
            if child.pid not in baseline_children and _alive(child):
                found[child.pid] = child
    except psutil.Error:
        pass
    needle = str(tmp)
    for p in psutil.process_iter():
        if p.pid == me or p.pid in found:
            continue
        try:
            if not _alive(p):
                continue
            if needle in " ".join(p.cmdline()) or p.cwd().startswith(needle) or p.environ().get(MARK) == case:
                found[p.pid] = p
        except psutil.Error:
            continue
    return list(found.values())


def wait_no_suspects(case: str, tmp: Path, baseline: set[int], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        left = suspects(case, tmp, baseline)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.25)


@pytest.fixture(autouse=True)
def no_leftovers(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """After the case: no server, keeper or job process of it alive, and no port it opened."""
    case = uuid.uuid4().hex[:16]
    monkeypatch.setenv(MARK, case)
    baseline = {p.pid for p in psutil.Process().children(recursive=True)}
    own_before = set(listening_ports({os.getpid()}).get(os.getpid(), []))
    request.node.case_marker = case
    yield case
    # Servers stop within their grace period (SIGTERM, then SIGKILL after 20 s): wait that long.
    left = wait_no_suspects(case, tmp_path, baseline, timeout=25.0)
    ports = listening_ports({p.pid for p in left})
    own_after = set(listening_ports({os.getpid()}).get(os.getpid(), []))
    own_new = sorted(own_after - own_before)
    described = [_describe(p) for p in left]
    for p in left:  # only what this case started, by pid
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=10)
    assert not left and not own_new, (
        f"left behind by this case: processes {described}, their listening ports {ports}, "
        f"ports still open in the test process {own_new}")


# -- a small real config ------------------------------------------------------------------------
def tiny_config_dict(arms: tuple[str, ...] = ("transformers-naive",), requests: int = 4,
                     modes: tuple[str, ...] = ("sync", "stream")) -> dict[str, Any]:
    """configs/cpu.yaml cut down: one task (chat) with 8-12 output tokens, no sweeps."""
    cfg = yaml.safe_load((ROOT / "configs" / "cpu.yaml").read_text())
    cfg["frameworks"] = {a: cfg["frameworks"][a] for a in arms}
    cfg["modes"] = list(modes)
    cfg["tasks"] = {"chat": {"input_tokens": [20, 60], "output_tokens": [8, 12]}}
    cfg["generation"][MODEL] = {"chat": {"temperature": 0.9, "top_p": 0.95, "max_tokens": 12}}
    cfg["run"].update(requests_per_cell=requests, warmup_requests=0, cell_concurrency=[1],
                      server_start_timeout_s=240, request_timeout_s=60, server_idle_timeout_s=120)
    cfg["sweeps"] = {"concurrency": None, "context": None}
    return cfg


@pytest.fixture(scope="session")
def tiny_cfg():
    from servingbench.host.config import parse_config

    return parse_config(tiny_config_dict(arms=("transformers-naive", "vllm"), requests=8), "tiny.yaml")


@pytest.fixture(scope="session")
def chat_workload(tmp_path_factory, tiny_cfg, smollm2_dir) -> Path:
    """The tiny config's chat workload, built once (the model's own tokenizer)."""
    from servingbench.host.build_workloads import build_workload

    out = tmp_path_factory.mktemp("workloads") / MODEL / "chat.jsonl"
    build_workload(tiny_cfg, MODEL, "chat", smollm2_dir, out)
    return out


@pytest.fixture(scope="session")
def cell_spec_for(tiny_cfg, smollm2_dir):
    """cell_spec_for(arm, mode, **changes): a resolved spec on the real SmolLM2 directory."""
    from servingbench.host.config import cell_spec

    def make(arm: str = "transformers-naive", mode: str = "stream", **changes: Any):
        spec = cell_spec(tiny_cfg, arm, MODEL, "chat", mode)
        server = dataclasses.replace(spec.server, model_dir=str(smollm2_dir))
        return dataclasses.replace(spec, server=server, **changes)

    return make


# -- the summary line ---------------------------------------------------------------------------
def _kind(report: pytest.TestReport) -> str | None:
    for kind in KINDS:
        if kind in report.keywords:
            return kind
    return None


def reliability_counts(stats: dict[str, list[Any]]) -> dict[str, Any]:
    """From the run's reports: per kind, cases tried (not skipped) and survived (every phase passed)."""
    cases: dict[str, dict[str, Any]] = {}
    leaks = 0
    for reports in stats.values():
        for rep in reports:
            if not isinstance(rep, pytest.TestReport):
                continue
            kind = _kind(rep)
            if kind is None:
                continue
            case = cases.setdefault(rep.nodeid, {"kind": kind, "failed": False, "skipped": False, "ran": False})
            if rep.skipped:
                case["skipped"] = True
            elif rep.failed:
                case["failed"] = True
            if rep.when == "call" and not rep.skipped:
                case["ran"] = True
            for name, value in rep.user_properties:
                if name == "secret_leaks":
                    leaks += int(value)
    counts: dict[str, Any] = {k: [0, 0] for k in KINDS}
    for case in cases.values():
        if case["skipped"] and not case["failed"]:
            continue
        counts[case["kind"]][0] += 1
        if case["ran"] and not case["failed"]:
            counts[case["kind"]][1] += 1
    counts["leaks"] = leaks
    return counts


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    c = reliability_counts(terminalreporter.stats)
    if not any(c[k][0] for k in KINDS):
        return
    secret_checks = c["secrets"]
    line = (f"reliability: faults tried {c['fault'][0]}, survived {c['fault'][1]}; "
            f"bad configs tried {c['bad_config'][0]}, rejected clearly {c['bad_config'][1]}; "
            f"secret leaks found {c['leaks']}")
    if secret_checks[0] != secret_checks[1]:
        line += f" ({secret_checks[0] - secret_checks[1]} of {secret_checks[0]} secret checks did not pass)"
    config._reliability_line = line
    terminalreporter.write_sep("-", "reliability")
    terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Repeat the line after pytest's own final line, so the run ends with it."""
    line = getattr(config, "_reliability_line", None)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if line and reporter is not None:
        reporter.write_line(line)
