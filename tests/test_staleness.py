"""Stale results: a result's recorded spec compared with the config's, key by key."""

from __future__ import annotations

import pytest

from servingbench.host.aggregate import load_results
from servingbench.host.staleness import StaleResultsError, differences
from tests.resultsgen import make_config, write_results


def test_differences_name_each_leaf():
    rec = {"generation": {"temperature": 0.9, "top_p": 1.0}, "server": {"hf_id": "a/b", "model_dir": "/x"},
           "concurrency_levels": [1, 8], "config_hash": "aaa", "old_field": 1}
    exp = {"generation": {"temperature": 0.5, "top_p": 1.0}, "server": {"hf_id": "a/c", "model_dir": "/y"},
           "concurrency_levels": [1, 8], "config_hash": "bbb", "new_field": 2}
    assert differences(rec, exp) == ['generation.temperature: 0.9 in the file, 0.5 in the config',
                                     'server.hf_id: "a/b" in the file, "a/c" in the config']
    assert differences({"levels": [1, 8]}, {"levels": [1, 2]}) == ["levels: [1, 8] in the file, [1, 2] in the config"]


def test_an_image_is_compared_only_where_one_was_recorded():
    """A host run (no container named) against today's images.yaml is not stale for that alone."""
    assert differences({"server": {"image": ""}}, {"server": {"image": "reg/x:1"}}) == []
    assert differences({"server": {"image": "reg/x:1"}}, {"server": {"image": "reg/x:2"}}) == [
        'server.image: "reg/x:1" in the file, "reg/x:2" in the config']


def test_the_published_h100_example_is_not_stale():
    from pathlib import Path

    from servingbench.host.config import load_config

    root = Path(__file__).resolve().parent.parent / "examples" / "h100-dummy"
    entries = load_results(load_config(root / "config.yaml"), root / "results")
    assert len([e for e in entries if e.status == "ok"]) == 120 and not any(e.stale for e in entries)


def test_results_of_the_same_config_are_not_stale(tmp_path):
    cfg = make_config(device="cpu", arms=("transformers-naive", "vllm"), tasks=("chat",))
    write_results(cfg, tmp_path / "results")
    entries = load_results(cfg, tmp_path / "results")
    assert entries and not any(e.stale for e in entries)


def test_stale_sweeps_are_found_too(tmp_path):
    cfg = make_config(device="cpu", arms=("vllm",), tasks=("chat",), levels=(1, 2, 4))
    write_results(cfg, tmp_path / "results")
    other = make_config(device="cpu", arms=("vllm",), tasks=("chat",), levels=(1, 2, 8))
    with pytest.raises(StaleResultsError) as err:
        load_results(other, tmp_path / "results", source="new.yaml")
    msg = str(err.value)
    assert msg.startswith("1 result file(s) were measured under other settings than new.yaml")
    assert "sweeps/vllm/smollm2-135m/concurrency.json: concurrency_levels: [1, 2, 4] in the file, [1, 2, 8]" in msg
    entries = load_results(other, tmp_path / "results", allow_stale=True)
    assert [e.kind for e in entries if e.stale] == ["sweep_concurrency"]


def test_a_capacity_search_is_compared_with_the_capacity_spec():
    """Found by the CPU demo: every capacity-qa.json was called stale against a *cell* spec
    (kind, requests), so aggregate refused a run whose settings had not changed."""
    import json as _json
    from pathlib import Path as _Path

    from servingbench.host.config import capacity_sweep_spec, load_config
    from servingbench.host.staleness import differences, expected_spec

    cfg = load_config(_Path(__file__).resolve().parent.parent / "configs" / "cpu.yaml")
    task = cfg.sweeps.capacity.tasks[0]
    recorded = _json.loads(capacity_sweep_spec(cfg, "llamacpp", "smollm2-135m", task).to_json())
    assert differences(recorded, expected_spec(cfg, "sweep_capacity", "llamacpp", "smollm2-135m", task, "stream")) == []
