"""SGLang's OpenAI-compatible server (``python -m sglang.launch_server``), SGLang >= 0.5.

Flags are those of 0.5.16's ``server_args.py`` (the release proven on the H200, see
shared/tools/sglang-wheelhouse): ``--model-path``, ``--served-model-name``, ``--context-length``,
``--dtype``, ``--mem-fraction-static`` (the kit's ``gpu_memory_utilization``), ``--load-format
dummy``, ``--disable-radix-cache`` (prefix caching off, the kit's default; nothing is passed
when it is on, SGLang's default), ``--enable-metrics`` and ``--random-seed``.

Readiness: ``/health`` answers 503 until SGLang's own warm-up request has finished, then 200;
the lifecycle keeps polling on 503, it is never a failure. By default SGLang's ``/health``
also generates one token when the server is idle (``SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION``),
a real engine check for pooled servers; it is never called during a measured window.

Requests go to ``/v1/completions`` with the workload's templated prompt (or
``/v1/chat/completions``); forced length is ``ignore_eos`` with ``min_tokens`` = ``max_tokens``.
SGLang sends one SSE event per generated token (``--stream-interval`` 1), also when its
detokenizer holds the token's text back (an incomplete UTF-8 character): such events carry
empty text. Streams therefore ask for ``stream_options.continuous_usage_stats``: every chunk
carries the running ``completion_tokens``, so each event's token count is known, TTFT is the
first event that brought a token, and ITL is per token. Server-side TTFT and ITL come from
``/metrics`` (``sglang:time_to_first_token_seconds``, ``sglang:inter_token_latency_seconds``,
whose ``_sum``/``_count`` are per token).

SGLang did not exist in the seed era (its first release, 0.1.3, is of 16 January 2024; the seed
stack is of 2023): ``profile: seed`` is refused, at config validation and here.
"""

from __future__ import annotations

import sys

from servingbench.runtime.frameworks import openai_api
from servingbench.runtime.frameworks.base import HttpRequest, Launch
from servingbench.runtime.spec import GenerationParams, PromptItem, ServerSpec

NOT_IN_SEED = ("SGLang did not exist in the seed era (first release 0.1.3, January 2024; the seed stack "
               "is of 2023): use profile current, or leave the sglang arm out of a seed run")


def require_current(server: ServerSpec) -> None:
    if server.profile == "seed":
        raise ValueError(f"{server.arm}: {NOT_IN_SEED}")


class SGLangAdapter(openai_api.UsagePerEventAdapter):
    name = "sglang"
    framework = "sglang"
    can_force_output_length = True
    health_path = "/health"
    server_timing_histograms = {
        "ttft": ("sglang:time_to_first_token_seconds",),
        "itl": ("sglang:inter_token_latency_seconds",),
    }
    server_ttft_source = "SGLang /metrics sglang:time_to_first_token_seconds"
    unsupported_profiles = {"seed": NOT_IN_SEED}
    has_prefix_cache = True  # RadixAttention; --disable-radix-cache when prefix_caching is off
    distributions = ("sglang",)
    kernel_distributions = ("sglang-kernel", "sgl-kernel", "flashinfer-python")  # shipped apart from SGLang
    route = openai_api.COMPLETIONS  # or openai_api.CHAT_COMPLETIONS (server-side chat template)

    @property
    def takes_text_prompt(self) -> bool:  # type: ignore[override]
        return self.route == openai_api.COMPLETIONS

    def launch(self, server: ServerSpec, host: str, port: int) -> Launch:
        require_current(server)
        argv = [sys.executable, "-m", "sglang.launch_server",
                "--model-path", server.model_dir, "--served-model-name", server.model,
                "--host", host, "--port", str(port), "--device", server.device,
                "--dtype", server.dtype, "--context-length", str(server.context_length),
                "--random-seed", "0", "--enable-metrics"]
        if server.weights == "dummy":
            argv += ["--load-format", "dummy"]
        if server.device == "cuda":
            argv += ["--mem-fraction-static", str(server.gpu_memory_utilization)]
        if not server.prefix_caching:
            argv += ["--disable-radix-cache"]
        argv += list(server.server_args)
        env = {"DO_NOT_TRACK": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
        if server.weights == "dummy" or server.model_dir.startswith(("/", "models/")):
            env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        return Launch(argv=argv, env=env)

    def build_request(self, server: ServerSpec, item: PromptItem, gen: GenerationParams,
                      output_tokens: int, force_length: bool, stream: bool) -> HttpRequest:
        require_current(server)
        if self.route == openai_api.CHAT_COMPLETIONS:
            body = openai_api.chat_body(server.model, item, gen, output_tokens, stream)
        else:
            body = openai_api.completion_body(server.model, item, gen, output_tokens, stream)
        openai_api.ask_usage_per_event(body)
        if force_length:
            body["ignore_eos"] = True
            body["min_tokens"] = output_tokens
        return HttpRequest("POST", self.route, body)

    def reset_prefix_cache_request(self, server: ServerSpec) -> HttpRequest | None:
        return HttpRequest("POST", "/flush_cache") if server.prefix_caching else None


ADAPTER = SGLangAdapter()
