"""The leftover scan itself: it must see what a case leaves behind, or its silence means nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

from tests.reliability.conftest import MARK, listening_ports, suspects
from tests.reliability.standins import wait_for

LISTENER = ("import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
            "print(s.getsockname()[1], flush=True); time.sleep(60)")


def test_the_scan_finds_a_detached_server_and_its_port(tmp_path):
    """A process in its own session (as servers and keepers are), reparented away from the
    test, found through the case marker it inherited; its listening port found too."""
    case = os.environ[MARK]
    # A double fork: the listener's parent exits at once, so it no longer descends from us.
    launcher = subprocess.run(
        [sys.executable, "-c", "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', sys.argv[1]], "
         "stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True); print(p.pid); print(p.stdout.readline().decode().strip())",
         LISTENER], capture_output=True, text=True, timeout=30, cwd="/")
    pid, port = (int(x) for x in launcher.stdout.split())
    try:
        found = suspects(case, tmp_path, baseline_children=set())
        assert pid in [p.pid for p in found]
        assert wait_for(lambda: listening_ports({pid}).get(pid) == [port], 5)
        # Without the marker and outside the tmp dir, the same process is not ours to judge.
        assert pid not in [p.pid for p in suspects("another-case", tmp_path, set())]
    finally:
        psutil.Process(pid).kill()
        psutil.wait_procs([psutil.Process(pid)], timeout=10)
