"""Summary rows derived on the host from what a result file holds (host side).

- Goodput: every window of a cell or a concurrency/context sweep, judged against every SLO set
  of the config (with the task's overrides), from the stored per-request records, with the one
  definition in servingbench.slo that the capacity search uses at run time. So changing an SLO
  set re-judges finished windows without rerunning them.
- Capacity: a capacity search's per-SLO-set answers, from its result file.

Each row is a dict of tidy-table columns (concurrency, prompt_tokens_target, trial, slo,
metric, statistic, value, and optionally reason); aggregate adds the entry's own columns.
"""

from __future__ import annotations

from typing import Any, Iterator

from servingbench.config import Config, slo_specs
from servingbench.slo import window_verdict

Row = dict[str, Any]
CAPACITY_VALUES = ("capacity_req_s", "capacity_output_tok_s", "capacity_req_s_per_gpu",
                   "capacity_output_tok_s_per_gpu")
CAPACITY_AT = {"capacity_energy_per_output_token_j": "energy_per_output_token_j",
               "capacity_gpu_used_peak_bytes": "gpu_used_peak_bytes",
               "capacity_gpu_utilization_mean_pct": "gpu_utilization_mean_pct",
               "capacity_host_rss_peak_bytes": "host_rss_peak_bytes"}


def trial_of(doc: dict[str, Any], window: dict[str, Any]) -> int | None:
    """A window's trial number when its cell ran ``run.trials`` > 1, else None."""
    return window.get("trial") if (doc.get("spec") or {}).get("trials", 1) > 1 else None


def by_window(records: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        if not r.get("warmup"):
            out.setdefault(int(r["window"]), []).append(r)
    return out


def goodput_rows(cfg: Config, kind: str, task: str, doc: dict[str, Any],
                 records: list[dict[str, Any]]) -> Iterator[Row]:
    """Goodput and the window verdict of every window, per SLO set."""
    if kind == "sweep_capacity":
        return
    slos = slo_specs(cfg, task if task in cfg.tasks else "")
    stream = doc["cell"]["mode"] == "stream"
    per_window = by_window(records)
    for i, w in enumerate(doc["windows"]):
        recs = per_window.get(i, [])
        if not recs or not w.get("window_s"):
            continue
        key = dict(concurrency=w["concurrency"], prompt_tokens_target=w.get("prompt_tokens_target"),
                   trial=trial_of(doc, w))
        for s in slos:
            v = window_verdict(recs, w["window_s"], s, stream)
            if v is None:
                continue
            for metric, value in (("slo_met_share", v["met_share"]), ("goodput_req_s", v["goodput_req_s"]),
                                  ("goodput_output_tok_s", v["goodput_output_tok_s"]),
                                  ("slo_window_met", None if v["window_met"] is None else int(v["window_met"]))):
                if value is not None:
                    yield dict(key, slo=s.name, metric=metric, statistic="value", value=value)


def capacity_rows(doc: dict[str, Any]) -> Iterator[Row]:
    """The answers of a capacity search, one group of rows per SLO set."""
    cap = doc.get("capacity")
    if doc.get("kind") != "sweep_capacity" or not cap:
        return
    key = dict(concurrency=None, prompt_tokens_target=None, trial=None)
    for name, res in cap["results"].items():
        reason = f"{res['status']}: {res['reason']}"
        for metric in CAPACITY_VALUES:
            if res.get(metric) is not None:
                yield dict(key, slo=name, metric=metric, statistic="value", value=res[metric], reason=reason)
        for metric, field in CAPACITY_AT.items():
            if res.get(field) is not None:
                yield dict(key, slo=name, metric=metric, statistic="value", value=res[field], reason=reason)
    yield dict(key, slo=None, metric="capacity_search_windows", statistic="value", value=cap["search_windows"])
    yield dict(key, slo=None, metric="capacity_wall_s", statistic="value", value=cap["wall_s"])
