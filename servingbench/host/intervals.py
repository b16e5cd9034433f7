"""95% intervals for the figures the report shows in a headline or a ranking (host side).

- **Over a window's requests**: a percentile bootstrap (Efron): resample the window's values
  with replacement ``RESAMPLES`` times, compute the statistic on each resample, and take the
  2.5th and 97.5th percentiles of those. Seeded from the figure's own name
  (``seed_for``), so the same results give the same interval, and two figures never share draws.
  This is what ``scipy.stats.bootstrap(method="percentile")`` computes; scipy is not a
  dependency of the kit, so it is written here with numpy (vectorised, chunked).
- **Over repeated windows** (``run.trials`` N >= 2): a Student-t interval of the mean of the N
  window figures: it also covers what changes between windows (server state, the machine),
  which resampling one window's requests cannot see.
- **Support**: a percentile is shown only where its sample supports it (servingbench.runtime.slo:
  p50 needs 2 values, p90 10, p99 100) and gets an interval only with at least
  ``MIN_INTERVAL_N`` values as well. Six is the least for which even the range of the sample
  covers the median with 95% (1 - 2 x 0.5^6 = 0.97); below it no honest 95% interval exists.
  A bootstrap interval of a tail percentile from near its minimum sample cannot reach past the
  largest value seen: read it as the least uncertainty there is.
"""

from __future__ import annotations

import hashlib
import math
from typing import Callable, Iterable, Sequence

import numpy as np

from servingbench.runtime.slo import min_samples

CONFIDENCE = 0.95
RESAMPLES = 2000
MIN_INTERVAL_N = 6
_CHUNK = 4_000_000  # resampled values held at once (32 MB of float64)
# Two-sided 95% Student-t quantiles t(0.975, df) for df = 1..30 (any statistics table).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]
STATS = ("p50", "p90", "p99", "mean")

Interval = tuple[float, float]


def seed_for(*parts: object) -> int:
    """A stable seed from a figure's identity (file, window, metric, statistic)."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "little")


def quantile_of(stat: str) -> float | None:
    """'p90' -> 90.0; 'mean' -> None."""
    return float(stat[1:]) if stat.startswith("p") and stat[1:].replace(".", "", 1).isdigit() else None


def shown(n: int, stat: str) -> bool:
    """May the page show this statistic of n values? (percentiles need their support)"""
    q = quantile_of(stat)
    return n >= 1 if q is None else n >= min_samples(q)


def why_not_shown(n: int, stat: str) -> str:
    q = quantile_of(stat)
    need = 1 if q is None else min_samples(q)
    return f"{stat} of {n} value{'s' if n != 1 else ''}: needs at least {need}"


def has_interval(n: int, stat: str) -> bool:
    return shown(n, stat) and n >= MIN_INTERVAL_N


def _stat_fn(stat: str) -> Callable[[np.ndarray], np.ndarray]:
    """The statistic along the last axis of a (resamples, n) array."""
    q = quantile_of(stat)
    if q is not None:
        return lambda a: np.percentile(a, q, axis=-1)  # linear interpolation, as servingbench.runtime.metrics
    if stat == "mean":
        return lambda a: a.mean(axis=-1)
    raise ValueError(f"no bootstrap for statistic {stat!r}")


def _resampled(values: np.ndarray, stat: str, rng: np.random.Generator, resamples: int) -> np.ndarray:
    fn, n = _stat_fn(stat), len(values)
    per = max(1, _CHUNK // max(n, 1))
    out = []
    for start in range(0, resamples, per):
        idx = rng.integers(0, n, size=(min(per, resamples - start), n))
        out.append(fn(values[idx]))
    return np.concatenate(out)


def bootstrap(values: Iterable[float], stat: str, seed: int, resamples: int = RESAMPLES) -> Interval | None:
    """95% percentile-bootstrap interval of ``stat`` (p50, p90, p99, mean) of ``values``;
    None where the sample cannot carry one (``has_interval``)."""
    arr = np.asarray([float(v) for v in values], dtype=float)
    if not has_interval(len(arr), stat):
        return None
    stats = _resampled(arr, stat, np.random.default_rng(seed), resamples)
    lo, hi = np.percentile(stats, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
    return float(lo), float(hi)


def bootstrap_geomean(samples: Sequence[Iterable[float]], stat: str, seed: int,
                      resamples: int = RESAMPLES) -> Interval | None:
    """Interval of the geometric mean over several samples (e.g. one per task) of ``stat`` of
    each: every sample is resampled on its own, and the geometric mean taken per resample."""
    arrays = [np.asarray([float(v) for v in s], dtype=float) for s in samples]
    if not arrays or any(not has_interval(len(a), stat) for a in arrays):
        return None
    rng = np.random.default_rng(seed)
    logs = np.zeros(resamples)
    for a in arrays:
        per = _resampled(a, stat, rng, resamples)
        if (per <= 0).any():
            return None
        logs += np.log(per)
    g = np.exp(logs / len(arrays))
    lo, hi = np.percentile(g, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
    return float(lo), float(hi)


def t_quantile(df: int) -> float:
    """t(0.975, df): the table up to 30, then the Cornish-Fisher series (error < 1e-3)."""
    if df < 1:
        raise ValueError("t quantile needs df >= 1")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values: Iterable[float]) -> Interval | None:
    """95% Student-t interval of the mean of repeated-window figures (needs >= 2)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if len(vals) < 2:
        return None
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    half = t_quantile(len(vals) - 1) * sd / math.sqrt(len(vals))
    return mean - half, mean + half


def overlap(a: Interval | None, b: Interval | None) -> bool | None:
    """Do two intervals overlap? None when either is missing (no claim either way)."""
    if a is None or b is None:
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def ranks(bounds: Sequence[tuple[float, float]], better: str = "higher") -> list[int]:
    """Each figure's rank from its 95% interval (low, high; math.inf for no upper bound): 1 + the
    number of figures *surely* better, i.e. whose whole interval lies beyond its own.

    Figures whose intervals overlap cannot be ordered, so they share a rank; the next rank counts
    every figure surely ahead: two tied leaders and a third behind both read 1, 1, 3 (standard
    competition ranking, as in sports tables and as MLPerf- or GuideLLM-style readers compare
    frameworks: "how many are better than this one?"). Dense ranking (1, 1, 2) would call the third
    second-best although two figures beat it. Overlap is not transitive (A overlaps B, B overlaps
    C, A is clear of C), so ties are not chained through neighbours: counting the figures surely
    ahead (the rule of LMSYS Chatbot Arena's leaderboard) gives A 1, B 1, C 2, since only A is
    surely better than C. Two figures with the same rank always overlap each other."""
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', not {better!r}")
    ahead = (lambda other, me: other[0] > me[1]) if better == "higher" else (lambda other, me: other[1] < me[0])
    return [1 + sum(1 for j, other in enumerate(bounds) if j != i and ahead(other, me)) for i, me in enumerate(bounds)]
