"""``transformers serve``: Transformers' own OpenAI-compatible server (Transformers >= 4.55).

It answers 422 to fields it does not know (``ignore_eos``, ``min_tokens``), so forced length
goes through ``generation_config``, a JSON string that replaces the model's generation
config. Its streams have no ``[DONE]``: they end after a final chunk with usage. Continuous
batching is bounded here: unbounded it took 20 GiB on a 24 GiB machine (DESIGN §4).
The seed-era Transformers (PyTorch 2.1) has no ``serve`` command: this arm needs the
``current`` container profile on a GPU host.

Prefix caching: Transformers 5's continuous batching shares the KV blocks of a prefix between
requests, on by default and with no switch on the command line; the server is started through
``transformers_serve_cb`` so that ``ServerSpec.prefix_caching`` sets it. Without continuous
batching there is no prefix cache.
"""

from __future__ import annotations

import re
import sys
import json
from typing import Any, Mapping

from servingbench.runtime.frameworks import openai_api
from servingbench.runtime.frameworks.base import Adapter, Completion, HttpRequest, Launch, StreamReader
from servingbench.runtime.spec import GenerationParams, PromptItem, ServerSpec

# KV-cache bound for continuous batching: 512 blocks x 32 tokens = 16k tokens in flight.
# The block size is set too: its default is larger on CUDA (on the H100, 512 default-size
# blocks asked for 71 GB of KV cache beside a 7B model and the worker died at start-up).
CB_BLOCK_SIZE = "32"
CB_NUM_BLOCKS = "512"
CB_MAX_BATCH_TOKENS = "2048"


# What servingbench.runtime.frameworks.servers.transformers_serve_cb prints when it sets the server's prefix sharing.
_LOG_SETTING = re.compile(r"servingbench: continuous batching prefix sharing \(allow_block_sharing\) (on|off)")


class TransformersServeAdapter(Adapter):
    name = "transformers-serve"
    framework = "transformers"
    distributions = ("transformers",)
    dummy_weights_on_disk = True  # `transformers serve` can only load weights from disk
    can_force_output_length = True
    health_path = "/health"
    stream_has_done_marker = False
    has_prefix_cache = True  # with --continuous-batching only: see prefix_cache_unavailable

    def launch(self, server: ServerSpec, host: str, port: int) -> Launch:
        if server.weights == "dummy" and not server.model_dir:
            raise ValueError("transformers-serve needs a model directory with (random) weights")
        if server.prefix_caching and (why := self.prefix_cache_unavailable(server.server_args)):
            raise ValueError(f"{server.arm}: {why}")
        argv = [sys.executable, "-m", "servingbench.runtime.frameworks.servers.transformers_serve_cb", "serve", server.model_dir,
                "--host", host, "--port", str(port), "--device", server.device,
                "--dtype", server.dtype, "--log-level", "info"]
        args = list(server.server_args)
        if "--continuous-batching" in args:
            if not any(a.startswith(("--cb-num-blocks", "--cb-block-size")) for a in args):
                args += ["--cb-block-size", CB_BLOCK_SIZE, "--cb-num-blocks", CB_NUM_BLOCKS]
            if not any(a.startswith("--cb-max-batch-tokens") for a in args):
                tokens = str(server.max_batch_tokens) if server.max_batch_tokens else CB_MAX_BATCH_TOKENS
                args += ["--cb-max-batch-tokens", tokens]
        env = {"HF_HUB_DISABLE_UPDATE_CHECK": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "SERVINGBENCH_PREFIX_CACHING": "1" if server.prefix_caching else "0"}
        return Launch(argv=argv + args, env=env)

    def requested_settings(self, server: ServerSpec) -> dict[str, Any]:
        return {"prefix_caching": server.prefix_caching} if "--continuous-batching" in server.server_args else {}

    def effective_settings(self, server: ServerSpec, log_text: str,
                           metrics_text: str | None) -> dict[str, dict[str, Any]]:
        logged = _LOG_SETTING.findall(log_text)
        if not logged:  # a Transformers without prefix sharing prints nothing: nothing to check
            return {}
        return {"prefix_caching": {"value": logged[-1] == "on",
                                   "source": f"server log: allow_block_sharing {logged[-1]}"}}

    def prefix_cache_unavailable(self, server_args: tuple[str, ...] | list[str]) -> str | None:
        if "--continuous-batching" not in server_args:
            return f"{self.name} has a prefix cache only with --continuous-batching"
        return None

    def build_request(self, server: ServerSpec, item: PromptItem, gen: GenerationParams,
                      output_tokens: int, force_length: bool, stream: bool) -> HttpRequest:
        # The model field must equal the path the server was started with.
        body = openai_api.completion_body(server.model_dir, item, gen, output_tokens, stream)
        body.pop("stream_options", None)  # not supported; usage always ends the stream
        if force_length:
            config = {"max_new_tokens": output_tokens, "min_new_tokens": output_tokens,
                      "do_sample": True, "temperature": gen.temperature, "top_p": gen.top_p}
            if "--continuous-batching" in server.server_args:
                # Continuous batching drops min_new_tokens (it keeps only temperature, top-k and
                # top-p processors): disable EOS instead (-1), so generation runs to the target.
                # Seen on the CPU demo: qa cells stopped after 4-8 of 21-29 tokens.
                config["eos_token_id"] = -1
            body["generation_config"] = json.dumps(config)
        return HttpRequest("POST", openai_api.COMPLETIONS, body)

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Completion:
        return openai_api.parse_completion(status, headers, body)

    def stream_reader(self) -> StreamReader:
        return openai_api.OpenAIStreamReader()


ADAPTER = TransformersServeAdapter()
