"""The monitor may not slow the server it measures: GPU queries are bounded (issue 17).

A stand-in GPU object counts the NVML queries the monitor makes; its figures are known exactly.
"""

from __future__ import annotations

import os
import threading
import time

from servingbench.runtime.monitor import GPU_MIN_INTERVAL_S, Monitor


class CountingGPU:
    """Answers like servingbench.runtime.monitor.GPU and counts every query (a stand-in for NVML)."""

    available = True
    unavailable_reason = None
    info = {"device_name": "stand-in"}

    def __init__(self, energy: bool = True) -> None:
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        self.has_energy = energy
        self.t0 = time.monotonic()

    def _count(self, name: str) -> None:
        with self.lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    def used_bytes(self) -> int:
        self._count("used_bytes")
        return 1 << 30

    def utilization_pct(self) -> float:
        self._count("utilization_pct")
        return 50.0

    def power_w(self) -> float:
        self._count("power_w")
        return 200.0

    def energy_mj(self) -> int | None:
        self._count("energy_mj")
        # A steady 250 W: millijoules since the object was made.
        return int(250_000 * (time.monotonic() - self.t0)) if self.has_energy else None


def _run(gpu: CountingGPU, seconds: float, interval_s: float = 0.01) -> Monitor:
    mon = Monitor(os.getpid, gpu, interval_s).start()
    time.sleep(seconds)
    mon.stop()
    return mon


def test_gpu_is_polled_at_most_once_a_second_whatever_the_host_interval() -> None:
    gpu = CountingGPU()
    mon = _run(gpu, 1.5)
    assert len(mon.samples.host_rss) >= 20  # the host side still samples at its own interval
    # 1.5 s: polls at 0 and 1 s, plus the closing sample at stop.
    assert gpu.calls["used_bytes"] <= 1.5 / GPU_MIN_INTERVAL_S + 2
    assert gpu.calls["utilization_pct"] == gpu.calls["used_bytes"]
    assert gpu.calls["energy_mj"] == 2  # start and stop only
    assert "power_w" not in gpu.calls  # mean power comes from the energy counter


def test_mean_power_is_energy_over_time_where_the_gpu_counts_energy() -> None:
    mon = _run(CountingGPU(), 0.3)
    s = mon.summary(None, None, output_tokens=10)
    assert abs(s.gpu.power_mean_w - 250.0) < 25.0
    assert s.gpu.energy_j > 0 and s.gpu.samples >= 1


def test_without_an_energy_counter_power_is_polled_on_the_gpu_schedule() -> None:
    gpu = CountingGPU(energy=False)
    mon = _run(gpu, 0.3)
    assert 1 <= gpu.calls["power_w"] <= 3
    assert mon.summary(None, None, 10).gpu.power_mean_w == 200.0
