"""Results made under other settings than the config: found cell by cell (host side).

Each result records the resolved spec it was measured with (``spec``: sampling, sizes,
server settings, image, ...). A result is stale when that spec differs from what the current
config resolves for the same cell; the keys that differ name what changed. A result whose own
settings are unchanged is not stale even if its ``config_hash`` differs (another model's
temperature was edited and only that model's cells reran). Keys one side lacks (a result from
an older kit) are not compared, and neither are the config's hash and the model folder's path.
A result that records no image ran outside any container (a GPU host driven directly, where
``containers/images.yaml`` was absent): its software is in its provenance, and the image the
config names today says nothing about it, so the image is compared only when one was recorded.
"""

from __future__ import annotations

import json
from typing import Any

from servingbench.host.config import Config, capacity_sweep_spec, cell_spec, concurrency_sweep_spec, context_sweep_spec

# capacity.slos: a search made at other SLO limits is kept and flagged by the report
# ("capacity at another SLO"), not refused.
NOT_COMPARED = ("config_hash", "server.model_dir", "capacity.slos")
COMPARED_WHEN_RECORDED = ("server.image",)  # "" in the file: no container was named


class StaleResultsError(ValueError):
    """Result files made under other settings; the message names each file and key."""


def expected_spec(cfg: Config, kind: str, arm: str, model: str, task: str, mode: str) -> dict[str, Any]:
    """The spec the current config resolves for one cell or sweep, as a result records it."""
    if kind == "sweep_concurrency":
        spec = concurrency_sweep_spec(cfg, arm, model)
    elif kind == "sweep_context":
        spec = context_sweep_spec(cfg, arm, model)
    elif kind == "sweep_capacity":
        spec = capacity_sweep_spec(cfg, arm, model, task)
    else:
        spec = cell_spec(cfg, arm, model, task, mode)
    return json.loads(spec.to_json())


def differences(recorded: Any, expected: Any, path: str = "") -> list[str]:
    """``key: FILE-VALUE in the file, CONFIG-VALUE in the config`` for each differing leaf."""
    if isinstance(recorded, dict) and isinstance(expected, dict):
        out: list[str] = []
        for key in sorted(set(recorded) & set(expected)):
            sub = f"{path}.{key}" if path else str(key)
            if sub in NOT_COMPARED or (sub in COMPARED_WHEN_RECORDED and recorded[key] in ("", None)):
                continue
            out += differences(recorded[key], expected[key], sub)
        return out
    if recorded != expected:
        return [f"{path}: {json.dumps(recorded)} in the file, {json.dumps(expected)} in the config"]
    return []


def stale_keys(cfg: Config, entry: Any) -> list[str]:
    """The differing keys of a finished entry (``aggregate.Entry``); [] when it matches."""
    recorded = entry.result.spec if entry.result is not None else None
    if not isinstance(recorded, dict):
        return []
    return differences(recorded, expected_spec(cfg, entry.kind, entry.arm, entry.model, entry.task, entry.mode))


def check_stale(cfg: Config, entries: list[Any], source: str, allow: bool) -> list[Any]:
    """Mark stale entries (``entry.stale``); unless ``allow``, refuse them all in one error."""
    stale = []
    for e in entries:
        if e.status == "ok":
            keys = stale_keys(cfg, e)
            if keys:
                e.stale = "; ".join(keys)
                stale.append(e)
    if stale and not allow:
        lines = [f"{e.path}: {e.stale}" for e in stale]
        raise StaleResultsError(
            f"{len(stale)} result file(s) were measured under other settings than {source}; rerun them "
            "(snakemake reruns changed cells) or pass --allow-stale to include them, marked as stale:\n"
            + "\n".join(lines))
    return stale
