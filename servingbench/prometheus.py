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


def histogram_totals(text: str, name: str) -> tuple[float, float] | None:
    """(sum, count) of histogram ``name`` over every label set; None when it is absent."""
    want = {f"{name}_sum": 0, f"{name}_count": 1}
    totals = [0.0, 0.0]
    found = [False, False]
    for metric, value in _SAMPLE.findall(text):
        slot = want.get(metric)
        if slot is None:
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number):
            totals[slot] += number
            found[slot] = True
    if not all(found):
        return None
    return totals[0], totals[1]


def counter_total(text: str, name: str) -> float | None:
    """Counter ``name`` (its ``_total`` sample) summed over every label set; None when absent."""
    want = f"{name}_total"
    total, found = 0.0, False
    for metric, value in _SAMPLE.findall(text):
        if metric != want:
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number):
            total, found = total + number, True
    return total if found else None
