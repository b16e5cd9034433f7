"""What was run, where and with what: collected from the result files' own provenance."""

from __future__ import annotations

from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from servingbench.runtime.records import GpuSummary
from servingbench.host.report.data import ReportData

FRAMEWORK_FIELDS = ("maker", "install", "serving", "streaming", "batching", "optimisation", "fit")


def _values(items: list[Any]) -> str:
    """One value, or each distinct value with how many cells reported it."""
    counts = Counter(str(v) for v in items if v not in (None, ""))
    if not counts:
        return "not recorded"
    if len(counts) == 1:
        return next(iter(counts))
    return "; ".join(f"{v} ({n} cells)" for v, n in counts.most_common())


def run_facts(data: ReportData) -> list[tuple[str, str]]:
    """(label, value) rows about the whole run."""
    results = [e.result for e in data.ok]
    prov = [r.provenance for r in results]
    gpus = [r.memory.gpu or GpuSummary() for r in results]
    started = sorted(p.started_at for p in prov if p.started_at)
    finished = sorted(p.finished_at for p in prov if p.finished_at)
    gpu_reason = _values([r.memory.gpu_unavailable_reason for r in results])
    device = _values([p.device_name or g.device_name for p, g in zip(prov, gpus)])
    if device == "not recorded" and data.cfg.device == "cpu":
        device = f"none (CPU run; {gpu_reason})"
    total = _values([g.device_total_bytes and f"{g.device_total_bytes / 2**30:.1f} GiB" for g in gpus])
    return [
        ("Run window", f"{started[0]} → {finished[-1]}" if started and finished else "no finished cell"),
        ("Device", data.cfg.device + (f" — weights: {data.cfg.weights}" if data.cfg.weights else "")),
        ("GPU", device),
        ("GPU memory", total),
        ("Driver", _values([p.driver or g.driver for p, g in zip(prov, gpus)])),
        ("CUDA", _values([p.cuda or g.cuda_driver for p, g in zip(prov, gpus)])),
        ("Host", _values([p.host for p in prov])),
        ("CPU", _values([p.cpu for p in prov])),
        ("Python", _values([p.versions.get("python") for p in prov])),
        ("servingbench", _values([p.servingbench_version for p in prov])),
        ("Git commit", _values([p.git_commit for p in prov])),
        ("Config hash (results)", _values([p.config_hash for p in prov])),
        ("Config hash (this report)", data.config_hash),
        ("Container profile", f"{data.cfg.profile} (results: {_values([p.profile for p in prov])})"),
    ]


def weights_text(w: dict[str, Any] | None) -> str | None:
    """What a server loaded, as its result recorded it: path, format, dtype and full checksums."""
    if not w:
        return None
    sums = w.get("sha256")
    if isinstance(sums, dict):
        sums = ", ".join(f"{name} sha256:{digest}" for name, digest in sorted(sums.items()))
    elif sums:
        sums = f"sha256:{sums}"
    kind = " ".join(str(w[k]) for k in ("format", "dtype") if w.get(k))
    return f"{w.get('path')}" + (f" ({kind})" if kind else "") + (f": {sums}" if sums else
                                                               " (no checksum recorded)")


def arm_facts(data: ReportData) -> list[dict[str, str]]:
    """Per arm: framework, version, image and the versions of its stack."""
    rows = []
    for arm, spec in data.cfg.frameworks.items():
        prov = [e.result.provenance for e in data.ok if e.arm == arm]
        dists = sorted({k for p in prov for k in p.versions if k != "python"})
        stack = "; ".join(f"{k} {_values([p.versions.get(k) for p in prov])}" for k in dists)
        kernels = [p.framework_kernels for p in prov]
        per_model = "; ".join(f"{m} only: {' '.join(a)}" for m, a in spec.model_server_args.items())
        rows.append({
            "arm": arm, "framework": spec.framework,
            "version": _values([p.framework_version for p in prov])
            + (f" (kernels: {_values(kernels)})" if any(kernels) else ""),
            "image": (_values([p.image for p in prov]) if any(p.image for p in prov)
                      else "none (host environment)") if prov else "no finished cell",
            "stack": stack or "not recorded",
            "weights": _values([weights_text(p.weights) for p in prov]),
            "server_args": (" ".join(spec.server_args) or "(defaults)") + (f"; {per_model}" if per_model else ""),
            "env": " ".join(f"{k}={v}" for k, v in spec.env.items()) or "—",
        })
    return rows


def matrix(data: ReportData) -> dict[str, Any]:
    cfg = data.cfg
    counts = Counter(e.status for e in data.entries)
    n_cells = sum(1 for e in data.entries if e.kind == "cell")
    return {
        "arms": list(cfg.frameworks), "models": list(cfg.models), "tasks": list(cfg.tasks), "modes": list(cfg.modes),
        "n_cells": n_cells, "n_sweeps": len(data.entries) - n_cells,
        "ok": counts.get("ok", 0), "failed": counts.get("failed", 0), "missing": counts.get("missing", 0),
        "model_rows": [{"model": m, "hf_id": s.hf_id, "params": s.params, "dtype": s.dtype or cfg.run.dtype,
                        "context": min(s.context_length, cfg.run.max_model_len)} for m, s in cfg.models.items()],
        "task_rows": [{"task": t, "input": f"{s.input_tokens[0]}–{s.input_tokens[1]}",
                       "output": f"{s.output_tokens[0]}–{s.output_tokens[1]}",
                       "generation": [(m, cfg.generation[m][t]) for m in cfg.models]} for t, s in cfg.tasks.items()],
        "run": cfg.run, "sweeps": cfg.sweeps,
    }


def load_frameworks(matrix_spec_path: str | Path | None = None) -> dict[str, dict[str, str]]:
    """The ``frameworks:`` comparison of matrix.yaml (the packaged copy unless a path is given)."""
    if matrix_spec_path is not None:
        text = Path(matrix_spec_path).read_text(encoding="utf-8")
    else:
        text = resources.files("servingbench").joinpath("data/frameworks.yaml").read_text(encoding="utf-8")
    doc = yaml.safe_load(text) or {}
    block = doc.get("frameworks", doc)
    if not isinstance(block, dict):
        raise ValueError(f"{matrix_spec_path or 'servingbench/data/frameworks.yaml'}: no `frameworks:` mapping")
    return block


def load_added_frameworks() -> dict[str, dict[str, str]]:
    """The packaged descriptions of frameworks the kit measures beyond the users' matrix."""
    text = resources.files("servingbench").joinpath("data/frameworks.yaml").read_text(encoding="utf-8")
    return (yaml.safe_load(text) or {}).get("added") or {}


def framework_table(data: ReportData, spec: dict[str, dict[str, str]],
                    added: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """Rows of the users' comparison plus two rows of what this run measured; a framework the
    users' matrix lacks gets a column of the kit's own description when one of its arms ran."""
    added = load_added_frameworks() if added is None else added
    in_run = {s.framework for s in data.cfg.frameworks.values()}
    extra = {n: d for n, d in added.items() if n not in spec and n in in_run}
    spec = {**spec, **extra}
    names = list(spec)
    rows = [(f, [str(spec[n].get(f, "")) for n in names]) for f in FRAMEWORK_FIELDS]
    if extra:
        rows.append(("in the users' comparison", ["no: the kit's description" if n in extra else "yes"
                                                  for n in names]))
    arms = {n: [a for a, s in data.cfg.frameworks.items() if s.framework == n] for n in names}
    measured = []
    for n in names:
        prov = [e.result.provenance for e in data.ok if e.framework == n]
        measured.append("not in this run" if not arms[n] else
                        _values([p.framework_version for p in prov]) if prov else "no finished cell")
    rows.append(("arms in this run", [", ".join(arms[n]) or "none" for n in names]))
    rows.append(("version measured", measured))
    return {"names": names, "rows": rows}
