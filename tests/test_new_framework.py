"""A new framework family is one adapter file (plus its container definition): a throwaway
"echo" adapter, dropped into a copy of the package and nowhere else, is an allowed arm of the
config, has its measuring rule, and measures a cell through run_cell.

Its server is tests/sglang_standin.py, an OpenAI-compatible stand-in whose answers are known
exactly (ignore_eos gives exactly max_tokens tokens, one SSE event per token, /metrics with its
own TTFT and ITL histograms): the point is the kit's path through an adapter it has never seen.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m"
CELL = f"results/cells/echo/{MODEL}/qa/stream.json"

ECHO = '''"""Echo: a throwaway framework family (tests/test_new_framework.py). Its server is
tests/sglang_standin.py, an OpenAI-compatible stand-in."""

import sys

from servingbench.runtime.frameworks import openai_api
from servingbench.runtime.frameworks.base import HttpRequest, Launch


class EchoAdapter(openai_api.UsagePerEventAdapter):
    name = "echo"
    framework = "echo"
    can_force_output_length = True
    server_timing_histograms = {"ttft": ("sglang:time_to_first_token_seconds",),
                                "itl": ("sglang:inter_token_latency_seconds",)}
    server_ttft_source = "echo /metrics"

    def launch(self, server, host, port):
        return Launch([sys.executable, "-m", "tests.sglang_standin", "--model-path", server.model_dir,
                       "--served-model-name", server.model, "--host", host, "--port", str(port),
                       "--enable-metrics", "--warmup-s", "0", "--text-mode", "text"])

    def build_request(self, server, item, gen, output_tokens, force_length, stream):
        body = openai_api.completion_body(server.model, item, gen, output_tokens, stream)
        if force_length:
            body["ignore_eos"] = True
        return HttpRequest("POST", openai_api.COMPLETIONS, openai_api.ask_usage_per_event(body))

    def framework_version(self):
        return "echo 1.0 (stand-in)"


ADAPTER = EchoAdapter()
'''

# Measures one cell through the copy's package, as `servingbench run-cell` would.
RUN_CELL = f'''
import dataclasses, json, sys
from servingbench.runtime.cell import run_cell
from servingbench.host.config import cell_spec, load_config
from servingbench.runtime.providers import fresh_server
from servingbench.runtime.spec import PromptItem

spec = cell_spec(load_config("echo.yaml"), "echo", "{MODEL}", "qa", "stream")
items = [PromptItem(id=f"p{{i}}", prompt=f"prompt {{i}}", prompt_tokens=3, target_output_tokens=5 + i)
         for i in range(4)]
with open("w.jsonl", "w") as fh:
    fh.writelines(json.dumps(dataclasses.asdict(it)) + "\\n" for it in items)
result = run_cell(spec, "w.jsonl", "{CELL}", "results", provider=fresh_server, progress_stream=sys.stderr)
print(json.dumps(result))
'''


def _copy_tree(dst: Path) -> None:
    """The files a user's checkout has that these steps read, unchanged."""
    for name in ("servingbench", "rules"):
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Snakefile", "containers/images.yaml", "tests/__init__.py", "tests/sglang_standin.py"):
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dst / name)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("new-framework")
    _copy_tree(root)
    (root / "servingbench" / "runtime" / "frameworks" / "echo.py").write_text(ECHO)
    cfg = yaml.safe_load((REPO / "configs" / "cpu.yaml").read_text())
    cfg["frameworks"] = {"echo": {"framework": "echo"}}
    (root / "echo.yaml").write_text(yaml.safe_dump(cfg))
    return root


def _run(args: list[str], cwd: Path, pythonpath: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("SERVINGBENCH_POOL", None)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_config_accepts_the_new_arm_only_where_its_adapter_file_is(tree: Path) -> None:
    validate = [sys.executable, "-m", "servingbench.cli", "validate", "--config", str(tree / "echo.yaml")]
    without = _run(validate, REPO, REPO)  # the same config, the package without the echo file
    assert without.returncode == 2 and "unknown framework 'echo'" in without.stderr, without.stderr
    with_file = _run(validate, tree, tree)
    assert with_file.returncode == 0, with_file.stderr


def test_the_rules_have_a_measuring_rule_for_the_new_arm(tree: Path) -> None:
    if shutil.which("snakemake", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("no snakemake beside this interpreter")
    dry = _run(["snakemake", "-n", CELL, "--configfile", "echo.yaml"], tree, tree)
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
    assert "measure_echo_smollm2_135m" in dry.stdout and CELL in dry.stdout


def test_run_cell_measures_a_cell_through_the_new_adapter(tree: Path) -> None:
    run = _run([sys.executable, "-c", RUN_CELL], tree, tree)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert result["status"] == "ok" and result["cell"]["arm"] == "echo" and result["cell"]["framework"] == "echo"
    assert result["provenance"]["framework_version"] == "echo 1.0 (stand-in)"
    window = result["windows"][0]
    n = yaml.safe_load((REPO / "configs" / "cpu.yaml").read_text())["run"]["requests_per_cell"]
    assert window["completed"] == window["requests"] == n and window["failed"] == 0
    # The stand-in's own /metrics, read through the adapter's histogram names.
    assert window["server_ttft_ms_mean"] > 0 and window["server_timing_source"] == "echo /metrics"
    rows = [json.loads(x) for x in (tree / CELL).with_name("stream.requests.jsonl").read_text().splitlines()]
    assert len(rows) == n
    for r in rows:  # forced length through the adapter's ignore_eos: exactly the tokens asked for
        assert r["output_tokens"] == r["output_tokens_requested"] and r["output_tokens_source"] == "server"
