"""What TTFT, ITL and the event gap mean when stream events do not carry one token of text each
(issue 16 part 2, issue 19 class 9, vllm#27485), against scripted byte streams whose true
answer is known: several tokens per event, events without text, streams that never say."""

from __future__ import annotations

import asyncio
import json

import pytest

from servingbench.host.aggregate import current_window
from servingbench.runtime.client import LoadClient
from servingbench.runtime.records import RequestRecord
from servingbench.runtime.frameworks import get_adapter
from servingbench.runtime.frameworks.tgi import TGIStreamReader
from servingbench.runtime.frameworks.transformers_naive import NaiveStreamReader
from servingbench.runtime.metrics import event_gaps_ms, itl_ms, token_events, tpot_ms, window_summary
from servingbench.runtime.spec import GenerationParams, PromptItem, ServerSpec
from tests.scripted_server import ScriptedServer, sse

SERVER = ServerSpec(arm="vllm", framework="vllm", model="m", model_dir="models/m", hf_id="x/m",
                    weights="real", device="cpu", dtype="bfloat16", context_length=2048, profile="current")
GEN = GenerationParams(temperature=0.7, top_p=0.9, max_tokens=64)
SSE = {"Content-Type": "text/event-stream"}


def chunk(text: str, running: int | None = None, finish: str | None = None) -> str:
    out = {"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": finish}]}
    if running is not None:  # continuous_usage_stats: the running count on every chunk
        out["usage"] = {"prompt_tokens": 3, "completion_tokens": running, "total_tokens": 3 + running}
    return json.dumps(out)


def usage(total: int) -> str:
    return json.dumps({"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": total}})


def run(script, tokens: int) -> RequestRecord:
    item = PromptItem(id="p", prompt="x", prompt_tokens=1, target_output_tokens=tokens)

    async def go():
        async with LoadClient(s.url, get_adapter("vllm"), SERVER, GEN, "forced", 10.0) as c:
            return await c.send(item, True, RequestRecord(prompt_id="p"))

    with ScriptedServer({"/v1/completions": lambda r: (200, SSE, script)}) as s:
        rec = asyncio.run(go())
        sent = json.loads(s.requests[-1][1])
    assert sent["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    return rec


def four_per_event(per_chunk_usage: bool, gap: float = 0.04) -> list:
    """Five events 40 ms apart, four tokens each (vllm#27485's case), then usage and [DONE]."""
    events = [chunk("abcd", 4 * (i + 1) if per_chunk_usage else None, "length" if i == 4 else None)
              for i in range(5)]
    return sse(*events, gap=gap) + sse(usage(20), "[DONE]")


def test_four_tokens_per_event_itl_is_per_token_and_the_event_gap_is_kept_apart() -> None:
    rec = run(four_per_event(True), 20)
    assert rec.error is None and rec.output_tokens == 20
    assert rec.event_tokens == [4, 4, 4, 4, 4]
    per_token, gaps = itl_ms(rec), event_gaps_ms(rec)
    assert len(per_token) == 16 and len(gaps) == 4  # tokens after the first event's; gaps between events
    assert sum(per_token) == pytest.approx(rec.e2e_ms - rec.ttft_ms)  # the same time, counted per token
    summary = window_summary([rec], 1.0, 1, True)
    itl, gap, tpot = summary.itl_ms.p50, summary.event_gap_ms.p50, summary.tpot_ms.p50
    assert gap == pytest.approx(40, abs=15)
    assert itl == pytest.approx(gap / 4, rel=0.01)  # each event's gap over its 4 tokens
    assert itl == pytest.approx(tpot, rel=0.3)  # per-token ITL and TPOT now agree (the event gap does not)
    assert summary.tokens_per_event.mean == 4 and summary.itl_unknown_requests == 0


def test_a_stream_that_does_not_say_its_tokens_per_event_has_no_itl() -> None:
    rec = run(four_per_event(False), 20)
    assert rec.error is None and rec.output_tokens == 20 and rec.event_tokens is None
    assert itl_ms(rec) is None and len(event_gaps_ms(rec)) == 4
    summary = window_summary([rec], 1.0, 1, True)
    assert summary.itl_ms is None and summary.itl_unknown_requests == 1
    assert summary.event_gap_ms.p50 == pytest.approx(40, abs=15)
    assert summary.tokens_per_event is None
    assert summary.tpot_ms is not None  # TPOT needs only the server's count


def test_events_without_text_count_their_tokens_and_time_the_first_one() -> None:
    """SGLang's held-back text: the first token's event is empty; TTFT is that event, not the
    first text, and every token counts."""
    script = sse(chunk("", 1), chunk("", 2), gap=0.15) + sse(chunk("ab", 3), chunk("c", 4, "length"), gap=0.05) \
        + sse(usage(4), "[DONE]")
    rec = run(script, 4)
    assert rec.error is None and rec.event_tokens == [1, 1, 1, 1]
    assert 150 <= rec.ttft_ms < 290  # the first empty event (0.15 s), not the first text (0.35 s)
    assert rec.ttft_ms == rec.event_offsets_ms[0] and len(itl_ms(rec)) == 3


def test_a_stream_without_text_or_counts_fails_and_has_no_ttft() -> None:
    script = sse(chunk(""), chunk(""), chunk("", finish="length"), usage(3), "[DONE]", gap=0.02)
    rec = run(script, 3)
    assert rec.error == "stream carried no generated text and no token counts"
    assert rec.ttft_ms is None and rec.event_offsets_ms == []


def test_role_and_finish_chunks_with_unchanged_counts_are_not_events() -> None:
    script = sse(chunk("", 0), chunk("a", 1), chunk("b", 2), chunk("", 2, "length"), usage(2), "[DONE]", gap=0.02)
    rec = run(script, 2)
    assert rec.error is None and rec.event_tokens == [1, 1] and len(rec.event_offsets_ms) == 2


def test_per_event_counts_that_do_not_add_up_are_not_trusted() -> None:
    rec = RequestRecord(prompt_id="p", ttft_ms=10.0, e2e_ms=30.0, event_offsets_ms=[10.0, 20.0, 30.0],
                        event_tokens=[1, 1, 1], output_tokens=5)
    assert token_events(rec) is None and itl_ms(rec) is None
    partial = RequestRecord(prompt_id="p", event_offsets_ms=[10.0, 20.0], event_tokens=[1, None], output_tokens=2)
    assert itl_ms(partial) is None


def test_zero_token_events_merge_into_the_next_tokens_gap() -> None:
    rec = RequestRecord(prompt_id="p", ttft_ms=10.0, e2e_ms=40.0, event_offsets_ms=[10.0, 20.0, 40.0],
                        event_tokens=[1, 0, 2], output_tokens=3)
    assert itl_ms(rec) == [15.0, 15.0]
    assert tpot_ms(rec) == 15.0


def test_other_readers_say_their_tokens_per_event() -> None:
    naive = NaiveStreamReader()
    assert naive.feed(json.dumps({"text": "ab", "tokens": 2})).tokens == 2
    assert naive.feed(json.dumps({"text": "", "tokens": 1})).carries_output  # a token whose text waits
    assert naive.feed(json.dumps({"text": "c"})).tokens is None  # an older server: not said
    tgi = TGIStreamReader()
    special = {"index": 2, "token": {"id": 2, "text": "</s>", "special": True}, "generated_text": None}
    upd = tgi.feed(json.dumps(special))
    assert (upd.text, upd.tokens) == ("", 1)  # EOS carries no text but is a generated token
    serve = get_adapter("transformers-serve").stream_reader()  # transformers serve: never says
    assert serve.feed(chunk("a", 1)).tokens is None


def test_results_written_before_per_token_itl_keep_their_gaps_as_event_gaps() -> None:
    old = {"concurrency": 1, "completed": 5, "itl_ms": {"n": 40, "p50": 20.0}}
    new = current_window(old)
    assert new["event_gap_ms"] == {"n": 40, "p50": 20.0} and new["itl_ms"] is None
    assert new["itl_unknown_requests"] == 5
    assert current_window(new) == new  # today's windows stay as written
    sync = {"concurrency": 1, "completed": 5, "itl_ms": None}
    assert current_window(sync) is sync
