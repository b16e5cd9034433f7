"""A hub token in the environment never reaches a written file or a command line.

A real cell runs on the real naive server with a sentinel ``HF_TOKEN`` (and
``HUGGING_FACE_HUB_TOKEN``) in the environment, launched through a wrapper that first prints
the server's whole environment into its log (standins.EchoEnvAdapter: a server that echoes its
environment). A second cell's server (a stand-in) prints the token as its last line and dies,
so the token would travel through the failure record and the error message. Then the
aggregate and the report run (as the workflow runs them, as commands), and every file under
the results and report folders, every captured command line and every message is searched
for the sentinel: zero hits. The logs that echoed it show ``***`` instead.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

import servingbench.cell as cell_mod
from servingbench.cell import CellFailed, fresh_server, run_cell
from servingbench.results import cell_path, failure_path
from tests.reliability.conftest import MODEL, tiny_config_dict
from tests.reliability.standins import EchoEnvAdapter, StandinAdapter, find_sentinels

pytestmark = pytest.mark.secrets


def test_hf_token_never_reaches_a_file_or_a_command_line(monkeypatch, cell_spec_for, chat_workload, tmp_path,
                                                        record_property):
    sentinels = [f"hf_SENTINEL{uuid.uuid4().hex}", f"hf_HUBSENTINEL{uuid.uuid4().hex}"]
    monkeypatch.setenv("HF_TOKEN", sentinels[0])
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", sentinels[1])
    results, report = tmp_path / "results", tmp_path / "report"
    texts: dict[str, str] = {}

    # 1. A real cell; its server echoes its environment into its log.
    monkeypatch.setattr(cell_mod, "get_adapter", lambda arm: EchoEnvAdapter())

    def provider(adapter, spec, log):
        handle = fresh_server(adapter, spec, log)
        texts["server process command lines"] = "\n".join(" ".join(p.cmdline()) for p in handle.proc.tree())
        return handle

    out = cell_path(results, "transformers-naive", MODEL, "chat", "stream")
    result = run_cell(cell_spec_for(mode="stream", requests=2), chat_workload, out, results, provider=provider)
    texts["result server.command"] = " ".join(result["server"]["command"])

    # 2. A cell whose server prints the token as its last line, then dies.
    monkeypatch.setattr(cell_mod, "get_adapter", lambda arm: StandinAdapter("secret-then-die"))
    failed = cell_path(results, "transformers-naive", MODEL, "chat", "sync")
    with pytest.raises(CellFailed) as err:
        run_cell(cell_spec_for(mode="sync"), chat_workload, failed, results, provider=fresh_server)
    texts["CellFailed message"] = str(err.value)
    assert failure_path(failed).exists() and "HF_TOKEN=***" in failure_path(failed).read_text()

    # 3. Aggregate and report, as the workflow runs them.
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config_dict(requests=2)))  # the stream cell's size: not stale
    for cmd in (["aggregate", "--config", str(cfg), "--results", str(results)],
                ["report", "--config", str(cfg), "--results", str(results), "--out", str(report / "index.html")]):
        res = subprocess.run([sys.executable, "-m", "servingbench.cli", *cmd], capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        texts[f"servingbench {cmd[0]} output"] = res.stdout + res.stderr
    assert (results / "summary.csv").exists() and (report / "index.html").exists()

    hits = find_sentinels(sentinels, [results, report], texts)
    record_property("secret_leaks", len(hits))
    assert hits == [], f"the token leaked into: {hits}"

    # The logs did echo the environment, redacted.
    log = Path(result["server"]["log"]).read_text()
    assert "server environment:" in log and "HF_TOKEN=***" in log and "HUGGING_FACE_HUB_TOKEN=***" in log
