"""Everything the page shows, loaded once from a results folder (the report is a pure function of it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from servingbench.host.aggregate import Entry, load_results, read_json, read_requests, tidy
from servingbench.host.config import Config, config_hash
from servingbench.runtime.records import GPU_BANDWIDTH_SCHEMA, GpuBandwidth, RequestRecord, WindowSummary
from servingbench.host.result_files import load_result

Key = tuple[str, str, str, str, str]  # (kind, arm, model, task, mode)


@dataclass
class ReportData:
    cfg: Config
    results_dir: Path
    entries: list[Entry]
    df: pd.DataFrame  # the tidy table, identical to summary.csv
    config_hash: str
    calibration: dict[str, Any] | None
    # The GPU's measured copy bandwidth (results/gpu-bandwidth.json, servingbench.host.gpu_bandwidth).
    gpu_bandwidth: GpuBandwidth | None = None
    _index: dict[tuple, float] = field(default_factory=dict, repr=False)
    _requests: dict[Key, list[RequestRecord]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, cfg: Config, results_dir: str | Path, allow_stale: bool = False,
             source: str = "the config") -> "ReportData":
        results_dir = Path(results_dir)
        entries = load_results(cfg, results_dir, allow_stale, source)
        calib_path = results_dir / "calibration.json"
        calibration = read_json(calib_path) if calib_path.exists() else None
        bw_path = results_dir / "gpu-bandwidth.json"
        data = cls(cfg=cfg, results_dir=results_dir, entries=entries, df=tidy(entries, results_dir, cfg),
                   config_hash=config_hash(cfg), calibration=calibration,
                   gpu_bandwidth=load_result(bw_path, GPU_BANDWIDTH_SCHEMA) if bw_path.exists() else None)
        ok = data.df[data.df["status"] == "ok"]
        for r in ok.itertuples(index=False):
            conc = None if pd.isna(r.concurrency) else int(r.concurrency)
            target = None if pd.isna(r.prompt_tokens_target) else int(r.prompt_tokens_target)
            trial = None if pd.isna(r.trial) else int(r.trial)
            slo = None if pd.isna(r.slo) else r.slo
            data._index[(r.kind, r.framework, r.model, r.task, r.mode, conc, target, r.metric, r.statistic,
                         trial, slo)] = r.value
        return data

    # -- lookups -----------------------------------------------------------------------------------
    @property
    def arms(self) -> list[str]:
        return list(self.cfg.frameworks)

    @property
    def ok(self) -> list[Entry]:
        return [e for e in self.entries if e.status == "ok"]

    def entry(self, kind: str, arm: str, model: str, task: str | None = None, mode: str | None = None) -> Entry | None:
        for e in self.entries:
            if (e.kind, e.arm, e.model) == (kind, arm, model) and (task is None or e.task == task) \
                    and (mode is None or e.mode == mode):
                return e
        return None

    def value(self, e: Entry, metric: str, stat: str = "value", concurrency: int | None = None,
              target: int | None = None, trial: int | None = None, slo: str | None = None) -> float | None:
        """One figure of the tidy table (None when absent or not a number). ``trial`` None: the
        figure over all trials (the window's own when the cell ran one trial)."""
        v = self._index.get((e.kind, e.arm, e.model, e.task, e.mode, concurrency, target, metric, stat, trial, slo))
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    def windows(self, e: Entry) -> list[WindowSummary]:
        return list(e.result.windows) if e.result else []

    def requests(self, e: Entry) -> list[RequestRecord]:
        key = (e.kind, e.arm, e.model, e.task, e.mode)
        if key not in self._requests:
            self._requests[key] = read_requests(e)
        return self._requests[key]

    def source(self, e: Entry) -> str:
        return e.source(self.results_dir)

    def has_stream(self) -> bool:
        return "stream" in self.cfg.modes
