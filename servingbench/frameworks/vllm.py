"""vLLM's OpenAI-compatible server (``vllm.entrypoints.openai.api_server``).

Requests go to ``/v1/completions`` with the prompt already templated by the workload, so
every arm sees the same tokens. Forced length: ``ignore_eos`` with ``max_tokens`` = target
(both exist since vLLM 0.2; ``min_tokens`` came later). Streams end with ``data: [DONE]``
and carry usage in a final chunk when ``stream_options.include_usage`` is set (vLLM >= 0.5;
the seed-era 0.2.x server has no usage in streams, so counts fall back to the tokenizer).
"""

from __future__ import annotations

import sys
from typing import Mapping

from servingbench.frameworks import openai_api
from servingbench.frameworks.base import Adapter, Completion, HttpRequest, Launch, StreamReader
from servingbench.spec import GenerationParams, PromptItem, ServerSpec


class VLLMAdapter(Adapter):
    name = "vllm"
    framework = "vllm"
    can_force_output_length = True
    health_path = "/health"
    server_ttft_source = "vLLM /metrics vllm:time_to_first_token_seconds"

    def launch(self, server: ServerSpec, host: str, port: int) -> Launch:
        argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                "--model", server.model_dir, "--served-model-name", server.model,
                "--host", host, "--port", str(port),
                "--dtype", server.dtype, "--max-model-len", str(server.context_length),
                "--seed", "0"]
        if server.weights == "dummy":
            argv += ["--load-format", "dummy"]
        if server.device == "cuda":
            argv += ["--gpu-memory-utilization", str(server.gpu_memory_utilization)]
        if server.profile != "seed":  # vLLM 0.2.x has no prefix caching and no such flags
            argv += ["--enable-prefix-caching" if server.prefix_caching else "--no-enable-prefix-caching"]
        argv += list(server.server_args)
        env = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "VLLM_HOST_IP": host}
        if server.weights == "dummy" or server.model_dir.startswith(("/", "models/")):
            env["HF_HUB_OFFLINE"] = "1"
        return Launch(argv=argv, env=env)

    def build_request(self, server: ServerSpec, item: PromptItem, gen: GenerationParams,
                      output_tokens: int, force_length: bool, stream: bool) -> HttpRequest:
        body = openai_api.completion_body(server.model, item, gen, output_tokens, stream)
        if force_length:
            body["ignore_eos"] = True
            if server.profile != "seed":
                body["min_tokens"] = output_tokens
        return HttpRequest("POST", openai_api.COMPLETIONS, body)

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Completion:
        return openai_api.parse_completion(status, headers, body)

    def stream_reader(self) -> StreamReader:
        return openai_api.OpenAIStreamReader()

    def server_metrics_path(self) -> str | None:
        return "/metrics"


ADAPTER = VLLMAdapter()
