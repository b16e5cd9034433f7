"""The server's own view of its prefix cache, and emptying it between cells. Runtime module.

A server may count, in tokens, how much of each prompt it looked up in its prefix cache and how
much it found (vLLM V1: Prometheus counters on ``/metrics``; their names are the adapter's
``prefix_cache_counters``). Their increase over a measured window is the server-side hit rate of
that window, shown beside the client's figures. Frameworks without such counters give None.

A reused (pooled) server with prefix caching on would carry the previous cell's prompts into the
next cell; such a server is emptied before the cell (vLLM: ``POST /reset_prefix_cache``), and a
framework that cannot be emptied gets a fresh server instead (servingbench.runtime.pool).
"""

from __future__ import annotations

import httpx

from servingbench.runtime.frameworks.base import Adapter
from servingbench.runtime.records import PrefixCacheCounters
from servingbench.runtime.spec import ServerSpec

async def metrics_page(client: httpx.AsyncClient, path: str | None) -> str | None:
    """The server's Prometheus page, or None (no such endpoint, or it did not answer 200)."""
    if not path:
        return None
    try:
        resp = await client.get(path)
    except httpx.HTTPError:
        return None
    return resp.text if resp.status_code == 200 else None


async def prefix_cache_totals(client: httpx.AsyncClient, adapter: Adapter) -> dict[str, float] | None:
    """The server's prefix-cache counters now, or None (no metrics page, or no such counters)."""
    if not adapter.prefix_cache_counters:
        return None
    text = await metrics_page(client, adapter.server_metrics_path())
    return adapter.prefix_cache_totals(text) if text is not None else None


def window_hit_rate(before: dict[str, float] | None, after: dict[str, float] | None) -> PrefixCacheCounters | None:
    """Tokens looked up and found in the server's prefix cache during a window, and their ratio."""
    if not before or not after:
        return None
    queries, hits = after["queries"] - before["queries"], after["hits"] - before["hits"]
    if queries < 0 or hits < 0:  # counters went back: the server restarted in between
        return None
    return PrefixCacheCounters(queries_tokens=queries, hits_tokens=hits, hit_rate=hits / queries if queries else None)


async def empty_prefix_cache(client: httpx.AsyncClient, adapter: Adapter, server: ServerSpec) -> str | None:
    """Empty a server's prefix cache; None when done, else why not."""
    req = adapter.reset_prefix_cache_request(server)
    if req is None:
        return f"{adapter.name} has no way to empty its prefix cache"
    try:
        resp = await client.request(req.method, req.path, json=req.json, timeout=30.0)
    except httpx.HTTPError as exc:
        return f"{req.method} {req.path}: {type(exc).__name__}: {exc}"
    return None if resp.status_code == 200 else f"{req.method} {req.path} answered HTTP {resp.status_code}"
