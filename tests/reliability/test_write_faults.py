"""Nothing measured is lost when results cannot be written.

Before a cell starts: ``--out`` naming a folder, a results folder that cannot be written
(read-only, its parent a file) or a disk nearly full stop it with one line, exit code 2, and
no server started. After it measured: a disk that filled up or turned read-only keeps the
result and every request record in a rescue folder (``$XDG_STATE_HOME/servingbench/rescued``,
else the system's temporary folder), leaves no orphan ``requests.jsonl``, and writes the
failure record where it can; the message says where both are.

Two ways to make a disk fail. A real one: ``tiny_disk.py`` mounts a tiny tmpfs in a private
mount namespace (``unshare -rm``: needs no root; skipped where user namespaces are off) and
fills it or remounts it read-only mid-cell. A simulated one, everywhere: ``os.fsync`` of a
file under the results folder raises ENOSPC or EROFS from a chosen moment on (every write of
the kit goes through results.atomic_write_bytes, which fsyncs).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from servingbench.runtime.cell import CellFailed, run_cell
from servingbench.runtime.providers import external_server
from servingbench.runtime.results import NotWritable, cell_path, failure_path, requests_path
from tests.reliability.conftest import MODEL, ROOT
from tests.reliability.standins import FaultServer
from tests.reliability.test_request_faults import naive_ok

pytestmark = pytest.mark.fault


class Disk:
    """Makes fsync of files under ``root`` fail with ``err`` once ``broken`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path, err: int = errno.ENOSPC,
                 only: str = "") -> None:
        self.root, self.err, self.only, self.broken = str(root.resolve()), err, only, False
        real = os.fsync

        def fsync(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if self.broken and path.startswith(self.root) and self.only in Path(path).name:
                raise OSError(self.err, os.strerror(self.err))
            return real(fd)

        monkeypatch.setattr(os, "fsync", fsync)


@pytest.fixture
def rescue(tmp_path, monkeypatch) -> Path:
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state / "servingbench" / "rescued"


def _spec(cell_spec_for, requests: int = 6):
    return cell_spec_for(mode="sync", requests=requests, request_timeout_s=5.0)


def _serve(disk: Disk | None = None, at: int = 2):
    def plan(path, body, n):
        if disk is not None and n == at:
            disk.broken = True
        return naive_ok(False)
    return FaultServer(plan)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _check_rescued(kept: Path, out: Path, requests: int) -> None:
    """The rescue folder holds the whole result and every measured request record."""
    result = json.loads((kept / out.name).read_text())
    assert result["status"] == "ok" and result["windows"][0]["requests"] == requests
    rows = [json.loads(x) for x in (kept / requests_path(out).name).read_text().splitlines()]
    assert len(rows) == requests and all(r["error"] is None for r in rows), [r["error"] for r in rows]
    assert (kept / "WHERE").read_text().strip() == str(out)


# -- before a cell starts -------------------------------------------------------------------------------
def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "servingbench.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _measure_args(url: str, spec, workload: Path, results: Path, out: Path, tmp: Path) -> list[str]:
    spec_file = tmp / "spec.json"
    spec_file.write_text(spec.to_json())
    return ["measure", "--url", url, "--spec", f"@{spec_file}", "--workload", str(workload),
            "--results", str(results), "--out", str(out)]


def _one_line_exit_2(res: subprocess.CompletedProcess, needle: str) -> None:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("servingbench: ") and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_out_naming_a_folder_stops_before_any_request(cell_spec_for, chat_workload, tmp_path):
    results = tmp_path / "results"
    out = cell_path(results, "transformers-naive", MODEL, "chat", "sync")
    out.mkdir(parents=True)
    with _serve() as srv:
        res = _cli(*_measure_args(srv.url, _spec(cell_spec_for), chat_workload, results, out, tmp_path))
        assert srv.count == 0
    _one_line_exit_2(res, f"--out {out}: is a folder")
    assert _files(results) == []


def test_out_below_a_file_stops_before_any_request(cell_spec_for, chat_workload, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "cells").write_text("not a folder")
    out = cell_path(results, "transformers-naive", MODEL, "chat", "sync")
    with _serve() as srv:
        res = _cli(*_measure_args(srv.url, _spec(cell_spec_for), chat_workload, results, out, tmp_path))
        assert srv.count == 0
    _one_line_exit_2(res, "cannot write there")
    assert _files(results) == ["cells"]


def test_missing_workload_stops_before_any_request(cell_spec_for, tmp_path):
    results = tmp_path / "results"
    out = cell_path(results, "transformers-naive", MODEL, "chat", "sync")
    with _serve() as srv:
        res = _cli(*_measure_args(srv.url, _spec(cell_spec_for), tmp_path / "nope.jsonl", results, out, tmp_path))
        assert srv.count == 0
    _one_line_exit_2(res, "nope.jsonl: cannot read the workload (No such file or directory)")
    assert not results.exists()


@pytest.mark.parametrize("err,needle", [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied"),
                                        (errno.ENOSPC, "No space left on device")])
def test_unwritable_results_folder_stops_before_the_server_starts(cell_spec_for, chat_workload, tmp_path,
                                                                 monkeypatch, err, needle):
    results = tmp_path / "results"
    disk = Disk(monkeypatch, results, err)
    disk.broken = True
    started = []
    out = cell_path(results, "transformers-naive", MODEL, "chat", "sync")
    with pytest.raises(NotWritable) as exc:
        run_cell(_spec(cell_spec_for), chat_workload, out, results, provider=lambda *a: started.append(a))
    assert started == [] and needle in str(exc.value) and "nothing was started" in str(exc.value)
    assert not [f for f in _files(results) if not f.startswith(".")] and not failure_path(out).exists()


def test_nearly_full_disk_stops_before_the_server_starts(cell_spec_for, chat_workload, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=20_000))
    started = []
    results = tmp_path / "results"
    out = cell_path(results, "transformers-naive", MODEL, "chat", "sync")
    with pytest.raises(NotWritable, match=r"only 0\.0 MiB free, and this cell's records need about"):
        run_cell(_spec(cell_spec_for), chat_workload, out, results, provider=lambda *a: started.append(a))
    assert started == []


# -- after it measured -----------------------------------------------------------------------------------
def test_full_disk_at_the_end_keeps_every_record(cell_spec_for, chat_workload, tmp_path, monkeypatch, rescue):
    results = tmp_path / "results"
    out = cell_path(results, "transformers-naive", MODEL, "chat", "sync")
    disk = Disk(monkeypatch, results)
    with _serve(disk) as srv, pytest.raises(CellFailed) as exc:
        run_cell(_spec(cell_spec_for), chat_workload, out, results, provider=external_server(srv.url))
    e = exc.value
    assert e.category == "write_failed" and e.kept is not None and e.kept.parent == rescue
    _check_rescued(e.kept, out, 6)
    msg = str(e)
    assert "No space left on device" in msg and f"kept in {e.kept}" in msg and "\n" not in msg
    # The results folder took nothing: no orphan requests file, no temp file; the failure record
    # went to the rescue folder and the message says so.
    assert _files(results) == []
    record = json.loads((e.kept / failure_path(out).name).read_text())
    assert record["category"] == "write_failed" and record["kept"] == str(e.kept)
    assert f"failure record in {e.kept / failure_path(out).name}" in msg
    assert record["requests"] == {"requests": 6, "completed": 6, "failed": 0, "errors": {}}


def test_result_write_failing_after_the_requests_file_leaves_no_orphan(cell_spec_for, chat_workload, tmp_path,
                                                                      monkeypatch, rescue):
    results = tmp_path / "results"
    out = cell_path(results, "transformers-naive", MODEL, "chat", "sync")
    disk = Disk(monkeypatch, results, errno.ENOSPC, only=f".{out.name}.")  # only the result file's temp
    with _serve(disk) as srv, pytest.raises(CellFailed) as exc:
        run_cell(_spec(cell_spec_for), chat_workload, out, results, provider=external_server(srv.url))
    assert exc.value.category == "write_failed"
    _check_rescued(exc.value.kept, out, 6)
    assert not requests_path(out).exists() and not out.exists()
    assert _files(results) == [str(failure_path(out).relative_to(results))]  # the record, in its place
    record = json.loads(failure_path(out).read_text())
    assert record["category"] == "write_failed" and record["kept"] == str(exc.value.kept)
    assert "failure record in" not in str(exc.value)


def test_results_and_state_folders_both_failing_fall_back_to_tmp(cell_spec_for, chat_workload, tmp_path,
                                                                monkeypatch, rescue):
    import tempfile

    results = tmp_path / "results"
    out = cell_path(results, "transformers-naive", MODEL, "chat", "sync")
    state = rescue.parent.parent
    state.mkdir(parents=True)
    (state / "servingbench").write_text("a file where the rescue folder would go")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    disk = Disk(monkeypatch, results)
    with _serve(disk) as srv, pytest.raises(CellFailed) as exc:
        run_cell(_spec(cell_spec_for), chat_workload, out, results, provider=external_server(srv.url))
    kept = exc.value.kept
    assert kept is not None and kept.parent == tmp_path / "tmp" / "servingbench-rescued"
    _check_rescued(kept, out, 6)


def test_nowhere_to_keep_anything_is_still_one_clear_failure(cell_spec_for, chat_workload, tmp_path, monkeypatch,
                                                              rescue):
    results = tmp_path / "results"
    out = cell_path(results, "transformers-naive", MODEL, "chat", "sync")
    disk = Disk(monkeypatch, tmp_path)  # results, the state folder and the temporary folder alike
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    with _serve(disk) as srv, pytest.raises(CellFailed) as exc:
        run_cell(_spec(cell_spec_for), chat_workload, out, results, provider=external_server(srv.url))
    msg = str(exc.value)
    assert exc.value.category == "write_failed" and exc.value.kept is None
    assert "its measured records could not be kept anywhere (tried" in msg and "no failure record could be written" in msg
    assert "\n" not in msg


# -- a real tiny disk -------------------------------------------------------------------------------------
def _unshare_works() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    res = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt 2>/dev/null || "
                          "mount -t tmpfs tmpfs /tmp"], capture_output=True, timeout=30)
    return res.returncode == 0


needs_unshare = pytest.mark.skipif(not _unshare_works(), reason="no user and mount namespaces here (unshare -rm)")


def _tiny_disk(fault: str, spec, workload: Path, tmp: Path, at: int = 2) -> dict:
    (tmp / "spec.json").write_text(spec.to_json())
    env = {**os.environ, "XDG_STATE_HOME": str(tmp / "state")}
    res = subprocess.run(["unshare", "-rm", sys.executable, str(Path(__file__).with_name("tiny_disk.py")), fault,
                          "--results", str(tmp / "results"), "--spec", str(tmp / "spec.json"), "--workload",
                          str(workload), "--report", str(tmp / "report.json"), "--at", str(at)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((tmp / "report.json").read_text())


@needs_unshare
@pytest.mark.parametrize("fault,needle", [("full", "No space left on device"), ("readonly", "Read-only file system")])
def test_real_disk_failing_mid_cell_keeps_every_record(cell_spec_for, chat_workload, tmp_path, fault, needle):
    spec = _spec(cell_spec_for)
    report = _tiny_disk(fault, spec, chat_workload, tmp_path)
    assert report["error"] == "CellFailed" and report["category"] == "write_failed", report
    assert needle in report["message"] and report["requests_served"] == 6
    kept = Path(report["kept"])
    assert kept.parent == tmp_path / "state" / "servingbench" / "rescued"
    _check_rescued(kept, cell_path(tmp_path / "results", spec.arm, spec.model, spec.task, spec.mode), 6)
    assert not [f for f in report["files"] if f.endswith((".json", ".jsonl", ".tmp"))], report["files"]
    assert (kept / "sync.failed.json").exists() and f"failure record in {kept}" in report["message"]


@needs_unshare
def test_real_read_only_results_folder_stops_before_any_request(cell_spec_for, chat_workload, tmp_path):
    report = _tiny_disk("readonly-before", _spec(cell_spec_for), chat_workload, tmp_path)
    assert report["error"] == "NotWritable" and report["requests_served"] == 0, report
    assert "Read-only file system" in report["message"] and "nothing was started" in report["message"]
    assert report["files"] == [] and not (tmp_path / "state").exists()
