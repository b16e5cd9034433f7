"""TGI (Hugging Face text-generation-inference) through its native API.

``POST /generate`` (sync) and ``POST /generate_stream`` (SSE, ``data:{json}`` with no space,
no ``[DONE]``: the stream ends with the body). Facts this adapter relies on, from TGI's router
(``router/src/validation.rs``, ``server.rs``) and ``shared/fixtures/tgi/``:

- ``temperature`` must be > 0; ``top_p`` must be in (0, 1), so a requested top_p of 1.0 (no
  nucleus cut) is sent as no ``top_p`` at all; ``do_sample`` must be true, else TGI decodes
  greedily whenever no warper is active.
- There is no ``ignore_eos`` / ``min_new_tokens`` over HTTP: output length can be capped only.
- ``/generate`` answers with the server's own timings in headers (whole milliseconds).

Profiles (``ServerSpec.profile``) pick the TGI line, because launcher flags differ:
``seed`` = TGI 1.1.x (``--max-input-length``; no prefix caching), ``current`` = TGI 3.3.7
(``--max-input-tokens``; prefix caching on by default, switched by env ``PREFIX_CACHING``).

Runtime module: standard library only.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from servingbench.runtime.frameworks.base import (
    TOKENS_FROM_SERVER,
    TOKENS_UNKNOWN,
    Adapter,
    Completion,
    HttpRequest,
    Launch,
    StreamReader,
    StreamUpdate,
)
from servingbench.runtime.malformed import (Malformed, event_json, guard_feed, guard_parse, json_answer, obj, opt_count,
    opt_obj, opt_str)
from servingbench.runtime.redaction import find_credentials
from servingbench.runtime.spec import GenerationParams, PromptItem, ServerSpec

GENERATE = "/generate"
GENERATE_STREAM = "/generate_stream"

# profile -> the launcher flag that bounds the prompt (renamed in TGI 2.0, PR #1727).
INPUT_LIMIT_FLAG = {"seed": "--max-input-length", "current": "--max-input-tokens"}
TGI_LINE = {"seed": "TGI 1.1.x", "current": "TGI 3.3.7"}
DTYPES = ("float16", "bfloat16")  # the launcher's only --dtype values
# TGI 1.x refuses to start when max_input_length > max_batch_prefill_tokens (default 4096).
TGI1_DEFAULT_PREFILL_TOKENS = 4096

TIMING_HEADERS = {
    "x-total-time": "total_ms",
    "x-validation-time": "validation_ms",
    "x-queue-time": "queue_ms",
    "x-inference-time": "inference_ms",
    "x-time-per-token": "time_per_token_ms",
}


# --- launch -------------------------------------------------------------------------------

def tgi_line(server: ServerSpec) -> str:
    """The profile, checked: it decides flag names and features."""
    if server.profile not in INPUT_LIMIT_FLAG:
        raise ValueError(
            f"{server.arm}: profile {server.profile!r} does not name a TGI line; "
            f"allowed: seed (TGI 1.1.x), current (TGI 3.3.7)"
        )
    return server.profile


def check_launchable(server: ServerSpec) -> None:
    """Refuse set-ups TGI cannot run, with a message that says why."""
    if server.weights == "dummy":
        raise ValueError(
            f"{server.arm}: TGI cannot run dummy weights (it has no dummy load format); "
            "use weights: real, or leave TGI out of dummy-weight runs"
        )
    if server.device != "cuda":
        raise ValueError(f"{server.arm}: TGI runs only from its CUDA image on a GPU host (device {server.device!r})")
    if server.dtype not in DTYPES + ("auto",):
        raise ValueError(
            f"{server.arm}: TGI's --dtype takes {', '.join(DTYPES)} (or auto: omit it), not {server.dtype!r}"
        )
    if server.context_length < 2:
        raise ValueError(f"{server.arm}: context_length {server.context_length} leaves no room for a prompt")
    if server.prefix_caching and tgi_line(server) == "seed":
        raise ValueError(f"{server.arm}: TGI 1.x (profile seed) has no prefix caching; set prefix_caching: false")
    _check_no_secrets(server)


def _check_no_secrets(server: ServerSpec) -> None:
    """Tokens reach the server only through Launch.passthrough_env, never argv or spec env."""
    found = find_credentials({"server_args": list(server.server_args), "env": dict(server.env)})
    if found:
        raise ValueError(f"{server.arm}: {found[0]}; a token must come from the caller's environment (HF_TOKEN)")


def launch_argv(server: ServerSpec, host: str, port: int) -> list[str]:
    """text-generation-launcher's command line for one server."""
    line = tgi_line(server)
    # The longest prompt that still leaves room for one new token; TGI checks
    # prompt + max_new_tokens <= max_total_tokens per request.
    max_input = server.context_length - 1
    argv = [
        "text-generation-launcher",
        "--model-id", server.model_dir or server.hf_id,
        "--hostname", host,
        "--port", str(port),
        INPUT_LIMIT_FLAG[line], str(max_input),
        "--max-total-tokens", str(server.context_length),
        # Same reservation knob as vLLM's gpu_memory_utilization, so both arms leave equal headroom.
        "--cuda-memory-fraction", repr(float(server.gpu_memory_utilization)),
    ]
    if server.dtype in DTYPES:
        argv += ["--dtype", server.dtype]
    if line == "seed" and max_input > TGI1_DEFAULT_PREFILL_TOKENS:
        argv += ["--max-batch-prefill-tokens", str(max_input)]
    return argv + list(server.server_args)


def launch_env(server: ServerSpec) -> dict[str, str]:
    """Environment entries to add: the spec's own, offline hub for local weights, and on
    TGI 3.x the prefix-cache switch."""
    env = dict(server.env)
    if server.model_dir.startswith(("/", "models/")):
        env.setdefault("HF_HUB_OFFLINE", "1")  # local weights: no hub look-ups mid-run
    if tgi_line(server) == "current":
        env.setdefault("PREFIX_CACHING", "1" if server.prefix_caching else "0")
        # No anonymous usage reports from benchmark hosts (often offline, and it is traffic).
        env.setdefault("USAGE_STATS", "off")
    return env


# --- requests -----------------------------------------------------------------------------

def tgi_top_p(top_p: float) -> float | None:
    """top_p as TGI accepts it: 1.0 means 'no nucleus cut', which TGI spells as no top_p."""
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    return None if top_p >= 1.0 else top_p


def sampling_parameters(gen: GenerationParams, output_tokens: int, seed: int | None = None) -> dict[str, Any]:
    """The ``parameters`` object of a native request."""
    if not gen.temperature > 0:
        raise ValueError(f"TGI needs temperature > 0, got {gen.temperature}")
    if output_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {output_tokens}")
    params: dict[str, Any] = {
        "max_new_tokens": int(output_tokens),
        "temperature": gen.temperature,
        "do_sample": True,
        "details": True,  # for details.generated_tokens, the server's own count
        # Explicit, because TGI 1.x documents true as default: prompt logprobs cost prefill work.
        "decoder_input_details": False,
        "return_full_text": False,
    }
    top_p = tgi_top_p(gen.top_p)
    if top_p is not None:
        params["top_p"] = top_p
    if seed is not None:
        params["seed"] = int(seed)
    return params


def generate_body(
    item: PromptItem, gen: GenerationParams, output_tokens: int, seed: int | None = None
) -> dict[str, Any]:
    return {"inputs": item.prompt, "parameters": sampling_parameters(gen, output_tokens, seed)}


def _item_seed(item: PromptItem) -> int | None:
    """An optional per-prompt sampling seed from the workload record (``seed`` field)."""
    seed = item.extra.get("seed") if item.extra else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else None


# --- responses ----------------------------------------------------------------------------

def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def server_timing(headers: Mapping[str, str]) -> dict[str, float]:
    """TGI's x-*-time headers (milliseconds, whole numbers) as floats named ``*_ms``."""
    low = _lower(headers)
    timing = {}
    for header, name in TIMING_HEADERS.items():
        value = _number(low.get(header))
        if value is not None:
            timing[name] = value
    return timing


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = _number(_lower(headers).get(name))
    return int(value) if value is not None else None


def error_message(status: int, data: Any, body: bytes = b"") -> str:
    """One line from a TGI error body ``{"error", "error_type"}`` or whatever came instead."""
    if isinstance(data, dict) and "error" in data:
        kind = data.get("error_type")
        return f"HTTP {status} {kind}: {data['error']}" if kind else f"HTTP {status}: {data['error']}"
    return f"HTTP {status}: {body[:200]!r}"


def _details(details: Any) -> tuple[int | None, int | None, str | None]:
    """(output tokens, prompt tokens, finish reason) of a ``details`` object, checked."""
    details = opt_obj(details, "details")
    return (opt_count(details.get("generated_tokens"), "details.generated_tokens"),
            opt_count(details.get("input_length"), "details.input_length"),
            opt_str(details.get("finish_reason"), "details.finish_reason"))


@guard_parse
def parse_generate(status: int, headers: Mapping[str, str], body: bytes) -> Completion:
    """Parse a ``/generate`` answer (a ``GenerateResponse`` or an ``ErrorResponse``); an answer
    of any other shape is the request's error, naming what was wrong (malformed.py)."""
    if status >= 400:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        return Completion(error=error_message(status, data, body), server_timing=server_timing(headers))
    data = json_answer(headers, body)
    if isinstance(data, list) and data:  # the compat route "/" wraps the answer in a list
        data = data[0]
    if isinstance(data, dict) and "error" in data:
        return Completion(error=error_message(status, data, body), server_timing=server_timing(headers))
    data = obj(data, "the answer")
    if "generated_text" not in data:
        raise Malformed("no generated_text")
    out, prompt, finish = _details(data.get("details"))
    # details first, then the x-*-tokens headers
    out = out if out is not None else _header_int(headers, "x-generated-tokens")
    prompt = prompt if prompt is not None else _header_int(headers, "x-prompt-tokens")
    return Completion(
        text=opt_str(data.get("generated_text"), "generated_text") or "",
        output_tokens=out,
        output_tokens_source=TOKENS_FROM_SERVER if out is not None else TOKENS_UNKNOWN,
        prompt_tokens=prompt,
        finish_reason=finish,
        server_timing=server_timing(headers),
    )


class TGIStreamReader(StreamReader):
    """Reads the ``data:`` payloads of ``/generate_stream``, one ``StreamResponse`` each.

    Each event carries one token (``tokens`` = 1, so ITL is per token); a ``special`` token (EOS
    and the like) carries no generated text, but it is a generated token all the same. The last
    event has ``generated_text`` (and ``details`` when asked for); an ``{"error", "error_type"}``
    event ends the stream with an error, and so does an event of any other shape.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._final_text: str | None = None
        self._out: int | None = None
        self._prompt: int | None = None
        self._finish: str | None = None
        self._error: str | None = None
        self._done = False

    def _fail(self, message: str) -> StreamUpdate:
        self._error, self._done = message, True
        return StreamUpdate(error=message, done=True)

    @guard_feed
    def feed(self, data: str) -> StreamUpdate:
        if not data.strip():
            return StreamUpdate()
        if data.strip() == "[DONE]":  # not sent by the native route; tolerated
            self._done = True
            return StreamUpdate(done=True)
        event = event_json(data)
        if "error" in event:
            kind = event.get("error_type")
            return self._fail(f"{kind}: {event['error']}" if kind else str(event["error"]))
        token = opt_obj(event.get("token"), "token")
        text = "" if token.get("special") else (opt_str(token.get("text"), "token.text") or "")
        if text:
            self._parts.append(text)
        if event.get("details") is not None:
            self._out, self._prompt, self._finish = _details(event["details"])
        final = opt_str(event.get("generated_text"), "generated_text")
        if final is not None:
            self._final_text, self._done = final, True
        return StreamUpdate(text=text, done=self._done, tokens=1 if token else None)

    def result(self) -> Completion:
        out = self._out
        error = self._error
        if error is None and not self._done:
            error = "stream ended before TGI's final event (no generated_text)"
        # generated_text is the server's own decode of the whole output; prefer it to the
        # concatenation of per-token texts.
        text = self._final_text if self._final_text is not None else "".join(self._parts)
        return Completion(
            text=text,
            output_tokens=out,
            output_tokens_source=TOKENS_FROM_SERVER if out is not None else TOKENS_UNKNOWN,
            prompt_tokens=self._prompt,  # TGI >= 2 only
            finish_reason=self._finish,
            error=error,
        )


# --- the adapter --------------------------------------------------------------------------

class TGIAdapter(Adapter):
    name = "tgi"
    framework = "tgi"
    distributions = ("text-generation-server",)
    can_force_output_length = False  # no ignore_eos / min_new_tokens over HTTP
    health_path = "/health"
    takes_text_prompt = True
    stream_has_done_marker = False  # the native stream just ends
    has_prefix_cache = True  # TGI 3.x (profile current), env PREFIX_CACHING; check_launchable refuses 1.x

    def launch(self, server: ServerSpec, host: str, port: int) -> Launch:
        check_launchable(server)
        return Launch(argv=launch_argv(server, host, port), env=launch_env(server))

    def build_request(
        self,
        server: ServerSpec,
        item: PromptItem,
        gen: GenerationParams,
        output_tokens: int,
        force_length: bool,
        stream: bool,
    ) -> HttpRequest:
        # force_length cannot be honoured: output_tokens is only a cap here (base.py contract).
        body = generate_body(item, gen, output_tokens, _item_seed(item))
        return HttpRequest("POST", GENERATE_STREAM if stream else GENERATE, body)

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Completion:
        return parse_generate(status, headers, body)

    def stream_reader(self) -> StreamReader:
        return TGIStreamReader()

    def server_metrics_path(self) -> str | None:
        return "/metrics"  # Prometheus: tgi_request_* histograms


ADAPTER = TGIAdapter()
