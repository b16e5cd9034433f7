"""The figures that SLOs, goodput, the capacity search and intervals add to the results, in one
table: name, unit, and what it means. aggregate takes units from here, the report its
definitions, and a test checks that docs/results-format.md documents every one. (Issue 14 will
type the whole result contract; until then the new fields live here, not spread over modules.)
Runtime-safe: plain data.
"""

from __future__ import annotations

# name -> (unit, definition). Summary rows (summary.csv ``metric``) unless marked "window:" or
# "capacity:" (a key of a capacity result's window or per-SLO result in the JSON file).
FIELDS: dict[str, tuple[str, str]] = {
    # Goodput of a window against one SLO set (summary rows carry the set's name in ``slo``).
    "slo_met_share": ("share", "share of the window's requests that completed and met every limit of the SLO set "
                               "(failed requests count as misses)"),
    "goodput_req_s": ("req/s", "requests that met every limit, over the window's wall time (vLLM's goodput)"),
    "goodput_output_tok_s": ("tokens/s", "output tokens of the requests that met every limit, over the window's wall time"),
    "slo_window_met": ("bool", "1 when each limited figure's percentile (the set's) over all the window's requests, "
                               "failed ones counting as infinitely slow, is within its limit; absent when the "
                               "window is too small to support that percentile"),
    # Capacity search: per SLO set (summary rows: kind sweep_capacity, ``slo`` = the set).
    "capacity_req_s": ("req/s", "offered arrival rate of the highest window that met the SLO set below the lowest "
                                "that did not; per server"),
    "capacity_output_tok_s": ("tokens/s", "output-token throughput measured in that window; per server"),
    "capacity_req_s_per_gpu": ("req/s", "capacity_req_s divided by the GPUs one server uses (GPU runs only)"),
    "capacity_output_tok_s_per_gpu": ("tokens/s", "capacity_output_tok_s divided by the GPUs one server uses "
                                                  "(GPU runs only)"),
    "capacity_energy_per_output_token_j": ("J/token", "GPU energy (NVML counter) over output tokens in the capacity window"),
    "capacity_gpu_used_peak_bytes": ("bytes", "peak device memory used during the capacity window"),
    "capacity_gpu_utilization_mean_pct": ("%", "mean GPU utilisation (NVML) during the capacity window"),
    "capacity_host_rss_peak_bytes": ("bytes", "peak host RSS of the server's process tree during the capacity window"),
    "capacity_search_windows": ("windows", "search windows the search ran (the probe not counted)"),
    "capacity_wall_s": ("s", "wall time of the whole search, probe included"),
    "trials": ("windows", "repeated windows behind a figure over trials (trial NA, run.trials > 1)"),
    # Capacity windows in the JSON file.
    "window:offered_rate_req_s": ("req/s", "the arrival rate the window was asked to offer"),
    "window:scheduled_rate_req_s": ("req/s", "the rate of this window's drawn arrival times: (n - 1) / their span"),
    "window:achieved_rate_req_s": ("req/s", "the rate the client dispatched at: (n - 1) / span of the dispatch times"),
    "window:valid": ("bool", "the client delivered the schedule (achieved >= (1 - rate_tolerance) x scheduled) and "
                             "the window met min_requests and min_duration_s"),
    "window:peak_in_flight": ("requests", "most requests in flight at once; reaching max_in_flight fails every SLO set"),
    "window:slo": ("", "per SLO set: met, met_share, goodput, at_percentile_ms, supported, window_met, bound_by"),
    "window:memory": ("", "the monitors over this window alone: host RSS, GPU memory, utilisation, energy"),
    "capacity:status": ("", "found, not_met, below_lowest, not_broken, imprecise, client_limited or no_data (docs/capacity.md)"),
    "capacity:bound_by": ("", "the limits over their percentile in the lowest failing window"),
    # Interval statistics (summary.csv ``statistic``) beside a figure's own.
    "stat:STAT_ci95_low": ("unit of the figure", "lower end of the 95% interval of statistic STAT (p50, p90, p99, "
                                                 "mean, value): bootstrap over a window's requests, Student-t "
                                                 "over trials, or, for a capacity, the bracket of sure verdicts"),
    "stat:STAT_ci95_high": ("unit of the figure", "upper end of that interval (absent: no upper bound)"),
}


def unit(name: str) -> str | None:
    """The unit of a summary metric defined here, or None."""
    entry = FIELDS.get(name)
    return entry[0] if entry else None
