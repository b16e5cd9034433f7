"""Background samplers: host RSS of the server's whole process tree (psutil) and, when an
NVIDIA GPU is visible, device memory, utilisation, power and energy (pynvml).

On a machine without a GPU the GPU part says why it has no figures; it never reports zeros
as measurements. Runtime module: standard library + psutil + pynvml.

Why the GPU is polled at most once a second (``GPU_MIN_INTERVAL_S``) whatever the host
interval: every NVML query is a request to the driver that the measured server's CUDA calls
can wait behind; polling at 10 Hz slowed a batch-1 ``generate`` loop on an H100 by 10-25 %
(scripts/device/diag_step_jitter.py) and three queries per poll were made then. Mean power
now comes from the energy counter (read at start and stop only) where the GPU has one, so a
poll asks for memory and utilisation alone. docs/transformers-fidelity.md has the figures.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil

from servingbench.runtime.records import GpuSummary, MemorySummary


def tree_rss_bytes(root_pid: int) -> tuple[int, int]:
    """(summed RSS in bytes, process count) of a process and all its descendants."""
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total, count = 0, 0
    for p in procs:
        try:
            total += p.memory_info().rss
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total, count


def visible_device(env: dict[str, str] | None = None) -> int | str | None:
    """The device the server's CUDA sees first, as NVML names it: an NVML index, a UUID
    (``GPU-…``/``MIG-…``), or None when ``CUDA_VISIBLE_DEVICES`` hides every device.

    NVML ignores ``CUDA_VISIBLE_DEVICES`` and numbers devices by PCI bus order; CUDA numbers
    them fastest first unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``. On a host of identical GPUs the
    two orders agree; a mixed host must set ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (or name UUIDs) so
    that the energy and memory measured are the measured server's GPU, not its neighbour's.
    """
    value = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return 0
    first = value.split(",")[0].strip()
    if first == "" or first == "-1":
        return None
    return int(first) if first.isdigit() else first


class GPU:
    """A thin pynvml handle for the device the server sees first (``visible_device``); None-safe."""

    def __init__(self, device: int | str | None = None) -> None:
        self.handle: Any = None
        self.unavailable_reason: str | None = None
        self.info: dict[str, Any] = {}
        device = visible_device() if device is None else device
        if device is None:
            self.unavailable_reason = "no NVIDIA GPU visible (CUDA_VISIBLE_DEVICES hides every device)"
            return
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = (pynvml.nvmlDeviceGetHandleByIndex(device) if isinstance(device, int)
                           else pynvml.nvmlDeviceGetHandleByUUID(device))
        except Exception as exc:  # NVML missing, no driver, no device: all mean "no GPU here"
            self.unavailable_reason = f"no NVIDIA GPU visible (pynvml: {exc})"
            return
        n = self.nvml
        name = n.nvmlDeviceGetName(self.handle)
        self.info = {
            "device_name": name.decode() if isinstance(name, bytes) else name,
            "device": str(device),
            "driver": _s(n.nvmlSystemGetDriverVersion()),
            "cuda_driver": _cuda_version(n),
            "device_total_bytes": int(n.nvmlDeviceGetMemoryInfo(self.handle).total),
        }

    @property
    def available(self) -> bool:
        return self.handle is not None

    def used_bytes(self) -> int:
        return int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def utilization_pct(self) -> float:
        return float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def power_w(self) -> float | None:
        try:
            return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0
        except Exception:
            return None

    def energy_mj(self) -> int | None:
        """Total energy counter in millijoules since driver load (Volta and newer)."""
        try:
            return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except Exception:
            return None


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _cuda_version(n: Any) -> str | None:
    try:
        v = n.nvmlSystemGetCudaDriverVersion()
        return f"{v // 1000}.{(v % 1000) // 10}"
    except Exception:
        return None


@dataclass
class Samples:
    host_rss: list[int] = field(default_factory=list)
    host_procs: list[int] = field(default_factory=list)
    gpu_used: list[int] = field(default_factory=list)
    gpu_util: list[float] = field(default_factory=list)
    gpu_power: list[float] = field(default_factory=list)


GPU_MIN_INTERVAL_S = 1.0  # NVML queries slow the measured server: see the module notes


class Monitor:
    """Samples in a daemon thread between start() and stop(): the host every ``interval_s``,
    the GPU every ``max(interval_s, GPU_MIN_INTERVAL_S)``."""

    def __init__(self, pid_fn: Callable[[], int | None], gpu: GPU | None, interval_s: float = 0.1) -> None:
        self.pid_fn, self.gpu, self.interval_s = pid_fn, gpu, interval_s
        self.gpu_interval_s = max(interval_s, GPU_MIN_INTERVAL_S)
        self.samples = Samples()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._energy0: int | None = None
        self._energy1: int | None = None
        self._t0 = self._t1 = 0.0
        self._next_gpu = 0.0

    @property
    def _gpu_on(self) -> bool:
        return self.gpu is not None and self.gpu.available

    def sample_once(self, gpu: bool = True) -> None:
        pid = self.pid_fn()
        if pid is not None:
            rss, count = tree_rss_bytes(pid)
            if count:
                self.samples.host_rss.append(rss)
                self.samples.host_procs.append(count)
        if gpu and self._gpu_on:
            self.samples.gpu_used.append(self.gpu.used_bytes())
            self.samples.gpu_util.append(self.gpu.utilization_pct())
            if self._energy0 is None:  # no energy counter: mean power from polled power
                p = self.gpu.power_w()
                if p is not None:
                    self.samples.gpu_power.append(p)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            due = now >= self._next_gpu
            if due:
                self._next_gpu = now + self.gpu_interval_s
            self.sample_once(gpu=due)
            self._stop.wait(self.interval_s)

    def start(self) -> "Monitor":
        if self._gpu_on:
            self._energy0 = self.gpu.energy_mj()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True, name="servingbench-monitor")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.sample_once()
        if self._gpu_on:
            self._energy1 = self.gpu.energy_mj()
        self._t1 = time.monotonic()

    @property
    def energy_j(self) -> float | None:
        if self._energy0 is None or self._energy1 is None:
            return None
        return (self._energy1 - self._energy0) / 1000.0

    @property
    def power_mean_w(self) -> float | None:
        """Energy over the monitored time where the GPU counts energy, else the polled mean."""
        energy = self.energy_j
        if energy is not None and self._t1 > self._t0:
            return energy / (self._t1 - self._t0)
        s = self.samples.gpu_power
        return sum(s) / len(s) if s else None

    def summary(self, gpu_before_load: int | None, gpu_after_load: int | None,
                output_tokens: int) -> MemorySummary:
        s = self.samples
        out = MemorySummary(
            host_rss_peak_bytes=max(s.host_rss) if s.host_rss else None,
            host_rss_mean_bytes=int(sum(s.host_rss) / len(s.host_rss)) if s.host_rss else None,
            host_processes_max=max(s.host_procs) if s.host_procs else None,
            host_samples=len(s.host_rss), gpu=None,
        )
        if self.gpu is None or not self.gpu.available:
            out.gpu_unavailable_reason = (self.gpu.unavailable_reason if self.gpu else "the cell ran on the CPU: no GPU was monitored")
            return out
        energy = self.energy_j
        out.gpu = GpuSummary(
            **self.gpu.info,
            device_used_before_load_bytes=gpu_before_load,
            device_used_after_load_bytes=gpu_after_load,
            device_used_peak_bytes=max(s.gpu_used) if s.gpu_used else None,
            utilization_mean_pct=sum(s.gpu_util) / len(s.gpu_util) if s.gpu_util else None,
            power_mean_w=self.power_mean_w,
            energy_j=energy,
            energy_per_output_token_j=energy / output_tokens if energy is not None and output_tokens else None,
            samples=len(s.gpu_used),
        )
        return out


def wait_quiet(seconds: float) -> None:
    time.sleep(seconds)
