"""Figures of the calibration from the server's own stamps (pure functions, no I/O).

Every client, ours or a peer's, reports its requests as dicts with these keys:

- ``p``: the prompt text (the server's record key); ``rid``: the ``X-Request-ID`` it sent, if any;
- ``ok``: whether the client counted it as completed; ``measured``: whether the client counted it
  in its measured window (False for a tool's own warm-up requests);
- ``ttft_ms``: the client's TTFT; ``start_ns``/``end_ns``: when the client sent it and saw its
  end, on the client's own clock (only differences are used);
- optionally ``d`` and ``ev``: dispatch and per-event receive stamps on CLOCK_MONOTONIC (the
  in-process clients), for the shared-clock figures.

The calibration server records, per request in arrival order, ``key`` (the prompt), ``rid``
(the X-Request-ID header or null), ``arrival_ns`` and ``send_ns`` (one stamp per content event),
all on its CLOCK_MONOTONIC.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any


def pct(vals: list[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation (numpy's default); None for no values."""
    if not vals:
        return None
    vals = sorted(vals)
    pos = (len(vals) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def match_requests(client: list[dict[str, Any]], server: list[dict[str, Any]]
                   ) -> tuple[list[tuple[dict, dict]], dict[str, int]]:
    """Pair each client request with the server's record of it.

    By request id where both sides have one (ids are unique per request); otherwise by prompt:
    the k-th client request with a prompt (in the order given) takes the k-th server record with
    it (in arrival order), and only when both sides saw that prompt equally often, since with
    unequal counts no order says which record is whose. Returns the pairs and the counts of
    client requests left without a record (``unmatched``) and of server records no client
    request claimed (``unclaimed``: a tool's uncounted warm-up, or a lost request)."""
    by_rid = {s["rid"]: s for s in server if s.get("rid")}
    pairs: list[tuple[dict, dict]] = []
    used: set[int] = set()
    rest: list[dict] = []
    for c in client:
        s = by_rid.get(c.get("rid")) if c.get("rid") else None
        if s is not None and id(s) not in used:
            pairs.append((c, s))
            used.add(id(s))
        else:
            rest.append(c)
    srv_by_key: dict[str, list[dict]] = defaultdict(list)
    for s in server:
        if id(s) not in used:
            srv_by_key[s["key"]].append(s)
    cli_by_key: dict[str, list[dict]] = defaultdict(list)
    for c in rest:
        cli_by_key[c.get("p")].append(c)
    unmatched = 0
    for key, cs in cli_by_key.items():
        ss = srv_by_key.get(key, [])
        if key is None or len(ss) != len(cs):
            unmatched += len(cs)
            continue
        for c, s in zip(cs, ss):
            pairs.append((c, s))
            used.add(id(s))
    return pairs, {"unmatched": unmatched, "unclaimed": sum(1 for s in server if id(s) not in used)}


def server_ttft_ns(rec: dict[str, Any]) -> int | None:
    """First content event's send stamp minus the request's arrival stamp (server clock)."""
    sends = rec.get("send_ns") or []
    return sends[0] - rec["arrival_ns"] if sends else None


def server_stamp_rate(window: list[dict[str, Any]], records: list[dict[str, Any]] | None = None
                      ) -> dict[str, Any]:
    """Requests and content events per second by the server's clock alone.

    The window runs from the first arrival to the last send among ``window`` (the records of the
    requests a client measured). In it are counted every request of ``records`` (default: the
    window's own) whose last event was sent inside it, and every event sent inside it: so a
    tool whose warm-up requests are still in flight when its measured window opens (GuideLLM
    counts those that complete in the window) is counted as the server saw it, and one that
    starts its window empty (the in-process clients) is not credited with anything before.
    A window with no record, or whose records sent nothing, has no rate (None), not zero."""
    sent = [r for r in window if r.get("send_ns")]
    if not sent:
        return {"server_window_s": None, "server_req_per_s": None, "server_events_per_s": None,
                "server_requests": 0, "server_events": 0}
    first = min(r["arrival_ns"] for r in sent)
    last = max(r["send_ns"][-1] for r in sent)
    pool = [r for r in (records if records is not None else window) if r.get("send_ns")]
    done = sum(1 for r in pool if first <= r["send_ns"][-1] <= last)
    events = sum(1 for r in pool for t in r["send_ns"] if first <= t <= last)
    span = (last - first) / 1e9
    return {"server_window_s": span,
            "server_req_per_s": done / span if span > 0 else None,
            "server_events_per_s": events / span if span > 0 else None,
            "server_requests": done, "server_events": events}


def client_timed_rate(client: list[dict[str, Any]]) -> float | None:
    """Completed measured requests per second from the client's first send to its last end, by
    the client's own stamps: the window a harness should time (it starts at the first request
    sent, not when the harness starts creating tasks)."""
    done = [c for c in client if c.get("measured", True) and c.get("ok")
            and c.get("start_ns") is not None and c.get("end_ns") is not None]
    if not done:
        return None
    span = (max(c["end_ns"] for c in done) - min(c["start_ns"] for c in done)) / 1e9
    return len(done) / span if span > 0 else None


def ttft_errors_ms(pairs: list[tuple[dict, dict]]) -> list[float]:
    """Client TTFT minus server TTFT for every completed pair (both clock-free differences)."""
    out = []
    for c, s in pairs:
        s_ttft = server_ttft_ns(s)
        if c.get("ok") and c.get("ttft_ms") is not None and s_ttft is not None:
            out.append(c["ttft_ms"] - s_ttft / 1e6)
    return out


def window_figures(client: list[dict[str, Any]], server: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures every client gets: counts, server-stamp rates over the client's measured and
    completed requests, the client-timed rate, and the TTFT error percentiles."""
    measured = [c for c in client if c.get("measured", True)]
    pairs, counts = match_requests(client, server)
    mine = [(c, s) for c, s in pairs if c.get("measured", True) and c.get("ok")]
    errs = ttft_errors_ms([p for p in pairs if p[0].get("measured", True)])
    return {
        "requests": len(measured),
        "completed": sum(1 for c in measured if c.get("ok")),
        "failed": sum(1 for c in measured if not c.get("ok")),
        "unmatched": sum(1 for c in measured if c.get("ok")) - len(mine),
        "server_unclaimed": counts["unclaimed"],
        **server_stamp_rate([s for _, s in mine], server),
        "client_timed_req_per_s": client_timed_rate(client),
        "ttft_ms_mean": _mean([c["ttft_ms"] for c, _ in mine if c.get("ttft_ms") is not None]),
        "server_ttft_ms_mean": _mean([server_ttft_ns(s) / 1e6 for _, s in mine if s.get("send_ns")]),
        "ttft_error_ms_p50": pct(errs, 50),
        "ttft_error_ms_p99": pct(errs, 99),
        "ttft_error_n": len(errs),
    }


def _mean(vals: list[float]) -> float | None:
    return sum(vals) / len(vals) if vals else None
