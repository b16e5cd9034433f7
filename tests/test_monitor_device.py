"""The GPU the monitor measures is the GPU the server sees: on a host of several GPUs, a cell run
with ``CUDA_VISIBLE_DEVICES=1`` must read energy and memory from device 1, not device 0.

A stand-in ``pynvml`` module (two devices with known names) records which handle was asked for.
"""

from __future__ import annotations

import sys
import types

import pytest

from servingbench.runtime.monitor import GPU, visible_device


@pytest.mark.parametrize("value, expected", [
    (None, 0), ("1", 1), ("3,1", 3), (" 2 ", 2), ("", None), ("-1", None),
    ("GPU-8a3c0e4e-1f2b-4c5d-9e6f-0a1b2c3d4e5f", "GPU-8a3c0e4e-1f2b-4c5d-9e6f-0a1b2c3d4e5f"),
    ("MIG-5c1d,GPU-x", "MIG-5c1d"),
])
def test_visible_device_reads_the_first_entry_of_cuda_visible_devices(value, expected):
    env = {} if value is None else {"CUDA_VISIBLE_DEVICES": value}
    assert visible_device(env) == expected


@pytest.fixture
def two_gpu_nvml(monkeypatch):
    """A stand-in pynvml with two GPUs: index 0 'GPU zero' (UUID GPU-0), index 1 'GPU one'."""
    asked: list[object] = []
    names = {0: "GPU zero", 1: "GPU one"}
    uuids = {"GPU-0": 0, "GPU-1": 1}
    mod = types.ModuleType("pynvml")
    mod.nvmlInit = lambda: None

    def by_index(i):
        asked.append(i)
        if i not in names:
            raise RuntimeError("Invalid Argument")
        return i

    def by_uuid(u):
        asked.append(u)
        return uuids[u]

    mod.nvmlDeviceGetHandleByIndex = by_index
    mod.nvmlDeviceGetHandleByUUID = by_uuid
    mod.nvmlDeviceGetName = lambda h: names[h].encode()
    mod.nvmlSystemGetDriverVersion = lambda: b"580.0"
    mod.nvmlSystemGetCudaDriverVersion = lambda: 13000
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=(h + 1) << 30, used=h << 20)
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    return asked


def test_gpu_follows_cuda_visible_devices(two_gpu_nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    gpu = GPU()
    assert gpu.available and two_gpu_nvml == [1]
    assert gpu.info["device_name"] == "GPU one" and gpu.info["device"] == "1"
    assert gpu.info["device_total_bytes"] == 2 << 30 and gpu.used_bytes() == 1 << 20


def test_gpu_by_uuid_and_default(two_gpu_nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1,GPU-0")
    assert GPU().info["device_name"] == "GPU one"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert GPU().info["device_name"] == "GPU zero"
    assert two_gpu_nvml == ["GPU-1", 0]


def test_hidden_or_missing_device_is_unavailable_with_a_reason(two_gpu_nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    gpu = GPU()
    assert not gpu.available and "hides every device" in gpu.unavailable_reason
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    gpu = GPU()
    assert not gpu.available and "Invalid Argument" in gpu.unavailable_reason
