"""Build any task's workload file: one entry point over the task kinds' builders (host side).

Each kind has its own module (single-turn prompts: :mod:`servingbench.host.workloads`; conversations and
shared prefixes: :mod:`servingbench.host.prefix_workloads`; traces: :mod:`servingbench.host.trace_workloads`);
they all build on ``workloads``, so the choice between them lives here, above them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from servingbench.host import prefix_workloads, trace_workloads
from servingbench.host.config import Config
from servingbench.host.workloads import WorkloadError, build_prompt_workload

_BUILDERS = {"prompts": build_prompt_workload, "multiturn": prefix_workloads.build_multiturn,
             "shared_prefix": prefix_workloads.build_shared_prefix, "trace": trace_workloads.build_trace_workload}


def build_workload(cfg: Config, model: str, task: str, model_dir: str | Path,
                   out_path: str | Path) -> list[dict[str, Any]]:
    """Write task ``task``'s workload for ``model`` to ``out_path`` (JSONL); return the records."""
    if task not in cfg.tasks:
        raise WorkloadError(f"unknown task {task!r}; allowed: {', '.join(cfg.tasks)}")
    return _BUILDERS[getattr(cfg.tasks[task], "workload", "prompts")](cfg, model, task, model_dir, out_path)
