"""Check that a server runs with the settings its result records. Runtime module.

An adapter names the settings it asks its server for and can read back
(``Adapter.requested_settings``) and reads what the server itself reports
(``Adapter.effective_settings``: its start-up log, its metrics). A setting the server reports
differently fails the cell (category ``setting_mismatch``): a result never records a setting
the server did not run with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from servingbench.runtime.frameworks.base import Adapter
from servingbench.runtime.spec import ServerSpec

START_MARKER = b"# servingbench: starting "  # the line ServerProcess.start writes before each start


class SettingMismatch(RuntimeError):
    """The server reports a setting other than the one asked for; the message names both."""


def server_log_text(path: str | Path) -> str:
    """The log of the server's latest start (a log may hold earlier starts); "" if none."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return ""
    return data[max(data.rfind(START_MARKER), 0):].decode("utf-8", errors="replace")


def fetch_metrics(base_url: str, path: str | None, timeout_s: float = 10.0) -> str | None:
    """The server's metrics text, or None when it has none or does not answer."""
    if not path:
        return None
    try:
        resp = httpx.get(base_url + path, timeout=timeout_s, trust_env=False)
    except httpx.HTTPError:
        return None
    return resp.text if resp.status_code == 200 else None


def verify_settings(adapter: Adapter, server: ServerSpec, log_text: str,
                    metrics_text: str | None) -> dict[str, Any]:
    """``{"verified": {name: {value, source}}, "unverified": [names]}``; SettingMismatch if the
    server reports a requested setting differently."""
    requested = adapter.requested_settings(server)
    effective = adapter.effective_settings(server, log_text, metrics_text)
    wrong = [f"{name}={effective[name]['value']!r} where the config asks for {value!r} "
             f"({effective[name]['source']})"
             for name, value in requested.items() if name in effective and effective[name]["value"] != value]
    if wrong:
        raise SettingMismatch(f"the server runs with {'; '.join(wrong)}: a server argument or the framework's "
                              "default overrode the setting, so results would record a setting it did not "
                              "run with (set it in run:, not in server_args)")
    return {"verified": {k: v for k, v in effective.items() if k in requested},
            "unverified": sorted(k for k in requested if k not in effective)}
