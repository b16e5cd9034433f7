"""The one small interface every framework adapter implements.

An adapter knows four things about its framework: how to start its server, how to tell it
is ready, how to ask it for a completion (sync or stream, sampling, output length), and how
to read what comes back (text, token counts, the server's own timings). Everything else
(processes, clients, clocks, monitors) is shared. Runtime module: standard library only.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Mapping

from servingbench.spec import GenerationParams, PromptItem, ServerSpec

# Where an output-token count came from, in order of trust.
TOKENS_FROM_SERVER = "server"  # usage.completion_tokens, details.generated_tokens
TOKENS_FROM_TOKENIZER = "tokenizer"  # re-tokenised text, when the server gave no count
TOKENS_UNKNOWN = "unknown"


@dataclass
class Launch:
    """How to start a server: argv and the environment entries to add (never secrets)."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # Environment variable names passed through from the caller's environment (e.g. HF_TOKEN):
    # their values reach the server's environment only, never a command line or a file.
    passthrough_env: tuple[str, ...] = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


@dataclass
class HttpRequest:
    method: str
    path: str
    json: dict[str, Any] | None = None


@dataclass
class Completion:
    """What one finished request produced, as the server reported it."""

    text: str = ""
    output_tokens: int | None = None
    output_tokens_source: str = TOKENS_UNKNOWN
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    server_timing: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass
class StreamUpdate:
    """One parsed stream event: the generated text it carries (may be empty) and whether it ends."""

    text: str = ""
    done: bool = False
    error: str | None = None


class StreamReader(abc.ABC):
    """Reads one response stream event by event; ``result()`` gives the final Completion."""

    @abc.abstractmethod
    def feed(self, data: str) -> StreamUpdate:
        """Parse one event's ``data`` payload."""

    @abc.abstractmethod
    def result(self) -> Completion:
        """What the whole stream produced."""


class Adapter(abc.ABC):
    """Base class of framework adapters. Subclasses set the class attributes and methods."""

    name: str = ""
    framework: str = ""
    #: Can this framework be told to produce exactly N tokens (ignore EOS / min tokens)?
    can_force_output_length: bool = False
    health_path: str = "/health"
    #: Does the server accept the templated text prompt (True) or only chat messages?
    takes_text_prompt: bool = True
    #: Does a stream need an explicit end marker ([DONE]) or does it end with the body?
    stream_has_done_marker: bool = True

    @abc.abstractmethod
    def launch(self, server: ServerSpec, host: str, port: int) -> Launch:
        """The command and environment that start this framework's server."""

    @abc.abstractmethod
    def build_request(
        self,
        server: ServerSpec,
        item: PromptItem,
        gen: GenerationParams,
        output_tokens: int,
        force_length: bool,
        stream: bool,
    ) -> HttpRequest:
        """The HTTP request for one prompt. ``output_tokens`` is the cap (or exact length
        when ``force_length`` and the framework can force it)."""

    @abc.abstractmethod
    def parse_response(
        self, status: int, headers: Mapping[str, str], body: bytes
    ) -> Completion:
        """Read a non-streamed response."""

    @abc.abstractmethod
    def stream_reader(self) -> StreamReader:
        """A fresh reader for one response stream."""

    def readiness_request(self, server: ServerSpec) -> HttpRequest:
        """One tiny real generation request, sent after health answers, before warm-up."""
        item = PromptItem(id="ready", prompt="Hello", prompt_tokens=1, target_output_tokens=2,
                          messages=({"role": "user", "content": "Hello"},))
        gen = GenerationParams(temperature=1.0, top_p=1.0, max_tokens=2)
        return self.build_request(server, item, gen, 2, False, False)

    def server_metrics_path(self) -> str | None:
        """Prometheus metrics endpoint, if the framework has one (for server-side TTFT)."""
        return None

    #: What the server-side TTFT of this arm is, in words (the report's calibration table).
    server_ttft_source: str = ""

    def server_ttft_ms(self, timing: Mapping[str, float]) -> float | None:
        """The server's own TTFT of one request, from its ``Completion.server_timing``."""
        return None

    def server_tpot_ms(self, timing: Mapping[str, float]) -> float | None:
        """The server's own decode time per token after the first, from ``server_timing``."""
        return None

    def served_weights(self, server: ServerSpec) -> str:
        """The weights path the server loads (the model folder unless the arm converts it)."""
        return server.model_dir

    def framework_version(self) -> str | None:
        """The framework's version where no installed distribution names it."""
        return None

    def effective_output_tokens(self, item: PromptItem, gen: GenerationParams, policy: str) -> tuple[int, bool]:
        """(tokens to ask for, whether the length is forced) under an output-length policy."""
        target = min(item.target_output_tokens, gen.max_tokens)
        if policy == "forced" and self.can_force_output_length:
            return target, True
        if policy == "forced":
            return target, False  # can only cap it; results flag unequal work
        return gen.max_tokens, False
