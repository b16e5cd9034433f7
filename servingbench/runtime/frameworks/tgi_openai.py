"""TGI >= 2 through its OpenAI-compatible routes (arm ``tgi-openai``); launched like ``tgi``.

Default route ``/v1/completions`` with the already-templated prompt, so the prompt text equals
the native arm's. TGI quirks handled here (router/src/server.rs, 3.x):
- ``top_p`` goes through the same validation as the native API: 1.0 is rejected, so omitted.
- ``model`` is read as a LoRA adapter id unless it is ``"tgi"``: send ``"tgi"``.
- The completions schema types ``prompt`` as an array (the router takes a string too): send one.
- A completions stream always ends with a chunk carrying ``usage``; ``stream_options`` is a
  chat-only field there. The chat route needs ``stream_options.include_usage`` for usage.
- Both routes ask for prompt logprobs in sync mode (``decoder_input_details: !stream``), a
  prefill cost the native arm does not pay.

Runtime module: standard library only.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from servingbench.runtime.frameworks import openai_api
from servingbench.runtime.frameworks.base import Completion, HttpRequest, Launch, StreamReader
from servingbench.runtime.frameworks.tgi import TGIAdapter, error_message, server_timing, tgi_line, tgi_top_p
from servingbench.runtime.spec import GenerationParams, PromptItem, ServerSpec

MODEL_FIELD = "tgi"  # TGI's neutral model name: anything else is taken as an adapter id


def require_openai_routes(server: ServerSpec) -> None:
    if tgi_line(server) == "seed":
        raise ValueError(f"{server.arm}: TGI 1.x (profile seed) has no /v1 routes; use profile current or arm tgi")


class TGIOpenAIAdapter(TGIAdapter):
    name = "tgi-openai"
    stream_has_done_marker = True  # /v1 streams end with data: [DONE]
    route = openai_api.COMPLETIONS  # or openai_api.CHAT_COMPLETIONS (server-side chat template)

    @property
    def takes_text_prompt(self) -> bool:  # type: ignore[override]
        return self.route == openai_api.COMPLETIONS

    def launch(self, server: ServerSpec, host: str, port: int) -> Launch:
        require_openai_routes(server)
        return super().launch(server, host, port)

    def build_request(
        self,
        server: ServerSpec,
        item: PromptItem,
        gen: GenerationParams,
        output_tokens: int,
        force_length: bool,
        stream: bool,
    ) -> HttpRequest:
        require_openai_routes(server)
        if output_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {output_tokens}")
        if self.route == openai_api.CHAT_COMPLETIONS:
            body = openai_api.chat_body(MODEL_FIELD, item, gen, output_tokens, stream)
        else:
            body = openai_api.completion_body(MODEL_FIELD, item, gen, output_tokens, stream)
            body["prompt"] = [item.prompt]
            body.pop("stream_options", None)  # usage comes on the last chunk regardless
        _apply_top_p(body, gen)
        return HttpRequest("POST", self.route, body)

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Completion:
        if status >= 400:  # TGI's {"error", "error_type"}, the same on every route
            try:
                data: Any = json.loads(body)
            except ValueError:
                data = None
            return Completion(error=error_message(status, data, body))
        completion = openai_api.parse_completion(status, headers, body)
        completion.server_timing = server_timing(headers)  # /v1 sync answers carry them too
        return completion

    def stream_reader(self) -> StreamReader:
        return openai_api.OpenAIStreamReader()


def _apply_top_p(body: dict[str, Any], gen: GenerationParams) -> None:
    top_p = tgi_top_p(gen.top_p)
    if top_p is None:
        body.pop("top_p", None)
    else:
        body["top_p"] = top_p


ADAPTER = TGIOpenAIAdapter()
