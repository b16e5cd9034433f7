"""Every cell a reader must not take at face value, and why."""

from __future__ import annotations

from dataclasses import dataclass, field

from servingbench.host import intervals
from servingbench.runtime.capacity import failed_a_set, longest_stall
from servingbench.runtime.records import WINDOW as W
from servingbench.runtime.spec import CapacitySpec
from servingbench.host.report.bandwidth import FloorRow
from servingbench.host.report.capacity import stale_capacity
from servingbench.host.report.data import ReportData
from servingbench.host.report.fmt import num
from servingbench.host.report.gaps import check_windows, describe

SEVERITY_ORDER = {"error": 0, "warn": 1, "info": 2}


@dataclass
class Flag:
    severity: str  # error | warn | info
    what: str  # short name of the problem
    cells: list[str]  # cell labels (arm/model/task/mode or arm/model/sweep)
    detail: str
    sources: list[str] = field(default_factory=list)


def _group(flags: list[Flag], severity: str, what: str, items: list[tuple[str, str]], detail: str) -> None:
    """One flag for many cells that share a property (dummy weights, CPU): the list stays readable."""
    if items:
        flags.append(Flag(severity, what, [c for c, _ in items], detail, [s for _, s in items]))


def flags(data: ReportData, floor: list[FloorRow]) -> list[Flag]:
    out: list[Flag] = []
    for e in data.entries:
        if e.status == "failed":
            log = e.failure.log
            out.append(Flag("error", f"failed ({e.failure.category})", [e.label],
                            e.failure.reason + (f" — server log: {log}" if log else ""), [data.source(e)]))
        elif e.status == "missing":
            out.append(Flag("error", "missing", [e.label], e.reason, [data.source(e)]))
    for e in data.ok:
        failed, unequal, counted = [], [], []
        for w in data.windows(e):
            at = f"concurrency {w.concurrency}" + (
                f", prompt {w.prompt_tokens_target} tokens" if w.prompt_tokens_target else "")
            if w.failed:
                errors = ", ".join(f"{k}: {v}" for k, v in w.errors.items()) or "no reason recorded"
                failed.append(f"{w.failed}/{w.requests} at {at} ({errors})")
            if w.output_tokens_mismatched:
                unequal.append(f"{w.output_tokens_mismatched}/{w.completed} requests at {at} "
                               f"({num(w.output_tokens_actual_total)} of "
                               f"{num(w.output_tokens_requested_total)} tokens)")
            others = {k: v for k, v in w.output_tokens_source.items() if k != "server" and v}
            if others:
                counted.append(f"at {at}: " + ", ".join(f"{k} ({v} requests)" for k, v in others.items()))
        # One flag per cell and problem, its windows listed: the table stays one screen long.
        if failed:
            out.append(Flag("warn", "requests failed", [e.label], "Failed requests: " + "; ".join(failed)
                            + ". Figures cover completed requests only.", [data.source(e)]))
        if unequal:
            out.append(Flag("warn", "unequal work", [e.label], "Output length differs from the requested one: "
                            + "; ".join(unequal) + ".", [data.source(e)]))
        if counted:
            out.append(Flag("info", "tokens not counted by the server", [e.label],
                            "Output tokens counted by the client, not the server: " + "; ".join(counted) + ".",
                            [data.source(e)]))
        prov_hash = e.result.provenance.config_hash
        if e.stale:  # only with --allow-stale: by default such results are refused
            out.append(Flag("warn", "different config", [e.label],
                            f"stale: measured under other settings than this report's config ({e.stale}); "
                            "rerun it", [data.source(e)]))
        elif prov_hash and prov_hash != data.config_hash:
            out.append(Flag("info", "config edited since", [e.label],
                            f"ran with config hash {prov_hash} (this report's: {data.config_hash}); "
                            "this cell's own settings are the same", [data.source(e)]))
    for e in data.ok:
        if e.mode != "stream":
            continue
        uneven = [c for c in check_windows(data.requests(e)) if c.uneven]
        if uneven:
            out.append(Flag("warn", "uneven decode steps", [e.label],
                            describe(uneven) + ". One request at a time, decode steps should take about the "
                            "same time each: this cell's TPOT is a range, not one figure "
                            "(docs/transformers-fidelity.md)",
                            [data.source(e)]))
    for row in floor:
        if row.below_floor:
            out.append(Flag("warn", "faster than the bandwidth floor", [row.label],
                            f"{row.metric} at concurrency {row.concurrency} is below the {num(row.floor_ms)} ms per token "
                            f"that reading {num(row.weight_gb)} GB of weights at {num(row.bandwidth_gb_s)} GB/s takes: "
                            "check token counts and timing", [row.source]))
    out += stream_flags(data) + _thin(data) + _capacity(data)
    dummy = [(e.label, data.source(e)) for e in data.ok if e.weights == "dummy"]
    _group(out, "info", "dummy weights", dummy,
           "random weights with the real architecture: serving cost is real once output length is forced, "
           "text quality is meaningless")
    cpu = [(e.label, data.source(e)) for e in data.ok if e.device == "cpu"]
    _group(out, "info", "ran on CPU", cpu,
           "CPU results show the kit works end to end; they say nothing about GPU serving performance")
    out.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    return out


def stream_flags(data: ReportData) -> list[Flag]:
    """Cells whose ITL is not per token, whose events carried several tokens, or whose server
    was set up unlike the arm's other models."""
    out: list[Flag] = []
    unknown, several, overridden = [], [], []
    for e in data.ok:
        windows = data.windows(e)
        n_unknown = sum(w.itl_unknown_requests or 0 for w in windows)
        if n_unknown:
            unknown.append((e.label, data.source(e)))
        means = [w.tokens_per_event.mean for w in windows if w.tokens_per_event is not None]
        top = max((m for m in means if m is not None), default=None)
        if top is not None and top > 1.05:
            several.append((e.label, data.source(e), top))
        extra = e.result.server.server_settings or {}
        if extra.get("model_server_args"):
            overridden.append((e.label, data.source(e), " ".join(extra["model_server_args"])))
    _group(out, "info", "ITL per token not known", unknown,
           "the stream did not say how many tokens each event carried (for some or all requests): no ITL is "
           "reported for those requests, only the event gap, which is not an inter-token latency when one "
           "event carries several tokens")
    if several:
        out.append(Flag("info", "several tokens per event", [c for c, _, _ in several],
                        "events carried several tokens (highest window mean: "
                        + "; ".join(f"{c} {num(m)}" for c, _, m in several)
                        + "): the event gap is larger than the per-token ITL there", [s for _, s, _ in several]))
    for args in sorted({a for _, _, a in overridden}):
        cells = [(c, s) for c, s, a in overridden if a == args]
        out.append(Flag("warn", "server set up for this model only", [c for c, _ in cells],
                        f"served with extra arguments for this model only ({args}, the arm's model_server_args): "
                        "its other models ran without them, so this model's figures are not like for like",
                        [s for _, s in cells]))
    return out


def _thin(data: ReportData) -> list[Flag]:
    """Stream cells whose headline window has too few requests for a 95% interval: their rank is
    a point estimate that no interval backs."""
    low, thin = min(data.cfg.run.cell_concurrency), []
    for e in data.ok:
        if e.kind != "cell" or e.mode != "stream":
            continue
        n = data.value(e, W.ttft_ms, "n", low)
        if n is not None and n < intervals.MIN_INTERVAL_N:
            thin.append((e.label, data.source(e)))
    out: list[Flag] = []
    _group(out, "warn", "too thin to rank", thin,
           f"fewer than {intervals.MIN_INTERVAL_N} completed requests in the window at concurrency {low}: no 95% "
           "interval, so the headline cannot tell these arms apart from noise; raise run.requests_per_cell")
    return out


def _capacity(data: ReportData) -> list[Flag]:
    out = [Flag("warn", "capacity at another SLO", [label], why, [src]) for label, src, why in stale_capacity(data)]
    for e in data.ok:
        if e.kind != "sweep_capacity":
            continue
        results = e.result.capacity.results
        bounds = [f"{name}: {r.reason}" for name, r in results.items()
                  if r.status in ("below_lowest", "not_broken", "imprecise", "client_limited", "no_data")]
        if bounds:
            out.append(Flag("info", "capacity is a bound", [e.label], "; ".join(bounds) + ".", [data.source(e)]))
        repeats = [w for w in data.windows(e) if w.distinct_prompts and w.distinct_prompts < w.requests]
        if repeats:
            caching = (e.result.server.server_settings or {}).get("prefix_caching")
            out.append(Flag("info", "prompts repeated in a capacity window", [e.label],
                            f"{len(repeats)} window(s) sent more requests than the workload has prompts (largest: "
                            f"{max(w.requests for w in repeats)} requests, {repeats[0].distinct_prompts} prompts); "
                            f"prefix caching was recorded as {'on' if caching else 'off'}: a server that caches "
                            "prompts would gain from the repeats", [data.source(e)]))
        late = [w for w in data.windows(e) if w.phase == "search" and not w.valid]
        if late:
            out.append(Flag("info", "capacity windows not counted", [e.label],
                            "; ".join(f"window {w.window} at {num(w.offered_rate_req_s)} req/s: "
                                      f"{w.invalid_reason}" for w in late) + ".", [data.source(e)]))
        out += _stalls_counted(data, e)
    return out


def _stalls_counted(data: ReportData, e) -> list[Flag]:
    """A counted search window that failed a set while the server stalled longer than ``stall_s``.

    Measured before the stall rule (no ``stall_s`` on its windows), the stall is found in the
    window's request records and the window was counted: its rate may bound the capacity on the
    strength of one silence. Measured under the rule, such a window is the repeat of a stalled one:
    the stall recurred and counts as the server's."""
    limit = CapacitySpec.from_dict(e.result.spec["capacity"]).stall_s  # the spec omits it at its default
    found = []
    for w in data.windows(e):
        if w.phase != "search" or not w.valid or not failed_a_set(w):
            continue
        before_rule = w.stall_s is None
        if before_rule:
            stall = longest_stall([r for r in data.requests(e) if r.window == w.window and not r.warmup])
            seconds, in_flight = stall.seconds, stall.in_flight
        else:
            seconds, in_flight = w.stall_s, w.stall_in_flight
        if seconds > limit:
            found.append((w, seconds, in_flight, before_rule))
    if not found:
        return []
    parts = [f"window {w.window} at {num(w.offered_rate_req_s)} req/s failed while the server sent no token for "
             f"{seconds:.1f} s with {in_flight} request{'' if in_flight == 1 else 's'} in flight" +
             ("; it was measured before the stall rule and counted: a one-off stall may have set the bracket, "
              "so read the capacity as a lower bound and measure it again" if before_rule else
              "; it was the repeat of a stalled window and stalled again: counted as the server's")
             for w, seconds, in_flight, before_rule in found]
    severity = "warn" if any(f[3] for f in found) else "info"
    return [Flag(severity, "capacity window with a server stall", [e.label],
                 "; ".join(parts) + f" (stall_s {limit:g}, docs/capacity.md).", [data.source(e)])]


def flag_counts(items: list[Flag]) -> list[tuple[str, str, int]]:
    """(severity, what, number of cells) per kind of flag, most severe first."""
    counts: dict[tuple[str, str], int] = {}
    for f in items:
        key = (f.severity, f.what.split(" (")[0])
        counts[key] = counts.get(key, 0) + len(f.cells)
    return [(sev, what, n) for (sev, what), n in counts.items()]
