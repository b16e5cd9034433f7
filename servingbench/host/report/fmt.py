"""Number formatting for the page: readable figures, never a silent blank."""

from __future__ import annotations

import math
from typing import Any

MISSING = "—"
MIB = 2**20


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def num(v: Any, sig: int = 3) -> str:
    """About ``sig`` significant digits, thousands separated, no scientific notation."""
    if not is_num(v):
        return MISSING
    if isinstance(v, int):  # counts stay whole numbers
        return f"{v:,d}"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 10 ** (sig - 1):
        return f"{v:,.0f}"
    decimals = sig - 1 - math.floor(math.log10(a))
    return f"{v:,.{max(decimals, 0)}f}"


def mib(v: Any) -> str:
    """Bytes as MiB."""
    return num(v / MIB) if is_num(v) else MISSING


def ratio(v: Any) -> str:
    return f"{num(v)}×" if is_num(v) else MISSING


def pct(v: Any) -> str:
    return f"{num(v)} %" if is_num(v) else MISSING
