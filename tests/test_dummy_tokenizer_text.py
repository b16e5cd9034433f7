"""Do the kit's generated dummy tokenizers turn generated ids into text? (issue 16, part 2)

On the H200, SGLang's streams of dummy GPT-2 and Phi-2 carried no text at all (shared
tools/sglang-wheelhouse README). These tests show what the kit's tokenizer does with ids, decoded
incrementally as vLLM's and SGLang's detokenizers do (text is held back while it ends in an
incomplete UTF-8 character): every id but the specials decodes to text, a few hundred single
tokens are incomplete UTF-8 on their own, random ids stream text on nearly every token, and only
a stream that repeats one such id (or a special) shows no text.

What emptied the H200 streams, checked on CPU (Transformers' GPT-2, Phi-2 and Llama with every
weight drawn as SGLang's --load-format dummy draws it: uniform +-1e-3, seed 1234 per parameter):
greedy decoding repeats ONE id on GPT-2 (id 0 at every step, for three different prompts) and on
Phi-2 (35665, 4 of its 32 layers), while Llama varies (2-3 distinct ids in 16); sampling at
temperature 0.7 gives 12-16 distinct ids in 16. The shared tool's tokenizer
(../shared/tools/gpu-wheelhouse/make_dummy_model.py, used on the H200) makes id 0 the special
<unk> even for GPT-2, which skip_special_tokens decodes to nothing: GPT-2's greedy stream is
empty there. The kit's tokenizer gives GPT-2 no <unk> (id 0 is text) and the kit always samples
(temperature > 0 is enforced); its TTFT no longer needs text anyway (test_stream_tokens.py).
"""

from __future__ import annotations

import random

import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

from servingbench.host.models import build_dummy_tokenizer  # noqa: E402

SHAPES = {"gpt2": (50257, 50256, 50256), "phi-2": (51200, 50256, 50256), "llama-2-7b-chat": (32000, 1, 2)}


def shown_events(decode, ids: list[int]) -> int:
    """Events that would carry text under incremental detokenization (one event per id)."""
    shown, emitted = 0, 0
    for i in range(1, len(ids) + 1):
        text = decode(ids[:i])
        if text.endswith("\ufffd") or len(text) <= emitted:
            continue
        shown, emitted = shown + 1, len(text)
    return shown


@pytest.fixture(scope="module", params=list(SHAPES))
def shape(request):
    vocab, bos, eos = SHAPES[request.param]
    tok = build_dummy_tokenizer(vocab, bos, eos)
    return request.param, vocab, {bos, eos} | ({0} if bos != eos else set()), tok


def test_every_id_but_the_specials_decodes_to_text(shape) -> None:
    name, vocab, specials, tok = shape
    empty = {i for i in range(vocab) if tok.decode([i], skip_special_tokens=True) == ""}
    assert empty == specials, name
    partial = [i for i in range(vocab) if "\ufffd" in tok.decode([i], skip_special_tokens=True)]
    assert 0 < len(partial) < 0.005 * vocab  # single tokens that are an incomplete UTF-8 character


def test_random_ids_stream_text_and_one_repeated_id_does_not(shape) -> None:
    name, vocab, specials, tok = shape

    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=True)

    rng = random.Random(16)
    for _ in range(10):
        ids = [rng.randrange(vocab) for _ in range(128)]
        assert shown_events(decode, ids) >= 120, name
    lone = next(i for i in range(vocab) if decode([i]).endswith("\ufffd"))
    assert shown_events(decode, [lone] * 128) == 0  # the H200 symptom: one id again and again
    assert shown_events(decode, [max(specials)] * 128) == 0
