"""The naive Transformers server's Generator, in-process on SmolLM2 (CPU)."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def gen(smollm2_dir):
    from servingbench.runtime.frameworks.servers.transformers_naive_server import Generator

    return Generator(str(smollm2_dir), "cpu", "float32", "real")


def _req(**kw):
    return {"prompt": "Write a haiku about GPUs.", "max_new_tokens": 6, "min_new_tokens": 6,
            "temperature": 0.7, "top_p": 0.9, **kw}


def test_every_generate_runs_on_one_worker_thread(gen):
    # On CUDA the first generate in each new thread cost seconds; requests arrive on new threads.
    seen: list[int] = []
    hook = gen.model.register_forward_hook(lambda *_: seen.append(threading.get_ident()))
    try:
        callers = [threading.Thread(target=gen.generate, args=(_req(),)) for _ in range(3)]
        callers.append(threading.Thread(target=gen.stream, args=(_req(), lambda _e: None)))
        for t in callers:
            t.start()
        for t in callers:
            t.join()
    finally:
        hook.remove()
    assert len(seen) >= 4 * 6
    assert len(set(seen)) == 1
    assert seen[0] not in {t.ident for t in callers} | {threading.get_ident()}


def test_sync_and_stream_count_the_forced_tokens(gen):
    sync = gen.generate(_req())
    events: list[dict] = []
    final = gen.stream(_req(), events.append)
    assert sync["generated_tokens"] == final["generated_tokens"] == 6
    assert sync["text"] and "".join(e["text"] for e in events)
    assert sum(e["tokens"] for e in events) == 6  # each event says how many tokens it brings


def test_a_failing_stream_raises_and_the_worker_serves_the_next_request(gen):
    with pytest.raises(Exception):
        gen.stream(_req(max_new_tokens=-3, min_new_tokens=0), lambda _e: None)
    assert gen.generate(_req())["generated_tokens"] == 6


def _streamed(gen, ids: list[int]) -> list[tuple[str, int]]:
    """Feed a prompt and then ``ids`` one token at a time, as ``generate`` does; the (text, tokens)
    pieces sent."""
    import torch

    from servingbench.runtime.frameworks.servers.transformers_naive_server import TokenStreamer

    streamer = TokenStreamer(gen.tokenizer, skip_prompt=True, skip_special_tokens=True)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt, skipped
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    return [(t, n) for t, n in streamer if t or n]


def test_stream_sends_each_token_as_it_is_generated(gen):
    # The stock TextIteratorStreamer would hold "ab-cd-ef-gh" back to the end: it has no space.
    ids = gen.tokenizer.encode("ab-cd-ef-gh/ij_kl", add_special_tokens=False)
    assert len(ids) >= 5
    pieces = _streamed(gen, ids)
    assert pieces == [(gen.tokenizer.decode([i]), 1) for i in ids]


def test_stream_holds_an_incomplete_character_until_it_is_whole(gen):
    ids = gen.tokenizer.encode("go 🚀 now", add_special_tokens=False)
    pieces = [gen.tokenizer.decode([i]) for i in ids]
    assert any("\ufffd" in p for p in pieces)  # the rocket spans several byte-level tokens
    sent = _streamed(gen, ids)
    texts = [t for t, _ in sent]
    assert "".join(texts) == "go 🚀 now"
    assert not any("\ufffd" in t for t in texts)
    assert len(texts) < len(ids)
    assert sum(n for _, n in sent) == len(ids)  # the held tokens count with the text they complete
    assert max(n for _, n in sent) > 1


def test_stream_sockets_send_each_token_without_nagle() -> None:
    # One small write per token: the accepted socket must have TCP_NODELAY, or Nagle may hold a
    # token until the client's (delayed) ACK of the previous one. A stand-in generator streams.
    import http.client
    import socket

    from servingbench.runtime.frameworks.servers.transformers_naive_server import make_server

    release, seen = threading.Event(), []

    class OneToken:
        def stream(self, req, emit):
            emit({"text": "a"})
            release.wait(10)
            return {"generated_tokens": 1}

    server = make_server(OneToken(), "127.0.0.1", 0)
    finish = server.finish_request
    server.finish_request = lambda request, addr: (seen.append(request), finish(request, addr))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        conn.request("POST", "/generate_stream", body=b'{"prompt": "x"}',
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.fp.readline().startswith(b"data: ")  # the first token is out; the handler is mid-stream
        assert seen[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        release.set()
        assert b"[DONE]" in resp.read()
    finally:
        release.set()
        server.shutdown()
        server.server_close()
