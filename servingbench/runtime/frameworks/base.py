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

from servingbench.runtime.prometheus import counter_total, histogram_totals
from servingbench.runtime.spec import GenerationParams, PromptItem, ServerSpec

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
    """One parsed stream event: the generated text it carries (may be empty), how many generated
    tokens it carries when the server says so, and whether it ends the stream.

    ``tokens`` is None when the event does not say (text alone never tells: one event may carry
    several tokens, and a token whose text the server holds back arrives as an empty event).
    An event carries generated output when it has text or ``tokens`` > 0; no other event is
    timed.
    """

    text: str = ""
    done: bool = False
    error: str | None = None
    tokens: int | None = None

    @property
    def carries_output(self) -> bool:
        return bool(self.text) or bool(self.tokens)


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
    #: Server flags the adapter sets from the config (flag -> config key): in an arm's
    #: ``server_args`` they would make the recorded setting untrue, so the config refuses them.
    owned_args: dict[str, str] = {}
    #: Can the server cache prompt prefixes across requests, switched by ServerSpec.prefix_caching?
    has_prefix_cache: bool = False
    #: Installed distributions whose version is the framework's version, the first found wins
    #: (provenance; an arm that is not a Python package says it with ``framework_version``).
    distributions: tuple[str, ...] = ()
    #: Compiled-kernel distributions shipped apart from the framework, recorded beside its version.
    kernel_distributions: tuple[str, ...] = ()
    #: Does ``weights: dummy`` need random weight files written into the model folder (a server
    #: that can only load weights from disk), instead of a dummy load format of its own?
    dummy_weights_on_disk: bool = False

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
        """Prometheus metrics endpoint, if the framework has one (for server-side timings)."""
        return None

    #: The server's own timing histograms on its metrics endpoint: figure (``ttft``, ``itl``) ->
    #: Prometheus histogram names to try, in order (the first one present is read).
    server_timing_histograms: Mapping[str, tuple[str, ...]] = {}

    def server_side_timings(self, metrics_text: str) -> dict[str, tuple[float, float]]:
        """figure -> (sum of seconds, count) of the server's own histograms, summed over label
        sets, from one scrape of its metrics endpoint; figures it does not expose are absent."""
        out = {}
        for figure, names in self.server_timing_histograms.items():
            for name in names:
                totals = histogram_totals(metrics_text, name)
                if totals is not None:
                    out[figure] = totals
                    break
        return out

    #: The server's prefix-cache counters on its metrics endpoint, in tokens: ``queries`` (looked
    #: up) and ``hits`` (found) -> Prometheus counter name. Empty: the server does not count them.
    prefix_cache_counters: Mapping[str, str] = {}

    def prefix_cache_totals(self, metrics_text: str) -> dict[str, float] | None:
        """{"queries": tokens, "hits": tokens} from one scrape of the metrics endpoint; None when
        the server does not expose both counters."""
        totals = {k: counter_total(metrics_text, name) for k, name in self.prefix_cache_counters.items()}
        if not {"queries", "hits"} <= totals.keys() or None in totals.values():
            return None
        return {k: v for k, v in totals.items() if v is not None}

    #: Container profiles this framework cannot run in: profile -> why (config validation says it).
    unsupported_profiles: Mapping[str, str] = {}

    def requested_settings(self, server: ServerSpec) -> dict[str, Any]:
        """The server settings a result records that this adapter can check afterwards with
        :meth:`effective_settings` (name -> the value asked for)."""
        return {}

    def effective_settings(self, server: ServerSpec, log_text: str,
                           metrics_text: str | None) -> dict[str, dict[str, Any]]:
        """The settings the running server reports, read from its own start-up log and its
        metrics text: name -> ``{"value": ..., "source": "where it was read"}``. Only what
        could be read; a value that differs from :meth:`requested_settings` fails the cell."""
        return {}

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

    def prefix_cache_unavailable(self, server_args: tuple[str, ...] | list[str]) -> str | None:
        """Why a server with these arguments has no prefix cache to switch on; None if it has."""
        return None if self.has_prefix_cache else f"{self.name} has no prefix cache that servingbench can switch on"

    def reset_prefix_cache_request(self, server: ServerSpec) -> HttpRequest | None:
        """A request that empties the server's prefix cache, so that a reused server starts a
        cell as a fresh one would; None where there is none (a caching server is then not reused)."""
        return None

    def effective_output_tokens(self, item: PromptItem, gen: GenerationParams, policy: str) -> tuple[int, bool]:
        """(tokens to ask for, whether the length is forced) under an output-length policy."""
        target = min(item.target_output_tokens, gen.max_tokens)
        if policy == "forced" and self.can_force_output_length:
            return target, True
        if policy == "forced":
            return target, False  # can only cap it; results flag unequal work
        return gen.max_tokens, False
