"""Open the report in headless Chromium: it must render every section and plot offline, with no
console error and no request other than the file:// page itself. Saves a full-page screenshot
(results/report-screenshot.png, or $SERVINGBENCH_SCREENSHOT) for CI.

Talks the Chrome DevTools Protocol over a websocket (``websockets``); needs Debian's ``chromium``.
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.resultsgen import make_config, write_results
from servingbench.host.report import render_report
from servingbench.host.report.render import SECTIONS

pytestmark = pytest.mark.browser
REPO = Path(__file__).resolve().parent.parent
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)


class Browser:
    """A headless Chromium and one page, driven over CDP. Records requests and console errors."""

    def __init__(self, binary: str, width: int = 1400, height: int = 1000) -> None:
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self.profile = tempfile.mkdtemp(prefix="sb-chromium-")
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
             f"--window-size={width},{height}", f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with no_proxy.open(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
                page = next(t for t in json.load(resp) if t["type"] == "page")
        except Exception:
            self.close()
            raise
        options: dict[str, Any] = {"max_size": None, "open_timeout": 10}
        if "proxy" in inspect.signature(connect).parameters:
            options["proxy"] = None  # never route the local DevTools socket through an HTTP(S)_PROXY
        self.ws = self._stack.enter_context(connect(page["webSocketDebuggerUrl"], **options))
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.time() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.time())))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        for e in self.events:
            if e.get("method") == method:
                return e
        deadline = time.time() + timeout
        while time.time() < deadline:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.time())))
            self.events.append(msg)
            if msg.get("method") == method:
                return msg
        raise TimeoutError(method)

    def eval(self, expr: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expr, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expr}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif m == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(p["exceptionDetails"])[:500])
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif m == "Network.loadingFailed":
                out.append(f"network: {p.get('errorText')}")
        return out

    def screenshot(self, path: Path) -> None:
        height = int(self.eval("Math.ceil(document.documentElement.scrollHeight)"))
        width = int(self.eval("Math.ceil(document.documentElement.scrollWidth)"))
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, timeout=60)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            self._stack.close()
        except Exception:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GPU-style report with a failed and a missing cell, so every section has content."""
    root = tmp_path_factory.mktemp("browser")
    cfg = make_config(device="cuda", arms=("transformers-naive", "transformers-serve", "tgi", "vllm"),
                      tasks=("chat", "qa", "summarization", "code"), cell_concurrency=(1, 8), capacity=["chat"])
    write_results(cfg, root / "results", fail=["tgi/llama-2-7b-chat/code/stream"],
                  missing=["transformers-serve/gpt2/sweep_context"])
    return render_report(cfg, root / "results", root / "report" / "index.html")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_offline_in_chromium(rendered: Path) -> None:
    pytest.importorskip("websockets.sync.client", reason="needs the websockets package for CDP")
    url = rendered.resolve().as_uri()
    browser = Browser(CHROMIUM)
    try:
        browser.call("Page.navigate", url=url)
        browser.wait_event("Page.loadEventFired")
        deadline = time.time() + 60
        while browser.eval("document.body.dataset.plotsRendered || ''") == "":
            assert time.time() < deadline, f"plots did not finish rendering; errors: {browser.errors()}"
            time.sleep(0.2)

        for section_id, _ in SECTIONS:
            assert browser.eval(f"!!document.getElementById({json.dumps(section_id)})"), section_id
        plots = browser.eval("""Array.from(document.querySelectorAll('#plots .plot')).map(el => ({
            id: el.id, svg: el.querySelectorAll('.chart svg').length,
            marks: el.querySelectorAll('.chart svg .mark-symbol path, .chart svg .mark-rect path, '
                                       + '.chart svg .mark-line path, .chart svg .mark-tick path').length,
            empty: !!el.querySelector('.plot-empty'), error: el.classList.contains('plot-error')}))""")
        ids = {p["id"] for p in plots}
        assert {"plot-ttft", "plot-e2e", "plot-throughput", "plot-context", "plot-memory", "plot-output-tps"} <= ids
        for p in plots:
            assert not p["error"] and not p["empty"], p
            assert p["svg"] >= 1 and p["marks"] > 0, f"{p['id']} drew nothing: {p}"
        pareto = browser.eval("""(el => ({svg: el.querySelectorAll('.chart svg').length,
            marks: el.querySelectorAll('.chart svg .mark-symbol path, .chart svg .mark-line path').length,
            error: el.classList.contains('plot-error')}))(document.getElementById('plot-pareto'))""")
        assert pareto["svg"] >= 1 and pareto["marks"] > 0 and not pareto["error"], pareto
        assert browser.eval("document.querySelectorAll('#capacity table.capacity tbody tr').length") >= 4
        assert browser.eval("document.querySelectorAll('#flags tr.flag-error').length") >= 2  # failed + missing
        assert browser.eval("document.querySelectorAll('#bandwidth-floor tr.below-floor').length") == 0

        assert browser.errors() == [], browser.errors()
        others = [u for u in browser.requests() if u != url]
        assert others == [], f"the page made network requests: {others}"

        shot = Path(os.environ.get("SERVINGBENCH_SCREENSHOT", REPO / "results" / "report-screenshot.png"))
        browser.screenshot(shot)
        assert shot.stat().st_size > 10_000
    finally:
        browser.close()
