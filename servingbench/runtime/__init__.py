"""The in-container runtime: what runs inside a framework's container (the cell runner, the
load client, server lifecycle and pool, monitors, the result types, one adapter per framework
family). Standard library + httpx + psutil + pynvml, Python 3.10; nothing here imports
servingbench.host (tests/test_runtime_split.py checks every module of this folder)."""
