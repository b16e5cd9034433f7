"""Measure the GPU's memory bandwidth once per results folder: the figure the report's
bandwidth floor divides by, beside the data sheet's.

Method: a device-to-device copy of a ``size_mib`` buffer, timed with CUDA events after warm-up
copies; each copy reads and writes every byte, so bandwidth = 2 x bytes / time (the convention of
NVIDIA's bandwidthTest and of STREAM's copy). The median of ``repeats`` copies is the figure, the
slowest and fastest go beside it. A torch program (like the naive server): it runs in the
Transformers image, not in the in-container runtime.
"""

from __future__ import annotations

import datetime as dt
import statistics
from pathlib import Path
from typing import Any

from servingbench.runtime.errors import UserError
from servingbench.runtime.records import GpuBandwidth, to_json
from servingbench.runtime.results import atomic_write_json


def measure(size_mib: int = 1024, repeats: int = 30, warmup: int = 5, device: str = "cuda") -> GpuBandwidth:
    """Copy bandwidth of ``device`` in GB/s (median, min, max over ``repeats`` copies)."""
    import torch

    if size_mib < 64 or repeats < 5:
        raise UserError("gpu-bandwidth: size_mib >= 64 and repeats >= 5 (smaller copies measure launch latency)")
    if not torch.cuda.is_available():
        raise UserError("gpu-bandwidth: no CUDA device is visible (torch.cuda.is_available() is False)")
    n = size_mib * 2**20
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    src.fill_(1)
    for _ in range(warmup):
        dst.copy_(src)
    torch.cuda.synchronize()
    rates = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        rates.append(2 * n / (start.elapsed_time(end) / 1e3) / 1e9)
    return GpuBandwidth(
        device_name=torch.cuda.get_device_name(device), copy_gb_s=statistics.median(rates),
        copy_gb_s_min=min(rates), copy_gb_s_max=max(rates), bytes_per_copy=n, repeats=repeats,
        method="device-to-device copy, CUDA events, 2 x bytes / time (read + write), median of repeats",
        torch=torch.__version__, measured_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def write(out: str | Path, **kwargs: Any) -> GpuBandwidth:
    """Measure and write the figure as JSON to ``out``; return it."""
    result = measure(**kwargs)
    atomic_write_json(out, to_json(result))
    return result
