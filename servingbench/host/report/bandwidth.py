"""The memory-bandwidth floor of decoding: a batch-1 decode step must read every weight once.

floor (ms per token) = weight bytes / memory bandwidth, with weight bytes = parameters x bytes per
parameter of the dtype. A TPOT below the floor is physically impossible for these weights and
points at a measurement or token-count error. KV-cache reads are not counted, so the true floor
is higher still; the figure is a lower bound. Sync cells have no TPOT; their figure is E2E per
output token (sum of E2E over sum of output tokens in a window), which includes prefill and any
queueing, so it sits further above the floor but can no more fall below it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from servingbench.host.aggregate import Entry
from servingbench.runtime.records import WindowSummary
from servingbench.host.report.data import ReportData

# Peak memory bandwidth, bytes/s, from NVIDIA's data sheets. Order matters: first match wins.
KNOWN_GPUS: list[tuple[str, str, float]] = [
    ("H200", r"\bh200\b", 4800e9),
    ("H100 PCIe", r"\bh100\b.*\bpcie\b", 2000e9),
    ("H100 SXM", r"\bh100\b.*\b(sxm\w*|hbm3)\b", 3350e9),
    ("A100 80GB PCIe", r"\ba100\b.*\b80\s?gb\b.*\bpcie\b|\ba100-pcie-80gb\b", 1935e9),
    ("A100 80GB", r"\ba100\b.*\b80\s?gb\b", 2039e9),
    ("A100 40GB", r"\ba100\b", 1555e9),
    ("A10G", r"\ba10g\b", 600e9),
    ("L4", r"\bl4\b", 300e9),
]
BYTES_PER_DTYPE = {"float16": 2, "fp16": 2, "half": 2, "bfloat16": 2, "bf16": 2,
                   "float32": 4, "fp32": 4, "float": 4, "int8": 1, "fp8": 1}
_SCALE = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def gpu_bandwidth(device_name: str | None) -> tuple[str, float] | None:
    """(table name, bytes/s) of a device name as NVML reports it, or None when unknown."""
    if not device_name:
        return None
    name = device_name.lower().replace("_", " ")
    for label, pattern, bw in KNOWN_GPUS:
        if re.search(pattern, name):
            return label, bw
    return None


def parse_params(text: str) -> float | None:
    """'6.7B' -> 6.7e9, '124M' -> 1.24e8; None when not of that form."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMBGT])\s*", text or "", re.IGNORECASE)
    return float(m.group(1)) * _SCALE[m.group(2).upper()] if m else None


@dataclass
class FloorRow:
    label: str
    model: str
    arm: str
    task: str
    source: str
    concurrency: int
    gpu: str
    bandwidth_gb_s: float  # the floor's divisor: measured on this GPU when results hold it, else the data sheet's
    bandwidth_source: str  # "measured" or "data sheet"
    datasheet_gb_s: float
    weight_gb: float
    dtype: str
    floor_ms: float
    mode: str
    # stream: TPOT p50 and min; sync: E2E per output token over the window (no min).
    per_token_ms: float | None
    per_token_min_ms: float | None

    @property
    def metric(self) -> str:
        return "TPOT" if self.mode == "stream" else "E2E per output token"

    @property
    def p50_pct(self) -> float | None:
        return None if self.per_token_ms is None else 100.0 * self.per_token_ms / self.floor_ms

    @property
    def min_pct(self) -> float | None:
        return None if self.per_token_min_ms is None else 100.0 * self.per_token_min_ms / self.floor_ms

    @property
    def below_floor(self) -> bool:
        return any(p is not None and p < 100.0 for p in (self.p50_pct, self.min_pct))


def device_name(e: Entry) -> str | None:
    if e.result is None:
        return None
    gpu = e.result.memory.gpu
    return (gpu.device_name if gpu else None) or e.result.provenance.device_name


def measured_bandwidth(data: ReportData, name: str | None) -> tuple[float, str] | None:
    """(bytes/s, "measured") from results/gpu-bandwidth.json when it was measured on a GPU of
    this name, else None. The floor then divides by what this GPU achieves, which is below its
    data sheet's peak (an H200: ~4.3 of 4.8 TB/s), so the floor is higher and tighter."""
    m = data.gpu_bandwidth
    if m is None or not name or m.device_name != name or not m.copy_gb_s:
        return None
    return m.copy_gb_s * 1e9, "measured"


def floor_rows(data: ReportData) -> tuple[list[FloorRow], list[str]]:
    """One row per cell window on a known GPU, and notes on what could not be computed."""
    rows: list[FloorRow] = []
    notes: set[str] = set()
    for e in data.ok:
        if e.kind != "cell" or e.device != "cuda":
            continue
        name = device_name(e)
        known = gpu_bandwidth(name)
        if known is None:
            notes.add(f"GPU {name!r} is not in the bandwidth table; no floor for its cells." if name
                      else "A CUDA cell recorded no GPU name; no floor for it.")
            continue
        params = parse_params(data.cfg.models[e.model].params)
        dtype = str(e.result.spec.get("server", {}).get("dtype", "")).lower()
        nbytes = BYTES_PER_DTYPE.get(dtype)
        if params is None or nbytes is None:
            notes.add(f"{e.model}: cannot size the weights (params {data.cfg.models[e.model].params!r}, "
                      f"dtype {dtype!r}); no floor.")
            continue
        label, sheet = known
        bw, source = measured_bandwidth(data, name) or (sheet, "data sheet")
        weight_bytes = params * nbytes
        for w in data.windows(e):
            if e.mode == "stream":
                per_token, per_token_min = (w.tpot_ms.p50, w.tpot_ms.min) if w.tpot_ms else (None, None)
            else:
                per_token, per_token_min = _e2e_per_token_ms(w), None
            rows.append(FloorRow(
                label=e.label, model=e.model, arm=e.arm, task=e.task, source=data.source(e),
                concurrency=w.concurrency, gpu=f"{label} ({name})", bandwidth_gb_s=bw / 1e9,
                bandwidth_source=source, datasheet_gb_s=sheet / 1e9,
                weight_gb=weight_bytes / 1e9, dtype=dtype, floor_ms=weight_bytes / bw * 1000.0,
                mode=e.mode, per_token_ms=per_token, per_token_min_ms=per_token_min))
    return rows, sorted(notes)


def _e2e_per_token_ms(w: WindowSummary) -> float | None:
    """Sum of E2E over sum of output tokens of a window's completed requests."""
    e2e, tokens = w.e2e_ms, w.output_tokens_actual_total
    if e2e is None or not e2e.n or not tokens:
        return None
    return e2e.mean * e2e.n / tokens


def floor_grid(rows: list[FloorRow]) -> dict[str, Any]:
    """The rows laid out for the page: one floor per model and GPU; per mode, one line per
    arm x task with a column per concurrency level (the per-model figures would otherwise repeat
    on every line)."""
    floors: dict[tuple[str, str], FloorRow] = {}
    lines: dict[tuple[str, str, str, str], dict[int, FloorRow]] = {}
    for r in rows:
        floors.setdefault((r.model, r.gpu), r)
        lines.setdefault((r.mode, r.model, r.arm, r.task), {})[r.concurrency] = r
    levels = sorted({r.concurrency for r in rows})
    order = {name: i for i, name in enumerate(dict.fromkeys(x for r in rows for x in (r.model, r.arm, r.task)))}
    keys = sorted(lines, key=lambda k: (order[k[1]], order[k[2]], order[k[3]]))  # model first, then arm

    def laid_out(mode: str) -> list[dict[str, Any]]:
        out = []
        for k in keys:
            if k[0] == mode:
                by_level = lines[k]
                out.append({"model": k[1], "arm": k[2], "task": k[3], "by_level": by_level,
                            "below": any(r.below_floor for r in by_level.values()),
                            "source": next(iter(by_level.values())).source})
        return out

    return {"floors": list(floors.values()), "levels": levels,
            "lines": laid_out("stream"), "sync_lines": laid_out("sync")}


def known_gpu_table() -> list[tuple[str, float]]:
    return [(label, bw / 1e9) for label, _, bw in KNOWN_GPUS]
