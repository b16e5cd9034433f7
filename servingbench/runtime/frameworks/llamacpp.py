"""llama.cpp's own OpenAI-compatible server, ``llama-server``.

The binary is built from the llama.cpp sources that the PyPI sdist of ``llama-cpp-python``
vendors (``scripts/build-llama-server.sh`` puts it in the environment's ``bin/``; the GPU image
builds the same sources with CUDA). llama-cpp-python's own Python server is not used: its
streams carry no token counts, it serves one request at a time behind a lock (by default it
cuts a running stream when the next request arrives) and it returns none of llama.cpp's
timings; ``llama-server`` is what llama.cpp users run.

It serves a GGUF file, ``models/{model}.gguf``, written by ``servingbench prepare-gguf`` from
the same weights, at the same precision, as the other arms' model folder. Requests go to
``/v1/completions`` with the workload's templated prompt text, as to the other arms. llama.cpp
tokenises it with its own tokenizer (from the GGUF), which for SmolLM2 keeps "\n\n" before a word
as one token where the Hugging Face tokenizer has two: its prompts can be up to ~1% shorter
(``server_prompt_tokens`` of each request record says by how much).
Forced length: ``ignore_eos`` (a -inf logit bias on every end-of-generation token) with
``max_tokens`` = target. Sampling is the matrix's temperature and top_p only: llama.cpp's own
extra samplers (top_k 40, min_p 0.05 by default) are switched off, as they are in the other
arms. Prompt reuse follows ``run.prefix_caching`` (``cache_prompt`` per request and the
server's RAM prompt cache). Every final response carries usage and llama.cpp's ``timings``
(``prompt_ms``: prompt processing up to the first token; ``predicted_per_token_ms``: decode
time per token after the first), which the report shows beside the client's figures.
Runtime module: standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping

from servingbench.runtime.frameworks import openai_api
from servingbench.runtime.frameworks.base import Adapter, Completion, HttpRequest, Launch, StreamReader, StreamUpdate
from servingbench.runtime.spec import GenerationParams, PromptItem, ServerSpec

BINARY_ENV = "SERVINGBENCH_LLAMA_SERVER"  # a llama-server to use instead of the environment's
DEFAULT_PARALLEL = 4  # server slots (concurrent sequences) unless server_args set --parallel
# The per-request timings kept in each request record (llama.cpp's names).
TIMING_KEYS = ("cache_n", "prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "predicted_per_token_ms")
_DTYPES = {"bfloat16", "float16", "float32"}


def gguf_path(model_dir: str) -> str:
    """The GGUF file served for a model folder: ``models/M`` -> ``models/M.gguf``."""
    return model_dir.rstrip("/") + ".gguf"


def find_binary() -> str:
    """``$SERVINGBENCH_LLAMA_SERVER``, else the environment's ``bin/llama-server``, else PATH."""
    if os.environ.get(BINARY_ENV):
        return os.environ[BINARY_ENV]
    beside = Path(sys.executable).parent / "llama-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("llama-server")
    if found:
        return found
    raise FileNotFoundError(
        "llamacpp: no llama-server binary (looked in $SERVINGBENCH_LLAMA_SERVER, "
        f"{beside} and PATH); build it with scripts/build-llama-server.sh")


def build_info(binary: str) -> dict[str, Any]:
    """What scripts/build-llama-server.sh recorded beside the binary (source, commit, flags)."""
    path = Path(binary).with_name(Path(binary).name + ".json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _arg_value(args: list[str], *names: str) -> str | None:
    for i, a in enumerate(args):
        for name in names:
            if a == name and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(name + "="):
                return a.split("=", 1)[1]
    return None


def _timings(chunk: Mapping[str, Any]) -> dict[str, float]:
    t = chunk.get("timings")
    if not isinstance(t, dict):
        return {}
    return {k: float(t[k]) for k in TIMING_KEYS if isinstance(t.get(k), (int, float))}


class LlamaCppStreamReader(openai_api.OpenAIStreamReader):
    """OpenAI stream events, plus llama.cpp's ``timings`` from the final chunk."""

    def __init__(self) -> None:
        super().__init__()
        self._timing: dict[str, float] = {}

    def feed(self, data: str) -> StreamUpdate:
        upd = super().feed(data)
        if '"timings"' in data:  # only the final chunk has them: parse it once more, not every event
            try:
                self._timing = _timings(json.loads(data)) or self._timing
            except ValueError:
                pass
        return upd

    def result(self) -> Completion:
        done = super().result()
        done.server_timing = dict(self._timing)
        return done


class LlamaCppAdapter(Adapter):
    name = "llamacpp"
    framework = "llamacpp"
    can_force_output_length = True
    health_path = "/health"
    server_ttft_source = "llama.cpp timings.prompt_ms (prompt processing, no HTTP or slot wait)"
    has_prefix_cache = True  # cache_prompt per request and the RAM prompt cache (see launch)

    def launch(self, server: ServerSpec, host: str, port: int) -> Launch:
        if server.weights == "dummy":
            raise ValueError("llamacpp: weights: dummy is not supported (llama.cpp loads real GGUF weights only)")
        if server.dtype not in _DTYPES:
            raise ValueError(f"llamacpp: dtype {server.dtype!r} has no GGUF file; use one of {sorted(_DTYPES)}")
        args = list(server.server_args)
        parallel = int(_arg_value(args, "--parallel", "-np") or DEFAULT_PARALLEL)
        argv = [find_binary(), "--model", gguf_path(server.model_dir), "--alias", server.model,
                "--host", host, "--port", str(port), "--seed", "0", "--no-webui"]
        if _arg_value(args, "--parallel", "-np") is None:
            argv += ["--parallel", str(parallel)]
        if _arg_value(args, "--ctx-size", "-c") is None:
            # Without a unified KV cache each slot gets ctx-size / parallel: the model's context each.
            argv += ["--ctx-size", str(server.context_length * parallel)]
        if server.device == "cuda" and _arg_value(args, "--n-gpu-layers", "-ngl") is None:
            argv += ["--n-gpu-layers", "999"]
        if not server.prefix_caching and _arg_value(args, "--cache-ram", "-cram") is None:
            argv += ["--cache-ram", "0"]  # no prompt states kept across requests
        return Launch(argv=argv + args)

    def build_request(self, server: ServerSpec, item: PromptItem, gen: GenerationParams,
                      output_tokens: int, force_length: bool, stream: bool) -> HttpRequest:
        body = openai_api.completion_body(server.model, item, gen, output_tokens, stream)
        # Only temperature and top_p sample, as in the other arms (llama.cpp defaults add more).
        body.update(top_k=0, min_p=0.0, cache_prompt=server.prefix_caching)
        if force_length:
            body["ignore_eos"] = True
        return HttpRequest("POST", openai_api.COMPLETIONS, body)

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Completion:
        done = openai_api.parse_completion(status, headers, body)
        if done.error is None:
            try:
                done.server_timing = _timings(json.loads(body))
            except ValueError:
                pass
        return done

    def stream_reader(self) -> StreamReader:
        return LlamaCppStreamReader()

    def server_ttft_ms(self, timing: Mapping[str, float]) -> float | None:
        return timing.get("prompt_ms")

    def server_tpot_ms(self, timing: Mapping[str, float]) -> float | None:
        return timing.get("predicted_per_token_ms") if timing.get("predicted_n", 0) >= 2 else None

    def served_weights(self, server: ServerSpec) -> str:
        return gguf_path(server.model_dir)

    def framework_version(self) -> str | None:
        try:
            info = build_info(find_binary())
        except FileNotFoundError:
            return None
        if not info:
            return None
        return f"llama.cpp {info.get('llama_cpp_commit', '?')} ({info.get('source', 'unknown source')})"


ADAPTER = LlamaCppAdapter()
