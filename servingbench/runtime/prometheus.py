"""Read histogram totals from a Prometheus text exposition (a server's ``/metrics``). Runtime module.

Only what cells need: the ``_sum`` and ``_count`` of one histogram and the value of one counter,
summed over its label sets (one per engine, model name or priority class), so that the
difference of two scrapes gives what the server observed in between. Written by hand because the runtime may import
only the standard library, httpx, psutil and pynvml (prometheus_client is not among them).
"""

from __future__ import annotations

import math
import re

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)", re.M)


def sample_totals(text: str, names: set[str]) -> dict[str, float]:
    """Each sample in ``names`` summed over its label sets; samples absent from ``text`` are absent."""
    totals: dict[str, float] = {}
    for metric, value in _SAMPLE.findall(text):
        if metric not in names:
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number):
            totals[metric] = totals.get(metric, 0.0) + number
    return totals


def histogram_totals(text: str, name: str) -> tuple[float, float] | None:
    """(sum, count) of histogram ``name`` over every label set; None when it is absent."""
    found = sample_totals(text, {f"{name}_sum", f"{name}_count"})
    if len(found) < 2:
        return None
    return found[f"{name}_sum"], found[f"{name}_count"]


def counter_total(text: str, name: str) -> float | None:
    """Counter ``name`` (its ``_total`` sample) summed over every label set; None when absent."""
    return sample_totals(text, {f"{name}_total"}).get(f"{name}_total")
