"""The result contract, typed once: what a cell writes and everything downstream reads.

Every field carries its unit and a one-line meaning (``record_field``); the JSON Schemas in
``schemas/``, the field tables of docs/results-format.md and aggregate's units and summary
metrics are generated from these declarations (``servingbench schemas --write``). A file is
written through ``to_json`` and read back through ``servingbench.host.result_files.load_result``.

Field order matters where ``summary=True``: aggregate writes those metrics in declaration order.
Runtime module: standard library only (Python 3.10 dataclasses).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

from servingbench.runtime.frameworks.base import TOKENS_UNKNOWN
from servingbench.runtime.results import CELL_SCHEMA, FAILURE_SCHEMA, GPU_BANDWIDTH_SCHEMA
from servingbench.runtime.typed_json import extra_field, fields_of, from_json, record_field as F, to_json

Kind = Literal["cell", "sweep_concurrency", "sweep_context", "sweep_capacity"]
Mode = Literal["sync", "stream"]
NONNEG = {"minimum": 0}

__all__ = ["CELL_SCHEMA", "FAILURE_SCHEMA", "GPU_BANDWIDTH_SCHEMA", "to_json", "from_json"]


@dataclass(kw_only=True)
class RequestRecord:
    """Everything measured about one request (one line of ``*.requests.jsonl``)."""

    prompt_id: str = F("", "the workload prompt's id")
    window: int = F("", "index into the result's windows (capacity searches: the probe is 0)", default=0)
    concurrency: int = F("requests", "the window's concurrency", default=1)
    warmup: bool = F("bool", "a warm-up request (warm-up requests are not written)", default=False)
    dispatch_ns: int = F("ns", "perf_counter_ns when handed to the connection", default=0)
    queue_ms: float = F("ms", "client-side wait for a concurrency slot or connection", default=0.0)
    ttft_ms: float | None = F("ms", "dispatch to the first event carrying output (stream only)", default=None)
    e2e_ms: float | None = F("ms", "dispatch to the last byte (sync) or the last output event (stream)",
                             default=None)
    event_offsets_ms: list[float] = F("ms", "each event that carried output (text or a token count), from dispatch",
                                      factory=list)
    event_tokens: list[int | None] | None = F("tokens", "the tokens each of those events carried, where the "
                                              "server said (null when it never did)", default=None)
    output_tokens_requested: int = F("tokens", "output tokens asked for", default=0)
    output_tokens_forced: bool = F("bool", "the request forced its output length (ignore_eos / min_tokens)",
                                   default=False)
    output_tokens: int | None = F("tokens", "output tokens generated", default=None)
    output_tokens_source: str = F("", "where output_tokens comes from: server, tokenizer or unknown",
                                  default=TOKENS_UNKNOWN)
    prompt_tokens: int = F("tokens", "the workload's prompt length (model tokenizer)", default=0)
    server_prompt_tokens: int | None = F("tokens", "the server's own prompt count", default=None)
    http_status: int | None = F("", "HTTP status of the answer", default=None)
    error: str | None = F("", "why the request failed (null: it completed)", default=None)
    finish_reason: str | None = F("", "the server's finish reason", default=None)
    server_timing: dict[str, float] = F("", "the server's own per-request figures (TGI's timing headers, "
                                        "llama.cpp's timings)", factory=dict)
    # What the workload says about the request, where it applies (servingbench.host.task_kinds).
    session: str | None = F("", "conversation or trace session", default=None, omit=True)
    turn: int | None = F("", "turn of a conversation, from 1", default=None, omit=True)
    prefix_group: str | None = F("", "shared-prefix group", default=None, omit=True)
    prefix_seen: bool | None = F("bool", "an earlier request of the window sent that prefix", default=None,
                                 omit=True)
    scheduled_ms: float | None = F("ms", "scheduled arrival offset from the window's start", default=None,
                                   omit=True)
    lateness_ms: float | None = F("ms", "dispatch minus scheduled time (null: never dispatched)", default=None,
                                  omit=True)
    output_text: str | None = F("", "the answer (conversations: the next turn's history)", default=None,
                                omit=True)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return to_json(self)

    def mark_schedule(self, due_ns: int, start_ns: int) -> None:
        """Record a scheduled request's offset from its window's start and its lateness (dispatch
        minus due time; None when it was never dispatched)."""
        self.scheduled_ms = (due_ns - start_ns) / 1_000_000
        self.lateness_ms = (self.dispatch_ns - due_ns) / 1_000_000 if self.dispatch_ns else None

    def label(self, item: Any) -> None:
        """Copy the workload's labels of ``item`` (its ``extra`` keys of the same names)."""
        for key in ITEM_LABELS:
            if key in item.extra:
                setattr(self, key, item.extra[key])


ITEM_LABELS = ("session", "turn", "prefix_group", "prefix_seen")


@dataclass(kw_only=True)
class Stats:
    """Summary of per-request values (unit: the figure's); null when there were none. Field
    order is summary.csv's row order."""

    mean: float | None = F("", "mean")
    p50: float | None = F("", "median (linear interpolation between closest ranks)")
    p90: float | None = F("", "90th percentile")
    p99: float | None = F("", "99th percentile")
    min: float | None = F("", "smallest value")
    max: float | None = F("", "largest value")
    n: int = F("count", "values summarised", schema=NONNEG)


@dataclass(kw_only=True)
class GpuSummary:
    """What NVML reported of the GPU while the cell ran."""

    device_name: str | None = F("", "GPU model", default=None)
    device: str | None = F("", "the GPU measured, as NVML names it: its index, or its UUID "
                           "(the first of CUDA_VISIBLE_DEVICES)", default=None)
    driver: str | None = F("", "NVIDIA driver version", default=None)
    cuda_driver: str | None = F("", "CUDA version the driver supports", default=None)
    device_used_before_load_bytes: float | None = F("bytes", "device memory used before the server loaded",
                                                    default=None, summary=True)
    device_used_after_load_bytes: float | None = F("bytes", "device memory used once the server was ready",
                                                   default=None, summary=True)
    device_used_peak_bytes: float | None = F("bytes", "peak device memory used while measuring", default=None,
                                             summary=True)
    device_total_bytes: float | None = F("bytes", "the device's memory", default=None, summary=True)
    utilization_mean_pct: float | None = F("%", "mean GPU utilisation (NVML)", default=None, summary=True)
    power_mean_w: float | None = F("W", "mean board power", default=None, summary=True)
    energy_j: float | None = F("J", "GPU energy over the measurement (NVML counter)", default=None, summary=True)
    energy_per_output_token_j: float | None = F("J/token", "energy_j over the output tokens", default=None,
                                                summary=True)
    memory_bandwidth_bytes_s: float | None = F("bytes/s", "the device's memory bandwidth", default=None,
                                               omit=True, summary=True)
    samples: int | None = F("samples", "NVML samples taken", default=None, omit=True)
    extra: dict[str, Any] = extra_field()


@dataclass(kw_only=True)
class MemorySummary:
    """The monitors over the measurement: host memory of the server's process tree and the GPU."""

    host_rss_peak_bytes: float | None = F("bytes", "peak RSS of the server's process tree", summary=True,
                                          schema=NONNEG)
    host_rss_mean_bytes: float | None = F("bytes", "mean RSS of the server's process tree", default=None,
                                          summary=True, schema=NONNEG)
    host_processes_max: int | None = F("processes", "most processes in the server's tree", default=None,
                                       summary=True, schema=NONNEG)
    host_samples: int | None = F("samples", "host samples taken", default=None)
    gpu: GpuSummary | None = F("", "null when no GPU was monitored")
    gpu_unavailable_reason: str | None = F("", "why no GPU was monitored", default=None)
    extra: dict[str, Any] = extra_field()


@dataclass(kw_only=True)
class SloVerdict:
    """A window judged against one SLO set (servingbench.runtime.slo): goodput and the window's verdict.
    A request meets the set when it completed within every limit; failed requests never do."""

    slo: str = F("", "the SLO set")
    percentile: float = F("", "the percentile at which the window must meet the limits")
    limits: dict[str, float] = F("ms", "the set's limits by figure (ttft_ms, tpot_ms, e2e_ms)")
    requests: int = F("requests", "requests of the window", schema=NONNEG)
    failed: int = F("requests", "of them failed", schema=NONNEG)
    met: int = F("requests", "of them met every limit", schema=NONNEG)
    met_share: float | None = F("share", "share of the window's requests that completed and met every limit of the "
                                "SLO set (failed requests count as misses)", metric="slo_met_share")
    goodput_req_s: float | None = F("req/s", "requests that met every limit, over the window's wall time (vLLM's "
                                    "goodput)", summary=True)
    goodput_output_tok_s: float | None = F("tokens/s", "output tokens of the requests that met every limit, over "
                                           "the window's wall time", summary=True)
    at_percentile_ms: dict[str, float | None] = F("ms", "each limited figure at the set's percentile over all the "
                                                  "window's requests (null: it falls among failed requests)")
    supported: bool = F("bool", "the window has enough requests to support that percentile")
    window_met: bool | None = F("bool", "each limited figure's percentile (the set's) over all the window's requests, "
                                "failed ones counting as infinitely slow, is within its limit; null when the window "
                                "is too small to support that percentile", metric="slo_window_met")
    bound_by: list[str] = F("", "the limits over their percentile (and max_in_flight when the client's cap was "
                            "reached)", factory=list)
    extra: dict[str, Any] = extra_field()


@dataclass(kw_only=True)
class GroupLatency:
    """A group of a window's requests (one turn of the conversations, or the shared-prefix requests
    whose prefix was or was not sent before): their latency and prompt lengths."""

    turn: int | None = F("", "multiturn: the turn, from 1", default=None, omit=True)
    requests: int = F("requests", "requests of the group", schema=NONNEG)
    completed: int = F("requests", "of them completed", schema=NONNEG)
    ttft_ms: Stats | None = F("ms", "stream: dispatch to the first event carrying output")
    e2e_ms: Stats | None = F("ms", "dispatch to the last byte (sync) or last output event (stream)")
    prompt_tokens: Stats | None = F("tokens", "the workload's prompt lengths (model tokenizer)")
    extra: dict[str, Any] = extra_field()


@dataclass(kw_only=True)
class PrefixSummary:
    """Shared-prefix requests split by whether an earlier request of the window sent their prefix."""

    hit_rate_expected: float = F("fraction", "share of the labelled requests whose prefix was sent before "
                                 "(what a perfect prefix cache could serve)")
    prefixes: int = F("prefixes", "distinct prefixes the window sent", schema=NONNEG)
    seen: GroupLatency = F("", "requests whose prefix an earlier request sent")
    first: GroupLatency = F("", "requests sending their prefix for the first time")
    extra: dict[str, Any] = extra_field()


@dataclass(kw_only=True)
class ArrivalSummary:
    """Scheduled against achieved arrivals of a window (trace replay, open loop)."""

    scheduled: int = F("requests", "requests with a scheduled arrival", schema=NONNEG)
    dispatched: int = F("requests", "of them dispatched", schema=NONNEG)
    lateness_ms: Stats | None = F("ms", "dispatch minus scheduled time")
    scheduled_span_s: float = F("s", "span of the scheduled arrival times")
    achieved_span_s: float = F("s", "span of the dispatch times")
    extra: dict[str, Any] = extra_field()


@dataclass(kw_only=True)
class PrefixCacheCounters:
    """The server's prefix cache over a window (its /metrics counters, or llama.cpp's timings)."""

    queries_tokens: float = F("tokens", "prompt tokens looked up in the cache")
    hits_tokens: float = F("tokens", "of them found")
    hit_rate: float | None = F("fraction", "hits_tokens / queries_tokens (null: no lookups)")
    extra: dict[str, Any] = extra_field()


@dataclass(kw_only=True)
class WindowSummary:
    """One measured window: its requests summarised (DESIGN §3). Failed requests are counted,
    never dropped. Stream-only figures are null for sync windows."""

    concurrency: int = F("requests", "requests in flight at most (capacity windows: the in-flight cap)",
                         schema={"minimum": 1})
    prompt_tokens_target: int | None = F("tokens", "context sweep: the prompt length of this point", default=None,
                                         schema={"minimum": 1})
    trial: int | None = F("", "only with run.trials > 1: which repetition of this level", default=None,
                          omit=True, schema=NONNEG)
    window: int | None = F("", "capacity windows: index into the windows", default=None, omit=True)
    # Per-request figures, summarised (summary.csv rows in this order).
    ttft_ms: Stats | None = F("ms", "stream: dispatch to the first event carrying output", summary=True)
    tpot_ms: Stats | None = F("ms", "stream: (e2e - ttft) / (output_tokens - 1)", summary=True)
    itl_ms: Stats | None = F("ms", "stream: per token (an event of k tokens after a gap g gives k values g/k), "
                             "over the requests whose stream said its tokens per event", summary=True)
    event_gap_ms: Stats | None = F("ms", "stream: gaps between successive events carrying output (not an ITL "
                                   "when events carry several tokens)", default=None, summary=True)
    tokens_per_event: Stats | None = F("tokens", "stream: tokens per output event, where the server said",
                                       default=None, summary=True)
    e2e_ms: Stats | None = F("ms", "dispatch to the last byte (sync) or last output event (stream)", summary=True)
    output_tok_s: Stats | None = F("tokens/s", "stream, per request: output_tokens / e2e", summary=True)
    queue_ms: Stats | None = F("ms", "client-side wait for a concurrency slot (open loop)", summary=True)
    prompt_tokens: Stats | None = F("tokens", "the workload's prompt lengths (model tokenizer)", summary=True)
    # Single figures (summary.csv rows in this order).
    throughput_req_s: float | None = F("req/s", "completed requests / window_s", summary=True, schema=NONNEG)
    throughput_output_tok_s: float | None = F("tokens/s", "output tokens of completed requests / window_s",
                                              summary=True, schema=NONNEG)
    requests: int = F("requests", "requests sent in the window", summary=True, schema=NONNEG)
    completed: int = F("requests", "requests that completed", summary=True, schema=NONNEG)
    failed: int = F("requests", "requests that failed (counted, never dropped)", summary=True, schema=NONNEG)
    window_s: float | None = F("s", "wall time of the measured window", summary=True, schema=NONNEG)
    output_tokens_requested_total: int = F("tokens", "output tokens the completed requests asked for",
                                           summary=True, schema=NONNEG)
    output_tokens_actual_total: int = F("tokens", "output tokens the completed requests got", summary=True,
                                        schema=NONNEG)
    output_tokens_mismatched: int = F("requests", "completed requests whose actual != requested output",
                                      summary=True, schema=NONNEG)
    itl_unknown_requests: int | None = F("requests", "stream: completed requests whose tokens per event were not "
                                         "said (not in itl_ms)", default=None, summary=True, schema=NONNEG)
    server_ttft_ms_mean: float | None = F("ms", "the server's own mean TTFT over the window (its /metrics "
                                          "histogram, or llama.cpp's timings)", default=None, summary=True)
    server_itl_ms_mean: float | None = F("ms", "the server's own mean inter-token latency over the window",
                                         default=None, summary=True)
    server_tpot_ms_mean: float | None = F("ms", "llama.cpp: mean timings.predicted_per_token_ms", default=None,
                                          omit=True)
    server_timing_source: str | None = F("", "what the server's TTFT is, in words", default=None, omit=True)
    errors: dict[str, int] = F("requests", "failure reason -> failed requests", factory=dict)
    output_tokens_source: dict[str, int] = F("requests", "where output counts came from -> requests",
                                             factory=dict)
    # Only where the workload has them (docs/workloads.md).
    server_prefix_cache: PrefixCacheCounters | None = F("", "the server's prefix-cache counters over the window",
                                                        default=None, omit=True)
    per_turn: list[GroupLatency] | None = F("", "multiturn: per turn of the conversations", default=None, omit=True)
    prefix: PrefixSummary | None = F("", "shared prefixes: first against repeated", default=None, omit=True)
    arrivals: ArrivalSummary | None = F("", "scheduled arrivals (trace replay): scheduled against achieved",
                                        default=None, omit=True)
    # Capacity search windows (docs/capacity.md).
    phase: Literal["probe", "search"] | None = F("", "capacity: the probe or a search window", default=None,
                                                 omit=True)
    offered_rate_req_s: float | None = F("req/s", "the arrival rate the window was asked to offer", default=None,
                                         omit=True, schema=NONNEG)
    scheduled_rate_req_s: float | None = F("req/s", "the rate of this window's drawn arrival times: (n - 1) / their "
                                           "span", default=None, omit=True, schema=NONNEG)
    achieved_rate_req_s: float | None = F("req/s", "the rate the client dispatched at: (n - 1) / span of the "
                                          "dispatch times", default=None, omit=True, schema=NONNEG)
    dispatched: int | None = F("requests", "requests the client dispatched", default=None, omit=True)
    arrival_span_s: float | None = F("s", "span of the drawn arrival times", default=None, omit=True)
    arrival: str | None = F("", "the arrival process (poisson, gamma)", default=None, omit=True)
    burstiness: float | None = F("", "gamma shape of the arrival gaps (1: Poisson)", default=None, omit=True)
    peak_in_flight: int | None = F("requests", "most requests in flight at once; reaching max_in_flight fails "
                                   "every SLO set", default=None, omit=True)
    in_flight_cap_reached: bool | None = F("bool", "peak_in_flight reached max_in_flight", default=None, omit=True)
    stall_s: float | None = F("s", "the longest time in which requests were in flight and none received an output "
                              "event (servingbench.runtime.capacity.longest_stall)", default=None, omit=True,
                              schema=NONNEG)
    stall_in_flight: int | None = F("requests", "requests in flight as that stall began", default=None, omit=True,
                                    schema=NONNEG)
    stall_start_s: float | None = F("s", "when that stall began, from the window's first dispatch", default=None,
                                    omit=True, schema=NONNEG)
    distinct_prompts: int | None = F("prompts", "distinct prompts sent in the window", default=None, omit=True)
    valid: bool | None = F("bool", "the client delivered the schedule (achieved >= (1 - rate_tolerance) x "
                           "scheduled), the window met min_requests and min_duration_s, and, where it failed an "
                           "SLO set, the server did not stall longer than stall_s (a repeat counts regardless)",
                           default=None, omit=True)
    invalid_reason: str | None = F("", "why the window was not counted", default=None, omit=True)
    slo: dict[str, SloVerdict] | None = F("", "capacity windows: the verdict of every SLO set", default=None,
                                          omit=True)
    memory: MemorySummary | None = F("", "the monitors over this window alone: host RSS, GPU memory, "
                                     "utilisation, energy", default=None, omit=True)
    elapsed_s: float | None = F("s", "since the capacity search started", default=None, omit=True)
    extra: dict[str, Any] = extra_field()

    def update(self, figures: dict[str, Any]) -> None:
        """Add figures measured beside the requests (server timings, workload figures); a name
        this type does not declare is kept in ``extra``."""
        for key, value in figures.items():
            if key in _WINDOW_FIELDS:
                setattr(self, key, value)
            else:
                self.extra[key] = value


_WINDOW_FIELDS = {f for f in WindowSummary.__dataclass_fields__ if f != "extra"}


@dataclass(kw_only=True)
class CellKeys:
    """Which cell (or sweep) the file holds."""

    arm: str = F("", "the configured framework arm", schema={"minLength": 1})
    framework: str = F("", "the arm's framework family", schema={"minLength": 1})
    model: str = F("", "the model's key in the config", schema={"minLength": 1})
    task: str = F("", "the workload task (context sweeps: context)", schema={"minLength": 1})
    mode: Mode = F("", "sync or stream")


@dataclass(kw_only=True)
class ServerInfo:
    """The server the cell measured: started for it, pooled or external."""

    reused: bool = F("bool", "the server served an earlier cell too (pool or external)")
    pooled: bool | None = F("bool", "the server came from the server pool", default=None)
    startup_s: float | None = F("s", "launch to ready (null when reused)", schema=NONNEG)
    started_at: str | None = F("", "ISO time the server was started or taken", default=None)
    pid: int | None = F("", "the server's process id", default=None)
    command: list[str] | None = F("", "the server's command line (secrets masked)", default=None)
    log: str | None = F("", "the server's log file", default=None)
    server_settings: dict[str, Any] | None = F("", "settings asked for and what the server reported of them "
                                               "(verified / unverified)", default=None)
    extra: dict[str, Any] = extra_field()


@dataclass(kw_only=True)
class Provenance:
    """What ran, where, from which source: enough to reproduce the figure."""

    servingbench_version: str | None = F("", "the kit's version", default=None)
    framework_version: str | None = F("", "the framework's version as its server's import path sees it",
                                      default=None)
    framework_kernels: str | None = F("", "kernel packages' versions (e.g. sglang-kernel, flashinfer)",
                                      default=None)
    versions: dict[str, str | None] = F("", "python, torch, transformers and the framework's versions",
                                        factory=dict)
    host: str | None = F("", "host name", default=None)
    cpu: str | None = F("", "CPU model", default=None)
    cpu_count: int | None = F("cores", "logical CPUs", default=None)
    client_cpus: str | None = F("", "the CPUs the kit's client could run on while it measured (run.client_cpus "
                                "keeps some for it alone)", default=None, omit=True)
    server_cpus: str | None = F("", "the CPUs the server's main process could run on (None: an external "
                                "server, or one gone)", default=None, omit=True)
    device_name: str | None = F("", "GPU model", default=None)
    device: str | None = F("", "the GPU measured, as NVML names it: its index, or its UUID "
                           "(the first of CUDA_VISIBLE_DEVICES)", default=None)
    driver: str | None = F("", "NVIDIA driver version", default=None)
    cuda: str | None = F("", "CUDA version the driver supports", default=None)
    git_commit: str | None = F("", "the kit's git commit", default=None)
    config_hash: str | None = F("", "hash of the resolved config", default=None)
    image: str | None = F("", "the container image", default=None)
    profile: str | None = F("", "the run profile", default=None)
    in_container: bool | None = F("bool", "ran inside an Apptainer container", default=None)
    weights: dict[str, Any] | None = F("", "what the server loaded: path, recorded, format, dtype, sha256, source",
                                       default=None)
    started_at: str | None = F("", "ISO time the cell started", default=None)
    finished_at: str | None = F("", "ISO time the cell finished", default=None)
    extra: dict[str, Any] = extra_field()


@dataclass(kw_only=True)
class CapacityResult:
    """One SLO set's answer of a capacity search (docs/capacity.md)."""

    slo: str = F("", "the SLO set")
    status: Literal["found", "not_met", "below_lowest", "not_broken", "imprecise", "client_limited",
                    "no_data"] = F("", "how the search ended for this set (docs/capacity.md)")
    stopped_by: str | None = F("", "the bound that stopped the search, if one did", default=None)
    capacity_req_s: float | None = F("req/s", "offered arrival rate of the highest window that met the SLO set "
                                     "below the lowest that did not; per server", schema=NONNEG, summary=True)
    capacity_output_tok_s: float | None = F("tokens/s", "output-token throughput measured in that window; per "
                                            "server", schema=NONNEG, summary=True)
    capacity_req_s_per_gpu: float | None = F("req/s", "capacity_req_s divided by the GPUs one server uses (GPU "
                                             "runs only)", default=None, schema=NONNEG, summary=True)
    capacity_output_tok_s_per_gpu: float | None = F("tokens/s", "capacity_output_tok_s divided by the GPUs one "
                                                    "server uses (GPU runs only)", default=None, schema=NONNEG,
                                                    summary=True)
    highest_passing_req_s: float | None = F("req/s", "highest rate that met the set", schema=NONNEG)
    lowest_failing_req_s: float | None = F("req/s", "lowest rate that did not", schema=NONNEG)
    capacity_window: int | None = F("", "index into windows of the capacity window")
    failing_window: int | None = F("", "index into windows of the lowest failing window")
    bound_by: list[str] = F("", "the limits over their percentile in the lowest failing window")
    # Measured in the capacity window (summary.csv: capacity_<name>).
    energy_per_output_token_j: float | None = F("J/token", "GPU energy (NVML counter) over output tokens in the "
                                                "capacity window", default=None, summary=True)
    gpu_used_peak_bytes: float | None = F("bytes", "peak device memory used during the capacity window",
                                          default=None, summary=True)
    gpu_utilization_mean_pct: float | None = F("%", "mean GPU utilisation (NVML) during the capacity window",
                                               default=None, summary=True)
    host_rss_peak_bytes: float | None = F("bytes", "peak host RSS of the server's process tree during the "
                                          "capacity window", default=None, summary=True)
    settled_at_zero_load: bool = F("bool", "not_met from the probe: its requests, sent one at a time (at least "
                                   "min_requests of them), broke the set, so no search window was spent on it",
                                   default=False)
    reason: str = F("", "the answer in words")
    extra: dict[str, Any] = extra_field()


@dataclass(kw_only=True)
class CapacitySearch:
    """A capacity search's answers (kind sweep_capacity only)."""

    slos: list[dict[str, Any]] = F("", "the SLO sets searched: name, percentile and limits",
                                   schema={"minItems": 1})
    arrival: str | None = F("", "the arrival process", default=None)
    burstiness: float | None = F("", "gamma shape of the arrival gaps (1: Poisson)", default=None)
    gpus_per_server: int = F("GPUs", "GPUs one server uses (0 on CPU)", schema=NONNEG)
    per: Literal["gpu", "server"] = F("", "what capacities are normalised by")
    service_time_s: float = F("s", "the probe's mean single-stream service time", schema={"exclusiveMinimum": 0})
    start_rate_req_s: float = F("req/s", "the first search rate", schema={"exclusiveMinimum": 0})
    search_windows: int = F("windows", "search windows the search ran (the probe not counted)", schema=NONNEG,
                            summary=True)
    wall_s: float = F("s", "wall time of the whole search, probe included", schema=NONNEG, summary=True)
    client_ceiling_req_s: float | None = F("req/s", "lowest rate the client could not deliver", default=None)
    results: dict[str, CapacityResult] = F("", "per SLO set: its answer", schema={"minProperties": 1})
    extra: dict[str, Any] = extra_field()


@dataclass(kw_only=True)
class GpuBandwidth:
    """The GPU's measured copy bandwidth (``results/gpu-bandwidth.json``, servingbench.host.gpu_bandwidth):
    the report's bandwidth floor divides by it on the GPU it was measured on."""

    schema: Literal["servingbench/gpu-bandwidth-v1"] = F("", "this format and its version",
                                                          default=GPU_BANDWIDTH_SCHEMA)
    device_name: str = F("", "the GPU, as CUDA names it")
    copy_gb_s: float = F("GB/s", "median over the copies of 2 x bytes / time (read + write)", schema=NONNEG)
    copy_gb_s_min: float = F("GB/s", "slowest copy", schema=NONNEG)
    copy_gb_s_max: float = F("GB/s", "fastest copy", schema=NONNEG)
    bytes_per_copy: int = F("bytes", "size of the buffer copied", schema=NONNEG)
    repeats: int = F("count", "copies timed (after warm-up copies)", schema=NONNEG)
    method: str = F("", "how it was measured, in words")
    torch: str = F("", "torch version that ran the copies")
    measured_at: str = F("", "when, ISO 8601 UTC")
    extra: dict[str, Any] = extra_field()


@dataclass(kw_only=True)
class CellResult:
    """One finished cell (framework x model x task x mode) or sweep. Unknown extra keys are
    allowed so that newer writers stay readable."""

    schema: Literal["servingbench/cell-v1"] = F("", "this format and its version", default=CELL_SCHEMA)
    kind: Kind = F("", "cell, or which sweep")
    status: Literal["ok"] = F("", "always ok: a failed cell writes a failure record instead", default="ok")
    cell: CellKeys = F("", "which cell")
    weights: Literal["real", "dummy"] = F("", "real weights or random ones of the real shape")
    device: Literal["cpu", "cuda"] = F("", "where the model ran")
    spec: dict[str, Any] = F("", "the full resolved CellSpec it ran with (servingbench/runtime/spec.py)")
    windows: list[WindowSummary] = F("", "one per concurrency level (and trial), prompt length, or capacity "
                                     "window", schema={"minItems": 1})
    memory: MemorySummary = F("", "the monitors over the whole measurement")
    server: ServerInfo = F("", "the server measured")
    provenance: Provenance = F("", "versions, host and times")
    requests_file: str | None = F("", "the per-request records beside this file")
    capacity: CapacitySearch | None = F("", "kind sweep_capacity: the search's answers", default=None, omit=True)
    extra: dict[str, Any] = extra_field()

    __schema_extra__ = {"if": {"properties": {"kind": {"const": "sweep_capacity"}}},
                        "then": {"required": ["capacity"]}}

    def to_dict(self) -> dict[str, Any]:
        return to_json(self)

    def trial_of(self, window: WindowSummary) -> int | None:
        """A window's trial number when the cell ran ``run.trials`` > 1, else None."""
        return window.trial if (self.spec or {}).get("trials", 1) > 1 else None


@dataclass(kw_only=True)
class RequestCounts:
    """What the measured requests did before a cell failed."""

    requests: int = F("requests", "measured requests", schema=NONNEG)
    completed: int = F("requests", "of them completed", schema=NONNEG)
    failed: int = F("requests", "of them failed", schema=NONNEG)
    errors: dict[str, int] = F("requests", "failure reason -> failed requests", factory=dict)


@dataclass(kw_only=True)
class FailureKeys:
    """Which cell failed (sweeps have no task or mode of their own)."""

    arm: str = F("", "the configured framework arm", schema={"minLength": 1})
    framework: str | None = F("", "the arm's framework family", default=None, omit=True)
    model: str = F("", "the model's key in the config", schema={"minLength": 1})
    task: str | None = F("", "the workload task", default=None, omit=True)
    mode: Mode | None = F("", "sync or stream", default=None, omit=True)


@dataclass(kw_only=True)
class FailureRecord:
    """{mode}.failed.json (or {sweep}.failed.json) beside where the result would be; removed when
    the cell later succeeds."""

    schema: Literal["servingbench/failure-v1"] = F("", "this format and its version", default=FAILURE_SCHEMA)
    kind: Kind = F("", "cell, or which sweep")
    cell: FailureKeys = F("", "which cell")
    category: Literal["out_of_memory", "start_timeout", "server_exited", "port_in_use", "requests_failed",
                      "setting_mismatch", "client_behind", "interrupted", "write_failed",
                      "error"] = F("", "what kind of failure")
    reason: str = F("", "one line: why")
    log: str | None = F("", "the server log", default=None)
    at: str | None = F("", "ISO time of the failure", default=None)
    requests: RequestCounts | None = F("", "the measured requests before the cell failed, when any ran",
                                       default=None, omit=True)
    kept: str | None = F("", "write_failed: the rescue folder holding the measured records", default=None,
                         omit=True)
    extra: dict[str, Any] = extra_field()


@dataclass(kw_only=True)
class DerivedFigures:
    """Figures aggregate derives from the per-request records (summary.csv metrics, not in the
    result file) besides every window's SloVerdict per SLO set: the trials behind a figure."""

    trials: int = F("windows", "repeated windows behind a figure over trials (trial NA, run.trials > 1)",
                    summary=True)


def summary_metrics(cls: type, prefix: str = "") -> dict[str, str]:
    """summary.csv metric -> the field it reports, for the fields of ``cls`` marked summary: the
    field's ``metric`` name, else prefix + its name (unless the name already starts so)."""
    return {f.metadata["metric"] or (f.name if f.name.startswith(prefix) else prefix + f.name): f.name
            for f in fields_of(cls) if f.metadata["summary"]}


def capacity_metrics(cls: type | None = None) -> dict[str, str]:
    """summary_metrics of a CapacityResult (default) or CapacitySearch: capacity_<field>."""
    return summary_metrics(cls or CapacityResult, "capacity_")


# Interval statistics (summary.csv ``statistic``) beside a figure's own.
INTERVAL_STATISTICS = {
    "STAT_ci95_low": ("unit of the figure", "lower end of the 95% interval of statistic STAT (p50, p90, p99, "
                                            "mean, value): bootstrap over a window's requests, Student-t over "
                                            "trials, or, for a capacity, the bracket of sure verdicts"),
    "STAT_ci95_high": ("unit of the figure", "upper end of that interval (absent: no upper bound)"),
}



def field_names(cls: type) -> SimpleNamespace:
    """The JSON field names of ``cls`` as attributes (``field_names(Stats).p50 == "p50"``), for
    code that builds names from fields: a renamed field fails there with AttributeError."""
    return SimpleNamespace(**{f.name: f.name for f in fields_of(cls)})


def metric_names(cls: type, prefix: str = "") -> SimpleNamespace:
    """The summary.csv metric of each summary field of ``cls``, as an attribute named after the
    field (``metric_names(WindowSummary).ttft_ms == "ttft_ms"``). Code names a metric through
    these rather than a string literal, so a field renamed here (or no longer a summary metric)
    fails there with AttributeError at import or test time instead of silently matching no rows."""
    return SimpleNamespace(**{name: metric for metric, name in summary_metrics(cls, prefix).items()})


# The summary metrics by type, prefixed as aggregate writes them (GPU figures gpu_<field>, a
# capacity result's capacity_<field>).
WINDOW = metric_names(WindowSummary)
MEMORY = metric_names(MemorySummary)
GPU_PREFIX = "gpu_"
GPU = metric_names(GpuSummary, GPU_PREFIX)
CAPACITY = metric_names(CapacityResult, "capacity_")
GOODPUT = metric_names(SloVerdict)
DERIVED = metric_names(DerivedFigures)
