"""The resolved description of one cell or sweep, as the in-container runtime sees it.

The host validates config.yaml (``servingbench.host.config``) and resolves each job into one of
these plain dataclasses; the Snakemake rule passes it to ``servingbench run-cell --spec`` as
JSON. This module is part of the runtime: standard library only.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

OUTPUT_POLICIES = ("forced", "natural")
MODES = ("sync", "stream")
# How a cell's requests are made (servingbench.host.task_kinds): independent prompts, conversations,
# groups sharing a prefix, or a replayed trace.
WORKLOADS = ("prompts", "multiturn", "shared_prefix", "trace")


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings of one model on one task (matrix.yaml ``generation``)."""

    temperature: float
    top_p: float
    max_tokens: int


@dataclass(frozen=True)
class ServerSpec:
    """Everything that defines one running server; equal specs may share a server."""

    arm: str
    framework: str
    model: str
    model_dir: str
    hf_id: str
    weights: str  # "real" | "dummy"
    device: str  # "cuda" | "cpu"
    dtype: str
    context_length: int
    image: str = ""
    profile: str = ""
    server_args: tuple[str, ...] = ()  # everything the adapter appends: the arm's, then the model's
    env: tuple[tuple[str, str], ...] = ()
    gpu_memory_utilization: float = 0.85
    prefix_caching: bool = False
    max_batch_tokens: int = 0  # transformers-serve continuous batching bound; 0 = arm default
    # The part of server_args that only this model gets (an arm's model_server_args): a server
    # set up unlike its arm's other models, which results record and the report shows.
    model_server_args: tuple[str, ...] = ()
    adapter: str = ""  # the adapter module when it is not the arm's name (e.g. arm vllm-prefix-cache)
    # CPUs kept for the kit's client, the last of the job's; the server gets the rest (cpu_split).
    # 0: they share them. Part of the server's identity: a pooled server is pinned to its share.
    client_cpus: int = 0

    @property
    def adapter_name(self) -> str:
        return self.adapter or self.arm

    def key(self) -> str:
        """A stable identity string: two cells with the same key can use the same server."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class SLOSpec:
    """One named SLO set as it applies to one task: per-request limits in ms (None = no limit)
    and the percentile at which a window must meet each of them (servingbench.runtime.slo)."""

    name: str
    percentile: float = 99.0
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def limits(self) -> dict[str, float]:
        """The limited figures and their limits, in SLO_LIMITS order."""
        return {k: getattr(self, k) for k in SLO_LIMITS if getattr(self, k) is not None}


# The figures an SLO set can limit (its fields in ms), in declaration order.
SLO_LIMITS = tuple(f.name for f in dataclasses.fields(SLOSpec) if f.name.endswith("_ms"))


@dataclass(frozen=True)
class CapacitySpec:
    """Settings of one capacity search (config ``sweeps.capacity``), resolved for one task."""

    slos: tuple[SLOSpec, ...]
    arrival: str = "poisson"  # "poisson" | "gamma"
    burstiness: float = 1.0  # gamma shape; 1.0 with "poisson"
    min_requests: int = 200
    min_duration_s: float = 60.0
    precision: float = 0.1  # stop bisecting when (lowest failing - highest passing) / highest passing <= this
    growth: float = 2.0
    start_rate_factor: float = 0.5  # first rate = this x the single-stream service rate
    probe_requests: int = 5
    max_windows: int = 12
    max_search_s: float = 1800.0
    max_in_flight: int = 1024
    rate_tolerance: float = 0.05  # the client must deliver >= (1 - this) x the scheduled rate
    gpus_per_server: int = 0  # 0: a CPU run, figures are per server
    stall_s: float = 2.0  # a failing window whose server went silent longer than this is measured again

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CapacitySpec":
        data = dict(data)
        data["slos"] = tuple(SLOSpec(**s) for s in data.get("slos", ()))
        return cls(**data)


@dataclass(frozen=True)
class CellSpec:
    """One cell (arm x model x task x mode) or one sweep, fully resolved."""

    server: ServerSpec
    task: str
    mode: str
    generation: GenerationParams
    output_length_policy: str = "forced"
    requests: int = 20
    warmup_requests: int = 2
    concurrency_levels: tuple[int, ...] = (1,)
    request_rate: float = 0.0  # open-loop Poisson arrivals per second; 0 = closed loop
    request_timeout_s: float = 300.0
    server_start_timeout_s: float = 900.0
    seed: int = 1234
    config_hash: str = ""
    kind: str = "cell"  # "cell" | "sweep_concurrency" | "sweep_context" | "sweep_capacity"
    monitor_interval_s: float = 0.1
    trials: int = 1  # measured windows per concurrency level (run.trials)
    capacity: CapacitySpec | None = None  # kind "sweep_capacity" only
    workload: str = "prompts"  # one of WORKLOADS
    max_lateness_ms: float = 0.0  # trace replay: p99 dispatch lateness above this fails the cell

    @property
    def arm(self) -> str:
        return self.server.arm

    @property
    def model(self) -> str:
        return self.server.model

    def cell_id(self) -> str:
        if self.kind == "cell":
            return f"{self.arm}/{self.model}/{self.task}/{self.mode}"
        if self.kind == "sweep_capacity":
            return f"{self.arm}/{self.model}/capacity-{self.task}"
        return f"{self.arm}/{self.model}/{self.kind}"

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        # Fields added later are left out at their defaults: a spec written before they existed
        # stays byte-identical, so Snakemake (which compares it as a param) reruns nothing.
        for key, default in (("trials", 1), ("capacity", None), ("workload", "prompts"), ("max_lateness_ms", 0.0)):
            if data[key] == default:
                del data[key]
        if not data["server"]["adapter"]:
            del data["server"]["adapter"]
        if data.get("capacity") and data["capacity"]["stall_s"] == CapacitySpec.stall_s:
            del data["capacity"]["stall_s"]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CellSpec":
        data = dict(data)
        server = dict(data.pop("server"))
        server["server_args"] = tuple(server.get("server_args", ()))
        server["model_server_args"] = tuple(server.get("model_server_args", ()))
        server["env"] = tuple(tuple(kv) for kv in server.get("env", ()))
        data["generation"] = GenerationParams(**data["generation"])
        data["concurrency_levels"] = tuple(data.get("concurrency_levels", (1,)))
        if data.get("capacity") is not None:
            data["capacity"] = CapacitySpec.from_dict(data["capacity"])
        spec = cls(server=ServerSpec(**server), **data)
        spec.check()
        return spec

    @classmethod
    def from_json(cls, text: str) -> "CellSpec":
        return cls.from_dict(json.loads(text))

    def check(self) -> None:
        """Cheap invariants, so a hand-written --spec fails before a server starts."""
        if self.mode not in MODES:
            raise ValueError(f"mode: {self.mode!r} is not one of {MODES}")
        if self.output_length_policy not in OUTPUT_POLICIES:
            raise ValueError(
                f"output_length_policy: {self.output_length_policy!r} is not one of {OUTPUT_POLICIES}"
            )
        if self.requests < 1:
            raise ValueError("requests must be >= 1")
        if not self.concurrency_levels or min(self.concurrency_levels) < 1:
            raise ValueError("concurrency_levels must be positive integers")
        if self.trials < 1:
            raise ValueError("trials must be >= 1")
        if (self.kind == "sweep_capacity") != (self.capacity is not None):
            raise ValueError("capacity: settings are given exactly for kind sweep_capacity")
        if self.capacity is not None and not self.capacity.slos:
            raise ValueError("capacity.slos: a capacity search needs at least one SLO set")
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload: {self.workload!r} is not one of {WORKLOADS}")


@dataclass(frozen=True)
class PromptItem:
    """One line of a workload file (results/workloads/{model}/{task}.jsonl)."""

    id: str
    prompt: str
    prompt_tokens: int
    target_output_tokens: int
    messages: tuple[dict[str, str], ...] | None = None
    sha256: str = ""
    task: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PromptItem":
        known = {f.name for f in dataclasses.fields(cls)}
        extra = {k: v for k, v in data.items() if k not in known}
        kwargs = {k: v for k, v in data.items() if k in known}
        if kwargs.get("messages") is not None:
            kwargs["messages"] = tuple(kwargs["messages"])
        kwargs.setdefault("extra", {}).update(extra)
        return cls(**kwargs)


def read_workload(path: str) -> list[PromptItem]:
    """Read a workload JSONL file; a bad line is an error naming file and line."""
    items: list[PromptItem] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                items.append(PromptItem.from_dict(json.loads(line)))
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f"{path}:{lineno}: not a workload record ({exc})") from exc
    if not items:
        raise ValueError(f"{path}: workload is empty")
    return items
