"""The calibration's logic (benchmarks/): server-stamp rates, matching a client's requests to the
server's records, TTFT error, the quiet-machine check, and reading the peers' exports. No timing
is asserted; the one server test checks what the zero-work server records, not how fast."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import peers, quiet
from benchmarks.calibration_stats import (client_timed_rate, match_requests, pct, server_stamp_rate,
                                          window_figures)

REPO = Path(__file__).resolve().parent.parent
MS = 1_000_000


def srv(key, arrival_ms, sends_ms, rid=None):
    return {"key": key, "rid": rid, "arrival_ns": int(arrival_ms * MS), "send_ns": [int(t * MS) for t in sends_ms]}


def cli(p, ttft_ms, start_ms=0.0, end_ms=1.0, ok=True, measured=True, rid=None):
    return {"p": p, "rid": rid, "ok": ok, "measured": measured, "ttft_ms": ttft_ms,
            "start_ns": int(start_ms * MS), "end_ns": int(end_ms * MS)}


# ---- server-stamp rates ---------------------------------------------------------------------
def test_server_rate_runs_from_first_arrival_to_last_send():
    recs = [srv("a", 100, [110, 120]), srv("b", 105, [130, 140, 150]), srv("c", 120, [125, 300])]
    r = server_stamp_rate(recs)
    assert r["server_window_s"] == pytest.approx(0.200)  # 100 ms -> 300 ms
    assert r["server_req_per_s"] == pytest.approx(3 / 0.2)
    assert r["server_events_per_s"] == pytest.approx(7 / 0.2)
    assert (r["server_requests"], r["server_events"]) == (3, 7)


def test_server_rate_ignores_records_that_sent_nothing_and_has_none_without_records():
    r = server_stamp_rate([srv("a", 0, [10]), srv("b", 5, [])])
    assert r["server_requests"] == 1 and r["server_window_s"] == pytest.approx(0.010)
    empty = server_stamp_rate([])
    assert empty["server_req_per_s"] is None and empty["server_requests"] == 0


def test_server_rate_counts_requests_carried_into_the_window_by_their_last_send():
    # A tool's warm-up request w1 still streaming when the measured ones start (GuideLLM counts
    # it in its window); w0 ended before the window; z ends after it.
    window = [srv("m0", 100, [150, 200]), srv("m1", 120, [180, 300])]
    others = [srv("w0", 0, [50, 90]), srv("w1", 60, [110, 160]), srv("z", 290, [295, 400])]
    r = server_stamp_rate(window, window + others)
    assert r["server_window_s"] == pytest.approx(0.200)
    assert r["server_requests"] == 3  # m0, m1, w1
    assert r["server_events"] == 7    # every event sent in [100, 300]: 150 200 180 300 110 160 295
    assert r["server_req_per_s"] == pytest.approx(15.0)


def test_client_timed_rate_starts_at_first_send_not_at_task_creation():
    # Three requests sent 50 ms after the harness started creating tasks: the rate is over the
    # 100 ms from the first send to the last end, whatever the harness did before.
    reqs = [cli("a", 1, start_ms=50, end_ms=100), cli("b", 1, start_ms=60, end_ms=150),
            cli("c", 1, start_ms=70, end_ms=120), cli("w", 1, start_ms=0, end_ms=10, measured=False),
            cli("x", None, start_ms=55, end_ms=500, ok=False)]
    assert client_timed_rate(reqs) == pytest.approx(3 / 0.100)
    assert client_timed_rate([cli("x", None, ok=False)]) is None


# ---- matching -------------------------------------------------------------------------------
def test_match_by_request_id_when_prompts_repeat():
    server = [srv("same", 0, [5], rid="r1"), srv("same", 1, [9], rid="r2")]
    client = [cli("same", 8, rid="r2"), cli("same", 5, rid="r1")]
    pairs, counts = match_requests(client, server)
    assert {(c["rid"], s["rid"]) for c, s in pairs} == {("r1", "r1"), ("r2", "r2")}
    assert counts == {"unmatched": 0, "unclaimed": 0}


def test_match_by_prompt_pairs_repeats_in_order_only_when_counts_agree():
    server = [srv("a", 0, [1]), srv("a", 2, [3]), srv("b", 0, [1]), srv("b", 1, [2]), srv("warm", 0, [1])]
    client = [cli("a", 1), cli("a", 1), cli("b", 1)]  # "b" sent twice, reported once: ambiguous
    pairs, counts = match_requests(client, server)
    assert [(c["p"], s["arrival_ns"]) for c, s in pairs] == [("a", 0), ("a", 2 * MS)]
    assert counts == {"unmatched": 1, "unclaimed": 3}


def test_window_figures_ttft_error_and_rates_cover_measured_requests_only():
    server = [srv("w0", 0, [2, 3]),                       # the tool's warm-up
              srv("m0", 10, [12, 13]), srv("m1", 11, [14, 15]), srv("m2", 12, [13, 20]),
              srv("f0", 13, [14, 16])]                   # the client counted it failed
    client = [cli("w0", 9.0, measured=False),
              cli("m0", 2.5), cli("m1", 3.5), cli("m2", 1.25), cli("f0", None, ok=False)]
    fig = window_figures(client, server)
    assert (fig["requests"], fig["completed"], fig["failed"], fig["unmatched"]) == (4, 3, 1, 0)
    # server window over m0..m2: first arrival 10 ms, last send 20 ms; in it the server finished
    # m0, m1, m2 and f0 (it sent all of f0's events, whatever the client made of them); w0 ended
    # before the window opened
    assert fig["server_window_s"] == pytest.approx(0.010)
    assert fig["server_req_per_s"] == pytest.approx(400.0)
    assert fig["server_events_per_s"] == pytest.approx(8 / 0.010)
    # errors: 2.5-2, 3.5-3, 1.25-1 -> 0.25, 0.5, 0.5 (warm-up and failed excluded)
    assert fig["ttft_error_n"] == 3
    assert fig["ttft_error_ms_p50"] == pytest.approx(0.5)
    assert fig["ttft_error_ms_p99"] == pytest.approx(pct([0.25, 0.5, 0.5], 99))
    assert fig["server_ttft_ms_mean"] == pytest.approx(2.0)


def test_window_figures_count_a_completed_request_the_server_never_saw():
    fig = window_figures([cli("m0", 1.0), cli("ghost", 1.0)], [srv("m0", 0, [1])])
    assert fig["unmatched"] == 1 and fig["server_requests"] == 1


# ---- quiet-machine check --------------------------------------------------------------------
PROC_STAT = """cpu  300 0 100 5000 10 0 0 0 0 0
cpu0 100 0 50 2500 5 0 0 0 0 0
cpu1 200 0 50 2500 5 0 0 10 0 0
intr 1 2 3
"""
PSI = "some avg10=1.00 avg60=2.00 avg300=3.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"


def test_parse_proc_stat_and_psi():
    busy = quiet.parse_proc_stat(PROC_STAT, 100)
    assert busy == {0: pytest.approx(1.5), 1: pytest.approx(2.6)}  # user+system(+steal) / 100 Hz
    assert quiet.parse_psi_some_us(PSI) == 123456
    assert quiet.parse_psi_some_us("") is None


def reading(t_s, busy0, busy1, psi_us):
    return {"t_ns": int(t_s * 1e9), "busy_s": {0: busy0, 1: busy1}, "psi_some_us": psi_us}


def test_interval_shares_take_off_the_benchmarks_own_cpu():
    a, b = reading(0, 10.0, 20.0, 0), reading(2, 11.0, 21.8, 200_000)
    sh = quiet.interval_shares(a, b, {0: 0.9, 1: 1.8})
    assert sh["other_busy"][0] == pytest.approx(0.05) and sh["other_busy"][1] == pytest.approx(0.0)
    assert sh["psi_some"] == pytest.approx(0.1)
    with pytest.raises(ValueError):
        quiet.interval_shares(b, a)


def test_assess_quiet_and_each_reason_for_not():
    calm = {"other_busy": {0: 0.02, 1: 0.01, 2: 0.9}, "psi_some": 0.03}  # core 2 is not ours
    assert quiet.assess([calm, calm], calm, cores=[0, 1], runq_wait=0.01)["quiet"]
    busy_probe = {"other_busy": {0: 0.5, 1: 0.0}, "psi_some": 0.6}
    busy_window = {"other_busy": {0: 0.0, 1: 0.3}, "psi_some": None}
    q = quiet.assess([calm, busy_probe], busy_window, cores=[0, 1], runq_wait=0.2)
    assert not q["quiet"]
    assert len(q["reasons"]) == 4
    assert q["probe_other_busy"] == pytest.approx(0.5) and q["window_other_busy"] == pytest.approx(0.3)


def test_quietest_prefers_a_quiet_attempt_else_the_least_loaded():
    def att(n, ok, other):
        return {"n": n, "quiet": {"quiet": ok, "probe_other_busy": other, "window_other_busy": other / 2,
                                  "probe_psi_some": None}}
    assert quiet.quietest([att(0, False, 0.2), att(1, True, 0.9), att(2, True, 0.0)])["n"] == 1
    assert quiet.quietest([att(0, False, 0.6), att(1, False, 0.3)])["n"] == 1


# ---- peers' exports -------------------------------------------------------------------------
def test_parse_aiperf_marks_warmup_and_keeps_request_ids(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    recs = [{"metadata": {"x_request_id": "w", "benchmark_phase": "warmup", "request_start_ns": 1, "request_end_ns": 5},
             "metrics": {"time_to_first_token": {"value": 2.0, "unit": "ms"}}},
            {"metadata": {"x_request_id": "m", "benchmark_phase": "profiling", "request_start_ns": 10,
                          "request_end_ns": 20}, "metrics": {"time_to_first_token": {"value": 3000.0, "unit": "us"}}},
            {"metadata": {"x_request_id": "e", "benchmark_phase": "profiling"}, "metrics": {},
             "error": {"code": 500}}]
    (out / "profile_export.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (out / "profile_export_aiperf.json").write_text(json.dumps(
        {"request_throughput": {"unit": "requests/sec", "avg": 123.0}, "benchmark_duration": {"avg": 4.0}}))
    got = peers.parse_aiperf(out)
    assert got["self_req_per_s"] == 123.0 and got["self_window_s"] == 4.0
    r = got["requests"]
    assert [(x["rid"], x["measured"], x["ok"]) for x in r] == [("w", False, True), ("m", True, True), ("e", True, False)]
    assert r[1]["ttft_ms"] == pytest.approx(3.0)


def test_parse_guidellm_measured_by_start_time_and_prompt_from_the_body(tmp_path):
    def req(prompt, start, ttft):
        return {"request_args": json.dumps({"body": {"prompt": prompt}}), "request_start_time": start,
                "request_end_time": start + 0.01, "time_to_first_token_ms": ttft}
    report = {"benchmarks": [{"start_time": 100.0, "duration": 2.0,
                              "metrics": {"requests_per_second": {"successful": {"mean": 50.0}}},
                              "requests": {"successful": [req("w", 99.9, 1.0), req("m", 100.2, 2.0)],
                                           "errored": [req("e", 100.3, None)], "incomplete": [],
                                           "total": 3}}]}
    path = tmp_path / "out.json"
    path.write_text(json.dumps(report))
    got = peers.parse_guidellm(path)
    assert got["self_req_per_s"] == 50.0
    assert [(x["p"], x["measured"], x["ok"]) for x in got["requests"]] == [
        ("w", False, True), ("m", True, True), ("e", True, False)]
    assert got["requests"][1]["start_ns"] == int(100.2 * 1e9)


def test_peer_commands_ask_for_the_level_its_warmup_and_unique_prompts(tmp_path):
    tok = peers.write_tokenizer(tmp_path / "tok")
    assert json.loads((tok / "tokenizer.json").read_text())["model"]["vocab"]["tok"] == 2
    w1 = tmp_path / "a"
    w1.mkdir()
    argv = peers.command("aiperf", Path("/x/aiperf"), "http://127.0.0.1:1", 16, 100, 8, w1, tok)
    assert argv[argv.index("--concurrency") + 1] == "16" and argv[argv.index("--request-count") + 1] == "100"
    assert argv[argv.index("--warmup-request-count") + 1] == "16"
    lines = [json.loads(x)["text"] for x in (w1 / "prompts.jsonl").read_text().splitlines()]
    assert len(lines) == len(set(lines)) >= 116
    w2 = tmp_path / "g"
    w2.mkdir()
    peers.command("guidellm", Path("/x/guidellm"), "http://127.0.0.1:1", 16, 100, 8, w2, tok)
    spec = json.loads((w2 / "scenario.json").read_text())["spec"]
    assert spec["profile"]["streams"] == 16 and spec["profile"]["warmup"]["value"] == 16
    assert spec["constraints"] == [{"kind": "max_requests", "count": 116}]
    assert spec["backend"]["max_tokens"] == 8
    assert peers.launch_prefix({1}, "rr") == "taskset -c 1 chrt -r 1"


# ---- the server's records -------------------------------------------------------------------
def test_calibration_server_records_key_request_id_and_stamps():
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "calibration_server.py"), "--port", "0",
                             "--ttft-ms", "0", "--interval-ms", "0", "--no-uvloop"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY ")
        host, port = line.split()[1].rsplit("/", 1)[1].split(":")
        body = json.dumps({"prompt": "p-1", "max_tokens": 3, "stream": True}).encode()
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                      b"X-Request-ID: rid-7\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            data = b""
            while b"[DONE]" not in data:
                chunk = s.recv(65536)
                assert chunk
                data += chunk
            s.sendall(b"GET /calibration/records HTTP/1.1\r\nhost: x\r\n\r\n")
            resp = b""
            while True:
                chunk = s.recv(65536)
                resp += chunk
                head, _, rest = resp.partition(b"\r\n\r\n")
                length = [int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")]
                if length and len(rest) >= length[0]:
                    break
        recs = json.loads(rest)["records"]
        assert len(recs) == 1 and recs[0]["key"] == "p-1" and recs[0]["rid"] == "rid-7"
        sends = recs[0]["send_ns"]
        assert len(sends) == 3 and recs[0]["arrival_ns"] <= sends[0] <= sends[1] <= sends[2]
        assert server_stamp_rate(recs)["server_requests"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_peer_sched_per_peer_or_for_all():
    assert peers.parse_sched("") == peers.DEFAULT_SCHED
    assert peers.parse_sched("none") == {name: "none" for name in peers.PEERS}
    assert peers.parse_sched("aiperf=rr")["aiperf"] == "rr"
    for bad in ("fifo", "nosuch=rr"):
        with pytest.raises(ValueError):
            peers.parse_sched(bad)


def test_a_peer_that_cannot_be_installed_is_unavailable_with_the_reason(tmp_path):
    with pytest.raises(peers.PeerUnavailable, match="python -m venv with /bin/false failed"):
        peers.ensure_env("aiperf", tmp_path, "/bin/false", log=lambda *a, **k: None)
