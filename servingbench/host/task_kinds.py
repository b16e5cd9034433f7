"""Config models of the task kinds beyond single prompts (host side).

A task's ``workload`` key says how its requests are made:

* ``prompts`` (the seed's tasks, ``servingbench.host.config.Task``): independent single-turn prompts.
* ``multiturn``: conversations of ``turns`` turns; every request carries the whole history
  (system prompt, earlier questions and the server's own earlier answers from this run), with a
  think time before each later turn. ``input_tokens`` is the range of each user turn's message,
  ``output_tokens`` of each answer.
* ``shared_prefix``: ``groups`` groups of requests whose prompts start with the same
  ``prefix_tokens`` tokens of text and end in distinct questions (``input_tokens`` is the range
  of that distinct suffix); ``prefix_hit_rate`` is the share of a window's requests whose
  prefix an earlier request of the window already sent.
* ``trace``: replay of a timestamped trace (``servingbench.host.trace``): arrival offsets, input and
  output lengths, sessions and shared prefixes come from the file; ``input_tokens`` and
  ``output_tokens`` bound the lengths it may hold.

Standalone on purpose (pydantic and the runtime's spec only): ``servingbench.host.config`` imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from servingbench.host.package_data import package_path
from servingbench.runtime.spec import WORKLOADS

TokenRange = tuple[int, int]
KINDS = WORKLOADS
TRACE_DIR = package_path("data", "traces")


def check_range(name: str, rng: TokenRange) -> TokenRange:
    """A [min, max] token range with 1 <= min <= max."""
    lo, hi = rng
    if lo < 1 or hi < lo:
        raise ValueError(f"{name} must be [min, max] with 1 <= min <= max (got {list(rng)})")
    return rng


class TaskBase(BaseModel):
    """What every task has: the token ranges of its prompts and outputs (see each kind for what
    they measure), and the prompt length it can reach."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_tokens: TokenRange
    output_tokens: TokenRange

    @field_validator("input_tokens", "output_tokens")
    @classmethod
    def _ranges(cls, v: TokenRange, info: Any) -> TokenRange:
        return check_range(info.field_name, v)

    @property
    def size_key(self) -> str:
        """The key that sizes the prompt (named when a prompt does not fit the context)."""
        return "input_tokens"

    @property
    def max_prompt_tokens(self) -> int:
        return self.input_tokens[1]


class MultiTurnTask(TaskBase):
    workload: Literal["multiturn"]
    turns: int = Field(ge=2, le=64)
    think_time_s: tuple[float, float] = (0.0, 0.0)  # seeded uniform wait before each later turn
    system_tokens: int = Field(default=0, ge=0)  # >0: a system message with this much documentation text

    @field_validator("think_time_s")
    @classmethod
    def _think(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] < 0 or v[1] < v[0]:
            raise ValueError(f"must be [min, max] seconds with 0 <= min <= max (got {list(v)})")
        return v

    @property
    def size_key(self) -> str:
        return "turns"

    @property
    def max_prompt_tokens(self) -> int:
        """The last turn's prompt at most: system text, every earlier turn and answer, a margin of
        16 template tokens per message (chat templates add 3-10)."""
        per_turn = self.input_tokens[1] + self.output_tokens[1] + 32
        return self.system_tokens + 16 + (self.turns - 1) * per_turn + self.input_tokens[1] + 16


class SharedPrefixTask(TaskBase):
    workload: Literal["shared_prefix"]
    groups: int = Field(ge=1)
    prefix_tokens: int = Field(ge=16)
    prefix_hit_rate: float | None = Field(default=None, ge=0, lt=1)  # None: every request is in a group

    @property
    def size_key(self) -> str:
        return "prefix_tokens"

    @property
    def max_prompt_tokens(self) -> int:
        return self.prefix_tokens + self.input_tokens[1] + 16

    def check_window(self, requests: int, where: str) -> None:
        """Groups and hit rate must fit a window of ``requests`` requests (each group's first
        request is a miss): raise naming the key."""
        if self.groups > requests:
            raise ValueError(f"groups: {self.groups} groups need at least {self.groups} requests per window "
                             f"({where} is {requests})")
        if self.prefix_hit_rate is not None and round(self.prefix_hit_rate * requests) + self.groups > requests:
            best = (requests - self.groups) / requests
            raise ValueError(f"prefix_hit_rate: {self.prefix_hit_rate} is out of reach with {self.groups} groups "
                             f"and {requests} requests per window ({where}); at most {best:.3g}")


class TraceTask(TaskBase):
    workload: Literal["trace"]
    trace: str  # a JSONL trace file (servingbench.host.trace); a bare name may be one shipped in data/traces/
    format: Literal["servingbench", "mooncake"] = "servingbench"
    time_scale: float = Field(default=1.0, gt=0)  # offsets are multiplied by this (0.5: twice as fast)
    max_requests: int | None = Field(default=None, ge=1)  # the first N records of the trace
    max_in_flight: int = Field(default=256, ge=1)  # client-side cap; waiting for it counts as lateness
    max_lateness_ms: float = Field(default=10.0, gt=0)  # p99 dispatch lateness above this fails the cell

    @field_validator("trace")
    @classmethod
    def _exists(cls, v: str) -> str:
        if resolve_trace(v) is None:
            raise ValueError(f"no such trace file {v!r} (nor {TRACE_DIR.name}/{v} in the package)")
        return v

    @model_validator(mode="after")
    def _readable(self) -> "TraceTask":
        from servingbench.host.trace import read_trace

        read_trace(self.trace_path, self.max_requests, self.format)  # a bad line fails here, named
        return self

    @property
    def trace_path(self) -> Path:
        path = resolve_trace(self.trace)
        assert path is not None  # checked when the config was read
        return path


def resolve_trace(name: str) -> Path | None:
    """The trace file: the path as given (relative to the working directory), else the shipped
    trace of that name under servingbench/data/traces/."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = TRACE_DIR / name
    return shipped if not path.is_absolute() and shipped.is_file() else None


def workload_of(task: Any) -> str:
    """The workload kind of a task model (``prompts`` for the seed's tasks)."""
    return getattr(task, "workload", "prompts")


def task_discriminator(value: Any) -> str:
    """Which model validates a ``tasks.NAME`` entry: by its ``workload`` key (default prompts)."""
    return value.get("workload", "prompts") if isinstance(value, dict) else workload_of(value)


def cell_fields(task: Any) -> dict[str, Any]:
    """CellSpec fields a task kind sets beyond the run's: its workload kind and, for a trace,
    the replay's request count, in-flight cap and lateness limit. Nothing for the seed's tasks
    (so their specs, and Snakemake's view of them, do not change)."""
    kind = workload_of(task)
    if kind == "prompts":
        return {}
    fields: dict[str, Any] = {"workload": kind}
    if isinstance(task, TraceTask):
        from servingbench.host.trace import read_trace

        n = len(read_trace(task.trace_path, task.max_requests, task.format))
        # One replay of the trace: a repeat would send the same prompts again (a cache's gain).
        fields.update(requests=n, concurrency_levels=(task.max_in_flight,), max_lateness_ms=task.max_lateness_ms,
                      trials=1)
    return fields
